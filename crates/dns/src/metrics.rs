//! Prometheus metrics of the DNS server (CoreDNS-like): requests by type and response code,
//! forwarded requests, request duration.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of a request: query type and response code.
type Labels = Vec<(String, String)>;

/// The server's counters; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    forwarded: Counter,
    cache_hits: Counter,
    duration: Histogram,
}

impl Metrics {
    /// Registers every metric under the `flatnet_dns_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flatnet_dns");
        let requests = Family::<Labels, Counter>::default();
        let forwarded = Counter::default();
        let cache_hits = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "requests",
            "Requests by query type and response code",
            requests.clone(),
        );
        registry.register(
            "forward_requests",
            "Requests forwarded to an upstream",
            forwarded.clone(),
        );
        registry.register(
            "cache_hits",
            "Forwarded names answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request",
            duration.clone(),
        );
        Self {
            registry,
            requests,
            forwarded,
            cache_hits,
            duration,
        }
    }

    /// Records one answered request.
    pub fn observe(&self, query: &Message, rcode: ResponseCode, forwarded: bool, took: Duration) {
        self.observe_parts(query_type(query), rcode, forwarded, took);
    }

    /// Records one answered request of type `qtype` (`None`: no question).
    pub fn observe_parts(
        &self,
        qtype: Option<RecordType>,
        rcode: ResponseCode,
        forwarded: bool,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&vec![
                (
                    "type".into(),
                    qtype.map_or_else(|| "none".into(), |t| t.to_string()),
                ),
                ("rcode".into(), rcode.to_str().to_uppercase()),
            ])
            .inc();
        if forwarded {
            self.forwarded.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// Records an answer served from the cache.
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String");
        s
    }
}

/// The type of a query's first question.
pub fn query_type(query: &Message) -> Option<RecordType> {
    query.queries.first().map(|q| q.query_type())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
