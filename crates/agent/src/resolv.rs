//! A pod's `/etc/resolv.conf`, by kubelet's rules: `dnsPolicy` ClusterFirst (the default),
//! Default, None (and ClusterFirstWithHostNet, which is ClusterFirst for a pod network pod),
//! with `dnsConfig` merged in.

use flatnet_model::PodState;
use std::net::IpAddr;

/// `options` entries: name and optional value.
type Options = Vec<(String, Option<String>)>;

/// Most nameservers a resolver reads.
const MAX_NAMESERVERS: usize = 3;
/// Most search domains kubelet keeps.
const MAX_SEARCHES: usize = 32;

/// What the node gives pods of dnsPolicy `Default`: its own resolver configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeResolv {
    /// Nameservers.
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    pub searches: Vec<String>,
}

/// The file's text for `pod`, given the cluster DNS addresses and domain.
pub fn resolv_conf(
    pod: &PodState,
    cluster_dns: &[IpAddr],
    domain: &str,
    node: &NodeResolv,
) -> String {
    let policy = pod.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let (mut servers, mut searches, mut options): (Vec<String>, Vec<String>, Options) = match policy
    {
        "None" => (vec![], vec![], vec![]),
        "Default" => (
            node.nameservers.iter().map(|s| s.to_string()).collect(),
            node.searches.clone(),
            vec![],
        ),
        _ => (
            cluster_dns.iter().map(|s| s.to_string()).collect(),
            [
                format!("{}.svc.{domain}", pod.namespace),
                format!("svc.{domain}"),
                domain.to_string(),
            ]
            .into_iter()
            .chain(node.searches.iter().cloned())
            .collect(),
            vec![("ndots".to_string(), Some("5".to_string()))],
        ),
    };
    if let Some(c) = &pod.dns_config {
        servers.extend(c.nameservers.iter().flatten().cloned());
        searches.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            options.retain(|(n, _)| *n != name);
            options.push((name, o.value.clone()));
        }
    }
    dedup(&mut servers);
    dedup(&mut searches);
    servers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    let mut text = String::new();
    for s in &servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(n, v)| {
                v.as_ref()
                    .map(|v| format!("{n}:{v}"))
                    .unwrap_or_else(|| n.clone())
            })
            .collect();
        text.push_str(&format!("options {}\n", opts.join(" ")));
    }
    text
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = Vec::new();
    v.retain(|x| {
        let new = !seen.contains(x);
        seen.push(x.clone());
        new
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: Option<&str>, config: Option<serde_json::Value>) -> PodState {
        serde_json::from_value(serde_json::json!({
            "namespace": "x", "name": "a", "node": "n1", "uid": "u",
            "dnsPolicy": policy, "dnsConfig": config
        }))
        .unwrap()
    }

    const DNS: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 43, 0, 10))];

    #[test]
    fn cluster_first_is_kubelets_file() {
        let t = resolv_conf(
            &pod(None, None),
            &DNS,
            "cluster.local",
            &NodeResolv::default(),
        );
        assert_eq!(
            t,
            "nameserver 10.43.0.10\nsearch x.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_takes_the_nodes_resolver() {
        let node = NodeResolv {
            nameservers: vec!["192.168.1.254".parse().unwrap()],
            searches: vec!["lab.example".into()],
        };
        let t = resolv_conf(&pod(Some("Default"), None), &DNS, "cluster.local", &node);
        assert_eq!(t, "nameserver 192.168.1.254\nsearch lab.example\n");
    }

    #[test]
    fn none_uses_dns_config_only_and_config_merges() {
        let cfg = serde_json::json!({"nameservers": ["1.2.3.4"], "searches": ["a.example", "a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]});
        let t = resolv_conf(
            &pod(Some("None"), Some(cfg.clone())),
            &DNS,
            "cluster.local",
            &NodeResolv::default(),
        );
        assert_eq!(
            t,
            "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n"
        );
        let t = resolv_conf(
            &pod(Some("ClusterFirst"), Some(cfg)),
            &DNS,
            "cluster.local",
            &NodeResolv::default(),
        );
        assert_eq!(
            t,
            "nameserver 10.43.0.10\nnameserver 1.2.3.4\nsearch x.svc.cluster.local svc.cluster.local cluster.local a.example\noptions ndots:2 edns0\n"
        );
    }
}
