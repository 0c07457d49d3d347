//! The node network: a bridge in the fabric namespace, each node's `eth0` and the
//! `external` host plugged into it.

use anyhow::Result;
use flatnet_model::names::{self, FABRIC_BRIDGE};
use flatnet_model::state::{external_ip, State};
use flatnet_model::NodeState;
use flatnet_netlink::{netns, Netlink};
use ipnet::{IpNet, Ipv4Net};
use std::net::Ipv4Addr;

/// MAC of the external host's `eth0`.
const EXTERNAL_MAC: [u8; 6] = [0x0e, 0xf0, 0xff, 0xff, 0xff, 0xfe];

fn fabric(cluster: &str) -> Result<Netlink> {
    Netlink::open(&netns::path(&names::fabric_netns(cluster)))
}

/// Creates the fabric namespace and bridge and the `external` host (idempotent).
pub fn create(state: &State) -> Result<()> {
    let c = &state.config;
    let fabric_ns = netns::create(&names::fabric_netns(&c.name))?;
    // A plain switch: frames it forwards skip the netfilter hooks (br_netfilter's work on
    // every packet between nodes), which nothing in the fabric uses.
    netns::run_in(&fabric_ns, || netns::bridge_netfilter(false, false))?;
    let nl = fabric(&c.name)?;
    nl.ensure_bridge(FABRIC_BRIDGE, c.mtu, None)?;
    let ext = names::external_netns(&c.name);
    plug(
        &nl,
        "ext",
        &ext,
        c.node_cidr,
        external_ip(&c.node_cidr),
        EXTERNAL_MAC,
        c.mtu,
    )
}

/// Plugs a host namespace into the fabric: a veth `fabric_end` on the bridge, `eth0` inside.
fn plug(
    nl: &Netlink,
    fabric_end: &str,
    host_ns: &str,
    net: Ipv4Net,
    ip: Ipv4Addr,
    mac: [u8; 6],
    mtu: u32,
) -> Result<()> {
    let ns_path = netns::create(host_ns)?;
    let inside = Netlink::open(&ns_path)?;
    if inside.link("eth0")?.is_some() {
        return Ok(());
    }
    if let Some(old) = nl.link(fabric_end)? {
        nl.del_link(old.index)?;
    }
    nl.add_veth_into(fabric_end, "eth0", mtu, &ns_path)?;
    let bridge = nl.require(FABRIC_BRIDGE)?;
    let end = nl.require(fabric_end)?;
    nl.set_controller(end.index, bridge.index)?;
    let l = inside.require("eth0")?;
    inside.set_mac(l.index, mac)?;
    inside.ensure_address(l.index, IpNet::V4(Ipv4Net::new(ip, net.prefix_len())?))?;
    inside.set_up(l.index)?;
    Ok(())
}

/// The fabric-side link name of a node.
fn node_port(node: &NodeState) -> String {
    format!("n{}", node.index)
}

/// Creates a node's namespace with its `eth0` on the fabric (idempotent).
pub fn add_node(state: &State, node: &NodeState) -> Result<()> {
    let c = &state.config;
    let nl = fabric(&c.name)?;
    plug(
        &nl,
        &node_port(node),
        &names::node_netns(&c.name, &node.name),
        c.node_cidr,
        node.ip,
        node.eth_mac(),
        c.mtu,
    )
}

/// Removes a node's namespace (its processes must be gone) and its fabric port.
pub fn remove_node(cluster: &str, node: &NodeState) -> Result<()> {
    netns::kill_and_delete(&names::node_netns(cluster, &node.name));
    let nl = fabric(cluster)?;
    if let Some(l) = nl.link(&node_port(node))? {
        nl.del_link(l.index)?;
    }
    Ok(())
}
