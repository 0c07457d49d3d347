//! A standalone source of route tables: multi-document Kubernetes YAML in a file or a folder
//! (Ingress, IngressClass, Service, EndpointSlice, Secret; other kinds are skipped), and a
//! watcher that rebuilds the table when a file changes.

use anyhow::{anyhow, Context};
use flatnet_l7_routes::{IngressChange, Inputs, Table};
use flatnet_notices::Notices;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The objects a route table is built from.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Ingresses.
    pub ingresses: Vec<Ingress>,
    /// IngressClasses.
    pub classes: Vec<IngressClass>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Secrets.
    pub secrets: Vec<Secret>,
}

fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string() {
        p if p == "." => e.inner().to_string(),
        p => format!("{p}: {}", e.inner()),
    })
}

impl Objects {
    /// Adds the objects of a multi-document YAML text; `origin` names it in errors, which
    /// also name the document, the object and the field.
    pub fn parse(&mut self, text: &str, origin: &str) -> anyhow::Result<()> {
        for (n, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let at = format!("{origin}: document {}", n + 1);
            let value = serde_yaml_ng::Value::deserialize(document).with_context(|| at.clone())?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let meta = |field: &str| {
                value
                    .get("metadata")
                    .and_then(|m| m.get(field))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let name = match meta("namespace") {
                ns if ns.is_empty() => meta("name"),
                ns => format!("{ns}/{}", meta("name")),
            };
            let object = format!("{at} ({kind} {name})");
            let result = match kind.as_str() {
                "Ingress" => typed(value).map(|o| self.ingresses.push(o)),
                "IngressClass" => typed(value).map(|o| self.classes.push(o)),
                "Service" => typed(value).map(|o| self.services.push(o)),
                "EndpointSlice" => typed(value).map(|o| self.slices.push(o)),
                "Secret" => typed(value).map(|o| self.secrets.push(o)),
                _ => Ok(()),
            };
            result.map_err(|e| anyhow!("{object}: {e}"))?;
        }
        Ok(())
    }

    /// The objects as the table builder takes them.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            ingresses: &self.ingresses,
            classes: &self.classes,
            services: &self.services,
            slices: &self.slices,
            secrets: &self.secrets,
        }
    }

    /// The route table of these objects.
    pub fn table(&self) -> Table {
        Table::build(&self.inputs())
    }
}

/// The manifest files of `path` (itself if a file, else the YAML and JSON files under it,
/// sorted) and the folders to watch for changes to them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The manifest files, in the order their objects are taken.
    pub files: Vec<PathBuf>,
    /// `path` and every folder under it; for a file, the folder holding it.
    pub folders: Vec<PathBuf>,
}

/// Lists the manifests of `path`.
pub fn list(path: &Path) -> anyhow::Result<Listing> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        return Ok(Listing {
            files: vec![path.to_path_buf()],
            folders: vec![parent.unwrap_or(Path::new(".")).to_path_buf()],
        });
    }
    let mut listing = Listing::default();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in
            std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
        {
            let p = entry?.path();
            let manifest = matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            );
            if p.is_dir() {
                folders.push(p);
            } else if manifest {
                listing.files.push(p);
            }
        }
        listing.folders.push(folder);
    }
    listing.files.sort();
    Ok(listing)
}

/// A file's version as far as reloading goes: its size and modification time.
type Version = (u64, Option<SystemTime>);

fn version(file: &Path) -> Version {
    let meta = std::fs::metadata(file).ok();
    let len = meta.as_ref().map_or(0, |m| m.len());
    (len, meta.and_then(|m| m.modified().ok()))
}

/// The objects of every manifest file, kept in file order, so that a change re-reads only
/// the files that changed (at 10,000 Ingresses parsing is most of a reload) and replaces
/// only their objects in place.
#[derive(Default)]
struct Cache {
    /// Each file's version and how many objects of each kind it holds in `all`.
    files: BTreeMap<PathBuf, (Version, Counts)>,
    /// The objects of every file, in file order.
    all: Objects,
    /// The folders of the last listing.
    folders: Vec<PathBuf>,
}

/// How many Ingresses, IngressClasses, Services, EndpointSlices and Secrets a file holds.
type Counts = [usize; 5];

impl Objects {
    fn counts(&self) -> Counts {
        [
            self.ingresses.len(),
            self.classes.len(),
            self.services.len(),
            self.slices.len(),
            self.secrets.len(),
        ]
    }

    /// Replaces the `len` objects of each kind from `at` with `new`'s (moving only the
    /// objects behind them, and those only when the counts differ); gives back the
    /// replaced ones.
    fn replace(&mut self, at: Counts, len: Counts, new: Objects) -> Objects {
        fn splice<T>(all: &mut Vec<T>, at: usize, len: usize, new: Vec<T>) -> Vec<T> {
            all.splice(at..at + len, new).collect()
        }
        Objects {
            ingresses: splice(&mut self.ingresses, at[0], len[0], new.ingresses),
            classes: splice(&mut self.classes, at[1], len[1], new.classes),
            services: splice(&mut self.services, at[2], len[2], new.services),
            slices: splice(&mut self.slices, at[3], len[3], new.slices),
            secrets: splice(&mut self.secrets, at[4], len[4], new.secrets),
        }
    }

    /// Whether the objects other than Ingresses from `at` (`len` of each kind) are `old`'s.
    fn same_but_ingresses(&self, at: Counts, len: Counts, old: &Objects) -> bool {
        fn same<T: PartialEq>(all: &[T], at: usize, len: usize, old: &[T]) -> bool {
            all[at..at + len] == *old
        }
        same(&self.classes, at[1], len[1], &old.classes)
            && same(&self.services, at[2], len[2], &old.services)
            && same(&self.slices, at[3], len[3], &old.slices)
            && same(&self.secrets, at[4], len[4], &old.secrets)
    }
}

/// What a refresh changed: only Ingresses (the route table can be updated for the hosts
/// they name), or more (it is built anew).
#[derive(Debug, PartialEq)]
enum Change {
    /// The Ingresses of the changed files as they were, and as they are.
    Ingresses {
        before: Vec<Ingress>,
        after: Vec<Ingress>,
    },
    More,
}

impl Change {
    /// Adds that `old` was replaced by the objects `all` holds from `at` (`len` of each
    /// kind).
    fn add(&mut self, all: &Objects, at: Counts, len: Counts, old: Objects) {
        match self {
            Change::Ingresses { before, after } if all.same_but_ingresses(at, len, &old) => {
                // A file rewritten with one Ingress changed: the others are left out.
                let now = &all.ingresses[at[0]..at[0] + len[0]];
                let mut was = old.ingresses.into_iter();
                for ingress in now {
                    match was.next() {
                        Some(same) if same == *ingress => {}
                        Some(other) => {
                            before.push(other);
                            after.push(ingress.clone());
                        }
                        None => after.push(ingress.clone()),
                    }
                }
                before.extend(was);
            }
            _ => *self = Change::More,
        }
    }

    /// The table of `objects`: `current` updated when only Ingresses changed, else built.
    fn table(&self, current: &Table, objects: &Objects) -> Table {
        let updated = match self {
            Change::Ingresses { before, after } => {
                current.update(&objects.inputs(), &IngressChange { before, after })
            }
            Change::More => None,
        };
        updated.unwrap_or_else(|| objects.table())
    }
}

fn advance(at: &mut Counts, by: Counts) {
    for (a, b) in at.iter_mut().zip(by) {
        *a += b;
    }
}

impl Cache {
    /// Re-reads the files of `path` that are new or changed and forgets removed ones; says
    /// what changed (`None`: nothing). On an error nothing is changed.
    fn refresh(&mut self, path: &Path) -> anyhow::Result<Option<Change>> {
        let listing = list(path)?;
        let mut fresh = BTreeMap::new();
        for file in &listing.files {
            let now = version(file);
            if self.files.get(file).is_some_and(|(seen, _)| *seen == now) {
                continue;
            }
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut objects = Objects::default();
            objects.parse(&text, &file.display().to_string())?;
            fresh.insert(file.clone(), (now, objects));
        }
        self.folders = listing.folders;
        if fresh.is_empty() && self.files.len() == listing.files.len() {
            return Ok(None);
        }
        let mut change = Change::Ingresses {
            before: Vec::new(),
            after: Vec::new(),
        };
        // Both lists are sorted: walk them together, with `at` the position of the file
        // at hand's objects in `all`.
        let mut old = std::mem::take(&mut self.files).into_iter().peekable();
        let mut at = Counts::default();
        for file in listing.files {
            while let Some((_, (_, gone))) = old.next_if(|(f, _)| *f < file) {
                let was = self.all.replace(at, gone, Objects::default());
                change.add(&self.all, at, Counts::default(), was);
            }
            let kept = old.next_if(|(f, _)| *f == file).map(|(_, entry)| entry);
            let entry = match (fresh.remove(&file), kept) {
                (Some((now, objects)), kept) => {
                    let counts = objects.counts();
                    let len = kept.map_or(Counts::default(), |(_, len)| len);
                    let was = self.all.replace(at, len, objects);
                    change.add(&self.all, at, counts, was);
                    (now, counts)
                }
                (None, Some(kept)) => kept,
                (None, None) => unreachable!("a file not read again was listed before"),
            };
            advance(&mut at, entry.1);
            self.files.insert(file, entry);
        }
        for (_, (_, gone)) in old {
            let was = self.all.replace(at, gone, Objects::default());
            change.add(&self.all, at, Counts::default(), was);
        }
        Ok(Some(change))
    }
}

/// How long [`watch`] waits for a change notice before it looks at the files anyway.
pub const FALLBACK: Duration = Duration::from_secs(1);

/// How often [`watch`] looks at the files when the system gives no change notices.
pub const POLL: Duration = Duration::from_millis(20);

/// Loads `path` (an error if it does not load) and watches it on a thread of its own: each
/// change that loads sends a new table (only changed files are parsed again); one that does
/// not is logged and the last table kept. Changes are noticed through inotify as they
/// happen, and the files looked at every [`FALLBACK`] anyway (every [`POLL`] where inotify
/// is not available). The watcher ends when every receiver is dropped.
pub fn watch(path: PathBuf) -> anyhow::Result<watch::Receiver<Arc<Table>>> {
    watch_every(path, FALLBACK)
}

/// [`watch`], looking at the files every `fallback` when no change notice comes.
fn watch_every(path: PathBuf, fallback: Duration) -> anyhow::Result<watch::Receiver<Arc<Table>>> {
    let (first, loaded) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("manifests".into())
        .spawn(move || {
            // Every table is built on this thread, the first too, and freed here: replaced
            // tables are held until this thread has the last reference, then their memory
            // goes back to the system at once (freed by a proxy worker, it would wait in this
            // thread's heap, and every new table would take fresh pages).
            let mut cache = Cache::default();
            if let Err(e) = cache.refresh(&path) {
                return drop(first.send(Err(e)));
            }
            // Watched before the first table goes out: no change after it is missed.
            let mut notices = match Notices::new() {
                Ok(notices) => Some(notices),
                Err(e) => {
                    tracing::warn!("no change notices for {}: {e}; polling", path.display());
                    None
                }
            };
            if let Some(notices) = &notices {
                notices.watch(&cache.folders);
            }
            let (tx, rx) = watch::channel(Arc::new(cache.all.table()));
            let _ = first.send(Ok(rx));
            let mut retired: Vec<Arc<Table>> = Vec::new();
            while !tx.is_closed() {
                match &mut notices {
                    Some(n) => {
                        if let Err(e) = n.wait(fallback, flatnet_notices::changes_content) {
                            tracing::warn!("change notices: {e}");
                            std::thread::sleep(POLL);
                        }
                    }
                    None => std::thread::sleep(POLL),
                }
                let started = std::time::Instant::now();
                let refreshed = cache.refresh(&path);
                let read = started.elapsed();
                if let Some(n) = &notices {
                    n.watch(&cache.folders);
                }
                match refreshed {
                    Ok(None) => {}
                    Ok(Some(change)) => {
                        let table = change.table(&tx.borrow(), &cache.all);
                        let built = started.elapsed() - read;
                        for w in table.warnings() {
                            tracing::warn!("{w}");
                        }
                        retired.push(tx.send_replace(Arc::new(table)));
                        tracing::info!(
                            read_ms = read.as_secs_f64() * 1e3,
                            build_ms = built.as_secs_f64() * 1e3,
                            "route table replaced"
                        );
                    }
                    Err(e) => tracing::warn!("manifests not reloaded: {e:#}"),
                }
                let held = retired.len();
                retired.retain(|table| Arc::strong_count(table) > 1);
                if retired.len() < held {
                    flatnet_alloc::give_back_freed_memory();
                }
            }
        })?;
    loaded.recv()?
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: skipped}
---
";

    #[test]
    fn parses_by_kind_and_skips_others() {
        let mut o = Objects::default();
        o.parse(GOOD, "a.yaml").unwrap();
        assert_eq!(o.services.len(), 1);
        assert_eq!(o.ingresses.len(), 0);
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        let bad = "kind: Service\nmetadata: {name: web, namespace: x}\nspec:\n  ports: [{port: eighty}]\n";
        let mut o = Objects::default();
        let e = o
            .parse(&format!("{GOOD}{bad}"), "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.yaml: document 3 (Service x/web): spec.ports[0].port:"),
            "{e}"
        );
        let e = o.parse("a: [", "n.yaml").unwrap_err();
        assert!(format!("{e:#}").starts_with("n.yaml: document 1"), "{e:#}");
    }

    #[test]
    fn folders_are_read_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let listing = list(dir.path()).unwrap();
        let names: Vec<_> = listing
            .files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.yaml", "sub/b.yml"]);
        assert_eq!(
            listing.folders,
            [dir.path().to_path_buf(), dir.path().join("sub")]
        );
        let mut cache = Cache::default();
        assert!(cache.refresh(dir.path()).unwrap().is_some());
        assert_eq!(cache.all.services.len(), 2);
    }

    #[test]
    fn only_changed_files_are_read_again_and_a_bad_edit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|n| dir.path().join(format!("{n}.yaml")));
        let service = |name: &str| {
            format!("kind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec: {{ports: [{{port: 80}}]}}\n---\n")
        };
        std::fs::write(&a, service("a1")).unwrap();
        std::fs::write(&b, service("b1")).unwrap();
        std::fs::write(&c, service("c1") + &service("c2")).unwrap();
        let mut cache = Cache::default();
        assert_eq!(cache.refresh(dir.path()).unwrap(), Some(Change::More));
        assert_eq!(cache.refresh(dir.path()).unwrap(), None, "nothing changed");
        let names = |cache: &Cache| -> Vec<String> {
            let names = cache
                .all
                .services
                .iter()
                .map(|s| s.metadata.name.clone().unwrap());
            names.collect()
        };
        assert_eq!(names(&cache), ["a1", "b1", "c1", "c2"]);
        // Mark a's object: a refresh that re-read a would lose the mark.
        cache.all.services[0].metadata.uid = Some("kept".into());
        std::fs::write(&b, service("b1") + &service("b2")).unwrap();
        assert_eq!(cache.refresh(dir.path()).unwrap(), Some(Change::More));
        assert_eq!(
            names(&cache),
            ["a1", "b1", "b2", "c1", "c2"],
            "file order kept"
        );
        assert_eq!(
            cache.all.services[0].metadata.uid.as_deref(),
            Some("kept"),
            "a not read"
        );
        std::fs::write(&b, "kind: Service\nspec: {ports: [{port: eighty}]}\n").unwrap();
        assert!(cache.refresh(dir.path()).is_err());
        assert_eq!(
            names(&cache),
            ["a1", "b1", "b2", "c1", "c2"],
            "the last good objects"
        );
        std::fs::remove_file(&b).unwrap();
        assert_eq!(cache.refresh(dir.path()).unwrap(), Some(Change::More));
        assert_eq!(
            names(&cache),
            ["a1", "c1", "c2"],
            "a removed file is forgotten"
        );
        std::fs::write(dir.path().join("ab.yaml"), service("ab1")).unwrap();
        std::fs::write(&c, service("c3")).unwrap();
        std::fs::write(dir.path().join("d.yaml"), service("d1")).unwrap();
        assert_eq!(cache.refresh(dir.path()).unwrap(), Some(Change::More));
        assert_eq!(
            names(&cache),
            ["a1", "ab1", "c3", "d1"],
            "new files take their place in file order"
        );
    }

    /// An Ingress `name` for `name.example.com/` to Service `web`, per name.
    fn ingresses(names: &[&str]) -> String {
        let one = |n: &&str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {n}, namespace: x}}\nspec:\n  rules: [{{host: {n}.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n---\n"
            )
        };
        names.iter().map(one).collect()
    }

    #[test]
    fn a_change_of_ingresses_only_updates_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = ["a", "b"].map(|n| dir.path().join(format!("{n}.yaml")));
        let service = "kind: Service\nmetadata: {name: web, namespace: x}\nspec: {ports: [{port: 80}]}\n---\n";
        let class = format!(
            "kind: IngressClass\nmetadata: {{name: flatnet, annotations: {{{}: \"true\"}}}}\nspec: {{controller: {}}}\n---\n",
            flatnet_l7_routes::DEFAULT_CLASS_ANNOTATION,
            flatnet_l7_routes::CONTROLLER
        );
        std::fs::write(&a, ingresses(&["one", "two"])).unwrap();
        std::fs::write(&b, ingresses(&["three"]) + service + &class).unwrap();
        let mut cache = Cache::default();
        cache.refresh(dir.path()).unwrap();
        let table = cache.all.table();
        let name = |i: &Ingress| i.metadata.name.clone().unwrap();
        std::fs::write(&a, ingresses(&["one", "four"])).unwrap();
        let Some(Change::Ingresses { before, after }) = cache.refresh(dir.path()).unwrap() else {
            panic!("only Ingresses changed");
        };
        let names = |list: &[Ingress]| list.iter().map(name).collect::<Vec<String>>().join(" ");
        assert_eq!(
            (names(&before), names(&after)),
            ("two".to_owned(), "four".to_owned()),
            "one is the same"
        );
        let change = Change::Ingresses { before, after };
        let updated = change.table(&table, &cache.all);
        let ids = |t: &Table| {
            t.routes()
                .iter()
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&updated), ids(&cache.all.table()));
        assert!(ids(&updated).iter().any(|id| id.starts_with("x/four:")));
        std::fs::remove_file(&a).unwrap();
        let Some(Change::Ingresses { before, after }) = cache.refresh(dir.path()).unwrap() else {
            panic!("only Ingresses went");
        };
        assert_eq!((before.len(), after.len()), (2, 0));
        std::fs::write(&b, ingresses(&["three"]) + &class).unwrap();
        assert_eq!(
            cache.refresh(dir.path()).unwrap(),
            Some(Change::More),
            "a Service went"
        );
    }

    #[tokio::test]
    async fn changes_are_noticed_without_polling() {
        const BASE: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: flatnet\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: flatnet.dev/ingress-controller}\n---\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {ports: [{port: 80}]}\n";
        let dir = tempfile::tempdir().unwrap();
        let (root, stage) = (dir.path().join("m"), dir.path().join("stage"));
        std::fs::create_dir_all(root.join("nested")).unwrap();
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(root.join("base.yaml"), BASE).unwrap();
        // Looking at the files on its own only after an hour: what follows is noticed.
        let mut rx = watch_every(root.clone(), Duration::from_secs(3600)).unwrap();
        let routes = |rx: &watch::Receiver<Arc<Table>>| rx.borrow().routes().len();
        assert_eq!(routes(&rx), 0);
        let mut next = async |what: &str| {
            let changed = tokio::time::timeout(Duration::from_secs(10), rx.changed()).await;
            assert!(matches!(changed, Ok(Ok(()))), "{what}: no new table");
            routes(&rx)
        };
        std::fs::write(stage.join("a.yaml"), ingresses(&["a"])).unwrap();
        std::fs::rename(stage.join("a.yaml"), root.join("a.yaml")).unwrap();
        assert_eq!(next("a file renamed in").await, 1);
        std::fs::write(root.join("nested/b.yaml"), ingresses(&["b", "c"])).unwrap();
        assert_eq!(next("a file written in a folder below").await, 3);
        std::fs::create_dir(stage.join("more")).unwrap();
        std::fs::write(stage.join("more/d.yaml"), ingresses(&["d"])).unwrap();
        std::fs::rename(stage.join("more"), root.join("nested/more")).unwrap();
        assert_eq!(next("a folder moved in").await, 4);
        std::fs::write(root.join("nested/more/d.yaml"), ingresses(&["d", "e"])).unwrap();
        assert_eq!(next("a file rewritten in the new folder").await, 5);
        std::fs::remove_file(root.join("a.yaml")).unwrap();
        assert_eq!(next("a file removed").await, 4);
    }
}
