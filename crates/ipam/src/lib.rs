//! IP address management for flatnet.
//!
//! - [`NodeCidrAllocator`] hands out per-node Pod CIDRs from the cluster Pod CIDR, like
//!   kube-controller-manager's range allocator.
//! - [`HostLocalStore`] keeps pod IP reservations on disk with the layout and semantics of the
//!   CNI `host-local` IPAM plugin, safe across concurrent processes.
//! - [`service`] picks ClusterIPs, NodePorts and LoadBalancer IPs.

mod node_cidr;
mod range;
pub mod service;
mod store;

pub use node_cidr::NodeCidrAllocator;
pub use range::{Allocation, Range};
pub use store::{HostLocalStore, MAX_WALK};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Errors of node CIDR allocation and pod IP reservation.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No free subnet or address is left.
    #[error("no free address left in {range}")]
    Exhausted {
        /// The range (or cluster CIDR) that is full.
        range: String,
    },
    /// A range, subnet or mask is malformed or inconsistent.
    #[error("invalid range {range}: {reason}")]
    InvalidRange {
        /// The offending range or subnet.
        range: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address or subnet lies outside the range it was meant for.
    #[error("{addr} is not in {range}")]
    NotInRange {
        /// The address or subnet.
        addr: String,
        /// The range it should have been in.
        range: String,
    },
    /// A container ID, interface name or network name cannot be stored.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name ("network name", "container ID", "interface name").
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A reservation file does not have host-local's format.
    #[error("{}: corrupt reservation: {reason}", path.display())]
    Corrupt {
        /// The reservation file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// The address or subnet is already held by someone else.
    #[error("{addr} is already allocated to {owner}")]
    AlreadyAllocated {
        /// The address or subnet.
        addr: String,
        /// Who holds it.
        owner: String,
    },
}

/// The address as a number (IPv4 in the low 32 bits).
fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// The address of number `v` in the given family (`v` must fit the family).
fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u128_round_trip() {
        for ip in [
            "10.42.1.255",
            "0.0.0.0",
            "255.255.255.255",
            "fd00:10:42:1::2",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(from_u128(to_u128(ip), ip.is_ipv4()), ip);
        }
        assert_eq!(to_u128("0.0.1.2".parse().unwrap()), 258);
        assert_eq!(
            from_u128(u128::MAX, false),
            IpAddr::V6(Ipv6Addr::from(u128::MAX))
        );
    }

    #[test]
    fn error_messages_are_clear() {
        let e = IpamError::Exhausted {
            range: "10.42.1.0/30".into(),
        };
        assert_eq!(e.to_string(), "no free address left in 10.42.1.0/30");
        let e = IpamError::Io {
            path: "/x/lock".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(e.to_string(), "/x/lock: permission denied");
    }
}
