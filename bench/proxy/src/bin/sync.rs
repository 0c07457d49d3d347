//! Programming time of the Service proxy: a full sync of N Services with 10 endpoints each,
//! and, at each N, one Service added and one endpoint changed (partial sync), applied with
//! `nft` inside a scratch network namespace `flbench-proxy-<pid>` (never the host's).
//!
//! A partial sync is driven as kube-proxy's is, by the change: the changed Service's flows
//! are computed from it and its EndpointSlice, set in the kept table, and only the
//! difference is sent.
//!
//! Usage: flatnet-bench-proxy-sync [N,N,...] [rounds]   (default 1000,10000,30000 and 3)

use anyhow::Result;
use flatnet_bench_proxy::{median, service, slice, Scratch};
use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::validate::resolve_cluster;
use flatnet_proxy::apply;
use flatnet_proxy::flows::flows;
use flatnet_proxy::table::Table;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::time::Instant;

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
    let node = "node1";
    let full = |svcs: &[Service], slices: &[EndpointSlice]| -> (Table, String, f64) {
        let start = Instant::now();
        let (mut table, _) = flatnet_proxy::build(&config, svcs, slices, node);
        let text = table.take_full();
        (table, text, start.elapsed().as_secs_f64() * 1000.0)
    };
    // One Service changed: its flows into the kept table, and the commands that follow.
    let change = |table: &mut Table, svc: &Service, slice: &EndpointSlice| -> String {
        let flows = flows(std::slice::from_ref(svc), std::slice::from_ref(slice), node);
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        table.set_service(&format!("bench/{name}"), flows);
        table.take_changes()
    };
    println!("| Services | full sync: compute ms | full sync: nft ms | full sync total ms | add one Service: total ms (compute + nft) | change one endpoint: total ms (compute + nft) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let svcs: Vec<Service> = (0..n).map(service).collect();
        let slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, false)).collect();
        let (mut full_c, mut full_n, mut add_t, mut chg_t) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let ns = Scratch::new("proxy")?;
            let (mut table, text, c) = full(&svcs, &slices);
            full_n.push(ns.timed(move || apply::replace(&text))?);
            full_c.push(c);
            // One Service added.
            let start = Instant::now();
            let batch = change(&mut table, &service(n), &slice(n, false));
            let compute = start.elapsed().as_secs_f64() * 1000.0;
            let commands = batch.lines().count();
            let applied = ns.timed(move || apply::update(&batch))?;
            eprintln!(
                "n={n} add: compute {compute:.2} ms, nft {applied:.1} ms, {commands} commands"
            );
            add_t.push(compute + applied);
            // One endpoint of one Service changed.
            let start = Instant::now();
            let batch = change(&mut table, &service(n / 2), &slice(n / 2, true));
            let compute = start.elapsed().as_secs_f64() * 1000.0;
            let commands = batch.lines().count();
            let applied = ns.timed(move || apply::update(&batch))?;
            eprintln!(
                "n={n} change: compute {compute:.2} ms, nft {applied:.1} ms, {commands} commands"
            );
            chg_t.push(compute + applied);
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
