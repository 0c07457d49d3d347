//! The `Cluster` document (`flatnet.dev/v1alpha1`) and its resolved form.

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// API version of flatnet's own documents.
pub const API_VERSION: &str = "flatnet.dev/v1alpha1";
/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "flatnet";

/// `spec.nodes`: a count or a list of names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodesSpec {
    /// Nodes named `node1` .. `nodeN`.
    Count(u32),
    /// Nodes with these names.
    Names(Vec<String>),
}

/// How pod traffic crosses between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Encapsulate in VXLAN over the node network (flannel's vxlan backend).
    #[default]
    Vxlan,
    /// Route each node's pod subnet via that node's IP (flannel's host-gw backend).
    HostGw,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        })
    }
}

/// The `spec` of a `Cluster` document as written: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// Node count or names.
    pub nodes: Option<NodesSpec>,
    /// The node network (IPv4).
    #[serde(rename = "nodeCIDR")]
    pub node_cidr: Option<String>,
    /// Pod ranges, one per family.
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
    /// Service ranges, one per family.
    #[serde(rename = "serviceCIDRs")]
    pub service_cidrs: Option<Vec<String>>,
    /// Prefix length of each node's IPv4 pod subnet.
    #[serde(rename = "nodeMaskSizeIPv4")]
    pub node_mask_size_ipv4: Option<u8>,
    /// Prefix length of each node's IPv6 pod subnet.
    #[serde(rename = "nodeMaskSizeIPv6")]
    pub node_mask_size_ipv6: Option<u8>,
    /// `vxlan` or `host-gw`.
    pub backend: Option<Backend>,
    /// MTU of the node network.
    pub mtu: Option<u32>,
    /// DNS domain of the cluster.
    pub cluster_domain: Option<String>,
    /// LoadBalancer IPs, `first-last`.
    pub load_balancer_pool: Option<String>,
    /// Components `up` installs.
    pub addons: Option<AddonsSpec>,
}

/// `spec.addons`: what `up` installs besides the network itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddonsSpec {
    /// The cluster DNS (default true).
    pub dns: Option<bool>,
    /// The Ingress controller and its default IngressClass `flatnet` (default true).
    pub ingress: Option<bool>,
}

/// The cluster's network after defaults and validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Cluster name (a DNS label); every lab object carries it.
    pub name: String,
    /// Node names in order.
    pub nodes: Vec<String>,
    /// The node network.
    pub node_cidr: Ipv4Net,
    /// Pod ranges (IPv4 first when dual-stack).
    pub pod_cidrs: Vec<IpNet>,
    /// Service ranges, same families as `pod_cidrs`.
    pub service_cidrs: Vec<IpNet>,
    /// Node subnet prefix length, IPv4.
    pub node_mask_size_ipv4: u8,
    /// Node subnet prefix length, IPv6.
    pub node_mask_size_ipv6: u8,
    /// Overlay backend.
    pub backend: Backend,
    /// MTU of the node network.
    pub mtu: u32,
    /// DNS domain.
    pub cluster_domain: String,
    /// First and last LoadBalancer IP.
    pub load_balancer_pool: (Ipv4Addr, Ipv4Addr),
    /// Whether `up` installs the cluster DNS.
    #[serde(default = "yes")]
    pub dns: bool,
    /// Whether `up` installs the Ingress controller.
    #[serde(default = "yes")]
    pub ingress: bool,
}

fn yes() -> bool {
    true
}

impl ClusterConfig {
    /// The prefix length of a node subnet carved from `cidr`.
    pub fn node_mask_for(&self, cidr: &IpNet) -> u8 {
        match cidr {
            IpNet::V4(_) => self.node_mask_size_ipv4,
            IpNet::V6(_) => self.node_mask_size_ipv6,
        }
    }

    /// MTU of pod interfaces: the node network's less the overlay's header.
    pub fn pod_mtu(&self) -> u32 {
        match self.backend {
            // IPv4 outer header: 20 (IP) + 8 (UDP) + 8 (VXLAN) + 14 (inner Ethernet).
            Backend::Vxlan => self.mtu - 50,
            Backend::HostGw => self.mtu,
        }
    }

    /// Whether the cluster has pods of both families.
    pub fn dual_stack(&self) -> bool {
        self.pod_cidrs.len() == 2
    }
}

/// Defaults from DESIGN.md.
pub mod defaults {
    /// Node count.
    pub const NODES: u32 = 3;
    /// Node network.
    pub const NODE_CIDR: &str = "192.168.1.0/24";
    /// Pod ranges.
    pub const POD_CIDRS: [&str; 2] = ["10.42.0.0/16", "fd00:10:42::/56"];
    /// Service ranges.
    pub const SERVICE_CIDRS: [&str; 2] = ["10.43.0.0/16", "fd00:10:43::/112"];
    /// IPv4 node subnet size.
    pub const NODE_MASK_V4: u8 = 24;
    /// IPv6 node subnet size.
    pub const NODE_MASK_V6: u8 = 64;
    /// Node network MTU.
    pub const MTU: u32 = 1500;
    /// Cluster DNS domain.
    pub const CLUSTER_DOMAIN: &str = "cluster.local";
    /// LoadBalancer pool.
    pub const LB_POOL: &str = "192.168.1.200-192.168.1.250";
}
