//! Prometheus metrics of the proxy, per route and per upstream endpoint (prefix `flatnet_l7_`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
/// Maps of a worker's handles, with a fast hash (keys are the proxy's own).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
    }
}

/// The counters; shared behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, Buckets>,
    upstream_requests: Family<Labels, Counter>,
    upstream_duration: Family<Labels, Histogram, Buckets>,
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
    classes: [Option<Counter>; 10],
    duration: Histogram,
}

impl Series {
    fn new(labels: Labels, duration: &Family<Labels, Histogram, Buckets>) -> Series {
        Series {
            duration: duration.get_or_create(&labels).clone(),
            labels,
            classes: Default::default(),
        }
    }

    fn count(&mut self, family: &Family<Labels, Counter>, status: u16, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        let slot = usize::from(status / 100).min(9);
        let counter = self.classes[slot].get_or_insert_with(|| {
            let mut labels = self.labels.clone();
            labels.push(("class", class(status)));
            family.get_or_create(&labels).clone()
        });
        counter.inc();
    }
}

/// One worker's handles to the series it has counted into, so that counting a request
/// builds no labels and takes no lock shared with other workers.
#[derive(Default)]
pub struct Handles {
    routes: Mutex<HashMap<Arc<str>, Series>>,
    upstreams: Mutex<HashMap<SocketAddr, HashMap<Arc<str>, Series>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flatnet_l7");
        let requests = Family::<Labels, Counter>::default();
        let duration = Family::new_with_constructor(Buckets);
        let upstream_requests = Family::<Labels, Counter>::default();
        let upstream_duration = Family::new_with_constructor(Buckets);
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
        series.count(&self.requests, status, took);
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
        series.count(&self.upstream_requests, status, took);
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
        let m = Metrics::new();
        let handles = Handles::default();
        let route: Arc<str> = "ns/web:a.test/(Prefix)".into();
        m.request(&handles, Some(&route), 503, Duration::from_millis(2));
        m.request(&handles, Some(&route), 503, Duration::from_millis(2));
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
        assert!(text.contains(
            r#"flatnet_l7_upstream_requests_total{backend="ns/web:80",endpoint="127.0.0.1:9",class="2xx"} 1"#
        ));
        assert!(text.contains(
            r#"flatnet_l7_upstream_ejections_total{backend="ns/web:80",endpoint="127.0.0.1:9"} 1"#
        ));
    }
}
