//! The access log record of one request and its JSON line.

use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is logged of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When the request arrived, seconds since the Unix epoch (millisecond precision).
    pub time: f64,
    /// Client address.
    pub client: SocketAddr,
    /// Method.
    pub method: String,
    /// Host as sent (`Host` or `:authority`).
    pub host: String,
    /// Path as sent (before normalisation), without the query.
    pub path: String,
    /// The route id, when one matched.
    pub route: Option<String>,
    /// The upstream endpoint, when one answered.
    pub upstream: Option<SocketAddr>,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From request to the end of the response body.
    pub duration_ms: f64,
    /// From sending upstream to its response head.
    pub upstream_ms: Option<f64>,
    /// The `X-Request-ID` sent upstream.
    pub request_id: String,
}

impl Record {
    /// The record of a request arriving now, before its answer.
    pub fn arriving(
        client: SocketAddr,
        method: &str,
        host: &str,
        path: &str,
        request_id: &[u8],
    ) -> Record {
        Record {
            time: epoch_seconds(SystemTime::now()),
            client,
            method: method.to_string(),
            host: host.to_string(),
            path: path.to_string(),
            route: None,
            upstream: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            request_id: String::from_utf8_lossy(request_id).into_owned(),
        }
    }
}

/// Seconds since the Unix epoch of `t`, to the millisecond.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_millis() as f64 / 1000.0
}

/// Milliseconds, to the microsecond.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The JSON line (without newline).
pub fn line(record: &Record) -> String {
    serde_json::to_string(record).expect("a record serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_every_field() {
        let r = Record {
            time: epoch_seconds(UNIX_EPOCH + Duration::from_millis(1500)),
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET".into(),
            host: "a.test".into(),
            path: "/x".into(),
            route: Some("ns/web:a.test/(Prefix)".to_string()),
            upstream: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration_ms: millis(Duration::from_micros(2500)),
            upstream_ms: None,
            request_id: "abc".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&line(&r)).unwrap();
        assert_eq!(v["time"], 1.5);
        assert_eq!(v["route"], "ns/web:a.test/(Prefix)");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 2.5);
        assert_eq!(v["bytes_out"], 12);
    }
}
