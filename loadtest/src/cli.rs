//! Command-line parsing for `ringway-load` and `ringway-load serve`.
//!
//! Hand-written (the grammar is small and a parser crate would add more
//! compile time than code): short options take their value attached or as
//! the next word (`-c64`, `-c 64`), long ones with `=` or a space.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::options::{
    is_header_name, parse_duration, parse_header, parse_mix, parse_request_header, LoadOptions, ServeOptions,
};
use crate::runtime::MAX_CPUS;

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: ringway-load [options] URL
       ringway-load serve [serve options]

Load options:
  -c, --connections N     connections in total (default 10)
  -t, --threads N         threads, one io_uring runtime each (default 2)
  -d, --duration D        how long to record, e.g. 10s, 1m (default 10s)
  -n, --requests N        stop after N requests instead of a duration
  -R, --rate R            open loop at R requests/s in total, latency measured
                          from the intended send time (default: closed loop)
  -H, --header 'k: v'     add a request header (repeatable; not Content-Length
                          or Transfer-Encoding, which follow --body)
  -m, --method M          request method (default GET)
      --body FILE         send FILE as the request body, with its Content-Length
                          (POST, PUT and PATCH send Content-Length: 0 without one)
      --timeout D         per-request timeout (default 2s; with -R, from the
                          intended send time)
      --warmup D          send load for D before recording (default 0s)
      --cpus LIST         pin threads to these cores, e.g. 1,2 or 2-5 (default:
                          unpinned, placed by the scheduler)
      --mix FILE          cycle through weighted paths: lines of
                          'weight path [name: value]...'
      --count-header NAME count responses by the value of this header
      --json              print one JSON object instead of the summary
      --latency           accepted for wrk command lines; the latency
                          distribution is always printed
  -h, --help              print this help;  -V, --version  print the version
  Counts and rates take wrk's suffixes k (1000) and M (1000000): -c1k, -R 10k.
  While it runs, a progress line (rate, errors, p99 so far) is redrawn each
  second on stderr when stderr is a terminal, so stdout can be redirected.

Serve options:
      --address ADDR      listen address (default 127.0.0.1:9000)
      --body-size N       response body bytes (default 13)
      --status CODE       response status (default 200)
      --delay D           answer each request D after it was read; pipelined
                          requests read together are answered together
                          (default 0ms)
      --threads N         threads (default: the cores this process may use)
      --name NAME         add 'x-served-by: NAME' to every response

Ctrl-C (SIGINT) or SIGTERM stops a run early and prints what it measured so
far, as a complete run's; a second one ends the program at once.

Exit status: 0 when the run got at least one response (of any status), 1 when
it got none (or could not run), 2 for a bad command line.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a load test; `json` selects the JSON output.
    Load { opts: LoadOptions, json: bool },
    /// Run the fixed-response server.
    Serve(ServeOptions),
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

/// Walks the words of a command line, splitting options from their values.
struct Words {
    words: Vec<String>,
    next: usize,
    inline: Option<String>,
}

impl Words {
    /// The next option name (`-c`, `--rate`) or positional word.
    fn next_word(&mut self) -> Option<String> {
        let word = self.words.get(self.next)?.clone();
        self.next += 1;
        self.inline = None;
        if let Some(long) = word.strip_prefix("--") {
            if let Some((name, value)) = long.split_once('=') {
                self.inline = Some(value.to_string());
                return Some(format!("--{name}"));
            }
        } else if word.len() > 2 && word.starts_with('-') && word.is_char_boundary(2) {
            self.inline = Some(word[2..].to_string());
            return Some(word[..2].to_string());
        }
        Some(word)
    }

    fn value(&mut self, option: &str) -> Result<String, String> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        let v = self
            .words
            .get(self.next)
            .cloned()
            .ok_or_else(|| format!("option {option} needs a value"))?;
        self.next += 1;
        Ok(v)
    }

    /// Errors when a flag without a value was given one (`--json=1`, `-hx`).
    fn no_value(&mut self, option: &str) -> Result<(), String> {
        match self.inline.take() {
            Some(_) => Err(format!("option {option} takes no value")),
            None => Ok(()),
        }
    }
}

fn number<T: std::str::FromStr>(option: &str, text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("bad value {text:?} for {option}"))
}

/// Splits a wrk-style metric suffix off a count or rate: `k` (1000) or `M`
/// (1000000), in either case as wrk reads them.
fn metric(text: &str) -> (&str, u64) {
    let text = text.trim();
    match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1_000),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1_000_000),
        _ => (text, 1),
    }
}

/// A whole count of at least 1, such as `64`, `1k` or `2M`.
fn positive(option: &str, text: &str) -> Result<usize, String> {
    let (digits, scale) = metric(text);
    let bad = || format!("bad value {text:?} for {option}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(bad)?;
    match n {
        0 => Err(format!("{option} must be at least 1")),
        n => Ok(n),
    }
}

/// A rate in requests per second above zero, such as `2000`, `2.5k` or `1M`.
fn rate(option: &str, text: &str) -> Result<f64, String> {
    let (digits, scale) = metric(text);
    let rate = number::<f64>(option, digits)? * scale as f64;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("{option} must be a positive number"));
    }
    Ok(rate)
}

/// Parses `1,2` or `0-3,6` into core ids.
pub fn parse_cpus(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (number("--cpus", a)?, number("--cpus", b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("bad cpu range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number("--cpus", part)?),
        }
    }
    if cpus.is_empty() {
        return Err("--cpus needs at least one core".into());
    }
    if let Some(cpu) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
        return Err(format!("no cpu {cpu}: cpu ids go up to {}", MAX_CPUS - 1));
    }
    Ok(cpus)
}

fn read_file(option: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{option} {path}: {e}"))
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut words = Words {
        words: args.into_iter().collect(),
        next: 0,
        inline: None,
    };
    if words.words.first().map(String::as_str) == Some("serve") {
        words.next = 1;
        return parse_serve(&mut words);
    }
    let mut opts = LoadOptions::default();
    let (mut json, mut url, mut duration_given) = (false, None, false);
    while let Some(word) = words.next_word() {
        let w = word.as_str();
        match w {
            "-c" | "--connections" => opts.connections = positive(w, &words.value(w)?)?,
            "-t" | "--threads" => opts.threads = positive(w, &words.value(w)?)?,
            "-d" | "--duration" => {
                opts.duration = parse_duration(&words.value(w)?)?;
                duration_given = true;
            }
            "-n" | "--requests" => opts.requests = Some(positive(w, &words.value(w)?)? as u64),
            "-R" | "--rate" => opts.rate = Some(rate(w, &words.value(w)?)?),
            "-H" | "--header" => opts.headers.push(parse_request_header(&words.value(w)?)?),
            "-m" | "--method" => {
                let m = words.value(w)?;
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!".contains(&b)) {
                    return Err(format!("bad method {m:?}"));
                }
                opts.method = m;
            }
            "--body" => opts.body = read_file(w, &words.value(w)?)?,
            "--timeout" => opts.timeout = parse_duration(&words.value(w)?)?,
            "--warmup" => opts.warmup = parse_duration(&words.value(w)?)?,
            "--cpus" => opts.cpus = parse_cpus(&words.value(w)?)?,
            "--mix" => {
                let path = words.value(w)?;
                let text =
                    String::from_utf8(read_file(w, &path)?).map_err(|_| format!("--mix {path}: not UTF-8 text"))?;
                opts.mix = parse_mix(&text).map_err(|e| format!("--mix {path}: {e}"))?;
            }
            "--count-header" => {
                let name = words.value(w)?;
                if !is_header_name(&name) {
                    return Err(format!("--count-header: bad header name {name:?}"));
                }
                opts.count_header = Some(name);
            }
            "--json" => {
                words.no_value(w)?;
                json = true;
            }
            // wrk's flag for the latency distribution, which is always printed.
            "--latency" => words.no_value(w)?,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ if w.starts_with('-') && w.len() > 1 => return Err(format!("unknown option {w}")),
            _ if url.is_some() => return Err(format!("unexpected argument {w:?} (one URL only)")),
            _ => url = Some(word),
        }
    }
    if duration_given && opts.requests.is_some() {
        return Err("give either -d or -n, not both".into());
    }
    if opts.timeout.is_zero() {
        return Err("--timeout must be above zero".into());
    }
    if opts.duration.is_zero() && opts.requests.is_none() {
        return Err("--duration must be above zero".into());
    }
    opts.url = url.ok_or("missing URL (e.g. http://127.0.0.1:9000/)")?;
    opts.threads = opts.threads.min(opts.connections);
    Ok(Command::Load { opts, json })
}

fn parse_serve(words: &mut Words) -> Result<Command, String> {
    let mut opts = ServeOptions {
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        ..ServeOptions::default()
    };
    while let Some(word) = words.next_word() {
        let w = word.as_str();
        match w {
            "--address" => {
                let text = words.value(w)?;
                opts.address = match text.parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => text
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| format!("bad address {text:?} (expected e.g. 127.0.0.1:9000)"))?,
                };
            }
            "--body-size" => opts.body_size = number(w, &words.value(w)?)?,
            "--status" => {
                opts.status = number(w, &words.value(w)?)?;
                if !(200..=599).contains(&opts.status) {
                    return Err("--status must be between 200 and 599".into());
                }
            }
            "--delay" => opts.delay = parse_duration(&words.value(w)?)?,
            "--threads" => opts.threads = positive(w, &words.value(w)?)?,
            "--name" => {
                let name = words.value(w)?;
                parse_header(&format!("x-served-by: {name}"))?;
                opts.name = Some(name);
            }
            "-h" | "--help" => return Ok(Command::Help),
            _ => return Err(format!("unknown serve argument {w:?}")),
        }
    }
    Ok(Command::Serve(opts))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        parse_args(line.split_whitespace().map(String::from))
    }

    #[test]
    fn wrk_style_load_line() {
        let Ok(Command::Load { opts, json }) =
            parse("-t1 -c64 -d5s -R 2000 -H x-a:1 --timeout=500ms --json --cpus 1,3-4 http://127.0.0.1:9000/a")
        else {
            panic!("should parse");
        };
        assert!(json);
        assert_eq!((opts.threads, opts.connections), (1, 64));
        assert_eq!(opts.duration, Duration::from_secs(5));
        assert_eq!(opts.rate, Some(2000.0));
        assert_eq!(opts.headers, vec![("x-a".to_string(), "1".to_string())]);
        assert_eq!(opts.timeout, Duration::from_millis(500));
        assert_eq!(opts.cpus, vec![1, 3, 4]);
        assert_eq!(opts.url, "http://127.0.0.1:9000/a");
    }

    #[test]
    fn count_mode_and_errors() {
        let Ok(Command::Load { opts, json }) = parse("-n 2000 -c 4 -t 8 --warmup 1s http://h/") else {
            panic!("should parse");
        };
        assert!(!json);
        assert_eq!((opts.requests, opts.threads), (Some(2000), 4));
        assert_eq!(opts.warmup, Duration::from_secs(1));
        assert!(parse("-n 10 -d 1s http://h/").is_err());
        assert!(parse("-c 0 http://h/").is_err());
        assert!(parse("-c").is_err());
        assert!(parse("--bogus http://h/").is_err());
        assert!(parse("http://a/ http://b/").is_err());
        assert!(parse("-c 4").is_err());
        assert!(parse("-R -5 http://h/").is_err());
        assert!(parse("--cpus 0,1023 http://h/").is_ok());
        assert!(parse("--cpus 0,1024 http://h/").is_err());
        assert!(parse("--cpus 99999999999999999999 http://h/").is_err());
        assert_eq!(parse("--help"), Ok(Command::Help));
    }

    #[test]
    fn wrk_suffixes_and_latency_flag() {
        let Ok(Command::Load { opts, .. }) = parse("-c1k -t 2 -n 1M -R 2.5k --latency http://h/") else {
            panic!("should parse");
        };
        assert_eq!((opts.connections, opts.requests), (1000, Some(1_000_000)));
        assert_eq!(opts.rate, Some(2500.0));
        let Ok(Command::Load { opts, .. }) = parse("-c 2K -R 1m http://h/") else {
            panic!("should parse");
        };
        assert_eq!((opts.connections, opts.rate), (2000, Some(1e6)));
        for bad in [
            "-c k",
            "-c 1.5k",
            "-c +5",
            "-c 1x",
            "-c 0k",
            "-R 0k",
            "-R k",
            "-n 99999999999999M",
            "--latency=1",
        ] {
            assert!(parse(&format!("{bad} http://h/")).is_err(), "{bad}");
        }
    }

    #[test]
    fn serve_line() {
        let Ok(Command::Serve(o)) =
            parse("serve --address 127.0.0.1:0 --body-size 100 --status 503 --delay 5ms --threads 2 --name v2")
        else {
            panic!("should parse");
        };
        assert_eq!(o.address, "127.0.0.1:0".parse::<SocketAddr>().expect("addr"));
        assert_eq!((o.body_size, o.status, o.threads), (100, 503, 2));
        assert_eq!(o.delay, Duration::from_millis(5));
        assert_eq!(o.name.as_deref(), Some("v2"));
        assert!(parse("serve --status 99").is_err());
        assert!(parse("serve --address nowhere").is_err());
    }
}
