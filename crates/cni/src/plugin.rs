//! The plugin's verbs: what ADD, DEL, CHECK, STATUS and GC do to the node and the pod.

use crate::spec::{code, CniError, CniResult, Interface, IpConfig, NetConf, RouteEntry};
use flatnet_ipam::{Allocation, HostLocalStore, IpamError};
use flatnet_netlink::{netns, Netlink, Route};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The CNI_* variables of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

impl Invocation {
    /// Reads the variables from `env` and checks those the command needs (code 4 otherwise).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, CniError> {
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let inv = Invocation {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
        };
        let needs: &[(&str, &String)] = match inv.command.as_str() {
            "ADD" | "CHECK" => &[
                ("CNI_CONTAINERID", &inv.container_id),
                ("CNI_NETNS", &inv.netns),
                ("CNI_IFNAME", &inv.ifname),
            ],
            "DEL" => &[
                ("CNI_CONTAINERID", &inv.container_id),
                ("CNI_IFNAME", &inv.ifname),
            ],
            "VERSION" | "STATUS" | "GC" => &[],
            "" => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_COMMAND {other:?} is not a CNI verb"),
                ))
            }
        };
        for (k, v) in needs {
            if v.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("{k} is required for {}", inv.command),
                ));
            }
        }
        if !inv.ifname.is_empty()
            && (inv.ifname.len() > 15
                || inv.ifname.contains(['/', ' '])
                || inv.ifname == "."
                || inv.ifname == "..")
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {:?} is not an interface name", inv.ifname),
            ));
        }
        if !inv.container_id.is_empty()
            && !inv
                .container_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_CONTAINERID {:?} has characters outside [A-Za-z0-9_.-]",
                    inv.container_id
                ),
            ));
        }
        Ok(inv)
    }
}

fn io(e: impl std::fmt::Display) -> CniError {
    CniError::new(code::IO_FAILURE, "I/O failure").details(format!("{e:#}"))
}

fn ipam_err(e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted { .. } => CniError::new(code::IPAM_EXHAUSTED, e.to_string()),
        other => io(other),
    }
}

/// Host-side veth name: stable for (container, ifname), 15 characters at most.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let h = Sha256::digest(format!("{container_id}/{ifname}"));
    format!(
        "veth{}",
        h[..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn store(conf: &NetConf) -> Result<HostLocalStore, CniError> {
    HostLocalStore::open(Path::new(&conf.ipam.data_dir), &conf.name).map_err(ipam_err)
}

fn netns_path(inv: &Invocation) -> Result<PathBuf, CniError> {
    let p = PathBuf::from(&inv.netns);
    if !p.exists() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {} does not exist", inv.netns),
        ));
    }
    Ok(p)
}

fn default_route(a: &Allocation) -> RouteEntry {
    let dst: IpNet = if a.address.addr().is_ipv4() {
        "0.0.0.0/0".parse().unwrap()
    } else {
        "::/0".parse().unwrap()
    };
    RouteEntry {
        dst,
        gw: Some(a.gateway),
    }
}

fn mac_text(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// ADD: reserve addresses, wire the pod to the bridge, return the result.
pub fn add(inv: &Invocation, conf: &NetConf) -> Result<CniResult, CniError> {
    let ns = netns_path(inv)?;
    let store = store(conf)?;
    let allocs = store
        .allocate(&inv.container_id, &inv.ifname, &conf.ranges())
        .map_err(ipam_err)?;
    match wire(inv, conf, &ns, &allocs) {
        Ok(r) => Ok(r),
        Err(e) => {
            // All or nothing: a failed ADD keeps no address and no link.
            let _ = store.release(&inv.container_id, &inv.ifname);
            if let Ok(nl) = Netlink::new() {
                if let Ok(Some(l)) = nl.link(&host_veth_name(&inv.container_id, &inv.ifname)) {
                    let _ = nl.del_link(l.index);
                }
            }
            Err(e)
        }
    }
}

fn wire(
    inv: &Invocation,
    conf: &NetConf,
    ns: &Path,
    allocs: &[Allocation],
) -> Result<CniResult, CniError> {
    let nl = Netlink::new().map_err(io)?;
    let gateways: Vec<IpNet> = allocs
        .iter()
        .map(|a| IpNet::new(a.gateway, a.address.prefix_len()).expect("prefix"))
        .collect();
    let bridge = nl.ensure_bridge(&conf.bridge, conf.mtu, None).map_err(io)?;
    let have = nl.addresses(bridge.index).map_err(io)?;
    for g in &gateways {
        if !have.contains(g) {
            nl.ensure_address(bridge.index, *g).map_err(io)?;
        }
    }
    nl.set_up(bridge.index).map_err(io)?;

    let host = host_veth_name(&inv.container_id, &inv.ifname);
    if let Some(l) = nl.link(&host).map_err(io)? {
        nl.del_link(l.index).map_err(io)?;
    }
    // The pod's end is born in the pod's namespace under its final name; the kernel refuses
    // (EEXIST) if the pod already has an interface of that name.
    nl.add_veth_into(&host, &inv.ifname, conf.mtu, ns)
        .map_err(|e| {
            io(format!(
                "{e:#} (does the container already have {}?)",
                inv.ifname
            ))
        })?;

    let ifname = inv.ifname.clone();
    let allocs_in = allocs.to_vec();
    let routes: Vec<RouteEntry> = allocs
        .iter()
        .map(default_route)
        .chain(conf.ipam.routes.iter().cloned())
        .collect();
    let routes_in = routes.clone();
    let pod_link = netns::run_in(ns, move || {
        let nl = Netlink::new()?;
        let lo = nl.require("lo")?;
        nl.set_up(lo.index)?;
        let l = nl.require(&ifname)?;
        if allocs_in.iter().any(|a| a.address.addr().is_ipv6()) {
            netns::sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")?;
        }
        for a in &allocs_in {
            nl.ensure_address(l.index, a.address)?;
        }
        nl.set_up(l.index)?;
        for r in &routes_in {
            nl.replace_route(&Route {
                dst: r.dst,
                gateway: r.gw,
                oif: l.index,
                onlink: false,
            })?;
        }
        nl.require(&ifname)
    })
    .map_err(io)?;

    let host_link = nl.require(&host).map_err(io)?;
    nl.set_controller(host_link.index, bridge.index)
        .map_err(io)?;
    if conf.hairpin_mode {
        nl.set_hairpin(host_link.index).map_err(io)?;
    }
    let bridge = nl.require(&conf.bridge).map_err(io)?;
    let legacy = conf.cni_version.starts_with("0.");
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: bridge.name,
                mac: mac_text(&bridge.mac),
                mtu: Some(bridge.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: host_link.name,
                mac: mac_text(&host_link.mac),
                mtu: Some(host_link.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: pod_link.name,
                mac: mac_text(&pod_link.mac),
                mtu: Some(pod_link.mtu),
                sandbox: inv.netns.clone(),
            },
        ],
        ips: allocs
            .iter()
            .map(|a| IpConfig {
                version: legacy
                    .then(|| if a.address.addr().is_ipv4() { "4" } else { "6" }.to_string()),
                address: a.address,
                gateway: Some(a.gateway),
                interface: Some(2),
            })
            .collect(),
        routes,
        dns: serde_json::json!({}),
    })
}

/// DEL: release the addresses and remove the pod's interface. Succeeds when repeated and
/// when the namespace is already gone.
pub fn del(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    if !inv.netns.is_empty() && Path::new(&inv.netns).exists() {
        let ifname = inv.ifname.clone();
        netns::run_in(Path::new(&inv.netns), move || {
            let nl = Netlink::new()?;
            if let Some(l) = nl.link(&ifname)? {
                nl.del_link(l.index)?;
            }
            Ok(())
        })
        .map_err(io)?;
    }
    // The peer goes with the pod end; remove a host end left by a half-done ADD too.
    let nl = Netlink::new().map_err(io)?;
    if let Some(l) = nl
        .link(&host_veth_name(&inv.container_id, &inv.ifname))
        .map_err(io)?
    {
        nl.del_link(l.index).map_err(io)?;
    }
    store(conf)?
        .release(&inv.container_id, &inv.ifname)
        .map_err(ipam_err)?;
    Ok(())
}

/// CHECK: the pod's interface, addresses and routes are as the previous result says.
pub fn check(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .clone()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "prevResult is required for CHECK"))?;
    let prev: CniResult = serde_json::from_value(prev)
        .map_err(|e| CniError::new(code::DECODE, "failed to decode prevResult").details(e))?;
    let ns = netns_path(inv)?;
    let held = store(conf)?
        .get(&inv.container_id, &inv.ifname)
        .map_err(ipam_err)?;
    let failed = |m: String| CniError::new(code::CHECK_FAILED, m);
    for ip in &prev.ips {
        if !held.contains(&ip.address.addr()) {
            return Err(failed(format!(
                "{} is not reserved for this container",
                ip.address
            )));
        }
    }
    let ifname = inv.ifname.clone();
    let (addrs, routes, up) = netns::run_in(&ns, move || {
        let nl = Netlink::new()?;
        let l = nl
            .link(&ifname)?
            .ok_or_else(|| anyhow::anyhow!("interface {ifname} is missing"))?;
        let all = nl_routes(&nl)?;
        Ok((nl.addresses(l.index)?, all, l.up))
    })
    .map_err(|e| failed(format!("{e:#}")))?;
    if !up {
        return Err(failed(format!("{} is down", inv.ifname)));
    }
    for ip in &prev.ips {
        if !addrs.contains(&ip.address) {
            return Err(failed(format!(
                "{} is missing on {}",
                ip.address, inv.ifname
            )));
        }
    }
    for r in &prev.routes {
        if !routes
            .iter()
            .any(|(dst, gw)| *dst == r.dst && (r.gw.is_none() || *gw == r.gw))
        {
            return Err(failed(format!("route to {} is missing", r.dst)));
        }
    }
    Ok(())
}

fn nl_routes(nl: &Netlink) -> anyhow::Result<Vec<(IpNet, Option<IpAddr>)>> {
    Ok(nl
        .own_routes()?
        .into_iter()
        .map(|r| (r.dst, r.gateway))
        .collect())
}

/// STATUS: ready once the node agent has written the readiness file (code 50 before).
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    if let Some(f) = &conf.readiness_file {
        if !Path::new(f).exists() {
            return Err(
                CniError::new(code::NOT_AVAILABLE, "the node's network is not up yet")
                    .details(format!("{f} is missing")),
            );
        }
    }
    store(conf).map(|_| ())
}

/// GC: release every reservation not listed in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    store(conf)?.gc(&valid).map_err(ipam_err)?;
    Ok(())
}
