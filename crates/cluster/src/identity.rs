//! The node's client identity, as kubelet's TLS bootstrap and client-certificate manager keep it
//! (`--bootstrap-kubeconfig`, `--cert-dir`, `rotateCertificates`):
//!
//! 1. **Bootstrap** (kubelet's `LoadClientCert`): a usable `--kubeconfig` is used as is; else
//!    a usable `kubelet-client-current.pem` in the cert dir gets a kubeconfig written for it;
//!    else the bootstrap kubeconfig (a bootstrap token) creates a CSR for
//!    `system:node:<node>`, waits for the controller-manager to approve and sign it, stores it
//!    and writes the kubeconfig. Failures are retried with back-off and shown in `/cluster`;
//!    static pods run meanwhile (the agent does not wait for any of this).
//! 2. **Rotation** (client-go's certificate manager): at a random point between 70 % and 90 %
//!    of the certificate's lifetime a new key and CSR (authenticated with the current
//!    certificate) are sent; the issued certificate is stored, the symlink swapped, and the
//!    cluster side goes on with the new identity without a restart of the agent (once the
//!    certificate has expired, the CSR is sent with the bootstrap credentials, if any): the TLS
//!    identity is swapped in place and the clients are rebuilt, so no pooled connection keeps
//!    the old one (kubelet closes its connections likewise). With no certificate in the store yet
//!    (a kubeconfig with an embedded certificate, as `kubeadm init` writes before its
//!    `kubelet-finalize` phase) the first rotation happens at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use staticlet_agent::cluster::{ClusterView, ManagedCertificate};
use staticlet_runtime::Clock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::certificate::{self, ClusterEntry, Identity, Kind, Store, SwappableIdentity, CLIENT};
use crate::{call, AgentLink, ClusterConfig, ClusterError};

/// How long a bootstrap CSR is waited on before it is sent again (kubelet: an hour, then it
/// exits). The same key makes the same CSR, so a late approval is not lost.
pub const BOOTSTRAP_WAIT: Duration = Duration::from_secs(3600);
/// How long a renewal CSR is waited on (client-go's certificate manager: 15 minutes).
pub const RENEWAL_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often a pending CSR is looked at.
pub const CSR_POLL: Duration = Duration::from_secs(2);

/// Where the node's credentials live.
#[derive(Debug, Clone)]
pub struct CertConfig {
    /// `--kubeconfig`: used when usable, else written after bootstrapping.
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir`: the file store (`kubelet-client-*.pem`).
    pub cert_dir: PathBuf,
    /// `rotateCertificates`.
    pub rotate: bool,
}

/// Obtains the node's identity (bootstrapping it if needed), then runs the cluster side with it
/// and renews it, until `shutdown`. `reviewer` gets each client the node API's token and access
/// reviews should use.
pub async fn run(
    cert: CertConfig,
    cfg: ClusterConfig,
    link: AgentLink,
    reviewer: watch::Sender<Option<Client>>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let store = Store::new(&cert.cert_dir, CLIENT);
    let mut attempt = 0;
    let (mut current, rotate_now) = loop {
        match obtain(&cert, &store, &cfg.node_name, &link.view, &shutdown).await {
            Ok(v) => break v,
            Err(e) => {
                let wait = certificate::bootstrap_backoff(attempt);
                attempt += 1;
                warn!(error = %e, retry_in = ?wait, "no client certificate for the cluster side yet; static pods run meanwhile");
                report(&link.view, &CLIENT, |c| {
                    c.status = Some(format!("{e} (retrying in {}s)", wait.as_secs()))
                });
                link.view.send_modify(|v| {
                    let v = Arc::make_mut(v);
                    v.enabled = true;
                    v.error = Some(e.clone());
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    let identity = SwappableIdentity::new(current.key.clone());
    let mut force = rotate_now && cert.rotate;
    loop {
        // The cluster side with the current identity, on a client of its own (fresh connections).
        let (client, server) = match client_with_identity(&cert.kubeconfig, identity.clone()).await
        {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                warn!(error = %e, "cannot build the cluster client; retrying");
                link.view
                    .send_modify(|v| Arc::make_mut(v).error = Some(e.clone()));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                }
            }
        };
        let _ = reviewer.send(Some(client.clone()));
        let generation = shutdown.child_token();
        let mut tasks = crate::start(
            cfg.clone(),
            client.clone(),
            server,
            link.clone(),
            clock,
            generation.clone(),
        );
        let renewed = if cert.rotate {
            renew(
                &store,
                &current,
                force,
                &client,
                cert.bootstrap_kubeconfig.as_deref(),
                &cfg.node_name,
                &link.view,
                &shutdown,
            )
            .await
        } else {
            report(&link.view, &CLIENT, |c| c.renew_at = None);
            shutdown.cancelled().await;
            None
        };
        generation.cancel();
        while tasks.join_next().await.is_some() {}
        let Some(next) = renewed else { return };
        identity.set(next.key.clone());
        current = next;
        force = false;
    }
}

/// The identity to start with, and whether it must be renewed at once (it is not in the
/// store: kubeadm's embedded certificate).
async fn obtain(
    cert: &CertConfig,
    store: &Store,
    node_name: &str,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Result<(Identity, bool), String> {
    let now = SystemTime::now();
    let kubeconfig = &cert.kubeconfig;
    let from_kubeconfig = kubeconfig_identity(kubeconfig).and_then(|id| {
        id.check_valid(now)
            .map(|()| id)
            .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))
    });
    let stored = store.current().map_err(|e| e.to_string()).and_then(|c| {
        c.map(|id| {
            id.check_valid(now)
                .map(|()| id)
                .map_err(|e| format!("{}: {e}", store.current_path().display()))
        })
        .transpose()
    });
    let in_store = |id: &Identity| {
        id.file
            .as_deref()
            .is_some_and(|f| f.starts_with(&store.dir))
    };
    match from_kubeconfig {
        Ok(id) => {
            // The store's certificate wins when there is one (kubelet's certificate manager).
            let (id, embedded) = match stored {
                Ok(Some(s)) => (s, false),
                _ => {
                    let embedded = !in_store(&id);
                    (id, embedded)
                }
            };
            show(view, &CLIENT, &id, None);
            info!(kubeconfig = %kubeconfig.display(), subject = %id.common_name, expires = %certificate::rfc3339(id.not_after), "using the client certificate of the kubeconfig");
            Ok((id, embedded))
        }
        Err(why) => {
            let Some(bootstrap) = &cert.bootstrap_kubeconfig else {
                return Err(format!(
                    "{why}, and there is no --bootstrap-kubeconfig to get a new one"
                ));
            };
            info!(reason = %why, bootstrap = %bootstrap.display(), "TLS bootstrap: the kubeconfig is not usable");
            let cluster = bootstrap_cluster(bootstrap)?;
            if let Ok(Some(id)) = stored {
                write_kubeconfig(kubeconfig, &cluster, store)?;
                info!(kubeconfig = %kubeconfig.display(), "TLS bootstrap: wrote the kubeconfig for the stored client certificate");
                show(view, &CLIENT, &id, None);
                return Ok((id, false));
            }
            let id = bootstrap_csr(bootstrap, store, node_name, view, shutdown).await?;
            write_kubeconfig(kubeconfig, &cluster, store)?;
            info!(kubeconfig = %kubeconfig.display(), file = %store.current_path().display(), expires = %certificate::rfc3339(id.not_after), "TLS bootstrap: client certificate issued; kubeconfig written");
            show(view, &CLIENT, &id, None);
            Ok((id, false))
        }
    }
}

/// The client certificate a kubeconfig's current user has (file or data).
pub fn kubeconfig_identity(path: &Path) -> Result<Identity, String> {
    let err = |m: String| format!("kubeconfig {}: {m}", path.display());
    if !path.exists() {
        return Err(err("does not exist".into()));
    }
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let ctx_name = kc
        .current_context
        .clone()
        .ok_or_else(|| err("no current-context".into()))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| err(format!("context {ctx_name:?} not found")))?;
    let user = ctx.user.unwrap_or_default();
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.clone())
        .ok_or_else(|| err(format!("user {user:?} not found")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let load = |file: &Option<String>,
                data: &Option<secrecy::SecretString>,
                what: &str|
     -> Result<(Vec<u8>, Option<PathBuf>), String> {
        if let Some(d) = data {
            use base64::Engine as _;
            use secrecy::ExposeSecret as _;
            let b = base64::engine::general_purpose::STANDARD
                .decode(d.expose_secret().trim())
                .map_err(|e| err(format!("{what}-data: {e}")))?;
            return Ok((b, None));
        }
        match file {
            Some(f) => {
                let p = base.join(f);
                std::fs::read(&p)
                    .map(|b| (b, Some(p.clone())))
                    .map_err(|e| {
                        format!(
                            "{} ({what} of kubeconfig {}): {e}",
                            p.display(),
                            path.display()
                        )
                    })
            }
            None => Err(err(format!("user {user:?} has no client certificate"))),
        }
    };
    let cert_data = auth
        .client_certificate_data
        .clone()
        .map(secrecy::SecretString::from);
    let (cert, cert_file) = load(&auth.client_certificate, &cert_data, "client-certificate")?;
    let (key, _) = load(&auth.client_key, &auth.client_key_data, "client-key")?;
    let name = cert_file.clone().unwrap_or_else(|| path.to_path_buf());
    let mut id = Identity::parse(&name, &cert, &key).map_err(|e| e.to_string())?;
    // A symlink into the store (the kubeconfig kubelet writes) counts as the store's.
    id.file = cert_file;
    Ok(id)
}

/// The cluster entry of the bootstrap kubeconfig's current context.
fn bootstrap_cluster(path: &Path) -> Result<ClusterEntry, String> {
    let err = |m: String| format!("bootstrap kubeconfig {}: {m}", path.display());
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| err(format!("current context {ctx_name:?} not found")))?;
    let c = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| err(format!("cluster {cluster_name:?} not found")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(ClusterEntry {
        server: c
            .server
            .ok_or_else(|| err("the cluster has no server".into()))?,
        certificate_authority: c
            .certificate_authority
            .map(|f| base.join(f).to_string_lossy().into_owned()),
        certificate_authority_data: c.certificate_authority_data,
        insecure_skip_tls_verify: c.insecure_skip_tls_verify.unwrap_or(false),
    })
}

fn write_kubeconfig(path: &Path, cluster: &ClusterEntry, store: &Store) -> Result<(), String> {
    certificate::write_private(
        path,
        certificate::kubeconfig_yaml(cluster, &store.current_path()).as_bytes(),
    )
    .map_err(|e| format!("writing the kubeconfig: {e}"))
}

/// Sends the bootstrap CSR with the bootstrap kubeconfig's credentials and waits for it.
async fn bootstrap_csr(
    bootstrap: &Path,
    store: &Store,
    node_name: &str,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Result<Identity, String> {
    let (client, server) = crate::client_from_kubeconfig(bootstrap)
        .await
        .map_err(|e| format!("bootstrap {e}"))?;
    view.send_modify(|v| {
        let v = Arc::make_mut(v);
        v.enabled = true;
        v.server = server;
    });
    // The key in flight is kept, so a restart sends (finds) the same CSR.
    let key_path = store.dir.join(certificate::BOOTSTRAP_KEY);
    let key = match std::fs::read_to_string(&key_path) {
        Ok(k) if rcgen::KeyPair::from_pem(&k).is_ok() => k,
        _ => {
            let k = certificate::new_key_pem()?;
            certificate::write_private(&key_path, k.as_bytes()).map_err(|e| e.to_string())?;
            k
        }
    };
    let (csr, public_key) = certificate::node_csr(node_name, &key, &Default::default())?;
    let user = certificate::node_user(node_name);
    let name = certificate::bootstrap_csr_name(&public_key, &user, &[certificate::NODES_GROUP]);
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let uid = create_csr(&api, Some(&name), &csr, bootstrap, "the bootstrap token").await?;
    let cert = match wait_issued(&api, &name, &uid, BOOTSTRAP_WAIT, &CLIENT, view, shutdown).await {
        Ok(c) => c,
        Err(WaitError::Final(e)) => {
            // Denied (or gone): the next attempt sends a new CSR, with a new key.
            let _ = std::fs::remove_file(&key_path);
            return Err(e);
        }
        Err(WaitError::Retry(e)) => return Err(e),
    };
    check_issued(node_name, &cert, &key, &CLIENT)?;
    let file = store
        .update(&cert, &key, SystemTime::now())
        .map_err(|e| format!("storing the client certificate: {e}"))?;
    let _ = std::fs::remove_file(&key_path);
    let id = Identity::read(&store.current_path()).map_err(|e| e.to_string())?;
    info!(csr = %name, file = %file.display(), "TLS bootstrap: stored the client certificate");
    Ok(id)
}

/// Creates a node client CSR (`name`, or a generated `csr-…` one); an existing one of that name
/// is reused (the same key made it). Returns its UID. `creds` says which credentials were used,
/// for the message when the API server refuses them.
async fn create_csr(
    api: &Api<CertificateSigningRequest>,
    name: Option<&str>,
    csr_pem: &str,
    kubeconfig: &Path,
    creds: &str,
) -> Result<String, String> {
    let obj = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: name.map(str::to_string),
            generate_name: name.is_none().then(|| "csr-".to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: CLIENT.signer.to_string(),
            usages: Some(CLIENT.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let what = format!(
        "create CertificateSigningRequest {}",
        name.unwrap_or("csr-…")
    );
    match call(what.clone(), api.create(&PostParams::default(), &obj)).await {
        Ok(c) => Ok(c.metadata.uid.unwrap_or_default()),
        Err((_, Some(409))) if name.is_some() => {
            let name = name.unwrap_or_default();
            let existing = call(
                format!("get CertificateSigningRequest {name}"),
                api.get(name),
            )
            .await
            .map_err(|e| e.0.to_string())?;
            if existing.spec.signer_name != CLIENT.signer {
                return Err(format!(
                    "CertificateSigningRequest {name} exists with signer {:?}",
                    existing.spec.signer_name
                ));
            }
            info!(csr = %name, "the CSR exists already (sent before a restart): waiting on it");
            Ok(existing.metadata.uid.unwrap_or_default())
        }
        Err((e, Some(code @ (401 | 403)))) => {
            let message = match e {
                ClusterError::Api { message, .. } => message,
                other => other.to_string(),
            };
            Err(format!(
                "{what} (kubeconfig {}): the API server refused {creds} ({code}): {message}",
                kubeconfig.display()
            ))
        }
        Err((e, _)) => Err(format!("{e} (kubeconfig {})", kubeconfig.display())),
    }
}

/// Why a CSR gave no certificate; `Final`: it never will (denied, failed, deleted, replaced),
/// so the next attempt sends a new one with a new key.
#[derive(Debug)]
enum WaitError {
    Final(String),
    Retry(String),
}

impl WaitError {
    fn message(self) -> String {
        match self {
            WaitError::Final(m) | WaitError::Retry(m) => m,
        }
    }
}

/// Polls the CSR until it is approved and its certificate issued (PEM), denied or failed
/// (an error with the approver's reason), or `timeout` passes.
async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    uid: &str,
    timeout: Duration,
    kind: &Kind,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Result<String, WaitError> {
    let start = tokio::time::Instant::now();
    let mut logged = false;
    loop {
        match call(
            format!("get CertificateSigningRequest {name}"),
            api.get_opt(name),
        )
        .await
        {
            Ok(None) => {
                return Err(WaitError::Final(format!(
                    "CertificateSigningRequest {name} was deleted before it was issued"
                )))
            }
            Ok(Some(csr)) => {
                if !uid.is_empty() && csr.metadata.uid.as_deref() != Some(uid) {
                    return Err(WaitError::Final(format!(
                        "CertificateSigningRequest {name} was replaced by another one"
                    )));
                }
                let status = csr.status.unwrap_or_default();
                let conds = status.conditions.unwrap_or_default();
                for c in &conds {
                    if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                        return Err(WaitError::Final(format!(
                            "CertificateSigningRequest {name} was {}: {} {}",
                            c.type_.to_lowercase(),
                            c.reason.clone().unwrap_or_default(),
                            c.message.clone().unwrap_or_default()
                        )));
                    }
                }
                let approved = conds
                    .iter()
                    .any(|c| c.type_ == "Approved" && c.status == "True");
                if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                    if approved {
                        return String::from_utf8(cert.0).map_err(|_| {
                            WaitError::Final(format!(
                                "CertificateSigningRequest {name}: the certificate is not PEM"
                            ))
                        });
                    }
                }
                let state = if approved {
                    "approved, waiting for the signer"
                } else {
                    "waiting for approval"
                };
                let msg = format!(
                    "CertificateSigningRequest {name} {state} ({}s; an admin can run `kubectl certificate approve {name}`)",
                    start.elapsed().as_secs()
                );
                if !logged {
                    info!(csr = %name, "{} certificate: {state} (`kubectl certificate approve {name}`)", kind.what);
                    logged = true;
                }
                report(view, kind, |c| c.status = Some(msg.clone()));
            }
            Err((e, _)) => {
                // The API server may be restarting: keep waiting until the timeout.
                report(view, kind, |c| {
                    c.status = Some(format!("waiting for CertificateSigningRequest {name}: {e}"))
                });
            }
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Retry(format!(
                "CertificateSigningRequest {name} was not issued within {}s (is it approved? `kubectl certificate approve {name}`)",
                timeout.as_secs()
            )));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(WaitError::Retry("shutting down".into())),
            _ = tokio::time::sleep(CSR_POLL) => {}
        }
    }
}

/// Waits for the rotation deadline, then renews (with back-off) until it works. `None`: shut
/// down.
#[allow(clippy::too_many_arguments)]
async fn renew(
    store: &Store,
    current: &Identity,
    force: bool,
    client: &Client,
    bootstrap: Option<&Path>,
    node_name: &str,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Option<Identity> {
    let deadline = if force {
        SystemTime::now()
    } else {
        certificate::rotation_deadline(current.not_before, current.not_after, rand::random::<f64>())
    };
    show(view, &CLIENT, current, Some(deadline));
    info!(expires = %certificate::rfc3339(current.not_after), renew_at = %certificate::rfc3339(deadline), "client certificate rotation scheduled");
    let wait = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::select! {
        _ = shutdown.cancelled() => return None,
        _ = tokio::time::sleep(wait) => {}
    }
    let mut attempt = 0;
    loop {
        match renew_once(store, current, client, bootstrap, node_name, view, shutdown).await {
            Ok(id) => {
                info!(file = ?id.file, expires = %certificate::rfc3339(id.not_after), "client certificate rotated");
                show(view, &CLIENT, &id, None);
                return Some(id);
            }
            Err(e) => {
                if shutdown.is_cancelled() {
                    return None;
                }
                let wait = certificate::renewal_backoff(attempt, rand::random::<f64>());
                attempt += 1;
                warn!(error = %e, retry_in = ?wait, "cannot renew the client certificate");
                report(view, &CLIENT, |c| {
                    c.status = Some(format!(
                        "renewal failed: {e} (retrying in {}s)",
                        wait.as_secs()
                    ))
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One renewal: a new key and CSR, sent with the current certificate, or, once it has expired,
/// with the bootstrap kubeconfig's credentials if there are some (as kubelet's certificate
/// manager falls back to them).
async fn renew_once(
    store: &Store,
    current: &Identity,
    client: &Client,
    bootstrap: Option<&Path>,
    node_name: &str,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Result<Identity, String> {
    let client = match bootstrap {
        Some(b) if current.check_valid(SystemTime::now()).is_err() => {
            info!(bootstrap = %b.display(), "the client certificate expired: renewing with the bootstrap credentials");
            crate::client_from_kubeconfig(b)
                .await
                .map_err(|e| format!("bootstrap {e}"))?
                .0
        }
        _ => client.clone(),
    };
    request(
        store,
        &Default::default(),
        client,
        node_name,
        view,
        shutdown,
    )
    .await
}

/// One certificate of `store`'s kind (client-go's certificate manager's `rotateCerts`): a new
/// P-256 key, a CSR for `system:node:<node>` with `sans` sent with `client` (a generated
/// `csr-…` name), its certificate once approved and issued (waited on for [`RENEWAL_WAIT`]),
/// checked against the key and the node, stored as the store's current one.
pub(crate) async fn request(
    store: &Store,
    sans: &certificate::Sans,
    client: Client,
    node_name: &str,
    view: &watch::Sender<Arc<ClusterView>>,
    shutdown: &CancellationToken,
) -> Result<Identity, String> {
    let kind = &store.kind;
    let key = certificate::new_key_pem()?;
    let (csr, _) = certificate::node_csr(node_name, &key, sans)?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let created = api_create_generated(&api, &csr, kind).await?;
    info!(csr = %created.0, signer = kind.signer, "sent a CertificateSigningRequest for the {} certificate", kind.what);
    let cert = wait_issued(
        &api,
        &created.0,
        &created.1,
        RENEWAL_WAIT,
        kind,
        view,
        shutdown,
    )
    .await
    .map_err(WaitError::message)?;
    check_issued(node_name, &cert, &key, kind)?;
    store
        .update(&cert, &key, SystemTime::now())
        .map_err(|e| format!("storing the {} certificate: {e}", kind.what))?;
    Identity::read(&store.current_path()).map_err(|e| e.to_string())
}

/// The issued certificate goes with the key and is for this node, before it replaces anything.
fn check_issued(node_name: &str, cert: &str, key: &str, kind: &Kind) -> Result<(), String> {
    let id = Identity::parse(
        Path::new("the issued certificate"),
        cert.as_bytes(),
        key.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let want = certificate::node_user(node_name);
    if id.common_name != want {
        return Err(format!(
            "the issued {} certificate is for {:?}, not {want:?}",
            kind.what, id.common_name
        ));
    }
    Ok(())
}

async fn api_create_generated(
    api: &Api<CertificateSigningRequest>,
    csr: &str,
    kind: &Kind,
) -> Result<(String, String), String> {
    let obj = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(csr.as_bytes().to_vec()),
            signer_name: kind.signer.to_string(),
            usages: Some(kind.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let c = call(
        format!(
            "create CertificateSigningRequest ({} certificate)",
            kind.what
        ),
        api.create(&PostParams::default(), &obj),
    )
    .await
    .map_err(|e| e.0.to_string())?;
    Ok((
        c.metadata.name.unwrap_or_default(),
        c.metadata.uid.unwrap_or_default(),
    ))
}

/// Updates what `/cluster` shows of the certificate of `kind`.
pub(crate) fn report(
    view: &watch::Sender<Arc<ClusterView>>,
    kind: &Kind,
    f: impl FnOnce(&mut ManagedCertificate),
) {
    view.send_modify(|v| {
        let v = Arc::make_mut(v);
        let slot = if *kind == CLIENT {
            &mut v.client_certificate
        } else {
            &mut v.serving_certificate
        };
        f(slot.get_or_insert_with(Default::default));
    });
}

pub(crate) fn show(
    view: &watch::Sender<Arc<ClusterView>>,
    kind: &Kind,
    id: &Identity,
    renew_at: Option<SystemTime>,
) {
    report(view, kind, |c| {
        *c = ManagedCertificate {
            file: id.file.as_ref().map(|f| f.display().to_string()),
            subject: id.common_name.clone(),
            sans: id.sans.to_string(),
            not_after: Some(id.not_after),
            renew_at,
            status: None,
        }
    });
}

/// A client for `kubeconfig` whose TLS client identity is `identity` (swappable), with the
/// same layers as kube's default client (base URI, auth, extra headers, timeouts).
pub async fn client_with_identity(
    kubeconfig: &Path,
    identity: Arc<SwappableIdentity>,
) -> Result<(Client, String), ClusterError> {
    use kube::client::ConfigExt as _;
    let err = |message: String| ClusterError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    let server = config.cluster_url.to_string();
    let mut tls = config
        .rustls_client_config()
        .map_err(|e| err(e.to_string()))?;
    tls.client_auth_cert_resolver = identity;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| err(e.to_string()))?)
        .layer(
            config
                .extra_headers_layer()
                .map_err(|e| err(e.to_string()))?,
        )
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok((Client::new(service, config.default_namespace), server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::testing::issued;
    use base64::Engine as _;

    const NODE: &str = "node-a";

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A kubeconfig whose user has `cert` and `key` embedded.
    fn embedded_kubeconfig(cert: &str, key: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b(cert),
            b(key)
        )
    }

    struct Case {
        dir: tempfile::TempDir,
        cert: CertConfig,
        store: Store,
        view: watch::Sender<Arc<ClusterView>>,
    }

    impl Case {
        fn new(bootstrap: bool) -> Case {
            let dir = tempfile::tempdir().unwrap();
            let cert = CertConfig {
                kubeconfig: dir.path().join("kubelet.conf"),
                bootstrap_kubeconfig: bootstrap.then(|| dir.path().join("bootstrap.conf")),
                cert_dir: dir.path().join("pki"),
                rotate: true,
            };
            let store = Store::new(&cert.cert_dir, CLIENT);
            Case {
                dir,
                cert,
                store,
                view: watch::channel(Arc::new(ClusterView::default())).0,
            }
        }

        async fn obtain(&self) -> Result<(Identity, bool), String> {
            obtain(
                &self.cert,
                &self.store,
                NODE,
                &self.view,
                &CancellationToken::new(),
            )
            .await
        }
    }

    #[tokio::test]
    async fn an_embedded_certificate_is_used_and_rotated_at_once() {
        let c = Case::new(false);
        let now = now_secs();
        let (cert, key) = issued("system:node:node-a", now - 60, now + 3600);
        std::fs::write(&c.cert.kubeconfig, embedded_kubeconfig(&cert, &key)).unwrap();
        let (id, force) = c.obtain().await.unwrap();
        assert!(force, "not in the store: renewed at once, as kubelet does");
        assert_eq!(id.common_name, "system:node:node-a");
        assert_eq!(id.file, None);
        let shown = c.view.borrow().client_certificate.clone().unwrap();
        assert_eq!(shown.subject, "system:node:node-a");
        // Once the store has one, it wins and nothing is forced.
        let (cert2, key2) = issued("system:node:node-a", now - 30, now + 7200);
        c.store.update(&cert2, &key2, SystemTime::now()).unwrap();
        let (id, force) = c.obtain().await.unwrap();
        assert!(!force);
        assert_eq!(id.file.as_deref(), Some(&*c.store.current_path()));
        assert!(id.not_after > SystemTime::now() + Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_written_for_the_stored_certificate() {
        let c = Case::new(true);
        let now = now_secs();
        let (cert, key) = issued("system:node:node-a", now - 60, now + 3600);
        c.store.update(&cert, &key, SystemTime::now()).unwrap();
        let ca = c.dir.path().join("ca.crt");
        std::fs::write(
            c.cert.bootstrap_kubeconfig.as_ref().unwrap(),
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority: ca.crt\ncontexts:\n- name: b\n  context:\n    cluster: k\n    user: t\ncurrent-context: b\nusers:\n- name: t\n  user:\n    token: abcdef.0123456789abcdef\n",
        )
        .unwrap();
        let (id, force) = c.obtain().await.unwrap();
        assert!(!force);
        assert_eq!(id.common_name, "system:node:node-a");
        // The written kubeconfig: the bootstrap one's server and CA (made absolute), the
        // store's current file as certificate and key.
        let kc = Kubeconfig::read_from(&c.cert.kubeconfig).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some(&*ca.to_string_lossy())
        );
        let read = kubeconfig_identity(&c.cert.kubeconfig).unwrap();
        assert_eq!(read.file.as_deref(), Some(&*c.store.current_path()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c.cert.kubeconfig)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn unusable_credentials_are_errors_naming_the_file() {
        let now = now_secs();
        // Expired, and no bootstrap kubeconfig to get another.
        let c = Case::new(false);
        let (cert, key) = issued("system:node:node-a", now - 7200, now - 3600);
        std::fs::write(&c.cert.kubeconfig, embedded_kubeconfig(&cert, &key)).unwrap();
        let e = c.obtain().await.unwrap_err();
        let kc = c.cert.kubeconfig.display().to_string();
        assert!(
            e.starts_with(&format!(
                "kubeconfig {kc}: the client certificate expired at "
            )) && e.ends_with("and there is no --bootstrap-kubeconfig to get a new one"),
            "{e}"
        );
        // Missing, and the bootstrap kubeconfig missing too.
        let c = Case::new(true);
        let e = c.obtain().await.unwrap_err();
        let boot = c
            .cert
            .bootstrap_kubeconfig
            .as_ref()
            .unwrap()
            .display()
            .to_string();
        assert!(
            e.starts_with(&format!("bootstrap kubeconfig {boot}: ")),
            "{e}"
        );
        // A certificate file the kubeconfig names but that is not there.
        let c = Case::new(false);
        std::fs::write(
            &c.cert.kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    client-certificate: pki/gone.pem\n    client-key: pki/gone.pem\n",
        )
        .unwrap();
        let e = c.obtain().await.unwrap_err();
        assert!(
            e.contains("pki/gone.pem (client-certificate of kubeconfig"),
            "{e}"
        );
    }
}
