//! Flows to one nftables table: dispatch by verdict maps keyed on address . protocol . port,
//! a chain per Service port and per endpoint, as kube-proxy's nftables mode lays it out.

use crate::flows::{Algorithm, Backend, Flow};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::fmt::Write;
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

fn addr(ip: &IpAddr) -> String {
    ip.to_string()
}

fn dnat_target(b: &Backend) -> String {
    match b.ip {
        IpAddr::V4(v) => format!("{v}:{}", b.port),
        IpAddr::V6(v) => format!("[{v}]:{}", b.port),
    }
}

fn elements(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }}", items.join(", "))
    }
}

/// Balances over `backends` (already non-empty) by `algorithm`.
fn balance(s: &mut String, f: &Flow, backends: &[&Backend]) {
    if backends.len() == 1 {
        writeln!(s, "\t\tgoto {}", ep_chain(f, backends[0])).unwrap();
        return;
    }
    let gen = match f.algorithm {
        Algorithm::Random => "random",
        Algorithm::RoundRobin => "inc",
    };
    let arms: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : goto {}", ep_chain(f, b)))
        .collect();
    writeln!(
        s,
        "\t\tnumgen {gen} mod {} vmap {{ {} }}",
        backends.len(),
        arms.join(", ")
    )
    .unwrap();
}

/// Renders the whole table for one node. Applying it replaces the table atomically.
pub fn render(flows: &[Flow], ranges: &Ranges) -> String {
    let mut s = String::new();
    let mut svc_ips = [Vec::new(), Vec::new()];
    let mut svc_ports = [Vec::new(), Vec::new()];
    let mut nodeports = [Vec::new(), Vec::new()];
    let mut no_ep = [Vec::new(), Vec::new()];
    let mut no_ep_nodeports = [Vec::new(), Vec::new()];
    let mut cluster_ips = [Vec::new(), Vec::new()];
    let mut chains = String::new();
    let mut affinity_sets = Vec::new();
    for f in flows {
        let i = usize::from(!f.v4);
        let ip = ipkw(f.v4);
        let svc = chain("svc", f);
        let ext = chain("ext", f);
        let entry = |vip: &IpAddr, target: &str| {
            format!("{} . {} . {} : goto {target}", addr(vip), f.proto, f.port)
        };
        let key = |vip: &IpAddr| format!("{} . {} . {}", addr(vip), f.proto, f.port);
        if let Some(vip) = &f.cluster_ip {
            cluster_ips[i].push(addr(vip));
        }
        let externals: Vec<&IpAddr> = f.external_ips.iter().chain(f.lb_ips.iter()).collect();
        if f.backends.is_empty() {
            // No endpoint: reject at once (TCP reset, ICMP port unreachable), never time out.
            for vip in f.cluster_ip.iter().chain(externals.iter().copied()) {
                no_ep[i].push(entry(vip, "reject-service"));
                svc_ports[i].push(key(vip));
            }
            if let Some(np) = f.node_port {
                no_ep_nodeports[i].push(format!("{} . {np} : goto reject-service", f.proto));
            }
            continue;
        }
        if let Some(vip) = &f.cluster_ip {
            svc_ips[i].push(entry(vip, &svc));
            svc_ports[i].push(key(vip));
        }
        // The cluster-facing chain.
        writeln!(chains, "\tchain {svc} {{").unwrap();
        writeln!(
            chains,
            "\t\t{ip} saddr != @pod-cidrs-{} jump mark-for-masquerade",
            fam(f.v4)
        )
        .unwrap();
        let cluster_backends: Vec<&Backend> = f
            .backends
            .iter()
            .filter(|b| !f.internal_local || b.local)
            .collect();
        if cluster_backends.is_empty() {
            writeln!(chains, "\t\tdrop").unwrap();
        } else {
            if f.affinity.is_some() {
                for b in &cluster_backends {
                    let set = format!("aff-{}", &ep_chain(f, b)[3..]);
                    writeln!(chains, "\t\t{ip} saddr @{set} goto {}", ep_chain(f, b)).unwrap();
                }
            }
            balance(&mut chains, f, &cluster_backends);
        }
        writeln!(chains, "\t}}").unwrap();
        // The entry from outside: NodePort, LoadBalancer and external IPs.
        let has_external = f.node_port.is_some() || !externals.is_empty();
        if has_external {
            writeln!(chains, "\tchain {ext} {{").unwrap();
            if f.external_local {
                writeln!(chains, "\t\t{ip} saddr @pod-cidrs-{} goto {svc}", fam(f.v4)).unwrap();
                writeln!(chains, "\t\tfib saddr type local jump mark-for-masquerade").unwrap();
                writeln!(chains, "\t\tfib saddr type local goto {svc}").unwrap();
                let local: Vec<&Backend> = f.backends.iter().filter(|b| b.local).collect();
                if local.is_empty() {
                    writeln!(chains, "\t\tdrop").unwrap();
                } else {
                    balance(&mut chains, f, &local);
                }
            } else {
                writeln!(chains, "\t\tjump mark-for-masquerade").unwrap();
                writeln!(chains, "\t\tgoto {svc}").unwrap();
            }
            writeln!(chains, "\t}}").unwrap();
            if let Some(np) = f.node_port {
                nodeports[i].push(format!("{} . {np} : goto {ext}", f.proto));
            }
            let target = if f.source_ranges.is_empty() {
                ext.clone()
            } else {
                let fw = chain("fw", f);
                let allowed: Vec<String> = f.source_ranges.iter().map(|r| r.to_string()).collect();
                writeln!(chains, "\tchain {fw} {{").unwrap();
                writeln!(
                    chains,
                    "\t\t{ip} saddr != {{ {} }} drop",
                    allowed.join(", ")
                )
                .unwrap();
                writeln!(chains, "\t\tgoto {ext}").unwrap();
                writeln!(chains, "\t}}").unwrap();
                fw
            };
            for vip in &f.lb_ips {
                svc_ips[i].push(entry(vip, &target));
                svc_ports[i].push(key(vip));
            }
            for vip in &f.external_ips {
                svc_ips[i].push(entry(vip, &ext));
                svc_ports[i].push(key(vip));
            }
        }
        // One chain per endpoint.
        for b in &f.backends {
            let ep = ep_chain(f, b);
            writeln!(chains, "\tchain {ep} {{").unwrap();
            writeln!(
                chains,
                "\t\t{ip} saddr {} jump mark-for-masquerade",
                addr(&b.ip)
            )
            .unwrap();
            if let Some(t) = f.affinity {
                let set = format!("aff-{}", &ep[3..]);
                affinity_sets.push(format!(
                    "\tset {set} {{ type {}_addr; flags dynamic,timeout; timeout {t}s; }}",
                    if f.v4 { "ipv4" } else { "ipv6" }
                ));
                writeln!(chains, "\t\tupdate @{set} {{ {ip} saddr }}").unwrap();
            }
            writeln!(
                chains,
                "\t\tmeta l4proto {} dnat {ip} to {}",
                f.proto,
                dnat_target(b)
            )
            .unwrap();
            writeln!(chains, "\t}}").unwrap();
        }
    }

    writeln!(s, "table inet {TABLE} {{").unwrap();
    for v4 in [true, false] {
        let i = usize::from(!v4);
        let f = fam(v4);
        let t = if v4 { "ipv4_addr" } else { "ipv6_addr" };
        let pods: Vec<String> = ranges
            .pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .map(|c| c.to_string())
            .collect();
        let svcs: Vec<String> = ranges
            .service_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .map(|c| c.to_string())
            .collect();
        writeln!(
            s,
            "\tset pod-cidrs-{f} {{ type {t}; flags interval;{} }}",
            elements(&pods)
        )
        .unwrap();
        writeln!(
            s,
            "\tset service-cidrs-{f} {{ type {t}; flags interval;{} }}",
            elements(&svcs)
        )
        .unwrap();
        cluster_ips[i].sort();
        cluster_ips[i].dedup();
        writeln!(
            s,
            "\tset cluster-ips-{f} {{ type {t};{} }}",
            elements(&cluster_ips[i])
        )
        .unwrap();
        writeln!(
            s,
            "\tset service-ports-{f} {{ type {t} . inet_proto . inet_service;{} }}",
            elements(&svc_ports[i])
        )
        .unwrap();
        writeln!(
            s,
            "\tmap service-ips-{f} {{ type {t} . inet_proto . inet_service : verdict;{} }}",
            elements(&svc_ips[i])
        )
        .unwrap();
        writeln!(
            s,
            "\tmap service-nodeports-{f} {{ type inet_proto . inet_service : verdict;{} }}",
            elements(&nodeports[i])
        )
        .unwrap();
        writeln!(s, "\tmap no-endpoint-services-{f} {{ type {t} . inet_proto . inet_service : verdict;{} }}", elements(&no_ep[i])).unwrap();
        writeln!(
            s,
            "\tmap no-endpoint-nodeports-{f} {{ type inet_proto . inet_service : verdict;{} }}",
            elements(&no_ep_nodeports[i])
        )
        .unwrap();
    }
    for a in &affinity_sets {
        writeln!(s, "{a}").unwrap();
    }
    s.push_str(&format!(
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
		fib daddr type local meta nfproto ipv4 meta l4proto . th dport vmap @no-endpoint-nodeports-v4
		fib daddr type local meta nfproto ipv6 meta l4proto . th dport vmap @no-endpoint-nodeports-v6
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
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports-v4
		fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports-v6
	}}
"#
    ));
    s.push_str(&chains);
    s.push_str("}\n");
    s
}
