//! Property tests across the codec: mutated and arbitrary heads never panic,
//! whatever parses has sane offsets, and whatever we write from an accepted
//! head is itself accepted by our own strict parsers.

use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

const REQUESTS: [&[u8]; 6] = [
    b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"POST http://h:8/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: x-a\r\nX-A: 1\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nVia: 1.0 a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
    b"\r\nDELETE /d HTTP/1.1\r\nhost: [::1]:80\r\nA:\r\n\r\n",
];

const RESPONSES: [&[u8]; 4] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 up\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: x-b\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: s\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
];

/// Applies (position, byte, kind) edits: replace, insert or delete.
fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, byte, kind) in edits {
        let at = pos % (v.len() + 1);
        match kind % 3 {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec(
        (
            any::<usize>(),
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b' '),
                Just(b':'),
                Just(b','),
                any::<u8>()
            ],
            any::<u8>(),
        ),
        0..4,
    )
}

fn check_request(buf: &[u8]) -> Result<(), TestCaseError> {
    let mut head = RequestHead::default();
    let Ok(ParseStatus::Complete(n)) = parse_request(buf, &Limits::default(), &mut head) else {
        return Ok(());
    };
    prop_assert!(n <= buf.len());
    for h in &head.headers {
        prop_assert!(h.name_range().end <= n && h.value_range().end <= n);
        prop_assert!(!h.name(buf).is_empty());
        prop_assert!(!h.value(buf).iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
    }
    prop_assert!(head.target.end <= n && head.path.end <= n && head.origin.end <= n);
    let fwd = Forwarded {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        proto: "http",
        keep_client_proto: true,
        via: "1.1 ringway",
        client_identity: None,
        new_trace: false,
    };
    let mut out = Vec::new();
    write_request_head(buf, &head, &fwd, head.framing, &[], &RouteEdits::default(), &mut out);
    let mut again = RequestHead::default();
    let st = parse_request(&out, &Limits::default(), &mut again);
    prop_assert_eq!(
        st,
        Ok(ParseStatus::Complete(out.len())),
        "{}",
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!(again.framing, head.framing);
    prop_assert_eq!(again.path_bytes(&out), head.path_bytes(buf));
    prop_assert!(!again.upgrade && !again.expect_continue);
    Ok(())
}

fn check_response(buf: &[u8], method: Method) -> Result<(), TestCaseError> {
    let mut head = ResponseHead::default();
    let Ok(ParseStatus::Complete(n)) = parse_response(buf, &Limits::default(), method, &mut head) else {
        return Ok(());
    };
    prop_assert!(n <= buf.len() && head.reason.end <= n);
    let close = head.framing == Framing::UntilClose;
    let mut out = Vec::new();
    write_response_head(
        buf,
        &head,
        "1.1 r",
        head.framing,
        close,
        false,
        &[],
        &RouteEdits::default(),
        &mut out,
    );
    let mut again = ResponseHead::default();
    let st = parse_response(&out, &Limits::default(), method, &mut again);
    prop_assert_eq!(
        st,
        Ok(ParseStatus::Complete(out.len())),
        "{}",
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!((again.status, again.framing), (head.status, head.framing));
    Ok(())
}

proptest! {
    #[test]
    fn mutated_requests(seed in 0..REQUESTS.len(), e in edits()) {
        check_request(&mutate(REQUESTS[seed], &e))?;
    }

    #[test]
    fn mutated_responses(seed in 0..RESPONSES.len(), e in edits(), head_req in any::<bool>()) {
        let method = if head_req { Method::Head } else { Method::Get };
        check_response(&mutate(RESPONSES[seed], &e), method)?;
    }

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        check_request(&bytes)?;
        check_response(&bytes, Method::Get)?;
        let _ = host_for_routing(&bytes);
    }
}
