//! The Ingress annotations flatnet reads: a documented list, each validated by type.

use std::collections::BTreeMap;
use std::time::Duration;

/// Prefix of every annotation flatnet owns; an unknown one under it is an error.
pub const PREFIX: &str = "flatnet.dev/";

/// Upstream balancing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Round robin over the endpoints (default).
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Consistent hash of a request header's value (lower-case name).
    HashHeader(String),
    /// Consistent hash of the client IP.
    HashClientIp,
}

/// Per-Ingress options from its annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Balancing algorithm.
    pub balance: Balance,
    /// Answer plain-HTTP requests for TLS hosts with a 308 to https.
    pub ssl_redirect: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Time to the upstream's response head.
    pub request_timeout: Duration,
    /// Retries of idempotent requests on connect failure, each to another endpoint.
    pub retries: u32,
}

/// One refused annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.annotations[{key}]: {reason}")]
pub struct BadAnnotation {
    /// The annotation key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Parses the annotations under [`PREFIX`]; other annotations are ignored.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Result<Options, Vec<BadAnnotation>> {
    let _ = annotations;
    unimplemented!()
}
