//! A throwaway certificate authority for TLS tests, made with `rcgen`:
//! a CA, server certificates signed by it (valid for `localhost` and
//! `127.0.0.1`, or expired, or for another host), a server certificate
//! signed by an unrelated CA, and a client certificate for mutual TLS —
//! all written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::SupportError;

/// Which certificate a TLS test server presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerCert {
    /// Signed by the test CA, valid for `localhost` and `127.0.0.1`.
    #[default]
    Valid,
    /// Signed by the test CA, but expired.
    Expired,
    /// Signed by the test CA, valid only for `other.invalid`.
    WrongHost,
    /// Valid for `127.0.0.1`, but signed by a CA clients do not trust.
    UntrustedCa,
}

/// The PEM files of one test CA.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate clients trust (`ca_cert=`).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (`client_cert=`).
    pub client_cert: PathBuf,
    /// Its private key (`client_key=`).
    pub client_key: PathBuf,
}

pub(super) fn failed(what: &str, e: impl std::fmt::Display) -> SupportError {
    SupportError::Protocol(format!("making the test CA: {what}: {e}"))
}

/// Write `pem` to `dir/name`; its path.
pub(super) fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf, SupportError> {
    let path = dir.join(name);
    std::fs::write(&path, pem)
        .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// A self-signed CA named `name`: its issuer and certificate PEM.
pub(super) fn authority(name: &str) -> Result<(Issuer<'static, KeyPair>, String), SupportError> {
    let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).map_err(|e| failed("CA", e))?.pem();
    Ok((Issuer::new(params, key), pem))
}

/// A certificate with common name `common_name` for `sans` (DNS names or
/// IP addresses), signed by `issuer`, valid now or (`expired`) only in
/// 2000: its PEM and its key's PEM.
pub(super) fn signed(
    common_name: &str,
    sans: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    expired: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), SupportError> {
    let key = KeyPair::generate().map_err(|e| failed("leaf key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("leaf", e))?;
    for name in sans {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().map_err(|e| failed("a DNS name", e))?),
        });
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![purpose];
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| failed("signing a leaf", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A server certificate for `names` (the first is its common name).
fn server_leaf(
    names: &[&str],
    expired: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), SupportError> {
    signed(
        names[0],
        names,
        ExtendedKeyUsagePurpose::ServerAuth,
        expired,
        issuer,
    )
}

/// Make a CA and the certificates a server presenting `server` needs, in
/// `dir`.
pub fn make(dir: &Path, server: ServerCert) -> Result<TlsFiles, SupportError> {
    let (issuer, ca_pem) = authority("ff test CA")?;
    let (untrusted, _) = authority("untrusted CA")?;
    let ok_names = ["localhost", "127.0.0.1", "::1"];
    let (cert, key) = match server {
        ServerCert::Valid => server_leaf(&ok_names, false, &issuer)?,
        ServerCert::Expired => server_leaf(&ok_names, true, &issuer)?,
        ServerCert::WrongHost => server_leaf(&["other.invalid"], false, &issuer)?,
        ServerCert::UntrustedCa => server_leaf(&ok_names, false, &untrusted)?,
    };
    let (client_cert, client_key) = signed(
        "ff-client",
        &["ff-client"],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
        &issuer,
    )?;
    Ok(TlsFiles {
        ca: write(dir, "ca.pem", &ca_pem)?,
        server_cert: write(dir, "server.pem", &cert)?,
        server_key: write(dir, "server-key.pem", &key)?,
        client_cert: write(dir, "client.pem", &client_cert)?,
        client_key: write(dir, "client-key.pem", &client_key)?,
    })
}
