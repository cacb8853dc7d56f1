//! TLS on the listeners of the gateway and of the shipper's OTLP receivers (rustls, ring),
//! optionally asking clients for certificates (mTLS). Handshakes run off the accept loop, so a
//! client that stalls one holds up nobody.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use serde::Deserialize;

use crate::serve::ConnectionSlots;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's `tls` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Clients must present a certificate chaining to one of these (PEM).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why the listeners' TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or client CA file that cannot be read, parsed or used; names it.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration as a whole.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// A listener's handshake task could not be started.
    #[error("{0}")]
    Listener(std::io::Error),
}

/// The server configuration for `config`; errors name the file and the problem.
pub fn server_config(config: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let named = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| named(&config.cert, &e))?;
    if certs.is_empty() {
        return Err(named(&config.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| named(&config.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| named(path, &e))? {
                roots.add(cert.map_err(|e| named(path, &e))?).map_err(|e| named(path, &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| named(path, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|e| named(&config.cert, &e))
}

/// Connections accepted on a listener (TCP or vsock) whose TLS handshake succeeded.
pub struct TlsListener<L: axum::serve::Listener> {
    ready: mpsc::Receiver<(TlsStream<L::Io>, L::Addr)>,
    local: L::Addr,
}

impl<L> TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: Clone + std::fmt::Display,
{
    /// Takes over `listener`, offering `alpn`; failed handshakes are logged and counted under
    /// `what`.
    pub fn new(
        mut listener: L,
        config: &rustls::ServerConfig,
        alpn: &[&[u8]],
        what: &'static str,
        max_handshakes: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, TlsError> {
        // Handshakes in progress are strangers' connections: at the cap the oldest makes room.
        let handshakes = ConnectionSlots::new(max_handshakes);
        let local = listener.local_addr().map_err(TlsError::Listener)?;
        let (tx, ready) = mpsc::channel(64);
        let mut config = config.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            loop {
                // The listener waits out its own accept errors (out of descriptors).
                let (socket, peer) = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server this listener fed is gone.
                    () = tx.closed() => return,
                };
                let Some(mut slot) = handshakes.admit() else { continue };
                let (acceptor, ready, metrics) = (acceptor.clone(), tx.clone(), metrics.clone());
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)) => done,
                        () = slot.evicted() => {
                            metrics.refused(what, "evicted");
                            return;
                        }
                    };
                    drop(slot);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = ready.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(target: "teelog::serve", "{what} {peer}: TLS handshake failed: {e}");
                            metrics.refused(what, "tls");
                        }
                        Err(_) => {
                            tracing::warn!(target: "teelog::serve", "{what} {peer}: TLS handshake timed out");
                            metrics.refused(what, "tls");
                        }
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl<L: axum::serve::Listener> TlsListener<L> {
    /// The connections as a stream, for servers that take one (tonic).
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<L::Io>>> {
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(self.ready), |(io, _)| {
            Ok(io)
        })
    }
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: Clone + std::fmt::Display,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_file_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let config = TlsConfig { cert: cert.clone(), key: key.clone(), client_ca: None };
        let err = server_config(&config).unwrap_err();
        assert!(matches!(&err, TlsError::File { path, .. } if path == &cert), "{err:?}");
        std::fs::write(&cert, "").unwrap();
        let err = server_config(&config).unwrap_err();
        assert!(err.to_string().ends_with("cert.pem: no certificate in it"), "{err}");
    }
}
