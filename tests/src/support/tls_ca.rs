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

fn failed(what: &str, e: impl std::fmt::Display) -> SupportError {
    SupportError::Protocol(format!("making the test CA: {what}: {e}"))
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf, SupportError> {
    let path = dir.join(name);
    std::fs::write(&path, pem)
        .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

fn ca(name: &str) -> Result<(CertificateParams, KeyPair, String), SupportError> {
    let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(|e| failed("CA", e))?;
    Ok((params, key, cert.pem()))
}

/// A leaf certificate for `names` (DNS names or IP addresses) signed by
/// `issuer`: its PEM and its key's PEM.
fn leaf(
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    expired: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), SupportError> {
    let key = KeyPair::generate().map_err(|e| failed("leaf key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("leaf", e))?;
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into().map_err(|e| failed("a DNS name", e))?),
        });
    }
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("ff"));
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

/// Make a CA and the certificates a server presenting `server` needs, in
/// `dir`.
pub fn make(dir: &Path, server: ServerCert) -> Result<TlsFiles, SupportError> {
    let (ca_params, ca_key, ca_pem) = ca("ff test CA")?;
    let issuer = Issuer::new(ca_params, ca_key);
    let (other_params, other_key, _) = ca("untrusted CA")?;
    let untrusted = Issuer::new(other_params, other_key);
    let ok_names = ["localhost", "127.0.0.1", "::1"];
    let (cert, key) = match server {
        ServerCert::Valid => leaf(
            &ok_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
            &issuer,
        )?,
        ServerCert::Expired => leaf(
            &ok_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            true,
            &issuer,
        )?,
        ServerCert::WrongHost => leaf(
            &["other.invalid"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
            &issuer,
        )?,
        ServerCert::UntrustedCa => leaf(
            &ok_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
            &untrusted,
        )?,
    };
    let (client_cert, client_key) = leaf(
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
