//! Chunked decoding: whole, byte by byte, at arbitrary splits, and every
//! malformed framing class; plus the encoder helpers round-tripping.

use super::*;
use proptest::prelude::*;

/// Feeds `input` in pieces cut at `cuts` (offsets, any order), following the
/// contract: on `Data` continue with the rest of the same piece. Returns the
/// payload and total bytes consumed once `End` is seen.
fn run(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), HttpError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut dec = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let (mut start, mut consumed_total) = (0, 0);
    for end in cuts {
        let mut piece = &input[start..end];
        start = end;
        loop {
            let (used, chunk) = dec.decode(piece)?;
            consumed_total += used;
            match chunk {
                Chunk::Data(r) => {
                    assert!(!r.is_empty() && r.end == used, "{r:?} vs {used}");
                    payload.extend_from_slice(&piece[r]);
                    piece = &piece[used..];
                }
                Chunk::NeedMore => {
                    assert_eq!(used, piece.len(), "NeedMore consumes everything");
                    break;
                }
                Chunk::End => {
                    assert!(dec.is_done());
                    return Ok((payload, consumed_total));
                }
            }
        }
    }
    Err(HttpError::BadChunk) // ran out of input: "incomplete" for these tests
}

fn whole(input: &[u8]) -> Result<(Vec<u8>, usize), HttpError> {
    run(input, &[])
}

fn byte_by_byte(input: &[u8]) -> Result<(Vec<u8>, usize), HttpError> {
    let cuts: Vec<usize> = (1..input.len()).collect();
    run(input, &cuts)
}

const BODY: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\n\r\nGET /next";
const BODY_LEN: usize = BODY.len() - 9;

#[test]
fn decodes_whole_and_stops_at_the_end() {
    assert_eq!(whole(BODY), Ok((b"hello world".to_vec(), BODY_LEN)));
}

#[test]
fn decodes_one_byte_at_a_time() {
    assert_eq!(byte_by_byte(BODY), Ok((b"hello world".to_vec(), BODY_LEN)));
}

#[test]
fn every_single_split_point() {
    for cut in 0..BODY.len() {
        assert_eq!(run(BODY, &[cut]), Ok((b"hello world".to_vec(), BODY_LEN)), "cut {cut}");
    }
}

#[test]
fn end_is_sticky_and_consumes_nothing_more() {
    let mut dec = ChunkedDecoder::new();
    assert_eq!(dec.decode(b"0\r\n\r\nrest"), Ok((5, Chunk::End)));
    assert_eq!(dec.decode(b"rest"), Ok((0, Chunk::End)));
}

#[test]
fn errors_are_sticky() {
    let mut dec = ChunkedDecoder::new();
    assert_eq!(dec.decode(b"z"), Err(HttpError::BadChunkSize));
    assert_eq!(dec.decode(b"0\r\n\r\n"), Err(HttpError::BadChunkSize));
}

#[test]
fn large_sizes() {
    let mut dec = ChunkedDecoder::new();
    let (used, chunk) = dec.decode(b"8000000000000000\r\nab").expect("2^63 is allowed");
    assert_eq!((used, chunk), (20, Chunk::Data(18..20)));
    let leading_zeros = b"000000000000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_eq!(whole(leading_zeros), Ok((b"hello".to_vec(), leading_zeros.len())));
    assert_eq!(whole(b"8000000000000001\r\n"), Err(HttpError::BadChunkSize));
    assert_eq!(whole(b"fffffffffffffffff\r\n"), Err(HttpError::BadChunkSize));
}

#[test]
fn valid_extensions_are_ignored() {
    for line in [
        &b"5;a"[..],
        b"5;a=b",
        b"5 ;a=b",
        b"5\t; a = b ;c",
        b"5;a=\"q \\\" ;x\"",
        b"5;a=\"\"",
        b"5;a=\"x\" ;b=y",
        b"5;a;b;c=d",
    ] {
        let input = [line, b"\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(
            whole(&input).map(|r| r.0),
            Ok(b"hello".to_vec()),
            "{:?}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(byte_by_byte(&input).map(|r| r.0), Ok(b"hello".to_vec()));
    }
}

#[test]
fn malformed_framing_is_rejected_with_its_reason() {
    let cases: &[(&[u8], HttpError)] = &[
        // size line
        (b"\r\n", HttpError::BadChunkSize),
        (b"+5\r\nhello\r\n0\r\n\r\n", HttpError::BadChunkSize),
        (b"-5\r\n", HttpError::BadChunkSize),
        (b"0x5\r\nhello\r\n0\r\n\r\n", HttpError::BadChunkSize),
        (b" 5\r\nhello\r\n0\r\n\r\n", HttpError::BadChunkSize),
        (b"5g\r\n", HttpError::BadChunkSize),
        (b"5\nhello\r\n0\r\n\r\n", HttpError::BareCrLf),
        (b"5\rhello\r\n", HttpError::BareCrLf),
        (b"5;a\nhello", HttpError::BareCrLf),
        // extensions
        (b"5 \r\nhello\r\n0\r\n\r\n", HttpError::BadChunkExt),
        (b"5;\r\nhello", HttpError::BadChunkExt),
        (b"5;=b\r\n", HttpError::BadChunkExt),
        (b"5;a=\r\n", HttpError::BadChunkExt),
        (b"5;a \r\n", HttpError::BadChunkExt),
        (b"5;a=b c\r\n", HttpError::BadChunkExt),
        (b"5;a=b \r\n", HttpError::BadChunkExt),
        (b"5;a=\"x\"y\r\n", HttpError::BadChunkExt),
        (b"5;a=\"x\r\n", HttpError::BadChunkExt),
        (b"5;a=\"\0\"\r\n", HttpError::BadChunkExt),
        (b"5;a(b)\r\n", HttpError::BadChunkExt),
        (b"5,a\r\n", HttpError::BadChunkSize),
        // after data
        (b"5\r\nhelloX\r\n", HttpError::BadChunk),
        (b"5\r\nhello\n0\r\n\r\n", HttpError::BareCrLf),
        (b"5\r\nhello\rX", HttpError::BareCrLf),
        (b"5\r\nhello\r\r\n", HttpError::BareCrLf),
        // last chunk and trailers
        (b"0\r\n\n", HttpError::BareCrLf),
        (b"0\r\n\rX", HttpError::BareCrLf),
        (b"0\r\nA: b\n\r\n", HttpError::BareCrLf),
        (b"0\r\nA: b\r\n c\r\n\r\n", HttpError::ObsFold),
        (b"0\r\n c: d\r\n\r\n", HttpError::ObsFold),
        (b"0\r\nA : b\r\n\r\n", HttpError::SpaceBeforeColon),
        (b"0\r\nA B: c\r\n\r\n", HttpError::BadHeaderName),
        (b"0\r\n: b\r\n\r\n", HttpError::BadHeaderName),
        (b"0\r\nA(: b\r\n\r\n", HttpError::BadHeaderName),
        (b"0\r\nAb\r\n\r\n", HttpError::MissingColon),
        (b"0\r\nA: b\0\r\n\r\n", HttpError::ControlChar),
        (b"0\r\nA\x01: b\r\n\r\n", HttpError::ControlChar),
    ];
    for (input, want) in cases {
        let name = String::from_utf8_lossy(input);
        assert_eq!(whole(input).map(|r| r.0), Err(*want), "{name:?}");
        assert_eq!(byte_by_byte(input).map(|r| r.0), Err(*want), "{name:?} byte by byte");
    }
}

#[test]
fn size_line_and_trailers_are_bounded() {
    let mut line = b"5;a=\"".to_vec();
    line.resize(MAX_SIZE_LINE, b'x');
    line.extend_from_slice(b"\"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(whole(&line).map(|r| r.0), Err(HttpError::BadChunkExt));
    // A size padded with zeros past the bound is a bad size, not extensions.
    let mut zeros = vec![b'0'; MAX_SIZE_LINE + 1];
    zeros.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(whole(&zeros).map(|r| r.0), Err(HttpError::BadChunkSize));

    let mut fits = b"0\r\nA: ".to_vec();
    fits.resize(MAX_TRAILERS - 4 + 3, b'v');
    fits.extend_from_slice(b"\r\n\r\n");
    assert_eq!(whole(&fits).map(|r| r.1), Ok(fits.len()));
    let mut over = b"0\r\nA: ".to_vec();
    over.resize(MAX_TRAILERS - 4 + 4, b'v');
    over.extend_from_slice(b"\r\n\r\n");
    assert_eq!(whole(&over).map(|r| r.0), Err(HttpError::TrailersTooLarge));
}

#[test]
fn chunk_header_encoding() {
    let enc = |n: usize| {
        let mut v = Vec::new();
        write_chunk_header(n, &mut v);
        String::from_utf8(v).expect("ascii")
    };
    assert_eq!(enc(1), "1\r\n");
    assert_eq!(enc(255), "ff\r\n");
    assert_eq!(enc(4096), "1000\r\n");
    assert_eq!(enc(usize::MAX), format!("{:x}\r\n", usize::MAX));
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    assert_eq!(CHUNK_END, b"\r\n");
}

/// Encodes `payload` as chunks of the given sizes with our helpers.
fn encode(payload: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        write_chunk_header(n, &mut out);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(CHUNK_END);
        rest = &rest[n..];
    }
    out.extend_from_slice(LAST_CHUNK);
    out
}

proptest! {
    #[test]
    fn round_trip_at_random_splits(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        cuts in proptest::collection::vec(0usize..1200, 0..12),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let body = encode(&payload, &sizes);
        let input = [&body[..], &tail].concat();
        prop_assert_eq!(run(&input, &cuts), Ok((payload, body.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(0usize..64, 0..8),
    ) {
        let _ = run(&input, &cuts);
    }
}

#[test]
fn whole_body_len_needs_the_whole_body() {
    let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n";
    assert_eq!(
        whole_body_len(&[&body[..], b"GET / HTTP/1.1\r\n"].concat()),
        Some(body.len())
    );
    for cut in 0..body.len() {
        assert_eq!(whole_body_len(&body[..cut]), None, "{cut} bytes");
    }
    assert_eq!(whole_body_len(b"zz\r\n"), None, "malformed");
}
