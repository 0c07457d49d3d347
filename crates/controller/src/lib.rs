//! The cluster-wide controller, as pure functions of the desired state: it gives nodes their
//! index, IP and Pod CIDRs (like kube-controller-manager's range allocator), turns Deployments
//! into pods (like the ReplicaSet controller) and places pods on nodes (like the scheduler).

pub mod endpoints;
pub mod services;

use flatnet_ipam::NodeCidrAllocator;
use flatnet_model::manifest::{Manifests, Object};
use flatnet_model::state::{node_ip, PodPort, PodState, State};
use flatnet_model::validate::{Invalid, Invalids};
use flatnet_model::{ClusterConfig, NodeState};
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{ByteString, Metadata};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Namespaces every cluster has.
pub const BUILTIN_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// A fresh state for a new cluster: nodes placed, no workloads.
pub fn new_state(config: ClusterConfig) -> State {
    let mut s = State {
        generation: 0,
        config,
        nodes: Vec::new(),
        namespaces: BUILTIN_NAMESPACES.iter().map(|s| s.to_string()).collect(),
        pods: Vec::new(),
        deployments: Vec::new(),
        services: Vec::new(),
        ingresses: Vec::new(),
        ingress_classes: Vec::new(),
        secrets: Vec::new(),
    };
    reconcile(&mut s);
    s
}

/// Replaces the cluster's node list (a `Cluster` document applied to a running cluster).
/// Only `spec.nodes` may change; anything else is refused.
pub fn change_config(state: &mut State, file: &str, new: ClusterConfig) -> Result<(), Invalids> {
    let old = &state.config;
    let same = ClusterConfig {
        nodes: old.nodes.clone(),
        ..new.clone()
    };
    if same != *old {
        return Err(Invalids(vec![Invalid {
            file: file.to_string(),
            object: format!("Cluster/{}", new.name),
            field: "spec".into(),
            reason: "only spec.nodes can change on a running cluster; run `flatnet down` to change the network".into(),
        }]));
    }
    state.config = new;
    reconcile(state);
    Ok(())
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Applies objects: creates or replaces them, then reconciles. Objects in unknown namespaces
/// are refused (nothing changes).
pub fn apply(state: &mut State, m: &Manifests) -> Result<(), Invalids> {
    let mut next = state.clone();
    let mut problems = Vec::new();
    // Cluster-scoped objects first: namespaced ones may refer to them.
    for o in &m.objects {
        match &o.value {
            Object::Namespace(ns) => {
                let n = ns.metadata.name.clone().unwrap_or_default();
                if !next.namespaces.contains(&n) {
                    next.namespaces.push(n);
                }
            }
            Object::IngressClass(c) => upsert(&mut next.ingress_classes, c.as_ref().clone()),
            _ => {}
        }
    }
    for o in &m.objects {
        if o.value.cluster_scoped() {
            continue;
        }
        let (ns, name) = name_of(o.value.meta().1);
        if !next.namespaces.contains(&ns) {
            problems.push(Invalid {
                file: o.file.clone(),
                object: o.value.describe(),
                field: "metadata.namespace".into(),
                reason: format!("namespace {ns:?} does not exist"),
            });
            continue;
        }
        match &o.value {
            Object::Pod(p) => {
                let spec = p.spec.clone().unwrap_or_default();
                if let Some(node) = &spec.node_name {
                    if !next.config.nodes.contains(node) {
                        problems.push(Invalid {
                            file: o.file.clone(),
                            object: o.value.describe(),
                            field: "spec.nodeName".into(),
                            reason: format!("node {node:?} is not in the cluster"),
                        });
                        continue;
                    }
                }
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let pod = pod_from_spec(&ns, &name, &spec, labels, None);
                match next
                    .pods
                    .iter_mut()
                    .find(|x| x.namespace == ns && x.name == name)
                {
                    Some(old) if same_pod(old, &pod) => {}
                    Some(old) => *old = pod,
                    None => next.pods.push(pod),
                }
            }
            Object::Deployment(d) => {
                let mut d = d.as_ref().clone();
                d.metadata.namespace = Some(ns.clone());
                upsert(&mut next.deployments, d);
            }
            Object::Ingress(i) => {
                let mut i = i.as_ref().clone();
                i.metadata.namespace = Some(ns.clone());
                i.status = None;
                default_class(&mut i, &next.ingress_classes);
                // Created once, as the API server stamps it: the route table's conflict
                // order is oldest first.
                let key = (ns.clone(), name.clone());
                i.metadata.creation_timestamp = next
                    .ingresses
                    .iter()
                    .find(|x| name_of(&x.metadata) == key)
                    .and_then(|x| x.metadata.creation_timestamp.clone())
                    .or(i.metadata.creation_timestamp)
                    .or_else(now);
                upsert(&mut next.ingresses, i);
            }
            Object::Secret(sec) => {
                let mut sec = sec.as_ref().clone();
                sec.metadata.namespace = Some(ns.clone());
                fold_string_data(&mut sec);
                upsert(&mut next.secrets, sec);
            }
            Object::Service(s) => {
                let key = (ns.clone(), name.clone());
                let old = next
                    .services
                    .iter()
                    .find(|x| name_of(&x.metadata) == key)
                    .cloned();
                match services::admit(&next, &o.file, s, old.as_ref()) {
                    Ok(admitted) => {
                        next.services.retain(|x| name_of(&x.metadata) != key);
                        next.services.push(admitted);
                    }
                    Err(p) => problems.extend(p),
                }
            }
            Object::Namespace(_) | Object::IngressClass(_) => unreachable!(),
        }
    }
    if !problems.is_empty() {
        return Err(Invalids(problems));
    }
    reconcile(&mut next);
    *state = next;
    Ok(())
}

/// Deletes the named objects (missing ones are fine), then reconciles. Deleting a namespace
/// deletes everything in it.
pub fn delete(state: &mut State, m: &Manifests) {
    for o in &m.objects {
        match &o.value {
            Object::Namespace(n) => {
                let n = n.metadata.name.clone().unwrap_or_default();
                if BUILTIN_NAMESPACES.contains(&n.as_str()) {
                    continue;
                }
                state.namespaces.retain(|x| *x != n);
                state.pods.retain(|p| p.namespace != n);
                state.deployments.retain(|d| name_of(&d.metadata).0 != n);
                state.services.retain(|s| name_of(&s.metadata).0 != n);
                state.ingresses.retain(|i| name_of(&i.metadata).0 != n);
                state.secrets.retain(|s| name_of(&s.metadata).0 != n);
            }
            Object::Pod(p) => {
                let (ns, name) = name_of(&p.metadata);
                state
                    .pods
                    .retain(|x| !(x.namespace == ns && x.name == name && x.owner.is_none()));
            }
            Object::Deployment(d) => remove(&mut state.deployments, &d.metadata),
            Object::Service(s) => remove(&mut state.services, &s.metadata),
            Object::Ingress(i) => remove(&mut state.ingresses, &i.metadata),
            Object::IngressClass(c) => remove(&mut state.ingress_classes, &c.metadata),
            Object::Secret(s) => remove(&mut state.secrets, &s.metadata),
        }
    }
    reconcile(state);
}

/// Replaces the object with the same namespace and name, or adds it.
fn upsert<T: Metadata<Ty = ObjectMeta>>(list: &mut Vec<T>, object: T) {
    let key = name_of(object.metadata());
    list.retain(|x| name_of(x.metadata()) != key);
    list.push(object);
}

/// Removes the object named like `meta` (missing is fine).
fn remove<T: Metadata<Ty = ObjectMeta>>(list: &mut Vec<T>, meta: &ObjectMeta) {
    let key = name_of(meta);
    list.retain(|x| name_of(x.metadata()) != key);
}

/// The current time, to the second, as the API server stamps `creationTimestamp`.
fn now() -> Option<Time> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).ok()?)
        .ok()
        .map(Time)
}

/// The addresses in an Ingress's status (where its controller answers).
pub fn ingress_ips(ingress: &Ingress) -> Vec<std::net::IpAddr> {
    let status = ingress
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref());
    let entries = status.flat_map(|lb| lb.ingress.iter().flatten());
    entries
        .filter_map(|a| a.ip.as_deref()?.parse().ok())
        .collect()
}

/// Gives an Ingress without a class the default IngressClass, as the API server's
/// DefaultIngressClass admission plugin does (the legacy annotation counts as a class).
fn default_class(ingress: &mut Ingress, classes: &[IngressClass]) {
    let legacy = ingress
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(flatnet_l7_routes::LEGACY_CLASS_ANNOTATION));
    let spec = ingress.spec.get_or_insert_with(Default::default);
    if spec.ingress_class_name.is_some() || legacy {
        return;
    }
    spec.ingress_class_name = classes
        .iter()
        .find(|c| flatnet_l7_routes::is_default_class(c))
        .and_then(|c| c.metadata.name.clone());
}

/// Moves a Secret's `stringData` into `data`, as the API server does on write.
fn fold_string_data(secret: &mut Secret) {
    for (k, v) in secret.string_data.take().unwrap_or_default() {
        secret
            .data
            .get_or_insert_with(Default::default)
            .insert(k, ByteString(v.into_bytes()));
    }
}

fn same_pod(a: &PodState, b: &PodState) -> bool {
    a.labels == b.labels
        && a.ports == b.ports
        && a.command == b.command
        && (&a.hostname, &a.subdomain, &a.dns_policy, &a.dns_config)
            == (&b.hostname, &b.subdomain, &b.dns_policy, &b.dns_config)
        && (b.node.is_empty() || a.node == b.node)
}

fn pod_from_spec(
    ns: &str,
    name: &str,
    spec: &PodSpec,
    labels: BTreeMap<String, String>,
    owner: Option<String>,
) -> PodState {
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| PodPort {
            name: p.name.clone(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
            port: p.container_port as u16,
        })
        .collect();
    PodState {
        namespace: ns.to_string(),
        name: name.to_string(),
        node: spec.node_name.clone().unwrap_or_default(),
        uid: String::new(),
        labels,
        ports,
        owner,
        terminating: false,
        command: flatnet_command(spec),
        hostname: spec.hostname.clone(),
        subdomain: spec.subdomain.clone(),
        dns_policy: spec.dns_policy.clone(),
        dns_config: spec.dns_config.clone(),
    }
}

/// The first container's command and args when it runs `flatnet` itself.
fn flatnet_command(spec: &PodSpec) -> Vec<String> {
    let Some(c) = spec.containers.first() else {
        return Vec::new();
    };
    let command = c.command.clone().unwrap_or_default();
    if command.first().map(String::as_str) != Some("flatnet") {
        return Vec::new();
    }
    command
        .into_iter()
        .chain(c.args.clone().unwrap_or_default())
        .collect()
}

/// Graceful deletion: the state between `prev` and `next` in which the pods `next` drops
/// (from nodes that stay) still run but are terminating, so that every node stops sending
/// them new connections before they go. `None` when no pod goes.
pub fn graceful(prev: &State, next: &State) -> Option<State> {
    let going: Vec<PodState> = prev
        .pods
        .iter()
        .filter(|p| next.pod(&p.namespace, &p.name).is_none() && next.node(&p.node).is_some())
        .map(|p| PodState {
            terminating: true,
            ..p.clone()
        })
        .collect();
    if going.is_empty() {
        return None;
    }
    let mut interim = next.clone();
    interim.pods.extend(going);
    interim
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Some(interim)
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn suffix(seed: &str, len: usize) -> String {
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Brings derived state in line: nodes, Deployment pods, placement, pod uids.
pub fn reconcile(s: &mut State) {
    reconcile_nodes(s);
    // Pods of nodes that left go; their Deployments' pods are made again below.
    s.pods
        .retain(|p| p.node.is_empty() || s.config.nodes.contains(&p.node));
    expand_deployments(s);
    schedule(s);
    ingress_status(s);
    let generation = s.generation + 1;
    for p in s.pods.iter_mut().filter(|p| p.uid.is_empty()) {
        p.uid = format!(
            "{:x}",
            Sha256::digest(format!(
                "{}/{}/{generation}/{}",
                p.namespace, p.name, s.config.name
            ))
        )[..32]
            .to_string();
    }
    s.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    s.generation = generation;
}

/// The Service that exposes the Ingress controller (`up` installs it).
pub const INGRESS_SERVICE: (&str, &str) = ("kube-system", "flatnet-ingress");

/// Writes the address of each Ingress that flatnet serves: the LoadBalancer IPs of
/// [`INGRESS_SERVICE`], as ingress controllers publish their Service's address.
fn ingress_status(s: &mut State) {
    let ips = s
        .services
        .iter()
        .find(|svc| name_of(&svc.metadata) == (INGRESS_SERVICE.0.into(), INGRESS_SERVICE.1.into()))
        .map(services::load_balancer_ips)
        .unwrap_or_default();
    let classes = flatnet_l7_routes::Classes::new(&s.ingress_classes);
    for ing in &mut s.ingresses {
        ing.status = (classes.serves(ing) && !ips.is_empty()).then(|| IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|ip| IngressLoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
        });
    }
}

fn reconcile_nodes(s: &mut State) {
    let wanted = s.config.nodes.clone();
    s.nodes.retain(|n| wanted.contains(&n.name));
    let mut allocators: Vec<NodeCidrAllocator> = s
        .config
        .pod_cidrs
        .iter()
        .map(|c| NodeCidrAllocator::new(*c, s.config.node_mask_for(c)).expect("validated"))
        .collect();
    for n in &s.nodes {
        for (a, c) in allocators.iter_mut().zip(&n.pod_cidrs) {
            a.occupy(*c).expect("own subnet");
        }
    }
    for name in &wanted {
        if s.nodes.iter().any(|n| &n.name == name) {
            continue;
        }
        let index = (1..)
            .find(|i| !s.nodes.iter().any(|n| n.index == *i))
            .expect("free index");
        let pod_cidrs = allocators
            .iter_mut()
            .map(|a| a.allocate().expect("validated capacity"))
            .collect();
        s.nodes.push(NodeState {
            name: name.clone(),
            index,
            ip: node_ip(&s.config.node_cidr, index),
            pod_cidrs,
        });
    }
    s.nodes.sort_by_key(|n| n.index);
}

fn expand_deployments(s: &mut State) {
    let mut want: Vec<PodState> = Vec::new();
    for d in &s.deployments {
        let (ns, name) = name_of(&d.metadata);
        let Some(spec) = &d.spec else { continue };
        let template = spec.template.spec.clone().unwrap_or_default();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let hash = suffix(&format!("{ns}/{name}/{:?}/{:?}", template, labels), 10);
        for i in 0..spec.replicas.unwrap_or(1).max(0) {
            let pod_name = format!(
                "{name}-{hash}-{}",
                suffix(&format!("{ns}/{name}/{hash}/{i}"), 5)
            );
            let mut labels = labels.clone();
            labels.insert("pod-template-hash".into(), hash.clone());
            want.push(pod_from_spec(
                &ns,
                &pod_name,
                &template,
                labels,
                Some(name.clone()),
            ));
        }
    }
    // Owned pods no longer wanted go; wanted ones not present come.
    s.pods.retain(|p| {
        p.owner.is_none()
            || want
                .iter()
                .any(|w| w.namespace == p.namespace && w.name == p.name)
    });
    for w in want {
        if s.pod(&w.namespace, &w.name).is_none() {
            s.pods.push(w);
        }
    }
}

/// Places unplaced pods on the node with the fewest pods (ties: node order).
fn schedule(s: &mut State) {
    let mut load: BTreeMap<String, usize> = s.config.nodes.iter().map(|n| (n.clone(), 0)).collect();
    for p in s.pods.iter().filter(|p| !p.node.is_empty()) {
        *load.entry(p.node.clone()).or_default() += 1;
    }
    let order = s.config.nodes.clone();
    for p in s.pods.iter_mut().filter(|p| p.node.is_empty()) {
        let node = order
            .iter()
            .min_by_key(|n| load[*n])
            .expect("a node")
            .clone();
        *load.get_mut(&node).unwrap() += 1;
        p.node = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatnet_model::cluster::{ClusterSpec, NodesSpec};
    use flatnet_model::manifest::parse_documents;
    use flatnet_model::validate::resolve_cluster;

    fn cfg(nodes: NodesSpec) -> ClusterConfig {
        resolve_cluster(
            "t",
            "t",
            &ClusterSpec {
                nodes: Some(nodes),
                ..Default::default()
            },
            &[],
        )
        .unwrap()
    }

    fn manifests(text: &str) -> Manifests {
        parse_documents(&[("m.yaml".into(), text.into())]).unwrap()
    }

    const APP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: x}\nspec:\n  replicas: 5\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n";

    #[test]
    fn nodes_get_indexes_ips_and_distinct_subnets() {
        let s = new_state(cfg(NodesSpec::Count(3)));
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.nodes[2].ip.to_string(), "192.168.1.3");
        let all: Vec<_> = s.nodes.iter().flat_map(|n| n.pod_cidrs.clone()).collect();
        assert_eq!(all.len(), 6);
        for (i, a) in all.iter().enumerate() {
            assert!(!all[..i].contains(a));
        }
    }

    #[test]
    fn deployments_spread_and_scale() {
        let mut s = new_state(cfg(NodesSpec::Count(3)));
        apply(&mut s, &manifests(APP)).unwrap();
        assert_eq!(s.pods.len(), 5);
        let on = |n: &str, s: &State| s.pods.iter().filter(|p| p.node == n).count();
        assert_eq!(
            (on("node1", &s), on("node2", &s), on("node3", &s)),
            (2, 2, 1)
        );
        let before: Vec<String> = s.pods.iter().map(|p| p.uid.clone()).collect();
        // Applying the same thing again changes no pod.
        apply(&mut s, &manifests(APP)).unwrap();
        assert_eq!(
            before,
            s.pods.iter().map(|p| p.uid.clone()).collect::<Vec<_>>()
        );
        apply(
            &mut s,
            &manifests(&APP.replace("replicas: 5", "replicas: 2")),
        )
        .unwrap();
        assert_eq!(s.pods.len(), 2);
        assert!(s
            .pods
            .iter()
            .all(|p| p.name.starts_with("web-") && p.labels["app"] == "web"));
    }

    #[test]
    fn removed_node_pods_move_and_readded_node_keeps_distinct_subnet() {
        let mut s = new_state(cfg(NodesSpec::Count(3)));
        apply(&mut s, &manifests(APP)).unwrap();
        let n3 = s.node("node3").unwrap().clone();
        change_config(
            &mut s,
            "c",
            cfg(NodesSpec::Names(vec!["node1".into(), "node2".into()])),
        )
        .unwrap();
        assert_eq!(s.pods.len(), 5);
        assert!(s.pods.iter().all(|p| p.node != "node3"));
        change_config(&mut s, "c", cfg(NodesSpec::Count(3))).unwrap();
        let back = s.node("node3").unwrap();
        assert_eq!(back.index, n3.index);
        let others: Vec<_> = s
            .nodes
            .iter()
            .filter(|n| n.name != "node3")
            .flat_map(|n| n.pod_cidrs.clone())
            .collect();
        assert!(back.pod_cidrs.iter().all(|c| !others.contains(c)));
    }

    #[test]
    fn network_changes_are_refused_on_a_running_cluster() {
        let mut s = new_state(cfg(NodesSpec::Count(3)));
        let mut other = cfg(NodesSpec::Count(3));
        other.mtu = 9000;
        let e = change_config(&mut s, "c.yaml", other).unwrap_err();
        assert!(
            e.to_string()
                .contains("c.yaml: Cluster/t: spec: only spec.nodes can change"),
            "{e}"
        );
    }

    #[test]
    fn unknown_namespace_and_node_are_refused_and_nothing_changes() {
        let mut s = new_state(cfg(NodesSpec::Count(2)));
        let before = s.clone();
        let e = apply(&mut s, &manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: nope}\nspec: {containers: [{name: c}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {nodeName: node9, containers: [{name: c}]}\n")).unwrap_err();
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.0[0].field, "metadata.namespace");
        assert_eq!(e.0[1].field, "spec.nodeName");
        assert_eq!(s, before);
    }

    #[test]
    fn delete_removes_bare_pods_and_namespaces() {
        let mut s = new_state(cfg(NodesSpec::Count(2)));
        apply(&mut s, &manifests(APP)).unwrap();
        apply(&mut s, &manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c}]}\n")).unwrap();
        assert_eq!(s.pods.len(), 6);
        delete(&mut s, &manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c}]}\n"));
        assert_eq!(s.pods.len(), 5);
        delete(
            &mut s,
            &manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"),
        );
        assert!(s.pods.is_empty() && s.deployments.is_empty());
    }

    #[test]
    fn dropped_pods_terminate_before_they_go() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
        let mut s = new_state(cfg(NodesSpec::Count(3)));
        apply(&mut s, &manifests(&format!("{APP}---\n{svc}"))).unwrap();
        let before = s.clone();
        apply(
            &mut s,
            &manifests(&APP.replace("replicas: 5", "replicas: 2")),
        )
        .unwrap();
        let interim = graceful(&before, &s).unwrap();
        assert_eq!(interim.pods.len(), 5);
        assert_eq!(interim.pods.iter().filter(|p| p.terminating).count(), 3);
        assert!(graceful(&s, &s).is_none());
        // Their endpoints are no longer ready but still serving.
        let statuses: BTreeMap<String, flatnet_model::NodeStatus> = interim
            .nodes
            .iter()
            .map(|n| {
                let pods = interim
                    .pods
                    .iter()
                    .filter(|p| p.node == n.name)
                    .enumerate()
                    .map(|(i, p)| {
                        let ip = format!("10.42.{}.{}", n.index, i + 2).parse().unwrap();
                        (
                            p.key(),
                            flatnet_model::PodStatus {
                                uid: p.uid.clone(),
                                ips: vec![ip],
                                phase: "Running".into(),
                                pid: None,
                            },
                        )
                    })
                    .collect();
                (
                    n.name.clone(),
                    flatnet_model::NodeStatus {
                        pods,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let slices = endpoints::slices(&interim, &statuses);
        let eps: Vec<_> = slices.iter().flat_map(|s| s.endpoints.iter()).collect();
        let terminating = eps
            .iter()
            .filter(|e| e.conditions.as_ref().unwrap().terminating == Some(true))
            .count();
        let ready = eps
            .iter()
            .filter(|e| e.conditions.as_ref().unwrap().ready == Some(true))
            .count();
        assert_eq!((ready, terminating), (2, 3), "{eps:?}");
    }

    #[test]
    fn ingresses_of_our_class_get_the_controller_address_and_secrets_fold_string_data() {
        let mut s = new_state(cfg(NodesSpec::Count(1)));
        apply(
            &mut s,
            &manifests(
                r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: flatnet, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: flatnet.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other}
---
apiVersion: v1
kind: Service
metadata: {name: flatnet-ingress, namespace: kube-system}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: mine}
spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs}
spec: {ingressClassName: other, defaultBackend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
stringData: {tls.crt: "-----BEGIN CERTIFICATE-----", tls.key: "-----BEGIN PRIVATE KEY-----"}
"#,
            ),
        )
        .unwrap();
        let address = |s: &State, name: &str| {
            let ing = s
                .ingresses
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(name));
            ing.and_then(|i| i.status.clone())
                .and_then(|st| st.load_balancer?.ingress?.first()?.ip.clone())
        };
        let lb = services::load_balancer_ips(&s.services[0]);
        assert_eq!(lb.len(), 1);

        assert_eq!(address(&s, "mine"), Some(lb[0].to_string()));
        assert_eq!(address(&s, "theirs"), None);
        let class = |name: &str| {
            let ing = s
                .ingresses
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(name));
            ing.and_then(|i| i.spec.clone()?.ingress_class_name)
        };
        assert_eq!(
            class("mine").as_deref(),
            Some("flatnet"),
            "the default class"
        );
        assert_eq!(class("theirs").as_deref(), Some("other"));
        let created = |s: &State| s.ingresses[0].metadata.creation_timestamp.clone();
        let first = created(&s).expect("stamped when created");
        let again = manifests("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: mine, creationTimestamp: \"2000-01-01T00:00:00Z\"}\nspec: {defaultBackend: {service: {name: web, port: {number: 80}}}}\n");
        apply(&mut s, &again).unwrap();
        let mine = s
            .ingresses
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some("mine"));
        assert_eq!(
            mine.unwrap().metadata.creation_timestamp,
            Some(first),
            "kept on re-apply"
        );
        let secret = &s.secrets[0];
        assert!(secret.string_data.is_none());
        assert_eq!(
            secret.data.as_ref().unwrap()["tls.crt"].0,
            b"-----BEGIN CERTIFICATE-----"
        );
        delete(&mut s, &manifests("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: flatnet}\nspec: {controller: flatnet.dev/ingress-controller}\n"));
        assert_eq!(address(&s, "mine"), None, "no class of ours is left");
    }
}
