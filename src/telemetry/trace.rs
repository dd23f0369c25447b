//! W3C Trace Context (`traceparent`) and `x-request-id` values.
//!
//! The proxy continues the client's trace with a new span id, or starts a
//! root trace when the header is absent or invalid (DESIGN.md §7). Parsing
//! follows the Trace Context spec strictly: lowercase hex only, all-zero ids
//! and version `ff` are invalid, version `00` is exactly 55 bytes, and a
//! higher version is read by its version-00 prefix when that prefix is
//! followed by the end or a `-`. The proxy always writes version `00`. The
//! rng comes in as an argument, so tests are deterministic.

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One hop of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The span id of the sender (in a context we create: our own span id).
    pub parent_id: [u8; 8],
    pub flags: u8,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decode exactly `2 * N` lowercase hex digits.
fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of `bytes` into `out`, which holds twice as many bytes.
fn encode(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parse a `traceparent` field value (surrounding spaces or tabs, which HTTP
/// does not count as part of a value, are ignored). `None` means invalid:
/// the caller starts a new root trace.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceContext> {
    let v = trim_ows(value);
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let [version] = decode::<1>(&v[0..2])?;
    match version {
        0xff => return None,
        0x00 if v.len() != TRACEPARENT_LEN => return None,
        _ if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = decode::<16>(&v[3..35])?;
    let parent_id = decode::<8>(&v[36..52])?;
    let [flags] = decode::<1>(&v[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent_id,
        flags,
    })
}

impl TraceContext {
    /// A new trace: random non-zero ids, sampled or not.
    pub fn new_root(rng: &mut fastrand::Rng, sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: rng.u128(1..).to_be_bytes(),
            parent_id: rng.u64(1..).to_be_bytes(),
            flags: if sampled { FLAG_SAMPLED } else { 0 },
        }
    }

    /// Our hop of this trace: same trace id and sampled flag, a new span
    /// id, which the upstream sees as its parent. Other flag bits are not
    /// ours to pass on: version 00 reserves them, to be sent as zero.
    pub fn child(&self, rng: &mut fastrand::Rng) -> TraceContext {
        TraceContext {
            parent_id: rng.u64(1..).to_be_bytes(),
            flags: self.flags & FLAG_SAMPLED,
            ..*self
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The version-00 header value.
    pub fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut buf = [b'-'; TRACEPARENT_LEN];
        buf[0..2].copy_from_slice(b"00");
        encode(&self.trace_id, &mut buf[3..35]);
        encode(&self.parent_id, &mut buf[36..52]);
        encode(&[self.flags], &mut buf[53..55]);
        buf
    }

    /// The trace id as 32 lowercase hex digits (access log `trace_id`).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        encode(&self.trace_id, &mut out);
        out
    }

    pub fn parent_id_hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        encode(&self.parent_id, &mut out);
        out
    }
}

/// A random UUID version 4 in its 36-byte text form
/// (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, lowercase), for `x-request-id`.
pub fn new_request_id(rng: &mut fastrand::Rng) -> [u8; 36] {
    let mut b = rng.u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        encode(&[*byte], &mut out[at..at + 2]);
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn written(ctx: &TraceContext) -> Vec<u8> {
        ctx.traceparent().to_vec()
    }

    #[test]
    fn spec_example() {
        let ctx = parse_traceparent(EXAMPLE).expect("valid");
        assert_eq!(&ctx.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&ctx.parent_id_hex(), b"00f067aa0ba902b7");
        assert!(ctx.sampled());
        assert_eq!(written(&ctx), EXAMPLE);
        assert_eq!(
            parse_traceparent(b" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 "),
            Some(TraceContext { flags: 0, ..ctx })
        );
    }

    #[test]
    fn versions() {
        let with = |version: &str, tail: &str| {
            let mut v = EXAMPLE.to_vec();
            v[..2].copy_from_slice(version.as_bytes());
            v.extend_from_slice(tail.as_bytes());
            parse_traceparent(&v)
        };
        assert!(with("00", "").is_some());
        assert!(with("00", "-").is_none(), "version 00 is exactly 55 bytes");
        assert!(with("ff", "").is_none(), "version ff is invalid");
        assert!(with("01", "").is_some(), "a future version at 55 bytes");
        assert!(
            with("cc", "-what-the-future-holds").is_some(),
            "future fields after a dash"
        );
        assert!(with("cc", "x").is_none(), "future version: byte 55 must be a dash");
        assert!(with("0A", "").is_none(), "uppercase version");
        assert!(with("0g", "").is_none());
        let future = with("cc", "-more").expect("valid");
        assert_eq!(written(&future), EXAMPLE, "we always write version 00");
    }

    #[test]
    fn invalid_values() {
        let bad: &[&[u8]] = &[
            b"",
            b"00",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7\x00-01",
        ];
        for v in bad {
            assert_eq!(parse_traceparent(v), None, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn child_keeps_trace_and_flags() {
        let mut rng = fastrand::Rng::with_seed(7);
        let root = TraceContext::new_root(&mut rng, true);
        assert!(root.sampled() && root.trace_id != [0; 16] && root.parent_id != [0; 8]);
        assert!(!TraceContext::new_root(&mut rng, false).sampled());
        let parent = parse_traceparent(EXAMPLE).expect("valid");
        let child = parent.child(&mut rng);
        assert_eq!((child.trace_id, child.flags), (parent.trace_id, parent.flags));
        assert_ne!(child.parent_id, parent.parent_id);
        assert_eq!(parse_traceparent(&written(&child)), Some(child));
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let id = new_request_id(&mut rng);
            for (i, &b) in id.iter().enumerate() {
                match i {
                    8 | 13 | 18 | 23 => assert_eq!(b, b'-'),
                    14 => assert_eq!(b, b'4', "version nibble"),
                    19 => assert!(b"89ab".contains(&b), "variant nibble"),
                    _ => assert!(hex_digit(b).is_some(), "lowercase hex"),
                }
            }
            assert!(seen.insert(id));
        }
    }

    fn context() -> impl Strategy<Value = TraceContext> {
        (1..=u128::MAX, 1..=u64::MAX, any::<u8>()).prop_map(|(t, p, flags)| TraceContext {
            trace_id: t.to_be_bytes(),
            parent_id: p.to_be_bytes(),
            flags,
        })
    }

    /// Half near misses (hex digits of both cases, dashes, spaces), half anything.
    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            proptest::sample::select(b"0123456789abcdefABCDEF- ".to_vec())
        ]
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(ctx in context()) {
            let v = written(&ctx);
            prop_assert_eq!(v.len(), TRACEPARENT_LEN);
            prop_assert!(v.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b) || *b == b'-'));
            prop_assert_eq!(&v[3..35], &ctx.trace_id_hex()[..]);
            prop_assert_eq!(parse_traceparent(&v), Some(ctx));
        }

        /// Any single-byte change to a valid value either breaks it or is a
        /// different valid hex digit (or version) that parses to what it says.
        #[test]
        fn single_byte_corruption(ctx in context(), at in 0..TRACEPARENT_LEN, byte in interesting_byte()) {
            let mut v = written(&ctx);
            v[at] = byte;
            let parsed = parse_traceparent(&v);
            let dash = matches!(at, 2 | 35 | 52);
            let lower_hex = hex_digit(byte).is_some();
            if (dash && byte != b'-') || (!dash && !lower_hex) || (at < 2 && &v[..2] == b"ff") {
                prop_assert_eq!(parsed, None);
            } else if let Some(p) = parsed {
                let mut again = written(&p);
                again[..2].copy_from_slice(&v[..2]);
                prop_assert_eq!(again, v);
            } else {
                prop_assert!(has_zero_id(&v), "rejected only for an all-zero id");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(ctx) = parse_traceparent(&v) {
                let trimmed = trim_ows(&v);
                prop_assert_eq!(&written(&ctx)[2..], &trimmed[2..TRACEPARENT_LEN]);
            }
        }
    }

    fn has_zero_id(v: &[u8]) -> bool {
        v[3..35].iter().all(|&b| b == b'0') || v[36..52].iter().all(|&b| b == b'0')
    }
}
