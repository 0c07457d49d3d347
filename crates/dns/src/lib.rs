//! Cluster DNS for flatnet: the answer core of a DNS server implementing the
//! [Kubernetes DNS-Based Service Discovery specification 1.1.0][spec], plus the CoreDNS
//! `kubernetes` plugin behaviour where the specification is silent.
//!
//! - [`Snapshot`] is the input: Services, endpoints, pods and namespaces, independent of
//!   flatnet's model crate.
//! - [`Zone`] is an index built once from a snapshot; [`Zone::answer`] turns a query
//!   [`Message`] into an [`Answer`]: a local response, or [`Answer::Forward`] for names the
//!   cluster zone does not own.
//! - [`serve_udp_tcp`] is a small UDP + TCP server around a zone that forwards the other names
//!   to upstream resolvers.
//!
//! [spec]: https://github.com/kubernetes/dns/blob/master/docs/specification.md

pub mod answers;
pub mod cache;
pub mod metrics;
mod names;
mod server;
mod zone;

pub use server::{serve_udp_tcp, ServerHandle};
pub use zone::Zone;

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::Name;

/// The version of the specification this crate implements, served as
/// `dns-version.<zone>. TXT`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Default TTL of every record, in seconds (CoreDNS' default).
pub const DEFAULT_TTL: u32 = 5;

/// The EDNS0 UDP payload size advertised in responses when the caller gives no UDP limit
/// (TCP): the DNS flag day 2020 value.
pub const DEFAULT_EDNS_PAYLOAD: u16 = 1232;

/// A Service as the DNS server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// ClusterIPs, one per family; empty for headless and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: names resolve to the endpoints.
    pub headless: bool,
    /// `spec.externalName` of an ExternalName Service: the name is a CNAME to it.
    pub external_name: Option<String>,
    /// The Service ports (`port`, not `targetPort`).
    pub ports: Vec<PortView>,
    /// `spec.publishNotReadyAddresses`: not-ready endpoints are published too.
    pub publish_not_ready: bool,
}

/// A port of a Service or of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortView {
    /// Port name; may be empty (then there is no `_<port>._<proto>` SRV name).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Port number.
    pub port: u16,
}

/// One endpoint address of a Service (from its EndpointSlices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service the endpoint belongs to.
    pub service: String,
    /// The endpoint address.
    pub ip: IpAddr,
    /// `conditions.ready`.
    pub ready: bool,
    /// The endpoint hostname, or the pod hostname when `pod.spec.subdomain` is the Service.
    pub hostname: Option<String>,
    /// The endpoint ports (target ports), matched to the Service ports by name and protocol.
    pub ports: Vec<PortView>,
}

/// A pod, for `<ip>.<ns>.pod.<zone>` names in [`PodsMode::Verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Namespace of the pod.
    pub namespace: String,
    /// One of its IPs (one `PodView` per IP of a dual-stack pod).
    pub ip: IpAddr,
}

/// Everything the DNS server answers from, at one point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// All Services.
    pub services: Vec<ServiceView>,
    /// All endpoint addresses of all Services.
    pub endpoints: Vec<EndpointView>,
    /// All pod IPs.
    pub pods: Vec<PodView>,
    /// The namespaces; the namespaces of Services and pods exist too.
    pub namespaces: Vec<String>,
}

/// How `<a-b-c-d>.<ns>.pod.<zone>` names are answered (CoreDNS' `pods` option).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodsMode {
    /// No pod names: `pod.<zone>` and everything under it is NXDOMAIN.
    #[default]
    Disabled,
    /// The address is parsed from the name, whatever pods exist.
    Insecure,
    /// The address is answered only if a pod with it exists in that namespace.
    Verified,
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local.`.
    pub zone: Name,
    /// TTL of every record and SOA minimum (negative caching time).
    pub ttl: u32,
    /// Pod names.
    pub pods: PodsMode,
}

impl Config {
    /// `zone` with TTL [`DEFAULT_TTL`] and pods disabled ([`Config::default`] is
    /// `cluster.local.`).
    pub fn new(zone: Name) -> Self {
        Config {
            zone,
            ttl: DEFAULT_TTL,
            pods: PodsMode::Disabled,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Name::from_ascii("cluster.local.").expect("valid constant name"))
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this response.
    Local(Message),
    /// The name is outside the cluster zone (and is not the reverse name of a known address):
    /// forward the query to an upstream resolver.
    Forward,
}

impl Answer {
    /// The local response, if any.
    pub fn local(self) -> Option<Message> {
        match self {
            Answer::Local(m) => Some(m),
            Answer::Forward => None,
        }
    }
}
