//! TLS from a listener's `ssl_crt / ssl_key` (`rest_cherrypy:`, `rest_wsgi:`) with rustls. Handshakes run in each connection's
//! own task with a timeout, never in the accept loop, so a slow handshake holds only itself.
//!
//! The certificate and key are reloadable: the acceptor's resolver ([`CertSlot`]) hands each new
//! handshake the pair currently in its slot, and a reload ([`super::reload`]) puts a new pair
//! there once it has read and checked it. Connections already open keep the certificate they
//! were set up with.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A listener's TLS: the acceptor, and the slot its certificate is read from.
#[derive(Clone)]
pub struct Tls {
    /// Accepts handshakes with the certificate in `cert`.
    pub acceptor: TlsAcceptor,
    /// The certificate and key new handshakes get.
    pub cert: Arc<CertSlot>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert).finish()
    }
}

/// The certificate chain and key new handshakes get; swapped by a reload.
#[derive(Debug)]
pub struct CertSlot {
    current: ArcSwap<CertifiedKey>,
}

impl CertSlot {
    /// Puts `key` in force for handshakes from now on.
    pub fn store(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }

    /// The pair in force.
    pub fn load(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The provider every TLS listener uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and private key (PEM), named in errors as keys of
/// `block`: unreadable files, no certificate, no key, or a key that does not match the
/// certificate are refused.
pub fn certified_key(block: &str, crt: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(crt)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(&format!("{block}.ssl_crt"), crt, e))?;
    if certs.is_empty() {
        anyhow::bail!("{block}.ssl_crt: {} holds no certificate", crt.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            anyhow::anyhow!("{block}.ssl_key: {} holds no private key", key.display())
        }
        e => pem_error(&format!("{block}.ssl_key"), key, e),
    })?;
    let pair = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| anyhow::anyhow!("{block}.ssl_crt/ssl_key do not form a usable pair: {e}"))?;
    Ok(Arc::new(pair))
}

/// Builds the listener's TLS from PEM files: a certificate chain and a private key, named in
/// errors as keys of `block`.
pub fn acceptor(block: &str, crt: &Path, key: &Path) -> anyhow::Result<Tls> {
    use anyhow::Context;
    let cert = Arc::new(CertSlot {
        current: ArcSwap::new(certified_key(block, crt, key)?),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert,
    })
}

/// Why a PEM file named by `key` could not be used: unreadable, or not PEM.
fn pem_error(key: &str, path: &Path, e: pem::Error) -> anyhow::Error {
    match e {
        pem::Error::Io(e) => anyhow::anyhow!("{key}: {}: {e}", path.display()),
        e => anyhow::anyhow!("{key}: {} is not PEM: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn the_slot_hands_out_what_was_stored_last() {
        let tls = acceptor(
            "rest_cherrypy",
            &fixture("server.crt"),
            &fixture("server.key"),
        )
        .unwrap();
        let first = tls.cert.load();
        let second = certified_key(
            "rest_cherrypy",
            &fixture("server2.crt"),
            &fixture("server2.key"),
        )
        .unwrap();
        assert_ne!(first.cert, second.cert);
        tls.cert.store(Arc::clone(&second));
        assert!(Arc::ptr_eq(&tls.cert.load(), &second));
    }

    #[test]
    fn a_bad_pair_is_refused_by_name() {
        let e = certified_key(
            "rest_cherrypy",
            &fixture("server.crt"),
            &fixture("server2.key"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rest_cherrypy.ssl_crt/ssl_key do not form a usable pair"),
            "{e}"
        );
        let e = certified_key("rest_wsgi", &fixture("nothing.crt"), &fixture("server.key"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rest_wsgi.ssl_crt: "), "{e}");
        let e = certified_key("rest_wsgi", &fixture("server.key"), &fixture("server.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
