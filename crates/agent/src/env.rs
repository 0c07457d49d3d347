//! Service environment variables, as kubelet gives every container: for each Service with a
//! ClusterIP in the pod's namespace, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]`
//! and the Docker-link style `<NAME>_PORT*` variables.

use flatnet_controller::services::is_headless;
use k8s_openapi::api::core::v1::Service;

fn upper(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// The variables for a pod in `namespace`, sorted by name.
pub fn service_env(services: &[Service], namespace: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
    {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && !is_headless(spec))
        else {
            continue;
        };
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let n = upper(svc.metadata.name.as_deref().unwrap_or(""));
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        out.push((format!("{n}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{n}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|s| !s.is_empty()) {
                out.push((
                    format!("{n}_SERVICE_PORT_{}", upper(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase()
        };
        out.push((
            format!("{n}_PORT"),
            format!("{}://{host}:{}", proto(first), first.port),
        ));
        for p in &ports {
            let pre = format!("{n}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((pre.clone(), format!("{}://{host}:{}", proto(p), p.port)));
            out.push((format!("{pre}_PROTO"), proto(p)));
            out.push((format!("{pre}_PORT"), p.port.to_string()));
            out.push((format!("{pre}_ADDR"), ip.to_string()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_style_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-web", "namespace": "x"},
            "spec": {"clusterIP": "10.43.0.16", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let other: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "elsewhere", "namespace": "y"},
            "spec": {"clusterIP": "10.43.0.17", "ports": [{"port": 1}]}
        }))
        .unwrap();
        let env = service_env(&[svc, other], "x");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("10.43.0.16"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("MY_WEB_PORT"), Some("tcp://10.43.0.16:80"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.43.0.16:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_ADDR"), Some("10.43.0.16"));
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None);
    }
}
