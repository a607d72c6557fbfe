//! The node API's TLS: its serving certificate (`tlsCertFile` / `tlsPrivateKeyFile`, else a
//! self-signed one made once and kept in the certificate directory as kubelet's
//! `kubelet.crt` / `kubelet.key`), and the verification of client certificates against
//! `clientCAFile` (optional per connection: a client without a certificate may still
//! authenticate with a token, or as anonymous).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum ServingCert {
    /// `tlsCertFile` and `tlsPrivateKeyFile` (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate in `dir` (`kubelet.crt`, `kubelet.key`), made on first use
    /// for these names and addresses.
    SelfSigned {
        dir: PathBuf,
        names: Vec<String>,
        ips: Vec<IpAddr>,
    },
}

/// The PEM certificate chain and key of the serving certificate, made if needed. Returns the
/// paths it was read from.
pub fn serving_cert_files(src: &ServingCert) -> Result<(PathBuf, PathBuf), TlsError> {
    match src {
        ServingCert::Files { cert, key } => Ok((cert.clone(), key.clone())),
        ServingCert::SelfSigned { dir, names, ips } => {
            let (cert, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
            if cert.is_file() && key.is_file() {
                return Ok((cert, key));
            }
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            let (cert_pem, key_pem) = self_signed(names, ips)?;
            write_private(&key, key_pem.as_bytes())?;
            write_private(&cert, cert_pem.as_bytes())?;
            tracing::info!(cert = %cert.display(), "made a self-signed serving certificate for the node API");
            Ok((cert, key))
        }
    }
}

/// Writes a file readable by root only, atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    f.write_all(data).map_err(|e| file_err(&tmp, e))?;
    f.sync_all().map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// A self-signed serving certificate (PEM cert, PEM key) valid for a year, for `names` (the
/// first is the CN) and `ips`.
pub fn self_signed(names: &[String], ips: &[IpAddr]) -> Result<(String, String), TlsError> {
    let cfg = |e: rcgen::Error| TlsError::Config(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(cfg)?;
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let cn = names.first().cloned().unwrap_or_else(|| "staticlet".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{cn}@{now}"));
    params.not_before = time_from_unix(now.saturating_sub(3600));
    params.not_after = time_from_unix(now + 365 * 24 * 3600);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(cfg)?;
    let cert = params.self_signed(&key).map_err(cfg)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn time_from_unix(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The rustls configuration of the node API: the serving certificate, and client certificates
/// verified against `client_ca` when given (a client may also present none).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_err(ca, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(ca, e))?;
            if cas.is_empty() {
                return Err(file_err(ca, "no certificate in the file"));
            }
            for c in cas {
                roots.add(c).map_err(|e| file_err(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| file_err(cert, e))?;
    // HTTP/1.1 only: exec, attach and port-forward upgrade the connection.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = ServingCert::SelfSigned {
            dir: dir.path().join("pki"),
            names: vec!["node-1".into(), "localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let (cert, key) = serving_cert_files(&src).unwrap();
        let first = std::fs::read(&cert).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (cert2, _) = serving_cert_files(&src).unwrap();
        assert_eq!(std::fs::read(cert2).unwrap(), first, "kept, not remade");
        server_config(&cert, &key, None).unwrap();
        // The node's names and addresses are in it.
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap());
        assert!(san.contains("node-1") && san.contains("localhost"), "{san}");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = server_config(&cert, &key, None).unwrap_err().to_string();
        assert!(e.contains("c.pem"), "{e}");
        let missing = dir.path().join("missing-ca.pem");
        let (c, k) = serving_cert_files(&ServingCert::SelfSigned {
            dir: dir.path().join("pki"),
            names: vec!["n".into()],
            ips: vec![],
        })
        .unwrap();
        let e = server_config(&c, &k, Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing-ca.pem"), "{e}");
    }
}
