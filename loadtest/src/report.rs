//! Results of a load run: the per-thread tallies that connection loops
//! update, their merge into a [`Report`], and the two ways to print it
//! (a human summary and exactly one JSON object).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks, in microseconds (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Label used in `header_counts` for responses without the counted header.
pub const MISSING_HEADER: &str = "(missing)";

/// Failed requests by kind. Responses with any status are not errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Could not connect (refused, unreachable, connect timeout).
    pub connect: u64,
    /// No complete response within the timeout.
    pub timeout: u64,
    /// I/O error or the peer closed before the response was complete.
    pub reset: u64,
    /// The response could not be parsed.
    pub parse: u64,
}

impl ErrorCounts {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.parse
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.parse += o.parse;
    }
}

/// Kinds of failed requests, as counted in [`ErrorCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// See [`ErrorCounts::connect`].
    Connect,
    /// See [`ErrorCounts::timeout`].
    Timeout,
    /// See [`ErrorCounts::reset`].
    Reset,
    /// See [`ErrorCounts::parse`].
    Parse,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

/// One thread's tallies; merged into a [`Report`] at the end.
#[derive(Debug)]
pub(crate) struct Stats {
    pub hist: Histogram<u64>,
    pub requests: u64,
    pub errors: ErrorCounts,
    /// Index = status code (0..=999).
    pub status: Vec<u64>,
    pub header_counts: HashMap<Vec<u8>, u64>,
    pub reconnects: u64,
}

/// A latency histogram: 1 µs to 60 s, 3 significant figures.
pub(crate) fn new_histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(io::Error::other)
}

impl Stats {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            hist: new_histogram()?,
            requests: 0,
            errors: ErrorCounts::default(),
            status: vec![0; 1000],
            header_counts: HashMap::new(),
            reconnects: 0,
        })
    }

    /// Records one complete response.
    pub fn response(&mut self, status: u16, latency: Duration, counted: Option<Option<&[u8]>>) {
        self.requests += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.min(MAX_LATENCY_US));
        if let Some(slot) = self.status.get_mut(usize::from(status)) {
            *slot += 1;
        }
        if let Some(value) = counted {
            let key = value.unwrap_or(MISSING_HEADER.as_bytes());
            match self.header_counts.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    self.header_counts.insert(key.to_vec(), 1);
                }
            }
        }
    }

    /// Records one failed request.
    pub fn error(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.errors.connect += 1,
            ErrorKind::Timeout => self.errors.timeout += 1,
            ErrorKind::Reset => self.errors.reset += 1,
            ErrorKind::Parse => self.errors.parse += 1,
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Complete responses (any status) recorded.
    pub requests: u64,
    /// Recording time: from the end of warmup until the last connection finished.
    pub duration: Duration,
    /// Failed requests by kind.
    pub errors: ErrorCounts,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Responses by the value of the counted header (when one was given).
    pub header_counts: Option<BTreeMap<String, u64>>,
    /// Connections re-opened after the server closed one or after an error.
    pub reconnects: u64,
    /// Latency of every recorded response, in microseconds.
    pub histogram: Histogram<u64>,
}

impl Report {
    pub(crate) fn merge(parts: Vec<Stats>, duration: Duration, counting: bool) -> io::Result<Report> {
        let mut report = Report {
            requests: 0,
            duration,
            errors: ErrorCounts::default(),
            status: BTreeMap::new(),
            header_counts: counting.then(BTreeMap::new),
            reconnects: 0,
            histogram: new_histogram()?,
        };
        for s in parts {
            report.requests += s.requests;
            report.errors.add(&s.errors);
            report.reconnects += s.reconnects;
            report.histogram.add(&s.hist).map_err(io::Error::other)?;
            for (code, &n) in s.status.iter().enumerate() {
                if n > 0 {
                    *report.status.entry(code as u16).or_default() += n;
                }
            }
            if let Some(counts) = &mut report.header_counts {
                for (k, n) in s.header_counts {
                    *counts.entry(String::from_utf8_lossy(&k).into_owned()).or_default() += n;
                }
            }
        }
        Ok(report)
    }

    /// Responses per second over [`Report::duration`].
    pub fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency percentiles (all zero when nothing was recorded).
    pub fn latency(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }

    /// Responses whose status is not 2xx/3xx, by class (4 → 4xx, 5 → 5xx...).
    pub fn bad_status(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for (&code, &n) in &self.status {
            if !(200..400).contains(&code) {
                *out.entry(code / 100).or_default() += n;
            }
        }
        out
    }

    /// The human-readable summary printed on stdout.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = self.latency();
        let _ = writeln!(
            s,
            "  {} requests in {:.2}s, {:.1} req/s",
            self.requests,
            self.duration.as_secs_f64(),
            self.rps()
        );
        let e = &self.errors;
        let mut errs = format!(
            "connect {}, timeout {}, reset {}, parse {}",
            e.connect, e.timeout, e.reset, e.parse
        );
        for (class, n) in self.bad_status() {
            let _ = write!(errs, ", status {class}xx {n}");
        }
        let _ = writeln!(s, "  errors:     {errs}");
        let status: Vec<String> = self.status.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let status = if status.is_empty() {
            "none".to_string()
        } else {
            status.join(", ")
        };
        let _ = writeln!(s, "  status:     {status}");
        if let Some(counts) = &self.header_counts {
            let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
            let _ = writeln!(s, "  by header:  {}", counts.join(", "));
        }
        let _ = writeln!(s, "  reconnects: {}", self.reconnects);
        if self.histogram.is_empty() {
            let _ = writeln!(s, "  latency:    n/a (no responses)");
            return s;
        }
        let _ = writeln!(
            s,
            "  latency:    p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.p9999),
            fmt_us(l.max)
        );
        s
    }

    /// Exactly one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let l = self.latency();
        let e = &self.errors;
        let mut s = format!(
            "{{\"requests\":{},\"duration_s\":{:.6},\"rps\":{:.2},\"errors\":{{\"connect\":{},\"timeout\":{},\"reset\":{},\"parse\":{}}},\"status\":{{",
            self.requests,
            self.duration.as_secs_f64(),
            self.rps(),
            e.connect,
            e.timeout,
            e.reset,
            e.parse
        );
        let status: Vec<String> = self.status.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect();
        s.push_str(&status.join(","));
        let _ = write!(
            s,
            "}},\"latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"p9999\":{},\"max\":{}}},\"reconnects\":{}",
            l.p50, l.p90, l.p99, l.p999, l.p9999, l.max, self.reconnects
        );
        if let Some(counts) = &self.header_counts {
            let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{}:{n}", json_string(v))).collect();
            let _ = write!(s, ",\"header_counts\":{{{}}}", counts.join(","));
        }
        s.push('}');
        s
    }
}

/// Formats microseconds with a readable unit.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us}us"),
        10_000..=9_999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// A JSON string literal for arbitrary text.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(counting: bool) -> Report {
        let mut a = Stats::new().expect("histogram");
        let mut b = Stats::new().expect("histogram");
        let v1: &[u8] = b"v\"1";
        for i in 0..90 {
            a.response(200, Duration::from_micros(100 + i), Some(Some(v1)));
        }
        for _ in 0..10 {
            b.response(503, Duration::from_millis(20), Some(None));
        }
        b.error(ErrorKind::Timeout);
        b.reconnects = 2;
        Report::merge(vec![a, b], Duration::from_secs(2), counting).expect("merge")
    }

    #[test]
    fn json_has_the_contract_keys() {
        let json = sample(true).to_json();
        assert!(json.starts_with("{\"requests\":100,\"duration_s\":2.000000,\"rps\":50.00,"));
        assert!(json.contains(
            "\"errors\":{\"connect\":0,\"timeout\":1,\"reset\":0,\"parse\":0},\"status\":{\"200\":90,\"503\":10}"
        ));
        assert!(json.contains("\"latency_us\":{\"p50\":149,\"p90\":189,\"p99\":20015,"));
        assert!(json.contains("\"max\":20015},\"reconnects\":2"));
        assert!(json.ends_with(",\"header_counts\":{\"(missing)\":10,\"v\\\"1\":90}}"));
        assert!(!sample(false).to_json().contains("header_counts"));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn summary_shows_bad_statuses_as_errors() {
        let text = sample(true).summary();
        assert!(text.contains("100 requests in 2.00s, 50.0 req/s"));
        assert!(text.contains("timeout 1, reset 0, parse 0, status 5xx 10"));
        assert!(text.contains("status:     200 90, 503 10"));
        assert!(text.contains("p50 149us  p90 189us  p99 20.02ms"));
    }

    #[test]
    fn json_escapes_control_characters() {
        assert_eq!(json_string("a\u{1}\\\"é"), "\"a\\u0001\\\\\\\"é\"");
    }
}
