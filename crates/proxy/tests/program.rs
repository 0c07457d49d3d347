//! Golden tests of the nftables program for each Service shape, checked by `nft -c` inside a
//! scratch namespace. `UPDATE_GOLDEN=1` rewrites the golden file.

use flatnet_model::cluster::{ClusterSpec, NodesSpec};
use flatnet_model::manifest::parse_documents;
use flatnet_model::state::{NodeStatus, PodStatus, State};
use flatnet_model::validate::resolve_cluster;
use flatnet_proxy::table::Table;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The fixture cluster with every pod running and addressed like an agent would report.
fn fixture() -> (State, BTreeMap<String, NodeStatus>) {
    let spec = ClusterSpec {
        nodes: Some(NodesSpec::Count(2)),
        ..Default::default()
    };
    let cfg = resolve_cluster("t", "t", &spec, &[]).unwrap();
    let mut state = flatnet_controller::new_state(cfg);
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures.yaml"))
            .unwrap();
    let m = parse_documents(&[("fixtures.yaml".into(), text)]).unwrap();
    flatnet_controller::apply(&mut state, &m).unwrap();
    let mut statuses: BTreeMap<String, NodeStatus> = BTreeMap::new();
    for (i, p) in state.pods.iter().enumerate() {
        let n = state.node(&p.node).unwrap();
        let host = i as u8 + 2;
        let ips = n
            .pod_cidrs
            .iter()
            .map(|c| match c.network() {
                std::net::IpAddr::V4(v) => {
                    std::net::IpAddr::V4((u32::from(v) + host as u32).into())
                }
                std::net::IpAddr::V6(v) => {
                    std::net::IpAddr::V6((u128::from(v) + host as u128).into())
                }
            })
            .collect();
        statuses.entry(p.node.clone()).or_default().pods.insert(
            p.key(),
            PodStatus {
                uid: p.uid.clone(),
                ips,
                phase: "Running".into(),
                pid: None,
            },
        );
    }
    (state, statuses)
}

fn nft_check(ruleset: &str) {
    let ns = scratch("c");
    nft_run(&ns.0, &["-c", "-f", "-"], ruleset);
}

#[test]
fn every_service_shape_golden() {
    let (state, statuses) = fixture();
    let slices = flatnet_controller::endpoints::slices(&state, &statuses);
    let program = flatnet_proxy::program(&state.config, &state.services, &slices, "node1");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/node1.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &program).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        program,
        want,
        "program differs from {}; UPDATE_GOLDEN=1 to accept",
        path.display()
    );
    nft_check(&program);
}

#[test]
fn shapes_map_to_the_right_rules() {
    let (state, statuses) = fixture();
    let slices = flatnet_controller::endpoints::slices(&state, &statuses);
    let p = flatnet_proxy::program(&state.config, &state.services, &slices, "node1");
    let web = state
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("web"))
        .unwrap();
    let ips = web.spec.as_ref().unwrap().cluster_ips.clone().unwrap();
    assert_eq!(
        ips.len(),
        2,
        "PreferDualStack gets one ClusterIP per family"
    );
    // A plain ClusterIP Service: dispatch of both families and both protocols to the chain
    // shared by ports with three endpoints, and its endpoints in the map, by index, with
    // named ports resolved to the pods' ports.
    for ip in &ips {
        let fm = if ip.contains(':') { "v6" } else { "v4" };
        assert!(
            p.contains(&format!("{ip} . tcp . 80 : goto pick-{fm}-3")),
            "{ip} tcp"
        );
        assert!(
            p.contains(&format!("{ip} . udp . 53 : goto pick-{fm}-3")),
            "{ip} udp"
        );
        for i in 0..3 {
            assert!(p.contains(&format!("{ip} . tcp . 80 . {i} : ")), "{ip} {i}");
        }
        assert!(
            !p.contains(&format!("{ip} . tcp . 80 . 3 : ")),
            "{ip}: three only"
        );
    }
    assert!(p.contains(
        "chain pick-v4-3 {\n\t\tip saddr != @pod-cidrs-v4 jump mark-for-masquerade\n\t\tct mark set numgen random mod 3\n\t\tmeta l4proto { tcp, udp, sctp } dnat ip addr . port to ip daddr . meta l4proto . th dport . ct mark map @endpoints-v4\n"
    ));
    assert!(p.contains(" . 8080, ") && p.contains(" . 5353, "));
    // Three endpoints of the LoadBalancer Service, balanced at random in its own chain.
    assert!(p.contains("numgen random mod 3 0 meta l4proto tcp dnat ip to "));
    assert!(p.contains("numgen random mod 2 0 meta l4proto tcp dnat ip to "));
    // Hairpin: each endpoint reaching itself is masqueraded.
    assert!(
        p.contains("set hairpin-v4")
            && p.contains("ip saddr . ip daddr @hairpin-v4 jump mark-for-masquerade")
    );
    // Affinity: per-endpoint sets with the timeout, consulted before balancing.
    assert!(p.contains("flags dynamic,timeout; timeout 60s;"));
    // NodePort dispatch, the no-endpoint Service rejected (ClusterIP and NodePort).
    assert!(p.contains("tcp . 30080 : goto ext-"));
    let empty = state
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("empty"))
        .unwrap();
    let empty_ip = empty.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert!(p.contains(&format!("{empty_ip} . tcp . 80 : goto reject-service")));
    // LoadBalancer: the pool's first IP, behind the source-range firewall.
    assert!(p.contains("192.168.1.200 . tcp . 443 : goto fw-"));
    assert!(p.contains("ip saddr != { 192.168.1.0/24 } drop"));
    // Round robin and the external IP.
    assert!(p.contains("numgen inc mod"));
    // Maglev: a 251-slot table indexed by a hash of the client address.
    assert!(p.contains("dnat ip addr . port to jhash ip saddr mod 251 seed 0x666c6174 map { 0 : "));
    // Affinity keeps a chain per endpoint; the others translate in place.
    assert!(p.contains("numgen random mod 3 vmap"));
    assert!(p.contains("192.168.1.150 . tcp . 8080 : goto ext-"));
    // Headless and ExternalName Services get nothing.
    assert!(!p.contains("x/headless") && !p.contains("x/ext/"));
}

#[test]
fn no_endpoints_and_unready_pods_get_no_backends() {
    let (state, mut statuses) = fixture();
    for st in statuses.values_mut() {
        for p in st.pods.values_mut() {
            p.phase = "Pending".into();
        }
    }
    let slices = flatnet_controller::endpoints::slices(&state, &statuses);
    let p = flatnet_proxy::program(&state.config, &state.services, &slices, "node1");
    assert!(!p.contains("dnat"), "no ready endpoint, no DNAT");
    assert!(p.contains("goto reject-service"));
}

/// `nft list table` of flatnet's table in `ns`, as a sorted bag of tokens: the listing's
/// order of chains and elements follows creation order, which a partial sync changes.
fn listing(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "flatnet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut tokens: Vec<String> = text
        .split(['\n', ',', '{', '}'])
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .collect();
    tokens.sort();
    tokens
}

fn nft_apply(ns: &str, text: &str) {
    nft_run(ns, &["-f", "-"], text);
}

/// Runs `nft ARGS` with `text` on stdin inside namespace `ns`; fails the test on refusal.
fn nft_run(ns: &str, args: &[&str], text: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?} refused:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
fn scratch(tag: &str) -> Ns {
    let name = format!("fltest-proxy{tag}-{}", std::process::id());
    let _ = Command::new("ip")
        .args(["netns", "del", &name])
        .stderr(Stdio::null())
        .status();
    assert!(Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success());
    Ns(name)
}

#[test]
fn partial_sync_reaches_the_same_table_as_a_full_sync() {
    let (state, statuses) = fixture();
    let flows = |state: &State, statuses: &BTreeMap<String, NodeStatus>| {
        let slices = flatnet_controller::endpoints::slices(state, statuses);
        flatnet_proxy::flows::flows(&state.services, &slices, "node1")
    };
    // B: one endpoint gone (its pod stopped).
    let mut statuses_b = statuses.clone();
    let victim = state
        .pods
        .iter()
        .find(|p| p.name.starts_with("web-"))
        .unwrap();
    statuses_b
        .get_mut(&victim.node)
        .unwrap()
        .pods
        .remove(&victim.key());
    // C: a Service removed, one added, an endpoint back.
    let mut state_c = state.clone();
    state_c
        .services
        .retain(|s| s.metadata.name.as_deref() != Some("sticky"));
    let extra = parse_documents(&[(
        "x.yaml".into(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: x}\nspec: {type: NodePort, selector: {app: web}, sessionAffinity: ClientIP, ports: [{port: 99, targetPort: 8080}]}\n".into(),
    )])
    .unwrap();
    flatnet_controller::apply(&mut state_c, &extra).unwrap();

    let mut table = Table::new(&flatnet_proxy::ranges(&state.config));
    table.set_all(flows(&state, &statuses));
    let a = table.take_full();
    table.set_all(flows(&state, &statuses_b));
    let a_to_b = table.take_changes();
    table.set_all(flows(&state_c, &statuses));
    let b_to_c = table.take_changes();
    assert!(!a_to_b.is_empty() && !b_to_c.is_empty());
    table.set_all(flows(&state_c, &statuses));
    assert_eq!(table.take_changes(), "", "no change, no command");
    // One endpoint going touches only the Services it served, not the whole table.
    assert!(a_to_b.lines().count() * 3 < a.lines().count(), "{a_to_b}");

    let partial = scratch("p");
    nft_apply(&partial.0, &a);
    nft_apply(&partial.0, &a_to_b);
    nft_apply(&partial.0, &b_to_c);
    let full = scratch("f");
    let c = flatnet_proxy::program(
        &state_c.config,
        &state_c.services,
        &flatnet_controller::endpoints::slices(&state_c, &statuses),
        "node1",
    );
    assert_eq!(table.text(), c, "kept table and a fresh one agree");
    nft_apply(&full.0, &c);
    assert_eq!(listing(&partial.0), listing(&full.0));
}
