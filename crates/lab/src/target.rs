//! Names of places in a lab cluster, as commands take them: `[NS/]POD`, `node/NAME`,
//! `external`.

use anyhow::{bail, Result};
use flatnet_model::names;
use flatnet_model::state::{external_ip, ClusterDir, State};
use std::net::IpAddr;
use std::path::PathBuf;

/// A place that runs programs: a pod, a node or the external host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A pod `namespace/name`.
    Pod {
        /// Kubernetes namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// A node.
    Node(String),
    /// The host outside the cluster.
    External,
}

impl Target {
    /// Parses `[NS/]POD`, `node/NAME` or `external`, checking it exists in `state`.
    pub fn parse(text: &str, state: &State) -> Result<Self> {
        let t = match text.split_once('/') {
            None if text == "external" => Target::External,
            Some(("node", n)) => Target::Node(n.to_string()),
            Some((ns, p)) => Target::Pod {
                namespace: ns.to_string(),
                name: p.to_string(),
            },
            None => Target::Pod {
                namespace: "default".into(),
                name: text.to_string(),
            },
        };
        match &t {
            Target::Node(n) if state.node(n).is_none() => {
                bail!("no node {n:?} (nodes: {})", node_list(state))
            }
            Target::Pod { namespace, name } if state.pod(namespace, name).is_none() => {
                bail!("no pod {namespace}/{name} (see flatnet get pods -A)")
            }
            _ => Ok(t),
        }
    }

    /// The network namespace's name.
    pub fn netns(&self, cluster: &str) -> String {
        match self {
            Target::Pod { namespace, name } => names::pod_netns(cluster, namespace, name),
            Target::Node(n) => names::node_netns(cluster, n),
            Target::External => names::external_netns(cluster),
        }
    }

    /// The network namespace's path.
    pub fn netns_path(&self, cluster: &str) -> PathBuf {
        flatnet_netlink::netns::path(&self.netns(cluster))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Target::Node(n) => write!(f, "node/{n}"),
            Target::External => f.write_str("external"),
        }
    }
}

fn node_list(state: &State) -> String {
    state
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The IPs of pod `namespace/name`, as its node reports them.
pub fn pod_ips(dir: &ClusterDir, state: &State, namespace: &str, name: &str) -> Vec<IpAddr> {
    let Some(p) = state.pod(namespace, name) else {
        return Vec::new();
    };
    dir.read_node_status(&p.node)
        .pods
        .get(&p.key())
        .filter(|s| s.uid == p.uid)
        .map(|s| s.ips.clone())
        .unwrap_or_default()
}

/// Resolves a probe destination: an IP, `node/NAME`, `external` or `[NS/]POD`.
/// `family` picks IPv6 for pods when true.
pub fn resolve_destination(
    dir: &ClusterDir,
    state: &State,
    text: &str,
    ipv6: bool,
) -> Result<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    match Target::parse(text, state)? {
        Target::Node(n) => Ok(IpAddr::V4(state.node(&n).expect("checked").ip)),
        Target::External => Ok(IpAddr::V4(external_ip(&state.config.node_cidr))),
        Target::Pod { namespace, name } => pod_ips(dir, state, &namespace, &name)
            .into_iter()
            .find(|ip| ip.is_ipv6() == ipv6)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "pod {namespace}/{name} has no {} address",
                    if ipv6 { "IPv6" } else { "IPv4" }
                )
            }),
    }
}
