//! The one module allowed `unsafe`: small, audited bridges to the OS that
//! monoio does not expose.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

const MSG_PEEK: i32 = 0x2;
const MSG_DONTWAIT: i32 = 0x40;

/// Whether an idle connection is still usable: no EOF, no reset and no stray
/// bytes waiting. One non-blocking peek, no I/O on the event loop's ring.
pub fn idle_connection_alive(stream: &impl AsRawFd) -> bool {
    // SAFETY: the descriptor belongs to `stream`, which is borrowed for the
    // whole lifetime of `fd`, so it stays open while we use it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match socket.recv_with_flags(&mut byte, MSG_PEEK | MSG_DONTWAIT) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        // Ok(0): the peer closed; Ok(_): it sent bytes nobody asked for.
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// Loopback delivers a FIN or data almost at once, but not synchronously
    /// with the peer's call: poll for the expected state with a deadline.
    fn becomes_dead(stream: &TcpStream) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !idle_connection_alive(stream) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn tells_open_closed_and_dirty_connections_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ours = TcpStream::connect(addr).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        assert!(idle_connection_alive(&ours), "a quiet open connection is alive");
        theirs.write_all(b"x").expect("write");
        assert!(becomes_dead(&ours), "unrequested bytes make it unusable");

        let ours = TcpStream::connect(addr).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        drop(theirs);
        assert!(becomes_dead(&ours), "a closed peer makes it unusable");
    }
}
