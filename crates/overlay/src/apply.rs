//! Applies a [`Program`] to the kernel: diffs against what is there and changes the least.

use crate::program::{Program, UNDERLAY};
use anyhow::Result;
use flatnet_netlink::{Fdb, Neighbour, Netlink, Route, VxlanSpec};
use std::collections::BTreeSet;

/// What an apply changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Entries and routes added or replaced.
    pub added: usize,
    /// Entries and routes removed.
    pub removed: usize,
}

fn ensure_addresses(nl: &Netlink, index: u32, want: &[ipnet::IpNet]) -> Result<()> {
    let have = nl.addresses(index)?;
    for a in want {
        if !have.contains(a) {
            nl.ensure_address(index, *a)?;
        }
    }
    Ok(())
}

/// Removes what is in `have` but not in `want`, then adds what is missing.
fn sync<T: Ord + Clone>(
    have: Vec<T>,
    want: &BTreeSet<T>,
    changes: &mut Changes,
    mut del: impl FnMut(&T) -> Result<()>,
    mut add: impl FnMut(&T) -> Result<()>,
) -> Result<()> {
    let have: BTreeSet<T> = have.into_iter().collect();
    for stale in have.difference(want) {
        del(stale)?;
        changes.removed += 1;
    }
    for missing in want.difference(&have) {
        add(missing)?;
        changes.added += 1;
    }
    Ok(())
}

/// Applies `p` in the namespace `nl` is bound to. Neighbour and FDB entries go in before the
/// routes that use them, and stale routes go before the entries they used.
pub fn apply(nl: &Netlink, p: &Program) -> Result<Changes> {
    let mut changes = Changes::default();
    let underlay = nl.require(UNDERLAY)?;
    let bridge = nl.ensure_bridge(&p.bridge.name, p.bridge.mtu, Some(p.bridge.mac))?;
    if bridge.mtu != p.bridge.mtu {
        nl.set_mtu(bridge.index, p.bridge.mtu)?;
    }
    if bridge.mac != p.bridge.mac {
        nl.set_mac(bridge.index, p.bridge.mac)?;
    }
    ensure_addresses(nl, bridge.index, &p.bridge.addresses)?;
    nl.set_up(bridge.index)?;
    ensure_addresses(nl, underlay.index, &p.underlay_addresses)?;

    let vx = match &p.vxlan {
        Some(v) => {
            let link = nl.ensure_vxlan(&VxlanSpec {
                name: &v.name,
                vni: v.vni,
                port: v.port,
                local: v.local,
                underlay: underlay.index,
                mac: v.mac,
                mtu: v.mtu,
            })?;
            if link.mtu != v.mtu {
                nl.set_mtu(link.index, v.mtu)?;
            }
            ensure_addresses(nl, link.index, &v.addresses)?;
            Some(link)
        }
        None => {
            // A cluster switched to host-gw: the VXLAN device and all that hangs on it go.
            if let Some(old) = nl.link(flatnet_model::names::VXLAN_DEVICE)? {
                nl.del_link(old.index)?;
                changes.removed += 1;
            }
            None
        }
    };
    let index_of = |dev: &str| -> Result<u32> {
        Ok(match dev {
            d if d == UNDERLAY => underlay.index,
            d if vx.as_ref().is_some_and(|l| l.name == d) => vx.as_ref().unwrap().index,
            d => nl.require(d)?.index,
        })
    };
    let mut routes = BTreeSet::new();
    for r in &p.routes {
        routes.insert(Route {
            dst: r.dst,
            gateway: Some(r.via),
            oif: index_of(&r.dev)?,
            onlink: r.onlink,
        });
    }
    let mut neigh = BTreeSet::new();
    for n in &p.neighbours {
        neigh.insert(Neighbour {
            ifindex: index_of(&n.dev)?,
            ip: n.ip,
            mac: n.mac,
        });
    }
    let mut fdb = BTreeSet::new();
    for f in &p.fdb {
        fdb.insert(Fdb {
            ifindex: index_of(&f.dev)?,
            mac: f.mac,
            dst: f.dst,
        });
    }

    // Stale routes first, so that nothing routes through an entry about to go.
    let have_routes = nl.own_routes()?;
    let stale: Vec<Route> = have_routes
        .iter()
        .filter(|r| !routes.contains(r))
        .cloned()
        .collect();
    for r in &stale {
        nl.del_route(r)?;
        changes.removed += 1;
    }
    if let Some(link) = &vx {
        sync(
            nl.neighbours(link.index)?,
            &neigh,
            &mut changes,
            |n| nl.del_neighbour(n),
            |n| nl.replace_neighbour(n),
        )?;
        sync(
            nl.fdb(link.index)?,
            &fdb,
            &mut changes,
            |f| nl.del_fdb(f),
            |f| nl.replace_fdb(f),
        )?;
    }
    let kept: Vec<Route> = have_routes
        .into_iter()
        .filter(|r| routes.contains(r))
        .collect();
    sync(
        kept,
        &routes,
        &mut changes,
        |r| nl.del_route(r),
        |r| nl.replace_route(r),
    )?;
    Ok(changes)
}
