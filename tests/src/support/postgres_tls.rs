//! TLS for a test PostgreSQL server: a throwaway CA made with `rcgen`, a
//! server certificate it signs (for `localhost` and `127.0.0.1`), a client
//! certificate for certificate authentication, a CA clients must not
//! trust, and the server configuration: `ssl = on` and a `pg_hba.conf`
//! that admits TCP connections only over TLS (`hostssl`).

use std::path::{Path, PathBuf};

use rcgen::ExtendedKeyUsagePurpose;

use super::tls_ca::{authority, signed, write};
use super::SupportError;

/// The role whose connections must authenticate with the client
/// certificate (its common name).
pub const CERT_ROLE: &str = "ffcert";

/// The PEM files of a TLS-enabled test server.
#[derive(Clone, Debug)]
pub struct PostgresTlsFiles {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing the server presents.
    pub other_ca: PathBuf,
    /// The server's certificate (`localhost`, `127.0.0.1`).
    pub server_cert: PathBuf,
    /// The server's key (owned by the server's OS user, mode 0600).
    pub server_key: PathBuf,
    /// A client certificate for [`CERT_ROLE`].
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Make the CA and certificates in `dir`.
pub(crate) fn make(dir: &Path) -> Result<PostgresTlsFiles, SupportError> {
    let (ca, ca_pem) = authority("ff test CA")?;
    let (_, other_pem) = authority("ff untrusted CA")?;
    let (server_cert, server_key) = signed(
        "localhost",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        false,
        &ca,
    )?;
    let (client_cert, client_key) = signed(
        CERT_ROLE,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
        &ca,
    )?;
    Ok(PostgresTlsFiles {
        ca: write(dir, "tls-ca.pem", &ca_pem)?,
        other_ca: write(dir, "tls-other-ca.pem", &other_pem)?,
        server_cert: write(dir, "tls-server.pem", &server_cert)?,
        server_key: write(dir, "tls-server-key.pem", &server_key)?,
        client_cert: write(dir, "tls-client.pem", &client_cert)?,
        client_key: write(dir, "tls-client-key.pem", &client_key)?,
    })
}

/// The server settings that turn TLS on with `files`.
pub(crate) fn server_config(files: &PostgresTlsFiles) -> String {
    let quote = |p: &Path| p.to_string_lossy().replace('\'', "''");
    format!(
        "# Written by ff-tests.\n\
         ssl = on\n\
         ssl_cert_file = '{}'\n\
         ssl_key_file = '{}'\n\
         ssl_ca_file = '{}'\n",
        quote(&files.server_cert),
        quote(&files.server_key),
        quote(&files.ca),
    )
}

/// `pg_hba.conf`: local socket connections as before, TCP only over TLS,
/// and [`CERT_ROLE`] only with a client certificate.
pub(crate) const HBA: &str = "# Written by ff-tests: TCP only over TLS.\n\
local all all trust\n\
hostssl all ffcert 127.0.0.1/32 cert\n\
hostssl all all 127.0.0.1/32 trust\n\
hostssl replication all 127.0.0.1/32 trust\n";
