//! flatnet-l7-routes' matching cases end to end: its fixture objects are loaded with
//! `manifests`, every EndpointSlice is pointed at a test backend, and each case's request is
//! sent to the proxy (plain HTTP, and TLS where the case redirects); the debug header
//! `x-flatnet-route` names the route that answered.

mod common;

use common::*;
use flatnet_l7::manifests::Objects;
use std::sync::Arc;

const OBJECTS: &str = include_str!("../../l7-routes/tests/fixtures/matching.yaml");
const CASES: &str = include_str!("../../l7-routes/tests/fixtures/matching-cases.yaml");

/// One case of the fixture, read from its YAML value.
#[derive(Debug)]
struct Case {
    host: String,
    path: String,
    route: Option<String>,
    status: Option<u16>,
    redirect: bool,
}

fn case(v: &serde_yaml_ng::Value) -> Case {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Case {
        host: text("host").unwrap(),
        path: text("path").unwrap(),
        route: text("route"),
        status: v.get("status").and_then(|s| s.as_u64()).map(|s| s as u16),
        redirect: v.get("redirect").and_then(|r| r.as_bool()).unwrap_or(false),
    }
}

/// Status and `x-flatnet-route` of a raw HTTP/1.1 answer.
fn parse(answer: &str) -> (u16, Option<String>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(answer.as_bytes()).unwrap();
    let route = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-flatnet-route"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    (resp.code.unwrap(), route)
}

/// The answer to `request` over TLS with the case's host as SNI (any certificate accepted:
/// the fixture's are placeholders, so the proxy's default one is served).
async fn tls_get(addr: std::net::SocketAddr, host: &str, request: &str) -> String {
    let sni = host.split(':').next().unwrap().trim_end_matches('.');
    let s = connect(addr, sni, &rustls::version::TLS13, &[b"http/1.1"]).await;
    raw_on(s, request.as_bytes()).await.unwrap()
}

#[tokio::test]
async fn the_route_table_cases_through_the_proxy() {
    let web = backend("any").await;
    let mut objects = Objects::default();
    objects.parse(OBJECTS, "matching.yaml").unwrap();
    for slice in &mut objects.slices {
        for endpoint in &mut slice.endpoints {
            endpoint.addresses = vec![web.addr.ip().to_string()];
        }
        for port in slice.ports.iter_mut().flatten() {
            port.port = Some(i32::from(web.addr.port()));
        }
    }
    let cases: serde_yaml_ng::Value = serde_yaml_ng::from_str(CASES).unwrap();
    let p = proxy(&[]).await;
    let mut checked = 0;
    for scenario in cases["scenarios"].as_sequence().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let without: Vec<&str> = scenario["without"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .collect();
        let mut objects = objects.clone();
        objects.ingresses.retain(|i| {
            let id = format!(
                "{}/{}",
                i.metadata.namespace.as_deref().unwrap_or("default"),
                i.metadata.name.as_deref().unwrap_or("")
            );
            !without.contains(&id.as_str())
        });
        p.tables.send_replace(Arc::new(objects.table()));
        for case in scenario["cases"].as_sequence().unwrap().iter().map(case) {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                case.path, case.host
            );
            let answer = raw(p.http, request.as_bytes()).await.unwrap();
            let (status, route) = parse(&answer);
            let want = match (case.redirect, case.status) {
                (true, _) => 308,
                (false, Some(s)) => s,
                (false, None) => 200,
            };
            let what = format!("{name}: {case:?} -> {answer}");
            assert_eq!(status, want, "{what}");
            assert_eq!(route, case.route, "{what}");
            if case.redirect {
                let answer = tls_get(p.https, &case.host, &request).await;
                let (status, route) = parse(&answer);
                assert_eq!(status, case.status.unwrap_or(200), "TLS {what}");
                assert_eq!(route, case.route, "TLS {what}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} cases");
}
