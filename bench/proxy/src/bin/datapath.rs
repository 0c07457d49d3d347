//! Data-path cost of the Service proxy: new TCP connections from a client namespace to a
//! server namespace through a "node" namespace, by ClusterIP with 10 Services installed and
//! with 10,000, against connecting to the server's IP directly (the limit). Each path has a
//! node of its own (a lane: no table, the 10-Service table, the 10,000-Service table), all
//! between the same client and server, so the paths are measured interleaved in batches of
//! [`BATCH`] connections and see the same machine. Two more lanes give the floor any
//! netfilter Service proxy stands on: conntrack alone, and conntrack with (empty) NAT chains.
//! All in scratch namespaces `flbench-dp*-<pid>`; bounded loops.
//!
//! Usage: flatnet-bench-proxy-datapath [connections per path and round] [rounds]
//! (default 3000, 3)
//!
//! Diagnostics: `DUMP=FILE` writes the 10-Service table (as loaded on its lane) to FILE and
//! exits; `RULESETS=A,B,..` adds a lane per file, loaded as it is (a whole `table inet
//! flatnet`, e.g. a DUMP with some rules taken out), measured straight to its server.

use anyhow::{bail, Context, Result};
use flatnet_bench_proxy::{median, service, vip, Scratch, ENDPOINTS};
use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::validate::resolve_cluster;
use flatnet_netlink::netns;
use flatnet_proxy::apply;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections to one path before the next path's turn.
const BATCH: usize = 100;

/// Pause between loading the nodes' tables and measuring (the kernel finishes its work on
/// them after `nft` returns).
const SETTLE: Duration = Duration::from_secs(2);

/// A path and, per round, its median and p99 connect time (ms) and connections per second.
type Row = (String, Vec<f64>, Vec<f64>, Vec<f64>);

/// Conntrack only: a `ct` expression on the forwarding path.
const CONNTRACK_ONLY: &str = "table inet flatnet {
\tchain pre { type filter hook prerouting priority 0; policy accept; ct state new counter; }
}
";

/// Conntrack and the NAT hooks (empty NAT chains: every new connection gets its null
/// bindings), as any Service proxy on netfilter has.
const CONNTRACK_AND_NAT: &str = "table inet flatnet {
\tchain pre { type filter hook prerouting priority 0; policy accept; ct state new counter; }
\tchain nat-pre { type nat hook prerouting priority -100; policy accept; }
\tchain nat-post { type nat hook postrouting priority 100; policy accept; }
}
";

/// What a lane's node has loaded.
enum Lane {
    /// No table.
    Empty,
    /// flatnet's table with this many Services.
    Services(usize),
    /// A ruleset given as text.
    Rules(String),
}

/// Lanes at most: lane `i`'s subnets (client side 100 + i, server side 150 + i) must not meet.
const MAX_LANES: usize = 50;

/// Lane `i`: its node joins the client's `10.42.(100+i).0/24` and the server's
/// `10.42.(150+i).0/24`; the server's address on it.
fn server_ip(lane: usize) -> String {
    format!("10.42.{}.2", 150 + lane)
}

fn sh(ns: &str, cmd: &str) -> Result<()> {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .status()?
        .success();
    if !ok {
        bail!("in {ns}: {cmd} failed");
    }
    Ok(())
}

/// Every endpoint of every Service is the server's address on `lane`.
fn slice_to_server(i: usize, lane: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|_| json!({"addresses": [server_ip(lane)], "conditions": {"ready": true}, "nodeName": "node2"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-ipv4"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("valid EndpointSlice")
}

/// Connects `count` times to `to` from inside `client`; returns per-connection milliseconds
/// and the seconds they took.
fn connect_loop(client: &str, to: SocketAddr, count: usize) -> Result<(Vec<f64>, f64)> {
    let path = netns::path(client);
    netns::run_in(&path, move || {
        let mut lat = Vec::with_capacity(count);
        let start = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).context("connect")?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            // Close with a reset: no TIME_WAIT piles up over thousands of connections.
            socket_linger_zero(&s);
        }
        Ok((lat, start.elapsed().as_secs_f64()))
    })
}

fn socket_linger_zero(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() * 99 / 100]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args
        .get(1)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(3000);
    let rounds: usize = args
        .get(2)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(3);
    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(3)),
        ..Default::default()
    };
    let config = resolve_cluster("bench", "bench", &spec, &[])?;
    let table = |n: usize, lane: usize| {
        let svcs: Vec<_> = (0..n).map(service).collect();
        let slices: Vec<_> = (0..n).map(|i| slice_to_server(i, lane)).collect();
        flatnet_proxy::build(&config, &svcs, &slices, "node1")
            .0
            .text()
    };
    if let Ok(path) = std::env::var("DUMP") {
        std::fs::write(&path, table(10, 1)).with_context(|| format!("writing {path}"))?;
        return Ok(());
    }
    let mut lanes = vec![
        (
            Some("direct to the pod IP, no table".to_string()),
            Lane::Empty,
        ),
        (None, Lane::Services(10)),
        (
            Some("direct to the pod IP, 10,000 Services' table loaded".into()),
            Lane::Services(10_000),
        ),
        (
            Some("direct, conntrack only".into()),
            Lane::Rules(CONNTRACK_ONLY.into()),
        ),
        (
            Some("direct, conntrack + NAT hooks".into()),
            Lane::Rules(CONNTRACK_AND_NAT.into()),
        ),
    ];
    let rulesets = std::env::var("RULESETS").unwrap_or_default();
    for file in rulesets.split(',').filter(|f| !f.is_empty()) {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        lanes.push((Some(format!("direct, ruleset {file}")), Lane::Rules(text)));
    }
    if lanes.len() > MAX_LANES {
        bail!("at most {MAX_LANES} lanes ({} given)", lanes.len());
    }
    let client = Scratch::new("dpc")?;
    let server = Scratch::new("dps")?;
    sh(&client.0, "ip link set lo up")?;
    sh(&server.0, "ip link set lo up")?;
    let mut nodes = Vec::new();
    for (lane, (_, load)) in lanes.iter().enumerate() {
        let node = Scratch::new(&format!("dpn{lane}"))?;
        let (c, s) = (100 + lane, 150 + lane);
        sh(&node.0, &format!(
            "ip link add c type veth peer name c{lane} && ip link set c{lane} netns {cl} && ip link add s type veth peer name s{lane} && ip link set s{lane} netns {sv} \
             && ip addr add 10.42.{c}.1/24 dev c && ip addr add 10.42.{s}.1/24 dev s && ip link set c up && ip link set s up && ip link set lo up \
             && sysctl -qw net.ipv4.ip_forward=1",
            cl = client.0, sv = server.0
        ))?;
        sh(&client.0, &format!("ip addr add 10.42.{c}.2/24 dev c{lane} && ip link set c{lane} up && ip route add 10.42.{s}.0/24 via 10.42.{c}.1"))?;
        sh(&server.0, &format!("ip addr add 10.42.{s}.2/24 dev s{lane} && ip link set s{lane} up && ip route add 10.42.{c}.0/24 via 10.42.{s}.1"))?;
        let text = match load {
            Lane::Empty => None,
            Lane::Services(n) => Some(table(*n, lane)),
            Lane::Rules(text) => Some(text.clone()),
        };
        if let Some(text) = text {
            node.timed(move || apply::replace(&text))?;
        }
        nodes.push(node);
    }
    // Each ClusterIP by the lane whose table has it.
    sh(
        &client.0,
        &format!(
            "ip route add {}/32 via 10.42.101.1 && ip route add {}/32 via 10.42.102.1",
            vip(5),
            vip(5000)
        ),
    )?;
    // The server accepts and drops connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let listener = netns::run_in(&netns::path(&server.0), || {
        Ok(TcpListener::bind(("0.0.0.0", 8080))?)
    })?;
    listener.set_nonblocking(true)?;
    let s2 = stop.clone();
    let server_thread = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    std::thread::sleep(SETTLE);

    // Straight to each named lane's server, then each ClusterIP.
    let mut paths: Vec<(String, SocketAddr)> = Vec::new();
    for (lane, (name, _)) in lanes.iter().enumerate() {
        if let Some(name) = name {
            paths.push((name.clone(), format!("{}:8080", server_ip(lane)).parse()?));
        }
    }
    paths.push((
        "ClusterIP, 10 Services".into(),
        format!("{}:80", vip(5)).parse()?,
    ));
    paths.push((
        "ClusterIP, 10,000 Services".into(),
        format!("{}:80", vip(5000)).parse()?,
    ));
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|(n, _)| (n.clone(), vec![], vec![], vec![]))
        .collect();
    for _ in 0..rounds {
        let mut lat: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        let mut secs = vec![0.0; paths.len()];
        for _ in 0..count.div_ceil(BATCH) {
            for (i, (_, to)) in paths.iter().enumerate() {
                let (l, t) = connect_loop(&client.0, *to, BATCH)?;
                lat[i].extend(l);
                secs[i] += t;
            }
        }
        for (i, row) in rows.iter_mut().enumerate() {
            row.1.push(median(lat[i].clone()));
            row.2.push(p99(std::mem::take(&mut lat[i])));
            row.3.push((count.div_ceil(BATCH) * BATCH) as f64 / secs[i]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = server_thread.join();
    drop(nodes);
    println!("| path | connect median µs | connect p99 µs | connections/s | vs direct |");
    println!("|---|---:|---:|---:|---:|");
    let base = median(rows[0].3.clone());
    for (name, med, p, cps) in rows {
        let cps = median(cps);
        println!(
            "| {name} | {:.0} | {:.0} | {cps:.0} | {:.2}x |",
            median(med) * 1000.0,
            median(p) * 1000.0,
            cps / base
        );
    }
    Ok(())
}
