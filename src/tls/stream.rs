//! A rustls session (server side for listeners, client side for upstreams)
//! driven over a monoio TCP socket.
//!
//! Ciphertext moves through one scratch buffer owned by the session, and
//! plaintext is copied straight into the caller's buffer. Reads wait for
//! readiness and then read without waiting, so dropping one loses nothing;
//! a write (or a handshake step) dropped half-way leaves the session out of
//! step with the socket, so the stream then refuses any further I/O.
//!
//! A stream may be shared by two tasks at once, one reading and one
//! writing (a request body going up while the answer comes down): the
//! session sits in a cell that each step borrows without waiting, and a
//! shared stream writes by waiting for room on the socket instead of
//! handing it a buffer.

use super::spiffe_id;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::cell::{RefCell, RefMut};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Ciphertext taken per read, however large the scratch buffer has grown.
const CIPHER_READ: usize = 16 * 1024;

pub struct TlsStream {
    tcp: TcpStream,
    /// The peer's SPIFFE ID, from a certificate the verifier accepted.
    identity: Option<Box<str>>,
    /// Borrowed for one step at a time, never across a wait (but by a
    /// write with the stream to itself, which holds it as `&mut`).
    session: RefCell<Session>,
}

struct Session {
    conn: Connection,
    scratch: Vec<u8>,
    /// Ciphertext read from the socket that the session has not taken yet:
    /// rustls refuses (fails) a read while it holds more decrypted bytes
    /// than its limit, so the rest of a read waits here until the caller
    /// has taken them, and goes in before the socket is read again.
    unfed: Vec<u8>,
    /// Set while an operation is under way; still set means one was dropped.
    in_progress: bool,
    /// A write failed: records the session counts as sent may not have
    /// gone, so nothing more is written (reads go on).
    write_failed: bool,
    /// The socket reached end of stream (with or without close_notify).
    eof: bool,
    /// close_notify is queued: no more application data may follow it.
    closing: bool,
}

impl TlsStream {
    /// Run the server handshake on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<TlsStream> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, session.into()).await
    }

    /// Run the client handshake on `tcp`, for `name` (SNI and verification).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, session.into()).await
    }

    async fn handshake(mut tcp: TcpStream, conn: Connection) -> io::Result<TlsStream> {
        let mut session = Session {
            conn,
            scratch: Vec::new(),
            unfed: Vec::new(),
            in_progress: false,
            write_failed: false,
            eof: false,
            closing: false,
        };
        while session.conn.is_handshaking() {
            session.flush(&mut tcp).await?;
            if !session.conn.is_handshaking() {
                break;
            }
            if session.read_cipher(&mut tcp).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // The last flight (and TLS 1.3 session tickets).
        session.flush(&mut tcp).await?;
        let identity = session
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| spiffe_id(leaf))
            .map(String::into_boxed_str);
        session.scratch = Vec::new();
        Ok(TlsStream {
            tcp,
            identity,
            session: RefCell::new(session),
        })
    }

    /// The peer's verified SPIFFE ID, if its certificate carries one.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The session for one step. Never held across a wait, so it is free
    /// but when the other task sharing the stream is inside a step of its
    /// own, which cannot be on one thread; an error rather than a panic.
    fn session(&self) -> io::Result<RefMut<'_, Session>> {
        self.session
            .try_borrow_mut()
            .map_err(|_| io::Error::other("TLS session busy"))
    }

    /// Append plaintext to `buf`, up to its spare capacity, reading from the
    /// socket as needed. Ok(0): the peer closed. Cancel-safe: it waits for
    /// readiness and then reads without waiting, so a timeout that drops it
    /// loses no ciphertext.
    pub async fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            if let Some(n) = self.session()?.take_plaintext(buf)? {
                return Ok(n);
            }
            self.readable().await?;
            if let Some(n) = self.read_ready(buf)? {
                return Ok(n);
            }
        }
    }

    /// Without waiting: decrypt what the socket holds now into `buf`.
    /// Ok(None): no whole record yet.
    pub fn read_ready(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        self.session()?.read_ready(&self.tcp, buf)
    }

    /// Whether decrypted bytes (or ciphertext already read) are waiting to
    /// be read.
    pub fn has_plaintext(&self) -> bool {
        self.session().is_ok_and(|mut session| session.has_plaintext())
    }

    /// Wait until a read would find something.
    pub async fn readable(&self) -> io::Result<()> {
        if self.has_plaintext() {
            return Ok(());
        }
        self.tcp.readable(false).await
    }

    /// Encrypt and send each of `parts`, in one socket write when they fit
    /// the session's buffer.
    pub async fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let TlsStream { tcp, session, .. } = self;
        session.get_mut().write_all(tcp, parts).await
    }

    /// `write_all` for a stream another task reads meanwhile: each step
    /// takes what the socket accepts now, and waits for room in between.
    /// Dropped before it ends, it leaves part of a message queued: the
    /// session then writes nothing more, so that no later close can vouch
    /// for a message cut short (as the ring path's interrupted writes do).
    pub async fn write_all_shared(&self, parts: &[&[u8]]) -> io::Result<()> {
        let unfinished = Unfinished(self);
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let taken = self.write_now(rest)?;
                rest = &rest[taken..];
                if taken == 0 {
                    // A backstop, as in the ring path: a session that took
                    // nothing has records queued for the socket to take.
                    if !self.wants_write() {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    self.tcp.writable(false).await?;
                }
            }
        }
        self.flush_shared().await?;
        std::mem::forget(unfinished);
        Ok(())
    }

    /// Send what the session has queued, waiting for room as needed.
    async fn flush_shared(&self) -> io::Result<()> {
        loop {
            {
                let mut session = self.session()?;
                session.flush_now(&self.tcp)?;
                if !session.conn.wants_write() {
                    return Ok(());
                }
            }
            self.tcp.writable(false).await?;
        }
    }

    /// Without waiting: give the session as much of `data` as it buffers
    /// (up to its limit) and send what the socket takes. Ok(0): full for now;
    /// wait for the socket to be writable, then call again.
    pub fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        let mut session = self.session()?;
        session.check_open()?;
        session.flush_now(&self.tcp)?;
        let taken = session.conn.writer().write(data)?;
        session.flush_now(&self.tcp)?;
        Ok(taken)
    }

    /// Without waiting: send queued records while the socket takes them.
    pub fn flush_now(&self) -> io::Result<()> {
        self.session()?.flush_now(&self.tcp)
    }

    /// The peer sent close_notify (not just a FIN, which may be a cut).
    pub fn closed_cleanly(&self) -> bool {
        self.session().is_ok_and(|mut session| {
            session
                .conn
                .process_new_packets()
                .is_ok_and(|state| state.peer_has_closed())
        })
    }

    /// Records are queued that the socket has not taken yet.
    pub fn wants_write(&self) -> bool {
        self.session().is_ok_and(|session| session.conn.wants_write())
    }

    /// Queue close_notify, for [`TlsStream::flush_now`] to send.
    pub fn queue_close(&self) {
        if let Ok(mut session) = self.session() {
            session.send_close_notify();
        }
    }

    pub async fn shutdown_socket(&mut self) -> io::Result<()> {
        self.tcp.shutdown().await
    }

    /// Send close_notify, so the peer can tell our close from a cut, then
    /// end the socket's write direction.
    pub async fn close(&mut self) -> io::Result<()> {
        let TlsStream { tcp, session, .. } = self;
        let session = session.get_mut();
        session.send_close_notify();
        session.flush(tcp).await?;
        tcp.shutdown().await
    }

    /// `close` for a stream another task reads meanwhile.
    pub async fn close_shared(&self) -> io::Result<()> {
        self.queue_close();
        self.flush_shared().await?;
        crate::sys::shutdown_write(&self.tcp)
    }

    /// For a pooled connection: true while the peer has neither closed it
    /// nor sent data unasked. Takes in what arrived (a TLS 1.3 server's
    /// session tickets come after the handshake) without waiting.
    pub fn idle_alive(&self) -> bool {
        let Ok(mut session) = self.session() else {
            return false;
        };
        let mut unasked = Vec::new();
        loop {
            if !matches!(session.take_plaintext(&mut unasked), Ok(None)) {
                return false;
            }
            match session.pull_ready(&self.tcp) {
                Ok(None) => return true,
                Ok(Some(0)) | Err(_) => return false,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Drop the scratch buffer while the connection idles.
    pub fn release(&self) {
        if let Ok(mut session) = self.session() {
            if !session.in_progress {
                session.scratch = Vec::new();
            }
        }
    }
}

impl Session {
    /// Without waiting: decrypt what the socket holds now into `buf`.
    fn read_ready(&mut self, tcp: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        if let Some(n) = self.take_plaintext(buf)? {
            return Ok(Some(n));
        }
        match self.pull_ready(tcp)? {
            Some(_) => self.take_plaintext(buf),
            None => Ok(None),
        }
    }

    /// Give the session what the socket holds now, without waiting: Some(n)
    /// bytes (0 at end of stream), None when it holds nothing.
    fn pull_ready(&mut self, tcp: &TcpStream) -> io::Result<Option<usize>> {
        self.check_in_step()?;
        if !self.unfed.is_empty() {
            let unfed = std::mem::take(&mut self.unfed);
            self.feed(&unfed)?;
            return Ok(Some(unfed.len()));
        }
        let mut cipher = std::mem::take(&mut self.scratch);
        cipher.clear();
        cipher.reserve(CIPHER_READ);
        let fed = match crate::sys::read_ready_at_most(tcp, &mut cipher, CIPHER_READ) {
            Ok(Some(n)) => self.feed(&cipher[..n]).map(|()| Some(n)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.scratch = cipher;
        fed
    }

    fn has_plaintext(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
            || self.eof
            || !self.unfed.is_empty()
    }

    async fn write_all(&mut self, tcp: &mut TcpStream, parts: &[&[u8]]) -> io::Result<()> {
        self.check_open()?;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = self.conn.writer().write(rest)?;
                if n == 0 && !self.conn.wants_write() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                rest = &rest[n..];
                if !rest.is_empty() {
                    self.flush(tcp).await?;
                }
            }
        }
        self.flush(tcp).await
    }

    /// Without waiting: send queued records while the socket takes them.
    fn flush_now(&mut self, tcp: &TcpStream) -> io::Result<()> {
        self.check_writable()?;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Unwaiting(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    self.write_failed = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Copy decrypted bytes into `buf`'s spare capacity: Some(n), Some(0)
    /// at the client's close, None when there are none yet.
    fn take_plaintext(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        let state = self.conn.process_new_packets().map_err(invalid)?;
        let waiting = state.plaintext_bytes_to_read();
        if waiting == 0 {
            // A close (with or without close_notify) reads as end of stream.
            return Ok((self.eof || state.peer_has_closed()).then_some(0));
        }
        let len = buf.len();
        let room = (buf.capacity() - len).max(1);
        buf.resize(len + waiting.min(room), 0);
        match self.conn.reader().read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                Ok(Some(n))
            }
            Err(e) => {
                buf.truncate(len);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Read one batch of ciphertext from the socket into the session; Ok(0)
    /// at end of stream (which the session then reports as a close).
    async fn read_cipher(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        self.check_in_step()?;
        self.in_progress = true;
        let mut cipher = std::mem::take(&mut self.scratch);
        cipher.clear();
        cipher.reserve(CIPHER_READ);
        // The scratch buffer may have grown for a large write: read no more
        // than CIPHER_READ, as the other reads do.
        let (read, cipher) = tcp.read(cipher.slice_mut(0..CIPHER_READ)).await;
        let cipher = cipher.into_inner();
        self.in_progress = false;
        let fed = match read {
            Ok(n) => self.feed(&cipher[..n]).map(|()| n),
            Err(e) => Err(e),
        };
        self.scratch = cipher;
        if fed.is_err() {
            // Tell the client why (the session queued an alert), then fail.
            let _ = self.flush(tcp).await;
        }
        fed
    }

    /// Give ciphertext to the session; an empty slice marks end of stream.
    /// What it cannot take before its decrypted bytes are read is kept in
    /// `unfed`.
    fn feed(&mut self, mut cipher: &[u8]) -> io::Result<()> {
        if cipher.is_empty() {
            self.eof = true;
            self.conn.read_tls(&mut cipher)?;
            return Ok(());
        }
        let mut state = self.conn.process_new_packets().map_err(invalid)?;
        while !cipher.is_empty() {
            // A record or two decrypted (a full one completed by this read,
            // then a small one) can pass rustls's limit, which fails the
            // next read_tls: stop at the first plaintext instead.
            if state.plaintext_bytes_to_read() > 0 {
                self.unfed.extend_from_slice(cipher);
                break;
            }
            let taken = self.conn.read_tls(&mut cipher)?;
            state = self.conn.process_new_packets().map_err(invalid)?;
            if taken == 0 {
                // Past a close_notify the session takes nothing more; what
                // follows it is ignored (RFC 8446 §6.1). Without this stop
                // the loop would spin, and with it the whole worker.
                break;
            }
        }
        Ok(())
    }

    /// Send everything the session has queued.
    async fn flush(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        self.check_writable()?;
        while self.conn.wants_write() {
            let mut out = std::mem::take(&mut self.scratch);
            out.clear();
            self.conn.write_tls(&mut out)?;
            self.in_progress = true;
            let (written, out) = tcp.write_all(out).await;
            self.scratch = out;
            // A write that failed is over, not interrupted: what the peer
            // sent before stays readable (an upstream's 413 for a body it
            // would not take, then closed). Nothing is written after it.
            self.in_progress = false;
            if written.is_err() {
                self.write_failed = true;
            }
            written?;
        }
        Ok(())
    }

    fn send_close_notify(&mut self) {
        self.closing = true;
        self.conn.send_close_notify();
    }

    /// Application data may still be sent: rustls would encrypt it after a
    /// close_notify, which the peer ignores or takes for an attack.
    fn check_open(&self) -> io::Result<()> {
        if self.closing {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }

    fn check_writable(&self) -> io::Result<()> {
        self.check_in_step()?;
        if self.write_failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }

    fn check_in_step(&self) -> io::Result<()> {
        if self.in_progress {
            return Err(io::Error::other("TLS stream used after an interrupted operation"));
        }
        Ok(())
    }
}

/// Marks a shared write that did not end (dropped part-way, or failed) as
/// a failed one, unless forgotten at its end.
struct Unfinished<'a>(&'a TlsStream);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Ok(mut session) = self.0.session() {
            session.write_failed = true;
        }
    }
}

/// The socket as a writer that never waits, for rustls's `write_tls`.
struct Unwaiting<'a>(&'a TcpStream);

impl Write for Unwaiting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::send_ready(self.0, buf)
    }

    /// All the records queued in one send, not one send each.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::send_vectored_ready(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Whether a read failed on a fatal alert from the peer. In TLS 1.3 a
/// server that refuses the client's certificate says so only after the
/// client has finished its side of the handshake: on a new connection,
/// the alert is the first thing read.
pub fn is_alert_from_peer(e: &io::Error) -> bool {
    let alert = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(alert, Some(rustls::Error::AlertReceived(description)) if *description != rustls::AlertDescription::CloseNotify)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// One record's plaintext at most, then a small one, then more, as the
    /// peer's writes happen to cut them.
    const RECORDS: [usize; 3] = [16 * 1024, 10, 8000];

    /// A server config for `localhost` (no session tickets: nothing comes
    /// after the handshake but what a test sends) and a client that trusts it.
    fn configs() -> (rustls::ServerConfig, rustls::ClientConfig) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        server_config.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server_config, client_config)
    }

    /// A server on its own thread that completes the handshake on the one
    /// connection it accepts and then hands it to `serve`; with the client
    /// config that trusts it.
    fn peer<T: Send + 'static>(
        serve: impl FnOnce(std::net::TcpStream, ServerConnection) -> T + Send + 'static,
    ) -> (std::net::SocketAddr, rustls::ClientConfig, std::thread::JoinHandle<T>) {
        let (server_config, client_config) = configs();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut session = ServerConnection::new(Arc::new(server_config)).expect("session");
            while session.is_handshaking() {
                session.complete_io(&mut socket).expect("handshake");
            }
            serve(socket, session)
        });
        (addr, client_config, peer)
    }

    async fn connect(addr: std::net::SocketAddr, client_config: rustls::ClientConfig) -> TlsStream {
        let tcp = TcpStream::connect_addr(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        TlsStream::connect(tcp, Arc::new(client_config), name)
            .await
            .expect("handshake")
    }

    /// A connected client stream to a peer that reads nothing until the
    /// returned sender is dropped.
    async fn to_a_peer_that_does_not_read() -> (TlsStream, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (keep, kept) = mpsc::channel::<()>();
        let (addr, client_config, peer) = peer(move |_, _| {
            let _ = kept.recv();
        });
        (connect(addr, client_config).await, keep, peer)
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
    }

    /// A shared write dropped part-way (its task cut by a timeout) leaves
    /// part of a message queued: nothing more is written, so no later
    /// close_notify vouches for the message as whole.
    #[test]
    fn a_shared_write_dropped_part_way_ends_the_writing() {
        runtime().block_on(async {
            let (tls, keep, peer) = to_a_peer_that_does_not_read().await;
            let tls = std::rc::Rc::new(tls);
            let second = tls.clone();
            // More than the sockets hold: the peer reads nothing.
            let message = vec![b'm'; 64 << 20];
            let cut = monoio::time::timeout(Duration::from_millis(200), second.write_all_shared(&[&message])).await;
            assert!(cut.is_err(), "the write cannot end while the peer reads nothing");
            drop(second);
            assert!(tls.write_now(b"more").is_err(), "a write after a cut one went out");
            drop(keep);
            peer.join().expect("peer");
        });
    }

    /// rustls would encrypt application data after a queued close_notify;
    /// the stream refuses it.
    #[test]
    fn nothing_is_written_after_close_notify() {
        runtime().block_on(async {
            let (tls, keep, peer) = to_a_peer_that_does_not_read().await;
            assert_eq!(tls.write_now(b"before").expect("a write before the close"), 6);
            tls.queue_close();
            let after = tls.write_now(b"after").map_err(|e| e.kind());
            assert_eq!(after, Err(io::ErrorKind::BrokenPipe));
            drop(keep);
            peer.join().expect("peer");
        });
    }

    /// The session's decrypted-bytes limit is 16 KiB, and rustls fails a
    /// read of ciphertext while it holds more. One socket read can complete
    /// a full record whose start came in an earlier read, and a small one
    /// after it, with ciphertext to spare: that rest must wait, not fail
    /// the connection.
    #[test]
    fn ciphertext_past_the_plaintext_limit_waits_its_turn() {
        let (first_taken, wait_first_taken) = mpsc::channel::<()>();
        let (addr, client_config, peer) = peer(move |mut socket, mut session| {
            while session.wants_write() {
                session.write_tls(&mut socket).expect("tickets");
            }
            let mut cipher = Vec::new();
            for (i, len) in RECORDS.iter().enumerate() {
                session.writer().write_all(&vec![i as u8; *len]).expect("plaintext");
                while session.wants_write() {
                    session.write_tls(&mut cipher).expect("records");
                }
            }
            // Most of the full record first, then the rest of it and the
            // others in one write.
            socket.write_all(&cipher[..10_000]).expect("send");
            wait_first_taken.recv().expect("the client took the first part");
            socket.write_all(&cipher[10_000..]).expect("send");
            socket
        });

        let received = runtime().block_on(async move {
            let tls = connect(addr, client_config).await;
            let mut received = Vec::with_capacity(64 * 1024);
            tls.readable().await.expect("readable");
            let first = tls.read_ready(&mut received).expect("the first part");
            assert_eq!(first, None, "a part of a record decrypts to nothing");
            first_taken.send(()).expect("the peer waits");
            let total: usize = RECORDS.iter().sum();
            while received.len() < total {
                received.reserve(64 * 1024);
                match tls.read_ready(&mut received).expect("no read fails") {
                    Some(n) => assert!(n > 0, "no end of stream before the last byte"),
                    None => tls.readable().await.expect("readable"),
                }
            }
            received
        });
        let expected: Vec<u8> = RECORDS
            .iter()
            .enumerate()
            .flat_map(|(i, len)| std::iter::repeat_n(i as u8, *len))
            .collect();
        assert!(received == expected, "{} bytes received", received.len());
        drop(peer.join().expect("peer"));
    }
}
