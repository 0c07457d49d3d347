//! The EndpointSlice controller as a pure function: Services' selectors over pods and the
//! addresses and readiness their nodes report.

use crate::services::{is_headless, service_type};
use flatnet_model::state::{NodeStatus, PodState, State};
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// flatnet's controller name in that label.
pub const MANAGER: &str = "flatnet.dev/controller";

/// Whether `pod` carries every label of `selector` (an empty selector selects nothing).
pub fn selects(selector: &BTreeMap<String, String>, pod: &PodState) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// The pod's port for a Service port: a number as is, a name looked up among the pod's
/// declared ports of the same protocol.
pub fn resolve_target_port(sp: &ServicePort, pod: &PodState) -> Option<u16> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => u16::try_from(sp.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == proto)
            .map(|p| p.port),
    }
}

/// A pod as the nodes see it.
struct Seen<'a> {
    pod: &'a PodState,
    ips: Vec<IpAddr>,
    ready: bool,
}

fn seen<'a>(state: &'a State, statuses: &BTreeMap<String, NodeStatus>) -> Vec<Seen<'a>> {
    state
        .pods
        .iter()
        .filter_map(|p| {
            let st = statuses.get(&p.node)?.pods.get(&p.key())?;
            (st.uid == p.uid && !st.ips.is_empty()).then(|| Seen {
                pod: p,
                ips: st.ips.clone(),
                ready: st.phase == "Running",
            })
        })
        .collect()
}

/// A short fingerprint of a set of slices, to tell whether a node programmed these.
pub fn fingerprint(slices: &[EndpointSlice]) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_vec(slices).expect("serialisable");
    Sha256::digest(&text)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The slices of `state` given its nodes' statuses as files in `dir` hold them.
pub fn slices_from(dir: &flatnet_model::ClusterDir, state: &State) -> Vec<EndpointSlice> {
    let statuses = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), dir.read_node_status(&n.name)))
        .collect();
    slices(state, &statuses)
}

/// EndpointSlices of every Service with a selector: one per address family and set of
/// resolved ports, named `<service>-<ipv4|ipv6>[-<n>]`.
pub fn slices(state: &State, statuses: &BTreeMap<String, NodeStatus>) -> Vec<EndpointSlice> {
    let pods = seen(state, statuses);
    let mut out = Vec::new();
    for svc in &state.services {
        out.extend(service_slices(svc, &pods, state));
    }
    out
}

fn service_slices(svc: &Service, pods: &[Seen], state: &State) -> Vec<EndpointSlice> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if service_type(spec) == "ExternalName" {
        return Vec::new();
    }
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let families: Vec<bool> = match &spec.ip_families {
        Some(f) if !f.is_empty() => f.iter().map(|x| x == "IPv4").collect(),
        _ => state
            .config
            .service_cidrs
            .iter()
            .map(|c| c.addr().is_ipv4())
            .collect(),
    };
    let sports = spec.ports.clone().unwrap_or_default();
    let mut out = Vec::new();
    for v4 in families {
        // Group endpoints by the ports they resolve to.
        let mut groups: BTreeMap<Vec<Option<u16>>, Vec<Endpoint>> = BTreeMap::new();
        for s in pods
            .iter()
            .filter(|s| s.pod.namespace == ns && selects(selector, s.pod))
        {
            let Some(ip) = s.ips.iter().find(|ip| ip.is_ipv4() == v4) else {
                continue;
            };
            let resolved: Vec<Option<u16>> = sports
                .iter()
                .map(|sp| resolve_target_port(sp, s.pod))
                .collect();
            // A terminating pod still serves, but is not ready: new connections go elsewhere.
            let ready = (s.ready || publish_not_ready) && !s.pod.terminating;
            groups.entry(resolved).or_default().push(Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(s.ready),
                    terminating: Some(s.pod.terminating),
                }),
                node_name: Some(s.pod.node.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(ns.clone()),
                    name: Some(s.pod.name.clone()),
                    uid: Some(s.pod.uid.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let fam = if v4 { "ipv4" } else { "ipv6" };
        if groups.is_empty() {
            groups.insert(sports.iter().map(|_| None).collect(), Vec::new());
        }
        for (i, (resolved, endpoints)) in groups.into_iter().enumerate() {
            let slice_name = if i == 0 {
                format!("{name}-{fam}")
            } else {
                format!("{name}-{fam}-{i}")
            };
            let ports = sports
                .iter()
                .zip(&resolved)
                .filter(|(_, r)| r.is_some() || is_headless(spec))
                .map(|(sp, r)| EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: r.map(i32::from),
                    protocol: sp.protocol.clone(),
                    app_protocol: sp.app_protocol.clone(),
                })
                .collect();
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([
                        (SERVICE_NAME_LABEL.to_string(), name.clone()),
                        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                    ])),
                    ..Default::default()
                },
                address_type: if v4 { "IPv4" } else { "IPv6" }.into(),
                endpoints,
                ports: Some(ports),
            });
        }
    }
    out
}

/// Slices by their Service's `(namespace, name)`.
pub fn by_service(slices: &[EndpointSlice]) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut out: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        if let (Some(ns), Some(name)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) {
            out.entry((ns, name.as_str())).or_default().push(s);
        }
    }
    out
}

/// The slices of Service `namespace/name`.
pub fn of_service<'a>(
    slices: &'a [EndpointSlice],
    namespace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a EndpointSlice> {
    slices.iter().filter(move |s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
    })
}
