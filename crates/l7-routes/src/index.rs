//! The path rules of one host level, sorted for a lookup in O(path depth x log rules).

use crate::{PathKind, Route};

/// The routes of one host (or wildcard suffix, or of every host), sorted by rule path then
/// [`PathKind`], one per path and kind: a lookup is a few binary searches, and a level of a
/// few rules is one small allocation (a table has one level per host, 10,000s of them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Paths {
    routes: Vec<Route>,
    /// A warning for each claim that lost to an earlier one.
    conflicts: Vec<String>,
}

impl Paths {
    /// The level of `claims` (routes in the order their Ingresses claim them, each with what
    /// `lost` needs to name it): the first claim of a path and kind holds it; for each later
    /// one `lost` makes a warning, given the route holding it.
    pub(crate) fn new<T>(mut claims: Vec<(Route, T)>, lost: impl Fn(T, &Route) -> String) -> Paths {
        // A stable sort keeps the claims of one path and kind in claim order.
        claims.sort_by(|(a, _), (b, _)| (a.path.as_str(), a.kind).cmp(&(b.path.as_str(), b.kind)));
        let mut routes: Vec<Route> = Vec::with_capacity(claims.len());
        let mut conflicts = Vec::new();
        for (route, origin) in claims {
            match routes.last() {
                Some(holder) if holder.path == route.path && holder.kind == route.kind => {
                    conflicts.push(lost(origin, holder))
                }
                _ => routes.push(route),
            }
        }
        Paths { routes, conflicts }
    }

    /// Warnings for the claims that lost to earlier ones.
    pub(crate) fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    /// The route at exactly `path` and `kind`.
    fn find(&self, path: &str, kind: PathKind) -> Option<&Route> {
        let at = self
            .routes
            .binary_search_by(|r| (r.path.as_str(), r.kind).cmp(&(path, kind)));
        at.ok().map(|at| &self.routes[at])
    }

    /// The route for a normalised path: the Exact rule equal to it, else the Prefix (then
    /// ImplementationSpecific) rule at its longest matching ancestor.
    pub(crate) fn lookup(&self, path: &str) -> Option<&Route> {
        let prefix_like = |prefix| {
            self.find(prefix, PathKind::Prefix)
                .or_else(|| self.find(prefix, PathKind::ImplementationSpecific))
        };
        self.find(path, PathKind::Exact)
            .or_else(|| prefixes(path).find_map(prefix_like))
    }

    /// Every route, by path then kind.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// The Prefix rule paths that match `path`, longest first: the path without its trailing
/// slash, then each ancestor on `/` boundaries, down to `/`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let first = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    };
    std::iter::successors(Some(first), |current| match current.rfind('/') {
        _ if *current == "/" => None,
        Some(0) => Some("/"),
        Some(at) => Some(&current[..at]),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::{prefixes, Paths};
    use crate::{Backend, HostMatch, PathKind, Route, UpstreamProtocol};
    use std::sync::Arc;

    fn route(id: &str, path: &str, kind: PathKind) -> Route {
        let backend = Backend {
            key: "default/web:80".into(),
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            problem: None,
        };
        Route {
            id: id.into(),
            host: HostMatch::Any,
            path: path.into(),
            kind,
            backend: Arc::new(backend),
            options: Arc::default(),
        }
    }

    #[test]
    fn first_claim_wins_and_lookups_follow_precedence() {
        use PathKind::*;
        let claims = [
            ("deep", "/a/b", Prefix),
            ("specific", "/a", ImplementationSpecific),
            ("exact", "/a/b/c", Exact),
            ("late", "/a/b", Prefix),
            ("root", "/", Prefix),
            ("later", "/a/b", Prefix),
            ("prefix", "/a", Prefix),
        ];
        let claims = claims.map(|(id, path, kind)| (route(id, path, kind), id));
        let paths = Paths::new(claims.into(), |id, holder| {
            format!("{id} lost to {}", holder.id)
        });
        assert_eq!(
            paths.conflicts(),
            ["late lost to deep", "later lost to deep"]
        );
        let found = |path| paths.lookup(path).map(|r| r.id.to_string());
        assert_eq!(found("/a/b/c").as_deref(), Some("exact"));
        assert_eq!(found("/a/b/c/d").as_deref(), Some("deep"));
        assert_eq!(found("/a/b/").as_deref(), Some("deep"));
        assert_eq!(
            found("/a/bc").as_deref(),
            Some("prefix"),
            "Prefix before ImplementationSpecific"
        );
        assert_eq!(found("/x").as_deref(), Some("root"));
        assert_eq!(paths.routes().count(), 5);
    }

    #[test]
    fn prefixes_walk_up_to_the_root() {
        let all = |path| prefixes(path).collect::<Vec<_>>();
        assert_eq!(all("/a/b/c"), ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(all("/a/b/"), ["/a/b", "/a", "/"]);
        assert_eq!(all("/"), ["/"]);
    }
}
