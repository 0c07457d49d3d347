//! The path rules of one host level, indexed for a lookup in O(path depth).

use crate::{Map, PathKind, Route};

/// The routes of one host (or wildcard suffix, or of every host), by rule path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Paths {
    by_path: Map<String, Slot>,
}

/// The routes at one rule path, one per [`PathKind`].
#[derive(Clone, Debug, Default)]
struct Slot {
    exact: Option<Route>,
    prefix: Option<Route>,
    specific: Option<Route>,
}

impl Slot {
    fn kind(&mut self, kind: PathKind) -> &mut Option<Route> {
        match kind {
            PathKind::Exact => &mut self.exact,
            PathKind::Prefix => &mut self.prefix,
            PathKind::ImplementationSpecific => &mut self.specific,
        }
    }

    /// The Prefix route, else the ImplementationSpecific one.
    fn prefix_like(&self) -> Option<&Route> {
        self.prefix.as_ref().or(self.specific.as_ref())
    }
}

impl Paths {
    /// Adds `route`; when its path and kind are taken, gives back the route holding them.
    pub(crate) fn insert(&mut self, route: Route) -> Result<(), &Route> {
        let slot = self.by_path.entry(route.path.clone()).or_default();
        match slot.kind(route.kind) {
            Some(holder) => Err(holder),
            empty => {
                *empty = Some(route);
                Ok(())
            }
        }
    }

    /// The route for a normalised path: the Exact rule equal to it, else the Prefix (then
    /// ImplementationSpecific) rule at its longest matching ancestor.
    pub(crate) fn lookup(&self, path: &str) -> Option<&Route> {
        let exact = self.by_path.get(path).and_then(|slot| slot.exact.as_ref());
        exact.or_else(|| prefixes(path).find_map(|prefix| self.by_path.get(prefix)?.prefix_like()))
    }

    /// Every route, in no particular order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.by_path
            .values()
            .flat_map(|slot| [&slot.exact, &slot.prefix, &slot.specific])
            .flatten()
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
    use super::prefixes;

    #[test]
    fn prefixes_walk_up_to_the_root() {
        let all = |path| prefixes(path).collect::<Vec<_>>();
        assert_eq!(all("/a/b/c"), ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(all("/a/b/"), ["/a/b", "/a", "/"]);
        assert_eq!(all("/"), ["/"]);
    }
}
