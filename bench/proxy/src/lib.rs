//! Shared parts of the proxy benchmarks: synthetic Services and EndpointSlices, scratch
//! network namespaces (named `flbench-...`, never the host's), medians.

use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Endpoints per Service.
pub const ENDPOINTS: usize = 10;

/// The ClusterIP of Service `i` in 10.43.0.0/16 (65,000 of them at most).
pub fn vip(i: usize) -> String {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 43, 0, 1)) + i as u32)
        .to_string()
}

pub fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {
            "clusterIP": vip(i),
            "clusterIPs": [vip(i)],
            "ipFamilies": ["IPv4"],
            "selector": {"app": format!("a{i}")},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    }))
    .expect("valid Service")
}

/// The slice of Service `i`; with `moved`, its first endpoint has another address.
pub fn slice(i: usize, moved: bool) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let n = i * ENDPOINTS + e;
            // Addresses in a scratch namespace: 10.64.0.0/10 holds every endpoint.
            let base = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0));
            let addr = if moved && e == 0 {
                std::net::Ipv4Addr::from(base - 1).to_string()
            } else {
                std::net::Ipv4Addr::from(base + n as u32).to_string()
            };
            json!({
                "addresses": [addr],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node{}", e % 3 + 1)
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-ipv4"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("valid EndpointSlice")
}

/// A scratch network namespace, deleted on drop.
pub struct Scratch(pub String);

impl Scratch {
    /// Creates `flbench-<tag>-<pid>`.
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!("flbench-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        if !Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
        {
            bail!("ip netns add {name} failed");
        }
        Ok(Scratch(name))
    }

    /// Runs `f` on a thread inside the namespace, so that the `nft` it starts (through
    /// `flatnet_proxy::apply`, as the node agent applies its table from inside its node) runs
    /// there; returns milliseconds.
    pub fn timed<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<f64> {
        let start = Instant::now();
        flatnet_netlink::netns::run_in(&flatnet_netlink::netns::path(&self.0), f)?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}
