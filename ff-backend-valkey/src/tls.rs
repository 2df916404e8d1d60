//! TLS configuration: what a `valkeys://` / `rediss://` URL asks for
//! ([`TlsOptions`]: the `ca_cert=`, `client_cert=`, `client_key=` query
//! parameters) turned into one rustls client configuration ([`Tls`]) that
//! every connection to that server — or to any node of the same cluster —
//! is opened with, and handshake failures turned into one-line messages
//! that say what to do.
//!
//! Invariants: the server's certificate is always verified (against the
//! system roots, or only the CA in `ca_cert=`), and the name it is checked
//! against is the URL's host; a failed handshake never reaches the caller
//! as a bare rustls error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The TLS parameters of a server URL (paths to PEM files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// The CA that signed the server's certificate; the system roots when
    /// `None`.
    pub(crate) ca_cert: Option<PathBuf>,
    /// The client certificate chain, for mutual TLS.
    pub(crate) client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub(crate) client_key: Option<PathBuf>,
}

impl TlsOptions {
    /// The query parameters this module understands.
    pub(crate) const PARAMETERS: [&'static str; 3] = ["ca_cert", "client_cert", "client_key"];

    /// Set parameter `name` (one of [`TlsOptions::PARAMETERS`]).
    pub(crate) fn set(&mut self, name: &str, path: PathBuf) -> bool {
        let slot = match name {
            "ca_cert" => &mut self.ca_cert,
            "client_cert" => &mut self.client_cert,
            "client_key" => &mut self.client_key,
            _ => return false,
        };
        *slot = Some(path);
        true
    }
}

/// A loaded TLS client configuration, shared by every connection of a
/// backend (and of a future cluster client's nodes).
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    /// Where trusted CAs come from, for messages.
    trust: String,
    client_cert: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("trust", &self.trust).finish()
    }
}

impl Tls {
    /// Load the CA (or the system roots) and the client certificate.
    /// `Err` is one line naming the parameter and the file.
    pub(crate) fn load(options: &TlsOptions) -> Result<Self, String> {
        match (&options.client_cert, &options.client_key) {
            (Some(_), None) => return Err("client_cert= needs client_key= too".into()),
            (None, Some(_)) => return Err("client_key= needs client_cert= too".into()),
            _ => {}
        }
        let provider = Arc::new(ring_provider());
        let mut roots = RootCertStore::empty();
        let trust = match &options.ca_cert {
            Some(path) => {
                for cert in read_certs("ca_cert", path)? {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "ca_cert={}: not a usable CA certificate ({e})",
                            path.display()
                        )
                    })?;
                }
                format!("the CA in ca_cert={}", path.display())
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no system CA certificates found (install ca-certificates) and no ca_cert= given; pass ca_cert=/path/to/ca.pem"
                            .into(),
                    );
                }
                "the system's CA certificates".into()
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots);
        let config = match (&options.client_cert, &options.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "client_key={}: no PEM private key could be read ({e})",
                        key.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!(
                        "client_cert={} and client_key: not a matching certificate and key ({e})",
                        cert.display()
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            trust,
            client_cert: options.client_cert.is_some(),
        })
    }

    /// Whether connections present a client certificate (mutual TLS).
    pub(crate) fn presents_client_cert(&self) -> bool {
        self.client_cert
    }

    /// Run the TLS handshake on `tcp` with the server named `host` (a DNS
    /// name or an IP address, as in the URL).
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.explain(host, &e))
    }

    /// One line saying why the handshake with `host` failed and what to do.
    fn explain(&self, host: &str, e: &io::Error) -> String {
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "TLS: the server's certificate is not signed by {}; pass ca_cert= with the CA that signed it",
                    self.trust
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "TLS: the server's certificate is not valid for host {host}; connect with a host name the certificate names"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "TLS: the server's certificate has expired; renew it on the server".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "TLS: the server's certificate is not valid yet (check the clocks)".into()
                }
                other => format!("TLS: the server's certificate was refused ({other:?})"),
            },
            Some(rustls::Error::InvalidMessage(_) | rustls::Error::PeerSentOversizedRecord) => {
                "TLS: the server did not answer with TLS; is it a plaintext server? (then use valkey://)".into()
            }
            Some(rustls::Error::AlertReceived(alert)) => format!(
                "TLS: the server refused the handshake ({alert:?}); if it requires a client certificate, pass client_cert= and client_key="
            ),
            Some(other) => format!("TLS handshake failed: {other}"),
            None if e.kind() == io::ErrorKind::UnexpectedEof => {
                "TLS: the server closed the connection during the handshake; is it a plaintext server? (then use valkey://)".into()
            }
            None => format!("TLS handshake failed: {e}"),
        }
    }
}

/// Every PEM certificate in `path`; an error names the parameter.
fn read_certs(param: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{param}={}: no PEM certificate could be read ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{param}={}: the file holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
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
    fn missing_files_and_half_pairs_are_named() {
        let missing = TlsOptions {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = Tls::load(&missing).unwrap_err();
        assert!(e.contains("ca_cert=/nonexistent/ca.pem"), "{e}");
        let half = TlsOptions {
            client_cert: Some("/x.pem".into()),
            ..TlsOptions::default()
        };
        let e = Tls::load(&half).unwrap_err();
        assert!(e.contains("client_key"), "{e}");
    }

    #[test]
    fn only_the_three_parameters_are_known() {
        let mut o = TlsOptions::default();
        assert!(o.set("ca_cert", "/a".into()));
        assert!(!o.set("sslmode", "/b".into()));
        assert_eq!(o.ca_cert, Some(PathBuf::from("/a")));
    }
}
