//! TLS termination for [`Gateway::serve_tls`](crate::Gateway::serve_tls):
//! [`TlsConfig`] loads a PEM certificate chain and private key into a
//! rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN
//! `http/1.1`).
//!
//! Invariant: a [`TlsConfig`] only exists for a key that matches its
//! certificate, so a misconfiguration fails at startup with a one-line
//! error naming the file, never at a client's first handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS server configuration for the gateway. `Debug` shows no key.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &"http/1.1")
            .finish_non_exhaustive()
    }
}

/// Why a TLS configuration could not be built. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load the TLS {what} from {}: {detail}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("the TLS certificate and key are not usable together: {0}; check that the key belongs to the certificate")]
    Config(String),
}

impl TlsConfig {
    /// Load a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let pem_err = |what, path: &Path, detail: String| TlsError::Pem {
            what,
            path: path.to_owned(),
            detail,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| pem_err("certificate", cert_path, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err("certificate", cert_path, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_err(
                "certificate",
                cert_path,
                "no CERTIFICATE section found".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            let detail = match e {
                rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY section found".into(),
                other => other.to_string(),
            };
            pem_err("private key", key_path, detail)
        })?;
        Self::from_chain_and_key(certs, key)
    }

    /// Build from DER certificates (leaf first) and a private key.
    pub fn from_chain_and_key(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(ring_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
        })
    }

    /// Use a rustls configuration of your own (client certificates, other
    /// providers). Set its ALPN to `http/1.1` if you set any.
    pub fn from_rustls(server: Arc<ServerConfig>) -> Self {
        Self { server }
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

/// The *ring* crypto provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange; ff keeps *ring* on purpose (it builds without
/// a C toolchain, and sqlx here is built with it too), and allowing the
/// deprecation in this one place keeps the builds of applications that
/// resolve a fresh rustls free of warnings.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("ff-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = TlsConfig::from_pem_files(dir.join("absent.pem"), &empty).unwrap_err();
        assert!(e.to_string().contains("absent.pem"), "{e}");
        let e = TlsConfig::from_pem_files(&empty, &empty).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
