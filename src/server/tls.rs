//! TLS from `rest_cherrypy: ssl_crt / ssl_key` with rustls. Handshakes run in each connection's
//! own task with a timeout, never in the accept loop, so a slow handshake holds only itself.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from PEM files: a certificate chain and a private key.
pub fn acceptor(crt: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(crt)
            .with_context(|| format!("rest_cherrypy.ssl_crt: {}", crt.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("rest_cherrypy.ssl_crt: {} is not PEM", crt.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "rest_cherrypy.ssl_crt: {} holds no certificate",
            crt.display()
        );
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("rest_cherrypy.ssl_key: {}", key.display()))?,
    ))
    .with_context(|| format!("rest_cherrypy.ssl_key: {} is not PEM", key.display()))?
    .with_context(|| {
        format!(
            "rest_cherrypy.ssl_key: {} holds no private key",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("rest_cherrypy.ssl_crt/ssl_key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
