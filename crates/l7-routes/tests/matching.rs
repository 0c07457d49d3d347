//! The matching cases of `fixtures/matching-cases.yaml` on the objects of
//! `fixtures/matching.yaml`, and what the table says about those objects.

use flatnet_l7_routes::{
    host, path, Balance, HostMatch, IngressChange, Inputs, Lookup, Route, Table, UpstreamProtocol,
    DEFAULT_CLASS_ANNOTATION,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

const OBJECTS: &str = include_str!("fixtures/matching.yaml");
const CASES: &str = include_str!("fixtures/matching-cases.yaml");

#[derive(Default)]
struct Objects {
    ingresses: Vec<Ingress>,
    classes: Vec<IngressClass>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    secrets: Vec<Secret>,
}

impl Objects {
    fn load() -> Objects {
        let mut objects = Objects::default();
        for document in serde_yaml_ng::Deserializer::from_str(OBJECTS) {
            let value = serde_yaml_ng::Value::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "Ingress" => objects.ingresses.push(typed(value)),
                "IngressClass" => objects.classes.push(typed(value)),
                "Service" => objects.services.push(typed(value)),
                "EndpointSlice" => objects.slices.push(typed(value)),
                "Secret" => objects.secrets.push(typed(value)),
                other => panic!("unexpected kind {other} in matching.yaml"),
            }
        }
        objects
    }

    fn without(mut self, ingresses: &[String]) -> Objects {
        self.ingresses.retain(|ingress| {
            let meta = &ingress.metadata;
            let id = format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap(),
                meta.name.as_deref().unwrap()
            );
            !ingresses.contains(&id)
        });
        self
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            ingresses: &self.ingresses,
            classes: &self.classes,
            services: &self.services,
            slices: &self.slices,
            secrets: &self.secrets,
        }
    }

    fn table(&self) -> Table {
        Table::build(&self.inputs())
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value) -> T {
    serde_yaml_ng::from_value(value).unwrap()
}

#[derive(Deserialize)]
struct Cases {
    scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    without: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize, Debug)]
struct Case {
    host: String,
    path: String,
    route: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    redirect: bool,
}

/// What the table answers for a case, in the case's terms.
fn answer(table: &Table, case: &Case) -> (Option<String>, Option<u16>, bool) {
    let (Some(host), Ok(path)) = (host::normalise(&case.host), path::normalise(&case.path)) else {
        return (None, Some(400), false);
    };
    match table.lookup(&host, &path) {
        Lookup::NotFound => (None, Some(404), false),
        Lookup::Route(route) => {
            let status = route.backend.endpoints.is_empty().then_some(503);
            let redirect = table.redirects_to_https(&host, route);
            (Some(route.id.to_string()), status, redirect)
        }
    }
}

#[test]
fn every_case_of_the_fixture_matches() {
    let cases: Cases = serde_yaml_ng::from_str(CASES).unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for scenario in &cases.scenarios {
        let table = Objects::load().without(&scenario.without).table();
        for case in &scenario.cases {
            count += 1;
            let expected = (case.route.clone(), case.status, case.redirect);
            let got = answer(&table, case);
            if got != expected {
                failures.push(format!("{}: {case:?}: got {got:?}", scenario.name));
            }
        }
    }
    assert!(count > 50, "only {count} cases");
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn warnings_name_what_was_left_out() {
    let table = Objects::load().table();
    let warnings = table.warnings().join("\n");
    let expected = [
        "Ingress default/a-later: spec.rules[0].http.paths[0]: ignored, the same host, path and type is default/web:foo.com/api(Prefix)",
        "Ingress default/bad-annotations: metadata.annotations[flatnet.dev/retries]: \"9\" is not a whole number from 0 to 5",
        "Ingress default/bad-annotations: metadata.annotations[flatnet.dev/no-such-option]: unknown annotation",
        "Ingress default/resource: spec.rules[0].http.paths[0].backend.resource: resource backends are not supported",
        "Ingress default/a-fallback-later: spec.defaultBackend: ignored, the default backend is default/fallback:default-backend already",
        "Ingress default/web: spec.tls[1].secretName: secret default/missing-tls not found",
        "Ingress default/a-later: spec.tls[0].hosts[1]: foo.com already has a certificate",
    ];
    for warning in expected {
        assert!(
            warnings.contains(warning),
            "missing {warning:?} in\n{warnings}"
        );
    }
    assert_eq!(table.warnings().len(), expected.len(), "{warnings}");
    assert!(
        !warnings.contains("foreign"),
        "other classes are ignored silently"
    );
}

fn route<'a>(table: &'a Table, host: &str, path: &str) -> &'a Route {
    match table.lookup(host, path) {
        Lookup::Route(route) => route,
        Lookup::NotFound => panic!("no route for {host}{path}"),
    }
}

#[test]
fn backends_resolve_ports_and_endpoints() {
    let table = Objects::load().table();
    let by_name = route(&table, "foo.com", "/api").backend.clone();
    assert_eq!(&*by_name.key, "default/api:http");
    assert_eq!(
        by_name.endpoints,
        ["10.42.0.20:8080".parse().unwrap()],
        "ready only"
    );
    assert_eq!(by_name.protocol, UpstreamProtocol::Http1);
    let by_number = &route(&table, "foo.com", "/api/v1/users").backend;
    assert_eq!(&*by_number.key, "default/api:80");
    assert_eq!(by_number.endpoints, by_name.endpoints);

    let web = &route(&table, "foo.com", "/static").backend;
    let sorted = [
        "10.42.0.10:8080".parse().unwrap(),
        "10.42.1.10:8080".parse().unwrap(),
    ];
    assert_eq!(
        web.endpoints, sorted,
        "ready when the condition is unset; sorted"
    );
    let shared = &route(&table, "x.foo.com", "/").backend;
    assert!(
        Arc::ptr_eq(web, shared),
        "one backend per namespace/service:port"
    );

    let grpc = &route(&table, "foo.com", "/grpc").backend;
    assert_eq!(grpc.protocol, UpstreamProtocol::H2c);
    assert_eq!(grpc.endpoints, ["10.42.0.20:9090".parse().unwrap()]);

    let draining = &route(&table, "foo.com", "/drain").backend;
    assert_eq!(draining.endpoints, ["10.42.2.30:8080".parse().unwrap()]);
    assert_eq!(draining.problem, None);

    let ghost = &route(&table, "foo.com", "/ghost").backend;
    assert!(ghost.endpoints.is_empty());
    assert_eq!(
        ghost.problem.as_deref(),
        Some("service default/ghost not found")
    );
    let no_port = &route(&table, "foo.com", "/noport").backend;
    assert_eq!(
        no_port.problem.as_deref(),
        Some("service default/web has no port 81")
    );
}

#[test]
fn certificates_first_claim_wins() {
    let table = Objects::load().table();
    let summary: Vec<(&str, &[HostMatch])> = table
        .certificates()
        .iter()
        .map(|c| (c.secret.as_str(), c.hosts.as_slice()))
        .collect();
    let foo = [
        HostMatch::Exact("foo.com".into()),
        HostMatch::Wildcard("foo.com".into()),
    ];
    let bar = [HostMatch::Exact("bar.com".into())];
    assert_eq!(
        summary,
        [("default/foo-tls", &foo[..]), ("default/bar-tls", &bar[..])]
    );
    assert!(table.certificates()[0]
        .cert_pem
        .starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert!(table.certificates()[0]
        .key_pem
        .starts_with(b"-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn options_come_from_the_annotations() {
    let table = Objects::load().table();
    let options = &route(&table, "foo.com", "/api").options;
    assert_eq!(options.balance, Balance::HashHeader("x-user".into()));
    assert!(options.ssl_redirect);
    assert_eq!(options.connect_timeout, Duration::from_millis(500));
    assert_eq!(options.request_timeout, Duration::from_secs(120));
    assert_eq!(options.retries, 0);
    assert_eq!(*route(&table, "bar.com", "/").options, Default::default());
}

#[test]
fn without_a_default_class_ingresses_without_class_are_not_ours() {
    let mut objects = Objects::load();
    for class in &mut objects.classes {
        class
            .metadata
            .annotations
            .as_mut()
            .map(|a| a.remove(DEFAULT_CLASS_ANNOTATION));
    }
    let table = objects.table();
    assert_eq!(
        route(&table, "baz.com", "/").id.as_ref(),
        "default/fallback:default-backend"
    );
    assert!(table
        .routes()
        .iter()
        .all(|r| !r.id.starts_with("default/anyhost:")));
}

#[test]
fn routes_are_listed_in_precedence_order() {
    let table = Objects::load().table();
    let ids: Vec<&str> = table.routes().iter().map(|r| r.id.as_ref()).collect();
    let position = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    assert_eq!(ids[0], "default/a-later:bar.com/deep/er(Prefix)");
    assert!(
        position("default/web:foo.com/same(Exact)") < position("default/web:foo.com/same(Prefix)")
    );
    assert!(
        position("default/web:foo.com/api(Prefix)") < position("default/web:*.foo.com/(Prefix)")
    );
    assert!(position("default/web:*.foo.com/(Prefix)") < position("default/anyhost:*/(Prefix)"));
    assert_eq!(ids.last(), Some(&"default/fallback:default-backend"));
}

#[test]
fn backends_are_those_of_the_routes() {
    let table = Objects::load().table();
    let keys = |it: &mut dyn Iterator<Item = &str>| {
        let mut keys: Vec<String> = it.map(str::to_string).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let of_routes = keys(&mut table.routes().into_iter().map(|r| r.backend.key.as_ref()));
    let of_backends = keys(&mut table.backends().iter().map(|b| b.key.as_ref()));
    assert!(of_routes.len() > 2, "{of_routes:?}");
    assert_eq!(table.backends().len(), of_backends.len(), "each once");
    assert_eq!(of_backends, of_routes);
}

/// What a table says, in comparable terms: its routes with their backends, its warnings,
/// its backends and its answer to every fixture case.
fn says(table: &Table) -> impl PartialEq + std::fmt::Debug {
    let routes: Vec<_> = table
        .routes()
        .iter()
        .map(|r| {
            let backend = &r.backend;
            let endpoints = (&backend.endpoints, &backend.problem, backend.protocol);
            (
                r.id.to_string(),
                backend.key.to_string(),
                format!("{endpoints:?}"),
            )
        })
        .collect();
    let warnings: Vec<String> = table.warnings().into_iter().map(str::to_owned).collect();
    let mut backends: Vec<String> = table.backends().iter().map(|b| b.key.to_string()).collect();
    backends.sort();
    let cases: Cases = serde_yaml_ng::from_str(CASES).unwrap();
    let answers: Vec<_> = cases.scenarios[0]
        .cases
        .iter()
        .map(|c| answer(table, c))
        .collect();
    (routes, warnings, backends, answers)
}

/// `ingress` with `edit` applied to its JSON form.
fn edited(ingress: &Ingress, edit: impl FnOnce(&mut serde_json::Value)) -> Ingress {
    let mut value = serde_json::to_value(ingress).unwrap();
    edit(&mut value);
    serde_json::from_value(value).unwrap()
}

fn ingress(name: &str, created: &str, rule: serde_json::Value) -> Ingress {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": "default", "creationTimestamp": created },
        "spec": { "ingressClassName": "flatnet", "rules": [rule] },
    }))
    .unwrap()
}

#[test]
fn an_update_makes_the_table_a_build_makes() {
    use serde_json::json;
    let base = Objects::load();
    let table = base.table();
    let path = |path: &str, service: &str| {
        json!({ "path": path, "pathType": "Prefix",
                "backend": { "service": { "name": service, "port": { "number": 80 } } } })
    };
    let early = ingress(
        "early",
        "2023-01-01T00:00:00Z",
        json!({ "host": "foo.com", "http": { "paths": [path("/api", "api")] } }),
    );
    let early_any = ingress(
        "early-any",
        "2023-01-01T00:00:00Z",
        json!({ "http": { "paths": [path("/anyonly", "web"), path("/new", "solo")] } }),
    );
    type Edit = Box<dyn Fn(&Ingress) -> Option<Ingress>>;
    let on = |name: &'static str, edit: fn(&mut serde_json::Value)| -> Edit {
        Box::new(
            move |i: &Ingress| match i.metadata.name.as_deref() == Some(name) {
                true => Some(edited(i, edit)),
                false => Some(i.clone()),
            },
        )
    };
    // Each change: what becomes of each Ingress (None: removed), the Ingresses added.
    let changes: Vec<(&str, Edit, Vec<Ingress>)> = vec![
        (
            "a new Ingress wins a host's path",
            Box::new(|i| Some(i.clone())),
            vec![early],
        ),
        (
            "a new Ingress wins a path of every host",
            Box::new(|i| Some(i.clone())),
            vec![early_any],
        ),
        (
            "an Ingress removed",
            Box::new(|i| (i.metadata.name.as_deref() != Some("legacy")).then(|| i.clone())),
            vec![],
        ),
        (
            "a host renamed",
            on("resource", |v| {
                v["spec"]["rules"][0]["host"] = json!("res2.com")
            }),
            vec![],
        ),
        (
            "ours no more",
            on("anyhost", |v| {
                v["spec"]["ingressClassName"] = json!("other")
            }),
            vec![],
        ),
        (
            "ours now",
            on("foreign", |v| {
                v["spec"]["ingressClassName"] = json!("flatnet")
            }),
            vec![],
        ),
        (
            "annotations fixed",
            on("bad-annotations", |v| {
                v["metadata"]["annotations"] = json!({})
            }),
            vec![],
        ),
        (
            "annotations broken",
            on("resource", |v| {
                v["metadata"]["annotations"] = json!({ "flatnet.dev/retries": "9" })
            }),
            vec![],
        ),
        (
            "a backend changed",
            on("anyhost", |v| {
                v["spec"]["rules"][0]["http"]["paths"][1]["backend"]["service"]["name"] =
                    json!("ghost")
            }),
            vec![],
        ),
    ];
    for (what, edit, added) in changes {
        let mut objects = Objects::load();
        objects.ingresses = base.ingresses.iter().filter_map(&edit).collect();
        objects.ingresses.extend(added);
        let missing_in = |from: &[Ingress], other: &[Ingress]| -> Vec<Ingress> {
            let missing = from.iter().filter(|i| !other.contains(i));
            missing.cloned().collect()
        };
        let before = missing_in(&base.ingresses, &objects.ingresses);
        let after = missing_in(&objects.ingresses, &base.ingresses);
        assert!(!before.is_empty() || !after.is_empty(), "{what}: no change");
        let inputs = objects.inputs();
        let change = IngressChange {
            before: &before,
            after: &after,
        };
        let updated = table
            .update(&inputs, &change)
            .unwrap_or_else(|| panic!("{what}: no update"));
        let built = objects.table();
        assert_ne!(
            says(&built),
            says(&table),
            "{what}: the change changes nothing"
        );
        assert_eq!(says(&updated), says(&built), "{what}");
        let undo = IngressChange {
            before: &after,
            after: &before,
        };
        let undone = updated.update(&base.inputs(), &undo).unwrap();
        assert_eq!(says(&undone), says(&table), "{what}, undone");
    }
}

#[test]
fn changes_an_update_cannot_make_are_refused() {
    let base = Objects::load();
    let table = base.table();
    let named = |name: &str| {
        base.ingresses
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
    };
    let web = named("web").unwrap();
    let fallback = named("fallback").unwrap();
    let legacy = named("legacy").unwrap();
    let moved = |i: &Ingress| edited(i, |v| v["spec"]["rules"] = serde_json::json!([]));
    // TLS, a default backend, a name held twice (the unchanged twin's warnings are unknown).
    for (before, after, twice) in [
        (web.clone(), moved(web), false),
        (fallback.clone(), moved(fallback), false),
        (legacy.clone(), moved(legacy), true),
    ] {
        let mut objects = Objects::load();
        objects.ingresses.retain(|i| *i != before);
        objects.ingresses.push(after.clone());
        if twice {
            objects.ingresses.push(before.clone());
        }
        let change = IngressChange {
            before: &[before],
            after: &[after],
        };
        assert!(table.update(&objects.inputs(), &change).is_none());
    }
}
