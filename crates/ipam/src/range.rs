//! host-local's `ranges` entries and the addresses handed out from them.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{from_u128, to_u128, IpamError};

/// One range to allocate from (one per IP family), as in the CNI host-local plugin's `ranges`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    /// The subnet; addresses get its prefix length.
    pub subnet: IpNet,
    /// First address to hand out (default: the first host address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    /// Last address to hand out (default: the last host address, before the IPv4 broadcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    /// The gateway, never handed out (default: the first host address, `.1` or `::1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// One address given to one attachment.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// The address with the subnet's prefix length.
    pub address: IpNet,
    /// The range's gateway.
    pub gateway: IpAddr,
}

impl Range {
    /// A range over the whole subnet with the default gateway.
    pub fn new(subnet: IpNet) -> Self {
        Self {
            subnet,
            range_start: None,
            range_end: None,
            gateway: None,
        }
    }

    /// The configured gateway, or the subnet's first host address (`.1` or `::1`).
    pub fn gateway_or_default(&self) -> IpAddr {
        self.gateway
            .unwrap_or_else(|| from_u128(to_u128(self.subnet.network()) + 1, self.is_ipv4()))
    }

    /// Checks what host-local checks: a network address (no host bits), room for at least two
    /// hosts, and `rangeStart` <= `rangeEnd` inside the subnet, gateway of the same family.
    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |reason: String| IpamError::InvalidRange {
            range: self.to_string(),
            reason,
        };
        let subnet = self.subnet;
        if subnet.addr() != subnet.network() {
            return Err(bad(format!(
                "host bits set; the network address is {}",
                subnet.network()
            )));
        }
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(bad("subnet too small to allocate from".into()));
        }
        for (name, ip) in [
            ("rangeStart", self.range_start),
            ("rangeEnd", self.range_end),
        ] {
            if let Some(ip) = ip {
                if !subnet.contains(&ip) {
                    return Err(bad(format!("{name} {ip} is not in the subnet")));
                }
            }
        }
        if let Some(gw) = self.gateway {
            if gw.is_ipv4() != self.is_ipv4() {
                return Err(bad(format!("gateway {gw} is not of the subnet's family")));
            }
        }
        let (first, last) = self.bounds();
        if first > last {
            return Err(bad("no address between rangeStart and rangeEnd".into()));
        }
        Ok(())
    }

    /// Whether `ip` may be handed out from this range: inside `rangeStart..=rangeEnd` and not
    /// the network address, the IPv4 broadcast address or the gateway.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (first, last) = self.bounds();
        ip.is_ipv4() == self.is_ipv4()
            && (first..=last).contains(&to_u128(ip))
            && ip != self.gateway_or_default()
    }

    /// Whether this is an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Inclusive numeric bounds of the candidate addresses: `rangeStart..=rangeEnd` without the
    /// network address and the IPv4 broadcast address (the gateway is skipped by the walkers).
    pub(crate) fn bounds(&self) -> (u128, u128) {
        let network = to_u128(self.subnet.network());
        let mut last = to_u128(self.subnet.broadcast());
        if self.is_ipv4() {
            last -= 1;
        }
        let mut first = network + 1;
        if let Some(start) = self.range_start {
            first = first.max(to_u128(start));
        }
        if let Some(end) = self.range_end {
            last = last.min(to_u128(end));
        }
        (first, last)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.subnet)?;
        if self.range_start.is_some() || self.range_end.is_some() {
            let (first, last) = self.bounds();
            let v4 = self.is_ipv4();
            write!(f, " ({}-{})", from_u128(first, v4), from_u128(last, v4))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(json: &str) -> Range {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn host_local_json_round_trips() {
        let r = range(
            r#"{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.10","rangeEnd":"10.42.1.20","gateway":"10.42.1.254"}"#,
        );
        assert_eq!(r.range_start, Some("10.42.1.10".parse().unwrap()));
        assert_eq!(
            r.gateway_or_default(),
            "10.42.1.254".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r.to_string(), "10.42.1.0/24 (10.42.1.10-10.42.1.20)");
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(range(&back), r);
        let r = range(r#"{"subnet":"fd00:10:42:1::/64"}"#);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"subnet":"fd00:10:42:1::/64"}"#
        );
        assert_eq!(
            r.gateway_or_default(),
            "fd00:10:42:1::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bounds_skip_network_and_broadcast() {
        let r = Range::new("10.42.1.0/24".parse().unwrap());
        assert_eq!(
            r.bounds(),
            (
                to_u128("10.42.1.1".parse().unwrap()),
                to_u128("10.42.1.254".parse().unwrap())
            )
        );
        assert!(!r.contains("10.42.1.0".parse().unwrap()));
        assert!(!r.contains("10.42.1.1".parse().unwrap()), "gateway");
        assert!(r.contains("10.42.1.2".parse().unwrap()));
        assert!(r.contains("10.42.1.254".parse().unwrap()));
        assert!(!r.contains("10.42.1.255".parse().unwrap()));
        assert!(!r.contains("fd00::2".parse().unwrap()));
        let r = Range::new("fd00::/126".parse().unwrap());
        assert!(
            r.contains("fd00::3".parse().unwrap()),
            "IPv6 has no broadcast"
        );
    }

    #[test]
    fn validate_refuses_what_host_local_refuses() {
        let err = |json: &str| range(json).validate().unwrap_err().to_string();
        assert!(err(r#"{"subnet":"10.42.1.5/24"}"#)
            .contains("host bits set; the network address is 10.42.1.0"));
        assert!(err(r#"{"subnet":"10.42.1.0/31"}"#).contains("too small"));
        assert!(err(r#"{"subnet":"fd00::/127"}"#).contains("too small"));
        assert!(err(r#"{"subnet":"10.42.1.0/24","rangeStart":"10.42.2.1"}"#)
            .contains("rangeStart 10.42.2.1 is not in"));
        assert!(err(r#"{"subnet":"10.42.1.0/24","rangeEnd":"fd00::1"}"#)
            .contains("rangeEnd fd00::1 is not in"));
        assert!(err(r#"{"subnet":"10.42.1.0/24","gateway":"fd00::1"}"#).contains("family"));
        assert!(err(
            r#"{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.9","rangeEnd":"10.42.1.8"}"#
        )
        .contains("no address between"));
        assert!(
            err(r#"{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.255"}"#)
                .contains("no address between")
        );
        range(r#"{"subnet":"10.42.1.0/30"}"#).validate().unwrap();
        range(r#"{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.9","rangeEnd":"10.42.1.9"}"#)
            .validate()
            .unwrap();
    }
}
