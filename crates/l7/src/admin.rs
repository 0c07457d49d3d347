//! The admin listener: `/metrics` (Prometheus text format) and `/healthz`.

use crate::body::{self, ProxyBody};
use crate::state::Shared;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The answer to an admin request.
fn answer<B>(shared: &Shared, req: &Request<B>) -> Response<ProxyBody> {
    let (status, text, kind) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            shared.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_string(),
            "text/plain",
        ),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// Serves admin requests until the process ends.
pub async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = crate::listener::next(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = answer(&shared, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
