//! Backends: an Ingress's `service.name` and `service.port` resolved to endpoints.

use crate::{Backend, Map, UpstreamProtocol};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::IngressServiceBackend;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The namespace of an object that names none.
const DEFAULT_NAMESPACE: &str = "default";

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The `appProtocol` that makes a port speak HTTP/2 with prior knowledge.
const H2C: &str = "kubernetes.io/h2c";

/// Resolves backends, one shared [`Backend`] per `namespace/service:port`.
pub(crate) struct Backends<'a> {
    services: Map<(&'a str, &'a str), &'a Service>,
    slices: Map<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    resolved: Map<(&'a str, &'a str, PortRef<'a>), Arc<Backend>>,
}

impl<'a> Backends<'a> {
    pub(crate) fn new(services: &'a [Service], slices: &'a [EndpointSlice]) -> Self {
        let services = by_name(services);
        let mut by_service: Map<_, Vec<_>> = Map::default();
        for slice in slices {
            let meta = &slice.metadata;
            let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            if let Some(service) = service {
                by_service
                    .entry((namespace, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Backends {
            services,
            slices: by_service,
            resolved: Map::default(),
        }
    }

    /// The backend `reference` names in `namespace`; `Err` with the reason when its
    /// `port` names no port.
    pub(crate) fn resolve(
        &mut self,
        namespace: &'a str,
        reference: &'a IngressServiceBackend,
    ) -> Result<Arc<Backend>, String> {
        let port = reference.port.as_ref();
        let wanted = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(number), _) => PortRef::Number(number),
            (None, Some(name)) => PortRef::Name(name),
            (None, None) => return Err("a number or a name is required".into()),
        };
        let key = (namespace, reference.name.as_str(), wanted);
        if let Some(backend) = self.resolved.get(&key) {
            return Ok(Arc::clone(backend));
        }
        let id = format!("{namespace}/{}:{wanted}", reference.name);
        let backend = Arc::new(self.lookup(id.into(), namespace, &reference.name, wanted));
        self.resolved.insert(key, Arc::clone(&backend));
        Ok(backend)
    }

    fn lookup(&self, key: Arc<str>, namespace: &str, name: &str, wanted: PortRef) -> Backend {
        let mut backend = Backend {
            key,
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            problem: None,
        };
        let Some(service) = self.services.get(&(namespace, name)) else {
            backend.problem = Some(format!("service {namespace}/{name} not found"));
            return backend;
        };
        let ports = service.spec.as_ref().and_then(|spec| spec.ports.as_deref());
        let Some(port) = ports.into_iter().flatten().find(|p| wanted.matches(p)) else {
            backend.problem = Some(format!("service {namespace}/{name} has no port {wanted}"));
            return backend;
        };
        if port.app_protocol.as_deref() == Some(H2C) {
            backend.protocol = UpstreamProtocol::H2c;
        }
        let slices = self.slices.get(&(namespace, name)).map(Vec::as_slice);
        backend.endpoints = endpoints(slices.unwrap_or_default(), port.name.as_deref());
        if backend.endpoints.is_empty() {
            backend.problem = Some(format!(
                "service {namespace}/{name} port {wanted} has no ready endpoint"
            ));
        }
        backend
    }
}

/// `service.port` of an Ingress backend.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

impl PortRef<'_> {
    fn matches(self, port: &ServicePort) -> bool {
        match self {
            PortRef::Number(number) => port.port == number,
            PortRef::Name(name) => port.name.as_deref() == Some(name),
        }
    }
}

impl std::fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(number) => write!(f, "{number}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// The endpoints of the Service port named `port_name` (`None` or empty: the unnamed
/// port) over TCP: the ready ones, or when none is ready, the serving and terminating ones.
/// Sorted, without duplicates.
fn endpoints(slices: &[&EndpointSlice], port_name: Option<&str>) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let Some(port) = slice_port(slice, port_name) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let into = match condition(endpoint) {
                Condition::Ready => &mut ready,
                Condition::ServingTerminating => &mut terminating,
                Condition::Unusable => continue,
            };
            let addresses = endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok());
            into.extend(addresses.map(|ip| SocketAddr::new(ip, port)));
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// The slice's TCP port with the Service port's name.
fn slice_port(slice: &EndpointSlice, port_name: Option<&str>) -> Option<u16> {
    let wanted = port_name.unwrap_or_default();
    let is_wanted = |p: &&EndpointPort| {
        p.name.as_deref().unwrap_or_default() == wanted
            && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
    };
    let port = slice.ports.as_deref()?.iter().find(is_wanted)?.port?;
    u16::try_from(port).ok()
}

enum Condition {
    Ready,
    ServingTerminating,
    Unusable,
}

fn condition(endpoint: &Endpoint) -> Condition {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    if conditions.ready.unwrap_or(true) {
        Condition::Ready
    } else if conditions.serving == Some(true) && conditions.terminating == Some(true) {
        Condition::ServingTerminating
    } else {
        Condition::Unusable
    }
}

/// `(namespace, name)` of an object; a missing namespace is `default`, as `kubectl apply`
/// makes it.
pub(crate) fn namespaced(meta: &ObjectMeta) -> Option<(&str, &str)> {
    let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    Some((namespace, meta.name.as_deref()?))
}

/// Objects by `(namespace, name)`.
pub(crate) fn by_name<T: Metadata<Ty = ObjectMeta>>(objects: &[T]) -> Map<(&str, &str), &T> {
    let named = objects.iter().map(|o| Some((namespaced(o.metadata())?, o)));
    named.flatten().collect()
}
