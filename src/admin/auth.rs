//! Bearer-token auth for the admin endpoint: loading the token file and the
//! constant-time check of `Authorization: Bearer <token>`. The token is never
//! logged or echoed.

use std::io;
use std::path::Path;

/// Read the admin token from `path`: the file's content without surrounding
/// whitespace. An empty token, or one with spaces or control characters
/// inside, is an error (it could never be sent in a header as written).
pub fn load_token(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("admin token file {}: {e}", path.display())))?;
    let token = text.trim();
    check_token(token)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {message}", path.display())))?;
    Ok(token.to_string())
}

/// A usable token is non-empty, visible ASCII.
pub(crate) fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        Err("the admin token is empty")
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Err("the admin token must be visible ASCII without spaces")
    } else {
        Ok(())
    }
}

/// True when `header` (the one `authorization` value, if exactly one was
/// sent) is `Bearer <expected>`; the scheme is case-insensitive.
pub(crate) fn authorized(expected: &[u8], header: Option<&[u8]>) -> bool {
    let Some(value) = header else {
        return false;
    };
    let value = value.trim_ascii();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, credentials) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer") && constant_time_eq(credentials.trim_ascii(), expected)
}

/// Compares every byte of `expected` whatever `given` holds, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_must_match_exactly() {
        let token = b"s3cr3t-token";
        assert!(authorized(token, Some(b"Bearer s3cr3t-token")));
        assert!(authorized(token, Some(b"bearer   s3cr3t-token ")));
        assert!(!authorized(token, None));
        assert!(!authorized(token, Some(b"Bearer s3cr3t-toke")));
        assert!(!authorized(token, Some(b"Bearer s3cr3t-token2")));
        assert!(!authorized(token, Some(b"Basic s3cr3t-token")));
        assert!(!authorized(token, Some(b"Bearer")));
        assert!(!authorized(token, Some(b"s3cr3t-token")));
        assert!(!authorized(token, Some(b"Bearer ")));
    }

    #[test]
    fn token_file_is_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("ringway-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good");
        std::fs::write(&good, "  abc.DEF-123_~+/=\n\n").expect("write");
        assert_eq!(load_token(&good).expect("token"), "abc.DEF-123_~+/=");
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n\t\n").expect("write");
        let e = load_token(&empty).expect_err("empty token");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("empty"), "{e}");
        let spaced = dir.join("spaced");
        std::fs::write(&spaced, "two words\n").expect("write");
        assert!(load_token(&spaced).is_err());
        let missing = load_token(&dir.join("missing")).expect_err("missing file");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("missing"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
