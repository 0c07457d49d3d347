//! Golden tests of the pure node program. `UPDATE_GOLDEN=1` rewrites the files.

use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::validate::resolve_cluster;
use flatnet_model::{Backend, ClusterConfig, NodeState};
use std::net::Ipv4Addr;
use std::path::Path;

fn cluster(backend: Backend, pods: &[&str]) -> (ClusterConfig, Vec<NodeState>) {
    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(3)),
        backend: Some(backend),
        pod_cidrs: Some(pods.iter().map(|s| s.to_string()).collect()),
        service_cidrs: Some(
            ["10.43.0.0/16", "fd00:10:43::/112"][..pods.len()]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        ..Default::default()
    };
    let cfg = resolve_cluster("t", "t", &spec, &[]).unwrap();
    let nodes = (1..=3u32)
        .map(|i| NodeState {
            name: format!("node{i}"),
            index: i,
            ip: Ipv4Addr::new(192, 168, 1, i as u8),
            pod_cidrs: vec![
                format!("10.42.{i}.0/24").parse().unwrap(),
                format!("fd00:10:42:{i}::/64").parse().unwrap(),
            ][..pods.len()]
                .to_vec(),
        })
        .collect();
    (cfg, nodes)
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs; UPDATE_GOLDEN=1 to accept",
        path.display()
    );
}

#[test]
fn vxlan_dual_stack() {
    let (cfg, nodes) = cluster(Backend::Vxlan, &["10.42.0.0/16", "fd00:10:42::/56"]);
    golden(
        "vxlan-dual-node1.txt",
        &flatnet_overlay::program(&cfg, &nodes, "node1").render(),
    );
}

#[test]
fn vxlan_ipv4_only() {
    let (cfg, nodes) = cluster(Backend::Vxlan, &["10.42.0.0/16"]);
    golden(
        "vxlan-v4-node2.txt",
        &flatnet_overlay::program(&cfg, &nodes, "node2").render(),
    );
}

#[test]
fn host_gw_dual_stack() {
    let (cfg, nodes) = cluster(Backend::HostGw, &["10.42.0.0/16", "fd00:10:42::/56"]);
    golden(
        "hostgw-dual-node3.txt",
        &flatnet_overlay::program(&cfg, &nodes, "node3").render(),
    );
}

#[test]
fn removing_a_node_removes_its_entries_only() {
    let (cfg, nodes) = cluster(Backend::Vxlan, &["10.42.0.0/16", "fd00:10:42::/56"]);
    let all = flatnet_overlay::program(&cfg, &nodes, "node1");
    let fewer = flatnet_overlay::program(&cfg, &nodes[..2], "node1");
    assert_eq!(all.routes.len(), 4);
    assert_eq!(fewer.routes.len(), 2);
    assert!(fewer.routes.iter().all(|r| all.routes.contains(r)));
    assert!(fewer
        .routes
        .iter()
        .all(|r| !r.dst.to_string().contains(".3.") && !r.dst.to_string().contains(":3:")));
    assert_eq!(fewer.fdb.len(), 1);
    assert_eq!(cfg.pod_mtu(), 1450);
    assert_eq!(all.vxlan.unwrap().mtu, 1450);
}
