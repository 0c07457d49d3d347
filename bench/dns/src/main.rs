//! Cluster DNS benchmark server: flatnet's DNS server over a fixed snapshot of 1,000
//! ClusterIP Services and 10 headless Services, plus the equivalent zone file and a dnsperf
//! query file for an established authoritative server.
//!
//! ```text
//! flatnet-bench-dns-server serve PORT        # serve on 127.0.0.1:PORT, print "ready"
//! flatnet-bench-dns-server files DIR         # write DIR/cluster.local.zone, DIR/queries.txt
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use flatnet_dns::{Config, EndpointView, PortView, ServiceView, Snapshot, Zone};

/// Namespaces of 100 Services each: `FLATNET_BENCH_NAMESPACES` (1-250), default 10.
fn namespaces() -> u8 {
    std::env::var("FLATNET_BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}
const SERVICES_PER_NS: u8 = 100;
const HEADLESS_ENDPOINTS: u8 = 5;
const QUERIES: usize = 100_000;

fn cluster_ip(ns: u8, svc: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 43, ns, svc + 10)
}

fn endpoint_ip(ns: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, ns, i + 2)
}

fn http() -> PortView {
    PortView {
        name: "http".into(),
        protocol: "TCP".into(),
        port: 80,
    }
}

/// 1,000 ClusterIP Services (ns0..ns9 x svc0..svc99) and one headless Service `headless`
/// per namespace with 5 ready endpoints.
fn snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    for ns in 0..namespaces() {
        let namespace = format!("ns{ns}");
        snap.namespaces.push(namespace.clone());
        for svc in 0..SERVICES_PER_NS {
            snap.services.push(ServiceView {
                namespace: namespace.clone(),
                name: format!("svc{svc}"),
                cluster_ips: vec![IpAddr::V4(cluster_ip(ns, svc))],
                ports: vec![http()],
                ..Default::default()
            });
        }
        snap.services.push(ServiceView {
            namespace: namespace.clone(),
            name: "headless".into(),
            headless: true,
            ports: vec![http()],
            ..Default::default()
        });
        for i in 0..HEADLESS_ENDPOINTS {
            snap.endpoints.push(EndpointView {
                namespace: namespace.clone(),
                service: "headless".into(),
                ip: IpAddr::V4(endpoint_ip(ns, i)),
                ready: true,
                hostname: None,
                ports: vec![http()],
            });
        }
    }
    snap
}

/// The same A records as an RFC 1035 zone file for `cluster.local.`.
fn zone_file() -> String {
    let mut z = String::new();
    z.push_str("$ORIGIN cluster.local.\n$TTL 5\n");
    z.push_str("@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n");
    z.push_str("@ IN NS ns.dns.cluster.local.\n");
    z.push_str("ns.dns IN A 10.43.0.10\n");
    for ns in 0..namespaces() {
        for svc in 0..SERVICES_PER_NS {
            let _ = writeln!(z, "svc{svc}.ns{ns}.svc IN A {}", cluster_ip(ns, svc));
        }
        for i in 0..HEADLESS_ENDPOINTS {
            let _ = writeln!(z, "headless.ns{ns}.svc IN A {}", endpoint_ip(ns, i));
        }
    }
    z
}

/// 100,000 `name A` lines: 80% existing Service names, 20% names that do not exist.
fn queries() -> String {
    let mut q = String::with_capacity(QUERIES * 40);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..QUERIES {
        // xorshift64: deterministic, no extra dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ns = (x >> 8) % u64::from(namespaces());
        let pick = (x >> 16) % 1000;
        if (x >> 32) % 10 < 8 {
            // 1 in 101 of the existing names is the headless Service.
            let svc = pick % (u64::from(SERVICES_PER_NS) + 1);
            if svc == u64::from(SERVICES_PER_NS) {
                let _ = writeln!(q, "headless.ns{ns}.svc.cluster.local A");
            } else {
                let _ = writeln!(q, "svc{svc}.ns{ns}.svc.cluster.local A");
            }
        } else {
            let _ = writeln!(q, "missing{pick}.ns{ns}.svc.cluster.local A");
        }
    }
    q
}

/// The allocator `flatnet dns` runs with.
#[global_allocator]
static ALLOCATOR: flatnet_alloc::Allocator = flatnet_alloc::Allocator;

fn main() -> Result<()> {
    // Before the runtime's threads allocate, as `flatnet dns` does before it starts one.
    flatnet_alloc::return_freed_memory_at_once();
    flatnet_alloc::small_pages_only();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("files") => {
            let dir = std::path::PathBuf::from(args.get(2).context("files DIR")?);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cluster.local.zone"), zone_file())?;
            std::fs::write(dir.join("queries.txt"), queries())?;
            Ok(())
        }
        Some("serve") => {
            let port: u16 = args.get(2).context("serve PORT")?.parse()?;
            let zone = Zone::new(Config::default(), snapshot());
            let _server = flatnet_dns::serve_udp_tcp(
                Arc::new(RwLock::new(zone)),
                format!("127.0.0.1:{port}").parse()?,
                vec![],
                Default::default(),
            )
            .await?;
            println!("ready");
            std::future::pending::<()>().await;
            Ok(())
        }
        _ => bail!("usage: flatnet-bench-dns-server serve PORT | files DIR"),
    }
}
