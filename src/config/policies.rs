//! Compiling the policy sections of a cluster or route (health checks,
//! outlier ejection, circuit breakers, rate limits, retries): each checks its
//! values, reports problems at their spans, and yields the snapshot's form.

use super::compile::{is_token_byte, Problems};
use super::snapshot::*;
use toml::Spanned;

pub(super) fn compile_outlier(o: &crate::config::raw::RawOutlier, p: &mut Problems) -> Option<Outlier> {
    if *o.max_ejection_percent.get_ref() > 100 {
        p.at(
            o.max_ejection_percent.span(),
            "max_ejection_percent must be at most 100",
        );
        return None;
    }
    Some(Outlier {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_connect_failures: o.consecutive_connect_failures,
        base_ejection: o.base_ejection.0,
        max_ejection: o.max_ejection.0.max(o.base_ejection.0),
        max_ejection_percent: *o.max_ejection_percent.get_ref(),
    })
}

pub(super) fn compile_breaker(b: &crate::config::raw::RawCircuitBreaker, p: &mut Problems) -> Option<CircuitBreaker> {
    let mut ok = true;
    let endpoint = match (&b.failure_ratio, b.consecutive_failures) {
        (None, None) => None,
        (ratio, consecutive) => {
            let failure_ratio = ratio.as_ref().map_or(1.1, |r| *r.get_ref());
            if let Some(r) = ratio {
                if !(0.0..=1.0).contains(r.get_ref()) || *r.get_ref() == 0.0 {
                    p.at(r.span(), "failure_ratio must be above 0 and at most 1");
                    ok = false;
                }
            }
            Some(EndpointBreaker {
                failure_ratio,
                min_requests: b.min_requests.max(1),
                window: b.window.0,
                consecutive_failures: consecutive.unwrap_or(0),
                open_for: b.open_for.0,
                probes: b.probes.max(1),
            })
        }
    };
    let caps = [
        ("max_connections", &b.max_connections),
        ("max_pending", &b.max_pending),
        ("max_requests", &b.max_requests),
    ];
    for (name, cap) in caps {
        if *cap.get_ref() == 0 {
            p.at(cap.span(), format!("circuit_breaker {name} must be at least 1"));
            ok = false;
        }
    }
    ok.then_some(CircuitBreaker {
        max_connections: *b.max_connections.get_ref(),
        max_pending: *b.max_pending.get_ref(),
        max_requests: *b.max_requests.get_ref(),
        max_retries: b.max_retries,
        endpoint,
    })
}

pub(super) fn compile_rate_limit(r: &crate::config::raw::RawRateLimit, p: &mut Problems) -> Option<RateLimit> {
    // Kept in thousandths of a request a second.
    let rps = *r.rps.get_ref();
    if !(0.001..=f64::from(u32::MAX)).contains(&rps) {
        p.at(
            r.rps.span(),
            format!(
                "rate_limit rps must be from 0.001 (one request in 1000 s) to {}",
                u32::MAX
            ),
        );
        return None;
    }
    let milli_rps = (rps * 1000.0).round() as u64;
    let key = match r.key.as_ref().map(|k| k.get_ref().as_str()) {
        None => RateKey::All,
        Some("client_ip") => RateKey::ClientIp,
        Some(other) => match other.strip_prefix("header:") {
            Some(name) if !name.is_empty() && name.bytes().all(is_token_byte) => {
                RateKey::Header(name.to_ascii_lowercase())
            }
            _ => {
                let span = r.key.as_ref().map(|k| k.span()).unwrap_or(0..0);
                p.at(
                    span,
                    format!("rate_limit key {other:?}: expected \"client_ip\" or \"header:NAME\""),
                );
                return None;
            }
        },
    };
    if let Some(burst) = r.burst.as_ref().filter(|b| *b.get_ref() == 0) {
        p.at(burst.span(), "rate_limit burst must be at least 1");
        return None;
    }
    if *r.max_keys.get_ref() == 0 {
        p.at(r.max_keys.span(), "rate_limit max_keys must be at least 1");
        return None;
    }
    // A second's worth by default, and at least one request.
    let burst = r.burst.as_ref().map_or(rps.ceil() as u32, |b| *b.get_ref());
    // A bucket that takes longer than a year to fill is no limit anyone
    // means, and its time would run past what the buckets count in.
    const YEAR_SECS: f64 = 365.0 * 86_400.0;
    if f64::from(burst) / rps > YEAR_SECS {
        let span = r.burst.as_ref().map_or_else(|| r.rps.span(), |b| b.span());
        p.at(
            span,
            format!("rate_limit burst {burst} at rps {rps} takes over a year to refill"),
        );
        return None;
    }
    Some(RateLimit {
        milli_rps,
        burst,
        key,
        max_keys: *r.max_keys.get_ref(),
    })
}

pub(super) fn compile_retry(r: &crate::config::raw::RawRetry, p: &mut Problems) -> Option<Retry> {
    if !(1..=10).contains(r.attempts.get_ref()) {
        p.at(
            r.attempts.span(),
            "retry attempts (tries in all, the first included) must be between 1 and 10",
        );
        return None;
    }
    if r.on.get_ref().is_empty() {
        p.at(
            r.on.span(),
            "retry.on is empty: nothing would be retried (leave it out for the default)",
        );
        return None;
    }
    // Checked by the parser the data path uses, so that what is accepted
    // here is what it retries on.
    if let Err(e) = crate::resilience::RetryOn::parse(r.on.get_ref().iter().map(String::as_str)) {
        p.at(r.on.span(), e.to_string());
        return None;
    }
    Some(Retry {
        attempts: *r.attempts.get_ref(),
        on: r.on.get_ref().clone(),
        per_try_timeout: r.per_try_timeout.map(|d| d.0),
        backoff: r.backoff.0,
        max_backoff: r.max_backoff.0.max(r.backoff.0),
        allow_non_idempotent: r.allow_non_idempotent,
        max_replay_bytes: r.max_replay_bytes.0,
    })
}

pub(super) fn compile_fault(f: &Spanned<crate::config::raw::RawFault>, p: &mut Problems) -> Option<Fault> {
    let raw = f.get_ref();
    if raw.delay.is_none() && raw.abort.is_none() {
        p.at(f.span(), "fault needs `delay`, `abort` or both");
        return None;
    }
    let mut ok = true;
    let mut percent = |v: &Spanned<f64>, p: &mut Problems| {
        ok &= valid_percent(v, "fault", p);
        *v.get_ref()
    };
    let delay = raw.delay.as_ref().map(|d| {
        let share = percent(&d.get_ref().percent, p);
        (d.get_ref().duration.0, share, d.span())
    });
    let abort = raw
        .abort
        .as_ref()
        .map(|a| (*a.status.get_ref(), percent(&a.percent, p), a.status.span()));
    if let Some((duration, _, span)) = &delay {
        if duration.is_zero() {
            p.at(span.clone(), "fault delay duration must be above zero");
            ok = false;
        }
    }
    if let Some((status, _, span)) = &abort {
        if !(400..=599).contains(status) {
            p.at(
                span.clone(),
                format!("fault abort status {status} must be an error status, 400 to 599"),
            );
            ok = false;
        }
    }
    ok.then(|| Fault {
        delay: delay.map(|(d, share, _)| (d, share)),
        abort: abort.map(|(s, share, _)| (s, share)),
    })
}

/// A share of requests, 0 to 100; a problem recorded when it is not.
pub(super) fn valid_percent(v: &Spanned<f64>, what: &str, p: &mut Problems) -> bool {
    let x = *v.get_ref();
    let ok = (0.0..=100.0).contains(&x) && (x == 0.0 || x >= 0.0001);
    if !ok {
        p.at(
            v.span(),
            format!("{what} percent {x} must be 0, or between 0.0001 (one in a million) and 100"),
        );
    }
    ok
}

/// Every problem is reported, not only the first, each at its own key.
pub(super) fn compile_health_check(h: &crate::config::raw::RawHealthCheck, p: &mut Problems) -> Option<HealthCheck> {
    let before = p.len();
    let http_path = match h.protocol.get_ref().as_str() {
        "http" => match &h.path {
            None => Some("/".to_string()),
            Some(path)
                if !path.get_ref().starts_with('/') || path.get_ref().bytes().any(|b| b <= b' ' || b == 0x7f) =>
            {
                p.at(
                    path.span(),
                    "health_check path must start with '/' and contain no spaces or controls",
                );
                None
            }
            Some(path) => Some(path.get_ref().clone()),
        },
        "tcp" => {
            // A tcp check only connects: what an http check sends or
            // expects would be quietly ignored.
            let http_only = [
                ("path", h.path.as_ref().map(Spanned::span)),
                ("host", h.host.as_ref().map(Spanned::span)),
                ("expected_statuses", h.expected_statuses.as_ref().map(Spanned::span)),
            ];
            for (key, span) in http_only.into_iter().filter_map(|(key, span)| Some((key, span?))) {
                p.at(
                    span,
                    format!("a tcp health check only connects: {key} is for http checks"),
                );
            }
            // No request: the check is the connect.
            None
        }
        other => {
            p.at(
                h.protocol.span(),
                format!("health_check protocol {other:?}: expected \"http\" or \"tcp\""),
            );
            None
        }
    };
    // Defaults are above zero: a zero was written, so its span is real.
    for (key, value) in [("interval", &h.interval), ("timeout", &h.timeout)] {
        if value.get_ref().0.is_zero() {
            p.at(value.span(), format!("health_check {key} must be above zero"));
        }
    }
    for (key, value) in [
        ("unhealthy_threshold", &h.unhealthy_threshold),
        ("healthy_threshold", &h.healthy_threshold),
    ] {
        if *value.get_ref() == 0 {
            p.at(value.span(), format!("health_check {key} must be at least 1"));
        }
    }
    let statuses = match &h.expected_statuses {
        None => vec![200],
        Some(given) => {
            let statuses = given.get_ref();
            if statuses.is_empty() || statuses.iter().any(|s| !(100..=599).contains(s)) {
                p.at(given.span(), "expected_statuses must list HTTP status codes (100-599)");
            }
            statuses.clone()
        }
    };
    if let Some(host) = &h.host {
        // Written into every check's request head as the Host field.
        if !crate::http::valid_authority(host.get_ref().as_bytes(), false) {
            p.at(
                host.span(),
                format!("health_check host {:?} is not a host[:port]", host.get_ref()),
            );
        }
    }
    if p.len() > before {
        return None;
    }
    Some(HealthCheck {
        http_path,
        host: h.host.as_ref().map(|host| host.get_ref().clone()),
        interval: h.interval.get_ref().0,
        timeout: h.timeout.get_ref().0,
        jitter: h.jitter.map(|d| d.0).unwrap_or_default(),
        unhealthy_threshold: *h.unhealthy_threshold.get_ref(),
        healthy_threshold: *h.healthy_threshold.get_ref(),
        expected_statuses: statuses,
    })
}
