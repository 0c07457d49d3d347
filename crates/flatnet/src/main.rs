//! `flatnet`: the command line of a Kubernetes networking stack and its cluster-in-a-box lab.

mod get;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flatnet_lab::target::{resolve_destination, Target};
use flatnet_lab::Binaries;
use flatnet_model::manifest::{load_or_builtin, load_paths};
use flatnet_model::state::ClusterDir;
use flatnet_workload::{HttpRequest, Probe, ProbeResult, Protocol};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

/// See [`flatnet_alloc`].
#[global_allocator]
static ALLOCATOR: flatnet_alloc::Allocator = flatnet_alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "flatnet",
    version,
    about = "Kubernetes networking in Rust, and a cluster in a box to see it work"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Output formats of commands that print objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Extra columns.
    Wide,
    /// YAML objects.
    Yaml,
    /// JSON objects.
    Json,
}

/// `flatnet dns --pods`: how pod names are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodsFlag {
    /// No pod names (the default).
    Disabled,
    /// Any `a-b-c-d` name answers its address.
    Insecure,
    /// Only addresses of existing pods in that namespace.
    Verified,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a lab cluster and apply manifests (the built-in demo without -f).
    Up {
        /// Manifest files or folders.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Cluster name (default: the Cluster document's, else `flatnet`).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Apply manifests to a running cluster.
    Apply {
        /// Manifest files or folders.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
    },
    /// Delete the objects of manifests from a running cluster.
    Delete {
        /// Manifest files or folders.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
    },
    /// List objects: nodes, pods, namespaces, deployments, services.
    Get {
        /// Kind of object.
        kind: String,
        /// One object's name (with --program).
        name: Option<String>,
        /// Show the Service's nftables program on a node (`get service NAME --program`).
        #[arg(long)]
        program: bool,
        /// The node whose program to show (default: the first).
        #[arg(long)]
        node: Option<String>,
        /// Kubernetes namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
    },
    /// Run a host program inside a lab namespace: `[NS/]POD`, `node/NAME` or `external`.
    Exec {
        /// Where to run.
        target: String,
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
        /// The program and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// One connection attempt from inside the lab.
    Probe {
        /// Source: `[NS/]POD`, `node/NAME` or `external`.
        #[arg(long)]
        from: String,
        /// Destination: an IP, `[NS/]POD`, `node/NAME` or `external`.
        #[arg(long)]
        to: String,
        /// Port.
        #[arg(long)]
        port: u16,
        /// Protocol.
        #[arg(long, default_value = "tcp")]
        protocol: Protocol,
        /// Seconds to wait.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
        /// Use the destination pod's IPv6 address.
        #[arg(short = '6', long)]
        ipv6: bool,
        /// Output format (json).
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
        /// Local port to send from (a client that keeps its port, as a resolver may).
        #[arg(long)]
        source_port: Option<u16>,
        /// HTTP Host header for TCP probes (e.g. to reach an Ingress rule).
        #[arg(long)]
        host: Option<String>,
        /// HTTP path for TCP probes.
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// Prove the guarantees with real connections; non-zero exit on any failure.
    Check {
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
        /// Output format (json).
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// Seconds each probe may take.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
    /// Remove everything a cluster made. Safe after a crash.
    Down {
        /// Cluster name.
        #[arg(long, default_value = "flatnet")]
        cluster: String,
    },
    /// The node agent (started by `up`; runs inside the node's namespace).
    Agent {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
        /// Node name.
        #[arg(long)]
        node: String,
        /// Folder of the CNI plugin binaries.
        #[arg(long)]
        cni_bin_dir: PathBuf,
    },
    /// The cluster DNS server (runs as pods of the `flatnet-dns` Deployment in kube-system).
    Dns {
        /// Cluster name.
        #[arg(long, env = "FLATNET_CLUSTER")]
        cluster: String,
        /// Address to serve on (UDP and TCP).
        #[arg(long, default_value = "[::]:53")]
        listen: std::net::SocketAddr,
        /// Resolvers for names outside the cluster zone, tried in order.
        #[arg(long)]
        upstream: Vec<std::net::SocketAddr>,
        /// Pod names `a-b-c-d.<ns>.pod.<zone>`: disabled, insecure or verified (as CoreDNS).
        #[arg(long, default_value = "disabled")]
        pods: PodsFlag,
    },
    /// The L7 proxy and Ingress controller: with `--manifests`, standalone on those files;
    /// otherwise for lab cluster `--cluster` (as the `flatnet-ingress` pods run it).
    L7 {
        /// Cluster name (when no `--manifests` is given).
        #[arg(long, env = "FLATNET_CLUSTER")]
        cluster: Option<String>,
        #[command(flatten)]
        args: flatnet_l7::cli::Args,
    },
    /// The pod workload server (started by agents inside pods).
    Workload {
        /// `namespace/name` of the pod.
        #[arg(long)]
        pod: String,
        /// The node it runs on.
        #[arg(long, default_value = "")]
        node: String,
        /// `protocol:port` to serve, repeatable.
        #[arg(long = "port")]
        ports: Vec<String>,
    },
}

fn say(line: &str) {
    eprintln!("• {line}");
}

fn existing(cluster: &str) -> Result<(ClusterDir, flatnet_model::State)> {
    let dir = ClusterDir::new(cluster);
    if !dir.exists() {
        bail!("no cluster {cluster:?} is running (flatnet up --cluster {cluster})");
    }
    let state = dir.read_state()?;
    Ok((dir, state))
}

fn main() {
    flatnet_alloc::return_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLATNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Up { files, cluster } => {
            let m = load_or_builtin(&files, flatnet_lab::DEMO)?;
            let bins = Binaries::beside_current_exe()?;
            let started = std::time::Instant::now();
            let state = match flatnet_lab::up(&m, cluster.as_deref(), &bins, &mut |l| say(l)) {
                Ok(s) => s,
                Err(e) => {
                    let name = flatnet_lab::resolve(&m, cluster.as_deref()).map(|c| c.name);
                    if let Ok(name) = name {
                        eprintln!(
                            "error: {e:#}\nlogs: {}",
                            ClusterDir::new(&name).log_dir().display()
                        );
                        eprintln!("(the cluster is left as it is for a look; `flatnet down --cluster {name}` removes it)");
                    }
                    return Err(e);
                }
            };
            say(&format!(
                "cluster {} is up in {:.1} s",
                state.config.name,
                started.elapsed().as_secs_f64()
            ));
            let c = if state.config.name == "flatnet" {
                String::new()
            } else {
                format!(" --cluster {}", state.config.name)
            };
            eprintln!("\nnext: flatnet get pods -A -o wide{c}\n      flatnet check{c}\n      flatnet down{c}");
            Ok(0)
        }
        Cmd::Apply { files, cluster } => {
            let m = load_paths(&files)?;
            let (dir, _) = existing(&cluster)?;
            flatnet_lab::apply(&dir, &m, &Binaries::beside_current_exe()?, &mut |l| say(l))?;
            say("applied");
            Ok(0)
        }
        Cmd::Delete { files, cluster } => {
            let m = load_paths(&files)?;
            let (dir, _) = existing(&cluster)?;
            flatnet_lab::delete(&dir, &m, &mut |l| say(l))?;
            say("deleted");
            Ok(0)
        }
        Cmd::Get {
            kind,
            name,
            program,
            node,
            namespace,
            all_namespaces,
            output,
            cluster,
        } => {
            let (dir, state) = existing(&cluster)?;
            if program {
                let name = name.context(
                    "--program needs a Service name: flatnet get service NAME --program",
                )?;
                let node = node.unwrap_or_else(|| state.nodes[0].name.clone());
                print!(
                    "{}",
                    get::program(
                        &dir,
                        &state,
                        namespace.as_deref().unwrap_or("default"),
                        &name,
                        &node
                    )?
                );
                return Ok(0);
            }
            let ns = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".into()))
            };
            print!(
                "{}",
                get::render(&dir, &state, &kind, ns.as_deref(), output)?
            );
            Ok(0)
        }
        Cmd::Exec {
            target,
            cluster,
            command,
        } => {
            let (_, state) = existing(&cluster)?;
            let t = Target::parse(&target, &state)?;
            let err = std::process::Command::new("ip")
                .args(["netns", "exec", &t.netns(&cluster)])
                .args(&command)
                .exec();
            Err(err).context("running ip netns exec")
        }
        Cmd::Probe {
            from,
            to,
            port,
            protocol,
            timeout,
            ipv6,
            output,
            cluster,
            source_port,
            host,
            path,
        } => {
            let (dir, state) = existing(&cluster)?;
            let src = Target::parse(&from, &state)?;
            let ip = resolve_destination(&dir, &state, &to, ipv6)?;
            let report = flatnet_workload::probe(&Probe {
                netns: Some(src.netns_path(&cluster)),
                target: std::net::SocketAddr::new(ip, port),
                protocol,
                timeout: Duration::from_secs_f64(timeout),
                source_port,
                http: Some(HttpRequest { host, path }),
            });
            let mut server = report.server.clone();
            if let Some(s) = server.as_mut() {
                // UDP answers carry the pod name only; the cluster knows the rest.
                if s.namespace.is_empty() {
                    let same: Vec<_> = state.pods.iter().filter(|p| p.name == s.pod).collect();
                    if let [p] = same.as_slice() {
                        s.namespace = p.namespace.clone();
                        s.node = p.node.clone();
                    }
                }
            }
            if output == Some(Output::Json) {
                let mut v = serde_json::json!({
                    "from": src.to_string(), "to": ip.to_string(), "port": port, "protocol": protocol,
                    "result": report.result, "latencyMs": report.latency_ms,
                });
                if let Some(s) = &server {
                    v["server"] = serde_json::to_value(s)?;
                }
                if let Some(c) = &report.client_address {
                    v["clientAddress"] = serde_json::json!(c);
                }
                if let Some(e) = &report.error {
                    v["error"] = serde_json::json!(e);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match (&report.result, &server) {
                    (ProbeResult::Connected, Some(s)) => println!(
                        "connected to {ip} port {port}/{protocol} in {:.2} ms: served by {}/{} on {}, client address {}",
                        report.latency_ms,
                        s.namespace,
                        s.pod,
                        s.node,
                        report.client_address.clone().unwrap_or_default()
                    ),
                    (r, _) => println!("{ip} port {port}/{protocol}: {r:?} {}", report.error.clone().unwrap_or_default()),
                }
            }
            Ok(if report.result == ProbeResult::Connected {
                0
            } else {
                1
            })
        }
        Cmd::Check {
            cluster,
            output,
            timeout,
        } => {
            let (dir, state) = existing(&cluster)?;
            let report = flatnet_lab::check::run(&dir, &state, Duration::from_secs_f64(timeout));
            if output == Some(Output::Json) {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{:<46} {:>7}  RESULT",
                    "GUARANTEE / PATH / PROTOCOL / FAMILY", "PASSED"
                );
                for (k, ok, all) in report.summary() {
                    println!(
                        "{k:<46} {:>7}  {}",
                        format!("{ok}/{all}"),
                        if ok == all { "ok" } else { "FAIL" }
                    );
                }
                for r in report.rows.iter().filter(|r| !r.ok) {
                    println!(
                        "FAIL {} {} -> {} {}: {}",
                        r.check, r.from, r.to, r.protocol, r.detail
                    );
                }
                println!(
                    "{}",
                    if report.passed() {
                        "all guarantees hold"
                    } else {
                        "some guarantees do not hold"
                    }
                );
            }
            Ok(if report.passed() { 0 } else { 1 })
        }
        Cmd::Down { cluster } => {
            let r = flatnet_lab::down(&cluster)?;
            say(&format!(
                "cluster {cluster}: ended {} processes, deleted {} namespaces{}",
                r.processes,
                r.namespaces,
                if r.state { ", removed its state" } else { "" }
            ));
            Ok(0)
        }
        Cmd::Agent {
            cluster,
            node,
            cni_bin_dir,
        } => {
            let dir = ClusterDir::new(&cluster);
            flatnet_netlink::netns::enter(&flatnet_netlink::netns::path(
                &flatnet_model::names::node_netns(&cluster, &node),
            ))?;
            let agent = flatnet_agent::Agent::new(flatnet_agent::AgentConfig {
                cluster: dir,
                node,
                cni_bin_dir,
                flatnet_exe: std::env::current_exe()?,
            });
            agent.run(Duration::from_secs(10))?;
            Ok(0)
        }
        Cmd::Dns {
            cluster,
            listen,
            upstream,
            pods,
        } => {
            flatnet_alloc::small_pages_only();
            let dir = ClusterDir::new(&cluster);
            let domain = dir.read_state()?.config.cluster_domain;
            let pods = match pods {
                PodsFlag::Disabled => flatnet_dns::PodsMode::Disabled,
                PodsFlag::Insecure => flatnet_dns::PodsMode::Insecure,
                PodsFlag::Verified => flatnet_dns::PodsMode::Verified,
            };
            flatnet_dnsd::run(dir, &domain, listen, upstream, pods)?;
            Ok(0)
        }
        Cmd::L7 { cluster, args } => {
            // The proxy's workers allocate and free per request: their pages stay mapped a
            // second (route tables are given back at once by the thread that frees them).
            // At 100 ms, HTTP/2 requests took a page fault every ~22 (BENCHMARKS.md, 8).
            flatnet_alloc::return_freed_memory_after(Duration::from_secs(1));
            match (&args.manifests, cluster) {
                (Some(m), _) => flatnet_l7::cli::run(m.clone(), &args)?,
                (None, Some(cluster)) => {
                    let mut config = args.config();
                    if matches!(config.access_log, flatnet_l7::AccessLog::Stdout) {
                        // The agent reads only the `ready` line from a pod's stdout; its
                        // stderr is the pod's log.
                        config.access_log =
                            flatnet_l7::AccessLog::Sink(std::sync::Arc::new(|l| eprintln!("{l}")));
                    }
                    flatnet_l7d::run(ClusterDir::new(&cluster), config)?
                }
                (None, None) => bail!("flatnet l7 needs --manifests PATH or --cluster NAME"),
            }
            Ok(0)
        }
        Cmd::Workload { pod, node, ports } => {
            let (namespace, name) = pod
                .split_once('/')
                .context("--pod must be namespace/name")?;
            let mut parsed = Vec::new();
            for p in &ports {
                let (proto, port) = p
                    .split_once(':')
                    .with_context(|| format!("--port {p}: expected protocol:port"))?;
                parsed.push((
                    proto.parse::<Protocol>().map_err(anyhow::Error::msg)?,
                    port.parse::<u16>()?,
                ));
            }
            flatnet_workload::serve(flatnet_workload::ServerConfig {
                identity: flatnet_workload::Identity {
                    pod: name.to_string(),
                    namespace: namespace.to_string(),
                    node,
                },
                ports: parsed,
            })?;
            Ok(0)
        }
    }
}
