//! Certificates: `spec.tls` entries and the `kubernetes.io/tls` Secrets they name.

use crate::backend::by_name;
use crate::{host, Certificate, HostMatch};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::IngressTLS;
use std::collections::HashSet;

/// The Secret type of TLS certificates.
/// The Secret type that carries a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A Secret's value from `stringData` (which wins, as the API server folds it into `data`)
/// or `data`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    let string_data = secret.string_data.as_ref().and_then(|d| d.get(key));
    string_data
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| secret.data.as_ref()?.get(key).map(|b| b.0.clone()))
}

/// Collects certificates, Ingress by Ingress; the first claim of a host wins.
pub(crate) struct Certificates<'a> {
    secrets: crate::Map<(&'a str, &'a str), &'a Secret>,
    claimed: TlsHosts,
    list: Vec<Certificate>,
}

/// The hosts that have a certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsHosts {
    exact: HashSet<String>,
    wildcard: HashSet<String>,
}

impl TlsHosts {
    /// Whether a certificate serves the normalised `host`.
    pub(crate) fn covers(&self, host: &str) -> bool {
        self.exact.contains(host)
            || host::wildcard_suffix(host).is_some_and(|suffix| self.wildcard.contains(suffix))
    }

    /// Claims `host`; false when it already has a certificate (or is [`HostMatch::Any`]).
    fn claim(&mut self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Any => false,
            HostMatch::Exact(exact) => self.exact.insert(exact.clone()),
            HostMatch::Wildcard(suffix) => self.wildcard.insert(suffix.clone()),
        }
    }
}

impl<'a> Certificates<'a> {
    pub(crate) fn new(secrets: &'a [Secret]) -> Self {
        Certificates {
            secrets: by_name(secrets),
            claimed: TlsHosts::default(),
            list: Vec::new(),
        }
    }

    /// Adds the certificate of one `spec.tls` entry of an Ingress in `namespace`; `warn`
    /// receives `(field, reason)` for whatever is left out.
    pub(crate) fn add(
        &mut self,
        namespace: &str,
        tls: &IngressTLS,
        mut warn: impl FnMut(&str, String),
    ) {
        let Some(secret_name) = tls.secret_name.as_deref() else {
            return warn(
                "secretName",
                "missing (there is no default certificate)".into(),
            );
        };
        let (cert_pem, key_pem) = match self.pem(namespace, secret_name) {
            Ok(pem) => pem,
            Err(reason) => return warn("secretName", reason),
        };
        let mut hosts = Vec::new();
        for (i, written) in tls.hosts.iter().flatten().enumerate() {
            let field = format!("hosts[{i}]");
            match host::parse_rule(written) {
                None => warn(&field, format!("{written:?} is not a valid host")),
                Some(host) if self.claimed.claim(&host) => hosts.push(host),
                Some(host) => warn(&field, format!("{host} already has a certificate")),
            }
        }
        if hosts.is_empty() {
            return warn(
                "hosts",
                "no host left to serve, certificate not used".into(),
            );
        }
        self.list.push(Certificate {
            secret: format!("{namespace}/{secret_name}"),
            hosts,
            cert_pem,
            key_pem,
        });
    }

    /// `tls.crt` and `tls.key` of a `kubernetes.io/tls` Secret (`data`, or `stringData` as
    /// manifests may carry it).
    fn pem(&self, namespace: &str, name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let secret = self
            .secrets
            .get(&(namespace, name))
            .ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return Err(format!(
                "secret {namespace}/{name} is not of type {TLS_SECRET_TYPE}"
            ));
        }
        let field = |key: &str| {
            secret_value(secret, key)
                .filter(|pem| is_pem(pem))
                .ok_or_else(|| format!("secret {namespace}/{name}: {key} is missing or not PEM"))
        };
        Ok((field("tls.crt")?, field("tls.key")?))
    }

    /// The certificates in claim order, and the hosts they serve.
    pub(crate) fn finish(self) -> (Vec<Certificate>, TlsHosts) {
        (self.list, self.claimed)
    }
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}
