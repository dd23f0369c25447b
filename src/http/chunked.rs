//! Chunked transfer coding (RFC 9112 §7.1): a sans-IO decoder that walks the
//! framing one byte at a time and hands back payload as ranges of the input,
//! plus the few constants and helpers needed to re-encode a body.
//!
//! The decoder keeps no buffer: it survives input split anywhere, even one
//! byte per call. Extensions are syntax-checked and dropped; trailers are
//! checked like header lines, bounded, and dropped (the pipeline strips the
//! hop-by-hop `Trailer` field, so forwarding them would be meaningless).

use super::scan::is_tchar;
use super::HttpError;
use std::ops::Range;

/// Ends the data of every chunk.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The zero-size chunk and the empty trailer section: the end of the body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Longest chunk-size line (size plus extensions) we read. Extensions are
/// ignored, so this only bounds how long a peer can stall us on one line.
const MAX_SIZE_LINE: usize = 4096;
/// Total bytes of the trailer section, final CRLF included.
const MAX_TRAILERS: usize = 8 * 1024;
/// Sizes above 2^63 are refused rather than carried near u64 overflow.
const MAX_CHUNK_SIZE: u64 = 1 << 63;

/// What one `decode` call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Payload bytes at this range of the input (never empty); the range ends
    /// at the returned `consumed`.
    Data(Range<usize>),
    /// All input was framing; call again with more.
    NeedMore,
    /// The last chunk and its trailers are fully consumed; bytes after
    /// `consumed` belong to the next message.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeStart,
    Size,
    /// BWS after the size or an extension value, before `;`.
    ExtBeforeSemi,
    ExtBeforeName,
    ExtName,
    /// BWS after an extension name, before `=` or `;`.
    ExtAfterName,
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    ExtEscape,
    ExtAfterQuoted,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    /// Inside a trailer name; `ws` once whitespace was seen after it.
    TrailerName {
        ws: bool,
    },
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
    /// A previous call failed; the stream is unusable.
    Failed(HttpError),
}

/// Decodes one chunked body. Feed it consecutive input; see [`Chunk`].
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// True once `End` was returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Returns how many bytes were
    /// consumed and what they held; continue with `input[consumed..]`.
    /// After an error every later call returns the same error.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), HttpError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => return Ok((i, Chunk::End)),
                State::Failed(e) => return Err(e),
                State::Data(remaining) => {
                    let avail = input.len() - i;
                    if avail == 0 {
                        return Ok((i, Chunk::NeedMore));
                    }
                    let take = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    let left = remaining - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                    return Ok((i + take, Chunk::Data(i..i + take)));
                }
                _ => {}
            }
            let Some(&b) = input.get(i) else {
                return Ok((i, Chunk::NeedMore));
            };
            i += 1;
            match self.step(b) {
                Ok(next) => self.state = next,
                Err(e) => {
                    self.state = State::Failed(e);
                    return Err(e);
                }
            }
        }
    }

    /// One framing byte. Data bytes never come here.
    fn step(&mut self, b: u8) -> Result<State, HttpError> {
        use State::*;
        let in_size_line = matches!(
            self.state,
            SizeStart
                | Size
                | ExtBeforeSemi
                | ExtBeforeName
                | ExtName
                | ExtAfterName
                | ExtBeforeValue
                | ExtToken
                | ExtQuoted
                | ExtEscape
                | ExtAfterQuoted
        );
        if in_size_line {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                // Named for what made the line long: its size (leading
                // zeros) or its extensions.
                return Err(match self.state {
                    SizeStart | Size => HttpError::BadChunkSize,
                    _ => HttpError::BadChunkExt,
                });
            }
            if b == b'\n' {
                return Err(HttpError::BareCrLf);
            }
        }
        let in_trailers = matches!(
            self.state,
            TrailerStart | TrailerName { .. } | TrailerValue | TrailerLf | EndLf
        );
        if in_trailers {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILERS {
                return Err(HttpError::TrailersTooLarge);
            }
        }
        let ws = b == b' ' || b == b'\t';
        let next = match self.state {
            SizeStart => {
                let d = hex_value(b).ok_or(HttpError::BadChunkSize)?;
                self.size = u64::from(d);
                Size
            }
            Size => match (hex_value(b), b) {
                (Some(d), _) => {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .filter(|&s| s <= MAX_CHUNK_SIZE)
                        .ok_or(HttpError::BadChunkSize)?;
                    Size
                }
                (None, b';') => ExtBeforeName,
                (None, b'\r') => SizeLf,
                (None, _) if ws => ExtBeforeSemi,
                (None, _) => return Err(HttpError::BadChunkSize),
            },
            ExtBeforeSemi => match b {
                b';' => ExtBeforeName,
                _ if ws => ExtBeforeSemi,
                _ => return Err(HttpError::BadChunkExt),
            },
            ExtBeforeName => match b {
                _ if ws => ExtBeforeName,
                _ if is_tchar(b) => ExtName,
                _ => return Err(HttpError::BadChunkExt),
            },
            ExtName | ExtAfterName => match b {
                b'=' => ExtBeforeValue,
                b';' => ExtBeforeName,
                b'\r' if self.state == ExtName => SizeLf,
                _ if ws => ExtAfterName,
                _ if is_tchar(b) && self.state == ExtName => ExtName,
                _ => return Err(HttpError::BadChunkExt),
            },
            ExtBeforeValue => match b {
                b'"' => ExtQuoted,
                _ if ws => ExtBeforeValue,
                _ if is_tchar(b) => ExtToken,
                _ => return Err(HttpError::BadChunkExt),
            },
            ExtToken | ExtAfterQuoted => match b {
                b';' => ExtBeforeName,
                b'\r' => SizeLf,
                _ if ws => ExtBeforeSemi,
                _ if is_tchar(b) && self.state == ExtToken => ExtToken,
                _ => return Err(HttpError::BadChunkExt),
            },
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            ExtQuoted => match b {
                b'"' => ExtAfterQuoted,
                b'\\' => ExtEscape,
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted,
                _ => return Err(HttpError::BadChunkExt),
            },
            ExtEscape => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted,
                _ => return Err(HttpError::BadChunkExt),
            },
            SizeLf => match b {
                b'\n' if self.size == 0 => TrailerStart,
                b'\n' => Data(self.size),
                _ => return Err(HttpError::BareCrLf),
            },
            DataCr => match b {
                b'\r' => DataLf,
                b'\n' => return Err(HttpError::BareCrLf),
                _ => return Err(HttpError::BadChunk),
            },
            DataLf => match b {
                b'\n' => {
                    self.size = 0;
                    self.line_len = 0;
                    SizeStart
                }
                _ => return Err(HttpError::BareCrLf),
            },
            TrailerStart => match b {
                b'\r' => EndLf,
                _ if ws => return Err(HttpError::ObsFold),
                _ if is_tchar(b) => TrailerName { ws: false },
                _ => return Err(field_byte_error(b, HttpError::BadHeaderName)),
            },
            TrailerName { ws: seen_ws } => match b {
                b':' if seen_ws => return Err(HttpError::SpaceBeforeColon),
                b':' => TrailerValue,
                b'\r' => return Err(HttpError::MissingColon),
                _ if ws => TrailerName { ws: true },
                _ if is_tchar(b) && !seen_ws => TrailerName { ws: false },
                _ => return Err(field_byte_error(b, HttpError::BadHeaderName)),
            },
            TrailerValue => match b {
                b'\r' => TrailerLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => TrailerValue,
                _ => return Err(field_byte_error(b, HttpError::ControlChar)),
            },
            TrailerLf | EndLf => match b {
                b'\n' if self.state == EndLf => Done,
                b'\n' => TrailerStart,
                _ => return Err(HttpError::BareCrLf),
            },
            Data(_) | Done | Failed(_) => return Err(HttpError::BadChunk),
        };
        Ok(next)
    }
}

/// LF and control bytes get their own reasons wherever a field line breaks.
fn field_byte_error(b: u8, otherwise: HttpError) -> HttpError {
    match b {
        b'\n' => HttpError::BareCrLf,
        0..=0x1f | 0x7f => HttpError::ControlChar,
        _ => otherwise,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `{len:x}\r\n`. `len` must not be 0: a zero-size chunk ends the
/// body, so callers skip empty reads and finish with [`LAST_CHUNK`].
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-size chunk would end the body");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The length of the chunked body at the start of `input` when it is all
/// there (trailers and the final CRLF included); None when it is not, or
/// is malformed.
pub fn whole_body_len(input: &[u8]) -> Option<usize> {
    let mut decoder = ChunkedDecoder::new();
    let mut len = 0;
    loop {
        let (consumed, chunk) = decoder.decode(input.get(len..)?).ok()?;
        len += consumed;
        match chunk {
            Chunk::End => return Some(len),
            Chunk::NeedMore if consumed == 0 => return None,
            Chunk::NeedMore | Chunk::Data(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
