//! Streaming a message body from one connection to another with bounded
//! memory: decode the incoming framing (length, chunked, until close), re-frame
//! for the outgoing side, and never read past the end of the body (the next
//! pipelined request stays in the source's buffer).

use super::io::{Inbound, Stream};
use crate::http::{self, Chunk, ChunkedDecoder, Framing, HttpError};
use crate::worker::BufferPool;

/// Write once this much output is buffered.
const FLUSH_AT: usize = 16 * 1024;
/// A body part at least this large that follows a head is written with it in
/// one writev instead of being copied in behind it.
const WRITEV_AT: usize = 4 * 1024;

enum Input {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

pub struct BodyPump {
    input: Input,
    /// Re-encode data as chunks (the input was chunked and the peer speaks 1.1).
    chunked_out: bool,
    /// Body bytes passed so far, checked against `limit`.
    seen: u64,
    /// Bytes taken from the source, framing (chunk sizes) included.
    wire_in: u64,
    /// Bytes handed to the destination, framing and anything written
    /// ahead of the body (a head) included.
    wire_out: u64,
    limit: Option<u64>,
    /// A read of the source is under way: a pump cut now was waiting on
    /// its sender, not its receiver.
    reading: bool,
}

#[derive(Debug)]
pub enum PumpError {
    /// Reading the source failed or it ended before the body did.
    Source,
    /// Writing the destination failed.
    Sink,
    Framing(HttpError),
    TooLarge,
}

impl BodyPump {
    /// `input`: framing as received; `output`: framing to send, which is the
    /// same, or `UntilClose` to unwrap chunks for an HTTP/1.0 peer.
    pub fn new(input: Framing, output: Framing, limit: Option<u64>) -> Self {
        let input = match input {
            Framing::Empty | Framing::Length(0) => Input::Done,
            Framing::Length(n) => Input::Length(n),
            Framing::Chunked => Input::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Input::UntilClose,
        };
        BodyPump {
            input,
            chunked_out: matches!(output, Framing::Chunked),
            seen: 0,
            wire_in: 0,
            wire_out: 0,
            limit,
            reading: false,
        }
    }

    /// Body bytes passed so far (payload, without chunk framing).
    pub fn bytes(&self) -> u64 {
        self.seen
    }

    /// Bytes of the body as they came on the wire, framing included: for
    /// the access log, which counts what crossed the connection.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_in
    }

    /// Bytes the pump has handed to its destination so far.
    pub fn written(&self) -> u64 {
        self.wire_out
    }

    pub fn is_done(&self) -> bool {
        matches!(self.input, Input::Done)
    }

    /// Whether the pump is (or, cut, was last) waiting for its source to
    /// send more of the body.
    pub fn waits_on_source(&self) -> bool {
        self.reading && !self.is_done()
    }

    /// At the end of `src`'s stream: whether that ends the body. Only a
    /// body delimited by the close ends there, and on TLS only with
    /// close_notify: a bare FIN may be an attacker's cut.
    fn ends_here(&self, src: &mut Inbound) -> bool {
        matches!(self.input, Input::UntilClose) && src.stream.closed_cleanly()
    }

    /// How many of the bytes pending in `src` are body that goes out as it
    /// came (identity in, identity out); 0 for anything re-framed.
    fn identity_pending(&self, src: &Inbound) -> usize {
        if self.chunked_out {
            return 0;
        }
        let pending = src.pending().len();
        match self.input {
            Input::Length(left) => pending.min(usize::try_from(left).unwrap_or(usize::MAX)),
            Input::UntilClose => pending,
            Input::Chunked(_) | Input::Done => 0,
        }
    }

    /// Count `n` identity body bytes as passed.
    fn advance_identity(&mut self, n: usize) -> Result<(), PumpError> {
        self.seen += n as u64;
        self.wire_in += n as u64;
        if self.limit.is_some_and(|limit| self.seen > limit) {
            return Err(PumpError::TooLarge);
        }
        if let Input::Length(left) = &mut self.input {
            *left -= n as u64;
            if *left == 0 {
                self.input = Input::Done;
            }
        }
        Ok(())
    }

    /// Move the body bytes already pending in `src` into `out`, re-framed.
    pub fn take_pending(&mut self, src: &mut Inbound, out: &mut Vec<u8>) -> Result<(), PumpError> {
        while src.has_pending() && !self.is_done() {
            let pending = src.pending();
            let (consumed, data) = match &mut self.input {
                Input::Length(remaining) => {
                    let n = pending.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.input = Input::Done;
                    }
                    (n, 0..n)
                }
                Input::UntilClose => (pending.len(), 0..pending.len()),
                Input::Chunked(decoder) => match decoder.decode(pending).map_err(PumpError::Framing)? {
                    (consumed, Chunk::Data(range)) => (consumed, range),
                    (consumed, Chunk::NeedMore) => (consumed, 0..0),
                    (consumed, Chunk::End) => {
                        self.input = Input::Done;
                        if self.chunked_out {
                            out.extend_from_slice(http::LAST_CHUNK);
                        }
                        (consumed, 0..0)
                    }
                },
                Input::Done => break,
            };
            if !data.is_empty() {
                self.seen += data.len() as u64;
                if self.limit.is_some_and(|limit| self.seen > limit) {
                    return Err(PumpError::TooLarge);
                }
                let bytes = src.pending().get(data).unwrap_or_default();
                if self.chunked_out {
                    http::write_chunk_header(bytes.len(), out);
                    out.extend_from_slice(bytes);
                    out.extend_from_slice(http::CHUNK_END);
                } else {
                    out.extend_from_slice(bytes);
                }
            }
            src.consume(consumed);
            self.wire_in += consumed as u64;
        }
        Ok(())
    }

    /// The rest of an identity-framed body (a length, or until close): bytes
    /// go from the source's buffer straight to `dst`, without a copy, in reads
    /// of up to a large pool buffer (64 KiB). `out` is empty here and handed
    /// back for reuse.
    async fn pass_through(
        &mut self,
        src: &mut Inbound,
        dst: &mut Stream,
        out: Vec<u8>,
        pool: &BufferPool,
    ) -> Result<Vec<u8>, PumpError> {
        let largest = pool.large_buffer_size();
        loop {
            let want = match self.input {
                Input::Length(left) => usize::try_from(left).unwrap_or(usize::MAX).min(largest),
                _ => largest,
            };
            self.reading = true;
            let read = src.fill_at_least(pool, want).await;
            self.reading = false;
            match read {
                Ok(0) if self.ends_here(src) => {
                    self.input = Input::Done;
                    return Ok(out);
                }
                Ok(0) | Err(_) => return Err(PumpError::Source),
                Ok(_) => {}
            }
            let n = self.identity_pending(src);
            self.advance_identity(n)?;
            self.wire_out += n as u64;
            src.write_pending(n, dst).await.map_err(|_| PumpError::Sink)?;
            if self.is_done() {
                return Ok(out);
            }
        }
    }

    /// Stream the rest of the body from `src` to `dst`, starting with what is
    /// already in `out`. Returns `out` (emptied) for reuse. Each write
    /// counts in [`Self::written`] as it is handed to the socket, so that a
    /// pump cut part-way (its future dropped by a timeout) still tells what
    /// went out, to whoever owns it.
    pub async fn pump(
        &mut self,
        src: &mut Inbound,
        dst: &mut Stream,
        mut out: Vec<u8>,
        pool: &BufferPool,
    ) -> Result<Vec<u8>, PumpError> {
        loop {
            let identity = self.identity_pending(src);
            if !out.is_empty() && identity >= WRITEV_AT {
                self.advance_identity(identity)?;
                self.wire_out += (out.len() + identity) as u64;
                let (result, head) = src.write_after(out, identity, dst).await;
                out = head;
                out.clear();
                result.map_err(|_| PumpError::Sink)?;
                continue;
            }
            self.take_pending(src, &mut out)?;
            if !out.is_empty() && (self.is_done() || out.len() >= FLUSH_AT || !src.has_pending()) {
                self.wire_out += out.len() as u64;
                let (result, buf) = dst.write_all(out).await;
                out = buf;
                out.clear();
                result.map_err(|_| PumpError::Sink)?;
            }
            if self.is_done() {
                return Ok(out);
            }
            if !self.chunked_out && matches!(self.input, Input::Length(_) | Input::UntilClose) {
                return self.pass_through(src, dst, out, pool).await;
            }
            self.reading = true;
            let read = src.fill(pool, pool.buffer_size()).await;
            self.reading = false;
            match read {
                Ok(0) if self.ends_here(src) => self.input = Input::Done,
                Ok(0) | Err(_) => return Err(PumpError::Source),
                Ok(_) => {}
            }
        }
    }
}
