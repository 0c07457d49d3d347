//! Checks of the L7 kinds: Ingress, IngressClass and `kubernetes.io/tls` Secrets.

use crate::validate::{is_dns_label, is_dns_subdomain, is_port_name, Checker};
use flatnet_l7_routes::{secret_value, TLS_SECRET_TYPE};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

/// Checks an Ingress's rules, backends, TLS entries and flatnet annotations.
pub fn check_ingress(c: &mut Checker, ingress: &Ingress) {
    for bad in flatnet_l7_routes::annotations::parse(ingress.metadata.annotations.as_ref())
        .err()
        .unwrap_or_default()
    {
        c.fail(format!("metadata.annotations[{}]", bad.key), bad.reason);
    }
    let Some(spec) = &ingress.spec else {
        c.fail("spec", "missing");
        return;
    };
    if let Some(class) = &spec.ingress_class_name {
        if !is_dns_subdomain(class) {
            c.fail(
                "spec.ingressClassName",
                format!("{class:?} is not a DNS subdomain"),
            );
        }
    }
    if let Some(b) = &spec.default_backend {
        check_backend(c, "spec.defaultBackend", b);
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        c.fail("spec", "an Ingress needs rules or a defaultBackend");
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = &rule.host {
            check_host(c, &format!("spec.rules[{i}].host"), host);
        }
        let Some(http) = &rule.http else { continue };
        for (j, path) in http.paths.iter().enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            match path.path_type.as_str() {
                "Exact" | "Prefix" => match path.path.as_deref() {
                    Some(p) if p.starts_with('/') => {}
                    Some(p) => c.fail(format!("{at}.path"), format!("{p:?} must start with /")),
                    None => c.fail(format!("{at}.path"), "required for Exact and Prefix"),
                },
                "ImplementationSpecific" => {}
                other => c.fail(
                    format!("{at}.pathType"),
                    format!("{other:?} must be Exact, Prefix or ImplementationSpecific"),
                ),
            }
            check_backend(c, &format!("{at}.backend"), &path.backend);
        }
    }
    for (k, tls) in spec.tls.iter().flatten().enumerate() {
        for (h, host) in tls.hosts.iter().flatten().enumerate() {
            check_host(c, &format!("spec.tls[{k}].hosts[{h}]"), host);
        }
        if let Some(secret) = &tls.secret_name {
            if !is_dns_subdomain(secret) {
                c.fail(
                    format!("spec.tls[{k}].secretName"),
                    format!("{secret:?} is not a DNS subdomain"),
                );
            }
        }
    }
}

/// A rule or TLS host: a DNS subdomain, optionally `*.` first; never an IP address.
fn check_host(c: &mut Checker, field: &str, host: &str) {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.parse::<std::net::IpAddr>().is_ok() {
        c.fail(
            field,
            format!("{host:?} must be a DNS name, not an IP address"),
        );
    } else if name.contains('*') {
        c.fail(
            field,
            format!("{host:?}: a wildcard must be the whole first label (*.example.com)"),
        );
    } else if !is_dns_subdomain(name) {
        c.fail(field, format!("{host:?} is not a lower-case DNS name"));
    }
}

fn check_backend(c: &mut Checker, at: &str, b: &IngressBackend) {
    match (&b.service, &b.resource) {
        (Some(svc), None) => {
            if !is_dns_label(&svc.name) {
                c.fail(
                    format!("{at}.service.name"),
                    format!("{:?} is not a Service name", svc.name),
                );
            }
            let port = svc.port.as_ref();
            match (
                port.and_then(|p| p.number),
                port.and_then(|p| p.name.as_ref()),
            ) {
                (Some(n), None) if (1..=65535).contains(&n) => {}
                (Some(n), None) => c.fail(
                    format!("{at}.service.port.number"),
                    format!("{n} is not a port (1-65535)"),
                ),
                (None, Some(n)) if is_port_name(n) => {}
                (None, Some(n)) => c.fail(
                    format!("{at}.service.port.name"),
                    format!("{n:?} is not an IANA service name"),
                ),
                _ => c.fail(
                    format!("{at}.service.port"),
                    "exactly one of number and name is required",
                ),
            }
        }
        (None, Some(_)) => c.fail(
            format!("{at}.resource"),
            "resource backends are not supported by flatnet; use a service",
        ),
        _ => c.fail(at, "exactly one of service and resource is required"),
    }
}

/// Checks an IngressClass: a controller name is required.
pub fn check_class(c: &mut Checker, class: &IngressClass) {
    match class.spec.as_ref().and_then(|s| s.controller.as_deref()) {
        Some(ctl) if ctl.contains('/') => {}
        Some(ctl) => c.fail(
            "spec.controller",
            format!(
                "{ctl:?} must be a domain-prefixed path such as flatnet.dev/ingress-controller"
            ),
        ),
        None => c.fail("spec.controller", "missing"),
    }
}

/// Checks a `kubernetes.io/tls` Secret: `tls.crt` and `tls.key` in PEM.
pub fn check_secret(c: &mut Checker, secret: &Secret) {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return;
    }
    for (key, marker) in [
        ("tls.crt", "CERTIFICATE-----"),
        ("tls.key", "PRIVATE KEY-----"),
    ] {
        match secret_value(secret, key) {
            Some(v) if String::from_utf8_lossy(&v).contains(marker) => {}
            Some(_) => c.fail(format!("data[{key}]"), format!("not PEM (no {marker})")),
            None => c.fail(format!("data[{key}]"), "required for kubernetes.io/tls"),
        }
    }
}
