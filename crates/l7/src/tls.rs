//! TLS: certificates by SNI from the route table (exact host, then `*.` wildcard, then a
//! certificate without hosts, then a self-signed default made at start), swapped atomically.

use arc_swap::ArcSwap;
use flatnet_l7_routes::{Certificate, HostMatch};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// The name in the default certificate.
pub const DEFAULT_NAME: &str = "flatnet-default.invalid";

/// The crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM chain and key.
pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in tls.crt");
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let signer = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// A self-signed certificate for [`DEFAULT_NAME`], served when no other one fits.
pub fn self_signed() -> anyhow::Result<Arc<CertifiedKey>> {
    let made = rcgen::generate_simple_self_signed(vec![DEFAULT_NAME.to_string()])?;
    load(
        made.cert.pem().as_bytes(),
        made.signing_key.serialize_pem().as_bytes(),
    )
}

/// Certificates by host.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Arc<CertifiedKey>,
}

impl CertStore {
    /// Indexes `certs` (first claim of a host wins); a certificate that does not load is left
    /// out and named in the returned warnings.
    pub fn build(certs: &[Certificate], default: Arc<CertifiedKey>) -> (CertStore, Vec<String>) {
        let mut store = CertStore {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            fallback: default,
        };
        let mut any = None;
        let mut warnings = Vec::new();
        for cert in certs {
            let key = match load(&cert.cert_pem, &cert.key_pem) {
                Ok(key) => key,
                Err(e) => {
                    warnings.push(format!("Secret {}: {e}", cert.secret));
                    continue;
                }
            };
            for host in &cert.hosts {
                match host {
                    HostMatch::Exact(h) => {
                        store.exact.entry(h.clone()).or_insert_with(|| key.clone());
                    }
                    HostMatch::Wildcard(s) => {
                        store
                            .wildcard
                            .entry(s.clone())
                            .or_insert_with(|| key.clone());
                    }
                    HostMatch::Any => {
                        any.get_or_insert_with(|| key.clone());
                    }
                }
            }
        }
        if let Some(any) = any {
            store.fallback = any;
        }
        (store, warnings)
    }

    /// The certificate for a server name (lower case, from SNI).
    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.fallback.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, suffix)| self.wildcard.get(suffix))
            .unwrap_or(&self.fallback)
            .clone()
    }
}

/// Picks certificates from the current store.
#[derive(Debug)]
pub struct Resolver(pub Arc<ArcSwap<CertStore>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()))
    }
}

/// The server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, certificates by SNI.
pub fn server_config(store: Arc<ArcSwap<CertStore>>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(secret: &str, name: &str, hosts: Vec<HostMatch>) -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        Certificate {
            secret: secret.into(),
            hosts,
            cert_pem: made.cert.pem().into_bytes(),
            key_pem: made.signing_key.serialize_pem().into_bytes(),
        }
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let default = self_signed().unwrap();
        let certs = [
            cert("ns/a", "a.test", vec![HostMatch::Exact("a.test".into())]),
            cert(
                "ns/w",
                "*.w.test",
                vec![HostMatch::Wildcard("w.test".into())],
            ),
            cert("ns/dup", "a.test", vec![HostMatch::Exact("a.test".into())]),
            Certificate {
                secret: "ns/broken".into(),
                hosts: vec![HostMatch::Exact("b.test".into())],
                cert_pem: b"nope".to_vec(),
                key_pem: b"nope".to_vec(),
            },
        ];
        let (store, warnings) = CertStore::build(&certs, default.clone());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("Secret ns/broken"));
        let der = |k: Arc<CertifiedKey>| k.cert[0].clone();
        let a = der(store.pick(Some("A.test.")));
        assert_eq!(a, der(store.pick(Some("a.test"))));
        assert_ne!(a, der(default.clone()));
        let w = der(store.pick(Some("x.w.test")));
        assert_ne!(w, a);
        assert_eq!(der(store.pick(Some("x.y.w.test"))), der(default.clone()));
        assert_eq!(der(store.pick(Some("b.test"))), der(default.clone()));
        assert_eq!(der(store.pick(None)), der(default));
    }
}
