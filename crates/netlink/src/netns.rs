//! Named network namespaces (as `ip netns` keeps them) and running code inside one.

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The path of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the named namespace (no-op if it exists) with `lo` up.
pub fn create(name: &str) -> Result<PathBuf> {
    if !exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(path(name))
}

/// Deletes the named namespace; a missing one is fine.
pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
        ip(&["netns", "delete", name])?;
    }
    Ok(())
}

/// Names of all named namespaces starting with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// PIDs of processes whose network namespace is `ns_path`.
pub fn pids(ns_path: &Path) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(ns_path) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = (target.dev(), target.ino());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| m.dev() == dev && m.ino() == ino)
                .unwrap_or(false)
        })
        .collect()
}

/// Moves the calling thread into the namespace at `ns_path`.
pub fn enter(ns_path: &Path) -> Result<()> {
    let f = File::open(ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", ns_path.display()))?;
    Ok(())
}

/// Runs `f` on a new thread inside the namespace at `ns_path` and returns its result.
/// The caller's thread never changes namespace.
pub fn run_in<T: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns_path = ns_path.to_path_buf();
    std::thread::spawn(move || {
        enter(&ns_path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in a network namespace panicked"))?
}

/// Writes a sysctl under /proc/sys of the calling thread's namespace, e.g. `net/ipv4/ip_forward`.
///
/// Per-namespace `net/` sysctls resolve against the namespace of the thread that opens them.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(key);
    std::fs::write(&p, value).with_context(|| format!("setting sysctl {key}={value}"))
}

/// Sets, for the calling thread's namespace, whether frames its bridges forward pass
/// through the IPv4 and IPv6 netfilter hooks (`bridge-nf-call-iptables`, `-ip6tables`: what
/// un-NATs the reply of a Service connection between two pods of one bridge) and the ARP
/// ones (`-arptables`). False when the kernel has no `br_netfilter` (nothing to set).
pub fn bridge_netfilter(ip: bool, arp: bool) -> Result<bool> {
    if !Path::new("/proc/sys/net/bridge").exists() {
        return Ok(false);
    }
    let on = |b: bool| if b { "1" } else { "0" };
    sysctl("net/bridge/bridge-nf-call-iptables", on(ip))?;
    sysctl("net/bridge/bridge-nf-call-ip6tables", on(ip))?;
    sysctl("net/bridge/bridge-nf-call-arptables", on(arp))?;
    Ok(true)
}

/// A named namespace deleted (with every process in it killed) when dropped: for tests.
pub struct TempNetns {
    /// Its name.
    pub name: String,
}

impl TempNetns {
    /// Creates `name` (which should carry the test's unique prefix), replacing a leftover.
    pub fn new(name: &str) -> Result<Self> {
        kill_and_delete(name);
        create(name)?;
        Ok(Self {
            name: name.to_string(),
        })
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        path(&self.name)
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        kill_and_delete(&self.name);
    }
}

/// Kills every process inside the named namespace, then deletes it. Errors are ignored:
/// this is clean-up that must run to the end.
pub fn kill_and_delete(name: &str) {
    for pid in pids(&path(name)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = delete(name);
}
