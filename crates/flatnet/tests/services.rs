//! Services in a lab cluster: ClusterIP, NodePort, LoadBalancer, affinity, balancing,
//! traffic policies, rejection without endpoints, and refused bad Services.

mod common;

use common::{cluster_doc, probe, served, Cluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Instant;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: s}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: echo, containerPort: 9000, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: s}
spec: {nodeName: node1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client2, namespace: s}
spec: {nodeName: node2, containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: s}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: echo, port: 53, protocol: UDP, targetPort: echo}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: s}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: rr, namespace: s, annotations: {flatnet.dev/load-balancing: round-robin}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: mg, namespace: s, annotations: {flatnet.dev/load-balancing: maglev}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: public, namespace: s}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: s}
spec:
  type: NodePort
  selector: {app: nobody}
  ports: [{name: t, port: 80}, {name: u, port: 81, protocol: UDP}]
"#;

fn service_in(c: &Cluster, ns: &str, name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "services", "-n", ns, "-o", "json"])).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == name)
        .unwrap()
        .clone()
}

fn service(c: &Cluster, name: &str) -> Value {
    service_in(c, "s", name)
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    c.pods()
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn services_end_to_end() {
    let c = Cluster::named("svc");
    c.up(&(cluster_doc(&c.name, "{nodes: 3}") + APP));
    let web = service(&c, "web");
    let ips: Vec<String> = web["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 2, "dual-stack ClusterIPs");

    // ClusterIP from pods on two nodes reaches every ready endpoint, the server sees the pod's IP.
    let client_ip = pod_ip(&c, "client");
    let mut seen = BTreeSet::new();
    for i in 0..30 {
        let from = if i % 2 == 0 { "s/client" } else { "s/client2" };
        let v = probe(&c, from, &ips[0], 80, &[]);
        seen.insert(served(&v));
        if from == "s/client" {
            assert_eq!(
                v["clientAddress"],
                client_ip.as_str(),
                "no SNAT inside the cluster"
            );
        }
    }
    assert_eq!(seen.len(), 3, "all three endpoints answer: {seen:?}");
    // IPv6 and UDP work as IPv4 and TCP do.
    served(&probe(&c, "s/client", &ips[1], 80, &[]));
    served(&probe(&c, "s/client", &ips[0], 53, &["--protocol", "udp"]));
    served(&probe(&c, "s/client", &ips[1], 53, &["--protocol", "udp"]));

    // ClientIP affinity keeps one client on one backend until the timeout.
    let sticky = service(&c, "sticky")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let first = served(&probe(&c, "s/client", &sticky, 80, &[]));
    for _ in 0..8 {
        assert_eq!(served(&probe(&c, "s/client", &sticky, 80, &[])), first);
    }

    // Round robin: three consecutive connections reach three different backends.
    let rr = service(&c, "rr")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let turns: BTreeSet<String> = (0..3)
        .map(|_| served(&probe(&c, "s/client", &rr, 80, &[])))
        .collect();
    assert_eq!(turns.len(), 3, "{turns:?}");

    // Maglev: each client keeps its backend, connection after connection.
    let mg = service(&c, "mg")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    for from in ["s/client", "s/client2"] {
        let first = served(&probe(&c, from, &mg, 80, &[]));
        for _ in 0..5 {
            assert_eq!(served(&probe(&c, from, &mg, 80, &[])), first, "{from}");
        }
    }

    // NodePort on every node and the LoadBalancer IP, from outside.
    let public = service(&c, "public");
    let lb = public["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lb.starts_with("192.168.1.2"),
        "{lb} is from the pool 192.168.1.200-250"
    );
    for node in ["node/node1", "node/node2", "node/node3"] {
        served(&probe(&c, "external", node, 30080, &[]));
    }
    served(&probe(&c, "external", &lb, 80, &[]));

    // No endpoints: refused at once, TCP and UDP, never a timeout; by the ClusterIP from a
    // pod and by the NodePorts from outside.
    let refused_at_once = |from: &str, to: &str, port: u16, proto: &str| {
        let start = Instant::now();
        let v = probe(&c, from, to, port, &["--protocol", proto, "--timeout", "3"]);
        assert_eq!(v["result"], "refused", "{proto} to {to}:{port}: {v}");
        assert!(
            start.elapsed().as_secs_f64() < 1.5,
            "{proto} to {to}:{port} refused within a second"
        );
    };
    let empty = service(&c, "empty");
    let cluster_ip = empty["spec"]["clusterIP"].as_str().unwrap();
    for (i, (port, proto)) in [(80, "tcp"), (81, "udp")].into_iter().enumerate() {
        refused_at_once("s/client", cluster_ip, port, proto);
        let node_port = empty["spec"]["ports"][i]["nodePort"].as_u64().unwrap() as u16;
        refused_at_once("external", "node/node2", node_port, proto);
    }
}

#[test]
fn external_traffic_policy_local_keeps_the_client_ip() {
    let c = Cluster::named("etp");
    // Without the Ingress controller, whose Service would add to the counts below.
    let text = cluster_doc(&c.name, "{nodes: 3, addons: {ingress: false}}")
        + r#"
apiVersion: v1
kind: Pod
metadata: {name: only, labels: {app: only}}
spec: {nodeName: node2, containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: only}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
"#;
    c.up(&text);
    // The node with the endpoint answers and the pod sees the external client's own address.
    let v = probe(&c, "external", "node/node2", 30090, &[]);
    assert_eq!(served(&v), "only");
    assert_eq!(v["clientAddress"], "192.168.1.254");
    // The LoadBalancer IP is announced by that node, so it preserves the client too.
    let lb = service_in(&c, "default", "local")["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let v = probe(&c, "external", &lb, 80, &[]);
    assert_eq!(v["clientAddress"], "192.168.1.254");
    // Nodes without a local endpoint do not answer.
    let v = probe(&c, "external", "node/node1", 30090, &["--timeout", "1"]);
    assert_ne!(v["result"], "connected", "{v}");
    // The health-check NodePort says which nodes have local endpoints: 200 there, 503 elsewhere.
    let hc = service_in(&c, "default", "local")["spec"]["healthCheckNodePort"]
        .as_u64()
        .unwrap();
    let get = |target: &str, url: String| -> (u16, Value) {
        let script = format!(
            "import urllib.request,urllib.error\ntry:\n r=urllib.request.urlopen('{url}',timeout=3); print(r.status); print(r.read().decode())\nexcept urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())"
        );
        let out = c.ok(&["exec", target, "--", "python3", "-c", &script]);
        let (code, body) = out.split_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        )
    };
    let (code, body) = get("external", format!("http://192.168.1.2:{hc}/"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["localEndpoints"], 1);
    assert_eq!(body["service"]["name"], "local");
    let (code, body) = get("external", format!("http://192.168.1.1:{hc}/"));
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["localEndpoints"], 0);
    // The agent's metrics count what it programmed.
    let metrics = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:10249/metrics').read().decode())";
    let out = c.ok(&["exec", "node/node2", "--", "python3", "-c", metrics]);
    assert!(out.contains("flatnet_proxy_full_syncs_total"), "{out}");
    // The Service and kube-dns (UDP and TCP, both families, two DNS pods each).
    assert!(out.contains("flatnet_proxy_service_ports 5"), "{out}");
    assert!(out.contains("flatnet_proxy_endpoints 9"), "{out}");
    assert!(
        out.contains("flatnet_proxy_network_programming_duration_seconds_count"),
        "{out}"
    );
}

#[test]
fn bad_services_are_refused_and_nothing_changes() {
    let c = Cluster::named("badsvc");
    c.up(&(cluster_doc(&c.name, "{nodes: 1}") + "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30500}]}\n"));
    let before = c.ok(&["get", "services", "-A", "-o", "json"]);
    for (text, want) in [
        (
            "spec: {ports: [{port: 70000}]}",
            "spec.ports[0].port: 70000 is not a port",
        ),
        (
            "spec: {type: NodePort, ports: [{port: 80, nodePort: 30500}]}",
            "spec.ports[0].nodePort: 30500 is already allocated",
        ),
        (
            "spec: {clusterIP: 10.99.0.1, ports: [{port: 80}]}",
            "spec.clusterIP: 10.99.0.1 is not in the service range 10.43.0.0/16",
        ),
    ] {
        let f = c.manifest(
            "bad.yaml",
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: b}}\n{text}\n"),
        );
        let out = c.run(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("bad.yaml: Service/default/b: {want}")),
            "{err}"
        );
        assert_eq!(c.ok(&["get", "services", "-A", "-o", "json"]), before);
    }
}

#[test]
fn scaling_while_a_client_loops_fails_no_connection() {
    let c = Cluster::named("scale");
    let app = |replicas: u32| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec: {{containers: [{{name: c}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
        )
    };
    c.up(&(cluster_doc(&c.name, "{nodes: 3}") + &app(3)));
    let vip = service_in(&c, "default", "web")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let (state, name) = (c.state.path().to_path_buf(), c.name.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            // Bounded: at most 3,000 probes, and only while the scaling goes on.
            for _ in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let out = std::process::Command::new(common::FLATNET)
                    .args([
                        "probe",
                        "--cluster",
                        &name,
                        "--from",
                        "client",
                        "--to",
                        &vip,
                        "--port",
                        "80",
                        "-o",
                        "json",
                    ])
                    .env("FLATNET_STATE_DIR", &state)
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                if v["result"] == "connected" {
                    ok += 1;
                } else {
                    failed.push(v);
                }
            }
            (ok, failed)
        })
    };
    for replicas in [1, 4, 2, 5] {
        let f = c.manifest("scale.yaml", &app(replicas));
        c.ok(&["apply", "-f", f.to_str().unwrap()]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looper.join().unwrap();
    assert!(ok > 10, "the client looped ({ok} probes)");
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
}

#[test]
fn udp_recovers_at_once_when_its_only_endpoint_is_replaced() {
    let c = Cluster::named("udp");
    let app = |version: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: dns}}}}
  template:
    metadata: {{labels: {{app: dns, version: "{version}"}}}}
    spec: {{containers: [{{name: c, ports: [{{containerPort: 5353, protocol: UDP}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec: {{containers: [{{name: c}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: dns}}
spec: {{selector: {{app: dns}}, ports: [{{port: 53, protocol: UDP, targetPort: 5353}}]}}
"#
        )
    };
    c.up(&(cluster_doc(&c.name, "{nodes: 2}") + &app("1")));
    let vip = service_in(&c, "default", "dns")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // A client that keeps its source port, as a resolver does: one conntrack entry throughout.
    let ask = || {
        probe(
            &c,
            "client",
            &vip,
            53,
            &[
                "--protocol",
                "udp",
                "--source-port",
                "40053",
                "--timeout",
                "1",
            ],
        )
    };
    let first = served(&ask());
    let f = c.manifest("v2.yaml", &app("2"));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    // The very next datagram reaches the new pod: the stale entry was deleted.
    let v = ask();
    let second = served(&v);
    assert_ne!(first, second, "the endpoint was replaced");
}

#[test]
fn pods_find_services_by_name() {
    let c = Cluster::named("dns");
    let text = cluster_doc(&c.name, "{nodes: 2}")
        + r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h1, namespace: x, labels: {app: hs}}
spec: {hostname: first, subdomain: hs, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: hs, namespace: x}
spec: {clusterIP: None, selector: {app: hs}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: x}
spec: {type: ExternalName, externalName: www.lab.test}
"#;
    c.up(&text);
    let ip = service_in(&c, "x", "web")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // The pod's resolv.conf is kubelet's: the cluster DNS, the search path, ndots:5.
    let resolv = c.ok(&["exec", "x/a", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search x.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    // A short name through the search path, via the kube-dns Service.
    let hosts = c.ok(&["exec", "x/a", "--", "getent", "ahostsv4", "web"]);
    assert!(hosts.contains(&ip), "{hosts}");
    let dig = |args: &[&str]| {
        let mut full = vec!["exec", "x/a", "--", "dig", "+tries=1", "+time=2"];
        full.extend(args);
        c.ok(&full)
    };
    assert_eq!(dig(&["+short", "web.x.svc.cluster.local"]).trim(), ip);
    assert!(
        dig(&["+short", "SRV", "_http._tcp.web.x.svc.cluster.local"])
            .contains("80 web.x.svc.cluster.local.")
    );
    let nx = dig(&["nothere.x.svc.cluster.local"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    // NODATA: the name exists (an IPv4-only Service) but has no AAAA record.
    let nodata = dig(&["AAAA", "web.x.svc.cluster.local"]);
    assert!(
        nodata.contains("status: NOERROR")
            && nodata.contains("ANSWER: 0")
            && nodata.contains("SOA"),
        "{nodata}"
    );
    // PTR of the ClusterIP.
    assert_eq!(
        dig(&["+short", "-x", &ip]).trim(),
        "web.x.svc.cluster.local."
    );
    // A headless Service: the pod's hostname under its subdomain.
    let h1 = c
        .pods()
        .into_iter()
        .find(|p| p["metadata"]["name"] == "h1")
        .unwrap();
    let h1_ip = h1["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        dig(&["+short", "first.hs.x.svc.cluster.local"]).trim(),
        h1_ip
    );
    assert_eq!(dig(&["+short", "hs.x.svc.cluster.local"]).trim(), h1_ip);
    // ExternalName: a CNAME to the outside name, which the upstream then answers.
    let cname = dig(&["+short", "elsewhere.x.svc.cluster.local"]);
    assert!(
        cname.contains("www.lab.test.") && cname.contains("192.168.1.254"),
        "{cname}"
    );
    // Names outside the cluster go to the upstream resolver (on the external host).
    assert_eq!(dig(&["+short", "www.lab.test"]).trim(), "192.168.1.254");
    // The DNS pods say they are ready and count what they answered (the Service spreads the
    // queries, so look at both).
    let dns_pods: Vec<String> = c
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["k8s-app"] == "kube-dns")
        .map(|p| format!("kube-system/{}", p["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(dns_pods.len(), 2);
    let fetch = |pod: &str, path: &str| {
        let script = format!("import urllib.request;r=urllib.request.urlopen('http://127.0.0.1:9153{path}');print(r.status);print(r.read().decode())");
        c.ok(&["exec", pod, "--", "python3", "-c", &script])
    };
    let mut all = String::new();
    for pod in &dns_pods {
        assert!(fetch(pod, "/readyz").starts_with("200"));
        assert!(fetch(pod, "/healthz").starts_with("200"));
        all.push_str(&fetch(pod, "/metrics"));
    }
    assert!(all.contains("flatnet_dns_requests_total{"), "{all}");
    assert!(
        all.contains("flatnet_dns_forward_requests_total 1"),
        "one name went upstream: {all}"
    );
    // A new Service is answered at once.
    let f = c.manifest("late.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: x}\nspec: {selector: {app: web}, ports: [{port: 81}]}\n");
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let late = service_in(&c, "x", "late")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dig(&["+short", "late.x.svc.cluster.local"]).trim(), late);
}

#[test]
fn headless_service_with_200_endpoints_truncates_over_udp() {
    let c = Cluster::named("hl");
    let text = cluster_doc(
        &c.name,
        "{nodes: 3, podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16]}",
    ) + r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 200
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: many}
spec: {clusterIP: None, selector: {app: many}, ports: [{port: 8080}]}
"#;
    c.up(&text);
    let dig = |args: &[&str]| {
        let mut full = vec![
            "exec",
            "client",
            "--",
            "dig",
            "+tries=1",
            "+time=3",
            "many.default.svc.cluster.local",
        ];
        full.extend(args);
        c.ok(&full)
    };
    // Over UDP without EDNS0 the answer does not fit: TC is set.
    let udp = dig(&["+ignore", "+noedns"]);
    assert!(udp.contains(" tc"), "{udp}");
    // Over TCP the whole answer: one A record per ready endpoint.
    let tcp = dig(&["+tcp", "+short"]);
    assert_eq!(
        tcp.lines().filter(|l| l.starts_with("10.42.")).count(),
        200,
        "{tcp}"
    );
}
