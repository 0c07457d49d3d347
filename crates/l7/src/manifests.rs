//! A standalone source of route tables: multi-document Kubernetes YAML in a file or a folder
//! (Ingress, IngressClass, Service, EndpointSlice, Secret; other kinds are skipped), and a
//! watcher that rebuilds the table when a file changes.

use anyhow::{anyhow, Context};
use flatnet_l7_routes::{Inputs, Table};
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

/// How often [`watch`] looks at the files.
pub const POLL: Duration = Duration::from_millis(20);

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

/// The manifest files of `path`: itself if a file, else the YAML and JSON files under it.
pub fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
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
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A file's version as far as reloading goes: its size and modification time.
type Version = (u64, Option<SystemTime>);

fn version(file: &Path) -> Version {
    let meta = std::fs::metadata(file).ok();
    let len = meta.as_ref().map_or(0, |m| m.len());
    (len, meta.and_then(|m| m.modified().ok()))
}

/// The objects of every manifest file, kept in file order, so that a change re-reads only
/// the files that changed (at 10,000 Ingresses parsing is most of a reload) and the table is
/// built from them without copying them.
#[derive(Default)]
struct Cache {
    /// Each file's version and how many objects of each kind it holds in `all`.
    files: BTreeMap<PathBuf, (Version, Counts)>,
    /// The objects of every file, in file order.
    all: Objects,
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

    /// Splits `self` into consecutive parts of the given sizes (moving, not copying).
    fn split(self, sizes: &[Counts]) -> Vec<Objects> {
        fn parts<T>(all: Vec<T>, sizes: impl Iterator<Item = usize>) -> Vec<Vec<T>> {
            let mut all = all.into_iter();
            sizes.map(|n| all.by_ref().take(n).collect()).collect()
        }
        let kind = |k: usize| sizes.iter().map(move |c| c[k]);
        let ingresses = parts(self.ingresses, kind(0));
        let classes = parts(self.classes, kind(1));
        let services = parts(self.services, kind(2));
        let slices = parts(self.slices, kind(3));
        let secrets = parts(self.secrets, kind(4));
        let zipped = ingresses
            .into_iter()
            .zip(classes)
            .zip(services)
            .zip(slices)
            .zip(secrets);
        zipped
            .map(
                |((((ingresses, classes), services), slices), secrets)| Objects {
                    ingresses,
                    classes,
                    services,
                    slices,
                    secrets,
                },
            )
            .collect()
    }

    fn append(&mut self, mut other: Objects) {
        self.ingresses.append(&mut other.ingresses);
        self.classes.append(&mut other.classes);
        self.services.append(&mut other.services);
        self.slices.append(&mut other.slices);
        self.secrets.append(&mut other.secrets);
    }
}

impl Cache {
    /// Re-reads the files of `path` that are new or changed and forgets removed ones; false
    /// when nothing changed. On an error nothing is changed.
    fn refresh(&mut self, path: &Path) -> anyhow::Result<bool> {
        let listed = files(path)?;
        let mut fresh = BTreeMap::new();
        for file in &listed {
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
        if fresh.is_empty() && self.files.len() == listed.len() {
            return Ok(false);
        }
        let sizes: Vec<Counts> = self.files.values().map(|(_, counts)| *counts).collect();
        let mut kept: BTreeMap<PathBuf, (Version, Objects)> = std::mem::take(&mut self.files)
            .into_iter()
            .zip(std::mem::take(&mut self.all).split(&sizes))
            .map(|((file, (seen, _)), objects)| (file, (seen, objects)))
            .collect();
        for file in listed {
            let Some((now, objects)) = fresh.remove(&file).or_else(|| kept.remove(&file)) else {
                continue;
            };
            self.files.insert(file, (now, objects.counts()));
            self.all.append(objects);
        }
        Ok(true)
    }
}

/// Loads `path` (an error if it does not load) and keeps polling it every [`POLL`] on a
/// thread of its own: each change that loads sends a new table (only changed files are
/// parsed again); one that does not is logged and the last table kept. The poller ends
/// when every receiver is dropped.
pub fn watch(path: PathBuf) -> anyhow::Result<watch::Receiver<Arc<Table>>> {
    let mut cache = Cache::default();
    cache.refresh(&path)?;
    let (tx, rx) = watch::channel(Arc::new(cache.all.table()));
    std::thread::Builder::new()
        .name("manifests".into())
        .spawn(move || {
            // Replaced tables, held until this thread has the last reference: a table is
            // freed by the thread that built it, so the allocator gives its memory back at
            // once (freed by a proxy worker, it would wait in this thread's heap).
            let mut retired: Vec<Arc<Table>> = Vec::new();
            while !tx.is_closed() {
                std::thread::sleep(POLL);
                retired.retain(|table| Arc::strong_count(table) > 1);
                match cache.refresh(&path) {
                    Ok(false) => {}
                    Ok(true) => {
                        let table = cache.all.table();
                        for w in table.warnings() {
                            tracing::warn!("{w}");
                        }
                        retired.push(tx.send_replace(Arc::new(table)));
                    }
                    Err(e) => tracing::warn!("manifests not reloaded: {e:#}"),
                }
            }
        })?;
    Ok(rx)
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
        let names: Vec<_> = files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.yaml", "sub/b.yml"]);
        let mut cache = Cache::default();
        assert!(cache.refresh(dir.path()).unwrap());
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
        assert!(cache.refresh(dir.path()).unwrap());
        assert!(!cache.refresh(dir.path()).unwrap(), "nothing changed");
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
        assert!(cache.refresh(dir.path()).unwrap());
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
        assert!(cache.refresh(dir.path()).unwrap());
        assert_eq!(
            names(&cache),
            ["a1", "c1", "c2"],
            "a removed file is forgotten"
        );
    }
}
