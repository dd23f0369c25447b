//! The JSON endpoint list: one shape for an endpoints file and for the body
//! of `PUT /clusters/{name}/endpoints`, checked the same way for both, with
//! every error placed at LINE:COLUMN in the text it came from.

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use std::net::SocketAddr;

/// One endpoint of a JSON list. The address and weight are checked while
/// parsing, so their errors carry serde_json's line and column (where the
/// problem was seen: just past the offending value).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEndpoint {
    /// `IP:PORT` or `HOST:PORT`; a host name is resolved by the reader.
    #[serde(deserialize_with = "endpoint_address")]
    pub address: String,
    /// At least 1.
    #[serde(default = "one", deserialize_with = "endpoint_weight")]
    pub weight: u32,
    pub zone: Option<String>,
    #[serde(default)]
    pub priority: u32,
}

fn one() -> u32 {
    1
}

fn endpoint_weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom("endpoint weight must be at least 1")),
        w => Ok(w),
    }
}

fn endpoint_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let address = String::deserialize(d)?;
    check_address(&address).map_err(D::Error::custom)?;
    Ok(address)
}

/// A syntactic check only (no DNS here): `IP:PORT`, `[IPv6]:PORT` or
/// `HOST:PORT` with a DNS-style host and a port from 1 to 65535.
fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("invalid endpoint address {address:?}; expected HOST:PORT or IP:PORT with a port above 0");
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return if addr.port() == 0 { Err(bad()) } else { Ok(()) };
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad()),
    }
}

/// A JSON list of endpoints, or the first error as `LINE:COLUMN: message`.
pub fn parse(text: &str) -> Result<Vec<JsonEndpoint>, String> {
    serde_json::from_str(text).map_err(|e| json_error(&e))
}

/// `LINE:COLUMN: message` from serde_json's own position, without the
/// " at line L column C" suffix its Display adds.
pub fn json_error(e: &serde_json::Error) -> String {
    let (line, column) = (e.line().max(1), e.column().max(1));
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    format!("{line}:{column}: {message}")
}

/// `LINE:COLUMN: ` where the `index`-th element of the JSON list `text`
/// begins, to place a problem found after parsing; empty when there is no
/// such element.
pub fn element_position(text: &str, index: usize) -> String {
    let Ok(elements) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) else {
        return String::new();
    };
    let base = text.as_ptr() as usize;
    match elements.get(index) {
        Some(element) => {
            let start = (element.get().as_ptr() as usize).saturating_sub(base);
            let (line, column) = super::line_column(text, start);
            format!("{line}:{column}: ")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_or_ip_with_a_port() {
        for good in [
            "10.0.0.7:8080",
            "[::1]:80",
            "api.internal:80",
            "svc_a.ns-1.local:65535",
            "localhost:1",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "10.0.0.7",
            "10.0.0.7:0",
            ":80",
            "host:",
            "host:+80",
            "a..b:80",
            "-a:80",
            "[::1]:0",
            "h st:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_lead_with_line_and_column() {
        assert_eq!(
            parse("[\n  {\"weight\": 1}\n]").expect_err("no address"),
            "2:15: missing field `address`"
        );
        assert_eq!(parse("").expect_err("empty"), "1:1: EOF while parsing a value");
        assert_eq!(
            parse("[{\"address\": \"127.0.0.1:80\",\n \"weight\": 0}]").expect_err("weight 0"),
            "2:13: endpoint weight must be at least 1"
        );
    }

    #[test]
    fn elements_are_placed_where_they_begin() {
        let text = "[\n  {\"address\": \"a:1\"},\n   {\"address\": \"b:1\"}\n]";
        assert_eq!(element_position(text, 0), "2:3: ");
        assert_eq!(element_position(text, 1), "3:4: ");
        assert_eq!(element_position(text, 2), "");
        assert_eq!(element_position("not json", 0), "");
    }
}
