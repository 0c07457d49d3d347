//! Service admission, as the API server does it: validation, then ClusterIP(s) per family,
//! NodePorts, the health-check NodePort and LoadBalancer IPs, kept across re-applies.

use flatnet_ipam::service::{
    next_pool_ip, next_port, next_service_ip, valid_service_ip, NODE_PORT_RANGE,
};
use flatnet_model::state::State;
use flatnet_model::validate::Checker;
use flatnet_model::Invalid;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus,
};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// `spec.type`, defaulted.
pub fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

fn key(s: &Service) -> (String, String) {
    (
        s.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// What other Services hold: ClusterIPs, NodePorts, LoadBalancer IPs.
struct Taken {
    ips: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
    lb: BTreeSet<IpAddr>,
}

fn taken_by_others(state: &State, me: &(String, String)) -> Taken {
    let mut t = Taken {
        ips: BTreeSet::new(),
        ports: BTreeSet::new(),
        lb: BTreeSet::new(),
    };
    for s in state.services.iter().filter(|s| key(s) != *me) {
        let Some(spec) = &s.spec else { continue };
        for ip in spec.cluster_ips.iter().flatten() {
            if let Ok(ip) = ip.parse() {
                t.ips.insert(ip);
            }
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port {
                t.ports.insert(np as u16);
            }
        }
        if let Some(h) = spec.health_check_node_port {
            t.ports.insert(h as u16);
        }
        for i in s
            .status
            .iter()
            .filter_map(|st| st.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
        {
            if let Some(ip) = i.ip.as_ref().and_then(|ip| ip.parse().ok()) {
                t.lb.insert(ip);
            }
        }
    }
    t
}

fn family_of(name: &str) -> Option<bool> {
    match name {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        _ => None,
    }
}

/// Validates `svc` and fills in its allocations, keeping those of `old` (the same Service
/// as applied before). Returns every problem found; nothing is allocated then.
pub fn admit(
    state: &State,
    file: &str,
    svc: &Service,
    old: Option<&Service>,
) -> Result<Service, Vec<Invalid>> {
    let me = key(svc);
    let mut c = Checker::new(file, format!("Service/{}/{}", me.0, me.1));
    let mut out = svc.clone();
    out.metadata.namespace = Some(me.0.clone());
    let Some(spec) = out.spec.as_mut() else {
        c.fail("spec", "missing");
        return Err(c.problems);
    };
    let old_spec = old.and_then(|o| o.spec.clone()).unwrap_or_default();
    let kind = service_type(spec).to_string();
    if !matches!(
        kind.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        c.fail(
            "spec.type",
            format!("{kind:?} must be ClusterIP, NodePort, LoadBalancer or ExternalName"),
        );
    }
    if kind == "ExternalName" {
        if spec
            .external_name
            .as_deref()
            .is_none_or(|n| !flatnet_model::validate::is_dns_subdomain(n.trim_end_matches('.')))
        {
            c.fail(
                "spec.externalName",
                "an ExternalName Service needs a DNS name",
            );
        }
        return if c.problems.is_empty() {
            Ok(out)
        } else {
            Err(c.problems)
        };
    }
    let taken = taken_by_others(state, &me);
    let headless = is_headless(spec) || (spec.cluster_ip.is_none() && is_headless(&old_spec));
    let node_ports = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    let mut used_ports = taken.ports.clone();
    let ports = spec.ports.get_or_insert_with(Vec::new);
    if ports.is_empty() && !headless {
        c.fail("spec.ports", "a Service needs at least one port");
    }
    let many = ports.len() > 1;
    let mut seen = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let f = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&p.port) {
            c.fail(
                format!("{f}.port"),
                format!("{} is not a port (1-65535)", p.port),
            );
        }
        let proto = p.protocol.get_or_insert_with(|| "TCP".into()).clone();
        if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") {
            c.fail(
                format!("{f}.protocol"),
                format!("{proto:?} must be TCP, UDP or SCTP"),
            );
        }
        if many && p.name.as_deref().unwrap_or("").is_empty() {
            c.fail(
                format!("{f}.name"),
                "required when a Service has more than one port",
            );
        }
        if seen.contains(&(proto.clone(), p.port)) {
            c.fail(
                format!("{f}.port"),
                format!("{proto} {} is listed twice", p.port),
            );
        }
        seen.push((proto, p.port));
        if p.target_port.is_none() {
            p.target_port =
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p.port));
        }
        if node_ports {
            let kept = old_spec
                .ports
                .iter()
                .flatten()
                .find(|o| o.port == p.port && o.protocol == p.protocol)
                .and_then(|o| o.node_port);
            match p.node_port.or(kept) {
                Some(np) if !u16::try_from(np).is_ok_and(|p| NODE_PORT_RANGE.contains(&p)) => {
                    c.fail(
                        format!("{f}.nodePort"),
                        format!(
                            "{np} is outside the NodePort range {}-{}",
                            NODE_PORT_RANGE.start(),
                            NODE_PORT_RANGE.end()
                        ),
                    );
                }
                Some(np) if used_ports.contains(&(np as u16)) => {
                    c.fail(
                        format!("{f}.nodePort"),
                        format!("{np} is already allocated"),
                    );
                }
                Some(np) => {
                    used_ports.insert(np as u16);
                    p.node_port = Some(np);
                }
                None => match next_port(NODE_PORT_RANGE, &used_ports) {
                    Some(np) => {
                        used_ports.insert(np);
                        p.node_port = Some(np as i32);
                    }
                    None => c.fail(format!("{f}.nodePort"), "the NodePort range is full"),
                },
            }
        } else if p.node_port.is_some() {
            c.fail(
                format!("{f}.nodePort"),
                format!("only NodePort and LoadBalancer Services have node ports, not {kind}"),
            );
        }
    }
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    if kind == "LoadBalancer" && local {
        let hc = spec
            .health_check_node_port
            .or(old_spec.health_check_node_port);
        match hc {
            Some(h) if used_ports.contains(&(h as u16)) => c.fail(
                "spec.healthCheckNodePort",
                format!("{h} is already allocated"),
            ),
            Some(h) => spec.health_check_node_port = Some(h),
            None => {
                spec.health_check_node_port = next_port(NODE_PORT_RANGE, &used_ports).map(i32::from)
            }
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            c.fail(
                format!("spec.externalIPs[{i}]"),
                format!("{ip:?} is not an IP address"),
            );
        }
    }
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        if r.parse::<IpNet>().is_err() {
            c.fail(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("{r:?} is not a CIDR"),
            );
        }
    }
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|a| a.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        if !(1..=86400).contains(&t) {
            c.fail(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{t} must be between 1 and 86400"),
            );
        }
    }
    if let Some(a) = &spec.session_affinity {
        if !matches!(a.as_str(), "None" | "ClientIP") {
            c.fail(
                "spec.sessionAffinity",
                format!("{a:?} must be None or ClientIP"),
            );
        }
    }
    assign_cluster_ips(&mut c, state, spec, &old_spec, &taken.ips);
    if kind == "LoadBalancer" && c.problems.is_empty() {
        let kept = old
            .and_then(|o| o.status.as_ref())
            .and_then(|s| s.load_balancer.clone())
            .filter(|lb| lb.ingress.as_ref().is_some_and(|i| !i.is_empty()));
        let lb = match kept {
            Some(lb) => Some(lb),
            None => {
                let (a, b) = state.config.load_balancer_pool;
                match next_pool_ip(IpAddr::V4(a), IpAddr::V4(b), &taken.lb) {
                    Some(ip) => Some(LoadBalancerStatus {
                        ingress: Some(vec![LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        }]),
                    }),
                    None => {
                        c.fail(
                            "status.loadBalancer",
                            format!("the pool {a}-{b} is exhausted"),
                        );
                        None
                    }
                }
            }
        };
        out.status = Some(ServiceStatus {
            load_balancer: lb,
            ..Default::default()
        });
    }
    if c.problems.is_empty() {
        Ok(out)
    } else {
        Err(c.problems)
    }
}

/// Chooses the families (`ipFamilies` / `ipFamilyPolicy`) and the ClusterIPs.
fn assign_cluster_ips(
    c: &mut Checker,
    state: &State,
    spec: &mut ServiceSpec,
    old: &ServiceSpec,
    taken: &BTreeSet<IpAddr>,
) {
    let ranges = &state.config.service_cidrs;
    let policy = spec
        .ip_family_policy
        .clone()
        .unwrap_or_else(|| "SingleStack".into());
    if !matches!(
        policy.as_str(),
        "SingleStack" | "PreferDualStack" | "RequireDualStack"
    ) {
        c.fail(
            "spec.ipFamilyPolicy",
            format!("{policy:?} must be SingleStack, PreferDualStack or RequireDualStack"),
        );
        return;
    }
    let mut families: Vec<bool> = Vec::new();
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        match family_of(f) {
            Some(v4) if ranges.iter().any(|r| r.addr().is_ipv4() == v4) => families.push(v4),
            Some(_) => c.fail(
                format!("spec.ipFamilies[{i}]"),
                format!("the cluster has no {f} service range"),
            ),
            None => c.fail(
                format!("spec.ipFamilies[{i}]"),
                format!("{f:?} must be IPv4 or IPv6"),
            ),
        }
    }
    if policy == "RequireDualStack" && ranges.len() < 2 {
        c.fail(
            "spec.ipFamilyPolicy",
            "RequireDualStack on a single-stack cluster",
        );
        return;
    }
    if families.is_empty() {
        families.push(ranges[0].addr().is_ipv4());
    }
    if policy != "SingleStack" {
        for r in ranges {
            if !families.contains(&r.addr().is_ipv4()) {
                families.push(r.addr().is_ipv4());
            }
        }
    } else {
        families.truncate(1);
    }
    spec.ip_family_policy = Some(policy);
    spec.ip_families = Some(
        families
            .iter()
            .map(|v4| if *v4 { "IPv4" } else { "IPv6" }.to_string())
            .collect(),
    );
    if is_headless(spec) || (spec.cluster_ip.is_none() && is_headless(old)) {
        spec.cluster_ip = Some("None".into());
        spec.cluster_ips = Some(vec!["None".into()]);
        return;
    }
    // Requested addresses: clusterIPs, else clusterIP, else what the Service had.
    let mut requested: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if requested.is_empty() {
        if let Some(ip) = spec.cluster_ip.clone().filter(|s| !s.is_empty()) {
            requested.push(ip);
        }
    }
    if requested.is_empty() {
        requested = old.cluster_ips.clone().unwrap_or_default();
    }
    let mut ips = Vec::new();
    let mut taken = taken.clone();
    for (i, v4) in families.iter().enumerate() {
        let range = ranges
            .iter()
            .find(|r| r.addr().is_ipv4() == *v4)
            .expect("checked");
        let field = if spec.cluster_ips.is_some() {
            format!("spec.clusterIPs[{i}]")
        } else {
            "spec.clusterIP".to_string()
        };
        let ip = match requested.get(i) {
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() != *v4 => {
                    c.fail(
                        field,
                        format!(
                            "{ip} is not of family {}",
                            if *v4 { "IPv4" } else { "IPv6" }
                        ),
                    );
                    continue;
                }
                Ok(ip) if !valid_service_ip(range, ip) => {
                    c.fail(field, format!("{ip} is not in the service range {range}"));
                    continue;
                }
                Ok(ip) if taken.contains(&ip) => {
                    c.fail(field, format!("{ip} is already allocated"));
                    continue;
                }
                Ok(ip) => ip,
                Err(_) => {
                    c.fail(field, format!("{text:?} is not an IP address"));
                    continue;
                }
            },
            None => match next_service_ip(range, &taken) {
                Some(ip) => ip,
                None => {
                    c.fail(
                        "spec.clusterIP",
                        format!("the service range {range} is full"),
                    );
                    continue;
                }
            },
        };
        taken.insert(ip);
        ips.push(ip.to_string());
    }
    spec.cluster_ip = ips.first().cloned();
    spec.cluster_ips = Some(ips);
}

/// The LoadBalancer IPs written to a Service's status.
pub fn load_balancer_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_ref()?.parse().ok())
        .collect()
}

/// The ClusterIPs of the cluster DNS Service (`kube-system/kube-dns`), if it exists.
pub fn cluster_dns_ips(state: &State) -> Vec<IpAddr> {
    state
        .services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some("kube-system")
                && s.metadata.name.as_deref() == Some(flatnet_model::names::CLUSTER_DNS_SERVICE)
        })
        .and_then(|s| s.spec.as_ref())
        .map(cluster_ips)
        .unwrap_or_default()
}

/// The ClusterIPs of a Service (none for headless and ExternalName ones).
pub fn cluster_ips(spec: &ServiceSpec) -> Vec<IpAddr> {
    spec.cluster_ips
        .iter()
        .flatten()
        .filter_map(|i| i.parse().ok())
        .collect()
}
