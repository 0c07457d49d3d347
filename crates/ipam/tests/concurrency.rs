//! Many allocators at once: threads with their own stores, and separate processes.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use flatnet_ipam::{HostLocalStore, Range};

/// Set in the environment of the child processes of `processes_never_share_an_address`.
const CHILD_DIR: &str = "FLATNET_IPAM_TEST_CHILD_DIR";
const CHILD_PREFIX: &str = "FLATNET_IPAM_TEST_CHILD_PREFIX";
const PER_CHILD: usize = 20;
const CHILDREN: usize = 6;

fn dual() -> Vec<Range> {
    vec![
        Range::new("10.42.1.0/24".parse().unwrap()),
        Range::new("fd00:10:42:1::/64".parse().unwrap()),
    ]
}

/// Checks that every reservation is distinct and each container holds one IP per family.
fn assert_distinct(dir: &Path, containers: usize) {
    let list = HostLocalStore::open(dir, "flatnet")
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(list.len(), 2 * containers);
    let v4: HashSet<IpAddr> = list.iter().filter(|r| r.0.is_ipv4()).map(|r| r.0).collect();
    let v6: HashSet<IpAddr> = list.iter().filter(|r| r.0.is_ipv6()).map(|r| r.0).collect();
    assert_eq!((v4.len(), v6.len()), (containers, containers));
    let ids: HashSet<&str> = list.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(ids.len(), containers);
}

#[test]
fn hundred_threads_get_distinct_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                scope.spawn(move || {
                    // Each thread has its own store, so its own lock file descriptions.
                    let store = HostLocalStore::open(dir, "flatnet").unwrap();
                    let allocs = store
                        .allocate(&format!("container-{i}"), "eth0", &dual())
                        .unwrap();
                    allocs.iter().map(|a| a.address.addr()).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let v4: HashSet<IpAddr> = results.iter().map(|r| r[0]).collect();
    let v6: HashSet<IpAddr> = results.iter().map(|r| r[1]).collect();
    assert_eq!(v4.len(), 100);
    assert_eq!(v6.len(), 100);
    assert!(v4.iter().all(|ip| ip.is_ipv4()) && v6.iter().all(|ip| ip.is_ipv6()));
    assert_distinct(dir, 100);
    // Round robin under the lock hands out a contiguous block: .2 to .101.
    let expected: HashSet<IpAddr> = (2..=101)
        .map(|i| format!("10.42.1.{i}").parse().unwrap())
        .collect();
    assert_eq!(v4, expected);
}

#[test]
fn concurrent_adds_of_one_attachment_reserve_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|_| {
                scope.spawn(move || {
                    let store = HostLocalStore::open(dir, "flatnet").unwrap();
                    let allocs = store.allocate("same", "eth0", &dual()).unwrap();
                    allocs.iter().map(|a| a.address.addr()).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    assert_distinct(dir, 1);
}

#[test]
fn threads_sharing_one_store_are_excluded_too() {
    let tmp = tempfile::tempdir().unwrap();
    let store = HostLocalStore::open(tmp.path(), "flatnet").unwrap();
    std::thread::scope(|scope| {
        for i in 0..40 {
            let store = &store;
            scope.spawn(move || store.allocate(&format!("c{i}"), "eth0", &dual()).unwrap());
        }
    });
    assert_distinct(tmp.path(), 40);
}

#[test]
fn processes_never_share_an_address() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "allocate_in_child_process",
                    "--ignored",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(CHILD_DIR, tmp.path())
                .env(CHILD_PREFIX, format!("proc{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }
    // Every child also added the one shared attachment, which got one address per family.
    assert_distinct(tmp.path(), CHILDREN * PER_CHILD + 1);
}

/// The body of each child process of `processes_never_share_an_address`; does nothing when run
/// by hand.
#[test]
#[ignore = "run as a child process by processes_never_share_an_address"]
fn allocate_in_child_process() {
    let (Some(dir), Some(prefix)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_PREFIX).ok(),
    ) else {
        return;
    };
    let store = HostLocalStore::open(Path::new(&dir), "flatnet").unwrap();
    for i in 0..PER_CHILD {
        let allocs = store
            .allocate(&format!("{prefix}-{i}"), "eth0", &dual())
            .unwrap();
        assert_eq!(allocs.len(), 2);
        let shared = store.allocate("shared", "eth0", &dual()).unwrap();
        assert_eq!(shared.len(), 2);
    }
}
