//! Sending a routed request upstream: endpoint choice, retries on connect failure, timeouts,
//! passive health, header rewriting, and WebSocket splicing after a 101.

use crate::attempt::Attempts;
use crate::balance;
use crate::body::{self, Meter, Watched};
use crate::conn::Conn;
use crate::exchange::{self, Fail, Streamed};
use crate::headers::{self, Forwarding, Seen, X_REQUEST_ID};
use crate::pool::{Leased, SendError};
use crate::proxy::Answer;
use crate::state::Shared;
use crate::upstream::Installed;
use crate::worker::Local;
use flatnet_l7_routes::{Route, UpstreamProtocol};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::HeaderValue;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request's context for forwarding.
pub struct Exchange<'a> {
    /// Shared state.
    pub shared: &'a Arc<Shared>,
    /// The client connection.
    pub conn: &'a Arc<Conn>,
    /// The worker's own state.
    pub local: &'a Arc<Local>,
    /// The table the route is from, with its backends' state.
    pub installed: &'a Installed,
    /// The matched route.
    pub route: &'a Route,
    /// The host as the client sent it.
    pub raw_host: &'a str,
    /// Normalised path plus the original query.
    pub target: &'a str,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// Counts the request body.
    pub meter_in: &'a Arc<Meter>,
}

/// Methods that may be sent again (RFC 9110 section 9.2.2).
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// Forwards `req` to one of the route's endpoints and returns the upstream's answer (or
/// 502 / 504 / 408 made here).
pub async fn forward(x: Exchange<'_>, mut req: Request<Incoming>) -> Answer {
    let backend = &x.route.backend;
    let options = &x.route.options;
    let config = &x.shared.config;
    let upgrade = headers::is_websocket_upgrade(req.headers())
        && req.version() == Version::HTTP_11
        && backend.protocol == UpstreamProtocol::Http1;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let retryable = idempotent(parts.method.as_str()) && incoming.is_end_stream();
    // A bodiless request to an HTTP/1.1 endpoint goes as bytes, as on the fast path.
    let as_bytes =
        !upgrade && incoming.is_end_stream() && backend.protocol == UpstreamProtocol::Http1;
    // The body for hyper's client (none is built for a request going as bytes).
    let mut streamed = (!as_bytes).then(|| {
        Watched::new(
            incoming,
            x.meter_in.clone(),
            Some(config.limits.body_read_timeout),
            None::<()>,
        )
        .boxed_unsync()
    });

    let key = balance::hash_key(
        &options.balance,
        |name| parts.headers.get(name).map(HeaderValue::as_bytes),
        x.conn.client.ip(),
    );
    let forwarding = Forwarding {
        client_ip: &x.conn.ip,
        tls: x.conn.tls,
        host: x.raw_host,
    };
    let mut head = parts.headers;
    // A request going as bytes has its head written once, for every attempt; one for
    // hyper's client has its header map rewritten.
    let bytes_head = if as_bytes {
        let fields = || head.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        let seen = Seen::of(fields());
        let line = (parts.method.as_str(), x.target);
        let id = x.request_id.as_bytes();
        let mut out = Vec::with_capacity(512);
        headers::request_head(&mut out, line, fields(), &seen, &forwarding, id);
        out
    } else {
        headers::strip_hop_by_hop(&mut head, upgrade);
        headers::add_forwarded(&mut head, &forwarding);
        head.insert(X_REQUEST_ID, x.request_id.clone());
        headers::set_host(&mut head, x.raw_host);
        Vec::new()
    };
    let version = match backend.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };

    let mut attempts = Attempts::new(x.shared, x.local, x.installed, x.route, key, retryable);
    // The endpoint whose connect failed last.
    let mut refused = None;
    while let Some(t) = attempts.next() {
        let addr = t.addr;
        let in_flight = attempts.start(t);
        let sent = Instant::now();
        let result = if as_bytes {
            let request = (&parts.method, bytes_head.as_slice());
            let sending = send_as_bytes(x.local, addr, options.connect_timeout, request);
            tokio::time::timeout(options.request_timeout, sending).await
        } else {
            // HTTP/1.1 requests go in origin form, h2c ones name the endpoint as authority.
            let uri = match backend.protocol {
                UpstreamProtocol::Http1 => x.target.parse::<Uri>(),
                UpstreamProtocol::H2c => format!("http://{addr}{}", x.target).parse::<Uri>(),
            };
            let Ok(uri) = uri else {
                return Answer::status(StatusCode::BAD_REQUEST, false);
            };
            let body = match streamed.take() {
                Some(b) if !retryable => b,
                _ => body::empty(),
            };
            let mut up = Request::new(body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = version;
            *up.headers_mut() = if attempts.last() {
                std::mem::take(&mut head)
            } else {
                head.clone()
            };
            let sending = x
                .local
                .pool
                .send(addr, backend.protocol, options.connect_timeout, up);
            tokio::time::timeout(options.request_timeout, sending)
                .await
                .map(|sent| sent.map(upstream_response))
        };
        let mut answer = match result {
            Err(_) => Answer::status(StatusCode::GATEWAY_TIMEOUT, false),
            Ok(Err(SendError::Connect(e))) => {
                attempts.connect_failed(t, &e);
                refused = Some(addr);
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!("{}: request to {addr} failed: {e:?}", backend.key);
                if x.meter_in
                    .timed_out
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    Answer::status(StatusCode::REQUEST_TIMEOUT, true)
                } else {
                    Answer::status(StatusCode::BAD_GATEWAY, false)
                }
            }
            Ok(Ok(mut resp)) => {
                let took = sent.elapsed();
                let status = resp.status();
                attempts.answered(t, status.as_u16(), took);
                let upgrading = status == StatusCode::SWITCHING_PROTOCOLS;
                if let (true, Some(client_side)) = (upgrading, client_upgrade) {
                    x.conn.set_upgraded();
                    splice(client_side, hyper::upgrade::on(&mut resp));
                }
                headers::strip_hop_by_hop(resp.headers_mut(), upgrading && upgrade);
                let mut answer = Answer::new(resp);
                answer.upstream_took = Some(took);
                answer.in_flight = in_flight;
                answer
            }
        };
        answer.upstream = Some(addr);
        return answer;
    }
    let mut answer = Answer::status(StatusCode::BAD_GATEWAY, false);
    answer.upstream = refused;
    answer
}

/// Sends a bodiless request (its method, and its head as written for upstream) to HTTP/1.1
/// endpoint `addr` as bytes on one of the worker's plain connections; the response body
/// streams from that connection.
async fn send_as_bytes(
    local: &Arc<Local>,
    addr: SocketAddr,
    connect_timeout: Duration,
    (method, head): (&Method, &[u8]),
) -> Result<Response<body::ProxyBody>, SendError> {
    let head_request = method == Method::HEAD;
    let mut buf = local.buffers.take();
    let exchanged = exchange::connect_and_exchange(
        &local.pool,
        (addr, Instant::now()),
        connect_timeout,
        (head, idempotent(method.as_str())),
        &mut buf,
        |b| exchange::parse(b, head_request),
    )
    .await;
    let answer = match exchanged {
        Ok((stream, parsed)) => {
            let rest = &buf[parsed.head_len..];
            let body = Streamed::new(&parsed, rest, stream, (local.pool.clone(), addr));
            Ok(parsed.response.map(|()| body.boxed_unsync()))
        }
        Err(Fail::Connect(e)) => Err(SendError::Connect(e)),
        Err(Fail::Exchange(e)) => Err(SendError::Exchange(e)),
    };
    local.buffers.give(buf);
    answer
}

fn upstream_response(resp: Response<Leased>) -> Response<body::ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body.boxed_unsync())
}

/// Copies bytes both ways between the upgraded client and upstream connections.
fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!("upgraded connection ended: {e}");
                }
            }
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!idempotent(m), "{m}");
        }
    }
}
