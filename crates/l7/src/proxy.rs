//! One request from admission to the logged answer: framing checks, host and path
//! normalisation, route lookup, redirect, 404/503, then [`crate::forward`].

use crate::access::{self, Record};
use crate::body::{self, Meter, ProxyBody, Watched};
use crate::config::AccessLog;
use crate::conn::Conn;
use crate::forward::{self, Exchange};
use crate::framing;
use crate::headers::{self, X_REQUEST_ID};
use crate::state::Shared;
use crate::upstream::InFlight;
use crate::worker::Local;
use flatnet_l7_routes::{host, path, Lookup, Route, Table};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Request, Response, StatusCode};
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debug header (with [`crate::ProxyConfig::debug_headers`]): the route id.
pub const X_FLATNET_ROUTE: HeaderName = HeaderName::from_static("x-flatnet-route");
/// Debug header (with [`crate::ProxyConfig::debug_headers`]): the upstream endpoint.
pub const X_FLATNET_UPSTREAM: HeaderName = HeaderName::from_static("x-flatnet-upstream");

/// What a request was answered with, and by whom.
pub struct Answer {
    /// The response to send.
    pub response: Response<ProxyBody>,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The endpoint that answered.
    pub upstream: Option<SocketAddr>,
    /// Time to the upstream's response head.
    pub upstream_took: Option<Duration>,
    /// Keeps the endpoint's in-flight count until the response body ends.
    pub in_flight: Option<InFlight>,
}

impl Answer {
    /// An answer with `response`, by no route or upstream yet.
    pub fn new(response: Response<ProxyBody>) -> Answer {
        Answer {
            response,
            route: None,
            upstream: None,
            upstream_took: None,
            in_flight: None,
        }
    }

    /// A short plain-text answer made by the proxy; `close` ends the connection after it.
    pub fn status(status: StatusCode, close: bool) -> Answer {
        let mut response = Response::new(body::full(status_text(status)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if close {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Answer::new(response)
    }
}

/// The body of an answer made by the proxy: `404 Not Found` and a newline.
pub fn status_text(status: StatusCode) -> String {
    format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The host a request asked for: the URI's authority (HTTP/2, absolute form), else `Host`.
fn raw_host(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Answers one request (the service of every client connection).
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    local: Arc<Local>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let request_id = headers::request_id(req.headers(), fastrand::u128(..));
    let host = raw_host(&req);
    // The access log's record, only when there is an access log.
    let record = match shared.config.access_log {
        AccessLog::Off => None,
        AccessLog::Stdout | AccessLog::Sink(_) => Some(Record::arriving(
            conn.client,
            req.method().as_str(),
            &host,
            req.uri().path(),
            request_id.as_bytes(),
        )),
    };
    let meter_in = Arc::new(Meter::default());
    let answer = answer(&shared, &conn, &local, req, &host, &request_id, &meter_in).await;
    let logged = Logged {
        record,
        request_id,
        meter_in,
        started,
    };
    Ok(finish(shared, local, answer, logged))
}

/// What [`handle`] knows of a request before its answer.
struct Logged {
    record: Option<Record>,
    request_id: HeaderValue,
    meter_in: Arc<Meter>,
    started: Instant,
}

async fn answer(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    local: &Arc<Local>,
    req: Request<Incoming>,
    raw_host: &str,
    request_id: &HeaderValue,
    meter_in: &Arc<Meter>,
) -> Answer {
    if conn
        .refused()
        .or_else(|| framing::check_headers(req.headers()).err())
        .is_some()
    {
        return Answer::status(StatusCode::BAD_REQUEST, true);
    }
    let installed = shared.installed.load_full();
    let query = req.uri().query();
    match route(
        &installed.table,
        conn.tls,
        raw_host,
        req.uri().path(),
        query,
    ) {
        Routed::Refused(status) => Answer::status(status, false),
        Routed::Redirect(route, location) => {
            let mut answer = Answer::status(StatusCode::PERMANENT_REDIRECT, false);
            if let Ok(location) = HeaderValue::from_str(&location) {
                answer.response.headers_mut().insert(LOCATION, location);
            }
            answer.route = Some(route.id.clone());
            answer
        }
        Routed::Unavailable(route) => {
            if let Some(problem) = &route.backend.problem {
                tracing::debug!("route {}: {problem}", route.id);
            }
            let mut answer = Answer::status(StatusCode::SERVICE_UNAVAILABLE, false);
            answer.route = Some(route.id.clone());
            answer
        }
        Routed::Forward(route, target) => {
            let target = target.into_owned();
            let exchange = Exchange {
                shared,
                conn,
                local,
                installed: &installed,
                route,
                raw_host,
                target: &target,
                request_id,
                meter_in,
            };
            let mut answer = forward::forward(exchange, req).await;
            answer.route = Some(route.id.clone());
            answer
        }
    }
}

/// Where a request goes, by its host and path (`'t`: the table, `'r`: the request).
#[derive(Debug, PartialEq)]
pub enum Routed<'t, 'r> {
    /// Upstream along the route, to the target (normalised path and the original query).
    Forward(&'t Route, Cow<'r, str>),
    /// A 308 to the `Location` given (a plain-HTTP request to a host with TLS, on a route
    /// that asks for the redirect).
    Redirect(&'t Route, String),
    /// The route's backend has no endpoint: 503.
    Unavailable(&'t Route),
    /// Answered here with the status: 400 (host or path invalid) or 404 (no route).
    Refused(StatusCode),
}

/// Routes a request for `raw_host` (as sent) and `raw_path` (without the query) with
/// `table`; `tls` tells whether it came over TLS.
pub fn route<'t, 'r>(
    table: &'t Table,
    tls: bool,
    raw_host: &str,
    raw_path: &'r str,
    query: Option<&str>,
) -> Routed<'t, 'r> {
    let Some(host) = host::normalise(raw_host) else {
        return Routed::Refused(StatusCode::BAD_REQUEST);
    };
    let Ok(path) = path::normalise(raw_path) else {
        return Routed::Refused(StatusCode::BAD_REQUEST);
    };
    let route = match table.lookup(&host, &path) {
        Lookup::NotFound => return Routed::Refused(StatusCode::NOT_FOUND),
        Lookup::Route(route) => route,
    };
    let target = match query {
        Some(q) => Cow::Owned(format!("{path}?{q}")),
        None => path,
    };
    if !tls && table.redirects_to_https(&host, route) {
        Routed::Redirect(route, format!("https://{host}{target}"))
    } else if route.backend.endpoints.is_empty() {
        Routed::Unavailable(route)
    } else {
        Routed::Forward(route, target)
    }
}

/// Sets the response's id and debug headers, and wraps its body so that the end of the
/// body logs the request.
fn finish(
    shared: Arc<Shared>,
    local: Arc<Local>,
    answer: Answer,
    logged: Logged,
) -> Response<ProxyBody> {
    let Logged {
        mut record,
        request_id,
        meter_in,
        started,
    } = logged;
    let Answer {
        mut response,
        route,
        upstream,
        upstream_took,
        in_flight,
    } = answer;
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if shared.config.debug_headers {
        let debug = [
            (X_FLATNET_ROUTE, route.as_deref().map(str::to_string)),
            (X_FLATNET_UPSTREAM, upstream.map(|a| a.to_string())),
        ];
        for (name, value) in debug {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    let status = response.status().as_u16();
    if let Some(record) = &mut record {
        record.status = status;
        record.route = route.as_deref().map(str::to_string);
        record.upstream = upstream;
        record.upstream_ms = upstream_took.map(access::millis);
    }
    let meter_out = Arc::new(Meter::default());
    let done = Done {
        shared,
        local,
        route,
        status,
        record,
        meter_in,
        meter_out: meter_out.clone(),
        started,
        _in_flight: in_flight,
    };
    response.map(|b| Watched::new(b, meter_out, None, Some(done)).boxed_unsync())
}

/// Dropped when the response body ends: logs the request and counts it.
struct Done {
    shared: Arc<Shared>,
    local: Arc<Local>,
    route: Option<Arc<str>>,
    status: u16,
    record: Option<Record>,
    meter_in: Arc<Meter>,
    meter_out: Arc<Meter>,
    started: Instant,
    _in_flight: Option<InFlight>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let bytes = (
            self.meter_in.bytes.load(Ordering::Relaxed),
            self.meter_out.bytes.load(Ordering::Relaxed),
        );
        let took = self.started.elapsed();
        let record = self.record.take();
        (self.shared).answered(
            &self.local,
            self.route.as_ref(),
            self.status,
            took,
            record,
            bytes,
        );
    }
}

impl Shared {
    /// Counts an answered request (`route`: the one that matched) and writes its access log
    /// line when there is an access log (`record`, completed with the time taken and the
    /// body bytes in and out).
    pub fn answered(
        &self,
        local: &Local,
        route: Option<&Arc<str>>,
        status: u16,
        took: Duration,
        record: Option<Record>,
        (bytes_in, bytes_out): (u64, u64),
    ) {
        self.metrics.request(&local.handles, route, status, took);
        let Some(mut record) = record else {
            return;
        };
        record.duration_ms = access::millis(took);
        record.bytes_in = bytes_in;
        record.bytes_out = bytes_out;
        match &self.config.access_log {
            AccessLog::Off => {}
            AccessLog::Stdout => println!("{}", access::line(&record)),
            AccessLog::Sink(sink) => sink(&access::line(&record)),
        }
    }
}
