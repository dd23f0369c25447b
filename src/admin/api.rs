//! The admin API's routes and what each one does, independent of sockets: the
//! `AdminBackend` seam the running server implements, the route table, the
//! JSON endpoint-list body, and the responses. The HTTP framing (heads,
//! bodies, auth, limits, keep-alive) lives in `conn`; nothing here does I/O.

use crate::config::endpoint_list::{self, JsonEndpoint};
use std::borrow::Cow;
use std::sync::Arc;

/// What the admin endpoint needs from the running proxy. Every method is
/// called on an admin connection thread, never on a worker loop, so it may
/// block briefly (compile a config, resolve endpoint names).
pub trait AdminBackend: Send + Sync + 'static {
    /// True when every worker serves the current generation and no drain began.
    fn ready(&self) -> bool;
    /// The generation in force and the TOML text it was compiled from.
    fn config(&self) -> (u64, Arc<str>);
    /// Compile and publish a whole new config; the new generation, or why
    /// not with nothing changed.
    fn put_config(&self, toml: &str) -> Result<u64, ConfigRefused>;
    /// A config refused before it could be compiled (not text): counted as
    /// a failed reload like any other.
    fn count_unreadable_config(&self) {}
    /// Replace one cluster's endpoints; the new generation, or why not with
    /// nothing changed.
    fn put_endpoints(&self, cluster: &str, endpoints: Vec<JsonEndpoint>) -> Result<u64, EndpointsRefused>;
    /// Clusters, endpoints, health, ejection, breaker state, EWMA.
    fn clusters(&self) -> serde_json::Value;
    /// Prometheus text exposition (format 0.0.4) of the proxy's metrics.
    fn metrics(&self) -> String;
    /// Begin the graceful drain; returns without waiting for it.
    fn drain(&self);
}

/// Why a `PUT /config` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigRefused {
    /// 400: the errors, one `FILE:LINE:COL: message` per line.
    Invalid(String),
    /// 503: a drain began; the config in force is the last.
    Draining,
}

/// Why a `PUT /clusters/{name}/endpoints` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsRefused {
    /// 404: no cluster of that name.
    UnknownCluster,
    /// 503: a drain began; the config in force is the last.
    Draining,
    /// 409: the cluster's endpoints come from DNS or a file, not a list.
    Conflict(String),
    /// 400: what is wrong, each about the body's `Some(i)`-th endpoint (and
    /// then located there) or the list as a whole.
    Invalid(Vec<(Option<usize>, String)>),
}

/// The request methods the admin API knows; anything else gets a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Put,
    Post,
    Other,
}

impl Method {
    pub(crate) fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }
}

/// An admin path, matched without its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Ready,
    Config,
    Clusters,
    /// The cluster's name, percent-decoded (a config may name a cluster
    /// `a b` or `x/y`).
    Endpoints(Cow<'a, str>),
    Metrics,
    Drain,
}

/// `%XX` escapes decoded; None when one is malformed or the result is not
/// UTF-8.
fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let digit = |b: Option<u8>| char::from(b?).to_digit(16);
        let (high, low) = (digit(bytes.next())?, digit(bytes.next())?);
        out.push((high * 16 + low) as u8);
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

impl<'a> Route<'a> {
    pub(crate) fn parse(target: &'a str) -> Option<Route<'a>> {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        match path {
            "/ready" => Some(Route::Ready),
            "/config" => Some(Route::Config),
            "/clusters" => Some(Route::Clusters),
            "/metrics" => Some(Route::Metrics),
            "/drain" => Some(Route::Drain),
            _ => {
                let name = path.strip_prefix("/clusters/")?.strip_suffix("/endpoints")?;
                if name.is_empty() || name.contains('/') {
                    return None;
                }
                percent_decode(name).map(Route::Endpoints)
            }
        }
    }

    /// The `allow` header value: the methods this route answers.
    pub(crate) fn allow(&self) -> &'static str {
        match self {
            Route::Ready | Route::Clusters | Route::Metrics => "GET, HEAD",
            Route::Config => "GET, HEAD, PUT",
            Route::Endpoints(_) => "PUT",
            Route::Drain => "POST",
        }
    }

    pub(crate) fn allows(&self, method: Method) -> bool {
        matches!(
            (self, method),
            (
                Route::Ready | Route::Clusters | Route::Metrics | Route::Config,
                Method::Get | Method::Head
            ) | (Route::Config | Route::Endpoints(_), Method::Put)
                | (Route::Drain, Method::Post)
        )
    }
}

pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const TOML: &str = "application/toml";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A response before framing; `conn` adds content-length, connection and
/// drops the body for HEAD.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                content_type: JSON,
                headers: Vec::new(),
                body,
            },
            Err(e) => Response::text(500, &format!("cannot encode the response: {e}\n")),
        }
    }

    fn errors<I: IntoIterator<Item = String>>(status: u16, errors: I) -> Response {
        let mut errors: Vec<String> = errors.into_iter().collect();
        if errors.is_empty() {
            errors.push("rejected without a reason".to_string());
        }
        Response::json(status, &serde_json::json!({ "errors": errors }))
    }

    fn generation(generation: u64) -> Response {
        let mut response = Response::json(200, &serde_json::json!({ "generation": generation }));
        response.headers.push(("x-ringway-generation", generation.to_string()));
        response
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Run one routed, authorized request against the backend. `route.allows(method)`
/// has been checked; `calls` is appended to /metrics as the admin's own counter.
pub(crate) fn dispatch(
    backend: &dyn AdminBackend,
    route: Route<'_>,
    method: Method,
    body: &[u8],
    calls: u64,
) -> Response {
    match route {
        Route::Ready if backend.ready() => Response::text(200, "ready\n"),
        Route::Ready => Response::text(503, "not ready\n"),
        Route::Config if method == Method::Put => put_config(backend, body),
        Route::Config => get_config(backend),
        Route::Endpoints(cluster) => put_endpoints(backend, &cluster, body),
        Route::Clusters => Response::json(200, &backend.clusters()),
        Route::Metrics => metrics(backend, calls),
        Route::Drain => {
            backend.drain();
            Response::text(202, "draining\n")
        }
    }
}

fn get_config(backend: &dyn AdminBackend) -> Response {
    let (generation, toml) = backend.config();
    Response {
        status: 200,
        content_type: TOML,
        headers: vec![("x-ringway-generation", generation.to_string())],
        body: toml.as_bytes().to_vec(),
    }
}

fn put_config(backend: &dyn AdminBackend, body: &[u8]) -> Response {
    let text = match utf8(body, "admin:/config:", "the config") {
        Ok(text) => text,
        Err(refused) => {
            backend.count_unreadable_config();
            return refused;
        }
    };
    match backend.put_config(text) {
        Ok(generation) => Response::generation(generation),
        Err(ConfigRefused::Invalid(errors)) => Response::errors(400, error_lines(&errors)),
        Err(ConfigRefused::Draining) => draining(),
    }
}

/// The body as text, or a 400 placing its first invalid byte.
fn utf8<'a>(body: &'a [u8], origin: &str, what: &str) -> Result<&'a str, Response> {
    std::str::from_utf8(body).map_err(|e| {
        let valid = std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default();
        let (line, column) = crate::config::line_column(valid, valid.len());
        Response::errors(400, [format!("{origin}{line}:{column}: {what} is not valid UTF-8")])
    })
}

/// A change refused because the proxy is on its way out.
fn draining() -> Response {
    Response::errors(503, ["the proxy is draining: it takes no new config".to_string()])
}

fn put_endpoints(backend: &dyn AdminBackend, cluster: &str, body: &[u8]) -> Response {
    let text = match utf8(body, "", "the body") {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    let endpoints = match endpoint_list::parse(text) {
        Ok(endpoints) => endpoints,
        Err(e) => return Response::errors(400, [e]),
    };
    match backend.put_endpoints(cluster, endpoints) {
        Ok(generation) => Response::generation(generation),
        Err(EndpointsRefused::UnknownCluster) => Response::errors(404, [format!("unknown cluster {cluster:?}")]),
        Err(EndpointsRefused::Draining) => draining(),
        Err(EndpointsRefused::Conflict(why)) => Response::errors(409, [why]),
        Err(EndpointsRefused::Invalid(problems)) => Response::errors(
            400,
            problems.into_iter().map(|(index, message)| match index {
                Some(i) => format!("{}{message}", endpoint_list::element_position(text, i)),
                None => message,
            }),
        ),
    }
}

fn metrics(backend: &dyn AdminBackend, calls: u64) -> Response {
    let mut text = backend.metrics();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // Its name and HELP from the one table every metric is declared in.
    let family = &crate::metrics::names::ADMIN_REQUESTS_TOTAL;
    text.push_str(&format!("# HELP {} {}\n", family.name, family.help));
    text.push_str(&format!("# TYPE {} counter\n", family.name));
    text.push_str(&format!("{} {calls}\n", family.name));
    Response {
        status: 200,
        content_type: PROMETHEUS,
        headers: Vec::new(),
        body: text.into_bytes(),
    }
}

/// The backend reports one error per line; blank lines carry nothing.
fn error_lines(errors: &str) -> impl Iterator<Item = String> + '_ {
    errors
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_paths_without_the_query() {
        assert_eq!(Route::parse("/ready?x=1"), Some(Route::Ready));
        // Names a path cannot carry as they are come percent-encoded.
        for (path, cluster) in [
            ("/clusters/api-v1/endpoints", "api-v1"),
            ("/clusters/api-v1/endpoints?dry", "api-v1"),
            ("/clusters/a%20b/endpoints", "a b"),
            ("/clusters/x%2Fy/endpoints", "x/y"),
            ("/clusters/%C3%A9/endpoints", "é"),
        ] {
            assert_eq!(Route::parse(path), Some(Route::Endpoints(cluster.into())), "{path}");
        }
        for path in [
            "",
            "*",
            "/clusters/",
            "/clusters//endpoints",
            "/clusters/a/b/endpoints",
            "/clusters/a%2/endpoints",
            "/clusters/a%zz/endpoints",
            "/clusters/%FF/endpoints",
            "/Ready",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
        assert!(Route::Config.allows(Method::Head) && Route::Config.allows(Method::Put));
        assert!(!Route::Drain.allows(Method::Get) && !Route::Ready.allows(Method::Other));
    }
}
