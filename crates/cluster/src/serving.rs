//! The node API's serving certificate from the cluster (`serverTLSBootstrap`; kubelet's
//! `NewKubeletServerCertificateManager` on client-go's certificate manager):
//!
//! - The certificate is requested with a CSR for `system:node:<node>` in `system:nodes`, signer
//!   `kubernetes.io/kubelet-serving`, usages digital signature and server auth (a P-256 key),
//!   and the node's addresses as SANs ([`certificate::serving_sans`] of
//!   [`node::node_addresses`]), sent with the node's client credentials. The controller-manager
//!   signs it but does not approve it: an admin does (`kubectl certificate approve`).
//! - It is stored as `<cert-dir>/kubelet-server-<timestamp>.pem` behind
//!   `kubelet-server-current.pem` (mode 0600), and handed to the node API's listener through a
//!   [`SwappableIdentity`]: each TLS handshake takes the current one, so a renewal needs no
//!   restart of the listener.
//! - Until one is issued (or once it expired) the listener has none and handshakes fail, as
//!   kubelet's `GetCertificate` fails; the wait is in `/cluster` (`servingCertificate`) and the
//!   log, and static pods run meanwhile. A valid certificate in the store at start is used at
//!   once.
//! - Renewal at 70-90 % of the lifetime, at once when the node's addresses no longer match the
//!   certificate's SANs; a CSR not issued within 15 minutes or a failure is retried with
//!   client-go's back-off (a new key, a new CSR).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use kube::Client;
use staticlet_agent::cluster::ClusterView;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::certificate::{self, Identity, Sans, Store, SwappableIdentity, SERVING};
use crate::identity::{report, request, show};
use crate::node;

/// Where the serving certificate lives and what it is for.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// `--cert-dir`.
    pub cert_dir: PathBuf,
    pub node_name: String,
    /// The node's InternalIP.
    pub host_ip: String,
}

impl ServingConfig {
    pub fn store(&self) -> Store {
        Store::new(&self.cert_dir, SERVING)
    }

    /// The SANs to request; `None` without an IP address (kubelet requests nothing then).
    pub fn sans(&self) -> Option<Sans> {
        let addresses = node::node_addresses(&self.host_ip, &self.node_name);
        certificate::serving_sans(addresses.iter().map(|(t, a)| (*t, a.as_str())))
    }
}

/// The stored serving certificate if it is usable at `now` (it is used at once, before any
/// CSR). A broken or expired one is logged and not used.
pub fn load(store: &Store, now: SystemTime) -> Option<Identity> {
    match store.current() {
        Ok(Some(id)) => match id.check_valid_as(&SERVING, now) {
            Ok(()) => Some(id),
            Err(e) => {
                info!(file = %store.current_path().display(), reason = %e, "the stored serving certificate is not usable; requesting a new one");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warn!(error = %e, "the stored serving certificate is not usable; requesting a new one");
            None
        }
    }
}

/// When to request the next serving certificate (`jitter` in [0, 1)): at once without a usable
/// one for this node and these SANs (client-go rotates at once when the template changed),
/// else at 70-90 % of the current one's lifetime.
pub fn next_request(
    current: Option<&Identity>,
    node_name: &str,
    want: &Sans,
    now: SystemTime,
    jitter: f64,
) -> SystemTime {
    match current {
        Some(id)
            if id.check_valid_as(&SERVING, now).is_ok()
                && id.common_name == certificate::node_user(node_name)
                && id.sans.same_as(want) =>
        {
            certificate::rotation_deadline(id.not_before, id.not_after, jitter)
        }
        _ => now,
    }
}

/// Keeps the serving certificate in `resolver` issued and renewed until `shutdown`. `initial`:
/// what [`load`] found (already in `resolver`). `clients` gives the current cluster client (it
/// changes when the client certificate is renewed); requests wait for one.
pub async fn run(
    cfg: ServingConfig,
    resolver: Arc<SwappableIdentity>,
    initial: Option<Identity>,
    mut clients: watch::Receiver<Option<Client>>,
    view: watch::Sender<Arc<ClusterView>>,
    shutdown: CancellationToken,
) {
    let store = cfg.store();
    let Some(sans) = cfg.sans() else {
        let why = format!(
            "the node's addresses ({}) have no IP address: no serving certificate is requested, as kubelet requests none",
            cfg.host_ip
        );
        warn!("{why}");
        report(&view, &SERVING, |c| c.status = Some(why));
        shutdown.cancelled().await;
        return;
    };
    let mut current = initial;
    match &current {
        Some(id) => {
            resolver.set_until(id.key.clone(), id.not_after);
            info!(file = %store.current_path().display(), expires = %certificate::rfc3339(id.not_after), "the node API serves the stored serving certificate");
        }
        None => {
            let msg = format!("no serving certificate yet: a CertificateSigningRequest for {sans} is sent once the cluster client is ready; TLS handshakes with the node API fail until it is approved and issued");
            info!("{msg}");
            report(&view, &SERVING, |c| c.status = Some(msg));
        }
    }
    loop {
        let deadline = next_request(
            current.as_ref(),
            &cfg.node_name,
            &sans,
            SystemTime::now(),
            rand::random::<f64>(),
        );
        if let Some(id) = &current {
            show(&view, &SERVING, id, Some(deadline));
            info!(expires = %certificate::rfc3339(id.not_after), renew_at = %certificate::rfc3339(deadline), "serving certificate rotation scheduled");
        }
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let mut attempt = 0;
        loop {
            let client = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = clients.wait_for(Option::is_some) => match c {
                    Ok(c) => c.clone(),
                    Err(_) => None,
                },
            };
            let Some(client) = client else {
                // The cluster side is gone for good: nothing to request with.
                shutdown.cancelled().await;
                return;
            };
            match request(&store, &sans, client, &cfg.node_name, &view, &shutdown).await {
                Ok(id) => {
                    resolver.set_until(id.key.clone(), id.not_after);
                    info!(file = ?id.file, sans = %id.sans, expires = %certificate::rfc3339(id.not_after), "serving certificate issued: the node API presents it from now on");
                    current = Some(id);
                    break;
                }
                Err(e) => {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let wait = certificate::renewal_backoff(attempt, rand::random::<f64>());
                    attempt += 1;
                    warn!(error = %e, retry_in = ?wait, "cannot get a serving certificate for the node API");
                    report(&view, &SERVING, |c| {
                        c.status = Some(format!(
                            "serving certificate request failed: {e} (retrying in {}s)",
                            wait.as_secs()
                        ))
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A serving certificate for `cn` with `dns` and `ips`, valid over [nb, na].
    fn serving(cn: &str, dns: &[&str], ips: &[&str], nb: u64, na: u64) -> Identity {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = certificate::new_key_pem().unwrap();
        let kp = rcgen::KeyPair::from_pem(&key).unwrap();
        let mut p =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            p.subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        }
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(nb as i64).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(na as i64).unwrap();
        let cert = p.signed_by(&kp, &rcgen::Issuer::new(ca, &ca_key)).unwrap();
        Identity::parse(
            std::path::Path::new("/s.pem"),
            cert.pem().as_bytes(),
            key.as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_next_request_is_at_once_without_a_matching_certificate() {
        let want = Sans {
            dns: vec!["node-a".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
        };
        let cn = "system:node:node-a";
        let ok = serving(cn, &["node-a"], &["10.0.0.5"], 1000, 2000);
        // (certificate, now, jitter) → when.
        let table: Vec<(Option<Identity>, u64, f64, u64)> = vec![
            // None yet: at once.
            (None, 1500, 0.5, 1500),
            // Valid and matching: 70-90 % of its lifetime.
            (Some(ok.clone()), 1100, 0.0, 1700),
            (Some(ok.clone()), 1100, 1.0, 1900),
            // Past the deadline already: the deadline (so at once).
            (Some(ok.clone()), 1950, 0.0, 1700),
            // Expired, or not valid yet: at once.
            (Some(ok.clone()), 2000, 0.5, 2000),
            (Some(ok), 999, 0.5, 999),
            // Another node's, or SANs that are not the node's addresses any more: at once.
            (
                Some(serving(
                    "system:node:b",
                    &["node-a"],
                    &["10.0.0.5"],
                    1000,
                    2000,
                )),
                1100,
                0.5,
                1100,
            ),
            (
                Some(serving(cn, &["node-a"], &["10.0.0.6"], 1000, 2000)),
                1100,
                0.5,
                1100,
            ),
            (
                Some(serving(cn, &[], &["10.0.0.5"], 1000, 2000)),
                1100,
                0.5,
                1100,
            ),
        ];
        for (i, (id, now, jitter, want_at)) in table.into_iter().enumerate() {
            assert_eq!(
                next_request(id.as_ref(), "node-a", &want, at(now), jitter),
                at(want_at),
                "case {i}"
            );
        }
        // The same SANs in another order match.
        let ab = Sans {
            dns: vec!["a".into(), "b".into()],
            ips: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        };
        let ba = Sans {
            dns: vec!["b".into(), "a".into()],
            ips: vec!["::1".parse().unwrap(), "10.0.0.1".parse().unwrap()],
        };
        assert!(ab.same_as(&ba));
        assert!(!ab.same_as(&want));
    }

    #[test]
    fn sans_come_from_the_node_addresses() {
        let cfg = |ip: &str, name: &str| ServingConfig {
            cert_dir: "/x".into(),
            node_name: name.into(),
            host_ip: ip.into(),
        };
        assert_eq!(
            cfg("10.0.0.5", "node-a").sans(),
            Some(Sans {
                dns: vec!["node-a".into()],
                ips: vec!["10.0.0.5".parse().unwrap()],
            })
        );
        // A node named by its IP: one IP SAN, no DNS name.
        assert_eq!(
            cfg("10.0.0.5", "10.0.0.5").sans(),
            Some(Sans {
                dns: vec![],
                ips: vec!["10.0.0.5".parse().unwrap()],
            })
        );
        // No IP: nothing is requested.
        assert_eq!(cfg("", "node-a").sans(), None);
    }

    #[test]
    fn a_stored_certificate_is_used_only_while_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), SERVING);
        assert!(load(&store, at(1500)).is_none());
        let (cert, key) = certificate::testing::issued("system:node:node-a", 1000, 2000);
        let file = store.update(&cert, &key, at(1000)).unwrap();
        assert_eq!(
            file,
            dir.path().join("kubelet-server-1970-01-01-00-16-40.pem")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("kubelet-server-current.pem")).unwrap(),
            file
        );
        assert!(load(&store, at(1500)).is_some());
        assert!(load(&store, at(2000)).is_none(), "expired");
        std::fs::write(&file, "garbage").unwrap();
        assert!(load(&store, at(1500)).is_none(), "broken");
    }

    /// A fake API server for CSRs: records each one created, answers "pending" until
    /// `approved`, then with a certificate of its CA for the CSR's key.
    #[derive(Default)]
    struct FakeCsrApi {
        /// (name, the object as created).
        created: Vec<(String, serde_json::Value)>,
        approved: bool,
        /// The CSRs an admin denied, by name.
        denied: Vec<String>,
    }

    /// The P-256 public key of a CSR, for rcgen to sign.
    struct CsrKey(Vec<u8>);

    impl rcgen::PublicKeyData for CsrKey {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }

    fn sign(csr_pem: &str) -> String {
        use rustls::pki_types::pem::PemObject as _;
        use x509_parser::prelude::FromDer as _;
        let der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
                .unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let key = CsrKey(
            req.certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .to_vec(),
        );
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let mut p = rcgen::CertificateParams::new(vec!["node-a".to_string()]).unwrap();
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.5".parse().unwrap()));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:node-a");
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::hours(1);
        p.signed_by(&key, &rcgen::Issuer::new(ca, &ca_key))
            .unwrap()
            .pem()
    }

    fn fake_client(api: Arc<std::sync::Mutex<FakeCsrApi>>) -> Client {
        use base64::Engine as _;
        use http_body_util::BodyExt as _;
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let path = parts.uri.path().to_string();
                let mut api = api.lock().unwrap();
                const BASE: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
                let (code, v) = if parts.method == http::Method::POST && path == BASE {
                    let mut obj: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let name = format!("csr-{}", api.created.len() + 1);
                    obj["metadata"]["name"] = name.clone().into();
                    obj["metadata"]["uid"] = format!("uid-{name}").into();
                    api.created.push((name, obj.clone()));
                    (201, obj)
                } else if let Some((_, obj)) = api
                    .created
                    .iter()
                    .find(|(n, _)| path == format!("{BASE}/{n}"))
                {
                    let mut obj = obj.clone();
                    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                    if api.denied.contains(&name) {
                        obj["status"] = serde_json::json!({
                            "conditions": [{"type": "Denied", "status": "True", "reason": "AdminDenied", "message": "not this one"}],
                        });
                    } else if api.approved {
                        let b64 = obj["spec"]["request"].as_str().unwrap().to_string();
                        let pem = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap();
                        let cert = sign(std::str::from_utf8(&pem).unwrap());
                        obj["status"] = serde_json::json!({
                            "conditions": [{"type": "Approved", "status": "True"}],
                            "certificate": base64::engine::general_purpose::STANDARD.encode(cert),
                        });
                    }
                    (200, obj)
                } else {
                    (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                    )
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(v.to_string())
                        .unwrap(),
                )
            }
        });
        Client::new(service, "default")
    }

    /// Polls `f` every 50 ms for up to 20 s.
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..400 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_serving_csr_waits_for_approval_then_the_certificate_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServingConfig {
            cert_dir: dir.path().join("pki"),
            node_name: "node-a".into(),
            host_ip: "10.0.0.5".into(),
        };
        let api = Arc::new(std::sync::Mutex::new(FakeCsrApi::default()));
        let (_clients_tx, clients) = watch::channel(Some(fake_client(api.clone())));
        let view = watch::channel(Arc::new(ClusterView::default())).0;
        let resolver = SwappableIdentity::empty();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg.clone(),
            resolver.clone(),
            None,
            clients,
            view.clone(),
            shutdown.clone(),
        ));
        // The CSR: the node's subject and addresses, kubelet-serving, kubelet's usages.
        until("the CSR waiting for approval", || {
            view.borrow()
                .serving_certificate
                .as_ref()
                .and_then(|c| c.status.clone())
                .is_some_and(|s| s.contains("csr-1 waiting for approval"))
        })
        .await;
        let obj = api.lock().unwrap().created[0].1.clone();
        assert_eq!(obj["spec"]["signerName"], "kubernetes.io/kubelet-serving");
        assert_eq!(
            obj["spec"]["usages"],
            serde_json::json!(["digital signature", "server auth"])
        );
        assert!(obj["metadata"]["generateName"] == "csr-", "{obj}");
        // Nothing to serve meanwhile: handshakes fail.
        assert!(resolver.get_valid(SystemTime::now()).is_none());
        assert!(!cfg.store().current_path().exists());
        // Approved and issued: stored, served, shown with its renewal time.
        api.lock().unwrap().approved = true;
        until("the certificate served", || {
            resolver.get_valid(SystemTime::now()).is_some()
        })
        .await;
        let stored = cfg.store().current().unwrap().unwrap();
        assert_eq!(stored.common_name, "system:node:node-a");
        assert_eq!(stored.sans, cfg.sans().unwrap());
        until("the certificate shown", || {
            view.borrow()
                .serving_certificate
                .as_ref()
                .is_some_and(|c| c.renew_at.is_some() && c.status.is_none())
        })
        .await;
        let shown = view.borrow().serving_certificate.clone().unwrap();
        assert_eq!(shown.sans, "DNS:node-a, IP:10.0.0.5");
        assert_eq!(
            shown.file.as_deref(),
            Some(&*cfg.store().current_path().to_string_lossy())
        );
        // One CSR; renewal is 70-90 % into an hour-long certificate, not now.
        assert_eq!(api.lock().unwrap().created.len(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_denied_serving_csr_is_reported_and_a_new_one_sent() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServingConfig {
            cert_dir: dir.path().join("pki"),
            node_name: "node-a".into(),
            host_ip: "10.0.0.5".into(),
        };
        let api = Arc::new(std::sync::Mutex::new(FakeCsrApi::default()));
        api.lock().unwrap().denied.push("csr-1".into());
        let (_clients_tx, clients) = watch::channel(Some(fake_client(api.clone())));
        let view = watch::channel(Arc::new(ClusterView::default())).0;
        let resolver = SwappableIdentity::empty();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg,
            resolver.clone(),
            None,
            clients,
            view.clone(),
            shutdown.clone(),
        ));
        let status = || {
            view.borrow()
                .serving_certificate
                .as_ref()
                .and_then(|c| c.status.clone())
                .unwrap_or_default()
        };
        until("the denial reported", || {
            let s = status();
            s.contains("csr-1 was denied: AdminDenied not this one") && s.contains("retrying in")
        })
        .await;
        // After the back-off a new CSR (a new key) is sent and waits.
        until("a second CSR", || {
            api.lock().unwrap().created.len() == 2
                && status().contains("csr-2 waiting for approval")
        })
        .await;
        let created = api.lock().unwrap().created.clone();
        assert_ne!(
            created[0].1["spec"]["request"], created[1].1["spec"]["request"],
            "a new key"
        );
        assert!(resolver.get_valid(SystemTime::now()).is_none());
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn the_resolver_offers_a_certificate_only_while_valid() {
        let id = serving("system:node:a", &["a"], &["10.0.0.5"], 1000, 2000);
        let r = SwappableIdentity::empty();
        assert!(r.get_valid(at(1500)).is_none(), "none yet");
        r.set_until(id.key.clone(), id.not_after);
        assert!(r.get_valid(at(1500)).is_some());
        assert!(r.get_valid(at(2000)).is_none(), "expired: no certificate");
        // A client identity (no expiry) is always offered.
        r.set(id.key);
        assert!(r.get_valid(at(5000)).is_some());
    }
}
