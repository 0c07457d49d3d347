//! The applier in real namespaces: two nodes on a veth, VXLAN between them.

use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::validate::resolve_cluster;
use flatnet_model::{Backend, NodeState};
use flatnet_netlink::netns::{self, TempNetns};
use flatnet_netlink::Netlink;
use std::net::Ipv4Addr;
use std::process::Command;

fn sh(ns: &str, cmd: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .status()
        .unwrap()
        .success()
}

fn node(i: u32) -> NodeState {
    NodeState {
        name: format!("node{i}"),
        index: i,
        ip: Ipv4Addr::new(192, 168, 1, i as u8),
        pod_cidrs: vec![
            format!("10.42.{i}.0/24").parse().unwrap(),
            format!("fd00:10:42:{i}::/64").parse().unwrap(),
        ],
    }
}

fn run(backend: Backend, tag: &str) {
    let pid = std::process::id();
    let a = TempNetns::new(&format!("fltest-ov{tag}-{pid}-a")).unwrap();
    let b = TempNetns::new(&format!("fltest-ov{tag}-{pid}-b")).unwrap();
    assert!(sh(&a.name, &format!(
        "ip link add eth0 type veth peer name peer0 && ip link set peer0 netns {} && ip addr add 192.168.1.1/24 dev eth0 && ip link set eth0 up", b.name
    )));
    assert!(sh(
        &b.name,
        "ip link set peer0 name eth0 && ip addr add 192.168.1.2/24 dev eth0 && ip link set eth0 up"
    ));
    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(2)),
        backend: Some(backend),
        ..Default::default()
    };
    let cfg = resolve_cluster("t", "t", &spec, &[]).unwrap();
    let nodes = vec![node(1), node(2)];
    for (ns, me) in [(&a, "node1"), (&b, "node2")] {
        netns::run_in(&ns.path(), || {
            netns::sysctl("net/ipv4/ip_forward", "1")?;
            netns::sysctl("net/ipv6/conf/all/forwarding", "1")
        })
        .unwrap();
        let nl = Netlink::open(&ns.path()).unwrap();
        let p = flatnet_overlay::program(&cfg, &nodes, me);
        let first = flatnet_overlay::apply(&nl, &p).unwrap();
        assert!(first.added >= 2, "{first:?}");
        // A second apply finds nothing to do.
        assert_eq!(flatnet_overlay::apply(&nl, &p).unwrap(), Default::default());
    }
    // Node 1 reaches node 2's pod gateway over the overlay, both families.
    assert!(
        sh(&a.name, "ping -c1 -W2 10.42.2.1 >/dev/null"),
        "IPv4 across {backend}"
    );
    assert!(
        sh(&a.name, "ping -6 -c1 -W2 fd00:10:42:2::1 >/dev/null"),
        "IPv6 across {backend}"
    );
    let nl = Netlink::open(&a.path()).unwrap();
    let mtu = nl.require("cni0").unwrap().mtu;
    assert_eq!(mtu, cfg.pod_mtu());
    // Node 2 leaves: node 1 drops its routes and entries.
    let p = flatnet_overlay::program(&cfg, &nodes[..1], "node1");
    let gone = flatnet_overlay::apply(&nl, &p).unwrap();
    assert!(gone.removed >= 2, "{gone:?}");
    assert!(nl.own_routes().unwrap().is_empty());
    if backend == Backend::Vxlan {
        let vx = nl.require("flatnet.1").unwrap();
        assert!(nl.fdb(vx.index).unwrap().is_empty());
        assert!(nl.neighbours(vx.index).unwrap().is_empty());
    }
    assert!(!sh(&a.name, "ping -c1 -W1 10.42.2.1 >/dev/null 2>&1"));
}

#[test]
fn vxlan_between_two_nodes() {
    run(Backend::Vxlan, "vx");
}

#[test]
fn host_gw_between_two_nodes() {
    run(Backend::HostGw, "gw");
}
