//! The node network program: a pure function of the cluster's nodes.

use flatnet_model::names::{POD_BRIDGE, VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI};
use flatnet_model::{Backend, ClusterConfig, NodeState};
use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;

/// The node's underlay interface on the node network.
pub const UNDERLAY: &str = "eth0";

/// The pod bridge of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Device name.
    pub name: String,
    /// MTU (the pods' MTU).
    pub mtu: u32,
    /// Fixed MAC, so the gateway's MAC never changes as pods come and go.
    pub mac: [u8; 6],
    /// Gateway addresses, one per family.
    pub addresses: Vec<IpNet>,
}

/// The node's VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevSpec {
    /// Device name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Local tunnel endpoint (the node IP).
    pub local: std::net::Ipv4Addr,
    /// Device MAC.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// The node's VTEP addresses (its pod subnets' network addresses, full-length prefix).
    pub addresses: Vec<IpNet>,
}

/// A route to a remote node's pod subnet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub via: IpAddr,
    /// Output device name.
    pub dev: String,
    /// Next hop is on the link.
    pub onlink: bool,
}

/// A permanent neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighSpec {
    /// Device name.
    pub dev: String,
    /// IP.
    pub ip: IpAddr,
    /// MAC.
    pub mac: [u8; 6],
}

/// A permanent FDB entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbSpec {
    /// Device name.
    pub dev: String,
    /// Remote MAC.
    pub mac: [u8; 6],
    /// Remote endpoint.
    pub dst: IpAddr,
}

/// Everything one node needs so that its pods reach every other pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Pod bridge.
    pub bridge: BridgeSpec,
    /// VXLAN device (vxlan backend only).
    pub vxlan: Option<VxlanDevSpec>,
    /// Extra addresses on the underlay (host-gw: the IPv6 link-local next hop).
    pub underlay_addresses: Vec<IpNet>,
    /// Neighbour entries, programmed before routes.
    pub neighbours: Vec<NeighSpec>,
    /// FDB entries, programmed before routes.
    pub fdb: Vec<FdbSpec>,
    /// Routes to remote pod subnets.
    pub routes: Vec<RouteSpec>,
}

/// The gateway of a pod subnet: its first host.
pub fn gateway(subnet: &IpNet) -> IpAddr {
    match subnet {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

/// The VTEP address of a node for one of its pod subnets: the subnet's network address.
fn vtep(subnet: &IpNet) -> IpNet {
    IpNet::new(subnet.network(), subnet.max_prefix_len()).expect("full-length prefix")
}

/// Computes the program of node `me`. Panics if `me` is not among `nodes`.
pub fn program(cfg: &ClusterConfig, nodes: &[NodeState], me: &str) -> Program {
    let local = nodes
        .iter()
        .find(|n| n.name == me)
        .expect("node is in the cluster");
    let bridge = BridgeSpec {
        name: POD_BRIDGE.to_string(),
        mtu: cfg.pod_mtu(),
        mac: local.bridge_mac(),
        addresses: local
            .pod_cidrs
            .iter()
            .map(|c| IpNet::new(gateway(c), c.prefix_len()).expect("prefix"))
            .collect(),
    };
    let mut p = Program {
        bridge,
        vxlan: None,
        underlay_addresses: Vec::new(),
        neighbours: Vec::new(),
        fdb: Vec::new(),
        routes: Vec::new(),
    };
    let remotes = nodes.iter().filter(|n| n.name != me);
    match cfg.backend {
        Backend::Vxlan => {
            p.vxlan = Some(VxlanDevSpec {
                name: VXLAN_DEVICE.to_string(),
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
                local: local.ip,
                mac: local.vtep_mac(),
                mtu: cfg.pod_mtu(),
                addresses: local.pod_cidrs.iter().map(vtep).collect(),
            });
            for r in remotes {
                p.fdb.push(FdbSpec {
                    dev: VXLAN_DEVICE.to_string(),
                    mac: r.vtep_mac(),
                    dst: IpAddr::V4(r.ip),
                });
                for c in &r.pod_cidrs {
                    let v = vtep(c).addr();
                    p.neighbours.push(NeighSpec {
                        dev: VXLAN_DEVICE.to_string(),
                        ip: v,
                        mac: r.vtep_mac(),
                    });
                    p.routes.push(RouteSpec {
                        dst: *c,
                        via: v,
                        dev: VXLAN_DEVICE.to_string(),
                        onlink: true,
                    });
                }
            }
        }
        Backend::HostGw => {
            p.underlay_addresses
                .push(IpNet::new(IpAddr::V6(local.link_local()), 64).expect("prefix"));
            for r in remotes {
                for c in &r.pod_cidrs {
                    let via = match c {
                        IpNet::V4(_) => IpAddr::V4(r.ip),
                        IpNet::V6(_) => IpAddr::V6(r.link_local()),
                    };
                    p.routes.push(RouteSpec {
                        dst: *c,
                        via,
                        dev: UNDERLAY.to_string(),
                        onlink: false,
                    });
                }
            }
        }
    }
    p.neighbours.sort();
    p.fdb.sort();
    p.routes.sort();
    p
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Program {
    /// The program as `ip`-style lines, for golden tests and `flatnet` to show.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let b = &self.bridge;
        let addrs = |a: &[IpNet]| {
            a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(
            s,
            "bridge {} mtu {} mac {} addresses {}",
            b.name,
            b.mtu,
            mac(&b.mac),
            addrs(&b.addresses)
        )
        .unwrap();
        if let Some(v) = &self.vxlan {
            writeln!(
                s,
                "vxlan {} id {} dstport {} local {} mac {} mtu {} learning off addresses {}",
                v.name,
                v.vni,
                v.port,
                v.local,
                mac(&v.mac),
                v.mtu,
                addrs(&v.addresses)
            )
            .unwrap();
        }
        for a in &self.underlay_addresses {
            writeln!(s, "address {a} dev {UNDERLAY}").unwrap();
        }
        for n in &self.neighbours {
            writeln!(
                s,
                "neigh {} lladdr {} dev {} permanent",
                n.ip,
                mac(&n.mac),
                n.dev
            )
            .unwrap();
        }
        for f in &self.fdb {
            writeln!(
                s,
                "fdb {} dev {} dst {} self permanent",
                mac(&f.mac),
                f.dev,
                f.dst
            )
            .unwrap();
        }
        for r in &self.routes {
            let onlink = if r.onlink { " onlink" } else { "" };
            writeln!(s, "route {} via {} dev {}{onlink}", r.dst, r.via, r.dev).unwrap();
        }
        s
    }
}
