//! The one module allowed `unsafe`: small, audited bridges to the OS that
//! monoio does not expose.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

const MSG_PEEK: i32 = 0x2;
const MSG_DONTWAIT: i32 = 0x40;
/// No SIGPIPE for a send to a peer that closed: an error instead.
const MSG_NOSIGNAL: i32 = 0x4000;

/// Whether the peer has closed its side or reset the connection, looked at
/// without taking anything: `Some(true)` closed or reset, `Some(false)`
/// bytes wait, `None` nothing yet. One non-blocking peek, no I/O on the
/// event loop's ring (a zero-timeout poll(2) measured no cheaper: 2.7% of
/// a saturated worker's profile against the peek's 2.5%).
pub fn peer_closed(stream: &impl AsRawFd) -> Option<bool> {
    // SAFETY: the descriptor belongs to `stream`, which is borrowed for the
    // whole lifetime of `fd`, so it stays open while we use it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match socket.recv_with_flags(&mut byte, MSG_PEEK | MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(_) | Ok(0) => Some(true),
        Ok(_) => Some(false),
    }
}

/// Whether the peer has ended its side (FIN) or reset the connection, even
/// with bytes still unread before that end, which a peek cannot see past:
/// one zero-timeout poll(2) for POLLRDHUP.
pub fn peer_shut_write(stream: &impl AsRawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for a descriptor `stream` keeps open across
    // the call; a zero timeout never blocks.
    match unsafe { libc::poll(&mut poll, 1, 0) } {
        1 => poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0,
        _ => false,
    }
}

/// Make closing the socket reset the connection (SO_LINGER with a zero
/// timeout): for an answer cut short, so that a client reading to the end
/// of the stream cannot take the part it got for the whole.
pub fn reset_on_close(stream: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO))
}

/// Reset the connection now, whatever is queued on it, and leave the
/// socket closed both ways (connect to AF_UNSPEC disconnects a TCP
/// socket, with a reset where it was open). For a relay cut part-way: its
/// peers must not take what they got for the whole stream, and a close
/// later sends nothing more.
pub fn abort_connection(stream: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: all zeroes is a valid sockaddr; its family says AF_UNSPEC.
    let mut unspecified: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspecified.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: connect reads `len` bytes of the address, which is that
    // large; the descriptor is borrowed from `stream` for the call.
    match unsafe { libc::connect(stream.as_raw_fd(), &unspecified, len) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Bytes written to a TCP socket that its peer has not acknowledged yet
/// (SIOCOUTQ).
pub fn unacked_bytes(stream: &impl AsRawFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points at
    // `queued`; the descriptor is borrowed from `stream` for the call.
    match unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(usize::try_from(queued).unwrap_or(0)),
    }
}

/// Whether the connection is gone: reset, or closed both ways (TCP_INFO
/// reads TCP_CLOSE). Bytes still queued on it then never arrive.
pub fn connection_gone(stream: &impl AsRawFd) -> bool {
    const TCP_CLOSE: u8 = 7;
    tcp_info(stream).is_none_or(|info| info.tcpi_state == TCP_CLOSE)
}

/// How many bytes written to a TCP socket its peer has acknowledged, all
/// told: it grows while a slow reader takes what the kernel holds for it.
pub fn bytes_acked(stream: &impl AsRawFd) -> Option<u64> {
    tcp_info(stream).map(|info| info.tcpi_bytes_acked)
}

fn tcp_info(stream: &impl AsRawFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large; the descriptor is borrowed from `stream` for the call.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (got == 0).then_some(info)
}

/// Stop reading a socket (shutdown SHUT_RD, no FIN): a read waiting on it
/// returns end of stream.
pub fn stop_reading(stream: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read)
}

/// End a socket's write direction (shutdown SHUT_WR: a FIN once what is
/// queued has gone), without waiting.
pub fn shutdown_write(stream: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// A second descriptor for the same connection (dup), to wait on it for
/// reading while the first is being written.
pub fn duplicate(stream: &impl AsRawFd) -> io::Result<std::net::TcpStream> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    Ok(socket2::SockRef::from(&fd).try_clone()?.into())
}

/// Read what a socket holds now, without waiting, into the spare capacity of
/// `buf`. Ok(None): it holds nothing (the read would block). For a wake-up
/// on readiness: the buffer is needed only for as long as this call when the
/// readiness was an end of stream or a reset, so 10,000 connections that
/// close at once never hold 10,000 buffers while reads are in flight.
pub fn read_ready(stream: &impl AsRawFd, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    read_ready_at_most(stream, buf, usize::MAX)
}

/// `read_ready`, taking at most `limit` bytes (a TLS session must not be
/// given more ciphertext than one record's worth of plaintext at a time).
pub fn read_ready_at_most(stream: &impl AsRawFd, buf: &mut Vec<u8>, limit: usize) -> io::Result<Option<usize>> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(limit);
    match socket.recv_with_flags(&mut spare[..room], MSG_DONTWAIT) {
        Ok(n) => {
            // SAFETY: recv initialised the first `n` bytes of the spare
            // capacity (it returns at most its length).
            unsafe { buf.set_len(buf.len() + n) };
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Send what the socket takes now, without waiting; WouldBlock when it takes
/// nothing. (No SIGPIPE: a peer that closed is an error, not a signal.)
pub fn send_ready(stream: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).send_with_flags(buf, MSG_DONTWAIT | MSG_NOSIGNAL)
}

/// `send_ready` for several buffers in one call (a TLS session's queued
/// records).
pub fn send_vectored_ready(stream: &impl AsRawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: as in `peer_closed`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    socket2::SockRef::from(&fd).send_vectored_with_flags(bufs, MSG_DONTWAIT | MSG_NOSIGNAL)
}

/// The initialised bytes of an owned I/O buffer, for a writer that copies
/// them (TLS encrypts from a slice) instead of handing the buffer to the ring.
pub fn io_buf_bytes<T: monoio::buf::IoBuf>(buf: &T) -> &[u8] {
    // SAFETY: `IoBuf` promises `read_ptr` points at `bytes_init` initialised
    // bytes that stay valid and unchanged while `buf` is borrowed.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// A message head and the first part of its body, written with one writev
/// from the two buffers they are in, so that the body part is not copied in
/// behind the head. Owned, as io_uring needs; `into_parts` gives them back.
pub struct HeadAndBody {
    head: Vec<u8>,
    body: Vec<u8>,
    part: Range<usize>,
    iov: Box<[libc::iovec; 2]>,
}

impl HeadAndBody {
    /// All of `head`, then `body[part]`. Hands both back if `part` is not
    /// within `body`.
    pub fn new(head: Vec<u8>, body: Vec<u8>, part: Range<usize>) -> Result<Self, (Vec<u8>, Vec<u8>)> {
        let Some(slice) = body.get(part.clone()) else {
            return Err((head, body));
        };
        let iov = Box::new([
            libc::iovec {
                iov_base: head.as_ptr().cast_mut().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: slice.as_ptr().cast_mut().cast(),
                iov_len: slice.len(),
            },
        ]);
        Ok(HeadAndBody { head, body, part, iov })
    }

    /// The head and the body part, as the writev would send them.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, self.body.get(self.part.clone()).unwrap_or_default()]
    }

    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.head, self.body)
    }
}

// SAFETY: the two iovecs point into the heap storage of `head` and `body`,
// which neither moves nor changes while this value lives: the fields are
// private and never touched after `new`, and moving the struct moves only
// the Vec headers. The array is boxed, so its own address is stable too.
unsafe impl monoio::buf::IoVecBuf for HeadAndBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

/// Hand the allocator's free memory back to the kernel: glibc keeps what a
/// burst of connections freed in its arenas, fragmented among what stays
/// in use, and that shows as resident memory for good (a burst of 2,000
/// requests at once left 25 MB; six such bursts, 94 MB). Trims every arena;
/// a no-op for other C libraries.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the arenas
    // under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether a socket of this network namespace listens at exactly `addr`
/// (any process's), from /proc/net/tcp or tcp6.
pub fn listening_at(addr: std::net::SocketAddr) -> io::Result<bool> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    Ok(std::fs::read_to_string(table)?
        .lines()
        .skip(1)
        .any(|line| listening_line_at(line, addr)))
}

/// One /proc/net/tcp{,6} line: a listening socket (state 0A) at `addr`.
/// The kernel writes the address as the 32-bit words it holds, each in
/// the host's byte order, and the port as a number, all in hex.
fn listening_line_at(line: &str, addr: std::net::SocketAddr) -> bool {
    let mut fields = line.split_whitespace().skip(1);
    let (Some(local), Some(state)) = (fields.next(), fields.nth(1)) else {
        return false;
    };
    let Some((ip_hex, port_hex)) = local.split_once(':') else {
        return false;
    };
    let mut bytes = Vec::with_capacity(16);
    for word in ip_hex.as_bytes().chunks(8) {
        let Some(word) = std::str::from_utf8(word)
            .ok()
            .and_then(|w| u32::from_str_radix(w, 16).ok())
        else {
            return false;
        };
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip: Option<std::net::IpAddr> = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Into::into),
        16 => <[u8; 16]>::try_from(bytes.as_slice()).ok().map(Into::into),
        _ => None,
    };
    state == "0A" && ip == Some(addr.ip()) && u16::from_str_radix(port_hex, 16).ok() == Some(addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn proc_net_tcp_lines_name_listening_addresses() {
        // 127.0.0.1:8080 listening, and a connected socket on that port.
        let v4 = format!(
            "   0: {:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0",
            u32::from_ne_bytes([127, 0, 0, 1])
        );
        let at = |text: &str| text.parse().expect("address");
        assert!(listening_line_at(&v4, at("127.0.0.1:8080")));
        assert!(!listening_line_at(&v4, at("127.0.0.1:8081")));
        assert!(!listening_line_at(&v4.replace(" 0A ", " 01 "), at("127.0.0.1:8080")));
        let words: String = std::net::Ipv6Addr::LOCALHOST
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        let v6 = format!("   1: {words}:0050 00000000000000000000000000000000:0000 0A 0");
        assert!(listening_line_at(&v6, at("[::1]:80")));
        assert!(!listening_line_at(&v6, at("[::2]:80")));
        assert!(!listening_line_at(
            "  sl  local_address rem_address   st",
            at("127.0.0.1:8080")
        ));
    }

    #[test]
    fn a_listening_socket_is_found_and_a_closed_one_is_not() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(bind).expect("bind");
            let addr = listener.local_addr().expect("addr");
            assert_eq!(listening_at(addr).ok(), Some(true), "{addr}");
            drop(listener);
            assert_eq!(listening_at(addr).ok(), Some(false), "{addr}");
        }
    }

    /// Loopback delivers a FIN or data almost at once, but not synchronously
    /// with the peer's call: poll for a state other than "nothing yet" with
    /// a deadline.
    fn settles(stream: &TcpStream) -> Option<bool> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(closed) = peer_closed(stream) {
                return Some(closed);
            }
            std::thread::yield_now();
        }
        None
    }

    #[test]
    fn tells_open_closed_and_dirty_connections_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ours = TcpStream::connect(addr).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        assert_eq!(peer_closed(&ours), None, "a quiet open connection is alive");
        theirs.write_all(b"x").expect("write");
        assert_eq!(settles(&ours), Some(false), "unrequested bytes make it unusable");

        let ours = TcpStream::connect(addr).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        drop(theirs);
        assert_eq!(settles(&ours), Some(true), "a closed peer makes it unusable");

        let ours = TcpStream::connect(addr).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&theirs)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0: close sends a reset");
        drop(theirs);
        assert_eq!(settles(&ours), Some(true), "a reset makes it unusable");
    }

    #[test]
    fn an_end_behind_unread_bytes_is_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        theirs.write_all(b"x").expect("write");
        assert_eq!(settles(&ours), Some(false), "bytes wait");
        assert!(!peer_shut_write(&ours), "bytes alone are no end");
        theirs.shutdown(std::net::Shutdown::Write).expect("FIN");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !peer_shut_write(&ours) {
            assert!(Instant::now() < deadline, "the FIN behind the byte was never seen");
            std::thread::yield_now();
        }
        assert_eq!(peer_closed(&ours), Some(false), "a peek still sees the byte first");
    }

    #[test]
    fn a_reset_connection_is_gone_and_its_queue_is_not_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        assert!(!connection_gone(&ours), "an open connection is not gone");
        ours.write_all(b"hello").expect("write");
        socket2::SockRef::from(&theirs)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0: close sends a reset");
        drop(theirs);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !connection_gone(&ours) {
            assert!(Instant::now() < deadline, "the reset never arrived");
            std::thread::yield_now();
        }
        assert!(unacked_bytes(&ours).is_ok());
    }

    #[test]
    fn read_ready_takes_what_is_there_and_never_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"kept");
        assert_eq!(
            read_ready(&ours, &mut buf).expect("read"),
            None,
            "nothing there: no wait"
        );
        theirs.write_all(b"hello").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        let n = loop {
            match read_ready(&ours, &mut buf).expect("read") {
                Some(n) => break n,
                None if Instant::now() < deadline => std::thread::yield_now(),
                None => panic!("the bytes never arrived"),
            }
        };
        assert_eq!(n, 5);
        assert_eq!(buf, b"kepthello", "appended after what the buffer held");
        drop(theirs);
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_ready(&ours, &mut buf).expect("read") != Some(0) {
            assert!(Instant::now() < deadline, "the close never arrived");
            std::thread::yield_now();
        }
    }

    #[test]
    fn head_and_body_point_at_the_head_then_the_body_part() {
        use monoio::buf::IoVecBuf;
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let body = b"xxhello worldyy".to_vec();
        let (head_ptr, part_ptr) = (head.as_ptr(), body[2..13].as_ptr());
        let bufs = HeadAndBody::new(head, body, 2..13).expect("in range");
        assert_eq!(bufs.read_iovec_len(), 2);
        // SAFETY: read_iovec_ptr points at two iovecs owned by `bufs`.
        let iov = unsafe { std::slice::from_raw_parts(bufs.read_iovec_ptr(), 2) };
        assert_eq!(
            (iov[0].iov_base.cast_const().cast::<u8>(), iov[0].iov_len),
            (head_ptr, 19)
        );
        assert_eq!(
            (iov[1].iov_base.cast_const().cast::<u8>(), iov[1].iov_len),
            (part_ptr, 11)
        );
        let moved = Box::new(bufs); // moving the value keeps the buffers where they are
        let (head, body) = moved.into_parts();
        assert_eq!((head.as_ptr(), body.len()), (head_ptr, 15));
        assert!(
            HeadAndBody::new(head, body, 10..20).is_err(),
            "a part past the body is refused"
        );
    }
}
