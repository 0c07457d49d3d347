//! The desired state of a lab cluster, shared through files in the cluster's state folder.
//!
//! `apply` writes `state.json` (atomically, under a lock); node agents watch it and write their
//! own `nodes/<node>/status.json` back.

use crate::cluster::ClusterConfig;
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Where lab clusters keep their state unless `FLATNET_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/run/flatnet";

/// The state root: `$FLATNET_STATE_DIR` or [`DEFAULT_STATE_ROOT`].
pub fn state_root() -> PathBuf {
    std::env::var_os("FLATNET_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT))
}

/// The address of the node with 1-based `index` on the node network: its `index`-th host.
pub fn node_ip(node_cidr: &Ipv4Net, index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(node_cidr.network()) + index)
}

/// The address of the `external` host: the node network's last host.
pub fn external_ip(node_cidr: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(node_cidr.broadcast()) - 1)
}

/// A node of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Stable 1-based index: gives the node IP and MACs.
    pub index: u32,
    /// The node's IP on the node network.
    pub ip: Ipv4Addr,
    /// The node's pod subnets, one per family.
    pub pod_cidrs: Vec<IpNet>,
}

impl NodeState {
    /// MAC address of the node's VXLAN device: locally administered, from the index.
    pub fn vtep_mac(&self) -> [u8; 6] {
        let i = self.index.to_be_bytes();
        [0x0e, 0xf1, i[0], i[1], i[2], i[3]]
    }

    /// MAC address of the node's `eth0` on the node network.
    pub fn eth_mac(&self) -> [u8; 6] {
        let i = self.index.to_be_bytes();
        [0x0e, 0xf0, i[0], i[1], i[2], i[3]]
    }

    /// MAC address of the node's pod bridge (the pods' gateway).
    pub fn bridge_mac(&self) -> [u8; 6] {
        let i = self.index.to_be_bytes();
        [0x0e, 0xf2, i[0], i[1], i[2], i[3]]
    }

    /// The node's IPv6 link-local address on the node network (host-gw next hop for IPv6).
    pub fn link_local(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xf1a7, self.index as u16)
    }
}

/// A port a pod serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPort {
    /// Port name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Port number.
    pub port: u16,
}

/// A pod scheduled to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Node it runs on.
    pub node: String,
    /// Unique id of this incarnation; the CNI container id.
    pub uid: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Declared container ports.
    #[serde(default)]
    pub ports: Vec<PodPort>,
    /// Owning Deployment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A flatnet program to run instead of the workload (the first container's `command`
    /// and `args` when its command is `flatnet`), e.g. `[flatnet, dns]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `spec.hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `spec.subdomain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// `spec.dnsPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// `spec.dnsConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<k8s_openapi::api::core::v1::PodDNSConfig>,
    /// Being deleted: it still runs, but its endpoints are no longer ready, so that every
    /// node stops sending it new connections before it goes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
}

impl PodState {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The whole desired state of a lab cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Bumped on every change.
    pub generation: u64,
    /// The network.
    pub config: ClusterConfig,
    /// Nodes in index order.
    pub nodes: Vec<NodeState>,
    /// Kubernetes namespaces.
    pub namespaces: Vec<String>,
    /// Pods, sorted by namespace and name.
    pub pods: Vec<PodState>,
    /// Deployments as applied.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// Services as applied.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Ingresses as applied (status written by the controller).
    #[serde(default)]
    pub ingresses: Vec<Ingress>,
    /// IngressClasses.
    #[serde(default)]
    pub ingress_classes: Vec<IngressClass>,
    /// Secrets (`stringData` folded into `data`).
    #[serde(default)]
    pub secrets: Vec<Secret>,
}

impl State {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodState> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

/// What a node agent reports about one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The incarnation this status is for.
    pub uid: String,
    /// Pod IPs, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// `Running` or the error that keeps it from running.
    pub phase: String,
    /// PID of the pod's workload process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// What a node agent reports about its node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The state generation last applied in full.
    pub generation: u64,
    /// The node's network is programmed.
    pub network_ready: bool,
    /// Per pod, keyed `namespace/name`.
    pub pods: BTreeMap<String, PodStatus>,
    /// Fingerprint of the EndpointSlices whose program the node has applied.
    #[serde(default)]
    pub endpoints: String,
    /// Last error, if the last sync failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Files of one lab cluster.
#[derive(Clone, Debug)]
pub struct ClusterDir {
    /// Cluster name.
    pub name: String,
    /// `<state root>/<name>`.
    pub path: PathBuf,
}

impl ClusterDir {
    /// The folder of cluster `name` under the state root.
    pub fn new(name: &str) -> Self {
        Self::at(&state_root(), name)
    }

    /// The folder of cluster `name` under `root`.
    pub fn at(root: &Path, name: &str) -> Self {
        Self {
            name: name.to_string(),
            path: root.join(name),
        }
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// A node's folder.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.path.join("nodes").join(node)
    }

    /// A node agent's status file.
    pub fn node_status_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("status.json")
    }

    /// Folder of log files.
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Whether the cluster exists.
    pub fn exists(&self) -> bool {
        self.state_file().exists()
    }

    /// Reads the desired state.
    pub fn read_state(&self) -> anyhow::Result<State> {
        read_json(&self.state_file())
    }

    /// Writes the desired state atomically.
    pub fn write_state(&self, state: &State) -> anyhow::Result<()> {
        write_json(&self.state_file(), state)
    }

    /// Newest modification time among the store's files: the state and every node's status
    /// (what a watcher polls to know whether anything changed).
    pub fn store_mtime(&self, state: &State) -> Option<std::time::SystemTime> {
        std::iter::once(self.state_file())
            .chain(state.nodes.iter().map(|n| self.node_status_file(&n.name)))
            .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Reads a node's status (default when the agent has not written one yet).
    pub fn read_node_status(&self, node: &str) -> NodeStatus {
        read_json(&self.node_status_file(node)).unwrap_or_default()
    }

    /// Takes the cluster's exclusive lock (held until the guard drops).
    pub fn lock(&self) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
        std::fs::create_dir_all(&self.path)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.join("lock"))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", self.path.display()))
    }
}

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let dir = path.parent().expect("file in a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How long [`StoreNotices::wait`] waits at most for a change notice: the store is looked at
/// at least this often, so a lost notice costs no more.
pub const STORE_FALLBACK: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the store is looked at when the system gives no change notices.
pub const STORE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Change notices for a cluster's store: `state.json` and the nodes' `status.json`, both
/// written by rename. Processes that follow the store wait on this instead of reading it
/// over and over: idle, they use no CPU; a change wakes them at once.
pub struct StoreNotices {
    dir: ClusterDir,
    notices: Option<flatnet_notices::Notices>,
}

impl StoreNotices {
    /// Notices for `dir`'s store, watched from now on: a change made after this returns is
    /// seen by the next [`StoreNotices::wait`]. Without notices from the system (logged), waits
    /// poll instead.
    pub fn new(dir: &ClusterDir) -> Self {
        let notices = match flatnet_notices::Notices::new() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("no change notices for {}: {e}; polling", dir.path.display());
                None
            }
        };
        let watcher = StoreNotices {
            dir: dir.clone(),
            notices,
        };
        watcher.watch(None);
        watcher
    }

    /// Watches the cluster's folder, its nodes' folder and the folder of each node of `state`
    /// (a node's folder may be made after its node joins: a new folder is a notice, and it is
    /// watched by the wait after it).
    fn watch(&self, state: Option<&State>) {
        let Some(n) = &self.notices else { return };
        n.watch([self.dir.path.clone(), self.dir.path.join("nodes")]);
        if let Some(state) = state {
            n.watch(state.nodes.iter().map(|node| self.dir.node_dir(&node.name)));
        }
    }

    /// Waits until the store may have changed (a state or status file replaced, a folder made
    /// or removed) or `timeout` passes, whichever is first; `state` is the state last read,
    /// whose nodes' folders are watched. Without notices, waits [`STORE_POLL`] (at most
    /// `timeout`).
    pub fn wait(&mut self, state: Option<&State>, timeout: std::time::Duration) {
        self.watch(state);
        let relevant = |n: &flatnet_notices::Notice| {
            flatnet_notices::about(n, "state.json") || flatnet_notices::about(n, "status.json")
        };
        if let Some(n) = &mut self.notices {
            match n.wait(timeout, relevant) {
                Ok(_) => return,
                Err(e) => tracing::warn!("change notices for {}: {e}", self.dir.path.display()),
            }
        }
        std::thread::sleep(STORE_POLL.min(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with nodes `a` and `b`.
    fn two_nodes() -> State {
        let spec = crate::ClusterSpec::default();
        let config = crate::validate::resolve_cluster("c.yaml", "lab", &spec, &[]).unwrap();
        let node = |name: &str, index| NodeState {
            name: name.into(),
            index,
            ip: node_ip(&config.node_cidr, index),
            pod_cidrs: vec![],
        };
        State {
            generation: 1,
            nodes: vec![node("a", 1), node("b", 2)],
            config,
            namespaces: vec![],
            pods: vec![],
            deployments: vec![],
            services: vec![],
            ingresses: vec![],
            ingress_classes: vec![],
            secrets: vec![],
        }
    }

    /// Whether `wait` ended well before its 10 s timeout.
    fn woken(notices: &mut StoreNotices, state: Option<&State>) -> bool {
        let started = std::time::Instant::now();
        notices.wait(state, std::time::Duration::from_secs(10));
        started.elapsed() < std::time::Duration::from_secs(5)
    }

    #[test]
    fn store_notices_wake_on_state_and_status_files_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = ClusterDir::at(root.path(), "lab");
        std::fs::create_dir_all(&dir.path).unwrap();
        let mut notices = StoreNotices::new(&dir);
        let state = two_nodes();

        // The state written (by rename) wakes a waiter at once.
        dir.write_state(&state).unwrap();
        assert!(woken(&mut notices, None));

        // The folder `nodes/` made, then a node's folder made later: both are notices, and
        // the node's status written afterwards is seen in its folder.
        std::fs::create_dir_all(dir.path.join("nodes")).unwrap();
        assert!(woken(&mut notices, Some(&state)));
        std::fs::create_dir_all(dir.node_dir("b")).unwrap();
        assert!(woken(&mut notices, Some(&state)));
        write_json(&dir.node_status_file("b"), &NodeStatus::default()).unwrap();
        assert!(woken(&mut notices, Some(&state)));

        // Other files in the watched folders do not wake it: the wait runs its time.
        std::fs::write(dir.node_dir("b").join("results.json"), "{}").unwrap();
        std::fs::write(dir.path.join("lock"), "").unwrap();
        let started = std::time::Instant::now();
        notices.wait(Some(&state), std::time::Duration::from_millis(200));
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));

        // The cluster removed (`down`) is a notice too.
        std::fs::remove_dir_all(&dir.path).unwrap();
        assert!(woken(&mut notices, Some(&state)));
    }

    #[test]
    fn node_and_external_addresses() {
        let n: Ipv4Net = "192.168.1.0/24".parse().unwrap();
        assert_eq!(node_ip(&n, 1), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(node_ip(&n, 3), Ipv4Addr::new(192, 168, 1, 3));
        assert_eq!(external_ip(&n), Ipv4Addr::new(192, 168, 1, 254));
    }

    #[test]
    fn macs_are_unicast_and_local_and_distinct() {
        let a = NodeState {
            name: "a".into(),
            index: 1,
            ip: Ipv4Addr::new(1, 1, 1, 1),
            pod_cidrs: vec![],
        };
        let b = NodeState {
            index: 2,
            ..a.clone()
        };
        for m in [a.vtep_mac(), a.eth_mac()] {
            assert_eq!(m[0] & 1, 0, "unicast");
            assert_eq!(m[0] & 2, 2, "locally administered");
        }
        assert_ne!(a.vtep_mac(), b.vtep_mac());
        assert_ne!(a.vtep_mac(), a.eth_mac());
    }

    #[test]
    fn json_round_trip_is_atomic_file() {
        let dir = tempfile::tempdir().unwrap();
        let cd = ClusterDir::at(dir.path(), "t");
        let status = NodeStatus {
            generation: 4,
            network_ready: true,
            ..Default::default()
        };
        write_json(&cd.node_status_file("n1"), &status).unwrap();
        assert_eq!(cd.read_node_status("n1"), status);
        assert_eq!(cd.read_node_status("missing"), NodeStatus::default());
        let _g = cd.lock().unwrap();
    }
}
