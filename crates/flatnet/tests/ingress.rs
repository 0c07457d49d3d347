//! The Ingress controller in a lab cluster: from `external` through the LoadBalancer Service
//! `kube-system/flatnet-ingress` to pods on several nodes, by host and path, over HTTP and
//! HTTPS with the certificate of the Ingress's TLS Secret; route changes applied live.

mod common;

use common::{cluster_doc, probe, served, Cluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: c, ports: [{containerPort: 9090}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{port: 8000, targetPort: 9090}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  tls: [{hosts: [shop.test], secretName: shop-cert}]
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8000}}}}
  - host: "*.apps.test"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8000}}}}
"#;

/// A `kubernetes.io/tls` Secret for `host`, and the certificate's PEM (its own CA).
fn tls_secret(name: &str, host: &str) -> (String, String) {
    let key = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = key.cert.pem();
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(&cert),
        indent(&key.signing_key.serialize_pem())
    );
    (secret, cert)
}

fn lb_ip(c: &Cluster) -> String {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "services", "-n", "kube-system", "-o", "json"]))
            .unwrap();
    let svc = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == "flatnet-ingress")
        .expect("the ingress controller's Service")
        .clone();
    svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

fn http(c: &Cluster, lb: &str, host: &str, path: &str) -> Value {
    probe(c, "external", lb, 80, &["--host", host, "--path", path])
}

/// The pod names of a Deployment's pods and the nodes they run on.
fn pods_of(c: &Cluster, app: &str) -> Vec<(String, String)> {
    c.pods()
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn ingress_end_to_end() {
    let c = Cluster::named("ing");
    let (secret, ca) = tls_secret("shop-cert", "shop.test");
    c.up(&(cluster_doc(
        &c.name,
        "{nodes: 2, podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16]}",
    ) + APP
        + "---\n"
        + &secret));
    let lb = lb_ip(&c);

    // The Ingress's status shows the controller's address; the default class is there.
    let ing: Value =
        serde_json::from_str(&c.ok(&["get", "ingresses", "-n", "shop", "-o", "json"])).unwrap();
    assert_eq!(
        ing["items"][0]["status"]["loadBalancer"]["ingress"][0]["ip"],
        lb.as_str()
    );
    assert!(c
        .ok(&["get", "ingressclasses"])
        .contains("flatnet.dev/ingress-controller"));

    // Host and path routing, to pods on both nodes.
    let web: BTreeSet<String> = pods_of(&c, "web").into_iter().map(|p| p.0).collect();
    let api: BTreeSet<String> = pods_of(&c, "api").into_iter().map(|p| p.0).collect();
    let nodes: BTreeSet<String> = pods_of(&c, "web").into_iter().map(|p| p.1).collect();
    assert_eq!(nodes.len(), 2, "web runs on both nodes");
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(served(&http(&c, &lb, "shop.test", "/")));
    }
    assert_eq!(seen, web, "round robin reaches every web pod");
    for (host, path, want) in [
        ("shop.test", "/api/x", &api),
        ("shop.test", "/api", &api),
        ("SHOP.test:80", "/apix", &web),
        ("shop.test", "/a/../api/./y", &api),
        ("one.apps.test", "/anything", &api),
    ] {
        let pod = served(&http(&c, &lb, host, path));
        assert!(want.contains(&pod), "{host}{path} answered by {pod}");
    }
    for (host, path) in [("two.one.apps.test", "/"), ("other.test", "/")] {
        let v = http(&c, &lb, host, path);
        assert!(
            v["error"].as_str().unwrap_or("").contains("404"),
            "{host}{path}: {v}"
        );
    }

    // HTTPS: SNI picks the Secret's certificate (curl verifies it against that CA).
    let ca_file = c.manifest("shop-ca.pem", &ca);
    let out = c.ok(&[
        "exec",
        "external",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca_file.to_str().unwrap(),
        "--resolve",
        &format!("shop.test:443:{lb}"),
        "https://shop.test/api/tls",
    ]);
    let body: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("curl printed {out}"));
    assert!(api.contains(body["pod"].as_str().unwrap()), "{body}");
    assert_eq!(body["path"], "/api/tls");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    assert_eq!(body["headers"]["x-forwarded-host"], "shop.test", "{body}");

    // `check` proves the Ingress row along with the rest.
    let report = c.check();
    let rows: Vec<&Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"] == "4 external-to-service, Ingress")
        .collect();
    assert_eq!(rows.len(), 3, "one row per rule path: {rows:?}");

    // A route change is applied without a restart.
    let changed = c.manifest(
        "changed.yaml",
        &APP[APP.find("apiVersion: networking.k8s.io/v1").unwrap()..]
            .replace("path: /api,", "path: /v2,"),
    );
    c.ok(&["apply", "-f", changed.to_str().unwrap()]);
    let began = Instant::now();
    loop {
        let v = http(&c, &lb, "shop.test", "/v2/x");
        if v["server"]["pod"].as_str().is_some_and(|p| api.contains(p)) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "new route never answered: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pod = served(&http(&c, &lb, "shop.test", "/api/x"));
    assert!(web.contains(&pod), "/api now falls to / (web), got {pod}");
}
