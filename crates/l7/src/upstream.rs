//! Upstream state that outlives route tables: per-endpoint counters and passive health keyed
//! by (backend key, address), and round-robin tickets per backend. A table is installed
//! with the state of each of its backends looked up once ([`Installed`]), so a request
//! finds it without a lock.

use crate::config::Health;
use flatnet_l7_routes::{Backend, Table};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Identifies an endpoint of a backend.
pub type EndpointKey = (Arc<str>, SocketAddr);

/// Passive health after one answer: the new count of consecutive failures, and whether the
/// endpoint is (again) to be ejected.
pub fn after_answer(failures: u32, failed: bool, eject_after: u32) -> (u32, bool) {
    if failed {
        let n = failures.saturating_add(1);
        (n, n >= eject_after.max(1))
    } else {
        (0, false)
    }
}

/// The instant ejection deadlines count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Live state of one endpoint; atomics only, so that requests on different workers never
/// wait for each other, and a healthy endpoint's state is only read.
#[derive(Debug, Default)]
pub struct Endpoint {
    in_flight: AtomicU64,
    failures: AtomicU32,
    /// Nanoseconds after [`epoch`] until which it is ejected; 0: never ejected.
    ejected_until: AtomicU64,
}

impl Endpoint {
    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Until when it is (or was last) ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(epoch() + Duration::from_nanos(nanos)),
        }
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records an answer (`failed`: connect failure or 5xx) at `now`; true when this ejects
    /// it.
    pub fn record(&self, failed: bool, now: impl FnOnce() -> Instant, health: &Health) -> bool {
        let before = self.failures.load(Ordering::Relaxed);
        let (after, eject) = after_answer(before, failed, health.eject_after);
        if after != before {
            self.failures.store(after, Ordering::Relaxed);
        }
        if !eject {
            if !failed && self.ejected_until.load(Ordering::Relaxed) != 0 {
                self.ejected_until.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let now = now();
        let newly = self.ejected_until().is_none_or(|t| now >= t);
        if newly {
            let until = (now + health.eject_for).saturating_duration_since(epoch());
            let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
            self.ejected_until.store(nanos, Ordering::Relaxed);
        }
        newly
    }
}

/// A request in flight to an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A counter on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded(pub AtomicUsize);

/// Round-robin counters of a backend, one per worker, so that workers do not contend for one.
pub type Tickets = Arc<[Padded]>;

/// The state of one backend's endpoints, as a table installs it.
#[derive(Debug, Clone)]
pub struct BackendState {
    /// The backend's round-robin counters, by worker.
    pub tickets: Tickets,
    /// Each endpoint's state, in the order of [`Backend::endpoints`].
    pub endpoints: Vec<Arc<Endpoint>>,
}

/// A route table with the state of every backend it names.
pub struct Installed {
    /// The table.
    pub table: Arc<Table>,
    backends: HashMap<Arc<str>, BackendState, ahash::RandomState>,
}

impl Installed {
    /// The state of `backend`, a backend of this table.
    pub fn backend(&self, backend: &Backend) -> Option<&BackendState> {
        self.backends
            .get(&backend.key)
            .filter(|s| s.endpoints.len() == backend.endpoints.len())
    }
}

/// Per-endpoint and per-backend state.
#[derive(Debug)]
pub struct Upstreams {
    workers: usize,
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
    tickets: Mutex<HashMap<Arc<str>, Tickets>>,
}

impl Upstreams {
    /// No state yet, for `workers` workers.
    pub fn new(workers: usize) -> Upstreams {
        Upstreams {
            workers: workers.max(1),
            endpoints: Mutex::default(),
            tickets: Mutex::default(),
        }
    }

    /// The state of an endpoint, created on first use.
    fn endpoint(&self, backend: &Arc<str>, addr: SocketAddr) -> Arc<Endpoint> {
        lock(&self.endpoints)
            .entry((backend.clone(), addr))
            .or_default()
            .clone()
    }

    /// The state of `backend` now.
    pub fn state(&self, backend: &Backend) -> BackendState {
        let tickets = lock(&self.tickets)
            .entry(backend.key.clone())
            .or_insert_with(|| (0..self.workers).map(|_| Padded::default()).collect())
            .clone();
        let endpoints = (backend.endpoints.iter())
            .map(|a| self.endpoint(&backend.key, *a))
            .collect();
        BackendState { tickets, endpoints }
    }

    /// `table` with the state of its backends; the state of endpoints in no route of it
    /// is dropped.
    pub fn install(&self, table: Arc<Table>) -> Installed {
        let mut backends = HashMap::default();
        let mut keep = HashSet::new();
        for backend in table.backends() {
            keep.extend(backend.endpoints.iter().map(|a| (backend.key.clone(), *a)));
            backends.insert(backend.key.clone(), self.state(backend));
        }
        self.retain(&keep);
        Installed { table, backends }
    }

    /// Forgets endpoints and backends not in `keep` (after a table change).
    fn retain(&self, keep: &HashSet<EndpointKey>) {
        lock(&self.endpoints).retain(|k, _| keep.contains(k));
        let backends: HashSet<&Arc<str>> = keep.iter().map(|(b, _)| b).collect();
        lock(&self.tickets).retain(|b, _| backends.contains(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_eject_after_n_and_success_resets() {
        assert_eq!(after_answer(0, true, 3), (1, false));
        assert_eq!(after_answer(2, true, 3), (3, true));
        assert_eq!(after_answer(3, true, 3), (4, true));
        assert_eq!(after_answer(5, false, 3), (0, false));
    }

    #[test]
    fn ejection_lasts_then_trial() {
        let health = Health {
            eject_after: 2,
            eject_for: Duration::from_secs(10),
        };
        let e = Endpoint::default();
        let t0 = Instant::now();
        let at = |s: u64| move || t0 + Duration::from_secs(s);
        let ejected = |e: &Endpoint, s: u64| e.ejected_until().is_some_and(|u| at(s)() < u);
        assert!(!e.record(true, at(0), &health));
        assert!(e.record(true, at(0), &health));
        assert!(ejected(&e, 9));
        assert!(!ejected(&e, 11));
        // on trial: one failure ejects again, a success restores
        assert!(e.record(true, at(11), &health));
        assert!(ejected(&e, 12));
        assert!(!e.record(false, at(22), &health));
        assert!(!ejected(&e, 22));
        assert_eq!(e.ejected_until(), None);
    }

    #[test]
    fn state_is_shared_per_backend_and_address_and_pruned() {
        let u = Upstreams::new(2);
        let backend = Backend {
            key: "ns/web:80".into(),
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
            protocol: flatnet_l7_routes::UpstreamProtocol::Http1,
            problem: None,
        };
        let first = u.state(&backend);
        let guard = first.endpoints[0].start();
        assert_eq!(u.state(&backend).endpoints[0].in_flight(), 1);
        drop(guard);
        assert_eq!(u.state(&backend).endpoints[0].in_flight(), 0);
        assert_eq!(first.tickets.len(), 2);
        first.tickets[1].0.fetch_add(1, Ordering::Relaxed);
        assert_eq!(u.state(&backend).tickets[1].0.load(Ordering::Relaxed), 1);
        let installed = u.install(Arc::new(Table::default()));
        assert!(installed.backend(&backend).is_none());
        assert_eq!(u.state(&backend).tickets[1].0.load(Ordering::Relaxed), 0);
    }
}
