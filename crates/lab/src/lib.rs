//! The cluster in a box: one Linux host, no containers, no VMs. A fabric namespace holds the
//! node network; each node is a namespace running `flatnet agent`; `external` is the world
//! outside; pods are namespaces wired by the CNI plugin.

pub mod check;
pub mod fabric;
pub mod target;

use anyhow::{anyhow, bail, Context, Result};
use flatnet_model::manifest::Manifests;
use flatnet_model::names;
use flatnet_model::state::{ClusterDir, State, StoreNotices, STORE_FALLBACK};
use flatnet_model::validate::resolve_cluster;
use flatnet_model::ClusterSpec;
use flatnet_netlink::{netns, Netlink};
use ipnet::IpNet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo applied by `flatnet up` without `-f`.
pub const DEMO: &str = include_str!("demo.yaml");

/// The cluster DNS add-on, with `CLUSTER_DNS_IPS` and `UPSTREAM_RESOLVER` to fill in.
const DNS_ADDON: &str = include_str!("addons-dns.yaml");

/// The Ingress controller add-on.
const INGRESS_ADDON: &str = include_str!("addons-ingress.yaml");

/// The add-on objects `config` asks for: the cluster DNS (the `flatnet-dns` Deployment and
/// the `kube-dns` Service at the tenth address of each service range) and the Ingress
/// controller (the `flatnet-ingress` Deployment, its LoadBalancer Service and the default
/// IngressClass `flatnet`).
pub fn addons(config: &flatnet_model::ClusterConfig) -> Result<Manifests> {
    let ips: Vec<String> = config
        .service_cidrs
        .iter()
        .map(|c| names::cluster_dns_ip(c).to_string())
        .collect();
    let upstream = format!(
        "{}:53",
        flatnet_model::state::external_ip(&config.node_cidr)
    );
    let mut docs = Vec::new();
    if config.dns {
        let text = DNS_ADDON
            .replace("CLUSTER_DNS_IPS", &ips.join(", "))
            .replace("UPSTREAM_RESOLVER", &upstream);
        docs.push(("<add-on dns>".to_string(), text));
    }
    if config.ingress {
        docs.push(("<add-on ingress>".to_string(), INGRESS_ADDON.to_string()));
    }
    Ok(flatnet_model::manifest::parse_documents(&docs)?)
}

/// Where the binaries the lab runs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `flatnet` binary (agents and workloads run it).
    pub flatnet: PathBuf,
    /// The folder holding `flatnet-cni`.
    pub cni_dir: PathBuf,
}

impl Binaries {
    /// The running `flatnet` and the `flatnet-cni` beside it.
    pub fn beside_current_exe() -> Result<Self> {
        let flatnet = std::env::current_exe()?;
        let cni_dir = flatnet.parent().expect("exe in a folder").to_path_buf();
        if !cni_dir.join("flatnet-cni").exists() {
            bail!(
                "flatnet-cni is not beside {} (build the whole workspace: cargo build --workspace)",
                flatnet.display()
            );
        }
        Ok(Self { flatnet, cni_dir })
    }
}

/// Networks of the host's own interfaces (read-only look at the root namespace), without
/// loopback and link-local ones.
pub fn host_networks() -> Result<Vec<IpNet>> {
    let nl = Netlink::new()?;
    let mut out = Vec::new();
    for l in nl.links()? {
        for a in nl.addresses(l.index)? {
            let ip = a.addr();
            let link_local = match ip {
                std::net::IpAddr::V4(v) => v.is_link_local(),
                std::net::IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
            };
            if !ip.is_loopback() && !link_local {
                out.push(a.trunc());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resolves the cluster document of `m` (or defaults) under `name`.
pub fn resolve(m: &Manifests, name: Option<&str>) -> Result<flatnet_model::ClusterConfig> {
    let (file, doc_name, spec) = match &m.cluster {
        Some(c) => (c.file.clone(), c.value.name.clone(), c.value.spec.clone()),
        None => (
            "<defaults>".to_string(),
            flatnet_model::cluster::DEFAULT_CLUSTER.to_string(),
            ClusterSpec::default(),
        ),
    };
    let name = name.map(str::to_string).unwrap_or(doc_name);
    Ok(resolve_cluster(&file, &name, &spec, &host_networks()?)?)
}

/// The test domain the `external` host's resolver answers for (every name in it resolves to
/// the external host): names outside the cluster are forwarded there, never to the internet.
pub const UPSTREAM_DOMAIN: &str = "lab.test";

/// Starts dnsmasq (Debian's dnsmasq-base) on the `external` host as the world's resolver.
fn start_upstream_resolver(dir: &ClusterDir, state: &State) -> Result<()> {
    let ip = flatnet_model::state::external_ip(&state.config.node_cidr);
    let ns = std::fs::File::open(netns::path(&names::external_netns(&state.config.name)))?;
    std::fs::create_dir_all(dir.log_dir())?;
    let log = std::fs::File::create(dir.log_dir().join("external-resolver.log"))?;
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--user=root",
    ])
    .arg(format!("--listen-address={ip}"))
    .arg(format!("--address=/{UPSTREAM_DOMAIN}/{ip}"))
    .arg("--log-facility=-")
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    // SAFETY: setns and setsid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    cmd.spawn()
        .context("starting dnsmasq (apt-get install dnsmasq-base)")?;
    Ok(())
}

/// Starts the agent of `node` in the background; it enters the node's namespace itself.
fn start_agent(dir: &ClusterDir, node: &str, bins: &Binaries) -> Result<u32> {
    std::fs::create_dir_all(dir.log_dir())?;
    let log = std::fs::File::create(dir.log_dir().join(format!("agent-{node}.log")))?;
    let mut cmd = Command::new(&bins.flatnet);
    cmd.args(["agent", "--cluster", &dir.name, "--node", node])
        .arg("--cni-bin-dir")
        .arg(&bins.cni_dir)
        .env("FLATNET_STATE_DIR", dir.path.parent().expect("root"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let child = cmd.spawn().context("starting flatnet agent")?;
    std::fs::create_dir_all(dir.node_dir(node))?;
    std::fs::write(dir.node_dir(node).join("agent.pid"), child.id().to_string())?;
    Ok(child.id())
}

/// Creates a lab cluster from `m` and waits until every pod runs.
pub fn up(
    m: &Manifests,
    name: Option<&str>,
    bins: &Binaries,
    progress: &mut dyn FnMut(&str),
) -> Result<State> {
    let config = resolve(m, name)?;
    let dir = ClusterDir::new(&config.name);
    if dir.exists() {
        bail!(
            "cluster {:?} exists already (flatnet down --cluster {} first)",
            config.name,
            config.name
        );
    }
    let mut state = flatnet_controller::new_state(config);
    let addons = addons(&state.config)?;
    flatnet_controller::apply(&mut state, &addons)?;
    flatnet_controller::apply(&mut state, m)?;
    progress(&format!(
        "cluster {}: {} nodes, {} pods, backend {}, pods {}",
        state.config.name,
        state.nodes.len(),
        state.pods.len(),
        state.config.backend,
        state
            .config
            .pod_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    let _lock = dir.lock()?;
    dir.write_state(&state)?;
    fabric::create(&state)?;
    progress("node network (fabric bridge, external host) created");
    match start_upstream_resolver(&dir, &state) {
        Ok(()) => progress(&format!(
            "upstream resolver for {UPSTREAM_DOMAIN} on the external host"
        )),
        Err(e) => progress(&format!("no upstream resolver: {e:#}")),
    }
    for n in &state.nodes {
        fabric::add_node(&state, n)?;
        start_agent(&dir, &n.name, bins)?;
        progress(&format!("node {} at {}: agent started", n.name, n.ip));
    }
    wait_synced(&dir, &state, Duration::from_secs(120), progress)?;
    Ok(state)
}

/// Applies `m` to a running cluster: objects and node changes.
pub fn apply(
    dir: &ClusterDir,
    m: &Manifests,
    bins: &Binaries,
    progress: &mut dyn FnMut(&str),
) -> Result<State> {
    let _lock = dir.lock()?;
    let mut state = dir.read_state().context("no running cluster")?;
    let old_nodes = state.nodes.clone();
    if let Some(c) = &m.cluster {
        let cfg = resolve_cluster(
            &c.file,
            &state.config.name,
            &c.value.spec,
            &host_networks()?,
        )?;
        flatnet_controller::change_config(&mut state, &c.file, cfg)?;
    }
    flatnet_controller::apply(&mut state, m)?;
    let before = dir.read_state()?;
    let gone: Vec<_> = old_nodes
        .iter()
        .filter(|o| state.node(&o.name).is_none())
        .cloned()
        .collect();
    if !gone.is_empty() {
        // Leaving nodes stop their pods before those pods start elsewhere under the same names.
        let mut interim = dir.read_state()?;
        interim.nodes.retain(|n| state.node(&n.name).is_some());
        interim.pods.retain(|p| state.node(&p.node).is_some());
        interim.generation = state.generation;
        state.generation += 1;
        dir.write_state(&interim)?;
        for node in &gone {
            stop_agent(dir, &node.name);
            fabric::remove_node(&state.config.name, node)?;
            let _ = std::fs::remove_dir_all(dir.node_dir(&node.name));
            progress(&format!("node {} removed", node.name));
        }
    }
    drain(dir, &before, &mut state, progress)?;
    dir.write_state(&state)?;
    for n in state
        .nodes
        .iter()
        .filter(|n| !old_nodes.iter().any(|o| o.name == n.name))
    {
        fabric::add_node(&state, n)?;
        start_agent(dir, &n.name, bins)?;
        progress(&format!("node {} at {}: agent started", n.name, n.ip));
    }
    wait_synced(dir, &state, Duration::from_secs(120), progress)?;
    Ok(state)
}

/// Deletes the objects of `m` from a running cluster.
pub fn delete(dir: &ClusterDir, m: &Manifests, progress: &mut dyn FnMut(&str)) -> Result<State> {
    let _lock = dir.lock()?;
    let mut state = dir.read_state().context("no running cluster")?;
    let before = state.clone();
    flatnet_controller::delete(&mut state, m);
    drain(dir, &before, &mut state, progress)?;
    dir.write_state(&state)?;
    wait_synced(dir, &state, Duration::from_secs(120), progress)?;
    Ok(state)
}

/// Graceful deletion: pods that `next` drops first become terminating, and only once every
/// node has stopped sending them new connections does `next` (one generation later) go out.
fn drain(
    dir: &ClusterDir,
    prev: &State,
    next: &mut State,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let Some(mut interim) = flatnet_controller::graceful(prev, next) else {
        return Ok(());
    };
    interim.generation = next.generation;
    next.generation += 1;
    dir.write_state(&interim)?;
    wait_synced(dir, &interim, Duration::from_secs(120), progress)
}

/// Waits for a node's agent to leave (it stops its pods first), then makes sure it is gone.
fn stop_agent(dir: &ClusterDir, node: &str) {
    let pid_file = dir.node_dir(node).join("agent.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    if let Some(pid) = pid {
        while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until every node's agent has applied `state` and every pod runs.
pub fn wait_synced(
    dir: &ClusterDir,
    state: &State,
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut notices = StoreNotices::new(dir);
    loop {
        // Every node must also have programmed the Services for the current endpoints.
        let slices = flatnet_controller::endpoints::slices_from(dir, state);
        let fp = flatnet_controller::endpoints::fingerprint(&slices);
        let mut done = true;
        let mut lines = Vec::new();
        for n in &state.nodes {
            let st = dir.read_node_status(&n.name);
            let pods: Vec<_> = state.pods.iter().filter(|p| p.node == n.name).collect();
            let running = pods
                .iter()
                .filter(|p| {
                    st.pods
                        .get(&p.key())
                        .is_some_and(|s| s.uid == p.uid && s.phase == "Running")
                })
                .count();
            for p in &pods {
                if let Some(s) = st.pods.get(&p.key()) {
                    if s.uid == p.uid && s.phase.starts_with("Failed") {
                        bail!("pod {} on {}: {}", p.key(), n.name, s.phase);
                    }
                }
            }
            if st.generation < state.generation || running < pods.len() || st.endpoints != fp {
                done = false;
            }
            let err = st
                .error
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default();
            lines.push(format!(
                "{}: {running}/{} pods running{err}",
                n.name,
                pods.len()
            ));
        }
        let line = lines.join(", ");
        if line != last {
            progress(&line);
            last = line;
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "nodes did not converge within {timeout:?}: {last} (logs in {})",
                dir.log_dir().display()
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        notices.wait(Some(state), left.min(STORE_FALLBACK));
    }
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Processes ended.
    pub processes: usize,
    /// Namespaces deleted.
    pub namespaces: usize,
    /// Whether a state folder was removed.
    pub state: bool,
}

/// Removes everything of cluster `name`: processes, namespaces (and the links and tables in
/// them), state files. Safe after a crash or a half-finished `up`.
pub fn down(name: &str) -> Result<Removed> {
    let dir = ClusterDir::new(name);
    let mut removed = Removed::default();
    // Agents leave on their own once the state is gone; whatever is left is killed below.
    let _ = std::fs::remove_file(dir.state_file());
    let prefix = names::netns_prefix(name);
    let node_prefix = format!("{name}.node.");
    // Agents first, so that none starts a pod while the rest goes.
    for ns in netns::list(&node_prefix) {
        for pid in netns::pids(&netns::path(&ns)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            removed.processes += 1;
        }
    }
    for ns in netns::list(&prefix) {
        removed.processes += netns::pids(&netns::path(&ns)).len();
        netns::kill_and_delete(&ns);
        removed.namespaces += 1;
    }
    // Pods' resolv.conf files that `ip netns exec` mounts.
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if dir.path.exists() {
        std::fs::remove_dir_all(&dir.path)
            .with_context(|| format!("removing {}", dir.path.display()))?;
        removed.state = true;
    }
    Ok(removed)
}
