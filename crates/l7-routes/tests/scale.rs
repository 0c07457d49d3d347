//! A table of 10,000 hosts: built and looked up correctly (correctness, not time).

use flatnet_l7_routes::{Inputs, Lookup, Table};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::json;

const HOSTS: usize = 10_000;

fn ingress(i: usize) -> Ingress {
    let backend =
        |service: &str| json!({ "service": { "name": service, "port": { "number": 80 } } });
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": format!("site{i}"), "namespace": format!("ns{}", i % 100) },
        "spec": {
            "ingressClassName": "flatnet",
            "rules": [
                { "host": format!("site{i}.example.com"), "http": { "paths": [
                    { "path": "/", "pathType": "Prefix", "backend": backend("web") },
                    { "path": "/api", "pathType": "Prefix", "backend": backend("api") },
                    { "path": "/api/health", "pathType": "Exact", "backend": backend("health") },
                ] } },
                { "host": format!("*.site{i}.example.org"), "http": { "paths": [
                    { "path": "/", "pathType": "Prefix", "backend": backend("web") },
                ] } },
            ],
        },
    }))
    .unwrap()
}

#[test]
fn ten_thousand_hosts() {
    let class: IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": { "name": "flatnet" },
        "spec": { "controller": flatnet_l7_routes::CONTROLLER },
    }))
    .unwrap();
    let ingresses: Vec<Ingress> = (0..HOSTS).map(ingress).collect();
    let classes = [class];
    let table = Table::build(&Inputs {
        ingresses: &ingresses,
        classes: &classes,
        ..Inputs::default()
    });
    assert!(table.warnings().is_empty(), "{:?}", &table.warnings()[..3]);
    assert_eq!(table.routes().len(), HOSTS * 4);
    let id = |host: &str, path: &str| match table.lookup(host, path) {
        Lookup::Route(route) => route.id.to_string(),
        Lookup::NotFound => "404".to_owned(),
    };
    for i in (0..HOSTS).step_by(7) {
        let (ns, host) = (format!("ns{}", i % 100), format!("site{i}.example.com"));
        assert_eq!(id(&host, "/x"), format!("{ns}/site{i}:{host}/(Prefix)"));
        assert_eq!(
            id(&host, "/api/v1"),
            format!("{ns}/site{i}:{host}/api(Prefix)")
        );
        assert_eq!(
            id(&host, "/api/health"),
            format!("{ns}/site{i}:{host}/api/health(Exact)")
        );
        let wildcard = format!("{ns}/site{i}:*.site{i}.example.org/(Prefix)");
        assert_eq!(id(&format!("www.site{i}.example.org"), "/"), wildcard);
        assert_eq!(id(&format!("site{i}.example.org"), "/"), "404");
        assert_eq!(id(&format!("a.b.site{i}.example.org"), "/"), "404");
    }
    assert_eq!(id("unknown.example.com", "/"), "404");
}
