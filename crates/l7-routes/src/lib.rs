//! The L7 route table of flatnet's Ingress controller, computed by pure functions.
//!
//! [`Table::build`] turns the objects (Ingresses, IngressClasses, Services, EndpointSlices,
//! `kubernetes.io/tls` Secrets) into a table; [`Table::lookup`] answers "where does this
//! request go" for a normalised host and path. Nothing here does I/O: the proxy swaps whole
//! tables atomically when the objects change.
//!
//! # Which Ingresses
//! An Ingress is ours when its `spec.ingressClassName`, or else its legacy annotation
//! [`LEGACY_CLASS_ANNOTATION`], names an IngressClass whose `spec.controller` is
//! [`CONTROLLER`]; with neither, when one of our classes carries
//! [`DEFAULT_CLASS_ANNOTATION`]` = "true"`. Other Ingresses are ignored without a warning.
//! An object without `metadata.namespace` is in `default`.
//!
//! # Merging and conflicts
//! The rules of all our Ingresses are merged per host. Ingresses are taken in a fixed order:
//! by `metadata.creationTimestamp` (an Ingress without one counts as the oldest), then
//! namespace, then name. For the same host, path and `pathType`, the first claim wins and
//! the later one is named in [`Table::warnings`]; likewise the first `spec.defaultBackend`
//! and the first certificate for a TLS host win. An Ingress with an invalid
//! `flatnet.dev/` annotation (see [`annotations`]) is left out entirely; an invalid host,
//! path, `pathType` or a `resource` backend leaves out only that rule or path.
//!
//! # Host precedence, without fallback
//! A request host (normalised with [`host::normalise`]) selects ONE host level: its exact
//! host if any rule names it, else the wildcard `*.suffix` matching it (exactly one extra
//! label: `*.foo.com` matches `bar.foo.com`, not `foo.com` nor `a.bar.foo.com`) if any rule
//! names it, else the rules without host. The paths of that level alone are then matched:
//! when none matches, the request goes to the default backend or gets 404, even if a less
//! specific host level has a matching path (as in ingress-nginx and the Gateway API).
//!
//! # Path matching and precedence
//! Request paths are normalised with [`path::normalise`] (see there for the exact rules);
//! rule paths are normalised with the same function when the table is built, a missing
//! `path` being `/`. `Exact` matches the whole path, case-sensitively. `Prefix` (and
//! `ImplementationSpecific`, matched the same way) matches element-wise on `/`: the rule
//! path without its trailing slash matches the request path `r` when it is `/`, equals `r`,
//! or `r` starts with it followed by `/` (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not
//! `/foobar`). The longest rule path (in bytes) wins; at equal length `Exact` beats `Prefix`
//! beats `ImplementationSpecific`. A lookup costs hash look-ups in the number of the path's
//! segments, whatever the number of hosts and rules.
//!
//! # Backends and certificates
//! `service.name` is a Service in the Ingress's namespace, `service.port` one of its ports
//! by number or name. Endpoints come from the EndpointSlices labelled
//! `kubernetes.io/service-name`, on the slice port (TCP) named as the Service port: the
//! ready ones, or when none is ready the serving and terminating ones. A missing Service,
//! port or endpoint gives a [`Backend`] without endpoints and with a `problem` (answer 503).
//! `spec.tls[].secretName` names a `kubernetes.io/tls` Secret with `tls.crt` and `tls.key`
//! (in `data`, or `stringData` as manifests write it).
//!
//! # Route ids
//! `namespace/ingress:HOST/PATH(Kind)`, HOST being `*` for rules without host, e.g.
//! `default/web:foo.com/api(Prefix)` or `default/web:*.foo.com/(Exact)`; the default
//! backend is `namespace/ingress:default-backend`.

pub mod annotations;
mod backend;
mod build;
mod class;
pub use class::{is_default_class, Classes};
pub use tls::{secret_value, TLS_SECRET_TYPE};
pub mod host;
mod index;
pub mod path;
mod tls;

pub use annotations::{Balance, Options};

use index::Paths;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::collections::{BTreeMap, HashMap};

/// The maps of the table: keyed by request hosts and paths, so hashed with a keyed hash
/// (ahash, seeded at random per map) that is fast and not open to collision attacks.
pub(crate) type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// A set hashed as [`Map`] is.
pub(crate) type Set<T> = std::collections::HashSet<T, ahash::RandomState>;

/// Host levels by host (or wildcard suffix), each shared by the tables that have it as is.
pub(crate) type Levels = Map<Arc<str>, Arc<Paths>>;
use std::net::SocketAddr;
use std::sync::Arc;
use tls::TlsHosts;

/// `spec.controller` of the IngressClasses flatnet serves.
pub const CONTROLLER: &str = "flatnet.dev/ingress-controller";

/// The annotation that marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The legacy annotation naming an Ingress's class, from before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

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
    /// The host part of the rule ([`HostMatch::Any`] for the default backend).
    pub host: HostMatch,
    /// The rule's path as written, normalised with [`path::normalise`] (trailing slash
    /// removed for Prefix and ImplementationSpecific, `/` kept). `/` for the default backend.
    pub path: String,
    /// Its type ([`PathKind::Prefix`] for the default backend).
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
    /// Rules with an exact host, by host.
    exact: Levels,
    /// Rules with a wildcard host, by suffix (without `*.`).
    wildcard: Levels,
    /// Rules without host.
    any: Arc<Paths>,
    default_backend: Option<Route>,
    /// The backends of the routes, each once (listed from `uses`).
    backends: Vec<Arc<Backend>>,
    /// How many routes (the default backend included) send to each backend, by key.
    uses: Map<Arc<str>, (Arc<Backend>, usize)>,
    certificates: Vec<Certificate>,
    tls_hosts: TlsHosts,
    /// What was left out of each Ingress (by `namespace/name`), but for path conflicts,
    /// which their levels hold.
    warnings: BTreeMap<Arc<str>, Vec<String>>,
}

/// Ingresses changed since a table was built: the objects as they were and as they are
/// (an Ingress added is only in `after`, one removed only in `before`).
#[derive(Clone, Copy, Debug, Default)]
pub struct IngressChange<'a> {
    /// The changed Ingresses as the table was built from them.
    pub before: &'a [Ingress],
    /// The same Ingresses (and the added ones) as they are now.
    pub after: &'a [Ingress],
}

impl Table {
    /// Builds the table. Never fails: an Ingress, rule or path that cannot be used (e.g.
    /// invalid annotations, a resource backend) is left out and named in
    /// [`Table::warnings`].
    pub fn build(inputs: &Inputs<'_>) -> Table {
        build::build(inputs)
    }

    /// The table of `inputs` when only `change`'s Ingresses changed since this one was built
    /// (the IngressClasses, Services, EndpointSlices and Secrets are the same): the same
    /// table [`Table::build`] makes, for the cost of the hosts the changed Ingresses name;
    /// the other hosts' levels are shared with this table. `None` when a changed Ingress
    /// has a default backend or TLS, or its name is held twice: build the table instead.
    pub fn update(&self, inputs: &Inputs<'_>, change: &IngressChange<'_>) -> Option<Table> {
        build::update(self, inputs, change)
    }

    /// The route for a request. `host` and `path` must already be normalised with
    /// [`host::normalise`] and [`path::normalise`].
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let level = self
            .exact
            .get(host)
            .or_else(|| self.wildcard.get(host::wildcard_suffix(host)?))
            .unwrap_or(&self.any);
        match level.lookup(path).or(self.default_backend.as_ref()) {
            Some(route) => Lookup::Route(route),
            None => Lookup::NotFound,
        }
    }

    /// Every route, in precedence order, then the default backend: exact hosts, wildcard
    /// hosts, then rules without host (hosts in alphabetical order); within a host, longer
    /// paths first, then by kind (Exact, Prefix, ImplementationSpecific).
    pub fn routes(&self) -> Vec<&Route> {
        let mut routes: Vec<&Route> = self.levels().flat_map(Paths::routes).collect();
        routes.sort_by_key(|route| {
            let level = match route.host {
                HostMatch::Exact(_) => 0,
                HostMatch::Wildcard(_) => 1,
                HostMatch::Any => 2,
            };
            let longest = std::cmp::Reverse(route.path.len());
            (level, &route.host, longest, route.kind, &route.path)
        });
        routes.extend(&self.default_backend);
        routes
    }

    /// Every host level.
    fn levels(&self) -> impl Iterator<Item = &Paths> {
        let hosts = self.exact.values().chain(self.wildcard.values());
        hosts.chain([&self.any]).map(|level| &**level)
    }

    /// Every backend a route sends to, each once, in no particular order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Counts `level`'s routes in [`Table::uses`] (`gone`: counts them out).
    fn count(&mut self, level: &Paths, gone: bool) {
        for route in level.routes() {
            self.count_backend(&route.backend, gone);
        }
    }

    /// Counts one route sending to `backend` in [`Table::uses`] (`gone`: counts it out).
    fn count_backend(&mut self, backend: &Arc<Backend>, gone: bool) {
        let key = &backend.key;
        if gone {
            let (_, n) = self.uses.get_mut(key).expect("counted in");
            *n -= 1;
            if *n == 0 {
                self.uses.remove(key);
            }
        } else if let Some((_, n)) = self.uses.get_mut(key) {
            *n += 1;
        } else {
            self.uses.insert(Arc::clone(key), (Arc::clone(backend), 1));
        }
    }

    /// Lists [`Table::backends`] from [`Table::uses`].
    fn list_backends(&mut self) {
        self.backends = self.uses.values().map(|(b, _)| Arc::clone(b)).collect();
    }

    /// Certificates by host, first claim wins.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    /// Whether a TLS certificate covers `host` (normalised) and the route's Ingress asked
    /// for the HTTP-to-HTTPS redirect.
    pub fn redirects_to_https(&self, host: &str, route: &Route) -> bool {
        route.options.ssl_redirect && self.tls_hosts.covers(host)
    }

    /// What was left out and why (`Ingress ns/name: field: reason`): by Ingress, then the
    /// path conflicts, sorted.
    pub fn warnings(&self) -> Vec<&str> {
        let mut conflicts: Vec<&str> = self
            .levels()
            .flat_map(|level| level.conflicts())
            .map(String::as_str)
            .collect();
        conflicts.sort_unstable();
        let by_ingress = self.warnings.values().flatten().map(String::as_str);
        by_ingress.chain(conflicts).collect()
    }
}

impl std::fmt::Display for PathKind {
    /// The `pathType` as the API writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathKind::Exact => "Exact",
            PathKind::Prefix => "Prefix",
            PathKind::ImplementationSpecific => "ImplementationSpecific",
        })
    }
}
