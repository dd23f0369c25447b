//! Plain option structs for a load run and for `serve`, plus the small text
//! formats they are built from: durations (`250ms`, `2s`, `1m`) and request
//! mix files (`weight path [name: value]...` per line).

use std::net::SocketAddr;
use std::time::Duration;

/// One weighted entry of a request mix: a path and extra headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MixEntry {
    /// Relative share of requests that use this entry.
    pub weight: u32,
    /// Request target, starting with `/`.
    pub path: String,
    /// Headers added to (or replacing same-named) `-H` headers.
    pub headers: Vec<(String, String)>,
}

/// What to load and how; see `ringway-load --help` for the meaning of each.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// `http://host:port/path`; the host is resolved once before the run.
    pub url: String,
    /// Connections in total, spread over the threads.
    pub connections: usize,
    /// Threads, one monoio runtime each (capped at `connections`).
    pub threads: usize,
    /// How long to record (ignored when `requests` is set).
    pub duration: Duration,
    /// Stop after this many recorded requests instead of after `duration`.
    pub requests: Option<u64>,
    /// Open loop at this total rate (requests per second); closed loop when `None`.
    pub rate: Option<f64>,
    /// Extra request headers, sent on every request.
    pub headers: Vec<(String, String)>,
    /// Request method.
    pub method: String,
    /// Request body, sent with its Content-Length (also 0 for POST, PUT and
    /// PATCH).
    pub body: Vec<u8>,
    /// Per-request (and per-connect) timeout.
    pub timeout: Duration,
    /// Load sent before recording starts.
    pub warmup: Duration,
    /// Pin thread `i` to `cpus[i % cpus.len()]`; no pinning when empty.
    pub cpus: Vec<usize>,
    /// Weighted paths/headers to cycle through; the URL's path when empty.
    pub mix: Vec<MixEntry>,
    /// Count responses by the value of this response header.
    pub count_header: Option<String>,
    /// Print a progress line on stderr each second.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            connections: 10,
            threads: 2,
            duration: Duration::from_secs(10),
            requests: None,
            rate: None,
            headers: Vec::new(),
            method: "GET".into(),
            body: Vec::new(),
            timeout: Duration::from_secs(2),
            warmup: Duration::ZERO,
            cpus: Vec::new(),
            mix: Vec::new(),
            count_header: None,
            progress: false,
        }
    }
}

/// The fixed-response upstream served by `ringway-load serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Listen address; port 0 picks a free port (see `ServeHandle::local_addr`).
    pub address: SocketAddr,
    /// Response body length in bytes.
    pub body_size: usize,
    /// Response status code (200..=599).
    pub status: u16,
    /// Answer each request this long after it was read (requests read
    /// together, pipelined, are answered together).
    pub delay: Duration,
    /// Threads, one monoio runtime and one SO_REUSEPORT listener each.
    pub threads: usize,
    /// Adds `x-served-by: NAME` to every response.
    pub name: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 9000)),
            body_size: 13,
            status: 200,
            delay: Duration::ZERO,
            threads: 1,
            name: None,
        }
    }
}

impl ServeOptions {
    /// A one-thread upstream on a free loopback port that names itself in
    /// `x-served-by`: the usual upstream of a test, a demo or a benchmark.
    pub fn named(name: &str) -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: Some(name.to_string()),
            ..Self::default()
        }
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`, `10us`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?} (expected e.g. 250ms, 2s, 1m)"))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (use us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| *d <= LONGEST_DURATION)
        .ok_or_else(|| format!("duration out of range: {text:?} (at most 365 days)"))
}

/// The longest duration taken: far beyond any run, and within what the
/// runtime's timer and `Instant` arithmetic hold.
const LONGEST_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whether `name` can be a header name: a token (RFC 9110 §5.6.2).
pub fn is_header_name(name: &str) -> bool {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    !name.is_empty() && name.chars().all(token)
}

/// Splits `name: value`, checking the name is a token and neither part
/// could inject another header line.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("bad header {text:?} (expected \"name: value\")"))?;
    let name = name.trim();
    let value = value.trim();
    if !is_header_name(name) {
        return Err(format!("bad header name in {text:?}"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header value may not contain CR or LF: {text:?}"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// A header to send with every request (`-H`, or a mix entry's): any but
/// the two that frame the body, which follows `--body` (sent with its
/// length). Given by hand, they could disagree with the body sent, and the
/// server would read the rest as another request.
pub fn parse_request_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = parse_header(text)?;
    if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
        return Err(format!(
            "{name} is not taken: the body is --body's, sent with its Content-Length"
        ));
    }
    Ok((name, value))
}

/// Parses a mix file: one `weight path [name: value]...` entry per line;
/// blank lines and lines starting with `#` are skipped. In the header part a
/// word ending in `:` starts a new header and the words after it are its value.
pub fn parse_mix(text: &str) -> Result<Vec<MixEntry>, String> {
    let mut entries = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: &str| format!("mix line {}: {msg}", no + 1);
        let mut words = line.split_whitespace();
        let weight = words
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .ok_or_else(|| at("expected a whole-number weight first"))?;
        let path = words.next().ok_or_else(|| at("expected a path after the weight"))?;
        if !path.starts_with('/') || path.contains(|c: char| c.is_ascii_control()) {
            return Err(at("the path must start with '/'"));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut current: Option<(String, String)> = None;
        for word in words {
            if let Some(name) = word.strip_suffix(':') {
                if let Some(done) = current.take() {
                    headers.push(done);
                }
                current = Some((name.to_string(), String::new()));
            } else if let Some((_, value)) = &mut current {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(word);
            } else {
                return Err(at("headers must look like \"name: value\""));
            }
        }
        headers.extend(current);
        let headers = headers
            .into_iter()
            .map(|(n, v)| parse_request_header(&format!("{n}: {v}")).map_err(|e| at(&e)))
            .collect::<Result<Vec<_>, _>>()?;
        entries.push(MixEntry {
            weight,
            path: path.to_string(),
            headers,
        });
    }
    if entries.iter().all(|e| e.weight == 0) {
        return Err("the mix has no entry with a weight above 0".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("8760h").is_ok(), "365 days");
        assert!(parse_duration("8761h").is_err(), "past what timers hold");
        assert!(parse_duration("10000000000000000000s").is_err());
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(parse_header("X-Canary:  1 "), Ok(("X-Canary".into(), "1".into())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("x: a\r\nevil: 1").is_err());
        // The body's framing is --body's alone.
        assert!(parse_request_header("Content-Length: 3").is_err());
        assert!(parse_request_header("transfer-encoding: chunked").is_err());
        assert!(parse_mix("1 / Content-Length: 3").is_err());
        assert_eq!(parse_request_header("x-a: 1"), Ok(("x-a".into(), "1".into())));
    }

    #[test]
    fn mix_files() {
        let mix = parse_mix("# canary\n90 /api/ x-canary: 0\n\n10 /api/v2 x-canary: 1 accept: text/plain, */*\n")
            .expect("valid mix");
        assert_eq!(mix.len(), 2);
        assert_eq!(mix[0].weight, 90);
        assert_eq!(mix[1].path, "/api/v2");
        assert_eq!(
            mix[1].headers,
            vec![
                ("x-canary".into(), "1".into()),
                ("accept".into(), "text/plain, */*".into())
            ]
        );
        assert!(parse_mix("x /a").is_err());
        assert!(parse_mix("1 a").is_err());
        assert!(parse_mix("1 /a value-without-name").is_err());
        assert!(parse_mix("0 /a").is_err());
    }
}
