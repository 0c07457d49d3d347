//! Listening sockets and client connections: acceptors hand connections to the workers,
//! which serve them, plain (HTTP/1.1 and h2c prior knowledge) or TLS, with hyper-util's auto
//! builder and the configured limits.

use crate::config::Limits;
use crate::conn::{Conn, Scanned};
use crate::h1;
use crate::proxy;
use crate::state::Shared;
use crate::worker::{Accepted, Local, Workers};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Smallest read buffer hyper accepts.
pub const MIN_BUF: usize = 8192;

/// Binds a listening socket; `[::]` also takes IPv4.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(!addr.ip().is_unspecified())?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))?;
    sock.listen(1024)?;
    Ok(TcpListener::from_std(sock.into())?)
}

/// The connection builder with the client limits.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF))
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// The next accepted connection; errors (e.g. out of file descriptors) are logged and
/// waited out.
pub async fn next(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            // A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6; log and forward
            // them as plain IPv4.
            Ok((stream, peer)) => {
                return (
                    stream,
                    SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                )
            }
            Err(e) => {
                tracing::warn!("accept on {:?}: {e}", listener.local_addr().ok());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections until the process ends and hands them to the workers; `tls` makes
/// them TLS.
pub async fn accept(listener: TcpListener, workers: Arc<Workers>, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, client) = next(&listener).await;
        let _ = stream.set_nodelay(true);
        match stream.into_std() {
            Ok(stream) => workers.hand(Accepted {
                stream,
                client,
                tls: tls.clone(),
            }),
            Err(e) => tracing::warn!("connection from {client}: {e}"),
        }
    }
}

/// What a worker serves its client connections with.
pub struct Serving {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The worker's own state.
    pub local: Arc<Local>,
    /// The worker's connection builder.
    pub builder: Arc<auto::Builder<TokioExecutor>>,
}

impl Serving {
    /// Serves one client connection to its end (after a TLS handshake when `tls` is set).
    pub async fn serve(self, stream: TcpStream, client: SocketAddr, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.http(stream, client, false).await,
            Some(acceptor) => {
                let timeout = self.shared.config.limits.header_read_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.http(stream, client, true).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {client}: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {client} timed out"),
                }
            }
        }
    }

    async fn http<IO>(self, io: IO, client: SocketAddr, tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Serving {
            shared,
            local,
            builder,
        } = self;
        let conn = Conn::new(client, tls);
        let mut io = io;
        let fast = h1::Fast {
            shared: &shared,
            local: &local,
            conn: &conn,
        };
        let Some(read) = fast.serve(&mut io).await else {
            return;
        };
        let limit = shared.config.limits.max_header_bytes.max(MIN_BUF);
        let io = TokioIo::new(Scanned::new(io, read, conn.clone(), limit));
        // Boxed: the request's future is over 5 KB, and HTTP/2 spawns a task per stream that
        // holds it; unboxed, the spawn and the task's completion copy it whole each time.
        let service = hyper::service::service_fn(move |req| {
            Box::pin(proxy::handle(
                shared.clone(),
                conn.clone(),
                local.clone(),
                req,
            ))
        });
        if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
            tracing::debug!("connection from {client}: {e}");
        }
    }
}
