//! flatnet's L7 reverse proxy for Ingress.
//!
//! [`serve`] (or [`Proxy::bind`] then [`Proxy::run`]) listens for plain HTTP (HTTP/1.1 and
//! h2c with prior knowledge) and TLS (SNI picks the certificate, ALPN h2 and http/1.1), routes
//! each request with a [`flatnet_l7_routes::Table`] and streams it to an upstream endpoint
//! (round robin, least request or consistent hash; passive health; retries on connect
//! failure). Connections are served by worker threads, one per core by default, each with
//! its own runtime and upstream connection pool. The tables come from a watch channel and are swapped atomically: listeners,
//! requests in flight, WebSockets and long downloads are not disturbed. [`manifests`] builds
//! tables from Kubernetes YAML files and watches them; [`cli`] is the command line.
//!
//! Limits (defaults, see [`Limits`]): request head 32 KiB and 100 header fields (more: 431),
//! 10 s to send a request head (then the connection is closed), 30 s between request body
//! frames (then 408 and close), framing that could smuggle a request answered 400 and never
//! forwarded (see [`framing`]).

pub mod access;
mod admin;
mod attempt;
pub mod balance;
mod body;
pub mod cli;
mod config;
mod conn;
mod deadline;
mod exchange;
mod forward;
pub mod framing;
mod h1;
pub mod headers;
mod listener;
pub mod manifests;
mod metrics;
mod pool;
mod proxy;
mod state;
mod tls;
mod upstream;
mod worker;

pub use config::{AccessLog, Health, Limits, ProxyConfig};
pub use proxy::{X_FLATNET_ROUTE, X_FLATNET_UPSTREAM};
pub use tls::DEFAULT_NAME as DEFAULT_CERTIFICATE_NAME;

use flatnet_l7_routes::Table;
use state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use worker::Workers;

/// A proxy whose listeners are bound but not yet serving.
pub struct Proxy {
    config: ProxyConfig,
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    admin: Option<TcpListener>,
}

fn local(l: &Option<TcpListener>) -> Option<SocketAddr> {
    l.as_ref().and_then(|l| l.local_addr().ok())
}

impl Proxy {
    /// Binds the configured listeners (port 0 picks a free port).
    pub async fn bind(config: ProxyConfig) -> anyhow::Result<Proxy> {
        let bind = |a: Option<SocketAddr>| a.map(listener::bind).transpose();
        Ok(Proxy {
            http: bind(config.http)?,
            https: bind(config.https)?,
            admin: bind(config.admin)?,
            config,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        local(&self.http)
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        local(&self.https)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        local(&self.admin)
    }

    /// Serves until the process ends, with the latest table of `tables`.
    pub async fn run(self, mut tables: watch::Receiver<Arc<Table>>) -> anyhow::Result<()> {
        let default_cert = tls::self_signed()?;
        let table = tables.borrow_and_update().clone();
        let shared = Arc::new(Shared::new(self.config, table, default_cert));
        let workers = Arc::new(Workers::start(shared.config.workers, &shared)?);
        if let Some(l) = self.http {
            tokio::spawn(listener::accept(l, workers.clone(), None));
        }
        if let Some(l) = self.https {
            let config = tls::server_config(shared.certs.clone())?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            tokio::spawn(listener::accept(l, workers.clone(), Some(acceptor)));
        }
        drop(workers);
        if let Some(l) = self.admin {
            tokio::spawn(admin::accept(l, shared.clone()));
        }
        while tables.changed().await.is_ok() {
            let table = tables.borrow_and_update().clone();
            shared.install(table);
        }
        // The sender is gone: keep serving the last table.
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Binds the listeners of `config` and serves until the process ends, swapping the route
/// table (and its certificates) whenever `tables` changes.
pub async fn serve(config: ProxyConfig, tables: watch::Receiver<Arc<Table>>) -> anyhow::Result<()> {
    Proxy::bind(config).await?.run(tables).await
}
