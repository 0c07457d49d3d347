//! The plugin driven by exec with CNI_* variables and config on stdin, as a runtime drives it,
//! inside real network namespaces (a "node" and its pods; never the root namespace).

use flatnet_netlink::netns::TempNetns;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const PLUGIN: &str = env!("CARGO_BIN_EXE_flatnet-cni");

struct Lab {
    node: TempNetns,
    dir: tempfile::TempDir,
    tag: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let tag = format!("fltest-cni{tag}-{}", std::process::id());
        Lab {
            node: TempNetns::new(&format!("{tag}-node")).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            tag,
        }
    }

    fn pod(&self, name: &str) -> TempNetns {
        TempNetns::new(&format!("{}-{name}", self.tag)).unwrap()
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "flatnet",
            "type": "flatnet-cni",
            "bridge": "cni0",
            "mtu": 1450,
            "readinessFile": self.dir.path().join("ready"),
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.42.7.0/24"}], [{"subnet": "fd00:10:42:7::/64"}]],
                "dataDir": self.dir.path().join("ipam"),
            }
        })
    }

    /// Runs the plugin inside the node namespace.
    fn exec(&self, env: &[(&str, &str)], stdin: &[u8]) -> (i32, Value) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node.name, PLUGIN])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (out.status.code().unwrap_or(-1), v)
    }

    fn verb(&self, verb: &str, id: &str, pod: Option<&TempNetns>, conf: &Value) -> (i32, Value) {
        let ns = pod
            .map(|p| p.path().display().to_string())
            .unwrap_or_default();
        self.exec(
            &[
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &ns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/nonexistent"),
            ],
            conf.to_string().as_bytes(),
        )
    }

    fn reservations(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam").join("flatnet");
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.retain(|n| n.parse::<std::net::IpAddr>().is_ok());
        v.sort();
        v
    }
}

fn sh(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn version_answers_supported_versions() {
    let lab = Lab::new("v");
    let (code, v) = lab.exec(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(code, 0);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.0.0")));
}

#[test]
fn errors_carry_the_spec_codes() {
    let lab = Lab::new("e");
    let pod = lab.pod("p");
    let conf = lab.conf();
    let code_of = |(rc, v): (i32, Value)| {
        assert_ne!(rc, 0, "{v}");
        assert!(v["msg"].is_string(), "{v}");
        v["code"].as_u64().unwrap()
    };
    assert_eq!(
        code_of(lab.exec(&[], conf.to_string().as_bytes())),
        4,
        "no CNI_COMMAND"
    );
    assert_eq!(
        code_of(lab.exec(&[("CNI_COMMAND", "JUMP")], b"{}")),
        4,
        "unknown verb"
    );
    assert_eq!(
        code_of(lab.exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0")
            ],
            conf.to_string().as_bytes()
        )),
        4,
        "no CNI_NETNS"
    );
    assert_eq!(
        code_of(lab.verb("ADD", "c1", None, &conf)),
        4,
        "empty CNI_NETNS"
    );
    assert_eq!(
        code_of(lab.exec(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/does-not-exist-fltest"),
                ("CNI_IFNAME", "eth0")
            ],
            conf.to_string().as_bytes()
        )),
        4,
        "missing netns"
    );
    let (rc, v) = lab.exec(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", &pod.path().display().to_string()),
            ("CNI_IFNAME", "eth0"),
        ],
        b"{oops",
    );
    assert_eq!(code_of((rc, v)), 6, "decode failure");
    let mut bad = conf.clone();
    bad["cniVersion"] = json!("0.1.0");
    assert_eq!(
        code_of(lab.verb("ADD", "c1", Some(&pod), &bad)),
        1,
        "incompatible version"
    );
    let mut bad = conf.clone();
    bad["colour"] = json!("blue");
    assert_eq!(
        code_of(lab.verb("ADD", "c1", Some(&pod), &bad)),
        2,
        "unsupported field"
    );
    let mut bad = conf.clone();
    bad["ipam"]["ranges"] = json!([[{"subnet": "10.42.7.0/33"}]]);
    assert_eq!(
        code_of(lab.verb("ADD", "c1", Some(&pod), &bad)),
        6,
        "unparsable subnet"
    );
    let mut bad = conf.clone();
    bad["ipam"]["ranges"] = json!([[{"subnet": "10.42.7.0/24"}], [{"subnet": "10.42.8.0/24"}]]);
    assert_eq!(
        code_of(lab.verb("ADD", "c1", Some(&pod), &bad)),
        7,
        "two ranges of one family"
    );
    assert_eq!(
        code_of(lab.verb("CHECK", "c1", Some(&pod), &conf)),
        7,
        "CHECK without prevResult"
    );
    assert_eq!(
        code_of(lab.exec(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes())),
        50,
        "STATUS before the node is ready"
    );
    std::fs::write(lab.dir.path().join("ready"), "").unwrap();
    assert_eq!(
        lab.exec(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes())
            .0,
        0
    );
    // Nothing was reserved by the failed ADDs.
    assert!(lab.reservations().is_empty());
}

#[test]
fn add_check_del_through_every_verb() {
    let lab = Lab::new("a");
    let pod = lab.pod("p");
    let conf = lab.conf();
    let (rc, result) = lab.verb("ADD", "ctr-1", Some(&pod), &conf);
    assert_eq!(rc, 0, "{result}");
    assert_eq!(result["cniVersion"], "1.1.0");
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2);
    assert!(
        ips[0].starts_with("10.42.7.") && ips[0].ends_with("/24") && ips[0] != "10.42.7.1/24",
        "{ips:?}"
    );
    assert!(
        ips[1].starts_with("fd00:10:42:7::") && ips[1].ends_with("/64"),
        "{ips:?}"
    );
    let eth0 = &result["interfaces"][2];
    assert_eq!(eth0["name"], "eth0");
    assert_eq!(eth0["mtu"], 1450);
    assert_eq!(eth0["sandbox"], pod.path().display().to_string());
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["ips"][0]["gateway"], "10.42.7.1");

    // Inside the pod: eth0 with both addresses, lo up, default routes, no DAD.
    let addr = sh(&pod.name, "ip -o addr show dev eth0");
    assert!(addr.contains(ips[0]) && addr.contains(ips[1]), "{addr}");
    assert!(sh(&pod.name, "ip -o link show lo").contains("UP"));
    assert!(sh(&pod.name, "ip route").contains("default via 10.42.7.1 dev eth0"));
    assert!(sh(&pod.name, "ip -6 route").contains("default via fd00:10:42:7::1 dev eth0"));
    assert_eq!(
        sh(&pod.name, "cat /proc/sys/net/ipv6/conf/eth0/accept_dad").trim(),
        "0"
    );
    assert!(sh(&pod.name, "ip -o link show eth0").contains("mtu 1450"));
    // On the node: the bridge holds the gateways, the host end is a hairpin port.
    let br = sh(&lab.node.name, "ip -o addr show dev cni0");
    assert!(
        br.contains("10.42.7.1/24") && br.contains("fd00:10:42:7::1/64"),
        "{br}"
    );
    let host = result["interfaces"][1]["name"].as_str().unwrap();
    assert!(sh(&lab.node.name, &format!("ip -d link show {host}")).contains("hairpin on"));
    // The node reaches the pod.
    assert!(!sh(
        &lab.node.name,
        &format!(
            "ping -c1 -W2 {} && echo ok",
            ips[0].split('/').next().unwrap()
        )
    )
    .is_empty());

    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    let checked = lab.verb("CHECK", "ctr-1", Some(&pod), &with_prev);
    assert_eq!(checked.0, 0, "{}", checked.1);
    // Break the pod's network: CHECK notices.
    sh(&pod.name, &format!("ip addr del {} dev eth0", ips[0]));
    let (rc, v) = lab.verb("CHECK", "ctr-1", Some(&pod), &with_prev);
    assert_ne!(rc, 0);
    assert_eq!(v["code"], 100, "{v}");

    assert_eq!(lab.reservations().len(), 2);
    assert_eq!(lab.verb("DEL", "ctr-1", Some(&pod), &with_prev).0, 0);
    assert!(lab.reservations().is_empty());
    assert!(sh(&pod.name, "ip -o link show eth0").is_empty());
    // DEL again, and DEL once the namespace is gone: both succeed.
    assert_eq!(lab.verb("DEL", "ctr-1", Some(&pod), &with_prev).0, 0);
    drop(pod);
    let gone = lab.exec(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "ctr-1"),
            ("CNI_NETNS", "/run/netns/fltest-gone"),
            ("CNI_IFNAME", "eth0"),
        ],
        conf.to_string().as_bytes(),
    );
    assert_eq!(gone.0, 0, "{}", gone.1);
}

#[test]
fn gc_releases_only_invalid_attachments() {
    let lab = Lab::new("g");
    let (p1, p2) = (lab.pod("p1"), lab.pod("p2"));
    let conf = lab.conf();
    assert_eq!(lab.verb("ADD", "keep", Some(&p1), &conf).0, 0);
    assert_eq!(lab.verb("ADD", "leak", Some(&p2), &conf).0, 0);
    assert_eq!(lab.reservations().len(), 4);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    assert_eq!(
        lab.exec(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes())
            .0,
        0
    );
    assert_eq!(lab.reservations().len(), 2);
    let held = std::fs::read_to_string(
        lab.dir
            .path()
            .join("ipam/flatnet")
            .join(&lab.reservations()[0]),
    )
    .unwrap();
    assert!(held.starts_with("keep"), "{held}");
}

#[test]
fn hundred_concurrent_adds_get_distinct_addresses() {
    let lab = Lab::new("c");
    let conf = lab.conf();
    let pods: Vec<TempNetns> = (0..100).map(|i| lab.pod(&format!("p{i}"))).collect();
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let lab = &lab;
                let conf = &conf;
                s.spawn(move || lab.verb("ADD", &format!("ctr-{i}"), Some(p), conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut v4 = std::collections::BTreeSet::new();
    let mut v6 = std::collections::BTreeSet::new();
    for (rc, r) in &results {
        assert_eq!(*rc, 0, "{r}");
        v4.insert(r["ips"][0]["address"].as_str().unwrap().to_string());
        v6.insert(r["ips"][1]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(v4.len(), 100);
    assert_eq!(v6.len(), 100);
    assert_eq!(lab.reservations().len(), 200);
}

#[test]
fn add_killed_midway_leaves_nothing_after_gc() {
    let lab = Lab::new("k");
    let conf = lab.conf();
    for (i, delay_ms) in [0u64, 2, 5, 10, 20].into_iter().enumerate() {
        let pod = lab.pod(&format!("p{i}"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.node.name, PLUGIN])
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("killed-{i}"))
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        // `ip netns exec` execs the plugin in place, so the pid is the plugin's.
        let _ = child.wait();
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(
        lab.exec(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes())
            .0,
        0
    );
    assert!(lab.reservations().is_empty(), "{:?}", lab.reservations());
    assert!(
        Path::new(&lab.dir.path().join("ipam/flatnet")).exists() || lab.reservations().is_empty()
    );
}
