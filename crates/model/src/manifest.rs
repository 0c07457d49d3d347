//! Manifests: files or folders of multi-document YAML, read with the Kubernetes API types.

use crate::cluster::{ClusterSpec, API_VERSION};
use crate::validate::{is_dns_label, is_dns_subdomain, is_port_name, Checker, Invalid, Invalids};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// One Kubernetes object we understand.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// `v1/Namespace`.
    Namespace(Box<Namespace>),
    /// `v1/Pod`.
    Pod(Box<Pod>),
    /// `apps/v1/Deployment`.
    Deployment(Box<Deployment>),
    /// `v1/Service`.
    Service(Box<Service>),
    /// `networking.k8s.io/v1/Ingress`.
    Ingress(Box<Ingress>),
    /// `networking.k8s.io/v1/IngressClass` (cluster-scoped).
    IngressClass(Box<IngressClass>),
    /// `v1/Secret` (flatnet reads `kubernetes.io/tls` ones).
    Secret(Box<Secret>),
}

impl Object {
    /// The kind and metadata.
    pub fn meta(&self) -> (&'static str, &ObjectMeta) {
        match self {
            Object::Namespace(o) => ("Namespace", &o.metadata),
            Object::Pod(o) => ("Pod", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::Ingress(o) => ("Ingress", &o.metadata),
            Object::IngressClass(o) => ("IngressClass", &o.metadata),
            Object::Secret(o) => ("Secret", &o.metadata),
        }
    }

    /// Whether the kind is cluster-scoped (no namespace).
    pub fn cluster_scoped(&self) -> bool {
        matches!(self, Object::Namespace(_) | Object::IngressClass(_))
    }

    /// `Kind/name` or `Kind/namespace/name`, for messages.
    pub fn describe(&self) -> String {
        let (kind, meta) = self.meta();
        let name = meta.name.clone().unwrap_or_default();
        match (kind, &meta.namespace) {
            _ if self.cluster_scoped() => format!("{kind}/{name}"),
            (_, Some(ns)) => format!("{kind}/{ns}/{name}"),
            (_, None) => format!("{kind}/default/{name}"),
        }
    }
}

/// An object and the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    /// File path, or `<built-in>`.
    pub file: String,
    /// The object.
    pub value: T,
}

/// A `Cluster` document: its name and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterDoc {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: ClusterSpec,
}

/// Everything read from a set of manifests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    /// The `Cluster` document, if any (at most one).
    pub cluster: Option<Sourced<ClusterDoc>>,
    /// Kubernetes objects in reading order.
    pub objects: Vec<Sourced<Object>>,
}

/// A manifest could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Objects are invalid.
    #[error(transparent)]
    Invalid(#[from] Invalids),
}

fn invalid(file: &str, object: &str, field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        file: file.to_string(),
        object: object.to_string(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Reads manifest files and folders (`.yaml`, `.yml`, `.json` inside folders, sorted).
pub fn load_paths(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ManifestError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| ManifestError::Io {
                    path: p.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ManifestError::Io {
            path: f.clone(),
            source,
        })?;
        docs.push((f.display().to_string(), text));
    }
    parse_documents(&docs)
}

/// Parses `(file, text)` pairs of multi-document YAML.
pub fn parse_documents(docs: &[(String, String)]) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    let mut problems = Vec::new();
    for (file, text) in docs {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value: serde_json::Value = match serde::Deserialize::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(invalid(
                        file,
                        &format!("document {}", i + 1),
                        "",
                        format!("not valid YAML: {e}"),
                    ));
                    break;
                }
            };
            if value.is_null() {
                continue;
            }
            if let Err(e) = parse_one(file, i, value, &mut out) {
                problems.push(e);
            }
        }
    }
    for o in &out.objects {
        problems.extend(check_object(&o.file, &o.value));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Invalids(problems).into())
    }
}

fn typed<T: DeserializeOwned>(
    file: &str,
    object: &str,
    value: serde_json::Value,
) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        invalid(
            file,
            object,
            if path == "." { "" } else { &path },
            e.into_inner().to_string(),
        )
    })
}

fn parse_one(
    file: &str,
    index: usize,
    value: serde_json::Value,
    out: &mut Manifests,
) -> Result<(), Invalid> {
    let api = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let object = if name.is_empty() {
        format!("{kind}(document {})", index + 1)
    } else {
        format!("{kind}/{name}")
    };
    let object = object.as_str();
    match (api.as_str(), kind.as_str()) {
        (API_VERSION, "Cluster") => {
            if out.cluster.is_some() {
                return Err(invalid(file, object, "kind", "a second Cluster document; only one is allowed"));
            }
            let spec = match value.get("spec") {
                Some(s) => typed::<ClusterSpec>(file, object, s.clone()).map_err(|mut e| {
                    e.field = format!("spec.{}", e.field).trim_end_matches('.').to_string();
                    e
                })?,
                None => ClusterSpec::default(),
            };
            let name = if name.is_empty() { crate::cluster::DEFAULT_CLUSTER.to_string() } else { name };
            out.cluster = Some(Sourced { file: file.to_string(), value: ClusterDoc { name, spec } });
        }
        ("v1", "Namespace") => push(out, file, Object::Namespace(Box::new(typed(file, object, value)?))),
        ("v1", "Pod") => push(out, file, Object::Pod(Box::new(typed(file, object, value)?))),
        ("apps/v1", "Deployment") => push(out, file, Object::Deployment(Box::new(typed(file, object, value)?))),
        ("v1", "Service") => push(out, file, Object::Service(Box::new(typed(file, object, value)?))),
        ("v1", "Secret") => push(out, file, Object::Secret(Box::new(typed(file, object, value)?))),
        ("networking.k8s.io/v1", "Ingress") => push(out, file, Object::Ingress(Box::new(typed(file, object, value)?))),
        ("networking.k8s.io/v1", "IngressClass") => push(out, file, Object::IngressClass(Box::new(typed(file, object, value)?))),
        ("", _) => return Err(invalid(file, object, "apiVersion", "missing")),
        (_, "") => return Err(invalid(file, object, "kind", "missing")),
        _ => {
            return Err(invalid(
                file,
                object,
                "kind",
                format!("{api} {kind} is not supported (Namespace, Pod, Service, Secret, apps/v1 Deployment, networking.k8s.io/v1 Ingress and IngressClass, {API_VERSION} Cluster)"),
            ))
        }
    }
    Ok(())
}

fn push(out: &mut Manifests, file: &str, value: Object) {
    out.objects.push(Sourced {
        file: file.to_string(),
        value,
    });
}

/// Checks the fields flatnet relies on; returns every problem.
pub fn check_object(file: &str, object: &Object) -> Vec<Invalid> {
    let mut c = Checker::new(file, object.describe());
    let (_, meta) = object.meta();
    match meta.name.as_deref() {
        None | Some("") => c.fail("metadata.name", "missing"),
        Some(n) if matches!(object, Object::Namespace(_)) && !is_dns_label(n) => {
            c.fail("metadata.name", format!("{n:?} is not a DNS label"))
        }
        Some(n) if !is_dns_subdomain(n) => {
            c.fail("metadata.name", format!("{n:?} is not a DNS subdomain"))
        }
        _ => {}
    }
    if let Some(ns) = &meta.namespace {
        if !is_dns_label(ns) {
            c.fail("metadata.namespace", format!("{ns:?} is not a DNS label"));
        }
    }
    match object {
        Object::Pod(p) => match &p.spec {
            Some(spec) => check_pod_spec(&mut c, "spec", spec),
            None => c.fail("spec", "missing"),
        },
        Object::Deployment(d) => match &d.spec {
            None => c.fail("spec", "missing"),
            Some(spec) => {
                if spec.replicas.is_some_and(|r| r < 0) {
                    c.fail("spec.replicas", "must not be negative");
                }
                let labels = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                match &spec.selector.match_labels {
                    Some(sel) if !sel.is_empty() => {
                        for (k, v) in sel {
                            if labels.get(k) != Some(v) {
                                c.fail(
                                    "spec.selector.matchLabels",
                                    format!("{k}={v} does not match spec.template.metadata.labels"),
                                );
                            }
                        }
                    }
                    _ => c.fail("spec.selector.matchLabels", "a Deployment needs a selector"),
                }
                match &spec.template.spec {
                    Some(ps) => check_pod_spec(&mut c, "spec.template.spec", ps),
                    None => c.fail("spec.template.spec", "missing"),
                }
            }
        },
        Object::Ingress(i) => crate::ingress::check_ingress(&mut c, i),
        Object::IngressClass(i) => crate::ingress::check_class(&mut c, i),
        Object::Secret(s) => crate::ingress::check_secret(&mut c, s),
        Object::Namespace(_) | Object::Service(_) => {}
    }
    c.problems
}

fn check_pod_spec(c: &mut Checker, at: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        c.fail(
            format!("{at}.containers"),
            "a pod needs at least one container",
        );
    }
    let mut seen = Vec::new();
    for (i, ctr) in spec.containers.iter().enumerate() {
        for (j, port) in ctr.ports.iter().flatten().enumerate() {
            let f = format!("{at}.containers[{i}].ports[{j}]");
            if !(1..=65535).contains(&port.container_port) {
                c.fail(
                    format!("{f}.containerPort"),
                    format!("{} is not a port (1-65535)", port.container_port),
                );
            }
            let proto = port.protocol.as_deref().unwrap_or("TCP");
            if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                c.fail(
                    format!("{f}.protocol"),
                    format!("{proto:?} must be TCP, UDP or SCTP"),
                );
            }
            if seen.contains(&(proto, port.container_port)) {
                c.fail(
                    format!("{f}.containerPort"),
                    format!("{proto} {} is declared twice", port.container_port),
                );
            }
            seen.push((proto, port.container_port));
            if let Some(n) = &port.name {
                if !is_port_name(n) {
                    c.fail(
                        format!("{f}.name"),
                        format!("{n:?} is not an IANA service name"),
                    );
                }
            }
        }
    }
    if let Some(node) = &spec.node_name {
        if !is_dns_label(node) {
            c.fail(
                format!("{at}.nodeName"),
                format!("{node:?} is not a node name"),
            );
        }
    }
}

/// Reads manifests from `paths` or, when empty, the given built-in text.
pub fn load_or_builtin(paths: &[PathBuf], builtin: &str) -> Result<Manifests, ManifestError> {
    if paths.is_empty() {
        parse_documents(&[("<built-in demo>".to_string(), builtin.to_string())])
    } else {
        load_paths(paths)
    }
}

/// Whether `path` looks like a manifest file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|x| x.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifests, ManifestError> {
        parse_documents(&[("m.yaml".to_string(), text.to_string())])
    }

    const GOOD: &str = r#"
apiVersion: flatnet.dev/v1alpha1
kind: Cluster
metadata: {name: lab}
spec: {nodes: 2, backend: host-gw}
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec:
  containers:
  - name: c
    ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
"#;

    #[test]
    fn reads_all_kinds() {
        let m = parse(GOOD).unwrap();
        let c = m.cluster.unwrap();
        assert_eq!(c.value.name, "lab");
        assert_eq!(c.value.spec.backend, Some(crate::cluster::Backend::HostGw));
        let kinds: Vec<String> = m.objects.iter().map(|o| o.value.describe()).collect();
        assert_eq!(kinds, ["Namespace/x", "Pod/x/a", "Deployment/x/web"]);
    }

    #[test]
    fn unknown_cluster_field_names_the_field() {
        let e = parse("apiVersion: flatnet.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {nodez: 2}\n").unwrap_err();
        let t = e.to_string();
        assert!(t.starts_with("m.yaml: Cluster/a: spec"), "{t}");
        assert!(t.contains("nodez"), "{t}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let e = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{containerPort: eighty}]}]}\n").unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("m.yaml: Pod/a: spec.containers[0].ports[0].containerPort"),
            "{t}"
        );
    }

    #[test]
    fn bad_port_and_protocol_are_refused() {
        let e = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}, {containerPort: 80, protocol: ICMP}]}]}\n").unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains(
                "m.yaml: Pod/x/a: spec.containers[0].ports[0].containerPort: 70000 is not a port"
            ),
            "{t}"
        );
        assert!(t.contains("spec.containers[0].ports[1].protocol"), "{t}");
    }

    #[test]
    fn unsupported_kind_and_selector_mismatch() {
        let e = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("m.yaml: ConfigMap/a: kind: v1 ConfigMap is not supported"),
            "{e}"
        );
        let e = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {matchLabels: {app: x}}, template: {metadata: {labels: {app: y}}, spec: {containers: [{name: c}]}}}\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.selector.matchLabels: app=x does not match"),
            "{e}"
        );
    }

    #[test]
    fn bad_ingresses_name_every_field() {
        let e = parse(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i, namespace: x, annotations: {flatnet.dev/retries: "many", flatnet.dev/colour: blue}}
spec:
  rules:
  - host: "a.*.com"
    http:
      paths:
      - {path: api, pathType: Prefix, backend: {service: {name: web, port: {number: 0}}}}
      - {path: /x, pathType: Regex, backend: {service: {name: web, port: {name: http, number: 80}}}}
  tls: [{hosts: ["10.0.0.1"], secretName: cert}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: c}
spec: {}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
type: kubernetes.io/tls
stringData: {tls.crt: nope}
"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "m.yaml: Ingress/x/i: metadata.annotations[flatnet.dev/retries]",
            "m.yaml: Ingress/x/i: metadata.annotations[flatnet.dev/colour]",
            "m.yaml: Ingress/x/i: spec.rules[0].host: \"a.*.com\"",
            "spec.rules[0].http.paths[0].path: \"api\" must start with /",
            "spec.rules[0].http.paths[0].backend.service.port.number: 0 is not a port",
            "spec.rules[0].http.paths[1].pathType: \"Regex\"",
            "spec.rules[0].http.paths[1].backend.service.port: exactly one of number and name",
            "spec.tls[0].hosts[0]: \"10.0.0.1\" must be a DNS name",
            "m.yaml: IngressClass/c: spec.controller: missing",
            "m.yaml: Secret/default/s: data[tls.crt]: not PEM",
            "m.yaml: Secret/default/s: data[tls.key]: required",
        ] {
            assert!(e.contains(want), "{want:?} not in:\n{e}");
        }
    }

    #[test]
    fn bad_yaml_is_reported_with_its_file() {
        let e = parse("kind: [unclosed\n").unwrap_err();
        assert!(e.to_string().starts_with("m.yaml: document 1"), "{e}");
    }
}
