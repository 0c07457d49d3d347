//! Programming time of the Service proxy: a full sync of N Services with 10 endpoints each,
//! and, at each N, one Service added and one endpoint changed (partial sync), applied with
//! `nft` inside a scratch network namespace `flbench-proxy-<pid>` (never the host's).
//!
//! Usage: flatnet-bench-proxy-sync [N,N,...] [rounds]   (default 1000,10000,30000 and 3)

use anyhow::{bail, Result};
use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::validate::resolve_cluster;
use flatnet_proxy::render::Program;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const ENDPOINTS: usize = 10;

/// The ClusterIP of Service `i` in 10.43.0.0/16 (65,000 of them at most).
fn vip(i: usize) -> String {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 43, 0, 1)) + i as u32)
        .to_string()
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {
            "clusterIP": vip(i),
            "clusterIPs": [vip(i)],
            "ipFamilies": ["IPv4"],
            "selector": {"app": format!("a{i}")},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    }))
    .expect("valid Service")
}

/// The slice of Service `i`; with `moved`, its first endpoint has another address.
fn slice(i: usize, moved: bool) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let n = i * ENDPOINTS + e;
            // Addresses in a scratch namespace: 10.64.0.0/10 holds every endpoint.
            let base = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0));
            let addr = if moved && e == 0 {
                std::net::Ipv4Addr::from(base - 1).to_string()
            } else {
                std::net::Ipv4Addr::from(base + n as u32).to_string()
            };
            json!({
                "addresses": [addr],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node{}", e % 3 + 1)
            })
        })
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

struct Scratch(String);

impl Scratch {
    fn new() -> Result<Self> {
        let name = format!("flbench-proxy-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        if !Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
        {
            bail!("ip netns add {name} failed");
        }
        Ok(Scratch(name))
    }

    fn nft(&self, text: &str) -> Result<f64> {
        let start = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|n| n.parse().expect("a number")).collect())
        .unwrap_or_else(|| vec![1000, 10000, 30000]);
    let rounds: usize = args
        .get(2)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(3);
    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(3)),
        ..Default::default()
    };
    let config = resolve_cluster("bench", "bench", &spec, &[])?;
    let build = |svcs: &[Service], slices: &[EndpointSlice]| -> (Program, f64) {
        let start = Instant::now();
        let p = flatnet_proxy::build(&config, svcs, slices, "node1").0;
        (p, start.elapsed().as_secs_f64() * 1000.0)
    };
    println!("| Services | full sync: compute ms | full sync: nft ms | full sync total ms | add one Service: total ms (compute + nft) | change one endpoint: total ms (compute + nft) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let svcs: Vec<Service> = (0..n).map(service).collect();
        let slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, false)).collect();
        let (mut full_c, mut full_n, mut add_t, mut chg_t) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let ns = Scratch::new()?;
            let (p, c) = build(&svcs, &slices);
            let text = p.text();
            full_n.push(ns.nft(&text)?);
            full_c.push(c);
            // One Service added.
            let mut svcs2 = svcs.clone();
            svcs2.push(service(n));
            let mut slices2 = slices.clone();
            slices2.push(slice(n, false));
            let start = Instant::now();
            let (p2, _) = build(&svcs2, &slices2);
            let batch = p.diff(&p2);
            let compute = start.elapsed().as_secs_f64() * 1000.0;
            let applied = ns.nft(&batch)?;
            eprintln!(
                "n={n} add: compute {compute:.1} ms, nft {applied:.1} ms, {} commands",
                batch.lines().count()
            );
            add_t.push(compute + applied);
            // One endpoint of one Service changed.
            let mut slices3 = slices2.clone();
            slices3[n / 2] = slice(n / 2, true);
            let start = Instant::now();
            let (p3, _) = build(&svcs2, &slices3);
            let batch = p2.diff(&p3);
            let compute = start.elapsed().as_secs_f64() * 1000.0;
            chg_t.push(compute + ns.nft(&batch)?);
        }
        let (c, f) = (median(full_c), median(full_n));
        println!(
            "| {n} | {c:.0} | {f:.0} | {:.0} | {:.1} | {:.1} |",
            c + f,
            median(add_t),
            median(chg_t)
        );
    }
    Ok(())
}
