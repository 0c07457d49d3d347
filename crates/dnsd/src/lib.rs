//! The cluster DNS server of a lab cluster: turns flatnet's desired state and its nodes'
//! reports into a [`flatnet_dns::Snapshot`], serves it on UDP and TCP, and rebuilds the zone
//! whenever the store changes. It answers only once the store has been read (never NXDOMAIN
//! from an empty zone).

use anyhow::{Context, Result};
use flatnet_controller::endpoints::{slices, SERVICE_NAME_LABEL};
use flatnet_controller::services::{cluster_ips, is_headless, service_type};
use flatnet_dns::{Config, EndpointView, PodView, PodsMode, PortView, ServiceView, Snapshot, Zone};
use flatnet_model::state::{ClusterDir, NodeStatus, State, StoreNotices, STORE_FALLBACK};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// Port of `/metrics`, `/healthz` and `/readyz` (CoreDNS's metrics port).
pub const METRICS_PORT: u16 = 9153;

/// The DNS view of a cluster: Services, endpoints (from the EndpointSlices), pods.
pub fn snapshot(state: &State, statuses: &BTreeMap<String, NodeStatus>) -> Snapshot {
    let mut snap = Snapshot {
        namespaces: state.namespaces.clone(),
        ..Default::default()
    };
    for svc in &state.services {
        let Some(spec) = &svc.spec else { continue };
        let external = (service_type(spec) == "ExternalName")
            .then(|| spec.external_name.clone())
            .flatten();
        snap.services.push(ServiceView {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            cluster_ips: cluster_ips(spec),
            headless: is_headless(spec),
            external_name: external,
            ports: spec
                .ports
                .iter()
                .flatten()
                .map(|p| PortView {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.port as u16,
                })
                .collect(),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        });
    }
    for slice in slices(state, statuses) {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            continue;
        };
        let ports: Vec<PortView> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortView {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.port? as u16,
                })
            })
            .collect();
        for e in &slice.endpoints {
            // A pod's hostname names its endpoint when its subdomain is the Service.
            let pod = e
                .target_ref
                .as_ref()
                .and_then(|r| state.pod(&ns, r.name.as_deref().unwrap_or("")));
            let hostname = e.hostname.clone().or_else(|| {
                pod.filter(|p| p.subdomain.as_deref() == Some(service.as_str()))
                    .and_then(|p| p.hostname.clone())
            });
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                snap.endpoints.push(EndpointView {
                    namespace: ns.clone(),
                    service: service.clone(),
                    ip,
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false),
                    hostname: hostname.clone(),
                    ports: ports.clone(),
                });
            }
        }
    }
    for p in &state.pods {
        if let Some(st) = statuses
            .get(&p.node)
            .and_then(|s| s.pods.get(&p.key()))
            .filter(|s| s.uid == p.uid)
        {
            for ip in &st.ips {
                snap.pods.push(PodView {
                    namespace: p.namespace.clone(),
                    ip: *ip,
                });
            }
        }
    }
    snap
}

fn load(dir: &ClusterDir, cfg: &Config) -> Result<(Zone, Option<SystemTime>)> {
    let state = dir.read_state()?;
    let statuses = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), dir.read_node_status(&n.name)))
        .collect();
    Ok((
        Zone::new(cfg.clone(), snapshot(&state, &statuses)),
        dir.store_mtime(&state),
    ))
}

/// Keeps `zone` in step with cluster `dir`'s store until the cluster is gone: the zone is
/// made again whenever the store changes.
fn follow(dir: &ClusterDir, cfg: &Config, zone: &RwLock<Zone>) -> Result<()> {
    let mut notices = StoreNotices::new(dir);
    let mut seen = None;
    loop {
        let Ok(state) = dir.read_state() else {
            tracing::info!("cluster state is gone; dns exits");
            return Ok(());
        };
        let now = dir.store_mtime(&state);
        if now != seen || !zone.read().expect("not poisoned").synced() {
            match load(dir, cfg) {
                Ok((z, m)) => {
                    *zone.write().expect("not poisoned") = z;
                    seen = m;
                }
                Err(e) => tracing::warn!("reading the store: {e:#}"),
            }
        }
        notices.wait(Some(&state), STORE_FALLBACK);
    }
}

/// Serves cluster `dir`'s zone on `listen` until the cluster is gone; prints `ready` on
/// stdout once listening (the agent waits for it). Until the store has been read, names in
/// the zone get SERVFAIL and `/readyz` says 503.
pub fn run(
    dir: ClusterDir,
    domain: &str,
    listen: SocketAddr,
    upstream: Vec<SocketAddr>,
    pods: PodsMode,
) -> Result<()> {
    let name = hickory_proto::rr::Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
        .with_context(|| format!("cluster domain {domain:?}"))?;
    let cfg = Config {
        pods,
        ..Config::new(name)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let zone = Arc::new(RwLock::new(Zone::unsynced(cfg.clone())));
        let metrics = Arc::new(flatnet_dns::metrics::Metrics::new());
        let _server =
            flatnet_dns::serve_udp_tcp(zone.clone(), listen, upstream, metrics.clone()).await?;
        let ready = zone.clone();
        let _endpoints = flatnet_httpd::listen(METRICS_PORT, move |req| {
            use flatnet_httpd::{reply, StatusCode};
            match req.uri().path() {
                "/metrics" => reply(
                    StatusCode::OK,
                    metrics.text(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                "/healthz" => reply(StatusCode::OK, "ok\n".into(), "text/plain"),
                "/readyz" if ready.read().expect("not poisoned").synced() => {
                    reply(StatusCode::OK, "ok\n".into(), "text/plain")
                }
                "/readyz" => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store has not been read yet\n".into(),
                    "text/plain",
                ),
                _ => reply(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
            }
        })
        .await?;
        println!("ready");
        tokio::task::spawn_blocking(move || follow(&dir, &cfg, &zone)).await?
    })
}
