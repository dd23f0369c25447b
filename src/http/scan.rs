//! The strictness pass run over a raw head before httparse sees it, plus the
//! small byte-class and list helpers the rest of the codec shares.
//!
//! httparse is lenient where RFC 9112 lets a recipient be (it accepts LF-only
//! line endings, for one), and its errors are too coarse for our reasons. This
//! pass finds the end of the head, enforces the size and count limits, and
//! rejects every byte-level ambiguity with its own `HttpError`, in one linear
//! walk that never looks past `max_header_bytes`.

use super::{HttpError, Limits};
use std::ops::Range;

/// Where the head lies in the buffer, once the strictness pass accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// First byte of the start line (after skipped empty lines).
    pub start: usize,
    /// Offset of the CR that ends the start line.
    pub start_line_end: usize,
    /// Head length including the final CRLFCRLF.
    pub end: usize,
}

/// How far [`scan_head`] got through a head that has not fully arrived, so
/// that the next call goes on from there: a head arriving a byte at a time
/// is then scanned once, not once per byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadProgress {
    /// Every byte before this one passed.
    at: usize,
    start: usize,
    line_start: usize,
    start_line_end: Option<usize>,
    fields: usize,
}

impl HeadProgress {
    /// Whether the start line has not ended yet.
    pub(crate) fn in_start_line(&self) -> bool {
        self.start_line_end.is_none()
    }

    /// The start line in `buf`, once its CRLF has been seen.
    pub(crate) fn start_line<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        buf.get(self.start..self.start_line_end?)
    }
}

/// Walks `buf` up to `limits.max_header_bytes`. `Ok(None)` means "need more".
#[cfg(test)]
pub(crate) fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<Scanned>, HttpError> {
    scan_head_from(buf, limits, &mut HeadProgress::default())
}

/// [`scan_head`] going on from `progress`, which a call that needs more
/// bytes leaves where it stopped. `buf` must begin with the bytes the
/// earlier calls saw.
pub(crate) fn scan_head_from(
    buf: &[u8],
    limits: &Limits,
    progress: &mut HeadProgress,
) -> Result<Option<Scanned>, HttpError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let max_headers = limits.max_headers.min(super::MAX_HEADERS_CEILING);
    let HeadProgress {
        at: mut i,
        mut start,
        mut line_start,
        mut start_line_end,
        mut fields,
    } = *progress;

    // RFC 9112 §2.2: a server SHOULD ignore empty lines before the request-line
    // (old clients add CRLF after a POST body). httparse skips them too.
    if i == start {
        while window.get(i..).is_some_and(|w| w.starts_with(b"\r\n")) {
            i += 2;
        }
        start = i;
        line_start = i;
    }

    loop {
        // Ordinary bytes are skipped eight at a time; the rest one by one.
        while let Some(word) = window.get(i..).and_then(|w| w.first_chunk::<8>()) {
            if has_special(u64::from_le_bytes(*word)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = window.get(i) else { break };
        match b {
            b'\r' => match window.get(i + 1) {
                None => break,
                Some(b'\n') => {
                    let line = &window[line_start..i];
                    match start_line_end {
                        None => start_line_end = Some(i),
                        Some(_) if line.is_empty() => {
                            return Ok(Some(Scanned {
                                start,
                                start_line_end: start_line_end.unwrap_or(i),
                                end: i + 2,
                            }));
                        }
                        Some(_) => {
                            check_field_line(line)?;
                            fields += 1;
                            if fields > max_headers {
                                return Err(HttpError::TooManyHeaders);
                            }
                        }
                    }
                    i += 2;
                    line_start = i;
                    continue;
                }
                Some(_) => return Err(HttpError::BareCrLf),
            },
            // Every LF that is part of a CRLF was stepped over above.
            b'\n' => return Err(HttpError::BareCrLf),
            b'\t' => {}
            0..=0x1f | 0x7f => return Err(HttpError::ControlChar),
            _ => {}
        }
        i += 1;
    }
    *progress = HeadProgress {
        at: i,
        start,
        line_start,
        start_line_end,
        fields,
    };
    if buf.len() >= limits.max_header_bytes {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(None)
    }
}

/// Whether any of the eight bytes in `word` needs a look of its own: a
/// control byte (below 0x20, which takes in CR, LF and HTAB) or DEL. The
/// classic "has a byte less than n" test (n <= 128), exact as a yes/no.
fn has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let xor_del = word ^ (ONES * 0x7f);
    let del = xor_del.wrapping_sub(ONES) & !xor_del & HIGHS;
    below_space | del != 0
}

/// Syntax of one field line (without its CRLF); control bytes were already
/// rejected by the caller. Shared shape with chunked trailers.
fn check_field_line(line: &[u8]) -> Result<(), HttpError> {
    // A field line that starts with whitespace is either obs-fold or, right
    // after the start line, whitespace that RFC 9112 §2.2 says to reject.
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::ObsFold);
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(HttpError::MissingColon)?;
    let name = &line[..colon];
    match name.last() {
        None => Err(HttpError::BadHeaderName),
        Some(b' ' | b'\t') => Err(HttpError::SpaceBeforeColon),
        Some(_) if name.iter().all(|&b| is_tchar(b)) => Ok(()),
        Some(_) => Err(HttpError::BadHeaderName),
    }
}

const fn tchar_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        i += 1;
    }
    t
}

static TCHAR: [bool; 256] = tchar_table();

/// RFC 9110 §5.6.2 token character.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Elements of a `#rule` comma list, trimmed, empty elements skipped
/// (RFC 9110 §5.6.1 requires recipients to ignore them).
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|s| !s.is_empty())
}

/// Offsets of `part` within `buf`, if `part` really is a sub-slice of it.
/// httparse hands back sub-slices; this turns them into offsets without unsafe.
pub(crate) fn span_of(buf: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= buf.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(b: &[u8]) -> Result<Option<Scanned>, HttpError> {
        scan_head(b, &Limits::default())
    }

    #[test]
    fn finds_head_end_and_start_line() {
        let s = scan(b"\r\n\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nbody")
            .expect("valid")
            .expect("complete");
        assert_eq!((s.start, s.start_line_end, s.end), (4, 18, 28));
    }

    #[test]
    fn byte_level_rejections() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", HttpError::BareCrLf),
            (b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", HttpError::BareCrLf),
            (b"\nGET / HTTP/1.1\r\n\r\n", HttpError::BareCrLf),
            (b"GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", HttpError::ControlChar),
            (b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", HttpError::ControlChar),
            (b"GET / HTTP/1.1\r\nHost: a\x0b\r\n\r\n", HttpError::ControlChar),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HttpError::ObsFold),
            (b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n", HttpError::ObsFold),
            (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", HttpError::MissingColon),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HttpError::SpaceBeforeColon),
            (b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", HttpError::BadHeaderName),
            (b"GET / HTTP/1.1\r\n: a\r\n\r\n", HttpError::BadHeaderName),
            (b"GET / HTTP/1.1\r\nX Y: a\r\n\r\n", HttpError::BadHeaderName),
        ];
        for (input, want) in cases {
            assert_eq!(scan(input), Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    fn special(b: u8) -> bool {
        b < 0x20 || b == 0x7f
    }

    #[test]
    fn word_test_flags_exactly_the_special_bytes() {
        for v in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = v;
                assert_eq!(has_special(u64::from_le_bytes(word)), special(v), "byte {v:#x} at {at}");
                // Next to the largest ordinary and obs-text bytes as well.
                let mut word = [0xff; 8];
                word[at] = v;
                assert_eq!(
                    has_special(u64::from_le_bytes(word)),
                    special(v),
                    "byte {v:#x} among 0xff"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn word_test_agrees_with_a_bytewise_look(word in proptest::prelude::any::<[u8; 8]>()) {
            proptest::prop_assert_eq!(has_special(u64::from_le_bytes(word)), word.iter().any(|&b| special(b)));
        }

        /// A control byte anywhere in a long value is found, whatever its
        /// alignment to the eight-byte steps.
        #[test]
        fn control_bytes_are_found_at_any_offset(at in 0usize..64, v in 0u8..0x20) {
            proptest::prop_assume!(v != b'\t');
            let mut value = vec![b'x'; 64];
            value[at] = v;
            let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ".to_vec();
            head.extend_from_slice(&value);
            head.extend_from_slice(b"\r\n\r\n");
            proptest::prop_assert!(scan(&head).is_err());
        }
    }

    #[test]
    fn htab_and_obs_text_allowed_in_values() {
        assert!(scan(b"GET / HTTP/1.1\r\nA: b\tc \xff\r\n\r\n")
            .expect("valid")
            .is_some());
    }

    #[test]
    fn errors_surface_before_the_head_is_complete() {
        assert_eq!(scan(b"GET / HTTP/1.1\r\nA\0"), Err(HttpError::ControlChar));
        assert_eq!(scan(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n"), Err(HttpError::ObsFold));
        assert_eq!(scan(b"GET / HTTP/1.1\r\nA: b\r"), Ok(None));
    }

    #[test]
    fn size_limit_is_inclusive_of_final_crlf() {
        let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        let exact = Limits {
            max_header_bytes: head.len(),
            max_headers: 10,
        };
        assert!(scan_head(head, &exact).expect("fits").is_some());
        let short = Limits {
            max_header_bytes: head.len() - 1,
            ..exact
        };
        assert_eq!(scan_head(head, &short), Err(HttpError::HeadTooLarge));
        assert_eq!(scan_head(&head[..head.len() - 2], &short), Ok(None));
    }

    #[test]
    fn header_count_limit() {
        let l = Limits {
            max_header_bytes: 1024,
            max_headers: 2,
        };
        assert!(scan_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", &l)
            .expect("two fit")
            .is_some());
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n", &l),
            Err(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        let items: Vec<&[u8]> = list_items(b" a ,, b,\tc ,").collect();
        assert_eq!(items, [&b"a"[..], b"b", b"c"]);
        assert!(is_token(b"X-Foo_1") && !is_token(b"") && !is_token(b"a b"));
        let buf = b"hello world";
        assert_eq!(span_of(buf, &buf[6..]), Some(6..11));
        assert_eq!(span_of(buf, b"elsewhere"), None);
    }
}
