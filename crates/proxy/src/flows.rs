//! Services and EndpointSlices reduced to what the data path needs, per node.

use flatnet_controller::endpoints::by_service;
use flatnet_controller::services::{is_headless, load_balancer_ips, service_type};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::IpAddr;

/// Annotation choosing the balancing algorithm of a Service.
pub const ALGORITHM_ANNOTATION: &str = "flatnet.dev/load-balancing";

/// How a Service spreads new connections over its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Uniformly at random (kube-proxy's behaviour; the default).
    Random,
    /// In turn, one counter per Service port.
    RoundRobin,
    /// Consistent hashing of the client address over a Maglev table: a client keeps its
    /// backend, and adding an endpoint moves few clients.
    Maglev,
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    /// Pod IP.
    pub ip: IpAddr,
    /// Pod port.
    pub port: u16,
    /// Whether it runs on this node.
    pub local: bool,
}

/// One Service port of one family: everything its chains need.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// `namespace/name/protocol/port`, for names and comments.
    pub id: String,
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// Whether this flow is IPv4.
    pub v4: bool,
    /// The ClusterIP of this family, if any.
    pub cluster_ip: Option<IpAddr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress IPs of this family.
    pub lb_ips: Vec<IpAddr>,
    /// External IPs of this family.
    pub external_ips: Vec<IpAddr>,
    /// Source ranges allowed to the LoadBalancer IPs (empty: all).
    pub source_ranges: Vec<IpNet>,
    /// Endpoints used for traffic: ready ones, else serving-and-terminating ones.
    pub backends: Vec<Backend>,
    /// ClientIP affinity timeout in seconds.
    pub affinity: Option<u32>,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
}

impl Flow {
    /// The Service this flow belongs to, `namespace/name`.
    pub fn service(&self) -> &str {
        let end = self
            .id
            .match_indices('/')
            .nth(1)
            .map_or(self.id.len(), |(i, _)| i);
        &self.id[..end]
    }
}

fn proto_name(p: Option<&str>) -> &'static str {
    match p.unwrap_or("TCP") {
        "UDP" => "udp",
        "SCTP" => "sctp",
        _ => "tcp",
    }
}

/// Reduces Services and their slices to flows, as seen from node `node`.
pub fn flows(services: &[Service], slices: &[EndpointSlice], node: &str) -> Vec<Flow> {
    let mut out = Vec::new();
    // Slices by their Service, so that each Service finds its own in constant time.
    let by_service = by_service(slices);
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if service_type(spec) == "ExternalName" || is_headless(spec) {
            continue;
        }
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mine: &[&EndpointSlice] = by_service
            .get(&(ns.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let algorithm = match svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALGORITHM_ANNOTATION))
            .map(String::as_str)
        {
            Some("round-robin") => Algorithm::RoundRobin,
            Some("maglev") => Algorithm::Maglev,
            _ => Algorithm::Random,
        };
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800) as u32
        });
        let lb_ips = load_balancer_ips(svc);
        let external_ips: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|i| i.parse().ok())
            .collect();
        let source_ranges: Vec<IpNet> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.parse().ok())
            .collect();
        let families: Vec<bool> = spec
            .ip_families
            .iter()
            .flatten()
            .map(|f| f == "IPv4")
            .collect();
        for sp in spec.ports.iter().flatten() {
            let proto = proto_name(sp.protocol.as_deref());
            let port_name = sp.name.clone().unwrap_or_default();
            for &v4 in &families {
                let cluster_ip = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .filter_map(|i| i.parse::<IpAddr>().ok())
                    .find(|i| i.is_ipv4() == v4);
                let mut ready = Vec::new();
                let mut terminating = Vec::new();
                for slice in mine.iter().filter(|s| (s.address_type == "IPv4") == v4) {
                    let Some(port) = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| {
                            p.name.clone().unwrap_or_default() == port_name
                                && proto_name(p.protocol.as_deref()) == proto
                        })
                        .and_then(|p| p.port)
                    else {
                        continue;
                    };
                    for e in &slice.endpoints {
                        let c = e.conditions.clone().unwrap_or_default();
                        let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                            continue;
                        };
                        let b = Backend {
                            ip,
                            port: port as u16,
                            local: e.node_name.as_deref() == Some(node),
                        };
                        if c.ready.unwrap_or(true) {
                            ready.push(b);
                        } else if c.serving.unwrap_or(false) && c.terminating.unwrap_or(false) {
                            terminating.push(b);
                        }
                    }
                }
                let mut backends = if ready.is_empty() { terminating } else { ready };
                backends.sort();
                out.push(Flow {
                    id: format!(
                        "{ns}/{name}/{proto}/{}",
                        if port_name.is_empty() {
                            sp.port.to_string()
                        } else {
                            port_name.clone()
                        }
                    ),
                    proto,
                    v4,
                    cluster_ip,
                    port: sp.port as u16,
                    node_port: sp.node_port.map(|p| p as u16),
                    lb_ips: lb_ips
                        .iter()
                        .filter(|i| i.is_ipv4() == v4)
                        .copied()
                        .collect(),
                    external_ips: external_ips
                        .iter()
                        .filter(|i| i.is_ipv4() == v4)
                        .copied()
                        .collect(),
                    source_ranges: source_ranges
                        .iter()
                        .filter(|r| r.addr().is_ipv4() == v4)
                        .copied()
                        .collect(),
                    backends,
                    affinity,
                    external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                    internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                    algorithm,
                });
            }
        }
    }
    out
}
