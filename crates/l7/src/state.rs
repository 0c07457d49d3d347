//! What every connection shares: settings, the current route table and certificates
//! (swapped atomically), upstream state and metrics.

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::tls::CertStore;
use crate::upstream::{Installed, Upstreams};
use arc_swap::ArcSwap;
use flatnet_l7_routes::Table;
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// The proxy's shared state.
pub struct Shared {
    /// Settings.
    pub config: ProxyConfig,
    /// The route table requests are matched against, with its backends' state.
    pub installed: ArcSwap<Installed>,
    /// Certificates for TLS handshakes.
    pub certs: Arc<ArcSwap<CertStore>>,
    /// Served when no certificate fits.
    default_cert: Arc<CertifiedKey>,
    /// Upstream state.
    pub upstreams: Upstreams,
    /// Metrics.
    pub metrics: Metrics,
}

impl Shared {
    /// State serving `table`.
    pub fn new(config: ProxyConfig, table: Arc<Table>, default_cert: Arc<CertifiedKey>) -> Shared {
        let (store, warnings) = CertStore::build(table.certificates(), default_cert.clone());
        log_warnings(&warnings);
        let upstreams = Upstreams::new(config.workers);
        let metrics = Metrics::new(config.workers);
        Shared {
            installed: ArcSwap::from_pointee(upstreams.install(table)),
            upstreams,
            config,
            certs: Arc::new(ArcSwap::from_pointee(store)),
            default_cert,
            metrics,
        }
    }

    /// Serves `table` from now on: certificates first, then routes; requests in flight keep
    /// the table they started with. State of endpoints no longer in any route is dropped.
    pub fn install(&self, table: Arc<Table>) {
        let (store, warnings) = CertStore::build(table.certificates(), self.default_cert.clone());
        log_warnings(&warnings);
        log_warnings(&table.warnings());
        self.certs.store(Arc::new(store));
        self.installed
            .store(Arc::new(self.upstreams.install(table)));
    }
}

fn log_warnings(warnings: &[impl AsRef<str>]) {
    for w in warnings {
        tracing::warn!("{}", w.as_ref());
    }
}
