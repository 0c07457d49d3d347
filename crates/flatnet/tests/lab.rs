//! Whole lab clusters driven through the command line, as a user drives them.
//! Each test has its own cluster name and state folder, and removes its cluster on drop.

mod common;

use common::{cluster_doc, Cluster};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]}]}
"#;

fn count(report: &Value, check_prefix: &str, family: &str) -> usize {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"].as_str().unwrap().starts_with(check_prefix) && r["family"] == family)
        .count()
}

fn three_nodes_pass_check(backend: &str, tag: &str) {
    let c = Cluster::named(tag);
    c.up(&(cluster_doc(&c.name, &format!("{{nodes: 3, backend: {backend}}}")) + WORKLOADS));
    let pods: Vec<Value> = c
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == "x")
        .collect();
    assert_eq!(pods.len(), 5);
    assert_eq!(
        c.pods().len(),
        9,
        "and the two cluster DNS pods and the two Ingress controller pods"
    );
    let nodes: std::collections::BTreeSet<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "pods spread over every node");
    let report = c.check();
    for fam in ["IPv4", "IPv6"] {
        // 5 workload pods, each reached from the 8 other pods (DNS and Ingress controller
        // pods included) over TCP and UDP; 3 nodes x 5 pods; every pod resolves the 1
        // Service with a ClusterIP of this family (kube-dns; the Ingress controller's is
        // IPv4 and IPv6 too) by name.
        assert_eq!(count(&report, "1 pod-to-pod", fam), 80, "{fam}");
        assert_eq!(count(&report, "2 node-to-pod", fam), 15, "{fam}");
        assert_eq!(
            count(&report, "3 pod-to-service, by DNS name", fam),
            18,
            "{fam}"
        );
    }
    assert!(count(&report, "1 pod-to-pod, cross node", "IPv4") > 0);
    // The pod's own view of its address is the one the cluster reports.
    let a = pods.iter().find(|p| p["metadata"]["name"] == "a").unwrap();
    let ip = a["status"]["podIP"].as_str().unwrap();
    let inside = c.ok(&["exec", "x/a", "--", "ip", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!("{ip}/")), "{inside}");
    let mtu = if backend == "vxlan" {
        "mtu 1450"
    } else {
        "mtu 1500"
    };
    assert!(c
        .ok(&["exec", "x/a", "--", "ip", "link", "show", "eth0"])
        .contains(mtu));
    // The check's cross-node flows are tracked on the nodes; with vxlan, the nodes' own
    // encapsulated packets are not (no second, UDP flow per pod flow).
    for node in ["node1", "node2", "node3"] {
        let ns = flatnet_model::names::node_netns(&c.name, node);
        let tracked = |args: &[&str]| {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "conntrack", "-L"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        assert!(tracked(&["-p", "tcp"]) > 0, "{node}: pod flows are tracked");
        let port = flatnet_model::names::VXLAN_PORT.to_string();
        assert_eq!(
            tracked(&["-p", "udp", "--dport", &port]),
            0,
            "{node}: tunnel packets"
        );
    }
    // Bridged frames go through the IP hooks on the nodes (same-node Service replies are
    // un-NATed there), not in the fabric, a plain switch.
    let bridge_nf = |ns: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-n"])
            .arg("net.bridge.bridge-nf-call-iptables")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let fabric = flatnet_model::names::fabric_netns(&c.name);
    assert_eq!(bridge_nf(&fabric), "0", "in the fabric");
    let node1 = flatnet_model::names::node_netns(&c.name, "node1");
    assert_eq!(bridge_nf(&node1), "1", "on a node");
}

#[test]
fn vxlan_cluster_proves_guarantees_on_both_families() {
    three_nodes_pass_check("vxlan", "vx");
}

#[test]
fn host_gw_cluster_proves_guarantees_on_both_families() {
    three_nodes_pass_check("host-gw", "gw");
}

#[test]
fn single_stack_ipv4_cluster() {
    let c = Cluster::named("v4");
    c.up(&(cluster_doc(
        &c.name,
        "{nodes: 2, podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16], addons: {dns: false, ingress: false}}",
    ) + WORKLOADS));
    // Without the add-ons: only the 5 workload pods, and no DNS rows.
    assert_eq!(c.pods().len(), 5);
    let report = c.check();
    assert_eq!(count(&report, "1 pod-to-pod", "IPv6"), 0);
    assert_eq!(count(&report, "1 pod-to-pod", "IPv4"), 40);
    assert_eq!(count(&report, "3 pod-to-service, by DNS name", "IPv4"), 0);
}

#[test]
fn probe_reports_server_and_client_as_json() {
    let c = Cluster::named("pr");
    c.up(&(cluster_doc(&c.name, "{nodes: 2}") + WORKLOADS));
    let pods = c.pods();
    let web = pods
        .iter()
        .find(|p| p["metadata"]["name"].as_str().unwrap().starts_with("web-"))
        .unwrap();
    let web_name = web["metadata"]["name"].as_str().unwrap();
    let web_ip = web["status"]["podIP"].as_str().unwrap();
    let a_ip = pods.iter().find(|p| p["metadata"]["name"] == "a").unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&c.ok(&[
        "probe", "--from", "x/a", "--to", web_ip, "--port", "8080", "-o", "json",
    ]))
    .unwrap();
    assert_eq!(v["result"], "connected");
    assert_eq!(v["server"]["pod"], web_name);
    assert_eq!(v["server"]["namespace"], "x");
    assert_eq!(v["clientAddress"], a_ip.as_str());
    assert!(v["latencyMs"].as_f64().unwrap() > 0.0);
    let out = c.run(&[
        "probe", "--from", "x/a", "--to", web_ip, "--port", "9", "-o", "json",
    ]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "refused");
    // Pod IPs are not reachable from outside the cluster.
    let out = c.run(&[
        "probe",
        "--from",
        "external",
        "--to",
        web_ip,
        "--port",
        "8080",
        "--timeout",
        "0.5",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(v["result"], "connected");
}

#[test]
fn node_removed_and_readded_keeps_pod_to_pod_working() {
    let c = Cluster::named("nd");
    c.up(&(cluster_doc(&c.name, "{nodes: 3}") + WORKLOADS));
    c.check();
    let two = c.manifest("two.yaml", &cluster_doc(&c.name, "{nodes: [node1, node2]}"));
    c.ok(&["apply", "-f", two.to_str().unwrap()]);
    let pods = c.pods();
    assert!(
        pods.iter().all(|p| p["spec"]["nodeName"] != "node3"),
        "pods left node3"
    );
    assert_eq!(
        pods.iter()
            .filter(|p| p["metadata"]["name"].as_str().unwrap().starts_with("web-"))
            .count(),
        4
    );
    assert!(!c.namespaces().iter().any(|n| n.contains(".node.node3")));
    c.check();
    let three = c.manifest("three.yaml", &cluster_doc(&c.name, "{nodes: 3}"));
    c.ok(&["apply", "-f", three.to_str().unwrap()]);
    let extra = c.manifest(
        "more.yaml",
        &WORKLOADS.replace("replicas: 4", "replicas: 7"),
    );
    c.ok(&["apply", "-f", extra.to_str().unwrap()]);
    let pods = c.pods();
    assert!(
        pods.iter().any(|p| p["spec"]["nodeName"] == "node3"),
        "node3 runs pods again"
    );
    c.check();
}

#[test]
fn bad_cluster_is_refused_before_anything_is_created() {
    let c = Cluster::named("bad");
    let f = c.manifest(
        "bad.yaml",
        &cluster_doc(
            &c.name,
            "{podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.42.128.0/17]}",
        ),
    );
    let out = c.run(&["up", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bad.yaml: Cluster/{}: spec.serviceCIDRs[0]: 10.42.128.0/17 overlaps spec.podCIDRs[0] 10.42.0.0/16", c.name)),
        "{err}"
    );
    assert!(c.namespaces().is_empty());
    assert!(!c.state.path().join(&c.name).exists());
    // A manifest error names the file, object and field too.
    let f = c.manifest("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n");
    let out = c.run(&["up", "-f", f.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("pod.yaml: Pod/default/p: spec.containers[0].ports[0].containerPort"));
    assert!(c.namespaces().is_empty());
}

#[test]
fn down_after_killed_up_leaves_nothing() {
    let c = Cluster::named("kill");
    let f = c.manifest(
        "up.yaml",
        &(cluster_doc(&c.name, "{nodes: 3}") + &WORKLOADS.replace("replicas: 4", "replicas: 12")),
    );
    for delay_ms in [150u64, 400] {
        let mut up = c
            .cmd(&["up", "-f", f.to_str().unwrap(), "--cluster", &c.name])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = up.kill();
        let _ = up.wait();
        let out = c.run(&["down"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Agents may still be starting pods when down begins: nothing may survive it.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(c.namespaces().is_empty(), "{:?}", c.namespaces());
        assert!(!Path::new(&c.state.path().join(&c.name)).exists());
        let etc: Vec<String> = std::fs::read_dir("/etc/netns")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !etc.iter().any(|n| n.starts_with(&format!("{}.", c.name))),
            "{etc:?}"
        );
        let leftovers = Command::new("pgrep")
            .args(["-f", &format!("--cluster {}", c.name)])
            .output()
            .unwrap();
        assert!(
            leftovers.stdout.is_empty(),
            "processes left: {}",
            String::from_utf8_lossy(&leftovers.stdout)
        );
    }
}
