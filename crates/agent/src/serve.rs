//! The agent's HTTP endpoints, as kube-proxy has them: `/metrics` and `/healthz` on the
//! metrics port, and one health-check NodePort per `externalTrafficPolicy: Local`
//! LoadBalancer, answering 200 while the node has local endpoints and 503 otherwise.

use anyhow::Result;
use flatnet_httpd::{listen, reply, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Port of `/metrics` and `/healthz` (kube-proxy's metrics port).
pub const METRICS_PORT: u16 = 10249;

/// The agent's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    /// Seconds one Service sync took (compute and apply).
    pub sync_seconds: Histogram,
    /// Seconds from a change of the desired state (file written) to its program applied.
    pub programming_seconds: Histogram,
    /// Full syncs done.
    pub full_syncs: Counter,
    /// Partial syncs done.
    pub partial_syncs: Counter,
    /// Service ports programmed (flows).
    pub service_ports: Gauge,
    /// Endpoints programmed, over all Service ports.
    pub endpoints: Gauge,
    /// Chains and set elements in the table.
    pub rules: Gauge,
}

impl Metrics {
    /// Registers every metric under the `flatnet_proxy_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flatnet_proxy");
        let m = Self {
            sync_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            programming_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            full_syncs: Counter::default(),
            partial_syncs: Counter::default(),
            service_ports: Gauge::default(),
            endpoints: Gauge::default(),
            rules: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sync_duration_seconds",
            "Time one Service sync took",
            m.sync_seconds.clone(),
        );
        registry.register(
            "network_programming_duration_seconds",
            "Time from a change of the desired state to its program applied",
            m.programming_seconds.clone(),
        );
        registry.register(
            "full_syncs",
            "Full syncs (whole table replaced)",
            m.full_syncs.clone(),
        );
        registry.register(
            "partial_syncs",
            "Partial syncs (only what changed)",
            m.partial_syncs.clone(),
        );
        registry.register(
            "service_ports",
            "Service ports programmed",
            m.service_ports.clone(),
        );
        registry.register(
            "endpoints",
            "Endpoints programmed over all Service ports",
            m.endpoints.clone(),
        );
        registry.register(
            "rules",
            "Chains and set elements in the table",
            m.rules.clone(),
        );
        Self { registry, ..m }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String");
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A Service's health check as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Ready endpoints on this node.
    pub local_endpoints: usize,
}

type Checks = Arc<Mutex<BTreeMap<u16, HealthCheck>>>;

/// The running servers.
pub struct Servers {
    rt: tokio::runtime::Runtime,
    checks: Checks,
    listeners: BTreeMap<u16, tokio::task::JoinHandle<()>>,
}

impl Servers {
    /// Starts `/metrics` and `/healthz` on `metrics_port` in the calling thread's namespace.
    pub fn start(metrics: Arc<Metrics>, metrics_port: u16) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let m = metrics.clone();
        let handle = rt.block_on(listen(metrics_port, move |req| match req.uri().path() {
            "/metrics" => reply(
                StatusCode::OK,
                m.text(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            "/healthz" => reply(StatusCode::OK, "ok\n".into(), "text/plain"),
            _ => reply(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        }))?;
        let mut listeners = BTreeMap::new();
        listeners.insert(metrics_port, handle);
        Ok(Self {
            rt,
            checks: Arc::default(),
            listeners,
        })
    }

    /// Serves exactly these health-check ports with these counts.
    pub fn set_health_checks(&mut self, want: BTreeMap<u16, HealthCheck>) -> Result<()> {
        let gone: Vec<u16> = self
            .checks
            .lock()
            .expect("not poisoned")
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(h) = self.listeners.remove(&p) {
                h.abort();
            }
        }
        let new: Vec<u16> = want
            .keys()
            .filter(|p| !self.listeners.contains_key(p))
            .copied()
            .collect();
        *self.checks.lock().expect("not poisoned") = want;
        for port in new {
            let checks = self.checks.clone();
            let handle = self.rt.block_on(listen(port, move |_| {
                let c = checks.lock().expect("not poisoned").get(&port).cloned();
                let Some(c) = c else {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "{}\n".into(),
                        "application/json",
                    );
                };
                let body = serde_json::json!({
                    "service": {"namespace": c.namespace, "name": c.name},
                    "localEndpoints": c.local_endpoints,
                    "serviceProxyHealthy": true,
                });
                let status = if c.local_endpoints > 0 {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                reply(status, format!("{body}\n"), "application/json")
            }))?;
            self.listeners.insert(port, handle);
        }
        Ok(())
    }
}
