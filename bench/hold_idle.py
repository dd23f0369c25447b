#!/usr/bin/env python3
"""Hold many idle keep-alive HTTP/1.1 connections open against a proxy.

Used by bench/harness.py to measure a proxy's memory per idle keep-alive
connection. Python 3.11 standard library only.

Protocol on stdout/stdin, one line each, so the caller can read the proxy's
memory at the right moments:

  1. Primes the proxy: `--window` connections each send one request, read the
     response and are reset. The proxy now has its upstream connections pooled,
     so they do not count as per-connection growth. Prints `primed`.
  2. Waits for a line on stdin (any text), then opens `-n` connections, at
     most `--window` in flight at a time, sends one request on each and reads
     the complete response, so every connection is an idle keep-alive one.
     Prints `held N SECONDS`.
  3. Waits for another line (or EOF) on stdin, counts connections the peer
     closed meanwhile, prints `dropped K`, resets them all (SO_LINGER 0, so
     no TIME_WAIT is left behind) and exits 0.

Any failure prints `error: ...` to stderr and exits 1.
"""

import argparse
import errno
import resource
import selectors
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", required=True, help="HOST:PORT of the proxy")
    p.add_argument("-n", type=int, default=10_000, help="connections to hold (default 10000)")
    p.add_argument("--window", type=int, default=64, help="connections set up at once (default 64)")
    p.add_argument("--path", default="/", help="request path")
    p.add_argument("--host", default="bench.local", help="Host header")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for each phase")
    return p.parse_args()


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < need:
        raise SystemExit(f"error: need {need} open files, limit is {soft}")


class Exchange:
    """One connection: connect, send one request, read one response."""

    __slots__ = ("sock", "out", "buf", "need")

    def __init__(self, addr, request):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = self.sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        self.out = memoryview(request)
        self.buf = bytearray()
        self.need = None  # total bytes of head + body, once the head is in

    def on_writable(self):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        sent = self.sock.send(self.out)
        self.out = self.out[sent:]
        return len(self.out) == 0

    def on_readable(self):
        """True once the whole response is in."""
        data = self.sock.recv(65536)
        if not data:
            raise OSError(errno.ECONNRESET, "peer closed before the response was complete")
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            status = head[0].split(" ")
            if len(status) < 2 or status[1] != "200":
                raise OSError(errno.EPROTO, f"unexpected status line {head[0]!r}")
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value.strip())
                elif lname == "connection" and "close" in value.lower():
                    raise OSError(errno.EPROTO, "the proxy answered Connection: close")
            if length is None:
                raise OSError(errno.EPROTO, "response without Content-Length")
            self.need = end + 4 + length
        if len(self.buf) > self.need:
            raise OSError(errno.EPROTO, "more bytes than the response announced")
        return len(self.buf) == self.need


def run_exchanges(addr, request, count, window, timeout):
    """Opens `count` connections with one request each; returns their sockets."""
    sel = selectors.DefaultSelector()
    done, started, active = [], 0, 0
    deadline = time.monotonic() + timeout
    try:
        while len(done) < count:
            while started < count and active < window:
                ex = Exchange(addr, request)
                sel.register(ex.sock, selectors.EVENT_WRITE, ex)
                started += 1
                active += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(errno.ETIMEDOUT, f"timed out with {len(done)} of {count} connections set up")
            for key, events in sel.select(min(left, 1.0)):
                ex = key.data
                if events & selectors.EVENT_WRITE:
                    if ex.on_writable():
                        sel.modify(ex.sock, selectors.EVENT_READ, ex)
                elif ex.on_readable():
                    sel.unregister(ex.sock)
                    ex.buf = bytearray()
                    done.append(ex.sock)
                    active -= 1
    except BaseException:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        reset_all(done)
        raise
    finally:
        sel.close()
    return done


def count_closed(socks):
    """Connections the peer closed (readable with EOF) or reset."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(0):
        try:
            if not key.fileobj.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    sel.close()
    return closed


def reset_all(socks):
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
        s.close()


def main():
    args = parse_args()
    host, _, port = args.connect.rpartition(":")
    addr = (host, int(port))
    raise_nofile(args.n + args.window + 64)
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: hold_idle\r\n\r\n".encode()
    try:
        reset_all(run_exchanges(addr, request, args.window, args.window, args.timeout))
        print("primed", flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        held = run_exchanges(addr, request, args.n, args.window, args.timeout)
        print(f"held {len(held)} {time.monotonic() - start:.2f}", flush=True)
        sys.stdin.readline()
        print(f"dropped {count_closed(held)}", flush=True)
        reset_all(held)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
