//! The HTTP/1.1 fast path: the common request (HTTP/1.1, no body, routed to an HTTP/1.1
//! backend) is parsed with `httparse`, routed with the same [`proxy::route`], balanced with
//! the same [`Attempts`] and written upstream as raw bytes on a pooled connection of the
//! worker; the response head is rewritten (hop-by-hop headers out, `X-Request-ID` in) and
//! its body relayed as it comes (by `Content-Length`, chunked framing followed with
//! [`ChunkedEnd`], or to the upstream's close), never buffered whole.
//!
//! Everything else is declined at a request boundary and the connection goes to hyper with
//! the bytes read so far ([`serve`] returns them): the HTTP/2 preface, HTTP/1.0, request
//! bodies, `Expect`, upgrades (WebSocket), `CONNECT` and absolute-form targets, framing
//! that [`framing`] refuses, heads over the limits, and every request the proxy answers
//! itself (400, 404, 503, redirects). From then on hyper serves that connection as it
//! serves every other one, so both paths answer the same way; the fast path only answers
//! 502 and 504 itself (the upstream failed after the request was taken).

use crate::access::{self, Record};
use crate::attempt::{Attempts, Try};
use crate::balance;
use crate::conn::Conn;
use crate::deadline::Deadline;
use crate::exchange::{self, fill, BadReply, Fail, Head, Length, MAX_RESPONSE_HEAD, RELAY_BUF};
use crate::forward::idempotent;
use crate::framing::{self, Body, ChunkedEnd};
use crate::headers::{self, line, Forwarding, Seen};
use crate::proxy::{self, Routed};
use crate::state::Shared;
use crate::upstream::Installed;
use crate::worker::Local;
use flatnet_l7_routes::{Route, Table, UpstreamProtocol};
use hyper::StatusCode;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Header fields parsed in one head; a request with more (or more than the limit) goes to
/// hyper, which answers 431.
const MAX_FIELDS: usize = 128;
/// Relay buffers a worker keeps for its next requests.
const SPARE_BUFFERS: usize = 64;
/// A response body piece up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;

/// Relay buffers of one worker, reused from request to request.
#[derive(Default)]
pub struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// A spare buffer, or a new one.
    pub fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(RELAY_BUF))
    }

    /// Keeps `buf` for a later request.
    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}

/// Facts of the connection a request head is planned for.
struct Client<'c> {
    addr: SocketAddr,
    /// The address's IP, as `X-Forwarded-For` gets it.
    ip: &'c str,
    tls: bool,
    max_headers: usize,
    log: bool,
}

/// A request the fast path forwards; owns all it needs once its head bytes are gone.
struct Planned<'t> {
    head_len: usize,
    route: &'t Route,
    idempotent: bool,
    /// A HEAD request: the response has no body.
    head: bool,
    /// The client asked to close after this request.
    close: bool,
    key: Option<u64>,
    request_id: Vec<u8>,
    record: Option<Box<Record>>,
}

/// What a look at the bytes at the start of a client buffer found.
enum Plan<'t> {
    /// The head is not complete yet.
    Partial,
    /// Hyper's to serve.
    Decline,
    /// Forward it; its upstream head is written.
    Forward(Planned<'t>),
}

/// Looks up header `name` in `fields`.
fn field<'b>(fields: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Parses the request head at the start of `buf`, routes it with `table` and, when the fast
/// path forwards it, writes the head to send upstream into `out`.
fn plan<'t>(buf: &[u8], table: &'t Table, client: &Client<'_>, out: &mut Vec<u8>) -> Plan<'t> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Plan::Partial,
        Err(_) => return Plan::Decline,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Plan::Decline;
    };
    let fields = &*req.headers;
    let seen = Seen::of(fields.iter().map(|h| (h.name, h.value)));
    let plain = fields.len() <= client.max_headers
        && method != "CONNECT"
        && target.starts_with('/')
        && !seen.upgrade
        && !seen.expect
        && matches!(
            framing::framing(fields.iter().map(|h| (h.name, h.value))),
            Ok(Body::Empty | Body::Length(0))
        );
    let raw_host = seen.host.and_then(|h| std::str::from_utf8(h).ok());
    let (Some(raw_host), true) = (raw_host, plain) else {
        return Plan::Decline;
    };
    let (raw_path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Routed::Forward(route, target) = proxy::route(table, client.tls, raw_host, raw_path, query)
    else {
        return Plan::Decline;
    };
    if route.backend.protocol != UpstreamProtocol::Http1 {
        return Plan::Decline;
    }
    let request_id = match seen.request_id {
        Some(id) if headers::valid_request_id(id) => id.to_vec(),
        _ => headers::new_request_id(fastrand::u128(..)).to_vec(),
    };
    let key = balance::hash_key(
        &route.options.balance,
        |name| field(fields, name),
        client.addr.ip(),
    );

    let forwarding = Forwarding {
        client_ip: client.ip,
        tls: client.tls,
        host: raw_host,
    };
    let fields = fields.iter().map(|h| (h.name, h.value));
    headers::request_head(
        out,
        (method, &target),
        fields,
        &seen,
        &forwarding,
        &request_id,
    );

    let record = client.log.then(|| {
        let mut record = Record::arriving(client.addr, method, raw_host, raw_path, &request_id);
        record.route = Some(route.id.to_string());
        Box::new(record)
    });
    Plan::Forward(Planned {
        head_len,
        route,
        idempotent: idempotent(method),
        head: method == "HEAD",
        close: seen.close,
        key,
        request_id,
        record,
    })
}

/// Whether requests pipelined behind the one at hand hold a framing that
/// [`framing::Scanner`] refuses: then hyper's path answers the whole connection 400, as it
/// does when it reads them together, and nothing of it is forwarded.
fn refused(pipelined: &[u8], limit: usize) -> bool {
    !pipelined.is_empty()
        && matches!(
            framing::Scanner::new(limit).feed(pipelined, false),
            framing::Verdict::Refuse(_)
        )
}

/// An upstream response head, read and rewritten for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    head_len: usize,
    status: u16,
    length: Length,
    /// The upstream connection may carry another request after this response.
    reusable: bool,
}

/// What the client's response head gets besides the upstream's fields.
struct Extra<'a> {
    request_id: &'a [u8],
    /// `x-flatnet-route` and `x-flatnet-upstream`, with debug headers on.
    debug: Option<(&'a str, SocketAddr)>,
    /// The client asked to close: say so.
    close: bool,
}

/// Parses the response head at the start of `buf` (answering a HEAD request when `head`)
/// and writes the head to send to the client into `out`.
fn reply(
    buf: &[u8],
    head: bool,
    extra: &Extra<'_>,
    out: &mut Vec<u8>,
) -> Result<Head<Reply>, BadReply> {
    exchange::read_head(buf, |h| rewrite(h, head, extra, out))
}

/// Writes the head to send to the client for upstream head `h` into `out`.
fn rewrite(
    h: exchange::Final<'_, '_>,
    head: bool,
    extra: &Extra<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, BadReply> {
    let (fields, status, version) = (h.fields, h.status, h.version);
    let length = exchange::length(head, status, fields)?;
    let seen = Seen::of(fields.iter().map(|h| (h.name, h.value)));
    let reusable = version == 1 && !seen.close;
    let close = extra.close || length == Length::UntilClose;

    out.clear();
    let reason = h.reason;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let debug = [proxy::X_FLATNET_ROUTE, proxy::X_FLATNET_UPSTREAM];
    for h in fields {
        let name = h.name;
        let keep = if name.eq_ignore_ascii_case("transfer-encoding") {
            length == Length::Chunked
        } else if name.eq_ignore_ascii_case("content-length") {
            !matches!(length, Length::Chunked | Length::UntilClose)
        } else if name.eq_ignore_ascii_case("x-request-id") {
            false
        } else if debug.iter().any(|d| name.eq_ignore_ascii_case(d.as_str())) {
            extra.debug.is_none()
        } else {
            !seen.hop_by_hop(name)
        };
        if keep {
            line(out, name.as_bytes(), h.value);
        }
    }
    line(out, b"x-request-id", extra.request_id);
    if let Some((route, upstream)) = extra.debug {
        line(out, debug[0].as_str().as_bytes(), route.as_bytes());
        let _ = write!(out, "{}: {upstream}\r\n", debug[1]);
    }
    if close {
        line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Reply {
        head_len: h.head_len,
        status,
        length,
        reusable: reusable && length != Length::UntilClose,
    })
}

/// The three digits of a status code (100 to 999, as `httparse` reads them).
fn status_digits(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}

/// An answer made here (502, 504), in the form hyper's path gives its own.
fn status_response(status: StatusCode, extra: &Extra<'_>, out: &mut Vec<u8>) {
    let body = proxy::status_text(status);
    out.clear();
    let reason = status.canonical_reason().unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", status.as_u16());
    line(out, b"content-type", b"text/plain; charset=utf-8");
    line(out, b"x-request-id", extra.request_id);
    if let Some((route, _)) = extra.debug {
        line(
            out,
            proxy::X_FLATNET_ROUTE.as_str().as_bytes(),
            route.as_bytes(),
        );
    }
    if extra.close {
        line(out, b"connection", b"close");
    }
    let date = httpdate::fmt_http_date(SystemTime::now());
    let _ = write!(
        out,
        "content-length: {}\r\ndate: {date}\r\n\r\n{body}",
        body.len()
    );
}

/// How a relayed response ended.
struct Relayed {
    bytes: u64,
    /// The upstream connection can be pooled.
    reusable: bool,
    /// The client connection stays open.
    open: bool,
}

/// Sends the rewritten head in `down` and the body (its first bytes at `buf[reply.head_len..]`)
/// to the client, reading the rest from `upstream`.
async fn relay<IO: AsyncWrite + Unpin>(
    client: &mut IO,
    upstream: &mut TcpStream,
    reply: Reply,
    buf: &mut Vec<u8>,
    down: &mut Vec<u8>,
) -> io::Result<Relayed> {
    let mut chunks = ChunkedEnd::new(MAX_RESPONSE_HEAD);
    let mut left = match reply.length {
        Length::Exactly(n) => n,
        _ => 0,
    };
    let mut bytes = 0u64;
    let mut reusable = reply.reusable;
    let mut at = reply.head_len;
    let mut head = Some(std::mem::take(down));
    loop {
        let piece = &buf[at..];
        // The part of `piece` that belongs to the body, and whether the body ends there.
        let (take, done) = match reply.length {
            Length::None => (0, true),
            Length::Exactly(_) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(piece.len());
                left -= n as u64;
                (n, left == 0)
            }
            Length::Chunked => match chunks.feed(piece).map_err(io::Error::other)? {
                Some(n) => (n, true),
                None => (piece.len(), false),
            },
            Length::UntilClose => (piece.len(), false),
        };
        if done && take < piece.len() {
            // More bytes than the response: the connection is out of step.
            reusable = false;
        }
        let body = &piece[..take];
        bytes += take as u64;
        match head.take() {
            Some(mut h) if body.len() <= COALESCE => {
                h.extend_from_slice(body);
                client.write_all(&h).await?;
                *down = h;
            }
            Some(h) => {
                client.write_all(&h).await?;
                client.write_all(body).await?;
                *down = h;
            }
            None => client.write_all(body).await?,
        }
        if done {
            return Ok(Relayed {
                bytes,
                reusable,
                open: true,
            });
        }
        buf.clear();
        at = 0;
        if fill(upstream, buf).await? == 0 {
            if reply.length == Length::UntilClose {
                return Ok(Relayed {
                    bytes,
                    reusable: false,
                    open: false,
                });
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// One worker's serving of a connection on the fast path.
pub struct Fast<'a> {
    /// Shared state.
    pub shared: &'a Arc<Shared>,
    /// The worker's own state.
    pub local: &'a Arc<Local>,
    /// The connection.
    pub conn: &'a Conn,
}

impl Fast<'_> {
    /// Serves requests from `io` until it closes (`None`) or a request is declined: then
    /// the bytes read and not served are returned, for hyper to serve from.
    pub async fn serve<IO>(&self, io: &mut IO) -> Option<Vec<u8>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = &self.shared.config;
        let limit = config.limits.max_header_bytes.max(crate::listener::MIN_BUF);
        let client = Client {
            addr: self.conn.client,
            ip: &self.conn.ip,
            tls: self.conn.tls,
            max_headers: config.limits.max_headers,
            log: !matches!(config.access_log, crate::AccessLog::Off),
        };
        let mut buf = Vec::with_capacity(crate::listener::MIN_BUF);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        // Checks for a new table with one atomic read, without counting a reference.
        let mut tables = arc_swap::Cache::new(&self.shared.installed);
        let (mut head_limit, mut answer_limit) = (Deadline::new(), Deadline::new());
        // When the wait for the next request head began (clock reads are counted: each
        // request reads it three times).
        let mut waiting = Instant::now();
        loop {
            let installed = tables.load();
            let head = async {
                loop {
                    if !buf.is_empty() {
                        match plan(&buf, &installed.table, &client, &mut up) {
                            Plan::Partial if buf.len() < limit => {}
                            Plan::Partial | Plan::Decline => return Some(None),
                            Plan::Forward(planned) if refused(&buf[planned.head_len..], limit) => {
                                return Some(None)
                            }
                            Plan::Forward(planned) => return Some(Some(planned)),
                        }
                    }
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(crate::listener::MIN_BUF);
                    }
                    if !matches!(io.read_buf(&mut buf).await, Ok(1..)) {
                        return None;
                    }
                }
            };
            head_limit.set(waiting, config.limits.header_read_timeout);
            let planned = match head_limit.within(head).await {
                Some(Some(Some(planned))) => planned,
                Some(Some(None)) => return Some(buf),
                Some(None) | None => return None,
            };
            buf.drain(..planned.head_len);
            let exchange = (planned, up.as_slice(), &mut answer_limit);
            match self.forward(io, installed, exchange, &mut down).await {
                (true, done) => waiting = done,
                (false, _) => return None,
            }
        }
    }

    /// Forwards one planned request whose upstream head is `up`; false when the client
    /// connection is to be closed; and when the request was done.
    async fn forward<IO>(
        &self,
        io: &mut IO,
        installed: &Installed,
        (planned, up, limit): (Planned<'_>, &[u8], &mut Deadline),
        down: &mut Vec<u8>,
    ) -> (bool, Instant)
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let route = planned.route;
        let options = &route.options;
        let mut attempts = Attempts::new(
            self.shared,
            self.local,
            installed,
            route,
            planned.key,
            planned.idempotent,
        );
        let mut buf = self.local.buffers.take();
        let mut extra = Extra {
            request_id: &planned.request_id,
            debug: None,
            close: planned.close,
        };
        // The endpoint tried last.
        let mut last: Option<Try> = None;
        let mut outcome = Err(StatusCode::BAD_GATEWAY);
        let mut sent = started;
        while let Some(t) = attempts.next() {
            if self.shared.config.debug_headers {
                extra.debug = Some((&route.id, t.addr));
            }
            if last.is_some() {
                // A retry: its own clock.
                sent = Instant::now();
            }
            let in_flight = attempts.start(t);
            let exchanging = exchange::connect_and_exchange(
                &self.local.pool,
                (t.addr, sent),
                options.connect_timeout,
                (up, planned.idempotent),
                &mut buf,
                |b| reply(b, planned.head, &extra, down),
            );
            limit.set(sent, options.request_timeout);
            outcome = match limit.within(exchanging).await {
                None => Err(StatusCode::GATEWAY_TIMEOUT),
                Some(Err(Fail::Connect(e))) => {
                    attempts.connect_failed(t, &e);
                    last = Some(t);
                    continue;
                }
                Some(Err(Fail::Exchange(e))) => {
                    tracing::debug!("{}: request to {} failed: {e}", route.backend.key, t.addr);
                    Err(StatusCode::BAD_GATEWAY)
                }
                Some(Ok(answer)) => Ok((t, answer, Instant::now() - sent, in_flight)),
            };
            last = Some(t);
            break;
        }
        // The upstream connection to pool once the request is done.
        let mut reusable = None;
        let (status, upstream, upstream_took, relayed) = match outcome {
            Ok((t, (mut stream, reply), took, _in_flight)) => {
                attempts.answered(t, reply.status, took);
                let relayed = relay(io, &mut stream, reply, &mut buf, down).await;
                if let Ok(Relayed { reusable: true, .. }) = relayed {
                    reusable = Some((t.addr, stream));
                }
                (reply.status, Some(t.addr), Some(took), relayed)
            }
            Err(status) => {
                status_response(status, &extra, down);
                let sent = io.write_all(down).await.map(|()| Relayed {
                    bytes: 0,
                    reusable: false,
                    open: true,
                });
                (status.as_u16(), last.map(|t| t.addr), None, sent)
            }
        };
        self.local.buffers.give(buf);
        let mut record = planned.record.map(|r| *r);
        if let Some(record) = &mut record {
            record.status = status;
            record.upstream = upstream;
            record.upstream_ms = upstream_took.map(access::millis);
        }
        let bytes_out = relayed.as_ref().map_or(0, |r| r.bytes);
        let done = Instant::now();
        if let Some((addr, stream)) = reusable {
            self.local.pool.put_stream(addr, stream, done);
        }
        let took = done - started;
        (self.shared).answered(
            self.local,
            Some(&route.id),
            status,
            took,
            record,
            (0, bytes_out),
        );
        let open = matches!(relayed, Ok(Relayed { open: true, .. })) && !planned.close;
        (open, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client<'static> {
        Client {
            addr: SocketAddr::from(([10, 0, 0, 9], 5555)),
            ip: "10.0.0.9",
            tls: false,
            max_headers: 100,
            log: false,
        }
    }

    fn table() -> Table {
        let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: flatnet}
spec: {controller: flatnet.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: flatnet
  rules:
  - host: a.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.42.0.5], conditions: {ready: true}}]
"#;
        let mut objects = crate::manifests::Objects::default();
        objects.parse(yaml, "test.yaml").unwrap();
        objects.table()
    }

    fn planned(head: &str) -> (Option<String>, bool) {
        let t = table();
        let mut out = Vec::new();
        match plan(head.as_bytes(), &t, &client(), &mut out) {
            Plan::Forward(p) => {
                assert_eq!(p.head_len, head.find("\r\n\r\n").unwrap() + 4);
                (Some(String::from_utf8(out).unwrap()), p.close)
            }
            Plan::Partial => (Some("partial".into()), false),
            Plan::Decline => (None, false),
        }
    }

    #[test]
    fn plain_requests_are_rewritten_for_upstream() {
        let (up, close) = planned(
            "GET /a/../b//c?q=1 HTTP/1.1\r\nHost: A.test:80\r\nConnection: close, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers, gzip\r\nX-Forwarded-For: 192.0.2.1\r\n\
             X-Request-ID: abc-1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
        );
        let up = up.unwrap();
        assert!(close);
        assert_eq!(
            up,
            "GET /b/c?q=1 HTTP/1.1\r\nHost: A.test:80\r\nAccept: */*\r\nte: trailers\r\n\
             x-forwarded-for: 192.0.2.1, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: A.test:80\r\nx-request-id: abc-1\r\n\r\n"
        );
        let (up, close) = planned("HEAD / HTTP/1.1\r\nhost: a.test\r\nContent-Length: 0\r\n\r\n");
        let up = up.unwrap();
        assert!(!close);
        assert!(up.starts_with("HEAD / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n"));
        let id = up.split("x-request-id: ").nth(1).unwrap();
        assert_eq!(id.len(), 32 + 4, "a fresh id: {id:?}");
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n\r\n",
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /%zz HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(planned(head).0, None, "{head:?}");
        }
        let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(
            planned(&format!("GET / HTTP/1.1\r\nHost: a.test\r\n{many}\r\n")).0,
            None
        );
        assert_eq!(
            planned("GET / HTTP/1.1\r\nHost: a.te").0.as_deref(),
            Some("partial")
        );
    }

    fn replied(
        head: &str,
        head_request: bool,
        close: bool,
    ) -> Result<(Head<Reply>, String), BadReply> {
        let extra = Extra {
            request_id: b"id-1",
            debug: None,
            close,
        };
        let mut out = Vec::new();
        let h = reply(head.as_bytes(), head_request, &extra, &mut out)?;
        Ok((h, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn response_heads_are_rewritten_for_the_client() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\n\
                    X-Hop: 1\r\nX-Request-ID: theirs\r\nX-App: yes\r\n\r\nok";
        let (h, out) = replied(text, false, false).unwrap();
        assert_eq!(
            h,
            Head::Final(Reply {
                head_len: text.len() - 2,
                status: 200,
                length: Length::Exactly(2),
                reusable: true
            })
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: yes\r\nx-request-id: id-1\r\n\r\n"
        );
        let (h, out) = replied(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            true,
        )
        .unwrap();
        assert!(matches!(
            h,
            Head::Final(Reply {
                length: Length::Chunked,
                ..
            })
        ));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-request-id: id-1\r\nconnection: close\r\n\r\n"
        );
        let (h, out) = replied("HTTP/1.0 200 OK\r\nServer: old\r\n\r\n", false, false).unwrap();
        assert!(matches!(
            h,
            Head::Final(Reply {
                length: Length::UntilClose,
                reusable: false,
                ..
            })
        ));
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        let (h, _) = replied("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false).unwrap();
        assert!(matches!(
            h,
            Head::Final(Reply {
                length: Length::None,
                reusable: true,
                ..
            })
        ));
        let (h, _) = replied("HTTP/1.1 304 Not Modified\r\n\r\n", false, false).unwrap();
        assert!(matches!(
            h,
            Head::Final(Reply {
                length: Length::None,
                ..
            })
        ));
        let (h, _) = replied(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        )
        .unwrap();
        assert!(matches!(
            h,
            Head::Final(Reply {
                reusable: false,
                ..
            })
        ));
    }

    #[test]
    fn informational_and_bad_response_heads() {
        let hints = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        let (h, _) = replied(hints, false, false).unwrap();
        assert_eq!(h, Head::Informational(hints.len()));
        assert_eq!(
            replied("HTTP/1.1 200 OK\r\nContent-", false, false)
                .unwrap()
                .0,
            Head::Partial
        );
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert_eq!(
                replied(bad, false, false).map(|_| ()),
                Err(BadReply),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn answers_made_here_look_like_hyper_s() {
        let extra = Extra {
            request_id: b"id-1",
            debug: None,
            close: false,
        };
        let mut out = Vec::new();
        status_response(StatusCode::BAD_GATEWAY, &extra, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\nx-request-id: id-1\r\ncontent-length: 16\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\n502 Bad Gateway\n"), "{text}");
    }
}
