//! Service IP, NodePort and LoadBalancer IP allocation over the set of values in use.
//!
//! The API server keeps these allocations in its registry; flatnet keeps them in the
//! desired state, so an allocator is a pure function of what is taken.

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

/// The NodePort range of a default Kubernetes cluster.
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// Offset into a service range where dynamic allocation starts: the addresses below it are
/// left for Services that ask for a fixed ClusterIP (like the DNS Service's `.10`), as the
/// API server favours the upper band for dynamic allocation.
pub const STATIC_BAND: u128 = 16;

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v: u128, like: &IpNet) -> IpAddr {
    match like {
        IpNet::V4(_) => IpAddr::V4((v as u32).into()),
        IpNet::V6(_) => IpAddr::V6(v.into()),
    }
}

/// Whether `ip` may be a ClusterIP of `range`: inside it, neither its network address nor
/// (IPv4) its broadcast address.
pub fn valid_service_ip(range: &IpNet, ip: IpAddr) -> bool {
    range.contains(&ip)
        && ip != range.network()
        && !(matches!(range, IpNet::V4(_)) && ip == range.broadcast())
}

/// The first free ClusterIP of `range` past the static band (then the band itself), or
/// `None` when the range is full.
pub fn next_service_ip(range: &IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let first = to_u128(range.network());
    let last = to_u128(range.broadcast());
    let size = last - first + 1;
    let start = if size > 4 * STATIC_BAND {
        STATIC_BAND
    } else {
        1
    };
    (start..size)
        .chain(1..start)
        .map(|off| from_u128(first + off, range))
        .take(1 << 20)
        .find(|ip| valid_service_ip(range, *ip) && !taken.contains(ip))
}

/// The first free port of `range`.
pub fn next_port(range: RangeInclusive<u16>, taken: &BTreeSet<u16>) -> Option<u16> {
    range.into_iter().find(|p| !taken.contains(p))
}

/// The first free address of the pool `first..=last`.
pub fn next_pool_ip(first: IpAddr, last: IpAddr, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let like: IpNet =
        IpNet::new(first, if first.is_ipv4() { 32 } else { 128 }).expect("host prefix");
    (to_u128(first)..=to_u128(last))
        .take(1 << 20)
        .map(|v| from_u128(v, &like))
        .find(|ip| !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ips_skip_the_static_band_and_taken_ones() {
        let r: IpNet = "10.43.0.0/16".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(
            next_service_ip(&r, &taken).unwrap().to_string(),
            "10.43.0.16"
        );
        taken.insert("10.43.0.16".parse().unwrap());
        assert_eq!(
            next_service_ip(&r, &taken).unwrap().to_string(),
            "10.43.0.17"
        );
        let v6: IpNet = "fd00:10:43::/112".parse().unwrap();
        assert_eq!(
            next_service_ip(&v6, &BTreeSet::new()).unwrap().to_string(),
            "fd00:10:43::10"
        );
    }

    #[test]
    fn tiny_range_fills_up() {
        let r: IpNet = "10.43.0.0/30".parse().unwrap();
        let mut taken = BTreeSet::new();
        for want in ["10.43.0.1", "10.43.0.2"] {
            let ip = next_service_ip(&r, &taken).unwrap();
            assert_eq!(ip.to_string(), want);
            taken.insert(ip);
        }
        assert_eq!(next_service_ip(&r, &taken), None);
        assert!(
            !valid_service_ip(&r, "10.43.0.3".parse().unwrap()),
            "broadcast"
        );
        assert!(
            !valid_service_ip(&r, "10.43.0.0".parse().unwrap()),
            "network"
        );
    }

    #[test]
    fn ports_and_pools() {
        let taken: BTreeSet<u16> = [30000, 30001].into();
        assert_eq!(next_port(NODE_PORT_RANGE, &taken), Some(30002));
        assert_eq!(next_port(30000..=30001, &taken), None);
        let t: BTreeSet<IpAddr> = ["192.168.1.200".parse().unwrap()].into();
        let a = "192.168.1.200".parse().unwrap();
        let b = "192.168.1.201".parse().unwrap();
        assert_eq!(next_pool_ip(a, b, &t), Some(b));
        let full: BTreeSet<IpAddr> = [a, b].into();
        assert_eq!(next_pool_ip(a, b, &full), None);
    }
}
