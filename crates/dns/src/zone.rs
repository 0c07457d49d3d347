//! The zone index and the answer logic.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tracing::warn;

use crate::names::{dashed, labels, parse_dashed, reverse, reverse_zone, under};
use crate::{
    Answer, Config, EndpointView, PodsMode, Snapshot, DEFAULT_EDNS_PAYLOAD, SCHEMA_VERSION,
};

/// Longest CNAME chain followed inside the zone before giving up with SERVFAIL.
const MAX_CNAME_CHAIN: usize = 8;

/// Largest DNS message over TCP.
const MAX_TCP: usize = u16::MAX as usize;

/// The plain UDP limit without EDNS0 (RFC 1035).
const MIN_UDP: usize = 512;

/// One record of a node. Names a record points to are shared (`Arc`): a Service's name is
/// the target of its SRV records and of its PTR records.
#[derive(Debug, Clone, PartialEq)]
enum Rec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { port: u16, target: Arc<Name> },
    Ptr(Arc<Name>),
    Txt(Box<str>),
    Cname(Arc<Name>),
}

/// The data owned by one name, in insertion order; a node without data is an empty
/// non-terminal (NODATA). Kept compact: a zone holds several nodes per Service.
#[derive(Debug, Clone, Default)]
struct Node(Vec<Rec>);

impl Node {
    fn push(&mut self, r: Rec) {
        if !self.0.contains(&r) {
            self.0.push(r);
        }
    }

    fn add_ip(&mut self, ip: IpAddr) {
        self.push(match ip {
            IpAddr::V4(v4) => Rec::A(v4),
            IpAddr::V6(v6) => Rec::Aaaa(v6),
        });
    }

    fn cname(&self) -> Option<&Name> {
        self.0.iter().find_map(|r| match r {
            Rec::Cname(t) => Some(&**t),
            _ => None,
        })
    }

    /// The record data of `qtype` (all types for ANY), grouped by type: CNAME, A, AAAA,
    /// SRV, PTR, TXT.
    fn rdata(&self, qtype: RecordType) -> Vec<RData> {
        let any = qtype == RecordType::ANY;
        let mut out = Vec::new();
        for t in [
            RecordType::CNAME,
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::PTR,
            RecordType::TXT,
        ] {
            if !any && qtype != t {
                continue;
            }
            for r in &self.0 {
                let rd = match (t, r) {
                    (RecordType::CNAME, Rec::Cname(n)) => RData::CNAME(CNAME((**n).clone())),
                    (RecordType::A, Rec::A(ip)) => RData::A(A(*ip)),
                    (RecordType::AAAA, Rec::Aaaa(ip)) => RData::AAAA(AAAA(*ip)),
                    (RecordType::SRV, Rec::Srv { port, target }) => {
                        RData::SRV(SRV::new(0, 100, *port, (**target).clone()))
                    }
                    (RecordType::PTR, Rec::Ptr(n)) => RData::PTR(PTR((**n).clone())),
                    (RecordType::TXT, Rec::Txt(t)) => RData::TXT(TXT::new(vec![t.to_string()])),
                    _ => continue,
                };
                out.push(rd);
            }
        }
        out
    }
}

/// The index key of a name: lowercase, in presentation form, relative to `origin` when
/// under it (`svc1.ns1.svc`; the origin itself is ``), else fully qualified with its final
/// dot (`1.0.43.10.in-addr.arpa.`), so the two kinds never collide. Dropping the cluster
/// domain keeps most keys short.
fn key(name: &Name, origin: &str) -> Box<str> {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    let text = n.to_string();
    match text.strip_suffix(origin) {
        Some("") => "".into(),
        Some(rel) if rel.ends_with('.') => rel[..rel.len() - 1].into(),
        _ => text.into_boxed_str(),
    }
}

/// The cluster zone as an index built from a [`Snapshot`]: every name the schema defines,
/// with its records, in a hash map (O(1) per lookup). Build a new `Zone` when the snapshot
/// changes; answering never mutates it.
///
/// Names (`<zone>` is the configured cluster domain):
///
/// | name | records |
/// |---|---|
/// | `<zone>` | SOA, NS `ns.dns.<zone>` |
/// | `dns-version.<zone>` | TXT `"1.1.0"` |
/// | `<svc>.<ns>.svc.<zone>` | ClusterIP: A/AAAA of the ClusterIPs; headless: A/AAAA of the ready endpoints (all with publishNotReadyAddresses; no name without any); ExternalName: CNAME; SRV for every port (CoreDNS) |
/// | `_<port>._<proto>.<svc>.<ns>.svc.<zone>` | SRV per named port (headless: per endpoint), priority 0, weight 100 |
/// | `<host>.<svc>.<ns>.svc.<zone>` | headless only: A/AAAA of the endpoints with that hostname, or whose dashed address (`10-42-0-2`) is `<host>` when they have none |
/// | ExternalName Services | CNAME only: no SRV and no endpoint names |
/// | `<a-b-c-d>.<ns>.pod.<zone>` | per [`PodsMode`] |
/// | `d.c.b.a.in-addr.arpa.`, nibble `ip6.arpa.` | PTR to the Service name for ClusterIPs, to the endpoint name for headless endpoints with a hostname |
///
/// Intermediate names (`<zone>`, `svc.<zone>`, `<ns>.svc.<zone>` of known namespaces,
/// `_<proto>.<svc>...`, `pod.<zone>` and `<ns>.pod.<zone>` with pods enabled) exist with no
/// data: NODATA, not NXDOMAIN.
///
/// Reverse names are only owned where there is a PTR record: a reverse query for any other
/// address is [`Answer::Forward`], like CoreDNS' `fallthrough in-addr.arpa ip6.arpa`.
#[derive(Debug, Clone)]
pub struct Zone {
    cfg: Config,
    origin: Name,
    pod_base: Name,
    ns_name: Name,
    hostmaster: Name,
    serial: u32,
    nodes: HashMap<Box<str>, Node>,
    /// The origin in presentation form (`cluster.local.`), as keys are made relative to it.
    origin_text: String,
    pods: HashSet<(String, IpAddr)>,
    id: u64,
    synced: bool,
}

/// Numbers every zone built, so that answers cached for one are never served from another.
static ZONES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Zone {
    /// Index `snap` under `cfg.zone`. Objects whose names do not make valid DNS names are
    /// skipped with a warning.
    pub fn new(cfg: Config, snap: Snapshot) -> Self {
        let mut origin = cfg.zone.to_lowercase();
        origin.set_fqdn(true);
        let name = |l: &[&str]| under(l, &origin).expect("valid constant labels");
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let mut zone = Zone {
            pod_base: name(&["pod"]),
            ns_name: name(&["ns", "dns"]),
            hostmaster: name(&["hostmaster"]),
            origin_text: origin.to_string(),
            origin: origin.clone(),
            serial,
            nodes: HashMap::new(),
            pods: HashSet::new(),
            cfg,
            id: ZONES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            synced: true,
        };
        zone.build(snap);
        zone
    }

    /// A zone whose data has not been read yet: names in it get SERVFAIL (never NXDOMAIN:
    /// "does not exist" would be a lie until the Services are known).
    pub fn unsynced(cfg: Config) -> Self {
        let mut z = Zone::new(cfg, Snapshot::default());
        z.synced = false;
        z
    }

    /// Whether the zone was built from data (readiness).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// A number no other zone of this process has.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The configuration the zone was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the zone answers for `name`: names under the cluster domain, and reverse names
    /// (`in-addr.arpa.`, `ip6.arpa.`) of the ClusterIPs and of headless endpoints with a
    /// hostname. Everything else is forwarded.
    pub fn in_zone(&self, name: &Name) -> bool {
        let mut name = name.clone();
        name.set_fqdn(true);
        self.origin.zone_of(&name)
            || (reverse_zone(&name).is_some()
                && self.nodes.contains_key(&key(&name, &self.origin_text)))
    }

    fn node_mut(&mut self, name: &Name) -> &mut Node {
        if self.origin.zone_of(name) {
            let mut parent = name.base_name();
            while parent.num_labels() > self.origin.num_labels() {
                let next = parent.base_name();
                self.nodes
                    .entry(key(&parent, &self.origin_text))
                    .or_default();
                parent = next;
            }
            self.nodes.entry("".into()).or_default();
        }
        self.nodes.entry(key(name, &self.origin_text)).or_default()
    }

    fn build(&mut self, snap: Snapshot) {
        let origin = self.origin.clone();
        let pods_enabled = self.cfg.pods != PodsMode::Disabled;
        self.node_mut(&origin);
        let version = under(&["dns-version"], &origin).expect("valid constant labels");
        self.node_mut(&version)
            .push(Rec::Txt(SCHEMA_VERSION.into()));
        self.node_mut(&under(&["svc"], &origin).expect("valid constant labels"));
        if pods_enabled {
            let pod_base = self.pod_base.clone();
            self.node_mut(&pod_base);
        }

        let namespaces: HashSet<String> = snap
            .namespaces
            .iter()
            .chain(snap.services.iter().map(|s| &s.namespace))
            .chain(snap.pods.iter().map(|p| &p.namespace))
            .map(|ns| ns.to_ascii_lowercase())
            .collect();
        for ns in &namespaces {
            match under(&[ns, "svc"], &origin) {
                Some(n) => {
                    self.node_mut(&n);
                }
                None => warn!(namespace = %ns, "namespace is not a DNS label, skipped"),
            }
            if pods_enabled {
                if let Some(n) = under(&[ns], &self.pod_base) {
                    self.node_mut(&n);
                }
            }
        }
        self.pods = snap
            .pods
            .iter()
            .map(|p| (p.namespace.to_ascii_lowercase(), p.ip))
            .collect();

        let mut endpoints: HashMap<(String, String), Vec<&EndpointView>> = HashMap::new();
        for ep in &snap.endpoints {
            endpoints
                .entry((
                    ep.namespace.to_ascii_lowercase(),
                    ep.service.to_ascii_lowercase(),
                ))
                .or_default()
                .push(ep);
        }

        for svc in &snap.services {
            let Some(svc_name) = under(&[&svc.name, &svc.namespace, "svc"], &origin) else {
                warn!(namespace = %svc.namespace, service = %svc.name, "Service name is not a DNS name, skipped");
                continue;
            };
            if let Some(ext) = &svc.external_name {
                match Name::from_ascii(ext) {
                    Ok(mut target) => {
                        target.set_fqdn(true);
                        self.node_mut(&svc_name).push(Rec::Cname(Arc::new(target)));
                    }
                    Err(e) => {
                        warn!(service = %svc_name, external_name = %ext, error = %e, "bad externalName, skipped")
                    }
                }
                continue;
            }
            // SRV names per port: (port node name, port) pairs.
            let port_names: Vec<Option<Name>> = svc
                .ports
                .iter()
                .map(|p| {
                    if p.name.is_empty() {
                        return None;
                    }
                    let port = format!("_{}", p.name);
                    let proto = format!("_{}", p.protocol);
                    under(&[&port, &proto], &svc_name)
                })
                .collect();
            if !svc.headless {
                if svc.cluster_ips.is_empty() {
                    continue;
                }
                let target = Arc::new(svc_name.clone());
                let srv = |port: u16| Rec::Srv {
                    port,
                    target: target.clone(),
                };
                let node = self.node_mut(&svc_name);
                for ip in &svc.cluster_ips {
                    node.add_ip(*ip);
                }
                for p in &svc.ports {
                    node.push(srv(p.port));
                }
                for (p, pn) in svc.ports.iter().zip(&port_names) {
                    if let Some(pn) = pn {
                        self.node_mut(pn).push(srv(p.port));
                    }
                }
                for ip in &svc.cluster_ips {
                    self.node_mut(&reverse(*ip)).push(Rec::Ptr(target.clone()));
                }
                continue;
            }
            let key = (
                svc.namespace.to_ascii_lowercase(),
                svc.name.to_ascii_lowercase(),
            );
            let published = endpoints
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|ep| ep.ready || svc.publish_not_ready);
            for ep in published {
                let host = ep.hostname.clone().unwrap_or_else(|| dashed(ep.ip));
                let Some(ep_name) = under(&[&host], &svc_name) else {
                    warn!(service = %svc_name, hostname = %host, "endpoint hostname is not a DNS label, skipped");
                    continue;
                };
                self.node_mut(&ep_name).add_ip(ep.ip);
                self.node_mut(&svc_name).add_ip(ep.ip);
                let ep_name = Arc::new(ep_name);
                if ep.hostname.is_some() {
                    self.node_mut(&reverse(ep.ip))
                        .push(Rec::Ptr(ep_name.clone()));
                }
                for (sp, pn) in svc.ports.iter().zip(&port_names) {
                    let Some(target_port) = ep.ports.iter().find(|p| {
                        p.name.eq_ignore_ascii_case(&sp.name)
                            && p.protocol.eq_ignore_ascii_case(&sp.protocol)
                    }) else {
                        continue;
                    };
                    let srv = Rec::Srv {
                        port: target_port.port,
                        target: ep_name.clone(),
                    };
                    self.node_mut(&svc_name).push(srv.clone());
                    if let Some(pn) = pn {
                        self.node_mut(pn).push(srv);
                    }
                }
            }
        }
        for node in self.nodes.values_mut() {
            node.0.shrink_to_fit();
        }
        self.nodes.shrink_to_fit();
    }

    /// Answer `query`.
    ///
    /// `max_udp` is `Some(server limit)` for a query that came over UDP: the response is cut
    /// to the client's limit (the EDNS0 payload size of its OPT record, at least 512, else 512)
    /// and to this server limit, with TC set when answer records had to be left out (additional
    /// records are dropped first, without TC). `None` is TCP: the full answer (up to 65535
    /// bytes). hickory compresses at most 120 names per message, so large answers take more
    /// room than fully compressed ones would.
    ///
    /// - [`Answer::Forward`] for names outside the zone (see [`Zone::in_zone`]) and classes
    ///   other than IN / ANY.
    /// - FORMERR without a question, NOTIMP for opcodes other than QUERY and for AXFR / IXFR,
    ///   BADVERS for EDNS versions above 0.
    /// - Only the first question of a message with several is answered (and echoed), as every
    ///   common server does.
    /// - An ExternalName Service answers its CNAME to every type but CNAME and ANY; when the
    ///   target is inside the zone the chain is followed here, when it is outside the response
    ///   holds the CNAME record only: resolving the target is the job of the server (or of
    ///   the client's resolver).
    /// - Negative answers (NXDOMAIN, NODATA) carry the zone's SOA in the authority section.
    /// - Responses are authoritative (AA), copy RD and CD, set RA (the server forwards), keep
    ///   the case of the question in the question and in the answers' owner names, and echo
    ///   an OPT record when the query had one.
    pub fn answer(&self, query: &Message, max_udp: Option<usize>) -> Answer {
        if query.metadata.op_code != OpCode::Query {
            return Answer::Local(error_response(query, ResponseCode::NotImp, max_udp));
        }
        let Some(q) = query.queries.first() else {
            return Answer::Local(error_response(query, ResponseCode::FormErr, max_udp));
        };
        if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Answer::Local(error_response(query, ResponseCode::BADVERS, max_udp));
        }
        if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) || !self.in_zone(q.name()) {
            return Answer::Forward;
        }
        let mut resp = response_to(query, max_udp);
        resp.add_query(q.clone());
        if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
            resp.metadata.response_code = ResponseCode::NotImp;
            return Answer::Local(resp);
        }
        if !self.synced {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Answer::Local(resp);
        }
        resp.metadata.authoritative = true;
        self.resolve(q, &mut resp);
        let limit = match max_udp {
            None => MAX_TCP,
            Some(server) => {
                let client = query
                    .edns
                    .as_ref()
                    .map_or(MIN_UDP, |e| usize::from(e.max_payload()).max(MIN_UDP));
                client.min(server)
            }
        };
        Answer::Local(fit(resp, limit))
    }

    /// The node owning `name` (case-insensitive), synthesizing pod names.
    fn lookup(&self, name: &Name) -> Option<Cow<'_, Node>> {
        let mut lname = name.to_lowercase();
        lname.set_fqdn(true);
        if let Some(node) = self.nodes.get(&key(&lname, &self.origin_text)) {
            return Some(Cow::Borrowed(node));
        }
        if self.cfg.pods == PodsMode::Disabled
            || !self.pod_base.zone_of(&lname)
            || lname.num_labels() != self.pod_base.num_labels() + 2
        {
            return None;
        }
        let l = labels(&lname);
        let ip = parse_dashed(&l[0])?;
        if self.cfg.pods == PodsMode::Verified && !self.pods.contains(&(l[1].clone(), ip)) {
            return None;
        }
        let mut node = Node::default();
        node.add_ip(ip);
        Some(Cow::Owned(node))
    }

    fn resolve(&self, q: &Query, resp: &mut Message) {
        let qtype = q.query_type();
        let ttl = self.cfg.ttl;
        let mut owner = q.name().clone();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.lookup(&owner) else {
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.add_authority(self.soa(&owner));
                return;
            };
            if let Some(target) = node.cname() {
                if !matches!(qtype, RecordType::CNAME | RecordType::ANY) {
                    resp.add_answer(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if !self.origin.zone_of(target) {
                        return;
                    }
                    owner = target.clone();
                    continue;
                }
            }
            let mut rdata = node.rdata(qtype);
            if self.origin.eq(&owner) {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    rdata.push(RData::SOA(self.soa_data()));
                }
                if matches!(qtype, RecordType::NS | RecordType::ANY) {
                    rdata.push(RData::NS(NS(self.ns_name.clone())));
                }
            }
            if rdata.is_empty() {
                resp.add_authority(self.soa(&owner));
                return;
            }
            let mut targets: Vec<Name> = Vec::new();
            for rd in rdata {
                if let RData::SRV(srv) = &rd {
                    if !targets.contains(&srv.target) {
                        targets.push(srv.target.clone());
                    }
                }
                resp.add_answer(Record::from_rdata(owner.clone(), ttl, rd));
            }
            for target in targets {
                if let Some(node) = self.lookup(&target) {
                    for rd in node
                        .rdata(RecordType::A)
                        .into_iter()
                        .chain(node.rdata(RecordType::AAAA))
                    {
                        resp.add_additional(Record::from_rdata(target.clone(), ttl, rd));
                    }
                }
            }
            return;
        }
        warn!(name = %q.name(), "CNAME chain too long");
        resp.answers.clear();
        resp.metadata.response_code = ResponseCode::ServFail;
    }

    fn soa_data(&self) -> SOA {
        SOA::new(
            self.ns_name.clone(),
            self.hostmaster.clone(),
            self.serial,
            7200,
            1800,
            86400,
            self.cfg.ttl,
        )
    }

    /// The SOA record for a negative answer about `name`: the cluster zone's, owned by the
    /// reverse zone for reverse names.
    fn soa(&self, name: &Name) -> Record {
        let owner = if self.origin.zone_of(name) {
            self.origin.clone()
        } else {
            reverse_zone(name).unwrap_or_else(|| self.origin.clone())
        };
        Record::from_rdata(owner, self.cfg.ttl, RData::SOA(self.soa_data()))
    }
}

/// A response header for `query`: same id and opcode, RD and CD copied, RA set, OPT echoed.
fn response_to(query: &Message, max_udp: Option<usize>) -> Message {
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    resp.metadata.recursion_available = true;
    if query.edns.is_some() {
        let payload = max_udp.map_or(DEFAULT_EDNS_PAYLOAD, |m| {
            u16::try_from(m).unwrap_or(u16::MAX)
        });
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        resp.set_edns(edns);
    }
    resp
}

fn error_response(query: &Message, code: ResponseCode, max_udp: Option<usize>) -> Message {
    let mut resp = response_to(query, max_udp);
    resp.metadata.response_code = code;
    if let Some(q) = query.queries.first() {
        resp.add_query(q.clone());
    }
    resp
}

fn encoded_len(msg: &Message) -> usize {
    msg.to_vec().map_or(usize::MAX, |b| b.len())
}

/// Cut `msg` to `limit` bytes: first without additional records (no TC, RFC 2181 9), then
/// with TC and as many whole answer records as fit.
fn fit(mut msg: Message, limit: usize) -> Message {
    if encoded_len(&msg) <= limit {
        return msg;
    }
    msg.additionals.clear();
    if encoded_len(&msg) <= limit {
        return msg;
    }
    msg.metadata.truncation = true;
    msg.authorities.clear();
    let answers = std::mem::take(&mut msg.answers);
    let (mut lo, mut hi) = (0, answers.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        msg.answers = answers[..mid].to_vec();
        if encoded_len(&msg) <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    msg.answers = answers;
    msg.answers.truncate(lo);
    msg
}
