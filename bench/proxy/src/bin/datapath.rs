//! Data-path cost of the Service proxy: new TCP connections from a client namespace through a
//! "node" namespace running flatnet's nftables program to a server namespace, by ClusterIP
//! with 10 Services installed and with 10,000, against connecting to the server's IP
//! directly (the limit). All in scratch namespaces `flbench-dp*-<pid>`; bounded loops.
//!
//! Usage: flatnet-bench-proxy-datapath [connections per run] [rounds]   (default 3000, 3)

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

const SERVER: &str = "10.42.201.2";

/// Pause between changing the node's table and measuring.
const SETTLE: Duration = Duration::from_secs(2);

/// A path and, per round, its median and p99 connect time (ms) and connections per second.
type Row = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);

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

/// Every endpoint of every Service is the one server, so any Service reaches it.
fn slice_to_server(i: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|_| json!({"addresses": [SERVER], "conditions": {"ready": true}, "nodeName": "node2"}))
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
/// and the whole run's seconds.
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
    let client = Scratch::new("dpc")?;
    let node = Scratch::new("dpn")?;
    let server = Scratch::new("dps")?;
    sh(&node.0, &format!(
        "ip link add c type veth peer name c-in && ip link set c-in netns {c} && ip link add s type veth peer name s-in && ip link set s-in netns {s} \
         && ip addr add 10.42.200.1/24 dev c && ip addr add 10.42.201.1/24 dev s && ip link set c up && ip link set s up && ip link set lo up \
         && sysctl -qw net.ipv4.ip_forward=1",
        c = client.0, s = server.0
    ))?;
    sh(&client.0, "ip link set c-in name eth0 && ip addr add 10.42.200.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.42.200.1")?;
    sh(&server.0, &format!("ip link set s-in name eth0 && ip addr add {SERVER}/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.42.201.1"))?;
    // The server accepts and drops connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let listener = netns::run_in(&netns::path(&server.0), || {
        Ok(TcpListener::bind((SERVER, 8080))?)
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

    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(3)),
        ..Default::default()
    };
    let config = resolve_cluster("bench", "bench", &spec, &[])?;
    let table = |n: usize| {
        let svcs: Vec<_> = (0..n).map(service).collect();
        let slices: Vec<_> = (0..n).map(slice_to_server).collect();
        flatnet_proxy::build(&config, &svcs, &slices, "node1")
            .0
            .text()
    };
    let small = table(10);
    let large = table(10_000);
    let direct: SocketAddr = format!("{SERVER}:8080").parse()?;
    let mut rows: Vec<Row> = vec![
        ("direct to the pod IP, no table", vec![], vec![], vec![]),
        (
            "direct to the pod IP, 10,000 Services' table loaded",
            vec![],
            vec![],
            vec![],
        ),
        ("ClusterIP, 10 Services", vec![], vec![], vec![]),
        ("ClusterIP, 10,000 Services", vec![], vec![], vec![]),
    ];
    for _ in 0..rounds {
        for (i, row) in rows.iter_mut().enumerate() {
            let to = match i {
                0 => {
                    sh(&node.0, "nft delete table inet flatnet 2>/dev/null || true")?;
                    direct
                }
                1 => {
                    let text = large.clone();
                    node.timed(move || apply::replace(&text))?;
                    direct
                }
                2 => {
                    let text = small.clone();
                    node.timed(move || apply::replace(&text))?;
                    format!("{}:80", vip(5)).parse()?
                }
                _ => {
                    let text = large.clone();
                    node.timed(move || apply::replace(&text))?;
                    format!("{}:80", vip(5000)).parse()?
                }
            };
            // The kernel frees a replaced table's sets and chains after the change returns
            // (RCU, on its workers); let that finish before measuring.
            std::thread::sleep(SETTLE);
            let (lat, secs) = connect_loop(&client.0, to, count)?;
            row.1.push(median(lat.clone()));
            row.2.push(p99(lat));
            row.3.push(count as f64 / secs);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = server_thread.join();
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
