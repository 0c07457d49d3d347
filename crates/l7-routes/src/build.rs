//! [`Table::build`]: the Ingresses of our classes merged, in a deterministic order; and
//! [`Table::update`]: the same for the hosts an Ingress change touches, the other hosts'
//! levels shared with the table before.

use crate::backend::{namespaced, Backends};
use crate::class::Classes;
use crate::index::Paths;
use crate::tls::Certificates;
use crate::{
    annotations, host, path, HostMatch, IngressChange, Inputs, Levels, Map, Options, PathKind,
    Route, Set, Table,
};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use std::sync::Arc;

/// The table under construction, with the indexes of the objects it reads.
struct Builder<'a> {
    table: Table,
    claims: Claims,
    backends: Backends<'a>,
    certificates: Certificates<'a>,
    /// For an update: the hosts to rebuild and the Ingresses whose warnings are made again.
    scope: Option<Scope<'a>>,
}

/// What an update rebuilds.
struct Scope<'a> {
    /// The levels to rebuild (every host a changed Ingress names, before or after).
    hosts: Set<HostMatch>,
    /// The changed Ingresses (`namespace`, `name`), before and after.
    changed: Set<(&'a str, &'a str)>,
}

/// The Ingress being added.
struct Owner<'a> {
    namespace: &'a str,
    /// `namespace/name`.
    id: Arc<str>,
    options: Arc<Options>,
    /// Whether its warnings are recorded (always in a build; in an update, when it changed).
    warns: bool,
}

/// Where a route was written: its Ingress (`namespace/name`) and the indexes of its rule
/// and path.
type Written = (Arc<str>, usize, usize);

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
    let ours = ours(inputs.ingresses, &classes);
    let mut builder = Builder::new(inputs, None);
    // One level per host, most often: sized for every rule, the map is never rehashed.
    let rules = ours
        .iter()
        .filter_map(|(ingress, _)| ingress.spec.as_ref()?.rules.as_ref());
    builder.claims.exact.reserve(rules.map(Vec::len).sum());
    for (ingress, (namespace, name)) in ours {
        builder.add(ingress, namespace, name);
    }
    let (certificates, tls_hosts) = builder.certificates.finish();
    let Builder { table, claims, .. } = builder;
    let (exact, wildcard, any) = claims.levels();
    let mut table = Table {
        certificates,
        tls_hosts,
        ..table
    };
    if let Some(default) = table
        .default_backend
        .as_ref()
        .map(|r| Arc::clone(&r.backend))
    {
        table.count_backend(&default, false);
    }
    for level in exact.values().chain(wildcard.values()).chain([&any]) {
        table.count(level, false);
    }
    table.exact = exact;
    table.wildcard = wildcard;
    table.any = any;
    table.list_backends();
    table
}

pub(crate) fn update(
    old: &Table,
    inputs: &Inputs<'_>,
    change: &IngressChange<'_>,
) -> Option<Table> {
    let edited = || change.before.iter().chain(change.after);
    let tls_or_default = |ingress: &Ingress| {
        let spec = ingress.spec.as_ref();
        spec.is_some_and(|s| s.default_backend.is_some() || s.tls.iter().flatten().count() > 0)
    };
    if edited().any(tls_or_default) {
        return None;
    }
    let scope = Scope {
        hosts: edited().flat_map(rule_hosts).collect(),
        changed: edited().filter_map(|i| namespaced(&i.metadata)).collect(),
    };
    // One pass over the Ingresses: those that name a host to rebuild or changed. A changed
    // Ingress's name held by two objects (e.g. in two files): the warnings of the one that
    // did not change could not be told apart.
    let mut seen = Set::default();
    let mut touched = Vec::new();
    for ingress in inputs.ingresses {
        let name = namespaced(&ingress.metadata);
        let changed = name.is_some_and(|n| scope.changed.contains(&n));
        if changed && !seen.insert(name) {
            return None;
        }
        if changed || rule_hosts(ingress).any(|h| scope.hosts.contains(&h)) {
            touched.push(ingress);
        }
    }
    let ours = ours(touched, &Classes::new(inputs.classes));
    let mut builder = Builder::new(inputs, Some(scope));
    for (ingress, (namespace, name)) in ours {
        builder.add(ingress, namespace, name);
    }
    let Builder {
        table: made,
        claims,
        scope,
        ..
    } = builder;
    let scope = scope.expect("an update's builder has a scope");
    let mut table = old.clone();
    for (namespace, name) in &scope.changed {
        table
            .warnings
            .remove(format!("{namespace}/{name}").as_str());
    }
    table.warnings.extend(made.warnings);
    for host in &scope.hosts {
        let gone = match host {
            HostMatch::Any => Some(std::mem::take(&mut table.any)),
            HostMatch::Exact(host) => table.exact.remove(host.as_str()),
            HostMatch::Wildcard(suffix) => table.wildcard.remove(suffix.as_str()),
        };
        if let Some(level) = gone {
            table.count(&level, true);
        }
    }
    let (exact, wildcard, any) = claims.levels();
    for level in exact.values().chain(wildcard.values()) {
        table.count(level, false);
    }
    table.exact.extend(exact);
    table.wildcard.extend(wildcard);
    if scope.hosts.contains(&HostMatch::Any) {
        table.count(&any, false);
        table.any = any;
    }
    table.list_backends();
    Some(table)
}

/// The Ingresses of `ingresses` of our classes, in merge order: oldest first, then by
/// namespace and name.
fn ours<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    classes: &Classes,
) -> Vec<(&'a Ingress, (&'a str, &'a str))> {
    let mut ours: Vec<(&Ingress, (&str, &str))> = ingresses
        .into_iter()
        .filter(|ingress| classes.serves(ingress))
        .filter_map(|ingress| Some((ingress, namespaced(&ingress.metadata)?)))
        .collect();
    ours.sort_by(|(a, a_name), (b, b_name)| {
        let created = |i: &Ingress| i.metadata.creation_timestamp.clone();
        created(a).cmp(&created(b)).then(a_name.cmp(b_name))
    });
    ours
}

/// The valid hosts of an Ingress's rules ([`HostMatch::Any`] for a rule without host).
fn rule_hosts(ingress: &Ingress) -> impl Iterator<Item = HostMatch> + '_ {
    let rules = ingress
        .spec
        .iter()
        .flat_map(|spec| spec.rules.iter().flatten());
    rules.filter_map(|rule| match rule.host.as_deref() {
        None | Some("") => Some(HostMatch::Any),
        Some(written) => host::parse_rule(written),
    })
}

impl Claims {
    /// The levels of the claims (exact, wildcard, any); a claim that loses to an earlier one
    /// is named in its level's conflicts.
    fn levels(self) -> (Levels, Levels, Arc<Paths>) {
        fn levels(claims: Map<String, Vec<(Route, Written)>>) -> Levels {
            let mut levels = Map::with_capacity_and_hasher(claims.len(), Default::default());
            for (key, claims) in claims {
                levels.insert(key.into(), Arc::new(Paths::new(claims, conflict)));
            }
            levels
        }
        let any = Arc::new(Paths::new(self.any, conflict));
        (levels(self.exact), levels(self.wildcard), any)
    }
}

/// The warning for a route whose host, path and kind `holder` claimed first.
fn conflict((owner, rule, path): Written, holder: &Route) -> String {
    format!(
        "Ingress {owner}: spec.rules[{rule}].http.paths[{path}]: ignored, the same host, path and type is {}",
        holder.id
    )
}

impl<'a> Builder<'a> {
    fn new(inputs: &Inputs<'a>, scope: Option<Scope<'a>>) -> Self {
        Builder {
            table: Table::default(),
            claims: Claims::default(),
            backends: Backends::new(inputs.services, inputs.slices),
            certificates: Certificates::new(inputs.secrets),
            scope,
        }
    }

    fn add(&mut self, ingress: &'a Ingress, namespace: &'a str, name: &str) {
        let id: Arc<str> = format!("{namespace}/{name}").into();
        let warns = match &self.scope {
            None => true,
            Some(scope) => scope.changed.contains(&(namespace, name)),
        };
        let options = match annotations::parse(ingress.metadata.annotations.as_ref()) {
            Ok(options) => Arc::new(options),
            Err(bad) => {
                if warns {
                    let warnings = bad.iter().map(|bad| format!("Ingress {id}: {bad}"));
                    let warnings: Vec<String> = warnings.collect();
                    self.table.warnings.entry(id).or_default().extend(warnings);
                }
                return;
            }
        };
        let owner = Owner {
            namespace,
            id,
            options,
            warns,
        };
        let Some(spec) = &ingress.spec else {
            return;
        };
        // An update changes no default backend and no certificate: they stay as they were.
        let whole = self.scope.is_none();
        if let Some(backend) = spec.default_backend.as_ref().filter(|_| whole) {
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
            if self
                .scope
                .as_ref()
                .is_some_and(|s| !s.hosts.contains(&host))
            {
                continue;
            }
            for (j, path) in rule.http.iter().flat_map(|http| &http.paths).enumerate() {
                match self.route(&owner, &host, path) {
                    Ok(route) => self.claim(route, (Arc::clone(&owner.id), i, j)),
                    Err((sub, reason)) => {
                        let field = format!("spec.rules[{i}].http.paths[{j}].{sub}");
                        self.warn(&owner, &field, reason)
                    }
                }
            }
        }
        if whole {
            for (i, tls) in spec.tls.iter().flatten().enumerate() {
                self.certificates.add(namespace, tls, |field, reason| {
                    let warning = format!("Ingress {}: spec.tls[{i}].{field}: {reason}", owner.id);
                    let warnings = self.table.warnings.entry(Arc::clone(&owner.id));
                    warnings.or_default().push(warning);
                });
            }
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
        if owner.warns {
            let warning = format!("Ingress {}: {field}: {reason}", owner.id);
            let warnings = self.table.warnings.entry(Arc::clone(&owner.id));
            warnings.or_default().push(warning);
        }
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
