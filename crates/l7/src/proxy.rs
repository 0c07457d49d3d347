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
use flatnet_l7_routes::{host, path, Lookup};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(body::full(text));
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
        AccessLog::Stdout | AccessLog::Sink(_) => Some(Record {
            time: access::epoch_seconds(SystemTime::now()),
            client: conn.client,
            method: req.method().to_string(),
            host: host.clone(),
            path: req.uri().path().to_string(),
            route: None,
            upstream: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            request_id: request_id.to_str().unwrap_or_default().to_string(),
        }),
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
    let Some(host) = host::normalise(raw_host) else {
        return Answer::status(StatusCode::BAD_REQUEST, false);
    };
    let Ok(path) = path::normalise(req.uri().path()) else {
        return Answer::status(StatusCode::BAD_REQUEST, false);
    };
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let table = shared.table.load_full();
    let route = match table.lookup(&host, &path) {
        Lookup::NotFound => return Answer::status(StatusCode::NOT_FOUND, false),
        Lookup::Route(route) => route.clone(),
    };
    let mut answer = if !conn.tls && table.redirects_to_https(&host, &route) {
        redirect(&host, &target)
    } else if route.backend.endpoints.is_empty() {
        if let Some(problem) = &route.backend.problem {
            tracing::debug!("route {}: {problem}", route.id);
        }
        Answer::status(StatusCode::SERVICE_UNAVAILABLE, false)
    } else {
        let exchange = Exchange {
            shared,
            conn,
            local,
            route: &route,
            raw_host,
            target: &target,
            request_id,
            meter_in,
        };
        forward::forward(exchange, req).await
    };
    answer.route = Some(route.id.clone());
    answer
}

fn redirect(host: &str, target: &str) -> Answer {
    let mut answer = Answer::status(StatusCode::PERMANENT_REDIRECT, false);
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{target}")) {
        answer.response.headers_mut().insert(LOCATION, location);
    }
    answer
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
        let took = self.started.elapsed();
        let handles = &self.local.handles;
        (self.shared.metrics).request(handles, self.route.as_ref(), self.status, took);
        let Some(record) = &mut self.record else {
            return;
        };
        record.duration_ms = access::millis(took);
        record.bytes_in = self.meter_in.bytes.load(Ordering::Relaxed);
        record.bytes_out = self.meter_out.bytes.load(Ordering::Relaxed);
        match &self.shared.config.access_log {
            AccessLog::Off => {}
            AccessLog::Stdout => println!("{}", access::line(record)),
            AccessLog::Sink(sink) => sink(&access::line(record)),
        }
    }
}
