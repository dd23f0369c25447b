//! Access log lines: one JSON object per request, one request per line
//! (DESIGN.md §7), written into a caller's buffer without allocating.
//!
//! Everything that came from the client (method, authority, path, request id)
//! is escaped byte by byte, so a hostile request cannot break the line or add
//! fields. Lines go into a worker's [`LogBuffer`](super::LogBuffer) and reach
//! the file through a [`LogSink`](super::LogSink) on another thread.

use super::json::write_string;
use super::time::write_rfc3339_millis;
use std::io::Write;
use std::net::SocketAddr;
use std::time::SystemTime;

/// The `reason` of a request the upstream answered.
pub const NO_REASON: &str = "-";

/// One finished request, borrowed from the pipeline's state.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// 32 lowercase hex digits of the W3C trace id.
    pub trace_id: &'a str,
    /// The `x-request-id` sent upstream (the client's, or a generated one).
    pub request_id: &'a [u8],
    /// The listener that took the connection.
    pub listener: &'a str,
    /// The client's address and port, as the connection came from it.
    pub client: Option<SocketAddr>,
    pub method: &'a [u8],
    /// The request's authority (absolute-form target or Host), empty if none.
    pub authority: &'a [u8],
    /// The request path as sent; the caller decides whether the query string
    /// is included (it can carry secrets).
    pub path: &'a [u8],
    pub status: u16,
    /// The `x-ringway-error` reason of a local reply, [`NO_REASON`] otherwise.
    pub reason: &'static str,
    /// Route name, empty when no route matched.
    pub route: &'a str,
    /// Cluster picked, empty when none was.
    pub cluster: &'a str,
    /// The endpoint of the last attempt, if any attempt was made.
    pub upstream: Option<SocketAddr>,
    /// The client's verified SPIFFE ID (mTLS listeners), if it has one.
    pub peer_identity: Option<&'a str>,
    /// Upstream attempts made (0 for requests answered before picking one).
    pub attempts: u32,
    /// Request bytes read from the client, head included.
    pub bytes_in: u64,
    /// Response bytes written to the client, head included.
    pub bytes_out: u64,
    /// Arrival to the last response byte, in microseconds.
    pub duration_us: u64,
}

/// Append `rec` to `out` as one JSON object and a `\n`.
pub fn write_json_line(rec: &AccessRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_rfc3339_millis(out, rec.time);
    out.extend_from_slice(b"\",\"trace_id\":");
    write_string(out, rec.trace_id.as_bytes());
    out.extend_from_slice(b",\"request_id\":");
    write_string(out, rec.request_id);
    out.extend_from_slice(b",\"listener\":");
    write_string(out, rec.listener.as_bytes());
    write_address(out, "client", rec.client);
    out.extend_from_slice(b",\"method\":");
    write_string(out, rec.method);
    out.extend_from_slice(b",\"authority\":");
    write_string(out, rec.authority);
    out.extend_from_slice(b",\"path\":");
    write_string(out, rec.path);
    // Writing into a Vec cannot fail; the results below are dropped for that reason.
    let _ = write!(out, ",\"status\":{},\"reason\":", rec.status);
    write_string(out, rec.reason.as_bytes());
    out.extend_from_slice(b",\"route\":");
    write_string(out, rec.route.as_bytes());
    out.extend_from_slice(b",\"cluster\":");
    write_string(out, rec.cluster.as_bytes());
    write_address(out, "upstream", rec.upstream);
    out.extend_from_slice(b",\"peer_identity\":");
    match rec.peer_identity {
        Some(id) => write_string(out, id.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    let _ = writeln!(
        out,
        ",\"attempts\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_us\":{}}}",
        rec.attempts, rec.bytes_in, rec.bytes_out, rec.duration_us
    );
}

/// `,"key":"ADDR"` or `,"key":null`.
fn write_address(out: &mut Vec<u8>, key: &str, addr: Option<SocketAddr>) {
    match addr {
        // A socket address prints as digits, dots, colons, brackets and `%`.
        Some(addr) => {
            let _ = write!(out, ",\"{key}\":\"{addr}\"");
        }
        None => {
            let _ = write!(out, ",\"{key}\":null");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::{Duration, UNIX_EPOCH};

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_709_210_709_042),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            request_id: b"0f8fad5b-d9cb-469f-a165-70867728950e",
            listener: "ingress",
            client: Some("192.0.2.7:51234".parse().expect("addr")),
            method: b"GET",
            authority: b"api.local",
            path: b"/api/v1/items",
            status: 200,
            reason: NO_REASON,
            route: "api",
            cluster: "api-v1",
            upstream: Some("10.0.0.7:8080".parse().expect("addr")),
            peer_identity: Some("spiffe://td/ns/web/sa/frontend"),
            attempts: 2,
            bytes_in: 312,
            bytes_out: 5_120,
            duration_us: 1_234,
        }
    }

    fn line(rec: &AccessRecord) -> (String, Value) {
        let mut out = Vec::new();
        write_json_line(rec, &mut out);
        let text = String::from_utf8(out).expect("UTF-8 line");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.ends_with('\n'));
        let value = serde_json::from_str(&text).expect("valid JSON");
        (text, value)
    }

    #[test]
    fn fields_parse_back() {
        let (_, v) = line(&record());
        let want = json!({
            "time": "2024-02-29T12:45:09.042Z",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "request_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "listener": "ingress",
            "client": "192.0.2.7:51234",
            "method": "GET",
            "authority": "api.local",
            "path": "/api/v1/items",
            "status": 200,
            "reason": "-",
            "route": "api",
            "cluster": "api-v1",
            "upstream": "10.0.0.7:8080",
            "peer_identity": "spiffe://td/ns/web/sa/frontend",
            "attempts": 2,
            "bytes_in": 312,
            "bytes_out": 5120,
            "duration_us": 1234,
        });
        assert_eq!(v, want);
    }

    #[test]
    fn local_reply_without_upstream() {
        let rec = AccessRecord {
            status: 404,
            reason: "no-route",
            route: "",
            cluster: "",
            upstream: None,
            peer_identity: None,
            attempts: 0,
            ..record()
        };
        let (_, v) = line(&rec);
        assert_eq!(v["upstream"], Value::Null);
        assert_eq!(v["peer_identity"], Value::Null);
        assert_eq!(
            (v["reason"].as_str(), v["route"].as_str()),
            (Some("no-route"), Some(""))
        );
        let v6 = AccessRecord {
            upstream: Some("[::1]:9000".parse().expect("addr")),
            client: Some("[2001:db8::7]:40000".parse().expect("addr")),
            ..record()
        };
        let (_, v) = line(&v6);
        assert_eq!(
            (v["upstream"].as_str(), v["client"].as_str()),
            (Some("[::1]:9000"), Some("[2001:db8::7]:40000"))
        );
        let unknown = AccessRecord {
            client: None,
            ..record()
        };
        assert_eq!(line(&unknown).1["client"], Value::Null);
    }

    #[test]
    fn hostile_bytes_stay_inside_their_field() {
        let rec = AccessRecord {
            path: b"/a\"},\"status\":1,\n{\"x\xff\x00",
            authority: b"h\r\nX-Injected: 1",
            request_id: b"\\\"",
            method: b"G\tT",
            ..record()
        };
        let (text, v) = line(&rec);
        assert!(!text.trim_end().contains('\n'));
        assert_eq!(v["path"], "/a\"},\"status\":1,\n{\"x\u{fffd}\u{0}");
        assert_eq!(v["authority"], "h\r\nX-Injected: 1");
        assert_eq!(v["request_id"], "\\\"");
        assert_eq!(v["method"], "G\tT");
        assert_eq!(v["status"], 200);
        assert_eq!(v.as_object().map(|o| o.len()), Some(18));
    }

    #[test]
    fn appends_without_touching_earlier_lines() {
        let mut out = b"previous\n".to_vec();
        write_json_line(&record(), &mut out);
        write_json_line(&record(), &mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "previous");
        assert_eq!(lines[1], lines[2]);
    }
}
