//! `flatnet check`: proves the guarantees with real connections from inside the lab.

use crate::target::{pod_ips, Target};
use flatnet_model::state::{ClusterDir, PodState, State};
use flatnet_workload::{probe, HttpRequest, Probe, ProbeReport, ProbeResult, Protocol};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One probe of the proof.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Which guarantee and path, e.g. `1 pod-to-pod, cross node`.
    pub check: String,
    /// Source.
    pub from: String,
    /// Destination (target and address).
    pub to: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// `IPv4` or `IPv6`.
    pub family: &'static str,
    /// Whether the probe proved what it should.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// The whole proof.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Every probe.
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether every probe passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.ok)
    }

    /// Passed and total per (check, protocol, family), in order.
    pub fn summary(&self) -> Vec<(String, usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &self.rows {
            let e = m
                .entry(format!(
                    "{:<36} {:<4} {}",
                    r.check,
                    r.protocol.to_string(),
                    r.family
                ))
                .or_default();
            e.1 += 1;
            if r.ok {
                e.0 += 1;
            }
        }
        m.into_iter().map(|(k, (ok, all))| (k, ok, all)).collect()
    }
}

struct Job {
    check: String,
    from: Target,
    to_label: String,
    addr: SocketAddr,
    protocol: Protocol,
    /// Pods allowed to answer.
    expect_pods: Vec<String>,
    expect_client: Option<IpAddr>,
    /// For HTTP probes: Host header and path.
    http: Option<HttpRequest>,
}

fn first_port(p: &PodState, proto: &str) -> Option<u16> {
    p.ports.iter().find(|x| x.protocol == proto).map(|x| x.port)
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn judge(job: &Job, r: &ProbeReport) -> (bool, String) {
    if r.result != ProbeResult::Connected {
        let why = r.error.clone().unwrap_or_default();
        return (false, format!("{:?} {why}", r.result).trim().to_lowercase());
    }
    let served = r.server.as_ref().map(|s| s.pod.as_str()).unwrap_or("");
    let client = r.client_address.clone().unwrap_or_default();
    if !job.expect_pods.iter().any(|p| p == served) {
        return (
            false,
            format!(
                "answered by {served:?}, expected one of {:?}",
                job.expect_pods
            ),
        );
    }
    // A pod reaching itself through its Service is masqueraded (hairpin), as in Kubernetes.
    let hairpin = matches!(&job.from, Target::Pod { name, .. } if name == served);
    if let Some(want) = job.expect_client.filter(|_| !hairpin) {
        if client != want.to_string() {
            return (
                false,
                format!("server saw client {client}, expected {want} (NAT?)"),
            );
        }
    }
    (
        true,
        format!(
            "served by {served}, client {client}, {:.1} ms",
            r.latency_ms
        ),
    )
}

/// Runs the proof of guarantees 1 and 2 against the running cluster.
pub fn run(dir: &ClusterDir, state: &State, timeout: Duration) -> Report {
    let ips: BTreeMap<String, Vec<IpAddr>> = state
        .pods
        .iter()
        .map(|p| (p.key(), pod_ips(dir, state, &p.namespace, &p.name)))
        .collect();
    let mut jobs = Vec::new();
    // Pods that run a flatnet program (the cluster DNS) do not serve the probe protocol; the
    // DNS rows below prove them.
    for dst in state.pods.iter().filter(|p| p.command.is_empty()) {
        for (proto_name, protocol) in [("TCP", Protocol::Tcp), ("UDP", Protocol::Udp)] {
            let Some(port) = first_port(dst, proto_name) else {
                continue;
            };
            for dst_ip in &ips[&dst.key()] {
                // Guarantee 1: every pod reaches every other pod, seen with its own IP.
                for src in state.pods.iter().filter(|s| s.key() != dst.key()) {
                    let src_ip = ips[&src.key()]
                        .iter()
                        .find(|i| i.is_ipv4() == dst_ip.is_ipv4())
                        .copied();
                    let path = if src.node == dst.node {
                        "same node"
                    } else {
                        "cross node"
                    };
                    jobs.push(Job {
                        check: format!("1 pod-to-pod, {path}"),
                        from: Target::Pod {
                            namespace: src.namespace.clone(),
                            name: src.name.clone(),
                        },
                        to_label: format!("{} {dst_ip}", dst.key()),
                        addr: SocketAddr::new(*dst_ip, port),
                        protocol,
                        expect_pods: vec![dst.name.clone()],
                        expect_client: Some(src_ip.unwrap_or(*dst_ip)),
                        http: None,
                    });
                }
                // Guarantee 2: every node reaches every pod.
                if protocol == Protocol::Tcp {
                    for n in &state.nodes {
                        let path = if n.name == dst.node {
                            "own pods"
                        } else {
                            "other nodes' pods"
                        };
                        jobs.push(Job {
                            check: format!("2 node-to-pod, {path}"),
                            from: Target::Node(n.name.clone()),
                            to_label: format!("{} {dst_ip}", dst.key()),
                            addr: SocketAddr::new(*dst_ip, port),
                            protocol,
                            expect_pods: vec![dst.name.clone()],
                            expect_client: None,
                            http: None,
                        });
                    }
                }
            }
        }
    }
    jobs.extend(service_jobs(state, &ips));
    jobs.extend(ingress_jobs(state));
    let cluster = state.config.name.clone();
    let queue = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    let rows = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let queue = queue.clone();
            let rows = rows.clone();
            let cluster = cluster.clone();
            std::thread::spawn(move || loop {
                let Some((i, job)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let report = probe(&Probe {
                    netns: Some(job.from.netns_path(&cluster)),
                    target: job.addr,
                    protocol: job.protocol,
                    timeout,
                    source_port: None,
                    http: job.http.clone(),
                });
                let (ok, detail) = judge(&job, &report);
                rows.lock().unwrap().push((
                    i,
                    Row {
                        check: job.check.clone(),
                        from: job.from.to_string(),
                        to: job.to_label.clone(),
                        protocol: job.protocol,
                        family: family(&job.addr.ip()),
                        ok,
                        detail,
                    },
                ));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut rows = std::mem::take(&mut *rows.lock().unwrap());
    rows.sort_by_key(|(i, _)| *i);
    let mut rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    rows.extend(dns_rows(state, timeout));
    Report { rows }
}

/// Guarantee 4 at layer 7: from `external`, every path rule of every Ingress that has an
/// address is reached over HTTP with its host (a wildcard's `*` made `probe`) and its path,
/// and answered by a pod of the rule's Service.
fn ingress_jobs(state: &State) -> Vec<Job> {
    let mut jobs = Vec::new();
    for ing in &state.ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let addresses = flatnet_controller::ingress_ips(ing);
        let rules = ing.spec.iter().flat_map(|s| s.rules.iter().flatten());
        for rule in rules {
            let host = rule.host.as_deref().map(|h| h.replacen('*', "probe", 1));
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                let Some(svc) = &path.backend.service else {
                    continue;
                };
                let backends = serving_pods(state, &ns, &svc.name);
                if backends.is_empty() {
                    continue;
                }
                let request = path.path.clone().unwrap_or_else(|| "/".into());
                for ip in &addresses {
                    jobs.push(Job {
                        check: "4 external-to-service, Ingress".into(),
                        from: Target::External,
                        to_label: format!(
                            "http://{}{request} ({ns}/{}) at {ip}",
                            host.as_deref().unwrap_or("*"),
                            ing.metadata.name.as_deref().unwrap_or("")
                        ),
                        addr: SocketAddr::new(*ip, 80),
                        protocol: Protocol::Tcp,
                        expect_pods: backends.clone(),
                        expect_client: None,
                        http: Some(HttpRequest {
                            host: host.clone(),
                            path: request.clone(),
                        }),
                    });
                }
            }
        }
    }
    jobs
}

/// The names of the probe-serving pods that Service `ns/name` selects.
fn serving_pods(state: &State, ns: &str, name: &str) -> Vec<String> {
    let Some(selector) = state
        .services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name)
        })
        .and_then(|s| s.spec.as_ref()?.selector.clone())
    else {
        return Vec::new();
    };
    state
        .pods
        .iter()
        .filter(|p| p.namespace == ns && flatnet_controller::endpoints::selects(&selector, p))
        .filter(|p| p.command.is_empty())
        .map(|p| p.name.clone())
        .collect()
}

/// Guarantees 3 and 4: every pod reaches every Service's virtual IPs (and keeps its own
/// source address); `external` reaches NodePorts on every node and LoadBalancer IPs.
fn service_jobs(state: &State, ips: &BTreeMap<String, Vec<IpAddr>>) -> Vec<Job> {
    use flatnet_controller::services::{is_headless, service_type};
    let mut jobs = Vec::new();
    for svc in &state.services {
        let Some(spec) = &svc.spec else { continue };
        if is_headless(spec) || service_type(spec) == "ExternalName" {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let backends = serving_pods(state, &ns, &name);
        if backends.is_empty() {
            continue;
        }
        let vips = flatnet_controller::services::cluster_ips(spec);
        let lbs = flatnet_controller::services::load_balancer_ips(svc);
        for sp in spec.ports.iter().flatten() {
            let protocol = match sp.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => continue,
            };
            let job = |check: &str,
                       from: Target,
                       label: String,
                       addr: SocketAddr,
                       client: Option<IpAddr>| Job {
                check: check.into(),
                from,
                to_label: label,
                addr,
                protocol,
                expect_pods: backends.clone(),
                expect_client: client,
                http: None,
            };
            for vip in &vips {
                for src in &state.pods {
                    let Some(client) = ips[&src.key()]
                        .iter()
                        .find(|i| i.is_ipv4() == vip.is_ipv4())
                        .copied()
                    else {
                        continue;
                    };
                    let from = Target::Pod {
                        namespace: src.namespace.clone(),
                        name: src.name.clone(),
                    };
                    let addr = SocketAddr::new(*vip, sp.port as u16);
                    jobs.push(job(
                        "3 pod-to-service, ClusterIP",
                        from,
                        format!("service {ns}/{name} {vip}"),
                        addr,
                        Some(client),
                    ));
                }
            }
            if let Some(np) = sp.node_port {
                for n in &state.nodes {
                    let addr = SocketAddr::new(IpAddr::V4(n.ip), np as u16);
                    let label = format!("service {ns}/{name} node/{} {}", n.name, n.ip);
                    jobs.push(job(
                        "4 external-to-service, NodePort",
                        Target::External,
                        label,
                        addr,
                        None,
                    ));
                }
            }
            for lb in &lbs {
                let addr = SocketAddr::new(*lb, sp.port as u16);
                jobs.push(job(
                    "4 external-to-service, LoadBalancer",
                    Target::External,
                    format!("service {ns}/{name} {lb}"),
                    addr,
                    None,
                ));
            }
        }
    }
    jobs
}

/// Asks `server` for `name`'s addresses of one family from inside `netns` (UDP).
fn lookup(
    netns: &std::path::Path,
    server: SocketAddr,
    name: &str,
    v4: bool,
    timeout: Duration,
) -> anyhow::Result<Vec<IpAddr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let sock = flatnet_workload::socket_in_netns(
        Some(netns),
        socket2::Domain::for_address(server),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(&server.into())?;
    let mut q = Message::new(std::process::id() as u16, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    let qtype = if v4 { RecordType::A } else { RecordType::AAAA };
    q.add_query(Query::query(Name::from_ascii(name)?, qtype));
    sock.send(&q.to_vec()?)?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let n = sock.recv(&mut buf)?;
    // SAFETY: recv initialised the first `n` bytes.
    let bytes: Vec<u8> = buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    let answer = Message::from_vec(&bytes)?;
    let mut ips: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    Ok(ips)
}

/// Guarantee 3 by name: every pod resolves every Service with a ClusterIP through the
/// cluster DNS (its own resolv.conf's server) to that Service's ClusterIP, per family.
fn dns_rows(state: &State, timeout: Duration) -> Vec<Row> {
    use flatnet_controller::services::{cluster_dns_ips, cluster_ips};
    let Some(server) = cluster_dns_ips(state).first().copied() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for svc in &state.services {
        let Some(spec) = &svc.spec else { continue };
        let vips = cluster_ips(spec);
        let name = format!(
            "{}.{}.svc.{}.",
            svc.metadata.name.as_deref().unwrap_or(""),
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            state.config.cluster_domain
        );
        for v4 in [true, false] {
            let want: Vec<IpAddr> = vips.iter().filter(|i| i.is_ipv4() == v4).copied().collect();
            if want.is_empty() {
                continue;
            }
            for pod in &state.pods {
                let from = Target::Pod {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                };
                let got = lookup(
                    &from.netns_path(&state.config.name),
                    SocketAddr::new(server, 53),
                    &name,
                    v4,
                    timeout,
                );
                let (ok, detail) = match got {
                    Ok(ips) if ips == want => (true, format!("{name} -> {want:?}")),
                    Ok(ips) => (false, format!("{name} -> {ips:?}, expected {want:?}")),
                    Err(e) => (false, format!("{name}: {e:#}")),
                };
                rows.push(Row {
                    check: "3 pod-to-service, by DNS name".into(),
                    from: from.to_string(),
                    to: format!("{name} {}", if v4 { "A" } else { "AAAA" }),
                    protocol: Protocol::Udp,
                    family: if v4 { "IPv4" } else { "IPv6" },
                    ok,
                    detail,
                });
            }
        }
    }
    rows
}
