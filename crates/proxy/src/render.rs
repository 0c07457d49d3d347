//! Flows to nftables: dispatch by verdict maps keyed on address . protocol . port, as
//! kube-proxy's nftables mode lays it out.
//!
//! Plain ClusterIP ports (random balancing, no affinity, no NodePort or external address:
//! most Services) get no chain of their own: their dispatch element goes to a chain shared by
//! every port with the same number of endpoints, which picks `numgen random mod n` (kept in
//! the connection's mark) and looks the endpoint up in one map keyed by
//! `address . protocol . port . index`. So the kernel holds set elements, not chains and
//! rules, per such Service, and `nft` loads and caches them quickly. The other shapes get a
//! chain per Service port (and per endpoint with affinity).
//!
//! A [`Program`] holds declarations, elements and chains: [`fragment`] makes the one of a
//! Service's flows, and [`crate::table::Table`] sums them into the node's table.

use crate::flows::{Algorithm, Backend, Flow};
use flatnet_ipam::service::NODE_PORT_RANGE;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The table flatnet owns in each node's namespace.
pub const TABLE: &str = "flatnet";
/// Packet mark bit meaning "masquerade on the way out".
pub const MASQ_MARK: u32 = 0x4000;

/// What the program is computed from, besides the flows.
pub struct Ranges<'a> {
    /// Pod ranges (traffic from them is in-cluster).
    pub pod_cidrs: &'a [IpNet],
    /// Service ranges (unallocated addresses in them are dropped).
    pub service_cidrs: &'a [IpNet],
    /// The UDP port of the overlay's tunnel (vxlan), if any: the node's own encapsulated
    /// packets are not tracked (each pod flow would otherwise be tracked twice, the second
    /// time as a UDP flow between the nodes, which costs throughput and conntrack entries).
    pub tunnel_port: Option<u16>,
}

/// Part of a node's table (one Service's, or the ranges'): elements, affinity sets, chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// Elements of each set and map, by its name.
    pub elements: BTreeMap<String, BTreeSet<String>>,
    /// Sets made per endpoint (ClientIP affinity): name to declaration body.
    pub dynamic_sets: BTreeMap<String, String>,
    /// Per-Service and per-endpoint chains: name to rules.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// Sets and maps every table has: name and declaration body (without elements).
fn declarations() -> Vec<(String, String)> {
    let mut d = Vec::new();
    for v4 in [true, false] {
        let f = fam(v4);
        let t = if v4 { "ipv4_addr" } else { "ipv6_addr" };
        d.push((
            format!("pod-cidrs-{f}"),
            format!("type {t}; flags interval;"),
        ));
        d.push((
            format!("service-cidrs-{f}"),
            format!("type {t}; flags interval;"),
        ));
        d.push((format!("cluster-ips-{f}"), format!("type {t};")));
        d.push((
            format!("service-ports-{f}"),
            format!("type {t} . inet_proto . inet_service;"),
        ));
        d.push((
            format!("service-ips-{f}"),
            format!("type {t} . inet_proto . inet_service : verdict;"),
        ));
        d.push((
            format!("service-nodeports-{f}"),
            "type inet_proto . inet_service : verdict;".to_string(),
        ));
        d.push((
            format!("no-endpoint-services-{f}"),
            format!("type {t} . inet_proto . inet_service : verdict;"),
        ));
        d.push((
            format!("no-endpoint-nodeports-{f}"),
            "type inet_proto . inet_service : verdict;".to_string(),
        ));
        d.push((format!("hairpin-{f}"), format!("type {t} . {t};")));
        d.push((
            format!("endpoints-{f}"),
            format!("type {t} . inet_proto . inet_service . mark : {t} . inet_service;"),
        ));
    }
    d
}

fn is_map(decl: &str) -> bool {
    decl.contains(" : ")
}

/// Whether flow `f` goes through the shared pick chains and the endpoint map: a plain
/// ClusterIP port with random balancing, no affinity and endpoints for in-cluster traffic.
fn shared_pick(f: &Flow, cluster_backends: &[&Backend]) -> bool {
    f.cluster_ip.is_some()
        && f.algorithm == Algorithm::Random
        && f.affinity.is_none()
        && f.node_port.is_none()
        && f.lb_ips.is_empty()
        && f.external_ips.is_empty()
        && !cluster_backends.is_empty()
}

/// The chain shared by the plain ClusterIP ports of one family with `n` endpoints.
fn pick_chain(v4: bool, n: usize) -> (String, Vec<String>) {
    let (fm, ip) = (fam(v4), ipkw(v4));
    (
        format!("pick-{fm}-{n}"),
        vec![
            format!("{ip} saddr != @pod-cidrs-{fm} jump mark-for-masquerade"),
            // The pick is kept in the connection's mark, which the endpoint map is keyed on.
            format!("ct mark set numgen random mod {n}"),
            format!(
                "meta l4proto {{ tcp, udp, sctp }} dnat {ip} addr . port to {ip} daddr . meta l4proto . th dport . ct mark map @endpoints-{fm}"
            ),
        ],
    )
}

/// Chains at the raw priority that take the tunnel's packets (UDP to `port`, in and out of
/// the node) out of connection tracking.
fn untracked_tunnel(port: u16) -> String {
    format!(
        r#"	chain raw-prerouting {{
		type filter hook prerouting priority raw; policy accept;
		udp dport {port} notrack
	}}
	chain raw-output {{
		type filter hook output priority raw; policy accept;
		udp dport {port} notrack
	}}
"#
    )
}

/// Chains every table has, with hooks; they dispatch into the per-Service chains. The cheap
/// tests of a rule come first: a route lookup (`fib`) is made only for a packet to a port
/// of the NodePort range, not for every new connection.
fn fixed_chains() -> String {
    let nodeports = format!("{}-{}", NODE_PORT_RANGE.start(), NODE_PORT_RANGE.end());
    format!(
        r#"	chain filter-prerouting {{
		type filter hook prerouting priority -110; policy accept;
		ct state new jump service-checks
	}}
	chain filter-output {{
		type filter hook output priority -110; policy accept;
		ct state new jump service-checks
	}}
	chain service-checks {{
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services-v4
		ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services-v6
		ip daddr . meta l4proto . th dport @service-ports-v4 return
		ip6 daddr . meta l4proto . th dport @service-ports-v6 return
		meta nfproto ipv4 th dport {nodeports} fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports-v4
		meta nfproto ipv6 th dport {nodeports} fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports-v6
		ip daddr @service-cidrs-v4 ip daddr != @cluster-ips-v4 drop
		ip6 daddr @service-cidrs-v6 ip6 daddr != @cluster-ips-v6 drop
		ip daddr @cluster-ips-v4 ip daddr . meta l4proto . th dport != @service-ports-v4 goto reject-service
		ip6 daddr @cluster-ips-v6 ip6 daddr . meta l4proto . th dport != @service-ports-v6 goto reject-service
	}}
	chain reject-service {{
		meta l4proto tcp reject with tcp reset
		reject
	}}
	chain nat-prerouting {{
		type nat hook prerouting priority -100; policy accept;
		jump services
	}}
	chain nat-output {{
		type nat hook output priority -100; policy accept;
		jump services
	}}
	chain nat-postrouting {{
		type nat hook postrouting priority 100; policy accept;
		ip saddr . ip daddr @hairpin-v4 jump mark-for-masquerade
		ip6 saddr . ip6 daddr @hairpin-v6 jump mark-for-masquerade
		ip saddr @pod-cidrs-v4 ip daddr != @pod-cidrs-v4 jump mark-for-masquerade
		ip6 saddr @pod-cidrs-v6 ip6 daddr != @pod-cidrs-v6 jump mark-for-masquerade
		jump masquerading
	}}
	chain masquerading {{
		meta mark & {MASQ_MARK:#x} == 0 return
		meta mark set meta mark ^ {MASQ_MARK:#x}
		masquerade fully-random
	}}
	chain mark-for-masquerade {{
		meta mark set meta mark | {MASQ_MARK:#x}
	}}
	chain services {{
		ip daddr . meta l4proto . th dport vmap @service-ips-v4
		ip6 daddr . meta l4proto . th dport vmap @service-ips-v6
		ip daddr != 127.0.0.0/8 th dport {nodeports} fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
		ip6 daddr != ::1 th dport {nodeports} fib daddr type local meta l4proto . th dport vmap @service-nodeports-v6
	}}
"#
    )
}

fn fam(v4: bool) -> &'static str {
    if v4 {
        "v4"
    } else {
        "v6"
    }
}

fn ipkw(v4: bool) -> &'static str {
    if v4 {
        "ip"
    } else {
        "ip6"
    }
}

fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn chain(kind: &str, f: &Flow) -> String {
    format!(
        "{kind}-{}-{}",
        hash(&format!("{}/{}", f.id, fam(f.v4))),
        f.id
    )
}

fn ep_chain(f: &Flow, b: &Backend) -> String {
    format!(
        "ep-{}",
        hash(&format!("{}/{}/{}/{}", f.id, fam(f.v4), b.ip, b.port))
    )
}

fn dnat_target(b: &Backend) -> String {
    match b.ip {
        IpAddr::V4(v) => format!("{v}:{}", b.port),
        IpAddr::V6(v) => format!("[{v}]:{}", b.port),
    }
}

/// Rules that translate to one of `backends` (non-empty), in the Service's own chain, with
/// no set and no chain per endpoint: random balancing is a cascade where rule `k` takes its
/// endpoint with probability 1/(n-k), which is uniform; round robin is one counter.
/// (Anonymous maps cost nft about a millisecond each to load; plain rules do not.)
fn dnat(f: &Flow, backends: &[&Backend]) -> Vec<String> {
    let ip = ipkw(f.v4);
    let to = |b: &Backend| format!("meta l4proto {} dnat {ip} to {}", f.proto, dnat_target(b));
    let n = backends.len();
    match f.algorithm {
        _ if n == 1 => vec![to(backends[0])],
        Algorithm::Random => backends
            .iter()
            .enumerate()
            .map(|(k, b)| {
                if k + 1 == n {
                    to(b)
                } else {
                    format!("numgen random mod {} 0 {}", n - k, to(b))
                }
            })
            .collect(),
        Algorithm::RoundRobin => {
            let arms: Vec<String> = backends
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{i} : {} . {}", b.ip, b.port))
                .collect();
            vec![format!(
                "meta l4proto {} dnat {ip} addr . port to numgen inc mod {n} map {{ {} }}",
                f.proto,
                arms.join(", ")
            )]
        }
        Algorithm::Maglev => {
            let names: Vec<String> = backends.iter().map(|b| dnat_target(b)).collect();
            let arms: Vec<String> = crate::maglev::table(&names, crate::maglev::TABLE_SIZE)
                .iter()
                .enumerate()
                .map(|(slot, i)| format!("{slot} : {} . {}", backends[*i].ip, backends[*i].port))
                .collect();
            vec![format!(
                "meta l4proto {} dnat {ip} addr . port to jhash {ip} saddr mod {} seed {MAGLEV_SEED:#x} map {{ {} }}",
                f.proto,
                crate::maglev::TABLE_SIZE,
                arms.join(", ")
            )]
        }
    }
}

/// Seed of the client-address hash that picks a Maglev slot.
const MAGLEV_SEED: u32 = 0x666c_6174;

/// Spreads over `backends` (non-empty): in place, or through per-endpoint chains when the
/// Service has ClientIP affinity (each endpoint chain records its clients).
fn spread(f: &Flow, backends: &[&Backend]) -> Vec<String> {
    if f.affinity.is_some() {
        vec![balance(f, backends)]
    } else {
        dnat(f, backends)
    }
}

fn numgen(f: &Flow) -> &'static str {
    match f.algorithm {
        Algorithm::Random | Algorithm::Maglev => "random",
        Algorithm::RoundRobin => "inc",
    }
}

/// The rule that jumps to one of the endpoint chains of `backends` (non-empty).
fn balance(f: &Flow, backends: &[&Backend]) -> String {
    if backends.len() == 1 {
        return format!("goto {}", ep_chain(f, backends[0]));
    }
    let arms: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : goto {}", ep_chain(f, b)))
        .collect();
    format!(
        "numgen {} mod {} vmap {{ {} }}",
        numgen(f),
        backends.len(),
        arms.join(", ")
    )
}

impl Program {
    fn element(&mut self, set: &str, e: String) {
        match self.elements.get_mut(set) {
            Some(els) => {
                els.insert(e);
            }
            None => {
                self.elements.insert(set.to_string(), BTreeSet::from([e]));
            }
        }
    }

    fn add_flow(&mut self, f: &Flow) {
        let fm = fam(f.v4);
        let ip = ipkw(f.v4);
        let key = |vip: &IpAddr| format!("{vip} . {} . {}", f.proto, f.port);
        let externals: Vec<IpAddr> = f.external_ips.iter().chain(&f.lb_ips).copied().collect();
        if let Some(vip) = &f.cluster_ip {
            self.element(&format!("cluster-ips-{fm}"), vip.to_string());
        }
        for vip in f.cluster_ip.iter().chain(&externals) {
            self.element(&format!("service-ports-{fm}"), key(vip));
        }
        if f.backends.is_empty() {
            // No endpoint: reject at once (TCP reset, ICMP port unreachable), never time out.
            for vip in f.cluster_ip.iter().chain(&externals) {
                self.element(
                    &format!("no-endpoint-services-{fm}"),
                    format!("{} : goto reject-service", key(vip)),
                );
            }
            if let Some(np) = f.node_port {
                self.element(
                    &format!("no-endpoint-nodeports-{fm}"),
                    format!("{} . {np} : goto reject-service", f.proto),
                );
            }
            return;
        }
        let cluster_backends: Vec<&Backend> = f
            .backends
            .iter()
            .filter(|b| !f.internal_local || b.local)
            .collect();
        // A pod reaching itself through the Service is masqueraded (hairpin). That happens
        // where the connection is translated: on the pod's own node, or on any node for a
        // NodePort of that node's address.
        let hairpin = format!("hairpin-{fm}");
        for b in f
            .backends
            .iter()
            .filter(|b| b.local || f.node_port.is_some())
        {
            self.element(&hairpin, format!("{} . {}", b.ip, b.ip));
        }
        if let (Some(vip), true) = (&f.cluster_ip, shared_pick(f, &cluster_backends)) {
            let (pick, rules) = pick_chain(f.v4, cluster_backends.len());
            let key = key(vip);
            self.element(&format!("service-ips-{fm}"), format!("{key} : goto {pick}"));
            let endpoints = format!("endpoints-{fm}");
            for (i, b) in cluster_backends.iter().enumerate() {
                self.element(&endpoints, format!("{key} . {i} : {} . {}", b.ip, b.port));
            }
            self.chains.insert(pick, rules);
            return;
        }
        let svc = chain("svc", f);
        let ext = chain("ext", f);
        if let Some(vip) = &f.cluster_ip {
            self.element(
                &format!("service-ips-{fm}"),
                format!("{} : goto {svc}", key(vip)),
            );
        }
        // The cluster-facing chain.
        let mut rules = vec![format!(
            "{ip} saddr != @pod-cidrs-{fm} jump mark-for-masquerade"
        )];
        if cluster_backends.is_empty() {
            rules.push("drop".into());
        } else {
            if f.affinity.is_some() {
                for b in &cluster_backends {
                    let ep = ep_chain(f, b);
                    rules.push(format!("{ip} saddr @aff-{} goto {ep}", &ep[3..]));
                }
            }
            rules.extend(spread(f, &cluster_backends));
        }
        self.chains.insert(svc.clone(), rules);
        // The entry from outside: NodePort, LoadBalancer and external IPs.
        if f.node_port.is_some() || !externals.is_empty() {
            let mut rules = Vec::new();
            if f.external_local {
                rules.push(format!("{ip} saddr @pod-cidrs-{fm} goto {svc}"));
                rules.push("fib saddr type local jump mark-for-masquerade".into());
                rules.push(format!("fib saddr type local goto {svc}"));
                let local: Vec<&Backend> = f.backends.iter().filter(|b| b.local).collect();
                if local.is_empty() {
                    rules.push("drop".into());
                } else {
                    rules.extend(spread(f, &local));
                }
            } else {
                rules.push("jump mark-for-masquerade".into());
                rules.push(format!("goto {svc}"));
            }
            self.chains.insert(ext.clone(), rules);
            if let Some(np) = f.node_port {
                self.element(
                    &format!("service-nodeports-{fm}"),
                    format!("{} . {np} : goto {ext}", f.proto),
                );
            }
            let lb_target = if f.source_ranges.is_empty() {
                ext.clone()
            } else {
                let fw = chain("fw", f);
                let allowed: Vec<String> = f.source_ranges.iter().map(|r| r.to_string()).collect();
                self.chains.insert(
                    fw.clone(),
                    vec![
                        format!("{ip} saddr != {{ {} }} drop", allowed.join(", ")),
                        format!("goto {ext}"),
                    ],
                );
                fw
            };
            for vip in &f.lb_ips {
                self.element(
                    &format!("service-ips-{fm}"),
                    format!("{} : goto {lb_target}", key(vip)),
                );
            }
            for vip in &f.external_ips {
                self.element(
                    &format!("service-ips-{fm}"),
                    format!("{} : goto {ext}", key(vip)),
                );
            }
        }
        // With ClientIP affinity, one chain per endpoint records its clients.
        if let Some(t) = f.affinity {
            for b in &f.backends {
                let ep = ep_chain(f, b);
                let set = format!("aff-{}", &ep[3..]);
                self.dynamic_sets.insert(
                    set.clone(),
                    format!(
                        "type {}_addr; flags dynamic,timeout; timeout {t}s;",
                        if f.v4 { "ipv4" } else { "ipv6" }
                    ),
                );
                let rules = vec![
                    format!("update @{set} {{ {ip} saddr }}"),
                    format!("meta l4proto {} dnat {ip} to {}", f.proto, dnat_target(b)),
                ];
                self.chains.insert(ep, rules);
            }
        }
    }
}

/// The whole table, as `nft -f` takes it: the declarations with `elements` (each sorted),
/// the affinity `sets`, the fixed chains and `chains`.
pub fn text(
    tunnel_port: Option<u16>,
    elements: &BTreeMap<&str, Vec<&String>>,
    sets: &BTreeMap<&str, &str>,
    chains: &BTreeMap<&str, &[String]>,
) -> String {
    use std::fmt::Write;
    let mut s = format!("table inet {TABLE} {{\n");
    for (name, decl) in declarations() {
        let kind = if is_map(&decl) { "map" } else { "set" };
        let _ = write!(s, "\t{kind} {name} {{ {decl}");
        if let Some(els) = elements.get(name.as_str()).filter(|e| !e.is_empty()) {
            s.push_str(" elements = { ");
            for (i, e) in els.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(e);
            }
            s.push_str(" }");
        }
        s.push_str(" }\n");
    }
    for (name, decl) in sets {
        let _ = writeln!(s, "\tset {name} {{ {decl} }}");
    }
    s.push_str(&fixed_chains());
    if let Some(port) = tunnel_port {
        s.push_str(&untracked_tunnel(port));
    }
    for (name, rules) in chains {
        let _ = writeln!(s, "\tchain {name} {{");
        for r in rules.iter() {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// The fragment every table has: the cluster's pod and Service ranges.
pub fn ranges(ranges: &Ranges) -> Program {
    let mut p = Program::default();
    for v4 in [true, false] {
        let f = fam(v4);
        for c in ranges.pod_cidrs.iter().filter(|c| c.addr().is_ipv4() == v4) {
            p.element(&format!("pod-cidrs-{f}"), c.to_string());
        }
        for c in ranges
            .service_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
        {
            p.element(&format!("service-cidrs-{f}"), c.to_string());
        }
    }
    p
}

/// The fragment of `flows` (one Service's): its elements, chains and affinity sets.
pub fn fragment(flows: &[Flow]) -> Program {
    let mut p = Program::default();
    for f in flows {
        p.add_flow(f);
    }
    p
}
