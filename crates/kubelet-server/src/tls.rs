//! The node API's TLS: its serving certificate (`tlsCertFile` / `tlsPrivateKeyFile`, else a
//! self-signed one made once and kept in the certificate directory as kubelet's
//! `kubelet.crt` / `kubelet.key`), and client certificates. As kubelet (Go's
//! `RequestClientCert`), the handshake asks for a certificate but accepts any, proving only that
//! the client holds its key; whether it chains to `clientCAFile` is decided by authentication
//! ([`ClientCa::verify`]): a certificate from another CA is then `401 Unauthorized`, not a
//! failed handshake, and a client without one may still use a token, or be anonymous.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

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
    staticlet_runtime::write_private(path, data).map_err(|(p, e)| file_err(&p, e))
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

/// The client CA (`clientCAFile`): verifies a client's certificate chain.
#[derive(Debug, Clone)]
pub struct ClientCa {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    /// Reads the CA bundle (PEM).
    pub fn load(path: &Path) -> Result<ClientCa, TlsError> {
        let mut roots = RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_err(path, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(path, e))?;
        if cas.is_empty() {
            return Err(file_err(path, "no certificate in the file"));
        }
        for c in cas {
            roots.add(c).map_err(|e| file_err(path, e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| file_err(path, e))?;
        Ok(ClientCa { verifier })
    }

    /// Whether `chain` (leaf first) is a valid client certificate of this CA now.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok()
    }
}

/// Asks for a client certificate and accepts any whose key the client proves to hold (the
/// handshake signature is checked); the chain is verified later by [`ClientCa::verify`].
#[derive(Debug)]
struct RequestClientCert {
    ca: ClientCa,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.verifier.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verifier.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verifier.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.ca.verifier.supported_verify_schemes()
    }
}

/// The rustls configuration of the node API: the serving certificate, and a client
/// certificate asked for when a client CA is given (verified by authentication, see the
/// module doc).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let mut config = builder(client_ca)?
        .with_single_cert(chain, key_der)
        .map_err(|e| file_err(cert, e))?;
    // HTTP/1.1 only: exec, attach and port-forward upgrade the connection.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The node API's rustls configuration with a serving certificate that `resolver` picks at
/// each handshake (`serverTLSBootstrap`: the certificate the cluster issued, swapped in place
/// when it is renewed). When it has none the handshake fails, as kubelet's `GetCertificate`
/// does before its serving certificate is issued.
pub fn server_config_with_resolver(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = builder(client_ca)?.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn builder(
    client_ca: Option<&ClientCa>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(match client_ca {
        Some(ca) => {
            builder.with_client_cert_verifier(Arc::new(RequestClientCert { ca: ca.clone() }))
        }
        None => builder.with_no_client_auth(),
    })
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
    fn client_certificates_are_verified_against_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let ca = ClientCa::load(&ca_file).unwrap();
        let client = |signed_by_ca: bool| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "someone");
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let k = rcgen::KeyPair::generate().unwrap();
            let c = if signed_by_ca {
                p.signed_by(&k, &issuer).unwrap()
            } else {
                p.self_signed(&k).unwrap()
            };
            c.der().clone()
        };
        assert!(ca.verify(&[client(true)]));
        assert!(!ca.verify(&[client(false)]), "another CA's");
        assert!(!ca.verify(&[]));
    }

    /// A resolver whose certificate the test swaps.
    #[derive(Debug, Default)]
    struct Slot(std::sync::RwLock<Option<Arc<rustls::sign::CertifiedKey>>>);

    impl ResolvesServerCert for Slot {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            self.0.read().unwrap().clone()
        }
    }

    /// A TLS handshake against `server` trusting `root` for "node-1": the serial number of the
    /// certificate presented, or the error.
    async fn handshake(
        server: Arc<ServerConfig>,
        root: &CertificateDer<'static>,
    ) -> Result<Vec<u8>, String> {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("node-1").unwrap();
        let r = connector.connect(name, a).await;
        let _ = srv.await;
        let tls = r.map_err(|e| e.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        Ok(x.raw_serial().to_vec())
    }

    #[tokio::test]
    async fn a_resolved_certificate_is_swapped_without_a_new_config() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let issue = |serial: u64| {
            let mut p = rcgen::CertificateParams::new(vec!["node-1".to_string()]).unwrap();
            p.serial_number = Some(serial.into());
            let k = rcgen::KeyPair::generate().unwrap();
            let c = p.signed_by(&k, &issuer).unwrap();
            let key = PrivateKeyDer::from_pem_slice(k.serialize_pem().as_bytes()).unwrap();
            let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
            Arc::new(rustls::sign::CertifiedKey::new(
                vec![c.der().clone()],
                signer,
            ))
        };
        let slot = Arc::new(Slot::default());
        let config = server_config_with_resolver(slot.clone(), None).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        let root = ca.der().clone();
        // No certificate yet: the handshake fails.
        assert!(handshake(config.clone(), &root).await.is_err());
        *slot.0.write().unwrap() = Some(issue(7));
        assert_eq!(handshake(config.clone(), &root).await.unwrap(), [7]);
        // Renewed: the same configuration presents the new one.
        *slot.0.write().unwrap() = Some(issue(9));
        assert_eq!(handshake(config, &root).await.unwrap(), [9]);
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
        server_config(&c, &k, None).unwrap();
        let e = ClientCa::load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing-ca.pem"), "{e}");
    }
}
