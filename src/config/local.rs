//! Routes Ringway answers itself: `redirect` (a `Location` built from the
//! request and the parts the route replaces) and `direct_response` (a fixed
//! status and body). Everything that goes into a head is validated here.

use super::compile::Problems;
use super::raw::{RawDirectResponse, RawRedirect};
use super::rewrite::{valid_authority, valid_path};
use super::snapshot::{DirectResponse, HostPattern, Match, PathPattern, Redirect, RedirectPath};
use toml::Spanned;

/// The largest body a direct response may carry: it is held in every
/// snapshot and written for each request.
const MAX_DIRECT_BODY: usize = 64 * 1024;

/// `matched`: what the route matches, and `scheme`: what the listener's
/// requests come with, to tell a redirect that changes nothing (and would
/// send clients round for ever).
pub(super) fn compile_redirect(
    r: &Spanned<RawRedirect>,
    matched: &Match,
    scheme: &str,
    p: &mut Problems,
) -> Option<Redirect> {
    let path = &matched.path;
    let raw = r.get_ref();
    let mut ok = true;
    let mut check = |good: bool, span: std::ops::Range<usize>, message: String, p: &mut Problems| {
        if !good {
            p.at(span, message);
            ok = false;
        }
    };
    let status = *raw.status.get_ref();
    check(
        [301, 302, 303, 307, 308].contains(&status),
        raw.status.span(),
        format!("redirect status {status} must be 301, 302, 303, 307 or 308"),
        p,
    );
    if let Some(scheme) = &raw.scheme {
        check(
            ["http", "https"].contains(&scheme.get_ref().as_str()),
            scheme.span(),
            format!("redirect scheme {:?} must be \"http\" or \"https\"", scheme.get_ref()),
            p,
        );
    }
    if let Some(host) = &raw.host {
        check(
            valid_authority(host.get_ref()),
            host.span(),
            format!(
                "redirect host {:?} must be a host name or IP address, with an optional port",
                host.get_ref()
            ),
            p,
        );
    }
    if let Some(port) = &raw.port {
        check(
            *port.get_ref() > 0,
            port.span(),
            "redirect port must be 1 to 65535".to_string(),
            p,
        );
    }
    let redirect_path = match (&raw.path, &raw.path_prefix) {
        (Some(_), Some(prefix)) => {
            check(
                false,
                prefix.span(),
                "a redirect has `path` or `path_prefix`, not both".to_string(),
                p,
            );
            RedirectPath::Keep
        }
        (Some(whole), None) => {
            check(
                valid_path(whole.get_ref()),
                whole.span(),
                path_problem("path", whole.get_ref()),
                p,
            );
            RedirectPath::Replace(whole.get_ref().clone())
        }
        (None, Some(prefix)) => match path {
            PathPattern::Prefix(matched) => {
                check(
                    valid_path(prefix.get_ref()),
                    prefix.span(),
                    path_problem("path_prefix", prefix.get_ref()),
                    p,
                );
                RedirectPath::Prefix {
                    matched: matched.clone(),
                    replacement: prefix.get_ref().clone(),
                }
            }
            _ => {
                check(
                    false,
                    prefix.span(),
                    "redirect.path_prefix replaces the prefix a route matched: it needs `match.path_prefix`"
                        .to_string(),
                    p,
                );
                RedirectPath::Keep
            }
        },
        (None, None) => RedirectPath::Keep,
    };
    let changes_scheme = raw.scheme.as_ref().is_some_and(|s| s.get_ref() != scheme);
    // The path or host the route matches exactly, written again, is no
    // change for the requests that match it.
    let changes_path = match &redirect_path {
        RedirectPath::Keep => false,
        RedirectPath::Replace(whole) => !matches!(path, PathPattern::Exact(exact) if exact == whole),
        RedirectPath::Prefix { matched, replacement } => matched != replacement,
    };
    let changes_host = raw.host.as_ref().is_some_and(|host| {
        // In the spelling the route keeps its host in: lowercase, without
        // a trailing dot, an IPv6 literal canonical.
        let lower = host.get_ref().to_ascii_lowercase();
        let host =
            crate::http::ipv6_literal(&lower).unwrap_or_else(|| lower.strip_suffix('.').unwrap_or(&lower).to_string());
        !matches!(&matched.host, Some(HostPattern::Exact(exact)) if host == *exact)
    });
    let changes = changes_scheme || changes_host || raw.port.is_some() || changes_path || raw.strip_query;
    check(
        changes,
        r.span(),
        "this redirect sends clients to the URL they asked for: give a scheme, host, port, path or path_prefix that differs, or strip_query"
            .to_string(),
        p,
    );
    ok.then(|| Redirect {
        status,
        scheme: raw.scheme.as_ref().map(|s| s.get_ref().clone()),
        host: raw.host.as_ref().map(|h| h.get_ref().clone()),
        port: raw.port.as_ref().map(|port| *port.get_ref()),
        path: redirect_path,
        strip_query: raw.strip_query,
    })
}

fn path_problem(key: &str, text: &str) -> String {
    format!("redirect.{key} {text:?} must start with '/' and hold only visible ASCII without '?' or '#'")
}

pub(super) fn compile_direct(d: &Spanned<RawDirectResponse>, p: &mut Problems) -> Option<DirectResponse> {
    let raw = d.get_ref();
    let status = *raw.status.get_ref();
    let mut ok = true;
    // 1xx, 204 and 304 carry no body; a direct response always may.
    if !(200..=599).contains(&status) || status == 204 || status == 304 {
        p.at(
            raw.status.span(),
            format!("direct_response status {status} must be 200 to 599, and not 204 or 304"),
        );
        ok = false;
    }
    if raw.body.len() > MAX_DIRECT_BODY {
        p.at(
            d.span(),
            format!("direct_response body is {} bytes; at most 64 KiB", raw.body.len()),
        );
        ok = false;
    }
    let content_type = match &raw.content_type {
        Some(t) => {
            let text = t.get_ref();
            let clean = !text.is_empty() && text.bytes().all(|b| (0x20..0x7f).contains(&b)) && text.trim() == text;
            if !clean {
                p.at(
                    t.span(),
                    format!("direct_response content_type {text:?} must be visible ASCII such as \"application/json\""),
                );
                ok = false;
            }
            text.clone()
        }
        None => "text/plain".to_string(),
    };
    ok.then(|| DirectResponse {
        status,
        body: raw.body.clone().into_bytes(),
        content_type,
    })
}
