//! The proxy's settings: listeners, limits, timeouts, passive health and logging.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where the access log goes: one JSON object per line, per request.
#[derive(Clone, Default)]
pub enum AccessLog {
    /// No access log.
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// A function given each line (without its newline), e.g. for tests or a file.
    Sink(Arc<dyn Fn(&str) + Send + Sync>),
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessLog::Off => "Off",
            AccessLog::Stdout => "Stdout",
            AccessLog::Sink(_) => "Sink",
        })
    }
}

/// Limits on what a client may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes (request line and headers). HTTP/1: hyper's read
    /// buffer (at least 8192), a larger head is answered 431; HTTP/2: the header list size
    /// (SETTINGS_MAX_HEADER_LIST_SIZE), a larger one is answered 431 by the h2 crate.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request; more are answered 431.
    pub max_headers: usize,
    /// Time for a client to send a whole HTTP/1 request head from its first byte; then the
    /// connection is closed.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body; then the request is answered 408
    /// (if no response started) and the connection closed, and the upstream request aborted.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Passive health checking of upstream endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Consecutive connect failures or 5xx answers that eject an endpoint.
    pub eject_after: u32,
    /// How long an ejected endpoint is left out; then it is back on trial: one more failure
    /// ejects it again, a success restores it.
    pub eject_for: Duration,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            eject_after: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Everything [`crate::serve`] needs besides the route tables.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Plain HTTP listener (HTTP/1.1 and h2c with prior knowledge).
    pub http: Option<SocketAddr>,
    /// TLS listener (TLS 1.2 and 1.3; ALPN h2 and http/1.1).
    pub https: Option<SocketAddr>,
    /// Admin listener: `/metrics` (Prometheus) and `/healthz`.
    pub admin: Option<SocketAddr>,
    /// Client limits and timeouts.
    pub limits: Limits,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// Passive health checking.
    pub health: Health,
    /// The access log.
    pub access_log: AccessLog,
    /// Worker threads serving client connections (each with its own runtime and upstream
    /// connections); default: one per CPU the process may run on.
    pub workers: usize,
    /// Debugging aid, off by default: responses carry `x-flatnet-route` (the route id) and
    /// `x-flatnet-upstream` (the endpoint address).
    pub debug_headers: bool,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            http: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            https: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 10254))),
            limits: Limits::default(),
            upstream_idle_timeout: Duration::from_secs(60),
            health: Health::default(),
            access_log: AccessLog::Off,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            debug_headers: false,
        }
    }
}
