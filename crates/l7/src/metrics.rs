//! Prometheus metrics of the proxy, per route and per upstream endpoint (prefix `flatnet_l7_`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
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

    /// One answered request.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("class", class(status)),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("route", route.to_string())])
            .observe(took.as_secs_f64());
    }

    /// One upstream answer.
    pub fn upstream(&self, backend: &str, endpoint: &str, status: u16, took: Duration) {
        let labels = vec![
            ("backend", backend.to_string()),
            ("endpoint", endpoint.to_string()),
        ];
        self.upstream_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let mut labels = labels;
        labels.push(("class", class(status)));
        self.upstream_requests.get_or_create(&labels).inc();
    }

    /// One failed connect.
    pub fn connect_failure(&self, backend: &str, endpoint: &str) {
        self.connect_failures
            .get_or_create(&vec![
                ("backend", backend.to_string()),
                ("endpoint", endpoint.to_string()),
            ])
            .inc();
    }

    /// One ejection.
    pub fn ejection(&self, backend: &str, endpoint: &str) {
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
        m.request("ns/web:a.test/(Prefix)", 503, Duration::from_millis(2));
        m.ejection("ns/web:80", "127.0.0.1:9");
        let text = m.encode();
        assert!(
            text.contains(
                r#"flatnet_l7_requests_total{route="ns/web:a.test/(Prefix)",class="5xx"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"flatnet_l7_upstream_ejections_total{backend="ns/web:80",endpoint="127.0.0.1:9"} 1"#
        ));
    }
}
