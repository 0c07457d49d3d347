//! A tiny HTTP/1.1 server for the endpoints components expose: `/metrics`, `/healthz`,
//! `/readyz`, health-check NodePorts. Each request is answered by a plain function.

use anyhow::Result;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::{Ipv6Addr, SocketAddr};

pub use hyper::{Request, Response, StatusCode};

/// A response body.
pub type Body = Full<Bytes>;

/// A response with `status`, `body` and content type `kind`.
pub fn reply(status: StatusCode, body: String, kind: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Serves `answer` on `[::]:port` (both families) until the returned task is aborted.
/// Must be called inside a Tokio runtime.
pub async fn listen<F>(port: u16, answer: F) -> Result<tokio::task::JoinHandle<()>>
where
    F: Fn(&Request<hyper::body::Incoming>) -> Response<Body> + Send + Sync + Clone + 'static,
{
    let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    sock.set_only_v6(false)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    sock.listen(128)?;
    let listener = tokio::net::TcpListener::from_std(sock.into())?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}
