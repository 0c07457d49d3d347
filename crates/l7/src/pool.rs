//! Upstream connections of one worker: HTTP/1.1 connections kept alive and reused one
//! request at a time (most recently used first): hyper's, and the plain streams of the
//! HTTP/1.1 fast path ([`crate::h1`]); one multiplexed h2c connection per endpoint.
//! Connects have a timeout and set `TCP_NODELAY`; a request that a pooled connection could
//! not take (it closed meanwhile) goes to another one; connections idle longer than the idle
//! timeout are closed by [`Pool::sweep`].
//!
//! A pool belongs to one worker thread: its connections' tasks run on that thread's runtime,
//! so a request and its upstream connection never wake each other across threads.

use crate::body::{BoxError, ProxyBody};
use flatnet_l7_routes::UpstreamProtocol;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
/// Maps by endpoint address, with a fast hash.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why a request got no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out): the request was not
    /// sent, so it may go to another endpoint.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The request was (maybe partly) sent and failed.
    #[error("request: {0}")]
    Request(#[from] hyper::Error),
    /// The request was (maybe) sent as bytes and no valid response head came.
    #[error("exchange: {0}")]
    Exchange(std::io::Error),
}

/// An idle HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// The upstream connections of one worker.
pub struct Pool {
    http1: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    streams: Mutex<HashMap<SocketAddr, Vec<IdleStream>>>,
    h2c: Mutex<HashMap<SocketAddr, http2::SendRequest<ProxyBody>>>,
    idle_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new connection to `addr` with `TCP_NODELAY`, or why there is none.
pub async fn dial(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TokioIo<TcpStream>, SendError> {
    let stream = dial(addr, timeout).await.map_err(SendError::Connect)?;
    Ok(TokioIo::new(stream))
}

/// An idle connection of the HTTP/1.1 fast path.
struct IdleStream {
    stream: TcpStream,
    since: Instant,
}

impl Pool {
    /// An empty pool whose connections are closed after `idle_timeout` unused.
    pub fn new(idle_timeout: Duration) -> Pool {
        Pool {
            http1: Mutex::default(),
            streams: Mutex::default(),
            h2c: Mutex::default(),
            idle_timeout,
        }
    }

    /// Sends `req` to `addr`. HTTP/1.1 requests must be in origin form, h2c requests in
    /// absolute form. The response body gives its HTTP/1.1 connection back to the pool
    /// when it has been read to its end.
    pub async fn send(
        self: &Arc<Pool>,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        req: Request<ProxyBody>,
    ) -> Result<Response<Leased>, SendError> {
        match protocol {
            UpstreamProtocol::Http1 => self.send_http1(addr, connect_timeout, req).await,
            UpstreamProtocol::H2c => {
                let resp = self.send_h2c(addr, connect_timeout, req).await?;
                Ok(resp.map(|body| Leased::new(body, None)))
            }
        }
    }

    fn checkout_http1(&self, addr: SocketAddr) -> Option<http1::SendRequest<ProxyBody>> {
        let mut pools = lock(&self.http1);
        let idle = pools.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(Idle { sender, since }) = idle.pop() {
            if !sender.is_closed() && now.duration_since(since) < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    fn checkin_http1(&self, addr: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let since = Instant::now();
        lock(&self.http1)
            .entry(addr)
            .or_default()
            .push(Idle { sender, since });
    }

    async fn send_http1(
        self: &Arc<Pool>,
        addr: SocketAddr,
        connect_timeout: Duration,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Leased>, SendError> {
        // Pooled connections first; each one is tried at most once (the pool only shrinks).
        while let Some(mut sender) = self.checkout_http1(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(addr, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let io = connect(addr, connect_timeout).await?;
        let (mut sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection to {addr}: {e}");
            }
        });
        let resp = sender.send_request(req).await?;
        Ok(self.lease(addr, sender, resp))
    }

    fn lease(
        self: &Arc<Pool>,
        addr: SocketAddr,
        sender: http1::SendRequest<ProxyBody>,
        resp: Response<Incoming>,
    ) -> Response<Leased> {
        // An upgraded connection is the client's tunnel now, never reused.
        let lease = (resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: self.clone(),
            addr,
            sender,
        });
        resp.map(|body| Leased::new(body, lease))
    }

    /// An idle connection of the fast path to `addr` (the most recently used one), if any,
    /// at `now`. It may have been closed by the endpoint meanwhile.
    pub fn take_stream(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut pools = lock(&self.streams);
        let idle = pools.get_mut(&addr)?;
        while let Some(IdleStream { stream, since }) = idle.pop() {
            if now.duration_since(since) < self.idle_timeout {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps a fast-path connection to `addr`, idle since `since`, for the next request.
    pub fn put_stream(&self, addr: SocketAddr, stream: TcpStream, since: Instant) {
        lock(&self.streams)
            .entry(addr)
            .or_default()
            .push(IdleStream { stream, since });
    }

    fn shared_h2c(&self, addr: SocketAddr) -> Option<http2::SendRequest<ProxyBody>> {
        let mut conns = lock(&self.h2c);
        match conns.get(&addr) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                conns.remove(&addr);
                None
            }
            None => None,
        }
    }

    async fn send_h2c(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if let Some(mut sender) = self.shared_h2c(addr) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(back) => req = back,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
        }
        let io = connect(addr, connect_timeout).await?;
        let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream h2c connection to {addr}: {e}");
            }
        });
        lock(&self.h2c).insert(addr, sender.clone());
        Ok(sender.send_request(req).await?)
    }

    /// Closes connections idle longer than the idle timeout, and forgets closed ones.
    pub fn sweep(&self) {
        let now = Instant::now();
        lock(&self.http1).retain(|_, idle| {
            idle.retain(|i| {
                !i.sender.is_closed() && now.duration_since(i.since) < self.idle_timeout
            });
            !idle.is_empty()
        });
        lock(&self.streams).retain(|_, idle| {
            idle.retain(|i| now.duration_since(i.since) < self.idle_timeout);
            !idle.is_empty()
        });
        lock(&self.h2c).retain(|_, sender| !sender.is_closed());
    }

    /// How often [`Pool::sweep`] should run.
    pub fn sweep_period(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// An HTTP/1.1 connection lent to one request until its response body ends.
struct Lease {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: http1::SendRequest<ProxyBody>,
}

/// Gives the connection of `lease`, if any, back to its pool.
fn give_back(lease: &mut Option<Lease>) {
    if let Some(Lease { pool, addr, sender }) = lease.take() {
        pool.checkin_http1(addr, sender);
    }
}

pin_project! {
    /// An upstream response body; reading it to its end gives its connection back to the
    /// pool (dropping it earlier closes the connection).
    pub struct Leased {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }
}

impl Leased {
    fn new(inner: Incoming, lease: Option<Lease>) -> Leased {
        let mut body = Leased { inner, lease };
        if body.inner.is_end_stream() {
            give_back(&mut body.lease);
        }
        body
    }
}

impl Body for Leased {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let poll = inner.as_mut().poll_frame(cx);
        match &poll {
            Poll::Ready(None) => give_back(this.lease),
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => give_back(this.lease),
            Poll::Ready(Some(Err(_))) => {
                this.lease.take();
            }
            _ => {}
        }
        poll.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
