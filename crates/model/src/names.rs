//! Names of lab objects. Every one carries the cluster's name, so `down` finds them all.
//!
//! Network namespaces are `<cluster>.<role>...`; a cluster name is a DNS label (no dot), so
//! the prefix `<cluster>.` belongs to exactly one cluster. Links live inside these namespaces
//! and go with them.

/// The fabric namespace: holds the node network's bridge.
pub fn fabric_netns(cluster: &str) -> String {
    format!("{cluster}.fabric")
}

/// A node's namespace.
pub fn node_netns(cluster: &str, node: &str) -> String {
    format!("{cluster}.node.{node}")
}

/// The `external` namespace: the world outside the cluster.
pub fn external_netns(cluster: &str) -> String {
    format!("{cluster}.external")
}

/// A pod's namespace.
pub fn pod_netns(cluster: &str, namespace: &str, pod: &str) -> String {
    format!("{cluster}.pod.{namespace}.{pod}")
}

/// The prefix shared by every namespace of `cluster`.
pub fn netns_prefix(cluster: &str) -> String {
    format!("{cluster}.")
}

/// The path of a named network namespace, as `ip netns` keeps it.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(NETNS_DIR).join(name)
}

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Where `ip netns exec` finds a namespace's own files (its resolv.conf, bind-mounted over
/// /etc/resolv.conf for programs run inside).
pub fn etc_netns_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name)
}

/// The cluster DNS Service, in `kube-system`.
pub const CLUSTER_DNS_SERVICE: &str = "kube-dns";

/// The conventional cluster DNS address of a service range: its tenth address.
pub fn cluster_dns_ip(service_cidr: &ipnet::IpNet) -> std::net::IpAddr {
    match service_cidr {
        ipnet::IpNet::V4(n) => std::net::IpAddr::V4((u32::from(n.network()) + 10).into()),
        ipnet::IpNet::V6(n) => std::net::IpAddr::V6((u128::from(n.network()) + 10).into()),
    }
}

/// The node network bridge inside the fabric namespace.
pub const FABRIC_BRIDGE: &str = "fabric0";
/// The pod bridge inside each node namespace.
pub const POD_BRIDGE: &str = "cni0";
/// The VXLAN device inside each node namespace.
pub const VXLAN_DEVICE: &str = "flatnet.1";
/// VXLAN network identifier.
pub const VXLAN_VNI: u32 = 1;
/// VXLAN UDP port.
pub const VXLAN_PORT: u16 = 8472;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_cluster() {
        assert_eq!(pod_netns("lab", "x", "a"), "lab.pod.x.a");
        assert!(node_netns("lab", "node1").starts_with(&netns_prefix("lab")));
        assert!(!node_netns("lab-2", "node1").starts_with(&netns_prefix("lab")));
    }
}
