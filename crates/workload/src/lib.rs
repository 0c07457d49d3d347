//! The workload run in every lab pod and the client that probes it.
//!
//! [`serve`] is a small cousin of the Kubernetes e2e suite's `agnhost netexec`:
//! every configured port answers on IPv4 and IPv6, TCP with HTTP/1.1 and JSON
//! describing the pod and the client, UDP (and SCTP, when the kernel has it)
//! with a one-line text protocol. [`probe`] makes one connection attempt from
//! inside a network namespace and reports what happened.

mod probe;
mod server;

pub use probe::{probe, socket_in_netns, HttpRequest, Probe, ProbeReport, ProbeResult, ServerInfo};
pub use server::{serve, spawn_servers, spawn_servers_bound, BoundServer, ServerConfig};

use std::fmt;
use std::str::FromStr;

/// A transport protocol of a pod port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, answered with HTTP/1.1.
    Tcp,
    /// UDP, answered with the text protocol.
    Udp,
    /// SCTP (one-to-one style), answered with the text protocol.
    Sctp,
}

impl Protocol {
    /// The lowercase name: `tcp`, `udp` or `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Protocol`] that is none of tcp, udp or sctp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected tcp, udp or sctp)")]
pub struct ParseProtocolError(pub String);

impl FromStr for Protocol {
    type Err = ParseProtocolError;

    /// Parses `tcp`, `udp` or `sctp`, ignoring case (`TCP` as in Kubernetes manifests).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(ParseProtocolError(s.to_string())),
        }
    }
}

/// Who the workload is: reported in every answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The node the pod runs on.
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_parses_any_case_and_displays_lowercase() {
        for (text, want) in [
            ("tcp", Protocol::Tcp),
            ("TCP", Protocol::Tcp),
            ("Udp", Protocol::Udp),
            ("UDP", Protocol::Udp),
            ("sctp", Protocol::Sctp),
            ("SCTP", Protocol::Sctp),
        ] {
            let got: Protocol = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), text.to_ascii_lowercase());
        }
        let err = "icmp".parse::<Protocol>().unwrap_err();
        assert_eq!(err, ParseProtocolError("icmp".into()));
        assert!(err.to_string().contains("icmp"));
    }

    #[test]
    fn protocol_serde_is_lowercase() {
        assert_eq!(serde_json::to_string(&Protocol::Sctp).unwrap(), "\"sctp\"");
        let p: Protocol = serde_json::from_str("\"udp\"").unwrap();
        assert_eq!(p, Protocol::Udp);
    }
}
