//! NodeCidrAllocator against kube-controller-manager's cidrset behaviour.

use flatnet_ipam::{IpamError, NodeCidrAllocator};
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn carves_subnets_in_order_until_exhausted() {
    let mut a = NodeCidrAllocator::new(net("10.42.0.0/16"), 24).unwrap();
    assert_eq!(a.capacity(), 256);
    for i in 0..256 {
        assert_eq!(a.allocate().unwrap(), net(&format!("10.42.{i}.0/24")));
    }
    let err = a.allocate().unwrap_err();
    assert!(
        matches!(err, IpamError::Exhausted { ref range } if range == "10.42.0.0/16"),
        "{err}"
    );
    assert_eq!(err.to_string(), "no free address left in 10.42.0.0/16");
}

#[test]
fn occupied_subnets_are_skipped() {
    let mut a = NodeCidrAllocator::new(net("10.42.0.0/16"), 24).unwrap();
    a.occupy(net("10.42.0.0/24")).unwrap();
    a.occupy(net("10.42.2.0/24")).unwrap();
    a.occupy(net("10.42.2.0/24")).unwrap(); // occupying twice is fine
    assert_eq!(a.allocate().unwrap(), net("10.42.1.0/24"));
    assert_eq!(a.allocate().unwrap(), net("10.42.3.0/24"));
}

#[test]
fn release_then_allocate_continues_round_robin_and_wraps() {
    let mut a = NodeCidrAllocator::new(net("10.42.0.0/22"), 24).unwrap();
    assert_eq!(a.allocate().unwrap(), net("10.42.0.0/24"));
    assert_eq!(a.allocate().unwrap(), net("10.42.1.0/24"));
    a.release(net("10.42.0.0/24")).unwrap();
    a.release(net("10.42.0.0/24")).unwrap(); // idempotent
                                             // Not reused at once: the search goes on after the last allocated one.
    assert_eq!(a.allocate().unwrap(), net("10.42.2.0/24"));
    assert_eq!(a.allocate().unwrap(), net("10.42.3.0/24"));
    // Then it wraps and finds the released one.
    assert_eq!(a.allocate().unwrap(), net("10.42.0.0/24"));
    assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
    a.release(net("10.42.2.0/24")).unwrap();
    assert_eq!(a.allocate().unwrap(), net("10.42.2.0/24"));
}

#[test]
fn ipv6_cluster_cidr() {
    let mut a = NodeCidrAllocator::new(net("fd00:10:42::/56"), 64).unwrap();
    assert_eq!(a.capacity(), 256);
    assert_eq!(a.allocate().unwrap(), net("fd00:10:42::/64"));
    assert_eq!(a.allocate().unwrap(), net("fd00:10:42:1::/64"));
    a.occupy(net("fd00:10:42:2::/64")).unwrap();
    assert_eq!(a.allocate().unwrap(), net("fd00:10:42:3::/64"));
    for _ in 4..256 {
        a.allocate().unwrap();
    }
    assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
    a.release(net("fd00:10:42:ff::/64")).unwrap();
    assert_eq!(a.allocate().unwrap(), net("fd00:10:42:ff::/64"));
}

#[test]
fn large_subnet_counts_are_sparse() {
    let mut a = NodeCidrAllocator::new(net("fd00::/40"), 64).unwrap();
    assert_eq!(a.capacity(), 1 << 24);
    assert_eq!(a.allocate().unwrap(), net("fd00::/64"));
    a.occupy(net("fd00:0:ff:ffff::/64")).unwrap();
    assert_eq!(a.allocate().unwrap(), net("fd00:0:0:1::/64"));
}

#[test]
fn bad_masks_are_refused() {
    let err = |cluster: &str, mask: u8| NodeCidrAllocator::new(net(cluster), mask).unwrap_err();
    for (cluster, mask, text) in [
        (
            "10.42.0.0/16",
            8,
            "node mask /8 is shorter than the cluster prefix /16",
        ),
        (
            "10.42.0.0/16",
            33,
            "node mask /33 is longer than the address (/32)",
        ),
        (
            "fd00::/56",
            129,
            "node mask /129 is longer than the address (/128)",
        ),
        ("10.0.0.0/8", 33, "longer"),
        ("fd00::/32", 64, "gives 2^32 subnets; at most 2^24"),
    ] {
        let e = err(cluster, mask);
        assert!(matches!(e, IpamError::InvalidRange { .. }), "{e:?}");
        assert!(e.to_string().contains(text), "{e}");
    }
    assert_eq!(
        NodeCidrAllocator::new(net("10.0.0.0/8"), 32)
            .unwrap()
            .capacity(),
        1 << 24
    );
}

#[test]
fn occupy_and_release_check_the_subnet() {
    let mut a = NodeCidrAllocator::new(net("10.42.0.0/16"), 24).unwrap();
    for s in ["10.43.0.0/24", "fd00::/64", "10.0.0.0/8"] {
        assert!(
            matches!(a.occupy(net(s)), Err(IpamError::NotInRange { .. })),
            "{s}"
        );
    }
    for s in ["10.42.1.0/25", "10.42.0.0/23", "10.42.1.7/24"] {
        assert!(
            matches!(a.occupy(net(s)), Err(IpamError::InvalidRange { .. })),
            "{s}"
        );
        assert!(
            matches!(a.release(net(s)), Err(IpamError::InvalidRange { .. })),
            "{s}"
        );
    }
    // Nothing was marked by the refused calls.
    assert_eq!(a.allocate().unwrap(), net("10.42.0.0/24"));
    assert_eq!(a.allocate().unwrap(), net("10.42.1.0/24"));
}
