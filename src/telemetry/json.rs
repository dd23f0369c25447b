//! JSON string literals from arbitrary bytes, for access log fields that come
//! straight off the wire (path, authority, request id).
//!
//! Valid UTF-8 passes through; `"` and `\` are escaped, control characters
//! (and DEL) become `\n`-style or `\u00XX` escapes, so a line can never be
//! split or forged by its content. Each maximal invalid UTF-8 sequence becomes
//! one `\ufffd`, the same replacement `String::from_utf8_lossy` makes.

/// Append `bytes` to `out` as a quoted JSON string.
pub fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        write_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Escape valid UTF-8: only ASCII bytes ever need it, so multi-byte
/// characters are copied in runs.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    let mut run = 0;
    for (i, &b) in text.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[run..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&text[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, bytes);
        String::from_utf8(out).expect("output is UTF-8")
    }

    #[test]
    fn escapes() {
        assert_eq!(json(b"/a b"), r#""/a b""#);
        assert_eq!(json(b"\"\\"), r#""\"\\""#);
        assert_eq!(json(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(json(b"\x00\x1f\x7f"), r#""\u0000\u001f\u007f""#);
        assert_eq!(json("é/日本".as_bytes()), "\"é/日本\"");
        assert_eq!(json(b"a\xffb"), r#""a\ufffdb""#);
        assert_eq!(
            json(b"\xe6\x97"),
            r#""\ufffd""#,
            "truncated sequence is one replacement"
        );
        assert_eq!(json(b"\xc0\xaf"), r#""\ufffd\ufffd""#, "overlong encoding");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_back_as_lossy_text(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = json(&bytes);
            prop_assert!(!text.bytes().any(|b| b < 0x20 || b == 0x7f), "raw control byte in {}", text);
            let parsed: String = serde_json::from_str(&text).expect("valid JSON string");
            prop_assert_eq!(parsed, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
}
