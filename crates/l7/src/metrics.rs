//! Prometheus metrics of the proxy, per route and per upstream endpoint (prefix `flatnet_l7_`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Maps of a worker's handles, with a fast hash (keys are the proxy's own).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

type Labels = Vec<(&'static str, String)>;

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot<T>(T);

/// A counter with a slot per worker, summed when scraped: workers count without sharing a
/// cache line.
#[derive(Clone, Debug)]
pub struct ShardedCounter(Arc<[Slot<AtomicU64>]>);

impl ShardedCounter {
    fn new(workers: usize) -> ShardedCounter {
        ShardedCounter((0..workers.max(1)).map(|_| Slot::default()).collect())
    }

    /// Adds one in `worker`'s slot.
    fn inc(&self, worker: usize) {
        self.0[worker % self.0.len()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the duration buckets (seconds), then +Inf.
fn bounds() -> Vec<f64> {
    exponential_buckets(0.000_5, 2.0, 16)
        .chain([f64::MAX])
        .collect()
}

/// One worker's part of a histogram: the sum (as `f64` bits), the count, and a count per
/// bucket; written by that worker only.
#[derive(Debug)]
struct Part {
    sum: AtomicU64,
    count: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// A histogram with a part per worker, summed when scraped.
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    bounds: Arc<[f64]>,
    parts: Arc<[Slot<Part>]>,
}

impl ShardedHistogram {
    fn new(workers: usize) -> ShardedHistogram {
        let bounds: Arc<[f64]> = bounds().into();
        let parts = (0..workers.max(1))
            .map(|_| {
                Slot(Part {
                    sum: AtomicU64::new(0f64.to_bits()),
                    count: AtomicU64::new(0),
                    buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                })
            })
            .collect();
        ShardedHistogram { bounds, parts }
    }

    /// Observes `v` in `worker`'s part (which only that worker writes).
    fn observe(&self, worker: usize, v: f64) {
        let part = &self.parts[worker % self.parts.len()].0;
        let sum = f64::from_bits(part.sum.load(Ordering::Relaxed)) + v;
        part.sum.store(sum.to_bits(), Ordering::Relaxed);
        part.count.fetch_add(1, Ordering::Relaxed);
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(0);
        part.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let parts = self.parts.iter().map(|p| &p.0);
        let sum = parts
            .clone()
            .map(|p| f64::from_bits(p.sum.load(Ordering::Relaxed)))
            .sum();
        let count = parts.clone().map(|p| p.count.load(Ordering::Relaxed)).sum();
        let buckets: Vec<(f64, u64)> = (self.bounds.iter().enumerate())
            .map(|(i, b)| {
                (
                    *b,
                    parts
                        .clone()
                        .map(|p| p.buckets[i].load(Ordering::Relaxed))
                        .sum(),
                )
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Makes the sharded metrics of a family, with a part per worker.
#[derive(Clone)]
struct PerWorker(usize);

impl MetricConstructor<ShardedCounter> for PerWorker {
    fn new_metric(&self) -> ShardedCounter {
        ShardedCounter::new(self.0)
    }
}

impl MetricConstructor<ShardedHistogram> for PerWorker {
    fn new_metric(&self) -> ShardedHistogram {
        ShardedHistogram::new(self.0)
    }
}

type Counters = Family<Labels, ShardedCounter, PerWorker>;
type Histograms = Family<Labels, ShardedHistogram, PerWorker>;

/// The counters; shared behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Counters,
    duration: Histograms,
    upstream_requests: Counters,
    upstream_duration: Histograms,
    connect_failures: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
}

/// `2xx`, `4xx`...
fn class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// The route label of requests no route matched.
const NO_ROUTE: &str = "-";

/// The metrics of one label set (a route, or a backend's endpoint): a counter per status
/// class, made on first use, and the duration histogram.
struct Series {
    labels: Labels,
    classes: [Option<ShardedCounter>; 10],
    duration: ShardedHistogram,
}

impl Series {
    fn new(labels: Labels, duration: &Histograms) -> Series {
        Series {
            duration: duration.get_or_create(&labels).clone(),
            labels,
            classes: Default::default(),
        }
    }

    fn count(&mut self, worker: usize, family: &Counters, status: u16, took: Duration) {
        self.duration.observe(worker, took.as_secs_f64());
        let slot = usize::from(status / 100).min(9);
        let counter = self.classes[slot].get_or_insert_with(|| {
            let mut labels = self.labels.clone();
            labels.push(("class", class(status)));
            family.get_or_create(&labels).clone()
        });
        counter.inc(worker);
    }
}

/// One worker's handles to the series it has counted into, so that counting a request
/// builds no labels, takes no lock shared with other workers and writes only the worker's
/// own parts of the metrics.
#[derive(Default)]
pub struct Handles {
    /// The worker's number: its part of every metric.
    worker: usize,
    routes: Mutex<HashMap<Arc<str>, Series>>,
    upstreams: Mutex<HashMap<SocketAddr, HashMap<Arc<str>, Series>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handles {
    /// The handles of worker `worker` (from 0).
    pub fn new(worker: usize) -> Handles {
        Handles {
            worker,
            ..Handles::default()
        }
    }
}

impl Metrics {
    /// Registers every metric, for `workers` workers.
    pub fn new(workers: usize) -> Metrics {
        let mut registry = Registry::with_prefix("flatnet_l7");
        let requests = Family::new_with_constructor(PerWorker(workers));
        let duration = Family::new_with_constructor(PerWorker(workers));
        let upstream_requests = Family::new_with_constructor(PerWorker(workers));
        let upstream_duration = Family::new_with_constructor(PerWorker(workers));
        let connect_failures = Family::<Labels, Counter>::default();
        let ejections = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route (\"-\" when none matched) and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by route",
            duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to an upstream endpoint, by backend, endpoint and status class",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_response_seconds",
            "Time to an upstream's response head, by backend and endpoint",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed connects to an upstream endpoint",
            connect_failures.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Ejections of an upstream endpoint by passive health checks",
            ejections.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream_requests,
            upstream_duration,
            connect_failures,
            ejections,
        }
    }

    /// One answered request (`route`: the one that matched).
    pub fn request(
        &self,
        handles: &Handles,
        route: Option<&Arc<str>>,
        status: u16,
        took: Duration,
    ) {
        let mut routes = lock(&handles.routes);
        let name = route.map_or(NO_ROUTE, |r| &**r);
        let series = match routes.get_mut(name) {
            Some(series) => series,
            None => {
                let key: Arc<str> = route.cloned().unwrap_or_else(|| NO_ROUTE.into());
                let labels = vec![("route", name.to_string())];
                routes
                    .entry(key)
                    .or_insert_with(|| Series::new(labels, &self.duration))
            }
        };
        series.count(handles.worker, &self.requests, status, took);
    }

    /// One upstream answer.
    pub fn upstream(
        &self,
        handles: &Handles,
        backend: &Arc<str>,
        endpoint: SocketAddr,
        status: u16,
        took: Duration,
    ) {
        let mut upstreams = lock(&handles.upstreams);
        let backends = upstreams.entry(endpoint).or_default();
        let series = match backends.get_mut(&**backend) {
            Some(series) => series,
            None => backends.entry(backend.clone()).or_insert_with(|| {
                let labels = vec![
                    ("backend", backend.to_string()),
                    ("endpoint", endpoint.to_string()),
                ];
                Series::new(labels, &self.upstream_duration)
            }),
        };
        series.count(handles.worker, &self.upstream_requests, status, took);
    }

    /// One failed connect.
    pub fn connect_failure(&self, backend: &str, endpoint: SocketAddr) {
        self.connect_failures
            .get_or_create(&vec![
                ("backend", backend.to_string()),
                ("endpoint", endpoint.to_string()),
            ])
            .inc();
    }

    /// One ejection.
    pub fn ejection(&self, backend: &str, endpoint: SocketAddr) {
        self.ejections
            .get_or_create(&vec![
                ("backend", backend.to_string()),
                ("endpoint", endpoint.to_string()),
            ])
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let m = Metrics::new(2);
        let handles = Handles::default();
        let other = Handles::new(1);
        let route: Arc<str> = "ns/web:a.test/(Prefix)".into();
        m.request(&handles, Some(&route), 503, Duration::from_millis(2));
        m.request(&other, Some(&route), 503, Duration::from_millis(3));
        m.request(&handles, None, 404, Duration::from_millis(2));
        let backend: Arc<str> = "ns/web:80".into();
        let endpoint = SocketAddr::from(([127, 0, 0, 1], 9));
        m.upstream(&handles, &backend, endpoint, 200, Duration::from_millis(1));
        m.ejection(&backend, endpoint);
        let text = m.encode();
        assert!(
            text.contains(
                r#"flatnet_l7_requests_total{route="ns/web:a.test/(Prefix)",class="5xx"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"flatnet_l7_requests_total{route="-",class="4xx"} 1"#));
        // both workers' parts are summed
        let duration = "flatnet_l7_request_duration_seconds";
        let route_label = r#"route="ns/web:a.test/(Prefix)""#;
        for line in [
            format!("{duration}_count{{{route_label}}} 2"),
            format!("{duration}_sum{{{route_label}}} 0.005"),
            format!(r#"{duration}_bucket{{le="0.002",{route_label}}} 1"#),
            format!(r#"{duration}_bucket{{le="0.004",{route_label}}} 2"#),
            format!(r#"{duration}_bucket{{le="+Inf",{route_label}}} 2"#),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains(
            r#"flatnet_l7_upstream_requests_total{backend="ns/web:80",endpoint="127.0.0.1:9",class="2xx"} 1"#
        ));
        assert!(text.contains(
            r#"flatnet_l7_upstream_ejections_total{backend="ns/web:80",endpoint="127.0.0.1:9"} 1"#
        ));
    }
}
