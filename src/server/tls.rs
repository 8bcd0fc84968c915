//! TLS from a listener's `ssl_crt / ssl_key` (`rest_cherrypy:`, `rest_wsgi:`) with rustls. Handshakes run in each connection's
//! own task with a timeout, never in the accept loop, so a slow handshake holds only itself.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from PEM files: a certificate chain and a private key, named in errors
/// as keys of `block`.
pub fn acceptor(block: &str, crt: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{block}.ssl_crt/ssl_key do not form a usable pair"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Why a PEM file named by `key` could not be used: unreadable, or not PEM.
fn pem_error(key: &str, path: &Path, e: pem::Error) -> anyhow::Error {
    match e {
        pem::Error::Io(e) => anyhow::anyhow!("{key}: {}: {e}", path.display()),
        e => anyhow::anyhow!("{key}: {} is not PEM: {e}", path.display()),
    }
}
