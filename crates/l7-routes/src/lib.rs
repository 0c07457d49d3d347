//! The L7 route table of flatnet's Ingress controller, computed by pure functions.
//!
//! [`Table::build`] turns the objects (Ingresses, IngressClasses, Services, EndpointSlices,
//! `kubernetes.io/tls` Secrets) into a table; [`Table::lookup`] answers "where does this
//! request go" for a normalised host and path. Nothing here does I/O: the proxy swaps whole
//! tables atomically when the objects change.
//!
//! CONTRACT (shared by the proxy crate `flatnet-l7` and the lab adapter): the public types
//! and signatures below are the interface; bodies marked `unimplemented!` are to be written.

pub mod annotations;
pub mod host;
pub mod path;

pub use annotations::{Balance, Options};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::net::SocketAddr;
use std::sync::Arc;

/// `spec.controller` of the IngressClasses flatnet serves.
pub const CONTROLLER: &str = "flatnet.dev/ingress-controller";

/// The annotation that marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The objects a table is built from (all namespaces).
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    /// Ingresses of every class (others are ignored by the build).
    pub ingresses: &'a [Ingress],
    /// IngressClasses.
    pub classes: &'a [IngressClass],
    /// Services the backends name.
    pub services: &'a [Service],
    /// EndpointSlices (label `kubernetes.io/service-name`).
    pub slices: &'a [EndpointSlice],
    /// Secrets; only `kubernetes.io/tls` ones named by an Ingress's `spec.tls` are used.
    pub secrets: &'a [Secret],
}

/// How a rule's host matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// No host: every request.
    Any,
    /// One host, lower case.
    Exact(String),
    /// `*.suffix`: exactly one label before `suffix` (stored lower case, without `*.`).
    Wildcard(String),
}

/// `pathType` of a path rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// Whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`, trailing slash ignored.
    Prefix,
    /// `ImplementationSpecific`: matched as Prefix.
    ImplementationSpecific,
}

/// The upstream protocol, from the Service port's `appProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (default).
    Http1,
    /// HTTP/2 prior knowledge (`appProtocol: kubernetes.io/h2c`), e.g. for gRPC.
    H2c,
}

/// One Service port a route sends to, with its endpoints resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `namespace/service:port` (port as the Ingress named it); stable across rebuilds, so
    /// proxies may key per-endpoint state (balancing, ejection) by it.
    pub key: Arc<str>,
    /// Ready endpoints (address and target port); when none is ready, the serving and
    /// terminating ones; empty when the Service is missing or has no endpoint (answer 503).
    pub endpoints: Vec<SocketAddr>,
    /// How to talk to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Why `endpoints` is empty, for the log (e.g. "service default/web not found").
    pub problem: Option<String>,
}

/// One path rule of one Ingress, with what it sends to.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `namespace/ingress` plus host and path, e.g. `default/web:foo.com/api(Prefix)`; used
    /// in the access log and metrics labels.
    pub id: Arc<str>,
    /// The host part of the rule.
    pub host: HostMatch,
    /// The rule's path as written (trailing slash removed for Prefix, `/` kept).
    pub path: String,
    /// Its type.
    pub kind: PathKind,
    /// Where matching requests go.
    pub backend: Arc<Backend>,
    /// The owning Ingress's annotations, parsed.
    pub options: Arc<Options>,
}

/// A certificate for TLS hosts, from a `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// Hosts it serves (exact or `*.` wildcard, lower case), from `spec.tls[].hosts`.
    pub hosts: Vec<HostMatch>,
    /// PEM chain (`tls.crt`).
    pub cert_pem: Vec<u8>,
    /// PEM private key (`tls.key`).
    pub key_pem: Vec<u8>,
}

/// The answer of a lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lookup<'a> {
    /// A rule (or the default backend) matched.
    Route(&'a Route),
    /// Nothing matched and there is no default backend: answer 404.
    NotFound,
}

/// The route table: every rule of every Ingress of our class, merged per host.
#[derive(Clone, Debug, Default)]
pub struct Table {
    // private fields chosen by the implementation
}

impl Table {
    /// Builds the table. Never fails: an Ingress that cannot be used (e.g. invalid
    /// annotations, a resource backend) is left out and named in [`Table::warnings`].
    pub fn build(inputs: &Inputs<'_>) -> Table {
        let _ = inputs;
        unimplemented!()
    }

    /// The route for a request. `host` and `path` must already be normalised with
    /// [`host::normalise`] and [`path::normalise`].
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let _ = (host, path);
        unimplemented!()
    }

    /// Every route, in precedence order, then the default backend.
    pub fn routes(&self) -> Vec<&Route> {
        unimplemented!()
    }

    /// Certificates by host, first claim wins.
    pub fn certificates(&self) -> &[Certificate] {
        unimplemented!()
    }

    /// Whether a TLS certificate covers `host` (normalised) and the route's Ingress asked
    /// for the HTTP-to-HTTPS redirect.
    pub fn redirects_to_https(&self, host: &str, route: &Route) -> bool {
        let _ = (host, route);
        unimplemented!()
    }

    /// What was left out and why (`Ingress ns/name: field: reason`).
    pub fn warnings(&self) -> &[String] {
        unimplemented!()
    }
}
