//! The flatnet CNI plugin, CNI specification 1.1.
//!
//! One binary does the work of the reference `bridge` plugin with `host-local` IPAM built
//! in: a bridge on the node, a veth into the pod, addresses and routes, hairpin mode.

pub mod plugin;
pub mod spec;

use spec::{code, CniError, NetConf};
use std::collections::HashMap;

/// Runs one invocation: returns what to print on stdout and whether it succeeded.
pub fn run(env: &HashMap<String, String>, stdin: &[u8]) -> (String, bool) {
    match dispatch(env, stdin) {
        Ok(out) => (out, true),
        Err(mut e) => {
            if let Ok(c) = serde_json::from_slice::<serde_json::Value>(stdin) {
                if let Some(v) = c.get("cniVersion").and_then(|v| v.as_str()) {
                    if spec::SUPPORTED_VERSIONS.contains(&v) {
                        e.cni_version = v.to_string();
                    }
                }
            }
            (serde_json::to_string(&e).expect("serialisable"), false)
        }
    }
}

fn dispatch(env: &HashMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let inv = plugin::Invocation::from_env(env)?;
    if inv.command == "VERSION" {
        return Ok(spec::version_info().to_string());
    }
    let conf = NetConf::parse(stdin)?;
    match inv.command.as_str() {
        "ADD" => {
            let r = plugin::add(&inv, &conf)?;
            serde_json::to_string(&r).map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))
        }
        "DEL" => plugin::del(&inv, &conf).map(|_| String::new()),
        "CHECK" => plugin::check(&inv, &conf).map(|_| String::new()),
        "STATUS" => plugin::status(&conf).map(|_| String::new()),
        "GC" => plugin::gc(&conf).map(|_| String::new()),
        _ => unreachable!("checked by Invocation::from_env"),
    }
}
