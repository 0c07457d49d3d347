//! The node agent: one per node, running inside the node's network namespace, doing what
//! kubelet and the network daemon do there. One reconcile loop: read the desired state,
//! program the node's network (overlay program), and run the node's pods: a namespace per
//! pod, wired by the CNI plugin invoked by exec, running `flatnet workload`.

pub mod env;
pub mod resolv;
pub mod runtime;
pub mod serve;

use anyhow::{Context, Result};
use flatnet_model::names;
use flatnet_model::state::{
    write_json, ClusterDir, NodeStatus, PodState, PodStatus, State, StoreNotices, STORE_FALLBACK,
};
use flatnet_netlink::{netns, Netlink};
use runtime::{Attachment, CniNetwork};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pod interface name.
pub const POD_IFNAME: &str = "eth0";

/// Where the agent finds things.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The cluster's state folder.
    pub cluster: ClusterDir,
    /// This node's name.
    pub node: String,
    /// Folder with the CNI plugin binaries (CNI_PATH).
    pub cni_bin_dir: PathBuf,
    /// The `flatnet` binary, to run `flatnet workload` in pods.
    pub flatnet_exe: PathBuf,
}

struct RunningPod {
    uid: String,
    netns: String,
    child: Option<Child>,
    status: PodStatus,
    result: Value,
}

/// The agent's in-memory view of its node.
pub struct Agent {
    cfg: AgentConfig,
    pods: BTreeMap<String, RunningPod>,
    status: NodeStatus,
    prepared: bool,
    /// The nftables table as last applied; `None` forces a full sync.
    table: Option<flatnet_proxy::table::Table>,
    /// LoadBalancer IPs this node announces.
    announced: Vec<IpAddr>,
    /// The Service flows last programmed.
    /// Prometheus metrics.
    metrics: Arc<serve::Metrics>,
    /// `/metrics` and health-check servers (started by `run`).
    servers: Option<serve::Servers>,
    flows: Vec<flatnet_proxy::flows::Flow>,
}

impl Agent {
    /// An agent for `cfg.node`; call from inside the node's namespace.
    pub fn new(cfg: AgentConfig) -> Self {
        Self {
            cfg,
            pods: BTreeMap::new(),
            status: NodeStatus::default(),
            prepared: false,
            table: None,
            announced: Vec::new(),
            flows: Vec::new(),
            metrics: Arc::new(serve::Metrics::new()),
            servers: None,
        }
    }

    fn node_dir(&self) -> PathBuf {
        self.cfg.cluster.node_dir(&self.cfg.node)
    }

    fn conflist_path(&self) -> PathBuf {
        self.node_dir().join("cni").join("10-flatnet.conflist")
    }

    /// The file the CNI plugin's STATUS waits for.
    pub fn readiness_file(&self) -> PathBuf {
        self.node_dir().join("network-ready")
    }

    fn write_status(&mut self) -> Result<()> {
        self.status.pods = self
            .pods
            .iter()
            .map(|(k, p)| (k.clone(), p.status.clone()))
            .collect();
        write_json(
            &self.cfg.cluster.node_status_file(&self.cfg.node),
            &self.status,
        )
    }

    /// Adopts pods an earlier agent left running; cleans up those that died.
    fn adopt(&mut self, state: &State) {
        let old = self.cfg.cluster.read_node_status(&self.cfg.node);
        let results: BTreeMap<String, Value> =
            flatnet_model::state::read_json(&self.node_dir().join("results.json"))
                .unwrap_or_default();
        for (key, st) in old.pods {
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let netns = names::pod_netns(&self.cfg.cluster.name, ns, name);
            let alive = st
                .pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
                && netns::exists(&netns);
            let result = results.get(&key).cloned().unwrap_or(Value::Null);
            let pod = RunningPod {
                uid: st.uid.clone(),
                netns,
                child: None,
                status: st,
                result,
            };
            if alive && state.pod(ns, name).is_some_and(|p| p.uid == pod.uid) {
                self.pods.insert(key, pod);
            } else {
                self.stop_pod(pod);
            }
        }
    }

    fn network(&self) -> Result<CniNetwork> {
        CniNetwork::load(&self.conflist_path(), vec![self.cfg.cni_bin_dir.clone()])
    }

    /// Programs the node's network: sysctls, bridge, overlay, CNI configuration.
    fn program_node(&mut self, state: &State) -> Result<()> {
        let me = state
            .node(&self.cfg.node)
            .with_context(|| format!("node {} is not in the cluster", self.cfg.node))?;
        if !self.prepared {
            netns::sysctl("net/ipv4/ip_forward", "1")?;
            netns::sysctl("net/ipv6/conf/all/forwarding", "1")?;
            netns::sysctl("net/ipv6/conf/default/accept_dad", "0")?;
            if !netns::bridge_netfilter(true, false)? {
                tracing::warn!(
                    "the kernel has no br_netfilter: replies of Service connections between \
                     two pods of this node will not be un-NATed"
                );
            }
        }
        let program = flatnet_overlay::program(&state.config, &state.nodes, &self.cfg.node);
        let nl = Netlink::new()?;
        flatnet_overlay::apply(&nl, &program)?;
        let conflist = json!({
            "cniVersion": "1.1.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "flatnet",
            "plugins": [{
                "type": "flatnet-cni",
                "bridge": names::POD_BRIDGE,
                "mtu": state.config.pod_mtu(),
                "hairpinMode": true,
                "readinessFile": self.readiness_file(),
                "ipam": {
                    "type": "host-local",
                    "ranges": me.pod_cidrs.iter().map(|c| json!([{"subnet": c}])).collect::<Vec<_>>(),
                    "dataDir": self.node_dir().join("ipam"),
                }
            }]
        });
        write_json(&self.conflist_path(), &conflist)?;
        std::fs::write(self.readiness_file(), b"ready\n")?;
        if !self.prepared {
            // Reservations of attachments that no longer exist (a crashed ADD, a lost pod) go.
            let valid: Vec<(String, String)> = self
                .pods
                .values()
                .map(|p| (p.uid.clone(), POD_IFNAME.to_string()))
                .collect();
            self.network()?.gc(&valid)?;
        }
        self.prepared = true;
        self.status.network_ready = true;
        Ok(())
    }

    fn start_pod(&self, pod: &PodState, state: &State) -> RunningPod {
        let netns_name = names::pod_netns(&self.cfg.cluster.name, &pod.namespace, &pod.name);
        let mut rp = RunningPod {
            uid: pod.uid.clone(),
            netns: netns_name.clone(),
            child: None,
            status: PodStatus {
                uid: pod.uid.clone(),
                ..Default::default()
            },
            result: Value::Null,
        };
        match self.try_start(pod, state, &netns_name, &mut rp) {
            Ok(()) => rp.status.phase = "Running".into(),
            Err(e) => {
                tracing::warn!("pod {}: {e:#}", pod.key());
                rp.status.phase = format!("Failed: {e:#}");
            }
        }
        rp
    }

    fn try_start(
        &self,
        pod: &PodState,
        state: &State,
        netns_name: &str,
        rp: &mut RunningPod,
    ) -> Result<()> {
        let ns_path = netns::create(netns_name)?;
        self.write_resolv_conf(pod, state, netns_name)?;
        let net = self.network()?;
        let result = net.add(&Attachment {
            container_id: &pod.uid,
            netns: &ns_path,
            ifname: POD_IFNAME,
        })?;
        rp.status.ips = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| {
                ip["address"]
                    .as_str()?
                    .split('/')
                    .next()?
                    .parse::<IpAddr>()
                    .ok()
            })
            .collect();
        rp.status.ips.sort_by_key(|ip| ip.is_ipv6());
        rp.result = result;
        let child = self.spawn_workload(pod, state, &ns_path)?;
        rp.status.pid = Some(child.id());
        rp.child = Some(child);
        Ok(())
    }

    /// Writes the pod's resolv.conf where `ip netns exec` (and so `flatnet exec`) mounts it.
    fn write_resolv_conf(&self, pod: &PodState, state: &State, netns_name: &str) -> Result<()> {
        let mut dns = flatnet_controller::services::cluster_dns_ips(state);
        if dns.is_empty() {
            // kubelet still names the conventional address when no DNS is installed.
            dns.push(names::cluster_dns_ip(&state.config.service_cidrs[0]));
        }
        let node = resolv::NodeResolv {
            nameservers: vec![IpAddr::V4(flatnet_model::state::external_ip(
                &state.config.node_cidr,
            ))],
            searches: Vec::new(),
        };
        // One nameserver per family would make resolvers wait on each; kubelet lists one.
        let text = resolv::resolv_conf(
            pod,
            &dns[..dns.len().min(1)],
            &state.config.cluster_domain,
            &node,
        );
        let dir = names::etc_netns_dir(netns_name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), text)?;
        Ok(())
    }

    fn spawn_workload(&self, pod: &PodState, state: &State, ns_path: &Path) -> Result<Child> {
        let log_dir = self.cfg.cluster.log_dir();
        std::fs::create_dir_all(&log_dir)?;
        let log =
            std::fs::File::create(log_dir.join(format!("pod-{}-{}.log", pod.namespace, pod.name)))?;
        let mut cmd = Command::new(&self.cfg.flatnet_exe);
        if pod.command.len() > 1 {
            // A flatnet program (e.g. `flatnet dns`) instead of the workload.
            cmd.args(&pod.command[1..]);
        } else {
            cmd.arg("workload")
                .arg("--pod")
                .arg(pod.key())
                .arg("--node")
                .arg(&pod.node);
            for p in &pod.ports {
                cmd.arg("--port")
                    .arg(format!("{}:{}", p.protocol.to_lowercase(), p.port));
            }
        }
        cmd.envs(env::service_env(&state.services, &pod.namespace))
            .env("FLATNET_CLUSTER", &self.cfg.cluster.name)
            .env("FLATNET_POD", pod.key())
            .env("FLATNET_NODE", &pod.node);
        let ns_file = std::fs::File::open(ns_path)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        // SAFETY: only async-signal-safe calls (setns, setsid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns_file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting flatnet workload")?;
        // The workload prints one line once every port is bound.
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "workload did not start (see {}/pod-{}-{}.log)",
                log_dir.display(),
                pod.namespace,
                pod.name
            );
        }
        Ok(child)
    }

    fn stop_pod(&self, mut pod: RunningPod) {
        if let Some(mut c) = pod.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else if let Some(pid) = pod.status.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let ns_path = netns::path(&pod.netns);
        if let Ok(net) = self.network() {
            let prev = (!pod.result.is_null()).then_some(&pod.result);
            if let Err(e) = net.del(
                &Attachment {
                    container_id: &pod.uid,
                    netns: &ns_path,
                    ifname: POD_IFNAME,
                },
                prev,
            ) {
                tracing::warn!("CNI DEL for {}: {e:#}", pod.netns);
            }
        }
        netns::kill_and_delete(&pod.netns);
        let _ = std::fs::remove_dir_all(names::etc_netns_dir(&pod.netns));
    }

    /// Restarts workloads that exited, as kubelet restarts containers.
    fn restart_exited(&mut self, state: &State) {
        let keys: Vec<String> = self.pods.keys().cloned().collect();
        for key in keys {
            let exited = match self.pods.get_mut(&key).and_then(|p| p.child.as_mut()) {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => false,
            };
            if !exited {
                continue;
            }
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let Some(pod) = state.pod(ns, name).cloned() else {
                continue;
            };
            let path = netns::path(&self.pods[&key].netns);
            match self.spawn_workload(&pod, state, &path) {
                Ok(child) => {
                    let rp = self.pods.get_mut(&key).expect("present");
                    rp.status.pid = Some(child.id());
                    rp.child = Some(child);
                }
                Err(e) => tracing::warn!("restarting {key}: {e:#}"),
            }
        }
    }

    /// One reconcile pass against `state`.
    pub fn sync(&mut self, state: &State) -> Result<()> {
        self.program_node(state)?;
        let want: BTreeMap<String, &PodState> = state
            .pods
            .iter()
            .filter(|p| p.node == self.cfg.node)
            .map(|p| (p.key(), p))
            .collect();
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(k, p)| want.get(*k).is_none_or(|w| w.uid != p.uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            let p = self.pods.remove(&k).expect("present");
            self.stop_pod(p);
            self.write_status()?;
        }
        for (k, p) in &want {
            if !self.pods.contains_key(k) {
                let rp = self.start_pod(p, state);
                self.pods.insert(k.clone(), rp);
                self.save_results()?;
                self.write_status()?;
            }
        }
        self.restart_exited(state);
        self.status.generation = state.generation;
        self.status.error = None;
        self.write_status()
    }

    fn save_results(&self) -> Result<()> {
        let results: BTreeMap<&String, &Value> =
            self.pods.iter().map(|(k, p)| (k, &p.result)).collect();
        write_json(&self.node_dir().join("results.json"), &results)
    }

    /// Programs Services: the nftables table from Services and the EndpointSlices every
    /// node's reports make, and the LoadBalancer IPs this node announces. Applies only when
    /// the program changed (or a full resync is due).
    pub fn sync_services(&mut self, state: &State) -> Result<()> {
        let started = Instant::now();
        let slices = flatnet_controller::endpoints::slices_from(&self.cfg.cluster, state);
        let flows = flatnet_proxy::flows::flows(&state.services, &slices, &self.cfg.node);
        let changed = match &mut self.table {
            // Partial sync: only what changed since the last program.
            Some(table) => {
                table.set_all(flows.clone());
                let sent = flatnet_proxy::apply::update(&table.take_changes())?;
                if sent {
                    self.metrics.partial_syncs.inc();
                }
                sent
            }
            // Full sync at start, after a failure and on every resync (drift is repaired).
            None => {
                let mut table =
                    flatnet_proxy::table::Table::new(&flatnet_proxy::ranges(&state.config));
                table.set_all(flows.clone());
                flatnet_proxy::apply::replace(&table.take_full())?;
                self.table = Some(table);
                self.metrics.full_syncs.inc();
                true
            }
        };
        if changed {
            // UDP entries pointing at gone endpoints (or at a reject) would black-hole clients.
            let stale = flatnet_proxy::conntrack::stale(&self.flows, &flows);
            if let Err(e) = flatnet_proxy::conntrack::flush(&stale) {
                tracing::warn!("{e:#}");
            }
            self.metrics
                .sync_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Ok(age) = std::fs::metadata(self.cfg.cluster.state_file())
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default())
            {
                self.metrics.programming_seconds.observe(age.as_secs_f64());
            }
            self.metrics.service_ports.set(flows.len() as i64);
            self.metrics
                .endpoints
                .set(flows.iter().map(|f| f.backends.len() as i64).sum());
            if let Some(table) = &self.table {
                self.metrics.rules.set(table.objects() as i64);
            }
        }
        self.flows = flows;
        self.announce(state, &slices)?;
        self.serve_health_checks(state, &slices)?;
        let fp = flatnet_controller::endpoints::fingerprint(&slices);
        if self.status.endpoints != fp {
            self.status.endpoints = fp;
            self.write_status()?;
        }
        Ok(())
    }

    /// Serves the health-check NodePorts of `externalTrafficPolicy: Local` Services with this
    /// node's count of ready local endpoints.
    fn serve_health_checks(
        &mut self,
        state: &State,
        slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    ) -> Result<()> {
        let Some(servers) = self.servers.as_mut() else {
            return Ok(());
        };
        let mut want = BTreeMap::new();
        for svc in &state.services {
            let Some(port) = svc.spec.as_ref().and_then(|s| s.health_check_node_port) else {
                continue;
            };
            let namespace = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let local_endpoints =
                flatnet_controller::endpoints::of_service(slices, &namespace, &name)
                    .filter(|s| s.address_type == "IPv4")
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.node_name.as_deref() == Some(self.cfg.node.as_str()))
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                    .count();
            want.insert(
                port as u16,
                serve::HealthCheck {
                    namespace,
                    name,
                    local_endpoints,
                },
            );
        }
        servers.set_health_checks(want)
    }

    /// Adds the LoadBalancer IPs this node answers for to its `eth0` (one node per IP, as a
    /// layer-2 announcer does), and removes those it no longer answers for.
    fn announce(
        &mut self,
        state: &State,
        slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    ) -> Result<()> {
        let want: Vec<IpAddr> = flatnet_proxy::announce::announcements(state, slices)
            .into_iter()
            .filter(|(_, node)| *node == self.cfg.node)
            .map(|(ip, _)| ip)
            .collect();
        if want == self.announced {
            return Ok(());
        }
        let nl = Netlink::new()?;
        let eth0 = nl.require("eth0")?;
        for ip in self.announced.iter().filter(|ip| !want.contains(ip)) {
            nl.del_address(eth0.index, ipnet::IpNet::from(*ip))?;
        }
        for ip in want.iter().filter(|ip| !self.announced.contains(ip)) {
            nl.ensure_address(eth0.index, ipnet::IpNet::from(*ip))?;
        }
        self.announced = want;
        Ok(())
    }

    /// Runs until the cluster's state disappears: re-syncs on every change of the store
    /// (waiting on its change notices in between) and every `resync` interval.
    pub fn run(mut self, resync: Duration) -> Result<()> {
        match serve::Servers::start(self.metrics.clone(), serve::METRICS_PORT) {
            Ok(s) => self.servers = Some(s),
            Err(e) => tracing::warn!("metrics server: {e:#}"),
        }
        let state_file = self.cfg.cluster.state_file();
        let mut notices = StoreNotices::new(&self.cfg.cluster);
        let mut seen: Option<(u64, std::time::SystemTime)> = None;
        let mut last = Instant::now();
        let mut adopted = false;
        let mut current: Option<State> = None;
        let mut services_seen = None;
        loop {
            let Ok(meta) = std::fs::metadata(&state_file) else {
                tracing::info!("cluster state is gone; agent exits");
                return Ok(());
            };
            let mtime = meta.modified()?;
            let changed = seen.is_none_or(|(_, t)| t != mtime);
            let full = last.elapsed() >= resync;
            if full {
                // A full resync re-applies everything: someone may have changed our table.
                self.table = None;
            }
            if changed || full {
                match self.cfg.cluster.read_state() {
                    Ok(state) => {
                        if state.node(&self.cfg.node).is_none() {
                            tracing::info!("node {} left the cluster; agent exits", self.cfg.node);
                            let pods: Vec<RunningPod> =
                                std::mem::take(&mut self.pods).into_values().collect();
                            for p in pods {
                                self.stop_pod(p);
                            }
                            return Ok(());
                        }
                        if !adopted {
                            self.adopt(&state);
                            adopted = true;
                        }
                        if let Err(e) = self.sync(&state) {
                            tracing::warn!("sync failed: {e:#}");
                            self.status.error = Some(format!("{e:#}"));
                            let _ = self.write_status();
                        }
                        seen = Some((state.generation, mtime));
                        current = Some(state);
                    }
                    Err(e) => tracing::warn!("reading state: {e:#}"),
                }
                last = Instant::now();
            }
            if let Some(state) = &current {
                // Services change with the state or with any node's report of its pods.
                let store = self.cfg.cluster.store_mtime(state);
                if store != services_seen || self.table.is_none() {
                    match self.sync_services(state) {
                        Ok(()) => services_seen = store,
                        Err(e) => {
                            tracing::warn!("service sync failed: {e:#}");
                            self.table = None;
                        }
                    }
                }
            }
            let next_resync = resync.saturating_sub(last.elapsed());
            notices.wait(current.as_ref(), STORE_FALLBACK.min(next_resync));
        }
    }
}
