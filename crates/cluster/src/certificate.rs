//! The node's certificates as kubelet keeps them: its client certificate (`--bootstrap-kubeconfig`,
//! `--cert-dir`, `rotateCertificates`) and its serving certificate (`serverTLSBootstrap`). Each
//! is a [`Kind`] (signer, usages, file prefix): the CSR it sends (with SANs for the serving one),
//! the file store in the cert dir, when to renew, and the identity presented, which can be
//! swapped without rebuilding the client or restarting the listener.
//!
//! Everything here is pure or touches only the cert dir; the API side (CSR create and wait) and
//! the loops live in [`crate::identity`] and [`crate::serving`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// What a managed certificate is for: the signer and usages of its CSRs, and its files in the
/// cert dir (`<prefix>-<timestamp>.pem`, `<prefix>-current.pem`). One certificate manager
/// (store, CSR, rotation) serves both kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub signer: &'static str,
    /// The usages kubelet asks for with its ECDSA P-256 key (client-go's
    /// `DefaultKubelet*GetUsages`: "key encipherment" only for an RSA key).
    pub usages: &'static [&'static str],
    pub prefix: &'static str,
    /// "client" or "serving", for messages.
    pub what: &'static str,
}

/// The node's client certificate (kube-controller-manager's csrsigning signs it; its
/// csrapproving approves it for bootstrap tokens and for the node itself).
pub const CLIENT: Kind = Kind {
    signer: "kubernetes.io/kube-apiserver-client-kubelet",
    usages: &["digital signature", "client auth"],
    prefix: "kubelet-client",
    what: "client",
};

/// The node API's serving certificate (`serverTLSBootstrap`): signed by csrsigning, but never
/// approved automatically (an admin runs `kubectl certificate approve`).
pub const SERVING: Kind = Kind {
    signer: "kubernetes.io/kubelet-serving",
    usages: &["digital signature", "server auth"],
    prefix: "kubelet-server",
    what: "serving",
};

/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The private key of a bootstrap CSR in flight: reused after a restart, so the CSR (whose name
/// is a digest of the key) is the same object and an approval is not lost.
pub const BOOTSTRAP_KEY: &str = "kubelet-client.key.tmp";

/// A certificate and key that cannot be used, with the file named.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CertError {
    pub path: PathBuf,
    pub message: String,
}

fn cert_err(path: &Path, message: impl fmt::Display) -> CertError {
    CertError {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The user a node's client certificate is for.
pub fn node_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}

/// When to renew a certificate valid from `not_before` to `not_after`: at 70 % + `jitter` ×
/// 20 % of its lifetime (`jitter` in [0, 1)), as client-go's certificate manager does
/// (`nextRotationDeadline`).
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or_default()
        .as_secs_f64();
    let jitter = jitter.clamp(0.0, 1.0);
    not_before + Duration::from_secs_f64(total * (0.7 + 0.2 * jitter))
}

/// The wait before retry `attempt` (0-based) of a failed renewal: client-go's backoff (2 s,
/// doubling, 10 % jitter, 5 steps), then every 32 s.
pub fn renewal_backoff(attempt: u32, jitter: f64) -> Duration {
    if attempt >= 5 {
        return Duration::from_secs(32);
    }
    let base = 2.0 * f64::from(1u32 << attempt);
    Duration::from_secs_f64(base * (1.0 + 0.1 * jitter.clamp(0.0, 1.0)))
}

/// The wait before bootstrap attempt `attempt` (0-based) after a failure: 2 s doubling up to
/// 32 s. (kubelet exits and leaves the retry to systemd; staticlet keeps its static pods
/// running and retries itself.)
pub fn bootstrap_backoff(attempt: u32) -> Duration {
    Duration::from_secs(2u64 << attempt.min(4))
}

/// `kubelet-client-2026-12-06-20-41-07.pem` for `prefix` `kubelet-client` (client-go's file
/// store names each certificate by the time it was written; in UTC here).
pub fn pem_file_name(prefix: &str, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{prefix}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}.pem",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The name of a bootstrap CSR: `node-csr-` and a digest of the public key, the subject and the
/// usages (as kubelet's `digestedName`), so the same key always makes the same CSR.
pub fn bootstrap_csr_name(public_key_der: &[u8], common_name: &str, orgs: &[&str]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut h = sha2::Sha512::new();
    let mut field = |b: &[u8]| {
        h.update(b);
        h.update([b'|']);
    };
    field(public_key_der);
    field(common_name.as_bytes());
    for o in orgs {
        field(o.as_bytes());
    }
    for u in CLIENT.usages {
        field(u.as_bytes());
    }
    format!(
        "node-csr-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
    )
}

/// A new ECDSA P-256 key (PKCS#8 PEM), as kubelet makes for its client certificate.
pub fn new_key_pem() -> Result<String, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| format!("generating a P-256 key: {e}"))
}

/// The subject alternative names of a serving certificate: DNS names and IP addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Sans {
    /// The same names and addresses, in any order.
    pub fn same_as(&self, other: &Sans) -> bool {
        let mut a = (self.dns.clone(), self.ips.clone());
        let mut b = (other.dns.clone(), other.ips.clone());
        a.0.sort();
        a.1.sort();
        b.0.sort();
        b.1.sort();
        a == b
    }
}

impl fmt::Display for Sans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ips.iter().map(|i| format!("IP:{i}")))
            .collect();
        f.write_str(&all.join(", "))
    }
}

/// The SANs kubelet requests for its serving certificate from the node's addresses (`(type,
/// address)` as in the Node's status; kubelet's `addressesToHostnamesAndIPs`): Hostname and
/// the DNS types are DNS names (or IPs when they parse as one), InternalIP and ExternalIP are
/// IPs (invalid ones dropped), empty values skipped, duplicates removed, order kept. `None`
/// without any IP address: kubelet requests no serving certificate then (its `getTemplate`).
pub fn serving_sans<'a>(addresses: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Sans> {
    let mut sans = Sans::default();
    for (kind, address) in addresses {
        if address.is_empty() {
            continue;
        }
        let dns_type = matches!(kind, "Hostname" | "ExternalDNS" | "InternalDNS");
        let ip_type = matches!(kind, "InternalIP" | "ExternalIP");
        match address.parse::<IpAddr>() {
            Ok(ip) if (dns_type || ip_type) && !sans.ips.contains(&ip) => sans.ips.push(ip),
            Err(_) if dns_type && !sans.dns.iter().any(|d| d == address) => {
                sans.dns.push(address.to_string())
            }
            _ => {}
        }
    }
    (!sans.ips.is_empty()).then_some(sans)
}

/// A PKCS#10 request (PEM) for `system:node:<node_name>` in `system:nodes` with `sans` (none
/// for a client certificate), signed with `key_pem`, and the key's SubjectPublicKeyInfo (DER)
/// for the CSR's name.
pub fn node_csr(node_name: &str, key_pem: &str, sans: &Sans) -> Result<(String, Vec<u8>), String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("the key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(sans.dns.clone())
        .map_err(|e| format!("CSR parameters: {e}"))?;
    for ip in &sans.ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_user(node_name));
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("signing the CSR: {e}"))?;
    let pem = csr.pem().map_err(|e| format!("encoding the CSR: {e}"))?;
    use rcgen::PublicKeyData as _;
    Ok((pem, key.subject_public_key_info()))
}

/// A client certificate with its key, ready for TLS, and what the loop needs to know about it.
#[derive(Clone)]
pub struct Identity {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's subject common name.
    pub common_name: String,
    /// The leaf's subject alternative names (DNS and IP).
    pub sans: Sans,
    /// The file it was read from (`None`: embedded in the kubeconfig).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("common_name", &self.common_name)
            .field("sans", &self.sans)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("file", &self.file)
            .finish()
    }
}

impl Identity {
    /// Parses a certificate chain and its key (both PEM; one file or two). `path` names the
    /// source in errors.
    pub fn parse(path: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, CertError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(path, format!("invalid certificate PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| cert_err(path, "no certificate"))?;
        let (_, x) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| cert_err(path, format!("invalid certificate: {e}")))?;
        let ts = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let not_before = ts(x.validity().not_before);
        let not_after = ts(x.validity().not_after);
        let common_name = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut sans = Sans::default();
        if let Ok(Some(ext)) = x.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => sans
                            .ips
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                        16 => sans
                            .ips
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| cert_err(path, format!("no usable private key: {e}")))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| cert_err(path, format!("unsupported private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| cert_err(path, format!("the key does not match the certificate: {e}")))?;
        Ok(Identity {
            key: Arc::new(certified),
            not_before,
            not_after,
            common_name,
            sans,
            file: Some(path.to_path_buf()),
        })
    }

    /// Reads a file holding the certificate and the key (the store's format).
    pub fn read(path: &Path) -> Result<Identity, CertError> {
        let data = std::fs::read(path).map_err(|e| cert_err(path, e))?;
        Identity::parse(path, &data, &data)
    }

    /// Whether it is usable at `now` as a client certificate (kubelet only checks expiry; a
    /// not-yet-valid one is refused too, as the API server would refuse it).
    pub fn check_valid(&self, now: SystemTime) -> Result<(), String> {
        self.check_valid_as(&CLIENT, now)
    }

    /// Whether it is usable at `now`, with `kind` named in the message.
    pub fn check_valid_as(&self, kind: &Kind, now: SystemTime) -> Result<(), String> {
        let what = kind.what;
        if now >= self.not_after {
            return Err(format!(
                "the {what} certificate expired at {}",
                rfc3339(self.not_after)
            ));
        }
        if now < self.not_before {
            return Err(format!(
                "the {what} certificate is not valid before {}",
                rfc3339(self.not_before)
            ));
        }
        Ok(())
    }
}

/// A timestamp for messages.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// client-go's file store in the cert dir: each certificate (and its key, in one file, mode
/// 0600) as `<prefix>-<timestamp>.pem` (`kubelet-client-…`, `kubelet-server-…`), the one in use
/// behind the `<prefix>-current.pem` symlink, swapped atomically.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    pub kind: Kind,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>, kind: Kind) -> Store {
        Store {
            dir: dir.into(),
            kind,
        }
    }

    /// `<dir>/<prefix>-current.pem`: what the written kubeconfig points at (client).
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.kind.prefix))
    }

    /// The current certificate, `None` if there is none yet.
    pub fn current(&self) -> Result<Option<Identity>, CertError> {
        let path = self.current_path();
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cert_err(&path, e)),
            Ok(_) => Identity::read(&path).map(Some),
        }
    }

    /// Writes a new certificate and key as `<prefix>-<timestamp>.pem` and points the
    /// symlink at it (a new symlink renamed over the old one). Returns the file written.
    pub fn update(
        &self,
        cert_pem: &str,
        key_pem: &str,
        now: SystemTime,
    ) -> Result<PathBuf, CertError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| cert_err(&self.dir, e))?;
        let file = self.dir.join(pem_file_name(self.kind.prefix, now));
        let mut data = cert_pem.trim_end().to_string();
        data.push('\n');
        data.push_str(key_pem.trim_end());
        data.push('\n');
        write_private(&file, data.as_bytes())?;
        let updated = self.dir.join(format!("{}-updated.pem", self.kind.prefix));
        let _ = std::fs::remove_file(&updated);
        std::os::unix::fs::symlink(&file, &updated).map_err(|e| cert_err(&updated, e))?;
        let current = self.current_path();
        std::fs::rename(&updated, &current).map_err(|e| cert_err(&current, e))?;
        Ok(file)
    }
}

/// Writes `data` to `path` with mode 0600 (a temporary file renamed into place).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    staticlet_runtime::write_private(path, data).map_err(|(p, e)| cert_err(&p, e))
}

/// Where the written kubeconfig's cluster comes from (the bootstrap kubeconfig's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEntry {
    pub server: String,
    pub certificate_authority: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub insecure_skip_tls_verify: bool,
}

/// The kubeconfig kubelet writes after bootstrapping (`writeKubeconfigFromBootstrapping`):
/// the bootstrap kubeconfig's cluster as `default-cluster`, user `default-auth` with the
/// store's current file as both certificate and key, context `default-context`.
pub fn kubeconfig_yaml(cluster: &ClusterEntry, pem: &Path) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut c = format!("    server: {}\n", q(&cluster.server));
    if let Some(ca) = &cluster.certificate_authority {
        c.push_str(&format!("    certificate-authority: {}\n", q(ca)));
    }
    if let Some(ca) = &cluster.certificate_authority_data {
        c.push_str(&format!("    certificate-authority-data: {}\n", q(ca)));
    }
    if cluster.insecure_skip_tls_verify {
        c.push_str("    insecure-skip-tls-verify: true\n");
    }
    let pem = q(&pem.to_string_lossy());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n{c}  name: default-cluster\n\
         contexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\n\
         current-context: default-context\npreferences: {{}}\n\
         users:\n- name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n"
    )
}

/// The identity a TLS connection presents, swapped in place when the certificate is renewed:
/// new connections (client) or handshakes (the node API's listener) use the new one. For the
/// client the loop also rebuilds its clients so pooled connections, authenticated with the old
/// one, are dropped, as kubelet closes them. As a server certificate it is offered only while
/// valid (client-go's `Current` returns none for an expired one): without one the handshake
/// fails, as kubelet's `GetCertificate` fails "no serving certificate available".
#[derive(Debug, Default)]
pub struct SwappableIdentity {
    current: RwLock<Option<(Arc<CertifiedKey>, Option<SystemTime>)>>,
}

impl SwappableIdentity {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<SwappableIdentity> {
        Arc::new(SwappableIdentity {
            current: RwLock::new(Some((key, None))),
        })
    }

    /// One with no certificate yet (a serving certificate not issued yet).
    pub fn empty() -> Arc<SwappableIdentity> {
        Arc::new(SwappableIdentity::default())
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((key, None));
    }

    /// Sets a certificate that is not offered as a server certificate from `not_after` on.
    pub fn set_until(&self, key: Arc<CertifiedKey>, not_after: SystemTime) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((key, Some(not_after)));
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(k, _)| k.clone())
    }

    /// The certificate if it is still valid at `now`.
    pub fn get_valid(&self, now: SystemTime) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(_, until)| until.is_none_or(|t| now < t))
            .map(|(k, _)| k.clone())
    }
}

impl rustls::client::ResolvesClientCert for SwappableIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

impl rustls::server::ResolvesServerCert for SwappableIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get_valid(SystemTime::now())
    }
}

/// Certificates for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A certificate for `cn` valid over [nb, na] (Unix seconds) signed by a throwaway CA, and
    /// its key (PEM).
    pub fn issued(cn: &str, nb: u64, na: u64) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = new_key_pem().unwrap();
        let kp = rcgen::KeyPair::from_pem(&key).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(nb as i64).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(na as i64).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let cert = p.signed_by(&kp, &issuer).unwrap();
        (cert.pem(), key)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::issued;
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rotation_deadline_is_between_70_and_90_percent() {
        // (not_before, not_after, jitter) → deadline, in seconds.
        let table = [
            (0, 1000, 0.0, 700),
            (0, 1000, 0.5, 800),
            (0, 1000, 1.0, 900),
            (1000, 2000, 0.25, 1750),
            // A year-long certificate (kubeadm's): 255.5 days at the earliest.
            (0, 365 * 86400, 0.0, 255 * 86400 + 43200),
            // Out-of-range jitter is clamped; a backwards validity renews at once.
            (0, 1000, 7.0, 900),
            (2000, 1000, 0.5, 2000),
        ];
        for (nb, na, j, want) in table {
            assert_eq!(
                rotation_deadline(at(nb), at(na), j),
                at(want),
                "{nb}..{na} jitter {j}"
            );
        }
    }

    #[test]
    fn backoffs() {
        let renew: Vec<u64> = (0..7).map(|a| renewal_backoff(a, 0.0).as_secs()).collect();
        assert_eq!(renew, [2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(renewal_backoff(0, 1.0), Duration::from_millis(2200));
        let boot: Vec<u64> = (0..7).map(|a| bootstrap_backoff(a).as_secs()).collect();
        assert_eq!(boot, [2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn pem_file_names() {
        assert_eq!(
            pem_file_name(CLIENT.prefix, at(0)),
            "kubelet-client-1970-01-01-00-00-00.pem"
        );
        // 2026-12-06T20:41:07Z
        assert_eq!(
            pem_file_name(CLIENT.prefix, at(1_796_589_667)),
            "kubelet-client-2026-12-06-20-41-07.pem"
        );
    }

    /// The subject's common names and organizations.
    fn cn_and_o(subject: &x509_parser::x509::X509Name) -> (Vec<String>, Vec<String>) {
        let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
            it.map(|c| c.as_str().unwrap().to_string()).collect()
        };
        (
            strings(&mut subject.iter_common_name()),
            strings(&mut subject.iter_organization()),
        )
    }

    #[test]
    fn csr_contents_and_name() {
        let key = new_key_pem().unwrap();
        let (pem, pubkey) = node_csr("cp-1", &key, &Sans::default()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap();
        let (_, req) =
            <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        let info = &req.certification_request_info;
        let (cn, o) = cn_and_o(&info.subject);
        assert_eq!(cn, ["system:node:cp-1"]);
        assert_eq!(o, ["system:nodes"]);
        // P-256, and no SANs or other requested extensions (the approver refuses them).
        assert_eq!(
            info.subject_pki.algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        assert!(req
            .requested_extensions()
            .is_none_or(|mut e| e.next().is_none()));
        assert_eq!(info.subject_pki.raw, &pubkey[..]);
        // The same key gives the same name; another key or node another one.
        let name = bootstrap_csr_name(&pubkey, "system:node:cp-1", &[NODES_GROUP]);
        assert!(name.starts_with("node-csr-") && name.len() > 60, "{name}");
        assert_eq!(
            name,
            bootstrap_csr_name(
                &node_csr("cp-1", &key, &Sans::default()).unwrap().1,
                "system:node:cp-1",
                &[NODES_GROUP]
            )
        );
        let other = node_csr("cp-1", &new_key_pem().unwrap(), &Sans::default())
            .unwrap()
            .1;
        assert_ne!(
            name,
            bootstrap_csr_name(&other, "system:node:cp-1", &[NODES_GROUP])
        );
        assert_ne!(
            name,
            bootstrap_csr_name(&pubkey, "system:node:cp-2", &[NODES_GROUP])
        );
    }

    #[test]
    fn serving_sans_from_node_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // (addresses, DNS names, IPs); no IP → None (kubelet requests no certificate).
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<(Vec<&'a str>, Vec<IpAddr>)>,
        );
        let table: Vec<Case> = vec![
            (&[], None),
            (&[("Hostname", "")], None),
            (&[("InternalIP", "1.2"), ("ExternalIP", "3.4")], None),
            // A DNS name alone is not enough.
            (&[("Hostname", "node-a")], None),
            (
                &[("InternalIP", "10.0.0.5"), ("Hostname", "node-a")],
                Some((vec!["node-a"], vec![ip("10.0.0.5")])),
            ),
            // Duplicates go; a hostname that is an IP is an IP SAN; unknown types are skipped.
            (
                &[
                    ("Hostname", "h"),
                    ("ExternalDNS", "h"),
                    ("InternalDNS", "h.example"),
                    ("InternalIP", "1.1.1.1"),
                    ("ExternalIP", "1.1.1.1"),
                    ("Hostname", "2.2.2.2"),
                    ("InternalIP", "fd00::1"),
                    ("Other", "x"),
                ],
                Some((
                    vec!["h", "h.example"],
                    vec![ip("1.1.1.1"), ip("2.2.2.2"), ip("fd00::1")],
                )),
            ),
        ];
        for (addresses, want) in table {
            let got = serving_sans(addresses.iter().copied());
            let want = want.map(|(dns, ips)| Sans {
                dns: dns.into_iter().map(str::to_string).collect(),
                ips,
            });
            assert_eq!(got, want, "{addresses:?}");
        }
        assert_eq!(
            Sans {
                dns: vec!["a".into()],
                ips: vec![ip("10.0.0.1")]
            }
            .to_string(),
            "DNS:a, IP:10.0.0.1"
        );
    }

    #[test]
    fn serving_csr_contents() {
        assert_eq!(SERVING.signer, "kubernetes.io/kubelet-serving");
        // kubelet's usages for its ECDSA key: no "key encipherment" (RSA only).
        assert_eq!(SERVING.usages, ["digital signature", "server auth"]);
        assert_eq!(SERVING.prefix, "kubelet-server");
        let sans = Sans {
            dns: vec!["node-a".into()],
            ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        };
        let key = new_key_pem().unwrap();
        let (pem, _) = node_csr("node-a", &key, &sans).unwrap();
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap();
        let (_, req) =
            <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        let info = &req.certification_request_info;
        let (cn, o) = cn_and_o(&info.subject);
        assert_eq!(cn, ["system:node:node-a"]);
        assert_eq!(o, ["system:nodes"]);
        // The only requested extension is the SANs (the DNS name and both IPs).
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let exts: Vec<_> = req.requested_extensions().unwrap().collect();
        assert_eq!(exts.len(), 1, "{exts:?}");
        let ParsedExtension::SubjectAlternativeName(san) = exts[0] else {
            panic!("{exts:?}")
        };
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) => format!("IP:{}", b.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["DNS:node-a", "IP:4", "IP:16"]);
        // The SANs read back from an issued certificate.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let kp = rcgen::KeyPair::from_pem(&key).unwrap();
        let mut p = rcgen::CertificateParams::new(sans.dns.clone()).unwrap();
        for ip in &sans.ips {
            p.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
        }
        let cert = p.signed_by(&kp, &rcgen::Issuer::new(ca, &ca_key)).unwrap();
        let id =
            Identity::parse(Path::new("/s.pem"), cert.pem().as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(id.sans, sans);
    }

    #[test]
    fn identity_validity() {
        let (cert, key) = issued("system:node:cp-1", 1000, 2000);
        let id = Identity::parse(Path::new("/x.pem"), cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(id.common_name, "system:node:cp-1");
        assert_eq!((id.not_before, id.not_after), (at(1000), at(2000)));
        assert!(id.check_valid(at(1500)).is_ok());
        let e = id.check_valid(at(2000)).unwrap_err();
        assert!(e.contains("expired at 1970-01-01T00:33:20Z"), "{e}");
        assert!(id
            .check_valid(at(999))
            .unwrap_err()
            .contains("not valid before"));
        // The wrong key, or none, is an error naming the file.
        let other = new_key_pem().unwrap();
        let e =
            Identity::parse(Path::new("/x.pem"), cert.as_bytes(), other.as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("/x.pem: the key does not match"),
            "{e}"
        );
        let e = Identity::parse(Path::new("/x.pem"), cert.as_bytes(), b"").unwrap_err();
        assert!(e.to_string().contains("no usable private key"), "{e}");
    }

    #[test]
    fn store_writes_files_and_swaps_the_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("pki"), CLIENT);
        assert!(store.current().unwrap().is_none());
        let (c1, k1) = issued("system:node:a", 1000, 2000);
        let f1 = store.update(&c1, &k1, at(1000)).unwrap();
        assert_eq!(
            f1,
            dir.path()
                .join("pki/kubelet-client-1970-01-01-00-16-40.pem")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), f1);
        assert_eq!(store.current().unwrap().unwrap().not_after, at(2000));
        let (c2, k2) = issued("system:node:a", 1700, 2700);
        let f2 = store.update(&c2, &k2, at(1700)).unwrap();
        assert_eq!(std::fs::read_link(store.current_path()).unwrap(), f2);
        assert_eq!(store.current().unwrap().unwrap().not_after, at(2700));
        // The old file stays (as client-go's store leaves it); no temporary symlink is left.
        assert!(f1.exists());
        assert!(!dir.path().join("pki/kubelet-client-updated.pem").exists());
        // A broken current file is an error naming it.
        std::fs::write(&f2, "garbage").unwrap();
        let e = store.current().unwrap_err();
        assert!(e.path.ends_with("kubelet-client-current.pem"), "{e}");
    }

    #[test]
    fn written_kubeconfig_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ClusterEntry {
            server: "https://10.0.0.1:6443".into(),
            certificate_authority: None,
            certificate_authority_data: Some("Q0EK".into()),
            insecure_skip_tls_verify: false,
        };
        let pem = dir.path().join("pki dir/kubelet-client-current.pem");
        let path = dir.path().join("kubelet.conf");
        std::fs::write(&path, kubeconfig_yaml(&cluster, &pem)).unwrap();
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("default-context"));
        let c = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(c.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(c.certificate_authority_data.as_deref(), Some("Q0EK"));
        let u = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            u.client_certificate.as_deref(),
            Some(&*pem.to_string_lossy())
        );
        assert_eq!(u.client_key.as_deref(), Some(&*pem.to_string_lossy()));
        assert_eq!(
            kc.contexts[0].context.as_ref().unwrap().user.as_deref(),
            Some("default-auth")
        );
    }
}
