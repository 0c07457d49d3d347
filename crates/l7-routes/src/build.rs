//! [`Table::build`]: the Ingresses of our classes merged, in a deterministic order.

use crate::backend::{namespaced, Backends};
use crate::class::Classes;
use crate::index::Paths;
use crate::tls::Certificates;
use crate::{annotations, host, path, HostMatch, Inputs, Map, Options, PathKind, Route, Table};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use std::rc::Rc;
use std::sync::Arc;

/// The table under construction, with the indexes of the objects it reads.
struct Builder<'a> {
    table: Table,
    claims: Claims,
    backends: Backends<'a>,
    certificates: Certificates<'a>,
}

/// The Ingress being added.
struct Owner<'a> {
    namespace: &'a str,
    /// `namespace/name`.
    id: Rc<str>,
    options: Arc<Options>,
}

/// Where a route was written: its Ingress (`namespace/name`) and the indexes of its rule
/// and path.
type Written = (Rc<str>, usize, usize);

/// The routes of each host level in the order the Ingresses claim them, sorted into
/// [`Paths`] when all are added.
#[derive(Default)]
struct Claims {
    exact: Map<String, Vec<(Route, Written)>>,
    wildcard: Map<String, Vec<(Route, Written)>>,
    any: Vec<(Route, Written)>,
}

/// A field of an Ingress (relative to the field at hand) and why it is left out.
type Refusal = (String, String);

pub(crate) fn build(inputs: &Inputs<'_>) -> Table {
    let classes = Classes::new(inputs.classes);
    let mut ours: Vec<(&Ingress, (&str, &str))> = inputs
        .ingresses
        .iter()
        .filter(|ingress| classes.serves(ingress))
        .filter_map(|ingress| Some((ingress, namespaced(&ingress.metadata)?)))
        .collect();
    ours.sort_by(|(a, a_name), (b, b_name)| {
        let created = |i: &Ingress| i.metadata.creation_timestamp.clone();
        created(a).cmp(&created(b)).then(a_name.cmp(b_name))
    });
    // One level per host, most often: sized for every rule, the map is never rehashed.
    let rules = ours
        .iter()
        .filter_map(|(ingress, _)| ingress.spec.as_ref()?.rules.as_ref());
    let mut claims = Claims::default();
    claims.exact.reserve(rules.map(Vec::len).sum());
    let mut builder = Builder {
        table: Table::default(),
        claims,
        backends: Backends::new(inputs.services, inputs.slices),
        certificates: Certificates::new(inputs.secrets),
    };
    for (ingress, (namespace, name)) in ours {
        builder.add(ingress, namespace, name);
    }
    let (certificates, tls_hosts) = builder.certificates.finish();
    let Builder {
        mut table, claims, ..
    } = builder;
    let mut conflicts = Vec::new();
    table.exact = levels(claims.exact, &mut conflicts);
    table.wildcard = levels(claims.wildcard, &mut conflicts);
    table.any = Paths::new(claims.any, |written, holder| {
        conflicts.push(conflict(written, holder))
    });
    // Levels are sorted in hash order: the warnings are sorted to be the same every build.
    conflicts.sort_unstable();
    table.warnings.extend(conflicts);
    Table {
        certificates,
        tls_hosts,
        backends: builder.backends.in_use(),
        ..table
    }
}

/// The levels of `claims`, each claim that loses to an earlier one named in `conflicts`.
fn levels(
    claims: Map<String, Vec<(Route, Written)>>,
    conflicts: &mut Vec<String>,
) -> Map<String, Paths> {
    let mut levels = Map::with_capacity_and_hasher(claims.len(), Default::default());
    for (key, claims) in claims {
        let paths = Paths::new(claims, |written, holder| {
            conflicts.push(conflict(written, holder))
        });
        levels.insert(key, paths);
    }
    levels
}

/// The warning for a route whose host, path and kind `holder` claimed first.
fn conflict((owner, rule, path): Written, holder: &Route) -> String {
    format!(
        "Ingress {owner}: spec.rules[{rule}].http.paths[{path}]: ignored, the same host, path and type is {}",
        holder.id
    )
}

impl<'a> Builder<'a> {
    fn add(&mut self, ingress: &'a Ingress, namespace: &'a str, name: &str) {
        let id: Rc<str> = format!("{namespace}/{name}").into();
        let options = match annotations::parse(ingress.metadata.annotations.as_ref()) {
            Ok(options) => Arc::new(options),
            Err(bad) => {
                let warnings = bad.iter().map(|bad| format!("Ingress {id}: {bad}"));
                return self.table.warnings.extend(warnings);
            }
        };
        let owner = Owner {
            namespace,
            id,
            options,
        };
        let Some(spec) = &ingress.spec else {
            return;
        };
        if let Some(backend) = &spec.default_backend {
            self.default_backend(&owner, backend);
        }
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match rule.host.as_deref() {
                None | Some("") => HostMatch::Any,
                Some(written) => match host::parse_rule(written) {
                    Some(host) => host,
                    None => {
                        let field = format!("spec.rules[{i}].host");
                        self.warn(&owner, &field, format!("{written:?} is not a valid host"));
                        continue;
                    }
                },
            };
            for (j, path) in rule.http.iter().flat_map(|http| &http.paths).enumerate() {
                match self.route(&owner, &host, path) {
                    Ok(route) => self.claim(route, (Rc::clone(&owner.id), i, j)),
                    Err((sub, reason)) => {
                        let field = format!("spec.rules[{i}].http.paths[{j}].{sub}");
                        self.warn(&owner, &field, reason)
                    }
                }
            }
        }
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let warnings = &mut self.table.warnings;
            self.certificates.add(namespace, tls, |field, reason| {
                warnings.push(format!(
                    "Ingress {}: spec.tls[{i}].{field}: {reason}",
                    owner.id
                ));
            });
        }
    }

    /// `spec.defaultBackend`: the first Ingress with one sets it.
    fn default_backend(&mut self, owner: &Owner<'a>, backend: &'a IngressBackend) {
        let field = "spec.defaultBackend";
        if let Some(current) = &self.table.default_backend {
            let reason = format!("ignored, the default backend is {} already", current.id);
            return self.warn(owner, field, reason);
        }
        match self.backend(owner, backend) {
            Ok(backend) => {
                self.table.default_backend = Some(Route {
                    id: format!("{}:default-backend", owner.id).into(),
                    host: HostMatch::Any,
                    path: "/".into(),
                    kind: PathKind::Prefix,
                    backend,
                    options: Arc::clone(&owner.options),
                });
            }
            Err((sub, reason)) => self.warn(owner, &format!("{field}.{sub}"), reason),
        }
    }

    /// The route of one path rule.
    fn route(
        &mut self,
        owner: &Owner<'a>,
        host: &HostMatch,
        rule: &'a HTTPIngressPath,
    ) -> Result<Route, Refusal> {
        let kind = match rule.path_type.as_str() {
            "Exact" => PathKind::Exact,
            "Prefix" => PathKind::Prefix,
            "ImplementationSpecific" => PathKind::ImplementationSpecific,
            other => {
                let reason = format!("{other:?} is not Exact, Prefix or ImplementationSpecific");
                return Err(("pathType".into(), reason));
            }
        };
        let written = rule.path.as_deref().unwrap_or("/");
        let mut path = path::normalise(written)
            .map_err(|e| ("path".into(), format!("{written:?}: {e}")))?
            .into_owned();
        if kind != PathKind::Exact && path.len() > 1 && path.ends_with('/') {
            path.pop();
        }
        let backend = self
            .backend(owner, &rule.backend)
            .map_err(|(sub, reason)| (format!("backend.{sub}"), reason))?;
        Ok(Route {
            id: route_id(&owner.id, host, &path, kind),
            host: host.clone(),
            path,
            kind,
            backend,
            options: Arc::clone(&owner.options),
        })
    }

    fn backend(
        &mut self,
        owner: &Owner<'a>,
        backend: &'a IngressBackend,
    ) -> Result<Arc<crate::Backend>, Refusal> {
        if backend.resource.is_some() {
            return Err((
                "resource".into(),
                "resource backends are not supported".into(),
            ));
        }
        let service = backend
            .service
            .as_ref()
            .ok_or(("service".into(), "missing".into()))?;
        self.backends
            .resolve(owner.namespace, service)
            .map_err(|reason| ("service.port".into(), reason))
    }

    /// Adds a route to the claims of its host level.
    fn claim(&mut self, route: Route, written: Written) {
        let claims = match &route.host {
            HostMatch::Any => &mut self.claims.any,
            HostMatch::Exact(host) => level(&mut self.claims.exact, host),
            HostMatch::Wildcard(suffix) => level(&mut self.claims.wildcard, suffix),
        };
        claims.push((route, written));
    }

    fn warn(&mut self, owner: &Owner<'_>, field: &str, reason: String) {
        let warning = format!("Ingress {}: {field}: {reason}", owner.id);
        self.table.warnings.push(warning);
    }
}

/// `namespace/ingress:host/path(Kind)`, written once into a buffer of about its size (a
/// build makes 10,000s of them).
fn route_id(owner: &str, host: &HostMatch, path: &str, kind: PathKind) -> Arc<str> {
    use std::fmt::Write;
    let host_len = match host {
        HostMatch::Any => 0,
        HostMatch::Exact(host) => host.len(),
        HostMatch::Wildcard(suffix) => suffix.len() + 2,
    };
    let mut id = String::with_capacity(owner.len() + host_len + path.len() + 32);
    write!(id, "{owner}:{host}{path}({kind})").expect("writing to a String");
    id.into()
}

/// The claims of one host (or wildcard suffix), added when new; the key is copied only then.
fn level<'m, T>(levels: &'m mut Map<String, Vec<T>>, key: &str) -> &'m mut Vec<T> {
    if !levels.contains_key(key) {
        levels.insert(key.to_owned(), Vec::new());
    }
    levels.get_mut(key).expect("inserted above")
}
