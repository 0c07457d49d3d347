//! `flatnet get`: objects as tables, or as Kubernetes-shaped YAML / JSON.

use crate::Output;
use anyhow::{bail, Result};
use flatnet_controller::endpoints::of_service;
use flatnet_controller::services::load_balancer_ips;
use flatnet_lab::target::pod_ips;
use flatnet_model::state::{ClusterDir, State};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use std::fmt::Write;

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        writeln!(s, "{}", line.join("   ").trim_end()).unwrap();
    }
    s
}

fn pods(dir: &ClusterDir, state: &State, ns: Option<&str>) -> Vec<Pod> {
    state
        .pods
        .iter()
        .filter(|p| ns.is_none_or(|n| n == p.namespace))
        .map(|p| {
            let st = dir
                .read_node_status(&p.node)
                .pods
                .get(&p.key())
                .filter(|s| s.uid == p.uid)
                .cloned();
            let ips = pod_ips(dir, state, &p.namespace, &p.name);
            Pod {
                metadata: ObjectMeta {
                    name: Some(p.name.clone()),
                    namespace: Some(p.namespace.clone()),
                    uid: Some(p.uid.clone()),
                    labels: Some(p.labels.clone()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    node_name: Some(p.node.clone()),
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some(st.map(|s| s.phase).unwrap_or_else(|| "Pending".into())),
                    host_ip: state.node(&p.node).map(|n| n.ip.to_string()),
                    pod_ip: ips.first().map(|i| i.to_string()),
                    pod_ips: Some(ips.iter().map(|i| PodIP { ip: i.to_string() }).collect()),
                    ..Default::default()
                }),
            }
        })
        .collect()
}

fn nodes(state: &State) -> Vec<Node> {
    state
        .nodes
        .iter()
        .map(|n| Node {
            metadata: ObjectMeta {
                name: Some(n.name.clone()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: n.pod_cidrs.first().map(|c| c.to_string()),
                pod_cidrs: Some(n.pod_cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: n.ip.to_string(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: n.name.clone(),
                    },
                ]),
                ..Default::default()
            }),
        })
        .collect()
}

/// The cluster's EndpointSlices, from the pods' addresses its nodes report.
pub fn slices(
    dir: &ClusterDir,
    state: &State,
) -> Vec<k8s_openapi::api::discovery::v1::EndpointSlice> {
    let statuses = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), dir.read_node_status(&n.name)))
        .collect();
    flatnet_controller::endpoints::slices(state, &statuses)
}

/// The nftables program node `node` runs for Service `namespace/name` (with the shared
/// dispatch chains).
pub fn program(
    dir: &ClusterDir,
    state: &State,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<String> {
    let svc: Vec<_> = state
        .services
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
        .cloned()
        .collect();
    if svc.is_empty() {
        bail!("no Service {namespace}/{name}");
    }
    if state.node(node).is_none() {
        bail!("no node {node:?}");
    }
    Ok(flatnet_proxy::program(
        &state.config,
        &svc,
        &slices(dir, state),
        node,
    ))
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn with_kind<T: serde::Serialize>(api: &str, kind: &str, o: &T) -> Value {
    let mut v = serde_json::to_value(o).expect("serialisable");
    v["apiVersion"] = json!(api);
    v["kind"] = json!(kind);
    v
}

/// Renders `kind` in the chosen format.
pub fn render(
    dir: &ClusterDir,
    state: &State,
    kind: &str,
    ns: Option<&str>,
    out: Option<Output>,
) -> Result<String> {
    let (objects, rows): (Vec<Value>, Vec<Vec<String>>) = match kind {
        "nodes" | "node" | "no" => {
            let ns_list = nodes(state);
            let status = |name: &str| {
                let s = dir.read_node_status(name);
                if s.network_ready { "Ready" } else { "NotReady" }.to_string()
            };
            let mut rows = vec![vec!["NAME".into(), "STATUS".into(), "INTERNAL-IP".into()]];
            if out == Some(Output::Wide) {
                rows[0].extend(["POD-CIDRS".into(), "BACKEND".into()]);
            }
            for n in &state.nodes {
                let mut r = vec![n.name.clone(), status(&n.name), n.ip.to_string()];
                if out == Some(Output::Wide) {
                    r.push(
                        n.pod_cidrs
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    r.push(state.config.backend.to_string());
                }
                rows.push(r);
            }
            (
                ns_list.iter().map(|n| with_kind("v1", "Node", n)).collect(),
                rows,
            )
        }
        "pods" | "pod" | "po" => {
            let ps = pods(dir, state, ns);
            let mut head = vec![];
            if ns.is_none() {
                head.push("NAMESPACE".to_string());
            }
            head.extend(["NAME".into(), "STATUS".into()]);
            if out == Some(Output::Wide) {
                head.extend(["IP".into(), "IPV6".into(), "NODE".into()]);
            }
            let mut rows = vec![head];
            for p in &ps {
                let st = p.status.clone().unwrap_or_default();
                let ips = st.pod_ips.unwrap_or_default();
                let mut r = vec![];
                if ns.is_none() {
                    r.push(p.metadata.namespace.clone().unwrap_or_default());
                }
                r.push(p.metadata.name.clone().unwrap_or_default());
                r.push(st.phase.unwrap_or_default());
                if out == Some(Output::Wide) {
                    let fam = |v6: bool| {
                        ips.iter()
                            .find(|i| i.ip.contains(':') == v6)
                            .map(|i| i.ip.clone())
                            .unwrap_or("<none>".into())
                    };
                    r.push(fam(false));
                    r.push(fam(true));
                    r.push(
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .unwrap_or_default(),
                    );
                }
                rows.push(r);
            }
            (ps.iter().map(|p| with_kind("v1", "Pod", p)).collect(), rows)
        }
        "namespaces" | "namespace" | "ns" => {
            let mut rows = vec![vec!["NAME".into()]];
            rows.extend(state.namespaces.iter().map(|n| vec![n.clone()]));
            let objs = state
                .namespaces
                .iter()
                .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
                .collect();
            (objs, rows)
        }
        "deployments" | "deployment" | "deploy" => {
            let ds: Vec<_> = state
                .deployments
                .iter()
                .filter(|d| ns.is_none_or(|n| d.metadata.namespace.as_deref() == Some(n)))
                .collect();
            let mut rows = vec![vec!["NAMESPACE".into(), "NAME".into(), "REPLICAS".into()]];
            for d in &ds {
                rows.push(vec![
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                    d.spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(1)
                        .to_string(),
                ]);
            }
            (
                ds.iter()
                    .map(|d| with_kind("apps/v1", "Deployment", d))
                    .collect(),
                rows,
            )
        }
        "services" | "service" | "svc" => {
            let slices = slices(dir, state);
            let svcs: Vec<_> = state
                .services
                .iter()
                .filter(|s| ns.is_none_or(|n| s.metadata.namespace.as_deref() == Some(n)))
                .collect();
            let mut head: Vec<String> = ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"].map(String::from).to_vec();
            if out == Some(Output::Wide) {
                head.push("ENDPOINTS".into());
            }
            let mut rows = vec![head];
            for s in &svcs {
                let spec = s.spec.clone().unwrap_or_default();
                let name = s.metadata.name.clone().unwrap_or_default();
                let namespace = s.metadata.namespace.clone().unwrap_or_default();
                let external: Vec<String> = load_balancer_ips(s)
                    .iter()
                    .map(|ip| ip.to_string())
                    .chain(spec.external_ips.clone().unwrap_or_default())
                    .chain(spec.external_name.clone())
                    .collect();
                let ports: Vec<String> = spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        let np = p.node_port.map(|n| format!(":{n}")).unwrap_or_default();
                        format!("{}{np}/{}", p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into()))
                    })
                    .collect();
                let mut r = vec![
                    namespace.clone(),
                    name.clone(),
                    spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
                    spec.cluster_ips.clone().map(|v| v.join(",")).or(spec.cluster_ip.clone()).unwrap_or_else(|| "<none>".into()),
                    if external.is_empty() { "<none>".into() } else { external.join(",") },
                    if ports.is_empty() { "<none>".into() } else { ports.join(",") },
                ];
                if out == Some(Output::Wide) {
                    let eps: Vec<String> = of_service(&slices, &namespace, &name)
                        .flat_map(|sl| sl.endpoints.iter())
                        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                        .flat_map(|e| e.addresses.clone())
                        .collect();
                    r.push(if eps.is_empty() { "<none>".into() } else { eps.join(",") });
                }
                rows.push(r);
            }
            (svcs.iter().map(|s| with_kind("v1", "Service", s)).collect(), rows)
        }
        "endpointslices" | "endpointslice" => {
            let all: Vec<_> = slices(dir, state)
                .into_iter()
                .filter(|s| ns.is_none_or(|n| s.metadata.namespace.as_deref() == Some(n)))
                .collect();
            let mut rows = vec![["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"].map(String::from).to_vec()];
            for sl in &all {
                let ports: Vec<String> = sl.ports.iter().flatten().filter_map(|p| p.port.map(|n| n.to_string())).collect();
                let eps: Vec<String> = sl
                    .endpoints
                    .iter()
                    .map(|e| {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                        format!("{}{}", e.addresses.join(","), if ready { "" } else { "(not ready)" })
                    })
                    .collect();
                rows.push(vec![
                    sl.metadata.namespace.clone().unwrap_or_default(),
                    sl.metadata.name.clone().unwrap_or_default(),
                    sl.address_type.clone(),
                    if ports.is_empty() { "<unset>".into() } else { ports.join(",") },
                    if eps.is_empty() { "<none>".into() } else { eps.join(",") },
                ]);
            }
            (all.iter().map(|s| with_kind("discovery.k8s.io/v1", "EndpointSlice", s)).collect(), rows)
        }
        "ingresses" | "ingress" | "ing" => {
            let all: Vec<_> = state
                .ingresses
                .iter()
                .filter(|i| ns.is_none_or(|n| i.metadata.namespace.as_deref() == Some(n)))
                .collect();
            let mut rows = vec![["NAMESPACE", "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS"].map(String::from).to_vec()];
            for i in &all {
                let spec = i.spec.clone().unwrap_or_default();
                let hosts: Vec<String> = spec.rules.iter().flatten().map(|r| r.host.clone().unwrap_or_else(|| "*".into())).collect();
                let address: Vec<String> = flatnet_controller::ingress_ips(i).iter().map(|ip| ip.to_string()).collect();
                rows.push(vec![
                    i.metadata.namespace.clone().unwrap_or_default(),
                    i.metadata.name.clone().unwrap_or_default(),
                    spec.ingress_class_name.clone().unwrap_or_else(|| "<none>".into()),
                    if hosts.is_empty() { "*".into() } else { hosts.join(",") },
                    address.join(","),
                    if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) { "80, 443".into() } else { "80".into() },
                ]);
            }
            (all.iter().map(|i| with_kind("networking.k8s.io/v1", "Ingress", i)).collect(), rows)
        }
        "ingressclasses" | "ingressclass" => {
            let mut rows = vec![["NAME", "CONTROLLER", "DEFAULT"].map(String::from).to_vec()];
            for c in &state.ingress_classes {
                let default = flatnet_l7_routes::is_default_class(c);
                rows.push(vec![
                    c.metadata.name.clone().unwrap_or_default(),
                    c.spec.as_ref().and_then(|s| s.controller.clone()).unwrap_or_default(),
                    default.to_string(),
                ]);
            }
            (state.ingress_classes.iter().map(|c| with_kind("networking.k8s.io/v1", "IngressClass", c)).collect(), rows)
        }
        other => bail!("unknown kind {other:?}: nodes, pods, namespaces, deployments, services, endpointslices, ingresses, ingressclasses"),
    };
    Ok(match out {
        Some(Output::Json) => serde_json::to_string_pretty(&list(objects))? + "\n",
        Some(Output::Yaml) => serde_yaml_ng::to_string(&list(objects))?,
        _ if rows.len() == 1 => "No resources found.\n".to_string(),
        _ => table(rows),
    })
}
