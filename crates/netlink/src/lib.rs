//! Network namespaces, links, addresses, routes, neighbours and FDB entries.
//!
//! A blocking facade over `rtnetlink`: each [`Netlink`] owns a netlink socket bound to the
//! namespace it was opened in, and a small runtime to drive it.

pub mod netns;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteVia,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Routes flatnet installs carry this protocol number, so its appliers touch only their own.
pub const ROUTE_PROTOCOL: u8 = 0x66;

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// MAC address.
    pub mac: Vec<u8>,
    /// Administratively up.
    pub up: bool,
    /// Index of the bridge it is a port of.
    pub controller: Option<u32>,
}

/// A route in the main table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop, if any (an IPv4 route may have an IPv6 next hop and the reverse).
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: u32,
    /// The next hop is on the link even if no address says so.
    pub onlink: bool,
}

/// A permanent neighbour (ARP / NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    /// Interface index.
    pub ifindex: u32,
    /// Neighbour IP.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
}

/// A permanent forwarding entry on a VXLAN device: MAC behind a remote endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    /// Interface index of the VXLAN device.
    pub ifindex: u32,
    /// Remote MAC.
    pub mac: [u8; 6],
    /// Remote tunnel endpoint.
    pub dst: IpAddr,
}

/// Parameters of a VXLAN device.
#[derive(Clone, Debug)]
pub struct VxlanSpec<'a> {
    /// Device name.
    pub name: &'a str,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Local tunnel address.
    pub local: Ipv4Addr,
    /// Underlay device index.
    pub underlay: u32,
    /// MAC of the device.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
}

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl Netlink {
    /// A connection in the calling thread's namespace.
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        })?;
        Ok(Self { rt, handle })
    }

    /// A connection in the namespace at `ns_path`; the calling thread stays where it is.
    pub fn open(ns_path: &Path) -> Result<Self> {
        // The socket is created on a thread inside the namespace and stays bound to it.
        netns::run_in(ns_path, Self::new)
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// All links.
    pub fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self.run(self.handle.link().get().execute().try_collect())?;
        Ok(msgs.iter().map(to_link).collect())
    }

    /// The link called `name`, if present.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let res: Result<Vec<LinkMessage>, _> = self.run(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_collect(),
        );
        match res {
            Ok(m) => Ok(m.first().map(to_link)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The link called `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<Link> {
        self.link(name)?
            .ok_or_else(|| anyhow!("link {name} not found"))
    }

    fn add(&self, msg: LinkMessage, what: &str) -> Result<()> {
        self.run(self.handle.link().add(msg).execute())
            .with_context(|| format!("creating {what}"))
    }

    /// Creates a bridge (if missing) and returns it; it is brought up. Its MAC is set
    /// explicitly (to `mac`, or to the one the kernel chose), so that it no longer follows
    /// the lowest MAC among its ports: pods' neighbour entries for the gateway stay right
    /// while ports come and go.
    pub fn ensure_bridge(&self, name: &str, mtu: u32, mac: Option<[u8; 6]>) -> Result<Link> {
        if let Some(l) = self.link(name)? {
            return Ok(l);
        }
        let made = self
            .handle
            .link()
            .add(LinkBridge::new(name).mtu(mtu).up().build());
        match self.run(made.execute()) {
            // A concurrent caller (another CNI ADD) made it meanwhile: it sets it up.
            Err(e) if is_errno(&e, libc::EEXIST) => return self.require(name),
            r => r.with_context(|| format!("creating bridge {name}"))?,
        }
        let l = self.require(name)?;
        let fixed = match mac {
            Some(m) => m,
            None => l.mac.as_slice().try_into().context("bridge MAC")?,
        };
        self.set_mac(l.index, fixed)?;
        self.require(name)
    }

    /// Sets a link's MAC address.
    pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set(
            LinkUnspec::new_with_index(index).address(mac.to_vec()),
            &format!("link {index} address"),
        )
    }

    /// Creates a veth pair whose `peer` end is born inside the namespace at `peer_ns` (as
    /// `ip link add NAME type veth peer name PEER netns NS` does): no device ever moves
    /// between namespaces, which costs the kernel a synchronisation per move.
    pub fn add_veth_into(&self, name: &str, peer: &str, mtu: u32, peer_ns: &Path) -> Result<()> {
        let ns = std::fs::File::open(peer_ns)
            .with_context(|| format!("opening {}", peer_ns.display()))?;
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
            netlink_packet_route::link::InfoKind::Veth,
        )
        .name(name.to_string())
        .mtu(mtu)
        .set_info_data(netlink_packet_route::link::InfoData::Veth(
            netlink_packet_route::link::InfoVeth::Peer(peer_msg),
        ))
        .build();
        self.add(
            msg,
            &format!("veth {name} with {peer} in {}", peer_ns.display()),
        )
    }

    /// Creates a VXLAN device (learning off) if missing, and brings it up.
    pub fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        if let Some(l) = self.link(spec.name)? {
            return Ok(l);
        }
        let msg = LinkVxlan::new(spec.name, spec.vni)
            .dev(spec.underlay)
            .port(spec.port)
            .local(spec.local)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec())
            .up()
            .build();
        self.add(msg, &format!("vxlan {}", spec.name))?;
        self.require(spec.name)
    }

    fn set(&self, b: LinkMessageBuilder<LinkUnspec>, what: &str) -> Result<()> {
        self.run(self.handle.link().set(b.build()).execute())
            .with_context(|| format!("changing {what}"))
    }

    /// Brings a link up.
    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set(
            LinkUnspec::new_with_index(index).up(),
            &format!("link {index}"),
        )
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set(
            LinkUnspec::new_with_index(index).mtu(mtu),
            &format!("link {index} mtu"),
        )
    }

    /// Makes a link a port of bridge `controller` and brings it up.
    pub fn set_controller(&self, index: u32, controller: u32) -> Result<()> {
        self.set(
            LinkUnspec::new_with_index(index)
                .controller(controller)
                .up(),
            &format!("link {index} controller"),
        )
    }

    /// Turns hairpin mode on for a bridge port.
    pub fn set_hairpin(&self, index: u32) -> Result<()> {
        let msg = rtnetlink::LinkBridgePort::new(index).hairpin(true).build();
        self.run(self.handle.link().set_port(msg).execute())
            .with_context(|| format!("hairpin on link {index}"))
    }

    /// Deletes a link; a missing one is fine.
    pub fn del_link(&self, index: u32) -> Result<()> {
        match self.run(self.handle.link().del(index).execute()) {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            r => r.with_context(|| format!("deleting link {index}")),
        }
    }

    /// Addresses on a link (any scope).
    pub fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let msgs: Vec<_> = self.run(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect(),
        )?;
        let mut out = Vec::new();
        for m in msgs {
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    out.push(IpNet::new(*ip, m.header.prefix_len)?);
                }
            }
        }
        Ok(out)
    }

    /// Adds an address; one already present is fine.
    pub fn ensure_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            // No duplicate address detection: lab addresses are unique by construction.
            req.message_mut().header.flags |=
                netlink_packet_route::address::AddressHeaderFlags::Nodad;
        }
        match self.run(req.execute()) {
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            r => r.with_context(|| format!("adding {addr} to link {index}")),
        }
    }

    /// Removes an address; a missing one is fine.
    pub fn del_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let msgs: Vec<_> = self.run(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(addr.addr())
                .execute()
                .try_collect(),
        )?;
        for m in msgs {
            self.run(self.handle.address().del(m).execute())
                .with_context(|| format!("removing {addr} from link {index}"))?;
        }
        Ok(())
    }

    /// Routes of the main table installed by flatnet (protocol [`ROUTE_PROTOCOL`]).
    pub fn own_routes(&self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessageBuilder::<IpAddr>::new().build();
            q.header.address_family = family;
            let msgs: Vec<RouteMessage> =
                self.run(self.handle.route().get(q).execute().try_collect())?;
            out.extend(
                msgs.iter()
                    .filter(|m| m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL))
                    .filter(|m| m.header.table == 254)
                    .filter_map(to_route),
            );
        }
        out.sort();
        Ok(out)
    }

    fn route_message(r: &Route) -> Result<RouteMessage> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dst.network(), r.dst.prefix_len())?
            .output_interface(r.oif)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        match r.gateway {
            Some(gw) => b = b.gateway(gw)?,
            None => b = b.scope(RouteScope::Link),
        }
        if r.onlink {
            b = b.onlink();
        }
        Ok(b.build())
    }

    /// Adds or replaces a route.
    pub fn replace_route(&self, r: &Route) -> Result<()> {
        let msg = Self::route_message(r)?;
        self.run(self.handle.route().add(msg).replace().execute())
            .with_context(|| format!("route {} via {:?}", r.dst, r.gateway))
    }

    /// Deletes a route; a missing one is fine.
    pub fn del_route(&self, r: &Route) -> Result<()> {
        let msg = Self::route_message(r)?;
        match self.run(self.handle.route().del(msg).execute()) {
            Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
            r2 => r2.with_context(|| format!("deleting route {}", r.dst)),
        }
    }

    /// Permanent neighbour entries on `ifindex`.
    pub fn neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let msgs: Vec<NeighbourMessage> =
            self.run(self.handle.neighbours().get().execute().try_collect())?;
        let mut out: Vec<Neighbour> = msgs
            .iter()
            .filter(|m| m.header.ifindex == ifindex && m.header.state == NeighbourState::Permanent)
            .filter(|m| matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .filter_map(|m| {
                Some(Neighbour {
                    ifindex,
                    ip: neigh_dst(m)?,
                    mac: neigh_mac(m)?,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Adds or replaces a permanent neighbour entry.
    pub fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.run(
            self.handle
                .neighbours()
                .add(n.ifindex, n.ip)
                .link_layer_address(&n.mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute(),
        )
        .with_context(|| format!("neighbour {}", n.ip))
    }

    /// Deletes a neighbour entry; a missing one is fine.
    pub fn del_neighbour(&self, n: &Neighbour) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = if n.ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.ifindex = n.ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(n.ip)));
        match self.run(self.handle.neighbours().del(m).execute()) {
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            r => r.with_context(|| format!("deleting neighbour {}", n.ip)),
        }
    }

    /// Permanent FDB entries with a remote endpoint on `ifindex`.
    pub fn fdb(&self, ifindex: u32) -> Result<Vec<Fdb>> {
        let mut q = self.handle.neighbours().get();
        q = q.set_address_family(AddressFamily::Bridge);
        let msgs: Vec<NeighbourMessage> = self.run(q.execute().try_collect())?;
        let mut out: Vec<Fdb> = msgs
            .iter()
            .filter(|m| m.header.ifindex == ifindex && m.header.family == AddressFamily::Bridge)
            .filter_map(|m| {
                Some(Fdb {
                    ifindex,
                    mac: neigh_mac(m)?,
                    dst: neigh_dst(m)?,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Adds or replaces an FDB entry (`bridge fdb replace MAC dev DEV dst IP self permanent`).
    pub fn replace_fdb(&self, f: &Fdb) -> Result<()> {
        self.run(
            self.handle
                .neighbours()
                .add_bridge(f.ifindex, &f.mac)
                .destination(f.dst)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute(),
        )
        .with_context(|| format!("fdb entry for {}", f.dst))
    }

    /// Deletes an FDB entry; a missing one is fine.
    pub fn del_fdb(&self, f: &Fdb) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = f.ifindex;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
        match self.run(self.handle.neighbours().del(m).execute()) {
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            r => r.with_context(|| format!("deleting fdb entry for {}", f.dst)),
        }
    }
}

fn to_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: Vec::new(),
        up: m.header.flags.contains(LinkFlags::Up),
        controller: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(v) => l.mac = v.clone(),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            _ => {}
        }
    }
    l
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn to_route(m: &RouteMessage) -> Option<Route> {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Via(RouteVia::Inet6(v)) => gateway = Some(IpAddr::V6(*v)),
            RouteAttribute::Via(RouteVia::Inet(v)) => gateway = Some(IpAddr::V4(*v)),
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    // A default route carries no destination attribute.
    let dst = dst.or(match m.header.address_family {
        AddressFamily::Inet => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        AddressFamily::Inet6 => Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
        _ => None,
    });
    Some(Route {
        dst: IpNet::new(dst?, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    })
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        // FDB entries (bridge family) carry the remote endpoint as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => Some(IpAddr::V4(<[u8; 4]>::try_from(b.as_slice()).ok()?.into())),
            16 => Some(IpAddr::V6(<[u8; 16]>::try_from(b.as_slice()).ok()?.into())),
            _ => None,
        },
        _ => None,
    })
}

fn neigh_mac(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => v.as_slice().try_into().ok(),
        _ => None,
    })
}
