//! Upstream state that outlives route tables: per-endpoint counters and passive health keyed
//! by (backend key, address), and round-robin tickets per backend.

use crate::config::Health;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Live state of one endpoint.
#[derive(Debug, Default)]
pub struct Endpoint {
    in_flight: AtomicU64,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is ejected at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        lock(&self.ejected_until).is_some_and(|until| now < until)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records an answer (`failed`: connect failure or 5xx); true when this ejects it.
    pub fn record(&self, failed: bool, now: Instant, health: &Health) -> bool {
        let before = self.failures.load(Ordering::Relaxed);
        let (after, eject) = after_answer(before, failed, health.eject_after);
        self.failures.store(after, Ordering::Relaxed);
        let mut until = lock(&self.ejected_until);
        if !eject {
            if !failed {
                *until = None;
            }
            return false;
        }
        let newly = until.is_none_or(|t| now >= t);
        if newly {
            *until = Some(now + health.eject_for);
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

/// Per-endpoint and per-backend state.
#[derive(Debug, Default)]
pub struct Upstreams {
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
    tickets: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

impl Upstreams {
    /// The state of an endpoint, created on first use.
    pub fn endpoint(&self, backend: &Arc<str>, addr: SocketAddr) -> Arc<Endpoint> {
        lock(&self.endpoints)
            .entry((backend.clone(), addr))
            .or_default()
            .clone()
    }

    /// The next round-robin ticket of a backend.
    pub fn ticket(&self, backend: &Arc<str>) -> usize {
        let counter = lock(&self.tickets)
            .entry(backend.clone())
            .or_default()
            .clone();
        counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets endpoints and backends not in `keep` (after a table change).
    pub fn retain(&self, keep: &HashSet<EndpointKey>) {
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
        assert!(!e.record(true, t0, &health));
        assert!(e.record(true, t0, &health));
        assert!(e.ejected(t0 + Duration::from_secs(9)));
        assert!(!e.ejected(t0 + Duration::from_secs(11)));
        // on trial: one failure ejects again, a success restores
        assert!(e.record(true, t0 + Duration::from_secs(11), &health));
        assert!(e.ejected(t0 + Duration::from_secs(12)));
        assert!(!e.record(false, t0 + Duration::from_secs(22), &health));
        assert!(!e.ejected(t0 + Duration::from_secs(22)));
    }

    #[test]
    fn state_is_shared_per_backend_and_address_and_pruned() {
        let u = Upstreams::default();
        let b: Arc<str> = "ns/web:80".into();
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let guard = u.endpoint(&b, a).start();
        assert_eq!(u.endpoint(&b, a).in_flight(), 1);
        drop(guard);
        assert_eq!(u.endpoint(&b, a).in_flight(), 0);
        assert_eq!(u.ticket(&b), 0);
        assert_eq!(u.ticket(&b), 1);
        u.retain(&HashSet::new());
        assert_eq!(u.ticket(&b), 0);
    }
}
