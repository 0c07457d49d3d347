//! Validation: every bad value is refused with its file, object, field and reason.

use crate::cluster::{defaults, ClusterConfig, ClusterSpec, NodesSpec};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};

/// A refused value: where it is and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {object}: {field}: {reason}")]
pub struct Invalid {
    /// The manifest file (or `<built-in>`).
    pub file: String,
    /// `Kind/name` or `Kind/namespace/name`.
    pub object: String,
    /// The field path, e.g. `spec.podCIDRs[1]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// All problems found in one document set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct Invalids(pub Vec<Invalid>);

/// Collects problems for one object.
pub struct Checker<'a> {
    file: &'a str,
    object: String,
    /// Problems found so far.
    pub problems: Vec<Invalid>,
}

impl<'a> Checker<'a> {
    /// A checker for `object` in `file`.
    pub fn new(file: &'a str, object: impl Into<String>) -> Self {
        Self {
            file,
            object: object.into(),
            problems: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    pub fn fail(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Invalid {
            file: self.file.to_string(),
            object: self.object.clone(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Parses `text` (or the default) with `parse`, recording a problem on failure.
    fn parse<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        text: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(field, format!("{text:?} is not valid: {e}"));
                None
            }
        }
    }
}

/// Whether `name` is an RFC 1123 DNS label (as Kubernetes namespaces and node names are).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is an RFC 1123 DNS subdomain (as pod and service names are).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// Whether `name` is an IANA service name (as named container and Service ports are).
pub fn is_port_name(name: &str) -> bool {
    name.len() <= 15 && is_dns_label(name) && name.bytes().any(|b| b.is_ascii_lowercase())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// Parses a list of CIDRs: one or two, at most one per family, IPv4 first in the result.
fn parse_cidr_list(c: &mut Checker, field: &str, items: &[String]) -> Vec<IpNet> {
    if items.is_empty() || items.len() > 2 {
        c.fail(field, "must list one CIDR, or two of different families");
        return Vec::new();
    }
    let mut nets = Vec::new();
    for (i, text) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(net) = c.parse(&f, text, str::parse::<IpNet>) {
            if net != net.trunc() {
                c.fail(&f, format!("{net} has host bits set; use {}", net.trunc()));
            } else {
                nets.push(net);
            }
        }
    }
    if nets.len() == 2 && family(&nets[0]) == family(&nets[1]) {
        c.fail(
            field,
            "two CIDRs of the same family; dual-stack needs one IPv4 and one IPv6",
        );
    }
    nets.sort_by_key(|n| matches!(n, IpNet::V6(_)));
    nets
}

fn parse_pool(c: &mut Checker, text: &str, node_cidr: &Ipv4Net) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let field = "spec.loadBalancerPool";
    let Some((a, b)) = text.split_once('-') else {
        c.fail(field, format!("{text:?} is not a range FIRST-LAST"));
        return None;
    };
    let first = c.parse(field, a.trim(), str::parse::<Ipv4Addr>)?;
    let last = c.parse(field, b.trim(), str::parse::<Ipv4Addr>)?;
    if first > last {
        c.fail(field, format!("{first} comes after {last}"));
        return None;
    }
    if !node_cidr.contains(&first) || !node_cidr.contains(&last) {
        c.fail(
            field,
            format!("{text} is not inside the node network {node_cidr}"),
        );
        return None;
    }
    Some((first, last))
}

/// Resolves a `Cluster` document against defaults and the host's own networks.
///
/// `host_networks` are the networks of the host's interfaces (the root namespace's addresses):
/// no lab range may overlap them.
pub fn resolve_cluster(
    file: &str,
    name: &str,
    spec: &ClusterSpec,
    host_networks: &[IpNet],
) -> Result<ClusterConfig, Invalids> {
    let mut c = Checker::new(file, format!("Cluster/{name}"));
    if !is_dns_label(name) || name.len() > 32 {
        c.fail(
            "metadata.name",
            format!("{name:?} must be a DNS label of at most 32 characters"),
        );
    }
    let nodes: Vec<String> = match spec
        .nodes
        .clone()
        .unwrap_or(NodesSpec::Count(defaults::NODES))
    {
        NodesSpec::Count(n) => (1..=n).map(|i| format!("node{i}")).collect(),
        NodesSpec::Names(names) => names,
    };
    if nodes.is_empty() {
        c.fail("spec.nodes", "a cluster needs at least one node");
    }
    for (i, n) in nodes.iter().enumerate() {
        if !is_dns_label(n) || n.len() > 40 {
            c.fail(
                format!("spec.nodes[{i}]"),
                format!("{n:?} must be a DNS label of at most 40 characters"),
            );
        }
        if nodes[..i].contains(n) {
            c.fail(
                format!("spec.nodes[{i}]"),
                format!("node {n:?} is listed twice"),
            );
        }
    }
    let node_cidr = c.parse(
        "spec.nodeCIDR",
        spec.node_cidr.as_deref().unwrap_or(defaults::NODE_CIDR),
        |t| match t.parse::<IpNet>() {
            Ok(IpNet::V4(n)) if n == n.trunc() => Ok(n),
            Ok(IpNet::V4(n)) => Err(format!("host bits set; use {}", n.trunc())),
            Ok(IpNet::V6(_)) => Err("the node network must be IPv4".to_string()),
            Err(e) => Err(e.to_string()),
        },
    );
    let pod_cidrs = parse_cidr_list(
        &mut c,
        "spec.podCIDRs",
        &spec
            .pod_cidrs
            .clone()
            .unwrap_or_else(|| defaults::POD_CIDRS.map(String::from).to_vec()),
    );
    let service_cidrs = parse_cidr_list(
        &mut c,
        "spec.serviceCIDRs",
        &spec
            .service_cidrs
            .clone()
            .unwrap_or_else(|| defaults::SERVICE_CIDRS.map(String::from).to_vec()),
    );
    let fams = |v: &[IpNet]| v.iter().map(family).collect::<Vec<_>>();
    if !pod_cidrs.is_empty()
        && !service_cidrs.is_empty()
        && fams(&pod_cidrs) != fams(&service_cidrs)
    {
        c.fail(
            "spec.serviceCIDRs",
            format!(
                "families {:?} differ from spec.podCIDRs {:?}",
                fams(&service_cidrs),
                fams(&pod_cidrs)
            ),
        );
    }
    let mask4 = spec.node_mask_size_ipv4.unwrap_or(defaults::NODE_MASK_V4);
    let mask6 = spec.node_mask_size_ipv6.unwrap_or(defaults::NODE_MASK_V6);
    if !(8..=30).contains(&mask4) {
        c.fail(
            "spec.nodeMaskSizeIPv4",
            format!("{mask4} must be between 8 and 30"),
        );
    }
    if !(48..=120).contains(&mask6) {
        c.fail(
            "spec.nodeMaskSizeIPv6",
            format!("{mask6} must be between 48 and 120"),
        );
    }
    for (i, net) in pod_cidrs.iter().enumerate() {
        let (mask, field) = match net {
            IpNet::V4(_) => (mask4, "spec.nodeMaskSizeIPv4"),
            IpNet::V6(_) => (mask6, "spec.nodeMaskSizeIPv6"),
        };
        if mask < net.prefix_len() {
            c.fail(
                field,
                format!("{mask} is shorter than spec.podCIDRs[{i}] {net}"),
            );
        } else if mask - net.prefix_len() < 32
            && (1u64 << (mask - net.prefix_len())) < nodes.len() as u64
        {
            c.fail(
                format!("spec.podCIDRs[{i}]"),
                format!(
                    "{net} holds {} node subnets of /{mask}, fewer than the {} nodes",
                    1u64 << (mask - net.prefix_len()),
                    nodes.len()
                ),
            );
        }
    }
    let mtu = spec.mtu.unwrap_or(defaults::MTU);
    let backend = spec.backend.unwrap_or_default();
    let min_mtu = if pod_cidrs.iter().any(|n| n.addr().is_ipv6()) {
        1280
    } else {
        576
    };
    let overhead = if backend == crate::cluster::Backend::Vxlan {
        50
    } else {
        0
    };
    if !(min_mtu + overhead..=9000).contains(&mtu) {
        c.fail(
            "spec.mtu",
            format!("{mtu} must be between {} and 9000 (pods need at least {min_mtu} after the {backend} overhead of {overhead})", min_mtu + overhead),
        );
    }
    let domain = spec
        .cluster_domain
        .clone()
        .unwrap_or_else(|| defaults::CLUSTER_DOMAIN.to_string());
    if !is_dns_subdomain(&domain) {
        c.fail(
            "spec.clusterDomain",
            format!("{domain:?} is not a DNS name"),
        );
    }

    // Ranges must not overlap each other nor the host's own networks.
    let mut ranges: Vec<(String, IpNet)> = Vec::new();
    if let Some(n) = node_cidr {
        ranges.push(("spec.nodeCIDR".into(), IpNet::V4(n)));
        // Nodes take the first hosts, `external` the last one.
        if (nodes.len() as u64) + 2 > n.hosts().count() as u64 {
            c.fail(
                "spec.nodeCIDR",
                format!(
                    "{n} has too few addresses for {} nodes and the external host",
                    nodes.len()
                ),
            );
        }
    }
    ranges.extend(
        pod_cidrs
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("spec.podCIDRs[{i}]"), *n)),
    );
    ranges.extend(
        service_cidrs
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("spec.serviceCIDRs[{i}]"), *n)),
    );
    for (i, (fa, a)) in ranges.iter().enumerate() {
        for (fb, b) in &ranges[..i] {
            if overlaps(a, b) {
                c.fail(fa.clone(), format!("{a} overlaps {fb} {b}"));
            }
        }
        for h in host_networks {
            if overlaps(a, h) {
                c.fail(
                    fa.clone(),
                    format!("{a} overlaps the host's own network {h}"),
                );
            }
        }
    }
    let pool = node_cidr.and_then(|n| {
        parse_pool(
            &mut c,
            spec.load_balancer_pool
                .as_deref()
                .unwrap_or(defaults::LB_POOL),
            &n,
        )
    });
    if let (Some(n), Some((first, _))) = (node_cidr, pool) {
        let last_node = crate::state::node_ip(&n, nodes.len() as u32);
        if IpAddr::V4(first) <= IpAddr::V4(last_node) {
            c.fail(
                "spec.loadBalancerPool",
                format!("starts at {first}, among the node addresses (up to {last_node})"),
            );
        }
    }
    if !c.problems.is_empty() {
        return Err(Invalids(c.problems));
    }
    Ok(ClusterConfig {
        name: name.to_string(),
        nodes,
        node_cidr: node_cidr.expect("checked"),
        pod_cidrs,
        service_cidrs,
        node_mask_size_ipv4: mask4,
        node_mask_size_ipv6: mask6,
        backend,
        mtu,
        cluster_domain: domain,
        load_balancer_pool: pool.expect("checked"),
        dns: spec.addons.as_ref().and_then(|a| a.dns).unwrap_or(true),
        ingress: spec.addons.as_ref().and_then(|a| a.ingress).unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(spec: ClusterSpec) -> Result<ClusterConfig, Invalids> {
        resolve_cluster(
            "c.yaml",
            "lab",
            &spec,
            &[
                "192.0.2.0/24".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
        )
    }

    fn fields(e: Invalids) -> Vec<String> {
        e.0.into_iter().map(|i| i.field).collect()
    }

    #[test]
    fn defaults_are_dual_stack_three_nodes() {
        let c = resolve(ClusterSpec::default()).unwrap();
        assert_eq!(c.nodes, ["node1", "node2", "node3"]);
        assert_eq!(c.pod_cidrs[0].to_string(), "10.42.0.0/16");
        assert_eq!(c.pod_cidrs[1].to_string(), "fd00:10:42::/56");
        assert_eq!(c.service_cidrs[1].to_string(), "fd00:10:43::/112");
        assert!(c.dual_stack());
        assert_eq!(c.pod_mtu(), 1450);
        assert_eq!(c.load_balancer_pool.0, Ipv4Addr::new(192, 168, 1, 200));
    }

    #[test]
    fn ipv6_listed_first_is_reordered() {
        let c = resolve(ClusterSpec {
            pod_cidrs: Some(vec!["fd00:10:42::/56".into(), "10.42.0.0/16".into()]),
            ..Default::default()
        })
        .unwrap();
        assert!(c.pod_cidrs[0].addr().is_ipv4());
    }

    #[test]
    fn overlaps_are_refused_with_field_and_reason() {
        let e = resolve(ClusterSpec {
            service_cidrs: Some(vec!["10.42.128.0/17".into()]),
            pod_cidrs: Some(vec!["10.42.0.0/16".into()]),
            ..Default::default()
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("c.yaml: Cluster/lab: spec.serviceCIDRs[0]: 10.42.128.0/17 overlaps spec.podCIDRs[0] 10.42.0.0/16"), "{text}");
    }

    #[test]
    fn host_network_overlap_is_refused() {
        let e = resolve(ClusterSpec {
            node_cidr: Some("192.0.2.0/25".into()),
            load_balancer_pool: Some("192.0.2.100-192.0.2.110".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("overlaps the host's own network 192.0.2.0/24"),
            "{e}"
        );
        let e = resolve(ClusterSpec {
            pod_cidrs: Some(vec!["10.42.0.0/16".into(), "fd00::/56".into()]),
            service_cidrs: Some(vec!["10.43.0.0/16".into(), "fd00:10:43::/112".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(e), ["spec.podCIDRs[1]"]);
    }

    #[test]
    fn pod_range_must_hold_every_node() {
        let e = resolve(ClusterSpec {
            nodes: Some(NodesSpec::Count(5)),
            pod_cidrs: Some(vec!["10.42.0.0/22".into()]),
            service_cidrs: Some(vec!["10.43.0.0/16".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 4 node subnets of /24, fewer than the 5 nodes"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_fields() {
        let e = resolve(ClusterSpec {
            nodes: Some(NodesSpec::Names(vec![
                "a".into(),
                "a".into(),
                "Bad_Name".into(),
            ])),
            node_cidr: Some("192.168.1.0/33".into()),
            pod_cidrs: Some(vec!["10.42.0.1/16".into()]),
            service_cidrs: Some(vec!["10.43.0.0/16".into(), "10.44.0.0/16".into()]),
            mtu: Some(100),
            node_mask_size_ipv4: Some(31),
            ..Default::default()
        })
        .unwrap_err();
        let f = fields(e);
        for want in [
            "spec.nodes[1]",
            "spec.nodes[2]",
            "spec.nodeCIDR",
            "spec.podCIDRs[0]",
            "spec.serviceCIDRs",
            "spec.mtu",
            "spec.nodeMaskSizeIPv4",
        ] {
            assert!(f.iter().any(|x| x == want), "missing {want} in {f:?}");
        }
    }

    #[test]
    fn single_stack_families_must_match() {
        let e = resolve(ClusterSpec {
            pod_cidrs: Some(vec!["10.42.0.0/16".into()]),
            service_cidrs: Some(vec!["fd00:10:43::/112".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(e), ["spec.serviceCIDRs"]);
    }

    #[test]
    fn pool_must_be_in_node_network_and_after_nodes() {
        let e = resolve(ClusterSpec {
            load_balancer_pool: Some("192.168.2.1-192.168.2.9".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(e), ["spec.loadBalancerPool"]);
        let e = resolve(ClusterSpec {
            load_balancer_pool: Some("192.168.1.2-192.168.1.9".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("among the node addresses"), "{e}");
    }
}
