//! One node's table kept between syncs, so that a change costs in proportion to what changed.
//!
//! The table is the sum of one [`Program`] fragment per Service (and one for the cluster's
//! ranges). Elements and chains that several fragments share (a pod behind two Services, the
//! pick chain of every port with the same number of endpoints) are reference-counted. Setting
//! a Service's flows recomputes only that Service's fragment; [`Table::take_changes`] then
//! gives the `nft` commands that bring the kernel from what it was last given to now, and
//! [`Table::take_full`] the whole table. No I/O happens here.

use crate::flows::Flow;
use crate::render::{self, Program, Ranges, TABLE};
use ahash::AHashMap as HashMap;
use std::collections::BTreeMap;

/// The desired table of one node, with what changed since the kernel last got it.
#[derive(Default)]
pub struct Table {
    /// Flows of each Service, by `namespace/name` (a fragment is remade from them when it is
    /// retracted, rather than kept).
    services: HashMap<String, Vec<Flow>>,
    /// Elements of each set and map, with how many fragments hold each.
    elements: HashMap<String, Counted<()>>,
    /// Chains: rules, and how many fragments hold each.
    chains: Counted<Vec<String>>,
    /// Per-endpoint affinity sets: declaration, and how many fragments hold each.
    dynamic_sets: Counted<String>,
    /// Elements changed since the last take, with whether the kernel has them.
    touched_elements: BTreeMap<(String, String), bool>,
    /// Chains changed since the last take, with the rules the kernel has.
    touched_chains: BTreeMap<String, Option<Vec<String>>>,
    /// Affinity sets changed since the last take, with whether the kernel has them.
    touched_sets: BTreeMap<String, bool>,
    /// Whether the kernel was given the table (changes are tracked from then on).
    applied: bool,
    /// [`Ranges::tunnel_port`].
    tunnel_port: Option<u16>,
}

impl Table {
    /// An empty table (no Service) for a cluster with `ranges`.
    pub fn new(ranges: &Ranges) -> Self {
        let mut t = Table {
            tunnel_port: ranges.tunnel_port,
            ..Table::default()
        };
        t.add(render::ranges(ranges));
        t
    }

    /// Sets the flows of Service `service` (`namespace/name`); none removes it. Only that
    /// Service's fragment is recomputed, and only when its flows changed.
    pub fn set_service(&mut self, service: &str, flows: Vec<Flow>) {
        if let Some(old) = self.services.get(service) {
            if *old == flows {
                return;
            }
        } else if flows.is_empty() {
            return;
        }
        if let Some(old) = self.services.remove(service) {
            self.retract(&render::fragment(&old));
        }
        if !flows.is_empty() {
            self.add(render::fragment(&flows));
            self.services.insert(service.to_string(), flows);
        }
    }

    /// Sets the flows of every Service at once: Services without flows here are removed.
    pub fn set_all(&mut self, flows: Vec<Flow>) {
        let mut by_service: HashMap<String, Vec<Flow>> = HashMap::new();
        for f in flows {
            by_service
                .entry(f.service().to_string())
                .or_default()
                .push(f);
        }
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|s| !by_service.contains_key(*s))
            .cloned()
            .collect();
        for s in gone {
            self.set_service(&s, Vec::new());
        }
        for (s, flows) in by_service {
            self.set_service(&s, flows);
        }
    }

    /// Chains plus set and map elements: what the kernel holds for this table.
    pub fn objects(&self) -> usize {
        self.chains.len() + self.elements.values().map(|e| e.len()).sum::<usize>()
    }

    /// The whole table, as `nft -f` takes it (deterministic: sorted by name).
    pub fn text(&self) -> String {
        fn sorted(mut keys: Vec<&String>) -> Vec<&String> {
            keys.sort_unstable();
            keys
        }
        let elements: BTreeMap<&str, Vec<&String>> = self
            .elements
            .iter()
            .map(|(set, els)| (set.as_str(), sorted(els.keys().collect())))
            .collect();
        let sets: BTreeMap<&str, &str> = self
            .dynamic_sets
            .iter()
            .map(|(n, (decl, _))| (n.as_str(), decl.as_str()))
            .collect();
        let chains: BTreeMap<&str, &[String]> = self
            .chains
            .iter()
            .map(|(n, (rules, _))| (n.as_str(), rules.as_slice()))
            .collect();
        render::text(self.tunnel_port, &elements, &sets, &chains)
    }

    /// The whole table for a full sync; after it, the table counts as applied.
    pub fn take_full(&mut self) -> String {
        self.applied = true;
        self.touched_elements.clear();
        self.touched_chains.clear();
        self.touched_sets.clear();
        self.text()
    }

    /// The `nft` commands, as one batch (one transaction), that bring the kernel's table from
    /// what it was last given to now; empty when nothing changed. After it, the table
    /// counts as applied. Call [`Table::take_full`] first: before the kernel had the table,
    /// there is nothing to change.
    pub fn take_changes(&mut self) -> String {
        if !self.applied {
            return String::new();
        }
        let t = format!("inet {TABLE}");
        let mut out = Vec::new();
        let touched_sets = std::mem::take(&mut self.touched_sets);
        let touched_chains = std::mem::take(&mut self.touched_chains);
        let touched_elements = std::mem::take(&mut self.touched_elements);
        // 1. New sets and chains exist before anything refers to them.
        for (name, had) in &touched_sets {
            if let (false, Some((decl, _))) = (had, self.dynamic_sets.get(name)) {
                out.push(format!("add set {t} {name} {{ {decl} }}"));
            }
        }
        for (name, had) in &touched_chains {
            if had.is_none() && self.chains.contains_key(name) {
                out.push(format!("add chain {t} {name}"));
            }
        }
        // 2. Changed and new chains get their rules.
        for (name, had) in &touched_chains {
            let Some((rules, _)) = self.chains.get(name) else {
                continue;
            };
            match had {
                Some(old) if old == rules => continue,
                Some(_) => out.push(format!("flush chain {t} {name}")),
                None => {}
            }
            for r in rules {
                out.push(format!("add rule {t} {name} {r}"));
            }
        }
        // 3. Elements: the gone ones out (a map element is deleted by its key), the new in.
        let mut gone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut added: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for ((set, e), had) in &touched_elements {
            let has = self.elements.get(set).is_some_and(|s| s.contains_key(e));
            match (had, has) {
                (true, false) => gone
                    .entry(set)
                    .or_default()
                    .push(e.split(" : ").next().unwrap_or(e)),
                (false, true) => added.entry(set).or_default().push(e),
                _ => {}
            }
        }
        for (set, keys) in gone {
            out.push(format!(
                "delete element {t} {set} {{ {} }}",
                keys.join(", ")
            ));
        }
        for (set, els) in added {
            out.push(format!("add element {t} {set} {{ {} }}", els.join(", ")));
        }
        // 4. Gone chains: emptied first (they may jump to each other), then deleted.
        let gone: Vec<&String> = touched_chains
            .iter()
            .filter(|(n, had)| had.is_some() && !self.chains.contains_key(*n))
            .map(|(n, _)| n)
            .collect();
        for name in &gone {
            out.push(format!("flush chain {t} {name}"));
        }
        for name in &gone {
            out.push(format!("delete chain {t} {name}"));
        }
        for (name, had) in &touched_sets {
            if *had && !self.dynamic_sets.contains_key(name) {
                out.push(format!("delete set {t} {name}"));
            }
        }
        if out.is_empty() {
            String::new()
        } else {
            out.join("\n") + "\n"
        }
    }

    fn add(&mut self, p: Program) {
        let applied = self.applied;
        for (set, els) in p.elements {
            let counts = self.elements.entry(set.clone()).or_default();
            for e in els {
                let touched = applied.then(|| (set.clone(), e.clone()));
                if let (true, Some(key)) = (hold(counts, e, ()), touched) {
                    self.touched_elements.entry(key).or_insert(false);
                }
            }
        }
        for (name, rules) in p.chains {
            let touched = applied.then(|| name.clone());
            if let (true, Some(name)) = (hold(&mut self.chains, name, rules), touched) {
                self.touched_chains.entry(name).or_insert(None);
            }
        }
        for (name, decl) in p.dynamic_sets {
            let touched = applied.then(|| name.clone());
            if let (true, Some(name)) = (hold(&mut self.dynamic_sets, name, decl), touched) {
                self.touched_sets.entry(name).or_insert(false);
            }
        }
    }

    fn retract(&mut self, p: &Program) {
        let applied = self.applied;
        for (set, els) in &p.elements {
            let Some(counts) = self.elements.get_mut(set) else {
                continue;
            };
            for e in els {
                if release(counts, e).is_some() && applied {
                    self.touched_elements
                        .entry((set.clone(), e.clone()))
                        .or_insert(true);
                }
            }
        }
        for name in p.chains.keys() {
            if let (Some(rules), true) = (release(&mut self.chains, name), applied) {
                self.touched_chains
                    .entry(name.clone())
                    .or_insert(Some(rules));
            }
        }
        for name in p.dynamic_sets.keys() {
            if release(&mut self.dynamic_sets, name).is_some() && applied {
                self.touched_sets.entry(name.clone()).or_insert(true);
            }
        }
    }
}

/// Values by name, each with how many fragments hold it.
type Counted<V> = HashMap<String, (V, u32)>;

/// Counts one more holder of `name` (keeping the first `value`); true when it is new.
fn hold<V>(map: &mut Counted<V>, name: String, value: V) -> bool {
    match map.entry(name) {
        std::collections::hash_map::Entry::Occupied(mut held) => {
            held.get_mut().1 += 1;
            false
        }
        std::collections::hash_map::Entry::Vacant(free) => {
            free.insert((value, 1));
            true
        }
    }
}

/// Counts one holder less of `name`; its value when no holder is left (it is then gone).
fn release<V>(map: &mut Counted<V>, name: &str) -> Option<V> {
    let (_, n) = map.get_mut(name)?;
    *n -= 1;
    if *n > 0 {
        return None;
    }
    map.remove(name).map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Algorithm, Backend};
    use std::net::IpAddr;

    fn ranges() -> (Vec<ipnet::IpNet>, Vec<ipnet::IpNet>) {
        (
            vec!["10.42.0.0/16".parse().unwrap()],
            vec!["10.43.0.0/16".parse().unwrap()],
        )
    }

    /// Port 80 of Service `name` at `vip`, served by pods `10.42.0.<p>` (local when even).
    fn flow(name: &str, vip: &str, pods: &[u8], algorithm: Algorithm) -> Flow {
        Flow {
            id: format!("ns/{name}/tcp/80"),
            proto: "tcp",
            v4: true,
            cluster_ip: Some(vip.parse().unwrap()),
            port: 80,
            node_port: None,
            lb_ips: vec![],
            external_ips: vec![],
            source_ranges: vec![],
            backends: pods
                .iter()
                .map(|p| Backend {
                    ip: IpAddr::from([10, 42, 0, *p]),
                    port: 8080,
                    local: p % 2 == 0,
                })
                .collect(),
            affinity: None,
            external_local: false,
            internal_local: false,
            algorithm,
        }
    }

    fn fresh(flows: &[Flow]) -> String {
        let (pods, services) = ranges();
        let mut t = Table::new(&Ranges {
            pod_cidrs: &pods,
            service_cidrs: &services,
            tunnel_port: None,
        });
        t.set_all(flows.to_vec());
        t.text()
    }

    #[test]
    fn kept_table_matches_a_fresh_one_and_sends_only_changes() {
        let (pods, services) = ranges();
        let mut t = Table::new(&Ranges {
            pod_cidrs: &pods,
            service_cidrs: &services,
            tunnel_port: None,
        });
        let a = flow("a", "10.43.0.1", &[2, 3], Algorithm::Random);
        let b = flow("b", "10.43.0.2", &[2, 5], Algorithm::Random);
        t.set_all(vec![a.clone(), b.clone()]);
        let full = t.take_full();
        assert!(full.contains("10.43.0.1 . tcp . 80 : goto pick-v4-2"));
        assert_eq!(t.take_changes(), "", "nothing changed since the full sync");

        // b goes: pod 2 still backs a, so its hairpin element and the shared pick chain stay.
        t.set_service("ns/b", vec![]);
        let batch = t.take_changes();
        assert!(
            batch.contains("delete element inet flatnet service-ips-v4 { 10.43.0.2 . tcp . 80 }")
        );
        assert!(batch.contains("10.43.0.2 . tcp . 80 . 0, 10.43.0.2 . tcp . 80 . 1"));
        assert!(
            !batch.contains("hairpin") && !batch.contains("chain"),
            "{batch}"
        );
        assert_eq!(t.text(), fresh(std::slice::from_ref(&a)));

        // a grows to three endpoints: a new shared chain, the old one gone, one element more.
        let a3 = flow("a", "10.43.0.1", &[2, 3, 4], Algorithm::Random);
        t.set_service("ns/a", vec![a3.clone()]);
        let batch = t.take_changes();
        assert!(batch.contains("add chain inet flatnet pick-v4-3"));
        assert!(batch.contains("delete chain inet flatnet pick-v4-2"));
        assert!(batch.contains("10.43.0.1 . tcp . 80 . 2 : 10.42.0.4 . 8080"));
        assert!(batch.contains("hairpin-v4 { 10.42.0.4 . 10.42.0.4 }"));
        assert_eq!(t.text(), fresh(std::slice::from_ref(&a3)));

        // A change undone before the next take sends nothing.
        t.set_service(
            "ns/a",
            vec![flow("a", "10.43.0.1", &[7], Algorithm::RoundRobin)],
        );
        t.set_service("ns/a", vec![a3.clone()]);
        assert_eq!(t.take_changes(), "");

        // Round robin gets its own chain; the shared one goes when nothing uses it.
        let rr = flow("a", "10.43.0.1", &[2, 3, 4], Algorithm::RoundRobin);
        t.set_all(vec![rr.clone(), b.clone()]);
        let batch = t.take_changes();
        assert!(batch.contains("add rule inet flatnet svc-") && batch.contains("numgen inc mod 3"));
        assert!(batch.contains("delete chain inet flatnet pick-v4-3"));
        assert_eq!(t.text(), fresh(&[rr, b]));
    }

    #[test]
    fn only_local_endpoints_are_hairpinned() {
        let text = fresh(&[flow("a", "10.43.0.1", &[2, 3], Algorithm::Random)]);
        assert!(text.contains(
            "set hairpin-v4 { type ipv4_addr . ipv4_addr; elements = { 10.42.0.2 . 10.42.0.2 } }"
        ));
    }
}
