//! One request's tries at a route's endpoints: each try picks an endpoint not tried yet with
//! the route's balancing policy and the endpoints' live state, and its outcome goes into
//! passive health and the metrics. Both request paths (hyper's and the HTTP/1.1 fast path)
//! use it, so they balance, retry and eject alike.

use crate::balance::{self, Candidate, Draw};
use crate::state::Shared;
use crate::upstream::{BackendState, InFlight, Installed};
use crate::worker::Local;
use flatnet_l7_routes::{Balance, Route};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The tries of one request.
pub struct Attempts<'a> {
    shared: &'a Shared,
    local: &'a Local,
    route: &'a Route,
    state: Cow<'a, BackendState>,
    /// The endpoints as the balancer sees them (`tried` kept from try to try).
    candidates: Vec<Candidate>,
    key: Option<u64>,
    left: u32,
}

/// One try: the endpoint chosen.
#[derive(Debug, Clone, Copy)]
pub struct Try {
    index: usize,
    /// The endpoint's address.
    pub addr: SocketAddr,
}

impl<'a> Attempts<'a> {
    /// Tries for a request to `route`, a route of `installed`: `retryable` ones get the
    /// route's retries on connect failure, others one try; `key` is the request's hash key
    /// ([`balance::hash_key`]).
    pub fn new(
        shared: &'a Shared,
        local: &'a Local,
        installed: &'a Installed,
        route: &'a Route,
        key: Option<u64>,
        retryable: bool,
    ) -> Self {
        let backend = &route.backend;
        let state = match installed.backend(backend) {
            Some(state) => Cow::Borrowed(state),
            None => Cow::Owned(shared.upstreams.state(backend)),
        };
        Attempts {
            shared,
            local,
            route,
            state,
            candidates: (backend.endpoints.iter())
                .map(|addr| Candidate {
                    addr: *addr,
                    in_flight: 0,
                    ejected: false,
                    tried: false,
                })
                .collect(),
            key,
            left: if retryable {
                route.options.retries + 1
            } else {
                1
            },
        }
    }

    /// Whether the try [`Attempts::next`] gave last is the last one.
    pub fn last(&self) -> bool {
        self.left == 0
    }

    /// The next endpoint to try, `None` when the tries are used up or every endpoint was
    /// tried.
    pub fn next(&mut self) -> Option<Try> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut now = None;
        for (c, state) in self.candidates.iter_mut().zip(&self.state.endpoints) {
            c.in_flight = state.in_flight();
            c.ejected = state
                .ejected_until()
                .is_some_and(|until| *now.get_or_insert_with(Instant::now) < until);
        }
        let draw = Draw {
            ticket: self.state.tickets[self.local.index % self.state.tickets.len()]
                .0
                .fetch_add(1, Ordering::Relaxed),
            random: (fastrand::usize(..), fastrand::usize(..)),
            key: self.key,
        };
        let index = balance::choose(&self.route.options.balance, &self.candidates, draw)?;
        self.candidates[index].tried = true;
        Some(Try {
            index,
            addr: self.candidates[index].addr,
        })
    }

    /// Counts a request in flight to the endpoint of `t` until the guard is dropped; only
    /// least-request balancing reads the count, so only its routes keep it.
    pub fn start(&self, t: Try) -> Option<InFlight> {
        (self.route.options.balance == Balance::LeastRequest)
            .then(|| self.state.endpoints[t.index].start())
    }

    /// The connect of `t` failed: counted, and into passive health.
    pub fn connect_failed(&self, t: Try, error: &std::io::Error) {
        let key = &self.route.backend.key;
        self.shared.metrics.connect_failure(key, t.addr);
        self.health(t, true);
        tracing::debug!("{key}: connect to {} failed: {error:?}", t.addr);
    }

    /// The endpoint of `t` answered `status` after `took`: counted, and into passive health
    /// (5xx is a failure).
    pub fn answered(&self, t: Try, status: u16, took: Duration) {
        self.health(t, (500..600).contains(&status));
        let key = &self.route.backend.key;
        (self.shared.metrics).upstream(&self.local.handles, key, t.addr, status, took);
    }

    fn health(&self, t: Try, failed: bool) {
        let health = &self.shared.config.health;
        if self.state.endpoints[t.index].record(failed, Instant::now, health) {
            (self.shared.metrics).ejection(&self.route.backend.key, t.addr);
        }
    }
}
