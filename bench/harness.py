#!/usr/bin/env python3
"""Side-by-side benchmark of Ringway, NGINX, HAProxy and the direct path.

Run it through bench/run.sh, which installs the peers, builds the workspace and
raises the open-file limit first. bench/README.md explains the method; this
file is the whole procedure. Python 3.11 standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = ROOT / "target" / "release"
LOAD = BIN / "ringway-load"
RINGWAY = BIN / "ringway"
HOLD = BENCH / "hold_idle.py"

PEERS = ["direct", "ringway", "nginx", "haproxy"]
LABEL = {"direct": "direct", "ringway": "Ringway", "nginx": "NGINX", "haproxy": "HAProxy", "ringway-2w": "Ringway 2w"}
ROWS = ["closed", "wrk", "fixed", "idle", "body1k", "body64k", "tls", "workers2", "scaling"]
DEFAULT_ROWS = [r for r in ROWS if r != "scaling"]
BODY_ROWS = {"body1k": 1024, "body64k": 65536}
BASE_BODY = 13  # `serve`'s default "Hello, world!"

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- options


def cpu_list(text):
    """'0', '0,2', '0-3,8' -> [0, 2, ...] in the given order, no duplicates."""
    cpus = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        for c in range(int(lo), int(hi or lo) + 1):
            if c not in cpus:
                cpus.append(c)
    if not cpus:
        raise argparse.ArgumentTypeError(f"empty CPU list {text!r}")
    return cpus


def name_list(allowed):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(allowed)}")
        return names

    return parse


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def cpus_text(cpus):
    return ",".join(str(c) for c in cpus)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Ringway vs NGINX vs HAProxy vs direct, same upstream, same pinning; writes bench/RESULTS.md.",
        epilog="run.sh also takes --no-build (skip cargo build). Method: bench/README.md.",
    )
    p.add_argument("--quick", action="store_true", help="1 run, 3 s loads: a smoke run in under 3 minutes")
    p.add_argument("--runs", type=int, help="interleaved repetitions (default 3, quick 1)")
    p.add_argument("--duration", type=float, help="seconds per load run (default 10, quick 3)")
    p.add_argument("--warmup", type=float, help="unrecorded load before each closed-loop run (default 1, quick 0.5)")
    p.add_argument("--proxy-cpus", type=cpu_list, default=[0], help="CPUs for the proxy under test (default 0)")
    p.add_argument(
        "--load-cpus", type=cpu_list, default=[1], help="CPUs for the load generator and the upstream (default 1)"
    )
    p.add_argument("--workers", type=int, default=1, help="Ringway workers = NGINX worker_processes = HAProxy nbthread")
    p.add_argument("--load-threads", type=int, default=1, help="ringway-load / wrk threads (default 1)")
    p.add_argument("--upstream-threads", type=int, default=1, help="`ringway-load serve` threads (default 1)")
    p.add_argument("--connections", type=int, default=64, help="load connections (default 64)")
    p.add_argument("--rate", type=int, default=10_000, help="fixed open-loop rate in req/s (default 10000)")
    p.add_argument("--idle-conns", type=int, default=10_000, help="idle keep-alive connections held (default 10000)")
    p.add_argument("--rows", type=name_list(ROWS), help=f"only these rows: {', '.join(ROWS)}")
    p.add_argument("--peers", type=name_list(PEERS), default=PEERS, help="only these peers (default all)")
    p.add_argument("--workers2-cpus", type=cpu_list, help="CPUs for the 2-worker Ringway row")
    p.add_argument("--scaling", type=int_list, help="also run Ringway at these worker counts, e.g. 1,2,4,8")
    p.add_argument("--scaling-cpus", type=cpu_list, help="CPU pool for --scaling; k workers get the first k")
    p.add_argument(
        "--max-noise",
        type=float,
        default=0.2,
        help="cores of other processes' work above which a run counts as disturbed (default 0.2)",
    )
    p.add_argument(
        "--noise-budget",
        type=float,
        help="seconds the whole run may spend waiting for quiet and repeating disturbed runs (default 600, quick 0)",
    )
    p.add_argument("--profile", action="store_true", help="perf record -g Ringway in one extra saturated run")
    p.add_argument("--port-base", type=int, default=18700, help="upstream port; the proxies use the next three")
    p.add_argument("--logs", type=Path, help="keep configs and logs in this directory (default: a temporary one)")
    p.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="results file (default bench/RESULTS.md)")
    a = p.parse_args(argv)
    a.runs = a.runs or (1 if a.quick else 3)
    a.duration = a.duration or (3.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    a.noise_budget = a.noise_budget if a.noise_budget is not None else (0.0 if a.quick else 600.0)
    if a.rows is None:
        a.rows = DEFAULT_ROWS + (["scaling"] if a.scaling else [])
    if "scaling" in a.rows and not a.scaling:
        a.scaling = [1, 2, 4, 8]
    a.scaling_cpus = a.scaling_cpus or a.proxy_cpus
    if a.workers2_cpus is None:
        a.workers2_cpus = a.proxy_cpus[:2] if len(a.proxy_cpus) >= 2 else a.proxy_cpus + a.load_cpus[:1]
    a.argv = argv
    return a


# ---------------------------------------------------------------- processes


class Proc:
    """A child process we started; stopped by its PID only."""

    def __init__(self, name, cmd, log_dir, stop_signal=signal.SIGTERM):
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self.stop_signal = stop_signal
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.alive():
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def tail(self, lines=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def all_process_stats():
    """(pid, fields of /proc/PID/stat after the command name) for every process;
    fields[1] is the parent, [6] the flags, [11] and [12] utime and stime."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(entry), fields


def children_of(pid):
    return [child for child, fields in all_process_stats() if int(fields[1]) == pid]


def process_tree(pid):
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children_of(p))
    return tree


def cpu_split_seconds(pids):
    """(utime, stime) summed over the processes (each /proc/PID/stat line
    covers all the process's threads)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime and stime: fields 14 and 15 of the line
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_split_seconds(pids))


def cpus_busy_seconds(cpus=None):
    """Busy time of these CPUs (default: all) from /proc/stat (user, nice, system, irq, softirq, steal)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and (cpus is None or int(name[3:]) in cpus):
            v = [int(x) for x in vals]
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total / CLK_TCK


PF_KTHREAD = 0x00200000


def irq_time_in_task_time():
    """Whether the kernel charges interrupt time to the task it interrupted
    (tick accounting, CONFIG_IRQ_TIME_ACCOUNTING unset): then a process's
    utime+stime includes the softirq work done in its context (on loopback,
    most of the benchmark's packets). Assumed when the config cannot be read."""
    import gzip

    for path, opener in ((f"/boot/config-{platform.release()}", open), ("/proc/config.gz", gzip.open)):
        try:
            with opener(path, "rt") as f:
                return "CONFIG_IRQ_TIME_ACCOUNTING=y" not in f.read()
        except OSError:
            continue
    return True


IRQ_IN_TASK_TIME = irq_time_in_task_time()


def machine_cpu_seconds():
    """Time spent for processes over all CPUs, as their utime+stime count it:
    user + nice + system + steal (steal: for other guests of the hypervisor),
    and irq + softirq where the kernel charges those to the interrupted task.
    Without the latter, the benchmark's own softirq time was subtracted from
    the machine's twice and every run read as quiet."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    irq = v[5] + v[6] if IRQ_IN_TASK_TIME else 0
    return (v[0] + v[1] + v[2] + v[7] + irq) / CLK_TCK


def kernel_threads_cpu_seconds():
    """utime + stime of kernel threads (ksoftirqd, kworkers) by PID: work for
    everyone, mostly the benchmark's own traffic, not another tenant's."""
    return {pid: (int(f[11]) + int(f[12])) / CLK_TCK for pid, f in all_process_stats() if int(f[6]) & PF_KTHREAD}


def kernel_threads_since(before):
    """What kernel threads ran since `before` (kernel_threads_cpu_seconds):
    per thread, so that one that ended meanwhile (a kworker) does not take
    all it ever ran out of the total."""
    # A PID another thread took meanwhile reads below its old total: then
    # all it has is new.
    return sum(
        now - before.get(pid, 0.0) if now >= before.get(pid, 0.0) else now
        for pid, now in kernel_threads_cpu_seconds().items()
    )


def own_cpu_seconds():
    """The harness and the children it has waited for (load generator runs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Meter:
    """CPU time around one load run: the proxy's, its CPUs' busy time, and
    other tenants' work (noise): the machine's process time minus that of the
    benchmark (harness, proxy, upstream, load generator) and of kernel threads.
    Computed from totals, so processes that come and go in between cannot skew it."""

    def __init__(self, bench, running):
        self.running = running
        self.proxy = running.pids()
        self.ours = self.proxy + ([bench.upstream.pid] if bench.upstream else [])
        self.kthreads = kernel_threads_cpu_seconds()
        self.start = self._sample()

    def _sample(self):
        return (
            *cpu_split_seconds(self.proxy),
            cpus_busy_seconds(self.running.cpus),
            machine_cpu_seconds() - cpu_seconds(self.ours) - own_cpu_seconds(),
        )

    def stop(self, wall):
        kthreads = kernel_threads_since(self.kthreads)
        user, system, proxy_cpus, others = (b - a for a, b in zip(self.start, self._sample()))
        others -= kthreads
        out = {"cpus_busy": proxy_cpus / wall, "noise": max(0.0, others) / wall}
        if self.running.proc:
            out["cpu_cores"] = (user + system) / wall
            out["cpu_s"] = user + system
            out["user_s"], out["system_s"] = user, system
        return out


def rss_kib(pids):
    """Memory of a process tree: the PSS of each process (from smaps_rollup),
    summed, so that pages its processes share (NGINX's master and worker)
    count once, not once per process."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def port_taken(port):
    """Something listens there: another engineer's proxy, or one of ours whose
    listener is still being torn down (io_uring releases files after exit)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port_free(port, timeout=10.0):
    """Wait out a listener that is going away, so a new SO_REUSEPORT listener
    never shares the port with it; fail if the port stays taken."""
    deadline = time.monotonic() + timeout
    while port_taken(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} is taken; pass --port-base")
        time.sleep(0.05)


def wait_http_ok(url, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail()}")
        try:
            # The TLS row's certificate is a self-signed one made for the run.
            context = ssl._create_unverified_context() if url.startswith("https") else None
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    r.read()
                    return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{url} not answering 200 after {timeout:.0f}s: {last}")


def taskset(cpus, cmd):
    return ["taskset", "-c", cpus_text(cpus)] + [str(c) for c in cmd]


# ---------------------------------------------------------------- peers


@dataclass
class Running:
    url: str
    cpus: list
    proc: Proc | None = None

    def pids(self):
        return process_tree(self.proc.pid) if self.proc else []

    def stop(self):
        if self.proc:
            self.proc.stop()


# Each Ringway worker's first line: "worker N started on the DRIVER driver",
# then " pinned to core C" or " (pinning to core C refused)" where it was asked to pin.
WORKER_STARTED = re.compile(r"worker \d+ started on the (.+?) driver(?:( pinned) to core \d+)?")


class Bench:
    def __init__(self, args, run_dir):
        self.a = args
        self.run_dir = run_dir
        self.up_port = args.port_base
        self.ports = {"ringway": args.port_base + 1, "nginx": args.port_base + 2, "haproxy": args.port_base + 3}
        self.nofile = _nofile_limit()
        self.commands = {}
        self.upstream = None
        self.budget_left = args.noise_budget
        self.disturbed = []  # measurements still above --max-noise after repeating
        self.repeated = 0
        self.ringway_loops = set()  # how its workers said they run: driver, pinning

    def note_command(self, key, cmd, url=None, names=None):
        """Keep the first command line of each kind for RESULTS.md, portable:
        paths relative to the repository, $RUNDIR for the generated configs,
        $URL for the peer's URL (the URLs are listed there too), and any
        other `names` {text: placeholder}."""
        line = " ".join(shlex.quote(str(c)) for c in cmd)
        subs = {sys.executable: "python3", f"{ROOT}/": "", str(self.run_dir): "$RUNDIR"}
        subs |= ({url: "$URL"} if url else {}) | (names or {})
        for text, placeholder in subs.items():
            line = line.replace(text, placeholder)
        self.commands.setdefault(key, line)

    def urls(self):
        direct = f"http://127.0.0.1:{self.up_port}/"
        return {"direct": direct} | {p: f"http://127.0.0.1:{port}/" for p, port in self.ports.items()}

    # --- upstream

    def start_upstream(self, body_size):
        for port in [self.up_port] + list(self.ports.values()):
            wait_port_free(port)
        cmd = taskset(
            self.a.load_cpus,
            [LOAD, "serve", "--address", f"127.0.0.1:{self.up_port}", "--threads", self.a.upstream_threads]
            + ["--body-size", body_size],
        )
        self.note_command(f"upstream {body_size} B", cmd)
        proc = Proc(f"upstream-{body_size}", cmd, self.run_dir)
        wait_http_ok(f"http://127.0.0.1:{self.up_port}/", proc)
        self.upstream = proc
        return proc

    # --- proxies

    def start_peer(self, peer, workers=None, cpus=None, tls=False, hold_idle=True):
        """Start a peer; with `tls`, its listener terminates TLS with the
        run's certificate (see `certificate`). Its connection limits leave
        room for the held idle connections unless `hold_idle` is false."""
        workers = workers or self.a.workers
        cpus = cpus or self.a.proxy_cpus
        if peer == "direct":
            return Running(f"http://127.0.0.1:{self.up_port}/", cpus)
        base = "ringway" if peer.startswith("ringway") else peer
        port = self.ports[base]
        wait_port_free(port)
        suffix = ("-tls" if tls else "") + ("" if hold_idle else "-at-rest")
        conf_dir = self.run_dir / f"{peer}-w{workers}{suffix}"
        conf_dir.mkdir(exist_ok=True)
        cert = self.certificate() if tls else None
        if base == "ringway":
            cmd = [RINGWAY, "-c", self._ringway_conf(conf_dir, workers, port, cert)]
            stop = signal.SIGTERM
        elif base == "nginx":
            conf = self._template("nginx.conf", conf_dir, workers, cpus, port, cert, hold_idle)
            cmd = ["nginx", "-p", conf_dir, "-c", conf, "-e", conf_dir / "nginx-error.log"]
            stop = signal.SIGTERM
        else:
            cmd = ["haproxy", "-db", "-f", self._template("haproxy.cfg", conf_dir, workers, cpus, port, cert, hold_idle)]
            stop = signal.SIGTERM
        cmd = taskset(cpus, cmd)
        self.note_command(f"{peer} workers={workers}{suffix.replace('-', ' ')}", cmd)
        proc = Proc(f"{peer}-w{workers}{suffix}", cmd, self.run_dir, stop)
        scheme = "https" if tls else "http"
        running = Running(f"{scheme}://127.0.0.1:{port}/", cpus, proc)
        try:
            wait_http_ok(running.url, proc)
        except BaseException:
            running.stop()
            raise
        if base == "ringway":
            # Each worker writes its line as it starts, the first may already
            # serve: wait (briefly) for all of them.
            deadline = time.monotonic() + 5
            started = WORKER_STARTED.findall(proc.tail(lines=10_000))
            while len(started) < workers and time.monotonic() < deadline:
                time.sleep(0.05)
                started = WORKER_STARTED.findall(proc.tail(lines=10_000))
            self.ringway_loops |= set(started)
        return running

    def certificate(self):
        """The TLS row's certificate: self-signed ECDSA P-256 for 127.0.0.1,
        made once per run. Returns (cert, key, both in one file for HAProxy)."""
        cert, key, both = (self.run_dir / n for n in ("tls-cert.pem", "tls-key.pem", "tls-both.pem"))
        if not both.exists():
            cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            cmd += ["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
            cmd += ["-keyout", key, "-out", cert]
            self.note_command("certificate", cmd)
            subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=60)
            both.write_text(cert.read_text() + key.read_text())
        return cert, key, both

    def _ringway_conf(self, conf_dir, workers, port, cert=None):
        text = (BENCH / "ringway.toml").read_text()
        text, n1 = re.subn(r"(?m)^workers = \d+$", f"workers = {workers}", text)
        listen = f'address = "127.0.0.1:{port}"'
        if cert:
            listen += f'\ntls = {{ cert = "{cert[0]}", key = "{cert[1]}" }}'
        text, n2 = re.subn(r'address = "127\.0\.0\.1:18080"', listen, text)
        text, n3 = re.subn(r'address = "127\.0\.0\.1:18000"', f'address = "127.0.0.1:{self.up_port}"', text)
        if (n1, n2, n3) != (1, 1, 1):
            raise RuntimeError("bench/ringway.toml no longer has the workers / address lines the harness rewrites")
        path = conf_dir / "ringway.toml"
        path.write_text(text)
        return path

    def _template(self, name, conf_dir, workers, cpus, port, cert=None, hold_idle=True):
        # Both peers must take the held idle connections plus the load's.
        conns = (self.a.idle_conns if hold_idle else 0) + self.a.connections * 4 + 256
        nginx_mask = " ".join(_cpu_mask(cpus[i % len(cpus)]) for i in range(workers))
        haproxy_map = "\n    ".join(f"cpu-map 1/{i + 1} {cpus[i % len(cpus)]}" for i in range(workers))
        values = {
            "RUNDIR": str(conf_dir),
            "WORKERS": str(workers),
            "NOFILE": str(self.nofile),
            "CONNECTIONS": str(conns),
            # NGINX starts closing idle keep-alive connections ("worker_connections
            # are not enough, reusing connections") once fewer than 1/16 are free.
            "NGINX_CONNECTIONS": str(conns * 9 // 8),
            "PORT": str(port),
            "UPSTREAM_PORT": str(self.up_port),
            "NGINX_CPU_AFFINITY": nginx_mask,
            "HAPROXY_CPU_MAP": haproxy_map,
            "NGINX_SSL": " ssl" if cert else "",
            # NGINX 1.22 stops at TLS 1.2 unless told; the others negotiate 1.3.
            "NGINX_SSL_CONF": (
                f"ssl_certificate {cert[0]};\n        ssl_certificate_key {cert[1]};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;"
                if cert
                else ""
            ),
            "HAPROXY_SSL": f" ssl crt {cert[2]}" if cert else "",
            "PROTO": "https" if cert else "http",
        }
        text = (BENCH / name).read_text()
        text = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], text)
        path = conf_dir / name
        path.write_text(text)
        return path

    # --- load

    def _load_cmd(self, url, extra, threads=None, conns=None):
        threads = threads or self.a.load_threads
        conns = conns or self.a.connections
        return taskset(self.a.load_cpus, [LOAD, f"-t{threads}", f"-c{conns}"] + extra + ["--json", url])

    def _run_json(self, cmd, key, url=None):
        self.note_command(key, cmd, url)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.duration * 3 + 60)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout)

    def warm(self, url, threads=None, conns=None):
        if self.a.warmup > 0:
            cmd = self._load_cmd(url, [f"-d{secs(self.a.warmup)}"], threads, conns)
            self.note_command("warm-up (not recorded)", cmd, url)
            subprocess.run(cmd, capture_output=True, timeout=self.a.warmup + 60)

    def closed(self, running, key="closed", threads=None, conns=None):
        """Closed loop at saturation: req/s, latency, proxy CPU per request."""
        self.warm(running.url, threads, conns)
        cmd = self._load_cmd(running.url, [f"-d{secs(self.a.duration)}"], threads, conns)
        return self._measured(running, cmd, key)

    def _measured(self, running, cmd, key):
        """One ringway-load run with the CPU figures around it."""
        meter = Meter(self, running)
        rep = self._run_json(cmd, key, running.url)
        m = meter.stop(rep.get("duration_s") or self.a.duration)
        f = _figures(rep) | {k: v for k, v in m.items() if not k.endswith("_s")}
        if "cpu_s" in m and rep["requests"]:
            for part in ("cpu", "user", "system"):
                f[f"{part}_us"] = m[f"{part}_s"] * 1e6 / rep["requests"]
        return f

    def fixed(self, running):
        """Open loop at --rate: latency and proxy CPU per request below saturation."""
        cmd = self._load_cmd(running.url, [f"-R{self.a.rate}", f"-d{secs(self.a.duration)}"])
        f = self._measured(running, cmd, "fixed")
        return {f"fixed_{k}": v for k, v in f.items()}

    def wrk(self, running):
        cmd = taskset(
            self.a.load_cpus,
            ["wrk", f"-t{self.a.load_threads}", f"-c{self.a.connections}", f"-d{round(self.a.duration)}s", "--latency"]
            + [running.url],
        )
        self.note_command("wrk", cmd, running.url)
        meter = Meter(self, running)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.duration * 3 + 60)
        noise = meter.stop(round(self.a.duration))["noise"]
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        return _parse_wrk(out.stdout) | {"wrk_noise": noise}

    def wrk_tls(self, running):
        """Closed loop over TLS with wrk (ringway-load speaks plain HTTP):
        req/s, latency and proxy CPU per request. Connections are kept, so
        this is the cost of the record layer, not of handshakes."""
        duration = round(self.a.duration)
        wrk = ["wrk", f"-t{self.a.load_threads}", f"-c{self.a.connections}"]
        if self.a.warmup > 0:
            warm = taskset(self.a.load_cpus, wrk + [f"-d{max(1, round(self.a.warmup))}s", running.url])
            subprocess.run(warm, capture_output=True, timeout=self.a.warmup + 60)
        cmd = taskset(self.a.load_cpus, wrk + [f"-d{duration}s", "--latency", running.url])
        self.note_command("wrk over TLS", cmd, running.url)
        meter = Meter(self, running)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.duration * 3 + 60)
        m = meter.stop(duration)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        f = _parse_wrk(out.stdout)
        requests = re.search(r"(\d+) requests in", out.stdout)
        if requests and int(requests.group(1)) and "cpu_s" in m:
            f["cpu_us"] = m["cpu_s"] * 1e6 / int(requests.group(1))
        return f | {"noise": m["noise"]}

    def wait_quiet(self, running, longest=60.0):
        """Before a measurement: while other processes keep the machine busier
        than --max-noise, wait (out of the noise budget, at most `longest` s,
        so one long disturbance cannot use up the budget of every later run)."""
        deadline = time.monotonic() + longest
        while self.budget_left > 0 and time.monotonic() < deadline:
            meter = Meter(self, running)
            time.sleep(0.5)
            self.budget_left -= 0.5
            if meter.stop(0.5)["noise"] <= self.a.max_noise:
                return

    def least_noisy(self, what, running, measure, attempts=3):
        """Run `measure(running)`; while other work disturbed it and the noise
        budget lasts, wait for quiet and run it again, `attempts` times at
        most. Keeps the quietest run."""
        best = None
        for attempt in range(1, attempts + 1):
            self.wait_quiet(running)
            t0 = time.monotonic()
            figs = measure(running)
            noise = next((v for k, v in figs.items() if k.endswith("noise")), 0.0)
            if best is None or noise < best[0]:
                best = (noise, figs)
            if noise <= self.a.max_noise:
                break
            spent = time.monotonic() - t0
            if self.budget_left < spent or attempt == attempts:
                self.disturbed.append(f"{what} ({best[0]:.2f} cores)")
                break
            self.budget_left -= spent
            self.repeated += 1
            log(f"{what}: {noise:.2f} cores of other work on the machine, repeating")
        return best[1]

    def idle(self, peer):
        """Fresh proxy: RSS after start, then RSS growth per idle keep-alive
        connection. NGINX and HAProxy set up a slot for every connection
        their limits allow when they start: that is the held connections'
        cost, not the idle figure's. So "idle" is read from the proxy with
        limits for the load alone, and what the limits for the held
        connections add at start counts with them."""
        at_rest = self.start_peer(peer, hold_idle=False)
        try:
            time.sleep(0.5)
            rss_at_rest = rss_kib(at_rest.pids())
        finally:
            at_rest.stop()
        running = self.start_peer(peer)
        try:
            time.sleep(0.5)
            rss_start = rss_kib(running.pids())
            host, port = running.url.split("//")[1].rstrip("/").split(":")
            cmd = taskset(
                self.a.load_cpus,
                [sys.executable, HOLD, "--connect", f"{host}:{port}", "-n", self.a.idle_conns, "--window", 64],
            )
            self.note_command("hold_idle", cmd, names={f"{host}:{port}": "$ADDR"})
            pipe = subprocess.PIPE
            hold = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=pipe, text=True)
            try:
                _expect(hold, "primed")
                time.sleep(0.3)
                base = rss_kib(running.pids())
                hold.stdin.write("go\n")
                hold.stdin.flush()
                held = _expect(hold, "held").split()
                time.sleep(1.0)
                full = rss_kib(running.pids())
                hold.stdin.write("done\n")
                hold.stdin.flush()
                dropped = int(_expect(hold, "dropped").split()[1])
                hold.wait(timeout=30)
            finally:
                if hold.poll() is None:
                    hold.kill()
                    hold.wait()
            n = int(held[1])
            return {
                "rss_idle_kib": rss_at_rest,
                "rss_sized_kib": rss_start,
                "rss_per_conn_b": (full - base + rss_start - rss_at_rest) * 1024 / n,
                "idle_dropped": dropped,
                "idle_setup_s": float(held[2]),
            }
        finally:
            running.stop()

    def _under_perf(self, running, perf_args, key):
        """One saturated closed-loop run while `perf <perf_args> -p PIDS -- sleep D`
        watches the proxy; perf runs on the load CPUs. Returns (report, perf's stderr)."""
        self.warm(running.url)
        pids = ",".join(str(p) for p in running.pids())
        perf_cmd = taskset(self.a.load_cpus, ["perf", *perf_args, "-p", pids, "--", "sleep", f"{self.a.duration:g}"])
        self.note_command(key, perf_cmd, names={f"-p {pids} ": "-p $PROXY_PIDS "})
        perf = subprocess.Popen(perf_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            rep = self._run_json(self._load_cmd(running.url, [f"-d{secs(self.a.duration)}"]), "closed", running.url)
            _, err = perf.communicate(timeout=self.a.duration + 60)
        finally:
            if perf.poll() is None:
                perf.kill()
                perf.wait()
        if perf.returncode != 0:
            raise RuntimeError(f"perf {perf_args[0]} failed ({perf.returncode}): {err.strip()[-400:]}")
        return rep, err

    def profile(self, out_dir):
        """perf record -g of a 1-worker Ringway during a saturated closed-loop run."""
        running = self.start_peer("ringway")
        try:
            data = out_dir / "ringway.perf.data"
            rep, _ = self._under_perf(running, ["record", "-g", "-F", "999", "-o", data], "perf record")
        finally:
            running.stop()
        report = ["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--percent-limit", "0.7"]
        sym = subprocess.run(report + ["--sort", "dso,symbol"], capture_output=True, text=True, timeout=120)
        dso = subprocess.run(report + ["--sort", "dso"], capture_output=True, text=True, timeout=120)
        return {"rps": rep.get("rps"), "symbols": _perf_lines(sym.stdout), "dsos": _perf_lines(dso.stdout)}

    def kernel_counts(self, peer):
        """System calls, context switches and io_uring requests per request at saturation."""
        running = self.start_peer(peer)
        try:
            events = ",".join(e for e, _ in PERF_COUNTS)
            rep, err = self._under_perf(running, ["stat", "-x,", "-e", events], "perf stat")
        finally:
            running.stop()
        counts = {}
        for line in err.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in dict(PERF_COUNTS):
                try:
                    counts[fields[2]] = float(fields[0])
                except ValueError:
                    pass  # "<not counted>" / "<not supported>"
        # perf counted for `duration` seconds; the load ran about as long.
        per_s = rep["requests"] / max(rep.get("duration_s") or self.a.duration, 1e-9)
        return {e: counts[e] / self.a.duration / per_s for e in counts}


# perf events counted per request in --profile, and how RESULTS.md names them.
PERF_COUNTS = [
    ("raw_syscalls:sys_enter", "system calls"),
    ("context-switches", "context switches"),
    ("io_uring:io_uring_submit_req", "io_uring requests submitted"),
    ("io_uring:io_uring_poll_arm", "io_uring requests parked on poll (not ready at submit)"),
    ("io_uring:io_uring_queue_async_work", "io_uring requests punted to io-wq threads"),
]


def _perf_lines(text):
    """perf report's rows without comments, blank lines and empty trailing columns."""
    rows = (re.sub(r"[\s-]+$", "", line) for line in text.splitlines() if not line.startswith("#"))
    return "\n".join(r for r in rows if r.strip())


def _nofile_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def secs(x):
    return f"{x:g}s"


def _cpu_mask(cpu):
    return "1" + "0" * cpu


def _expect(hold, word):
    line = hold.stdout.readline()
    if not line.startswith(word):
        raise RuntimeError(f"hold_idle: expected {word!r}, got {line!r}: {hold.stderr.read().strip()[-400:]}")
    return line.strip()


def _figures(rep):
    errors = sum(rep.get("errors", {}).values())
    # As ringway-load counts them: 2xx and 3xx answers are not errors.
    bad_status = sum(n for code, n in rep.get("status", {}).items() if not code.startswith(("2", "3")))
    lat = rep.get("latency_us", {})
    f = {
        "rps": rep["rps"],
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "p999": lat.get("p999"),
        "errors": errors + bad_status,
    }
    return f


def _wrk_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def _parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{text}")
    out["wrk_rps"] = float(m.group(1))
    for pct, key in (("50", "wrk_p50"), ("99", "wrk_p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            out[key] = _wrk_us(m.group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["wrk_errors"] = (sum(map(int, errs.groups())) if errs else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return out


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    # scenario -> peer -> metric -> [value per run]
    runs: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    profile: dict | None = None

    def add(self, scenario, peer, figures):
        slot = self.runs.setdefault(scenario, {}).setdefault(peer, {})
        for k, v in figures.items():
            if v is not None:
                slot.setdefault(k, []).append(v)
            # Failed requests and error statuses would flatter a proxy's
            # req/s and latency: a run that had any is reported.
            if k.endswith("errors") and v:
                self.failures.append(f"{scenario} {peer}: {v:g} {k.replace('_', ' ')}")

    def median(self, scenario, peer, metric):
        vals = self.runs.get(scenario, {}).get(peer, {}).get(metric)
        return statistics.median(vals) if vals else None

    def lowest(self, scenario, peer, metric):
        vals = self.runs.get(scenario, {}).get(peer, {}).get(metric)
        return min(vals) if vals else None


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def attempt(res, what, fn):
    try:
        return fn()
    except (RuntimeError, OSError, subprocess.SubprocessError, json.JSONDecodeError, KeyError, ValueError) as e:
        log(f"FAILED {what}: {e}")
        lines = [line for line in str(e).splitlines() if line.strip()]
        res.failures.append(f"{what}: {' / '.join(lines[:1] + lines[-1:]) if lines else type(e).__name__}")
        return None


def run_all(a, bench, res):
    peers = a.peers
    rows = a.rows
    base_rows = [r for r in ("closed", "wrk", "fixed", "idle") if r in rows]
    if base_rows or "workers2" in rows:
        up = bench.start_upstream(BASE_BODY)
        try:
            for r in range(a.runs):
                for peer in peers:
                    loaded = [x for x in base_rows if x != "idle"]
                    if loaded:
                        log(f"round {r + 1}/{a.runs} {peer}: {', '.join(loaded)}")
                        attempt(res, f"{peer} {'/'.join(loaded)}", lambda: _base_round(bench, res, peer, loaded))
                    if "idle" in base_rows and peer != "direct":
                        log(f"round {r + 1}/{a.runs} {peer}: idle ({a.idle_conns} connections)")
                        figs = attempt(res, f"{peer} idle", lambda: bench.idle(peer))
                        if figs:
                            res.add("base", peer, figs)
                            if figs["idle_dropped"]:
                                res.failures.append(f"{peer} idle: {figs['idle_dropped']} held connections closed")
                if "workers2" in rows and "ringway" in peers:
                    log(f"round {r + 1}/{a.runs} ringway 2 workers on CPUs {cpus_text(a.workers2_cpus)}")
                    attempt(res, "ringway 2 workers", lambda: _one_closed(bench, res, "base", "ringway-2w", 2))
        finally:
            up.stop()
    for row, size in BODY_ROWS.items():
        if row not in rows:
            continue
        up = bench.start_upstream(size)
        try:
            for r in range(a.runs):
                for peer in peers:
                    log(f"round {r + 1}/{a.runs} {peer}: {size} B body")
                    attempt(res, f"{peer} {row}", lambda: _one_closed(bench, res, row, peer))
        finally:
            up.stop()
    if "tls" in rows:
        up = bench.start_upstream(BASE_BODY)
        try:
            for r in range(a.runs):
                for peer in [p for p in peers if p != "direct"]:
                    log(f"round {r + 1}/{a.runs} {peer}: TLS")
                    attempt(res, f"{peer} tls", lambda: _tls_round(bench, res, peer))
        finally:
            up.stop()
    if "scaling" in rows:
        up = bench.start_upstream(BASE_BODY)
        try:
            for r in range(a.runs):
                for k in a.scaling:
                    if k > len(a.scaling_cpus):
                        if r == 0:
                            have = len(a.scaling_cpus)
                            res.skipped.append(f"scaling, {k} workers: only {have} CPUs in --scaling-cpus")
                        continue
                    log(f"round {r + 1}/{a.runs} scaling: ringway {plural(k, 'worker')}")
                    attempt(res, f"scaling {k}", lambda: _scaling_round(bench, res, k))
        finally:
            up.stop()
    if a.profile:
        up = bench.start_upstream(BASE_BODY)
        try:
            log("profile: perf record of Ringway at saturation")
            res.profile = attempt(res, "profile", lambda: bench.profile(bench.run_dir)) or {}
            res.profile["counts"] = {}
            for peer in [p for p in a.peers if p != "direct"]:
                log(f"profile: perf stat of {peer} at saturation")
                counts = attempt(res, f"perf stat {peer}", lambda: bench.kernel_counts(peer))
                if counts:
                    res.profile["counts"][peer] = counts
        finally:
            up.stop()


def _base_round(bench, res, peer, loaded):
    running = bench.start_peer(peer)
    try:
        for row in loaded:
            measure = {"closed": bench.closed, "wrk": bench.wrk, "fixed": bench.fixed}[row]
            res.add("base", peer, bench.least_noisy(f"{peer} {row}", running, measure))
    finally:
        running.stop()


def _one_closed(bench, res, scenario, peer, workers=None):
    cpus = bench.a.workers2_cpus if peer == "ringway-2w" else None
    running = bench.start_peer(peer, workers, cpus)
    try:
        res.add(scenario, peer, bench.least_noisy(f"{peer} {scenario}", running, bench.closed))
    finally:
        running.stop()


def _tls_round(bench, res, peer):
    running = bench.start_peer(peer, tls=True)
    try:
        res.add("tls", peer, bench.least_noisy(f"{peer} tls", running, bench.wrk_tls))
    finally:
        running.stop()


def _scaling_round(bench, res, k):
    cpus = bench.a.scaling_cpus[:k]
    running = bench.start_peer("ringway", k, cpus)
    try:
        def measure(r):
            return bench.closed(r, "closed (scaling: connections × workers)", conns=bench.a.connections * k)

        res.add("scaling", k, bench.least_noisy(f"scaling {k}", running, measure))
    finally:
        running.stop()


# ---------------------------------------------------------------- report


def fmt(v, kind):
    if v is None:
        return "—"
    return {
        "rps": lambda: f"{v:,.0f}",
        "us": lambda: f"{v:,.0f}",
        "cpu": lambda: f"{v:.2f}",
        "cores": lambda: f"{v:.2f}",
        "kib": lambda: f"{v:,.0f} KiB",
        "bytes": lambda: f"{v:,.0f} B",
    }.get(kind, lambda: str(v))()


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


# (scenario, metric, label, kind, better); better "" marks a diagnostic row.
TABLE = [
    ("base", "rps", "req/s, closed loop (ringway-load)", "rps", "higher"),
    ("base", "p50", "p50 µs at max load", "us", "lower"),
    ("base", "p99", "p99 µs at max load", "us", "lower"),
    ("base", "p999", "p99.9 µs at max load", "us", "lower"),
    ("base", "wrk_rps", "req/s, wrk", "rps", "higher"),
    ("base", "wrk_p50", "wrk p50 µs", "us", "lower"),
    ("base", "wrk_p99", "wrk p99 µs", "us", "lower"),
    ("base", "cpu_us", "proxy CPU µs/request at saturation", "cpu", "lower"),
    ("base", "fixed_cpu_us", "proxy CPU µs/request at the fixed rate", "cpu", "lower"),
    ("base", "fixed_p50", "p50 µs at the fixed rate", "us", "lower"),
    ("base", "fixed_p99", "p99 µs at the fixed rate", "us", "lower"),
    ("base", "fixed_p999", "p99.9 µs at the fixed rate", "us", "lower"),
    ("base", "rss_idle_kib", "RSS idle after start", "kib", "lower"),
    ("base", "rss_per_conn_b", "RSS per idle keep-alive connection", "bytes", "lower"),
    ("body1k", "rps", "req/s, 1 KiB body", "rps", "higher"),
    ("body1k", "p99", "p99 µs, 1 KiB body", "us", "lower"),
    ("body1k", "cpu_us", "proxy CPU µs/request, 1 KiB body", "cpu", "lower"),
    ("body64k", "rps", "req/s, 64 KiB body", "rps", "higher"),
    ("body64k", "p99", "p99 µs, 64 KiB body", "us", "lower"),
    ("body64k", "cpu_us", "proxy CPU µs/request, 64 KiB body", "cpu", "lower"),
    ("tls", "wrk_rps", "req/s over TLS (wrk)", "rps", "higher"),
    ("tls", "wrk_p99", "p99 µs over TLS (wrk)", "us", "lower"),
    ("tls", "cpu_us", "proxy CPU µs/request over TLS", "cpu", "lower"),
    ("base", "user_us", "proxy user-space CPU µs/request at saturation", "cpu", ""),
    ("base", "system_us", "proxy kernel CPU µs/request at saturation (system time)", "cpu", ""),
    ("base", "cpu_cores", "proxy process CPU use at saturation (cores)", "cores", ""),
    ("base", "cpus_busy", "proxy CPUs busy at saturation, all sources (cores)", "cores", ""),
    ("base", "noise", "other processes' work during the closed-loop run (cores)", "cores", ""),
    ("base", "rss_sized_kib", "RSS idle after start, limits sized for the held connections", "kib", ""),
]

# Diagnostic rows of the lowest value over the runs, ratios included: a
# shared VM can run every peer at one of two speeds from round to round,
# unseen by the noise meter (see bench/README.md), and the lowest CPU cost
# is each proxy's own without that slowdown.
LOWEST = [
    ("base", "cpu_us", "proxy CPU µs/request at saturation, lowest of the runs", "cpu"),
]


def main_table(a, res):
    peers = a.peers
    head = ["figure"] + [LABEL[p] for p in peers] + ["Ringway/direct", "Ringway/NGINX", "Ringway/HAProxy", "better"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scen, metric, label, kind, better in TABLE:
        vals = {p: res.median(scen, p, metric) for p in peers}
        if all(v is None for v in vals.values()):
            continue
        rw = vals.get("ringway")
        cells = [label] + [fmt(vals[p], kind) for p in peers]
        cells.append(ratio(rw, vals.get("direct")) if metric.endswith("rps") else "")
        if better:
            cells += [ratio(rw, vals.get("nginx")), ratio(rw, vals.get("haproxy")), better]
        else:
            cells += ["", "", "diagnostic"]
        lines.append("| " + " | ".join(cells) + " |")
    for scen, metric, label, kind in LOWEST:
        vals = {p: res.lowest(scen, p, metric) for p in peers}
        if sum(len(res.runs.get(scen, {}).get(p, {}).get(metric, [])) for p in peers) <= len(peers):
            continue  # one run each: the lowest is the median
        rw = vals.get("ringway")
        cells = [label] + [fmt(vals[p], kind) for p in peers] + [""]
        cells += [ratio(rw, vals.get("nginx")), ratio(rw, vals.get("haproxy")), "diagnostic"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(res):
    m = res.median
    rows = ["| target | Ringway vs peer | |", "|---|---|---|"]

    def row(name, measured, ok):
        rows.append(f"| {name} | {measured} | {'—' if ok is None else ('met' if ok else 'NOT met')} |")

    def both(x, y):
        return x is not None and y is not None

    rw, ng = m("base", "ringway", "cpu_us"), m("base", "nginx", "cpu_us")
    row(
        "CPU µs/request at saturation ≤ 0.7× NGINX",
        f"{fmt(rw, 'cpu')} vs {fmt(ng, 'cpu')} ({ratio(rw, ng)})",
        rw <= 0.7 * ng if both(rw, ng) else None,
    )
    # What the kernel alone charges Ringway per request bounds that ratio
    # from below, whatever its user space costs.
    rw_system = m("base", "ringway", "system_us")
    if both(rw_system, ng):
        row(
            "its floor: Ringway's kernel CPU time alone vs NGINX's total",
            f"{fmt(rw_system, 'cpu')} vs {fmt(ng, 'cpu')} ({ratio(rw_system, ng)})",
            None,
        )
    # The target's baseline was measured with wrk, whose own ceiling is lower
    # than ringway-load's: both are shown.
    for metric, tool in (("rps", "ringway-load"), ("wrk_rps", "wrk")):
        rr, dr = m("base", "ringway", metric), m("base", "direct", metric)
        row(
            f"req/s ≥ 0.95× direct ({tool})",
            f"{fmt(rr, 'rps')} vs {fmt(dr, 'rps')} ({ratio(rr, dr)})",
            rr >= 0.95 * dr if both(rr, dr) else None,
        )
    p99_targets = (("p99", "p99 below NGINX's at max load"), ("fixed_p99", "p99 below NGINX's at the fixed rate"))
    for metric, what in p99_targets:
        r, n = m("base", "ringway", metric), m("base", "nginx", metric)
        row(what, f"{fmt(r, 'us')} µs vs {fmt(n, 'us')} µs", r < n if both(r, n) else None)
    per = m("base", "ringway", "rss_per_conn_b")
    row("RSS per idle connection ≤ 1 KiB", fmt(per, "bytes"), per <= 1024 if per is not None else None)
    # Scaling: the most workers measured, against k × one worker's req/s.
    counts = sorted(k for k in res.runs.get("scaling", {}) if k > 1)
    one = m("scaling", 1, "rps")
    if counts and one:
        k = counts[-1]
        rk = m("scaling", k, "rps")
        linear = rk / (k * one) if rk else None
        row(
            f"req/s at {k} workers ≥ 0.9× linear",
            f"{fmt(rk, 'rps')} vs {k} × {fmt(one, 'rps')} ({linear:.2f}×)" if linear else "—",
            linear >= 0.9 if linear else None,
        )
    else:
        row("req/s at 8 workers ≥ 0.9× linear", "not recorded (see Ringway scaling)", None)
    return "\n".join(rows)


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unavailable"


def machine():
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1024 / 1024:.0f} GiB memory, kernel {platform.release()}"


def versions():
    rev = first_line(["git", "rev-parse", "HEAD"])
    git_status = ["git", "status", "--porcelain", "--untracked-files=no"]
    try:
        dirty = subprocess.run(git_status, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:  # no git on this host: the revision reads "unavailable" too
        dirty = ""
    return {
        "git": rev + (" (with uncommitted changes)" if dirty else ""),
        "ringway": first_line([RINGWAY, "--version"]),
        "ringway-load": first_line([LOAD, "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "openssl": first_line(["openssl", "version"]),
        "rustc": first_line(["rustc", "-V"]),
        "python": sys.version.split()[0],
    }


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def all_runs(res):
    lines = ["| scenario | peer | metric | runs |", "|---|---|---|---|"]
    for scen, peers in res.runs.items():
        for peer, metrics in peers.items():
            for metric, vals in metrics.items():
                shown = ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in vals)
                lines.append(f"| {scen} | {LABEL.get(peer, peer)} | {metric} | {shown} |")
    return "\n".join(lines)


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def workers2_section(a, res):
    w2 = {k: res.median("base", "ringway-2w", k) for k in ("rps", "p50", "p99", "cpu_us")}
    if w2["rps"] is None:
        return []
    out = [
        f"### Ringway, 2 workers on CPUs {cpus_text(a.workers2_cpus)}",
        "",
        "| req/s | p50 µs | p99 µs | CPU µs/request | req/s vs 1 worker |",
        "|---|---|---|---|---|",
        f"| {fmt(w2['rps'], 'rps')} | {fmt(w2['p50'], 'us')} | {fmt(w2['p99'], 'us')} | "
        f"{fmt(w2['cpu_us'], 'cpu')} | {ratio(w2['rps'], res.median('base', 'ringway', 'rps'))} |",
        "",
    ]
    if not set(a.workers2_cpus).isdisjoint(a.load_cpus):
        out += [
            "The second worker shares its core with the load generator and the upstream, so this row shows "
            "contention, not scaling; record scaling with `--scaling` on a host with spare cores.",
            "",
        ]
    return out


def scaling_section(a, res):
    if "scaling" not in res.runs:
        return [
            "### Ringway scaling",
            "",
            "Not recorded in this run. Scaling (1, 2, 4 and 8 workers, target ≥ 0.9× linear) needs a host "
            "with a core for each worker plus cores for the load generator and the upstream; run "
            "`bench/run.sh --rows scaling --proxy-cpus 0-7 --load-cpus 8-15 --load-threads 4 "
            "--upstream-threads 4 --scaling 1,2,4,8 --scaling-cpus 0-7` there (bench/README.md).",
            "",
        ]
    one = res.median("scaling", 1, "rps") if 1 in res.runs["scaling"] else None
    out = [
        "### Ringway scaling",
        "",
        f"k workers on the first k CPUs of {cpus_text(a.scaling_cpus)}, {a.connections} connections per worker, "
        f"load generator on CPUs {cpus_text(a.load_cpus)} with {plural(a.load_threads, 'thread')}. "
        "Linear is k × the 1-worker req/s; the target is ≥ 0.9×.",
        "",
        "| workers | req/s | p99 µs | CPU µs/request | req/s per worker | vs linear |",
        "|---|---|---|---|---|---|",
    ]
    for k in sorted(res.runs["scaling"]):
        rps = res.median("scaling", k, "rps")
        linear = f"{rps / (k * one):.2f}×" if rps and one else "—"
        out.append(
            f"| {k} | {fmt(rps, 'rps')} | {fmt(res.median('scaling', k, 'p99'), 'us')} | "
            f"{fmt(res.median('scaling', k, 'cpu_us'), 'cpu')} | {fmt(rps / k if rps else None, 'rps')} | {linear} |"
        )
    return out + [""]


def profile_section(a, p):
    if not p:
        return []
    out = []
    if "symbols" in p:
        out += [
            "## Profile: Ringway at saturation",
            "",
            f"`perf record -g` of the 1-worker process during one closed-loop run ({fmt(p['rps'], 'rps')} req/s "
            "while recording). Self time by binary, then the top symbols:",
            "",
            "```",
            p["dsos"],
            "```",
            "",
            "```",
            p["symbols"],
            "```",
            "",
        ]
    counts = p.get("counts")
    if counts:
        peers = [q for q in a.peers if q in counts]
        out += [
            "### Kernel work per request at saturation",
            "",
            "`perf stat` over one closed-loop run of each proxy, divided by the requests answered.",
            "",
            "| per request | " + " | ".join(LABEL[q] for q in peers) + " |",
            "|---|" + "---|" * len(peers),
        ]
        for event, label in PERF_COUNTS:
            vals = [counts[q].get(event) for q in peers]
            if any(v is not None for v in vals):
                out.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
        out.append("")
    return out


def notes(a, bench, res, load_before, load_after):
    out = [f"- Load average before / after the run: {load_before} / {load_after}."]
    noise = [
        v
        for peers in res.runs.values()
        for metrics in peers.values()
        for k, vals in metrics.items()
        if k.endswith("noise")
        for v in vals
    ]
    if noise:
        out.append(
            f"- Other processes' work on the machine during the measurements (busy time not spent by the proxy, "
            f"the upstream or the load generator): median {statistics.median(noise):.2f} cores, "
            f"max {max(noise):.2f}. A run above {a.max_noise:g} cores counts as disturbed and is repeated after "
            f"waiting for quiet while the noise budget ({a.noise_budget:g} s) lasts; {plural(bench.repeated, 'run')} "
            "were repeated."
        )
    if bench.disturbed:
        kept = "; ".join(bench.disturbed)
        out.append(f"- Still disturbed when the budget ran out (quietest attempt kept): {kept}.")
    lowest = [v for v in (res.median("base", p, "rps") for p in a.peers) if v]
    if "fixed" in a.rows and lowest and a.rate > 0.8 * min(lowest):
        out.append(f"- The fixed rate ({a.rate:,} req/s) is above 0.8× the slowest peer's maximum: not 'well under'.")
    for p in a.peers:
        dropped = res.median("base", p, "idle_dropped")
        if dropped:
            out.append(f"- {LABEL[p]} closed {dropped:.0f} of the idle connections while they were held.")
    return out


def ringway_loops_text(loops):
    """What Ringway's startup lines said of its event loops: the figures of
    an epoll fallback (io_uring unavailable, as in some sandboxes) or of
    unpinned workers are not those of the design."""
    if not loops:
        return "(no worker's startup line seen)"
    return "; ".join(f"{driver}, {'pinned' if pinned else 'not pinned'}" for driver, pinned in sorted(loops))


def write_results(a, bench, res, started, elapsed, load_before):
    cmdline = "bench/run.sh" + "".join(" " + shlex.quote(x) for x in a.argv)
    quick = " This was a --quick run: one short run per figure, for smoke testing, not for quoting." if a.quick else ""
    out = [
        "# Ringway side-by-side benchmark",
        "",
        f"Written by `{cmdline}` on {started:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min. "
        f"Each figure is the median of {plural(a.runs, 'run')}, interleaved (direct, Ringway, NGINX, HAProxy, "
        "direct, ...) against the same upstream. Method and caveats: [README.md](README.md). Quote the ratios, "
        f"measured side by side, not the absolute numbers.{quick}",
        "",
        "## Machine",
        "",
        f"- {machine()}",
        f"- proxy on CPU {cpus_text(a.proxy_cpus)} ({plural(a.workers, 'worker')}); load generator and upstream "
        f"(`serve --threads {a.upstream_threads}`) on CPU {cpus_text(a.load_cpus)}",
        f"- Ringway's workers ran on {ringway_loops_text(bench.ringway_loops)}",
        f"- load: {plural(a.load_threads, 'thread')}, {a.connections} connections, {a.duration:g} s per run "
        f"(closed loop after {a.warmup:g} s of unrecorded warm-up); fixed rate {a.rate:,} req/s open loop; "
        f"{a.idle_conns:,} idle connections",
        "- noise (other processes' work) counted with irq and softirq time "
        + ("in" if IRQ_IN_TASK_TIME else "out of")
        + " the machine's process time, as this kernel charges it "
        + ("to the interrupted task" if IRQ_IN_TASK_TIME else "apart (CONFIG_IRQ_TIME_ACCOUNTING)"),
        *notes(a, bench, res, load_before, loadavg()),
        "",
        "## Results",
        "",
        "13-byte response body unless the row says otherwise. Latencies in µs; at the fixed rate ringway-load "
        "measures from the intended send time (coordinated omission corrected). CPU is the proxy's utime+stime "
        "(all its processes and threads, from /proc/PID/stat) over the run ÷ requests. RSS is PSS (smaps_rollup) summed "
        "over the proxy's processes, so that pages they share count once; per connection is its growth while the "
        "idle connections are held ÷ their number.",
        "",
        main_table(a, res),
        "",
        *workers2_section(a, res),
        *scaling_section(a, res),
        "## Targets",
        "",
        "Reported, not asserted.",
        "",
        targets(res),
        "",
        *profile_section(a, res.profile),
    ]
    if res.failures:
        out += ["## Failures", "", *[f"- {f}" for f in res.failures], ""]
    if res.skipped:
        out += ["## Skipped", "", *[f"- {f}" for f in res.skipped], ""]
    out += ["## Versions", "", *[f"- {k}: `{v}`" for k, v in versions().items()], ""]
    out += [
        "## Commands",
        "",
        "Peer configs: bench/ringway.toml, bench/nginx.conf, bench/haproxy.cfg (filled in per run under $RUNDIR, "
        "a temporary directory unless --logs names one). "
        "$URL is one of: " + ", ".join(f"{LABEL[p]} {u}" for p, u in bench.urls().items()) + " (https:// "
        "for the TLS rows, after a warm-up of the same wrk command for --warmup); $ADDR is its host:port; "
        "$PROXY_PIDS the proxy's process ids. \"at rest\" is a proxy whose connection limits leave no room "
        "for the held idle connections (see the memory figures in bench/README.md).",
        "",
        "```",
        *[f"# {k}\n{v}" for k, v in bench.commands.items()],
        "```",
        "",
        "## All runs",
        "",
        all_runs(res),
        "",
    ]
    a.out.write_text("\n".join(out))


# Rows that run only Ringway, whatever --peers says.
RINGWAY_ONLY_ROWS = {"workers2", "scaling"}


def needed_tools(a):
    """The programs besides Ringway's own that this run starts, so that a
    run of Ringway's rows alone (a scaling run on a host without the peers
    or a package mirror) needs none of the others."""
    tools = ["taskset"]
    if any(row not in RINGWAY_ONLY_ROWS for row in a.rows):
        tools += [peer for peer in ("nginx", "haproxy") if peer in a.peers]
    if "wrk" in a.rows or "tls" in a.rows:
        tools.append("wrk")
    if "tls" in a.rows:
        tools.append("openssl")
    if a.profile:
        # --profile also counts each peer's system calls at saturation.
        tools += [peer for peer in ("nginx", "haproxy") if peer in a.peers and peer not in tools]
        tools.append("perf")
    return tools


def main(argv):
    if argv[:1] == ["--missing-tools"]:
        # For bench/run.sh: what to install before this run, one per line.
        print("\n".join(t for t in needed_tools(parse_args(argv[1:])) if not shutil.which(t)))
        return 0
    a = parse_args(argv)
    for tool in [LOAD, RINGWAY]:
        if not tool.exists():
            sys.exit(f"{tool} missing: build with cargo build --release --workspace")
    missing = [t for t in needed_tools(a) if not shutil.which(t)]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (bench/run.sh installs them)")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ringway-bench-") as tmp:
        if a.logs:
            a.logs.mkdir(parents=True, exist_ok=True)
            tmp = str(a.logs.resolve())
        os.chmod(tmp, 0o755)  # NGINX workers run as nobody
        bench = Bench(a, Path(tmp))
        need_fd = a.idle_conns + a.connections * 4 + 256
        if "idle" in a.rows and bench.nofile < need_fd:
            sys.exit(f"open-file limit {bench.nofile} < {need_fd} needed for --idle-conns {a.idle_conns}")
        res = Results()
        log(f"logs and configs in {tmp}; {plural(a.runs, 'run')} of {a.duration:g}s; rows {','.join(a.rows)}")
        try:
            run_all(a, bench, res)
        except KeyboardInterrupt:
            res.failures.append("interrupted")
        except Exception as e:  # still write what was measured
            log(f"FAILED: {e!r}")
            res.failures.append(f"aborted: {e!r}")
        write_results(a, bench, res, started, time.monotonic() - t0, load_before)
    log(f"wrote {a.out} in {(time.monotonic() - t0) / 60:.1f} min")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
