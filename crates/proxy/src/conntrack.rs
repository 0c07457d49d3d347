//! Stale UDP conntrack entries: UDP has no connection to close, so an entry that still
//! points at a gone endpoint (or recorded a reject before the first endpoint came) keeps a
//! client's traffic black-holed until it times out. These are the entries to delete.

use crate::flows::Flow;
use std::net::IpAddr;

/// Entries to delete: UDP to `vip:port`, only those answered by `reply_src` when set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flush {
    /// The Service address the client used.
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// The gone endpoint, or `None` for every entry of the Service port.
    pub reply_src: Option<IpAddr>,
}

fn vips(f: &Flow) -> Vec<IpAddr> {
    f.cluster_ip
        .iter()
        .chain(&f.lb_ips)
        .chain(&f.external_ips)
        .copied()
        .collect()
}

/// What changed between two programs that leaves stale UDP entries.
pub fn stale(old: &[Flow], new: &[Flow]) -> Vec<Flush> {
    let mut out = Vec::new();
    for f in new.iter().filter(|f| f.proto == "udp") {
        let before = old.iter().find(|o| o.id == f.id && o.v4 == f.v4);
        let old_backends: Vec<IpAddr> = before
            .map(|o| o.backends.iter().map(|b| b.ip).collect())
            .unwrap_or_default();
        for vip in vips(f) {
            if old_backends.is_empty() && !f.backends.is_empty() {
                out.push(Flush {
                    vip,
                    port: f.port,
                    reply_src: None,
                });
            }
            for gone in old_backends
                .iter()
                .filter(|ip| !f.backends.iter().any(|b| b.ip == **ip))
            {
                out.push(Flush {
                    vip,
                    port: f.port,
                    reply_src: Some(*gone),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Deletes the entries with the `conntrack` tool in the caller's namespace. "Nothing
/// matched" is not an error.
pub fn flush(entries: &[Flush]) -> anyhow::Result<()> {
    for e in entries {
        let mut cmd = std::process::Command::new("conntrack");
        cmd.args([
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            &e.vip.to_string(),
            "--orig-port-dst",
            &e.port.to_string(),
        ]);
        if let Some(src) = e.reply_src {
            cmd.args(["--reply-src", &src.to_string()]);
        }
        if e.vip.is_ipv6() {
            cmd.args(["-f", "ipv6"]);
        }
        let out = cmd.output().map_err(|err| {
            anyhow::anyhow!("running conntrack (install the conntrack package): {err}")
        })?;
        // Exit status 1 with "0 flow entries" means nothing matched.
        if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("0 flow entries")
        {
            anyhow::bail!(
                "conntrack -D: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Algorithm, Backend};

    fn flow(backends: &[&str]) -> Flow {
        Flow {
            id: "ns/dns/udp/53".into(),
            proto: "udp",
            v4: true,
            cluster_ip: Some("10.43.0.10".parse().unwrap()),
            port: 53,
            node_port: None,
            lb_ips: vec![],
            external_ips: vec![],
            source_ranges: vec![],
            backends: backends
                .iter()
                .map(|ip| Backend {
                    ip: ip.parse().unwrap(),
                    port: 53,
                    local: false,
                })
                .collect(),
            affinity: None,
            external_local: false,
            internal_local: false,
            algorithm: Algorithm::Random,
        }
    }

    #[test]
    fn first_endpoint_flushes_the_service_port() {
        let got = stale(&[flow(&[])], &[flow(&["10.42.1.5"])]);
        assert_eq!(
            got,
            vec![Flush {
                vip: "10.43.0.10".parse().unwrap(),
                port: 53,
                reply_src: None
            }]
        );
    }

    #[test]
    fn gone_endpoint_flushes_its_entries_only() {
        let got = stale(
            &[flow(&["10.42.1.5", "10.42.2.5"])],
            &[flow(&["10.42.2.5", "10.42.3.5"])],
        );
        assert_eq!(
            got,
            vec![Flush {
                vip: "10.43.0.10".parse().unwrap(),
                port: 53,
                reply_src: Some("10.42.1.5".parse().unwrap())
            }]
        );
    }

    #[test]
    fn unchanged_and_tcp_flows_flush_nothing() {
        assert!(stale(&[flow(&["10.42.1.5"])], &[flow(&["10.42.1.5"])]).is_empty());
        let mut t = flow(&["10.42.1.5"]);
        t.proto = "tcp";
        assert!(stale(&[], &[t]).is_empty());
    }
}
