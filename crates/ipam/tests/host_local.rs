//! HostLocalStore against the CNI host-local plugin's on-disk behaviour.

use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use flatnet_ipam::{Allocation, HostLocalStore, IpamError, Range};
use ipnet::IpNet;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(subnet: &str) -> Range {
    Range::new(subnet.parse().unwrap())
}

fn dual() -> Vec<Range> {
    vec![range("10.42.1.0/24"), range("fd00:10:42:1::/64")]
}

fn addrs(allocs: &[Allocation]) -> Vec<IpAddr> {
    allocs.iter().map(|a| a.address.addr()).collect()
}

fn store(dir: &Path) -> HostLocalStore {
    HostLocalStore::open(dir, "flatnet").unwrap()
}

#[test]
fn dual_stack_gives_one_ip_per_family() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let a = s.allocate("c1", "eth0", &dual()).unwrap();
    assert_eq!(
        a,
        vec![
            Allocation {
                address: "10.42.1.2/24".parse().unwrap(),
                gateway: ip("10.42.1.1")
            },
            Allocation {
                address: "fd00:10:42:1::2/64".parse().unwrap(),
                gateway: ip("fd00:10:42:1::1")
            },
        ]
    );
    let b = s.allocate("c2", "eth0", &dual()).unwrap();
    assert_eq!(addrs(&b), vec![ip("10.42.1.3"), ip("fd00:10:42:1::3")]);
    assert_eq!(
        s.get("c1", "eth0").unwrap(),
        vec![ip("10.42.1.2"), ip("fd00:10:42:1::2")]
    );
    assert_eq!(s.get("c1", "eth1").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(
        s.list().unwrap(),
        vec![
            (ip("10.42.1.2"), "c1".into(), "eth0".into()),
            (ip("10.42.1.3"), "c2".into(), "eth0".into()),
            (ip("fd00:10:42:1::2"), "c1".into(), "eth0".into()),
            (ip("fd00:10:42:1::3"), "c2".into(), "eth0".into()),
        ]
    );
}

#[test]
fn never_hands_out_network_broadcast_or_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    // A /28 has 14 hosts: .1 is the gateway, so 13 addresses (.2-.14) can be handed out.
    let ranges = [range("10.42.1.0/28"), range("fd00:10:42:1::/124")];
    let mut v4 = HashSet::new();
    let mut v6 = HashSet::new();
    for i in 0..13 {
        let a = addrs(&s.allocate(&format!("c{i}"), "eth0", &ranges).unwrap());
        assert!(v4.insert(a[0]) && v6.insert(a[1]));
    }
    let expected: HashSet<IpAddr> = (2..=14).map(|i| ip(&format!("10.42.1.{i}"))).collect();
    assert_eq!(v4, expected);
    assert!(!v6.contains(&ip("fd00:10:42:1::")) && !v6.contains(&ip("fd00:10:42:1::1")));
    let err = s.allocate("c13", "eth0", &ranges).unwrap_err();
    assert!(
        matches!(&err, IpamError::Exhausted { range } if range == "10.42.1.0/28"),
        "{err}"
    );
}

#[test]
fn custom_gateway_and_range_bounds_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let r = Range {
        subnet: "10.42.1.0/24".parse().unwrap(),
        range_start: Some(ip("10.42.1.10")),
        range_end: Some(ip("10.42.1.12")),
        gateway: Some(ip("10.42.1.11")),
    };
    let got: Vec<Allocation> = ["a", "b"]
        .iter()
        .map(|c| {
            s.allocate(c, "eth0", std::slice::from_ref(&r))
                .unwrap()
                .remove(0)
        })
        .collect();
    assert_eq!(got[0].address, "10.42.1.10/24".parse::<IpNet>().unwrap());
    assert_eq!(got[0].gateway, ip("10.42.1.11"));
    assert_eq!(got[1].address.addr(), ip("10.42.1.12"));
    let err = s.allocate("c", "eth0", &[r]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free address left in 10.42.1.0/24 (10.42.1.10-10.42.1.12)"
    );
}

#[test]
fn same_attachment_twice_gets_the_same_ips() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let first = s.allocate("c1", "eth0", &dual()).unwrap();
    let again = s.allocate("c1", "eth0", &dual()).unwrap();
    assert_eq!(first, again);
    // Another store on the same directory sees the same thing.
    assert_eq!(
        store(tmp.path()).allocate("c1", "eth0", &dual()).unwrap(),
        first
    );
    // A second interface of the same container is another attachment.
    let net1 = s.allocate("c1", "net1", &dual()).unwrap();
    assert_eq!(addrs(&net1), vec![ip("10.42.1.3"), ip("fd00:10:42:1::3")]);
    assert_eq!(s.list().unwrap().len(), 4);
    // last_reserved_ip did not move for the idempotent calls.
    let dir = tmp.path().join("flatnet");
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.42.1.3"
    );
}

#[test]
fn release_is_idempotent_and_scoped_to_the_attachment() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    s.allocate("c1", "eth0", &dual()).unwrap();
    s.allocate("c2", "eth0", &dual()).unwrap();
    assert_eq!(
        s.release("c1", "eth0").unwrap(),
        vec![ip("10.42.1.2"), ip("fd00:10:42:1::2")]
    );
    assert_eq!(s.release("c1", "eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(
        s.release("never-seen", "eth0").unwrap(),
        Vec::<IpAddr>::new()
    );
    assert_eq!(s.get("c1", "eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(
        s.get("c2", "eth0").unwrap(),
        vec![ip("10.42.1.3"), ip("fd00:10:42:1::3")]
    );
}

#[test]
fn released_ip_is_not_reused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let a = addrs(&s.allocate("c1", "eth0", &dual()).unwrap());
    s.release("c1", "eth0").unwrap();
    let b = addrs(&s.allocate("c2", "eth0", &dual()).unwrap());
    assert_eq!(b, vec![ip("10.42.1.3"), ip("fd00:10:42:1::3")]);
    assert!(a.iter().all(|x| !b.contains(x)));
}

#[test]
fn round_robin_wraps_to_freed_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let r = [range("10.42.1.0/29")]; // .2-.6 usable
    for c in ["a", "b", "c", "d", "e"] {
        s.allocate(c, "eth0", &r).unwrap();
    }
    s.release("b", "eth0").unwrap(); // frees .3
    s.release("e", "eth0").unwrap(); // frees .6 (the last one reserved)
                                     // After .6 the walk wraps: .2 is taken, .3 is free.
    assert_eq!(
        addrs(&s.allocate("f", "eth0", &r).unwrap()),
        vec![ip("10.42.1.3")]
    );
    assert_eq!(
        addrs(&s.allocate("g", "eth0", &r).unwrap()),
        vec![ip("10.42.1.6")]
    );
}

#[test]
fn exhaustion_is_all_or_nothing_across_families() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let dir = tmp.path().join("flatnet");
    // IPv6 first, so a v6 address is reserved before the v4 range turns out to be full.
    let ranges = [range("fd00:10:42:1::/64"), range("10.42.1.0/30")];
    let a = addrs(&s.allocate("c1", "eth0", &ranges).unwrap());
    assert_eq!(a, vec![ip("fd00:10:42:1::2"), ip("10.42.1.2")]);
    let before: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = s.allocate("c2", "eth0", &ranges).unwrap_err();
    assert!(
        matches!(&err, IpamError::Exhausted { range } if range == "10.42.1.0/30"),
        "{err}"
    );
    assert_eq!(s.get("c2", "eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(s.list().unwrap().len(), 2);
    let after: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after.len(), before.len());
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "fd00:10:42:1::2"
    );
    // Once c1 goes, c2 fits, and gets the next v6 address (the failed try did not advance it).
    s.release("c1", "eth0").unwrap();
    assert_eq!(
        addrs(&s.allocate("c2", "eth0", &ranges).unwrap()),
        vec![ip("fd00:10:42:1::3"), ip("10.42.1.2")]
    );
}

#[test]
fn gc_removes_only_leaked_reservations() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    for c in ["keep1", "leak1", "keep2", "leak2"] {
        s.allocate(c, "eth0", &dual()).unwrap();
    }
    s.allocate("keep1", "net1", &dual()).unwrap(); // same container, interface not in `valid`
    let valid = vec![
        ("keep1".to_string(), "eth0".to_string()),
        ("keep2".to_string(), "eth0".to_string()),
    ];
    let removed = s.gc(&valid).unwrap();
    assert_eq!(
        removed,
        vec![
            ip("10.42.1.3"),
            ip("10.42.1.5"),
            ip("10.42.1.6"),
            ip("fd00:10:42:1::3"),
            ip("fd00:10:42:1::5"),
            ip("fd00:10:42:1::6")
        ]
    );
    let left: Vec<String> = s
        .list()
        .unwrap()
        .into_iter()
        .map(|(_, c, i)| format!("{c}/{i}"))
        .collect();
    assert_eq!(
        left,
        vec!["keep1/eth0", "keep2/eth0", "keep1/eth0", "keep2/eth0"]
    );
    assert_eq!(s.gc(&valid).unwrap(), Vec::<IpAddr>::new());
    assert_eq!(s.gc(&[]).unwrap().len(), 4);
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn files_match_host_local() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    s.allocate("0123abcd", "eth0", &dual()).unwrap();
    let dir = tmp.path().join("flatnet");
    assert_eq!(s.dir(), dir);
    assert_eq!(
        fs::read(dir.join("10.42.1.2")).unwrap(),
        b"0123abcd\r\neth0"
    );
    assert_eq!(
        fs::read(dir.join("fd00:10:42:1::2")).unwrap(),
        b"0123abcd\r\neth0"
    );
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.42.1.2"
    );
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.1")).unwrap(),
        "fd00:10:42:1::2"
    );
    assert!(dir.join("lock").is_file());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "10.42.1.2",
            "fd00:10:42:1::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
}

#[test]
fn reads_files_written_by_host_local() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flatnet");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10.42.1.7"), "ctr-a\r\neth0").unwrap();
    fs::write(dir.join("10.42.1.8"), "ctr-old\n").unwrap(); // the old, ID-only format
    fs::write(dir.join("last_reserved_ip.0"), "10.42.1.8").unwrap();
    let s = store(tmp.path());
    assert_eq!(s.get("ctr-a", "eth0").unwrap(), vec![ip("10.42.1.7")]);
    assert_eq!(s.get("ctr-old", "eth0").unwrap(), vec![ip("10.42.1.8")]);
    // Round robin continues after host-local's last reserved IP.
    assert_eq!(
        addrs(&s.allocate("new", "eth0", &[range("10.42.1.0/24")]).unwrap()),
        vec![ip("10.42.1.9")]
    );
    // An attachment holding an IP from host-local keeps it.
    assert_eq!(
        addrs(
            &s.allocate("ctr-a", "eth0", &[range("10.42.1.0/24")])
                .unwrap()
        ),
        vec![ip("10.42.1.7")]
    );
    assert_eq!(s.release("ctr-old", "eth0").unwrap(), vec![ip("10.42.1.8")]);
}

#[test]
fn garbage_last_reserved_ip_is_only_a_lost_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    fs::write(s.dir().join("last_reserved_ip.0"), "not an ip").unwrap();
    assert_eq!(
        addrs(&s.allocate("c", "eth0", &[range("10.42.1.0/24")]).unwrap()),
        vec![ip("10.42.1.2")]
    );
    // A hint from another family or outside the range is ignored too.
    fs::write(s.dir().join("last_reserved_ip.0"), "fd00::9").unwrap();
    assert_eq!(
        addrs(&s.allocate("d", "eth0", &[range("10.42.1.0/24")]).unwrap()),
        vec![ip("10.42.1.3")]
    );
}

#[test]
fn corrupt_reservations_are_reported_and_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    fs::write(s.dir().join("10.42.1.2"), "").unwrap();
    let err = s.list().unwrap_err();
    assert!(
        matches!(&err, IpamError::Corrupt { reason, .. } if reason == "empty"),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("10.42.1.2: corrupt reservation: empty"),
        "{err}"
    );
    // The address stays taken until GC removes the unreadable file.
    assert_eq!(
        addrs(&s.allocate("c", "eth0", &[range("10.42.1.0/24")]).unwrap()),
        vec![ip("10.42.1.3")]
    );
    assert_eq!(
        s.gc(&[("c".into(), "eth0".into())]).unwrap(),
        vec![ip("10.42.1.2")]
    );
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn big_ranges_are_walked_boundedly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let r = [range("fd00:10:42:1::/64")];
    let a = addrs(&s.allocate("c1", "eth0", &r).unwrap());
    assert_eq!(a, vec![ip("fd00:10:42:1::2")]);
    // Near the end of the /64 the walk wraps to the start without visiting 2^64 addresses.
    fs::write(
        s.dir().join("last_reserved_ip.0"),
        "fd00:10:42:1:ffff:ffff:ffff:fffe",
    )
    .unwrap();
    let b = addrs(&s.allocate("c2", "eth0", &r).unwrap());
    assert_eq!(b, vec![ip("fd00:10:42:1:ffff:ffff:ffff:ffff")]);
    let c = addrs(&s.allocate("c3", "eth0", &r).unwrap());
    assert_eq!(c, vec![ip("fd00:10:42:1::3")]);
}

#[test]
fn walk_gives_up_after_max_walk_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    // A range of MAX_WALK + 1 candidates whose first MAX_WALK (from the start) are all taken.
    let r = Range {
        subnet: "fd00::/64".parse().unwrap(),
        range_start: Some(ip("fd00::1:0")),
        range_end: Some(ip("fd00::2:0")),
        gateway: None,
    };
    let base = u128::from("fd00::1:0".parse::<std::net::Ipv6Addr>().unwrap());
    for k in 0..flatnet_ipam::MAX_WALK {
        let a = std::net::Ipv6Addr::from(base + k);
        fs::write(s.dir().join(a.to_string()), "filler\r\neth0").unwrap();
    }
    let err = s
        .allocate("c", "eth0", std::slice::from_ref(&r))
        .unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    // The one free candidate is found once the walk starts nearer to it.
    fs::write(s.dir().join("last_reserved_ip.0"), "fd00::1:fff0").unwrap();
    assert_eq!(
        addrs(&s.allocate("c", "eth0", &[r]).unwrap()),
        vec![ip("fd00::2:0")]
    );
}

#[test]
fn reserve_takes_a_requested_address() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let a = s.reserve("c1", "eth0", ip("10.42.1.50"), &dual()).unwrap();
    assert_eq!(a.address, "10.42.1.50/24".parse::<IpNet>().unwrap());
    assert_eq!(
        s.reserve("c1", "eth0", ip("10.42.1.50"), &dual()).unwrap(),
        a
    );
    let err = s
        .reserve("c2", "eth0", ip("10.42.1.50"), &dual())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.42.1.50 is already allocated to c1/eth0"
    );
    let err = s
        .reserve("c2", "eth0", ip("10.42.1.1"), &dual())
        .unwrap_err();
    assert!(matches!(err, IpamError::AlreadyAllocated { .. }), "{err}");
    for bad in ["10.42.1.0", "10.42.1.255", "10.42.2.5"] {
        let err = s.reserve("c2", "eth0", ip(bad), &dual()).unwrap_err();
        assert!(matches!(err, IpamError::NotInRange { .. }), "{bad}: {err}");
    }
    // allocate() then completes the attachment with the other family, keeping the requested one.
    let all = addrs(&s.allocate("c1", "eth0", &dual()).unwrap());
    assert_eq!(all, vec![ip("10.42.1.50"), ip("fd00:10:42:1::2")]);
    // And the round robin goes on after the requested address.
    assert_eq!(
        addrs(&s.allocate("c3", "eth0", &dual()).unwrap())[0],
        ip("10.42.1.51")
    );
}

#[test]
fn bad_input_is_refused_before_touching_disk() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "a/b", "..", " x"] {
        assert!(
            matches!(
                HostLocalStore::open(tmp.path(), bad),
                Err(IpamError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let s = store(tmp.path());
    assert!(matches!(
        s.allocate("", "eth0", &dual()),
        Err(IpamError::InvalidName { .. })
    ));
    assert!(matches!(
        s.allocate("c\r\nx", "eth0", &dual()),
        Err(IpamError::InvalidName { .. })
    ));
    assert!(matches!(
        s.release("c", ""),
        Err(IpamError::InvalidName { .. })
    ));
    let err = s
        .allocate("c", "eth0", &[range("10.42.1.0/31")])
        .unwrap_err();
    assert!(matches!(err, IpamError::InvalidRange { .. }), "{err}");
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn unwritable_directory_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    let err = HostLocalStore::open(&file, "flatnet").unwrap_err();
    assert!(
        matches!(&err, IpamError::Io { path, .. } if path == &file.join("flatnet")),
        "{err}"
    );
}
