//! The Ingress annotations flatnet reads: a documented list, each validated by type.
//!
//! Every key under [`PREFIX`] must be one of [`DOCUMENTED`]; an unknown key or a value of the
//! wrong type is an error, and the Ingress carrying it is left out of the table (with a
//! warning per bad annotation). Annotations outside [`PREFIX`] are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

/// Prefix of every annotation flatnet owns; an unknown one under it is an error.
pub const PREFIX: &str = "flatnet.dev/";

/// `flatnet.dev/load-balance`.
pub const LOAD_BALANCE: &str = "flatnet.dev/load-balance";
/// `flatnet.dev/ssl-redirect`.
pub const SSL_REDIRECT: &str = "flatnet.dev/ssl-redirect";
/// `flatnet.dev/connect-timeout`.
pub const CONNECT_TIMEOUT: &str = "flatnet.dev/connect-timeout";
/// `flatnet.dev/request-timeout`.
pub const REQUEST_TIMEOUT: &str = "flatnet.dev/request-timeout";
/// `flatnet.dev/retries`.
pub const RETRIES: &str = "flatnet.dev/retries";

/// Every annotation flatnet reads, with its description (for the README and `--help`).
pub const DOCUMENTED: &[(&str, &str)] = &[
    (
        LOAD_BALANCE,
        "round-robin (default) | least-request | hash-client-ip | hash-header:<Header-Name>",
    ),
    (
        SSL_REDIRECT,
        "\"true\" | \"false\" (default): answer plain HTTP for TLS hosts with a 308 to https",
    ),
    (
        CONNECT_TIMEOUT,
        "upstream connect timeout, e.g. 500ms, 5s (default), 2m; positive, at most 1h",
    ),
    (
        REQUEST_TIMEOUT,
        "time to the upstream's response head, e.g. 60s (default); positive, at most 1h",
    ),
    (
        RETRIES,
        "retries of idempotent requests on connect failure, 0 to 5 (default 1)",
    ),
];

/// The longest timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most retries accepted.
pub const MAX_RETRIES: u32 = 5;

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

impl Default for Options {
    /// Round robin, no redirect, 5 s to connect, 60 s to the response head, one retry.
    fn default() -> Self {
        Options {
            balance: Balance::RoundRobin,
            ssl_redirect: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retries: 1,
        }
    }
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
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Options, Vec<BadAnnotation>> {
    let mut options = Options::default();
    let mut bad = Vec::new();
    let ours = annotations
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(PREFIX));
    for (key, value) in ours {
        if let Err(reason) = apply(&mut options, key, value.trim()) {
            bad.push(BadAnnotation {
                key: key.clone(),
                reason,
            });
        }
    }
    if bad.is_empty() {
        Ok(options)
    } else {
        Err(bad)
    }
}

/// Sets the option `key` names from `value`.
fn apply(options: &mut Options, key: &str, value: &str) -> Result<(), String> {
    match key {
        LOAD_BALANCE => options.balance = balance(value)?,
        SSL_REDIRECT => options.ssl_redirect = boolean(value)?,
        CONNECT_TIMEOUT => options.connect_timeout = timeout(value)?,
        REQUEST_TIMEOUT => options.request_timeout = timeout(value)?,
        RETRIES => options.retries = retries(value)?,
        _ => return Err(format!("unknown annotation (known: {})", known())),
    }
    Ok(())
}

/// The documented keys, comma separated.
fn known() -> String {
    let keys: Vec<&str> = DOCUMENTED.iter().map(|(key, _)| *key).collect();
    keys.join(", ")
}

fn balance(value: &str) -> Result<Balance, String> {
    match value {
        "round-robin" => Ok(Balance::RoundRobin),
        "least-request" => Ok(Balance::LeastRequest),
        "hash-client-ip" => Ok(Balance::HashClientIp),
        _ => match value.strip_prefix("hash-header:") {
            Some(name) if is_token(name) => Ok(Balance::HashHeader(name.to_ascii_lowercase())),
            Some(name) => Err(format!("{name:?} is not a valid HTTP header name")),
            None => Err(format!(
                "{value:?} is not one of round-robin, least-request, hash-client-ip, \
                 hash-header:<Header-Name>"
            )),
        },
    }
}

/// An HTTP token (RFC 9110 section 5.6.2), the syntax of a header name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not \"true\" or \"false\"")),
    }
}

/// A positive whole number of `ms`, `s`, `m` or `h`, at most [`MAX_TIMEOUT`].
fn timeout(value: &str) -> Result<Duration, String> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let invalid = || format!("{value:?} is not a duration like 500ms, 5s, 2m or 1h");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    let duration = number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_TIMEOUT)
        .ok_or_else(|| format!("{value:?} is longer than 1h"))?;
    if duration.is_zero() {
        return Err(format!("{value:?} must be positive"));
    }
    Ok(duration)
}

fn retries(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_RETRIES)
        .ok_or_else(|| format!("{value:?} is not a whole number from 0 to {MAX_RETRIES}"))
}
