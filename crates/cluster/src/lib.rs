//! staticlet's cluster side, active with `--kubeconfig`: it registers (or adopts) this machine's
//! Node, keeps its Lease and Ready condition fresh, and publishes a read-only mirror pod for each
//! static pod, the way kubelet does (spec §4).
//!
//! # Layout
//! - [`node`]: the Node and Lease objects (pure builders);
//! - [`mirror`]: mirror pods: wanted vs observed → actions (pure);
//! - `reconciler.rs`: the mirror loop (a watch of the pods bound to this node + the agent's pods);
//! - [`scheduled`]: pods the scheduler bound to this node, never run: one `StaticPodsOnly`
//!   Warning Event each (pure);
//! - [`recorder`]: the static pods' events (the agent's per-pod logs) as API Events, which
//!   `kubectl describe` shows on their mirror pods (planner pure, plus its loop);
//! - [`certificate`]: the node's client certificate: CSR contents, the cert dir's file store,
//!   when to renew, the swappable TLS identity (pure, or the cert dir only);
//! - [`identity`]: TLS bootstrap (`--bootstrap-kubeconfig`) and client-certificate rotation
//!   (`rotateCertificates`): it runs the loops below with the node's current identity;
//! - this file: the kubeconfig client, configuration and the Node/Lease loop.
//!
//! **Architecture invariant:** nothing here can affect a running static pod: the cluster side
//! only reads the agent's pods (`watch::Receiver`) and writes to the API server and to its own
//! [`ClusterView`]. An API server that is down, slow, frozen or refusing only delays mirrors.
//!
//! **Architecture invariant:** the only API objects written are this Node (and its status), its
//! Lease, pods that carry `kubernetes.io/config.mirror` and are bound to this node, Events
//! (static pods' events, and one `StaticPodsOnly` per scheduled pod,
//! which is itself never written), and this node's CertificateSigningRequests ([`identity`]).

pub mod certificate;
pub mod identity;
pub mod mirror;
pub mod node;
mod reconciler;
pub mod recorder;
pub mod scheduled;
pub mod serving;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use staticlet_agent::cluster::ClusterView;
use staticlet_agent::pod_workers::PodsView;
use staticlet_agent::server::Readiness;
use staticlet_runtime::Clock;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::{HostFacts, NodeSpecInput};

/// Errors of the cluster side. API errors carry the API server's own message.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    #[error("{what}: no answer from the API server within {secs}s")]
    Timeout { what: String, secs: u64 },
}

/// How long one API request may take before it counts as failed (a frozen API server).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Lease renewal period (kubelet: a quarter of the 40 s lease duration).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Node's status is re-sent this often even when nothing changed.
pub const NODE_STATUS_REPORT: Duration = Duration::from_secs(60);

/// What the cluster side is configured with.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_name: String,
    pub host_ip: String,
    /// `--node-labels`.
    pub node_labels: BTreeMap<String, String>,
    /// `--register-node`: create the Node when it does not exist (else wait for it).
    pub register_node: bool,
    /// `registerWithTaints`: (key, value, effect) set when the Node is created, never after
    /// (as kubelet; taints are otherwise others' to set, e.g. kubeadm's control-plane taint).
    pub register_with_taints: Vec<(String, String, String)>,
    pub facts: HostFacts,
    /// The node API's port (0: off), published in the Node's `daemonEndpoints`.
    pub kubelet_port: u16,
}

/// A client from a kubeconfig file (client certificates, tokens, exec plugins, CA), and the
/// server URL it talks to.
pub async fn client_from_kubeconfig(path: &Path) -> Result<(Client, String), ClusterError> {
    let err = |message: String| ClusterError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
    Ok((client, server))
}

/// The API server's message of a failed request.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            if s.message.is_empty() {
                format!("{} ({})", s.reason, s.code)
            } else {
                s.message.clone()
            }
        }
        // A transport error: its causes say what went wrong (e.g. the server's certificate
        // is not signed by the kubeconfig's CA).
        other => {
            let mut msg = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                let s = e.to_string();
                if !msg.contains(&s) {
                    msg.push_str(": ");
                    msg.push_str(&s);
                }
                source = e.source();
            }
            msg
        }
    }
}

/// The HTTP status code of a failed request, if the API server answered.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Runs one API request with [`REQUEST_TIMEOUT`], naming `what` in its error.
pub(crate) async fn call<T>(
    what: impl Into<String>,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, (ClusterError, Option<u16>)> {
    let what = what.into();
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let code = api_code(&e);
            Err((
                ClusterError::Api {
                    what,
                    message: api_message(&e),
                },
                code,
            ))
        }
        Err(_) => Err((
            ClusterError::Timeout {
                what,
                secs: REQUEST_TIMEOUT.as_secs(),
            },
            None,
        )),
    }
}

/// What the cluster side reads from the agent and writes back for its local API.
#[derive(Clone)]
pub struct AgentLink {
    pub pods: watch::Receiver<Arc<PodsView>>,
    pub readiness: watch::Receiver<Readiness>,
    pub view: watch::Sender<Arc<ClusterView>>,
}

/// Starts the Node/Lease loop and the mirror loop. They run until `shutdown`; mirrors are left
/// in place (the next agent adopts them, as kubelet's do).
pub fn start(
    cfg: ClusterConfig,
    client: Client,
    server: String,
    link: AgentLink,
    clock: Clock,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    link.view.send_modify(|v| {
        let v = Arc::make_mut(v);
        v.enabled = true;
        v.server = server;
    });
    let (node_tx, node_rx) = watch::channel(None);
    tasks.spawn(node_loop(
        cfg.clone(),
        client.clone(),
        link.readiness,
        node_tx,
        link.view.clone(),
        clock,
        shutdown.clone(),
    ));
    tasks.spawn(recorder::run(
        client.clone(),
        cfg.node_name.clone(),
        link.pods.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(reconciler::run(
        client,
        cfg.node_name,
        node_rx,
        link.pods,
        link.view,
        clock,
        shutdown,
    ));
    tasks
}

/// The Node as the mirror loop needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRef {
    pub uid: String,
}

/// Keeps the Node registered with a fresh status and the Lease renewed. A deleted Node is
/// registered again (its mirrors, owned by the old incarnation, are then recreated).
async fn node_loop(
    cfg: ClusterConfig,
    client: Client,
    mut readiness: watch::Receiver<Readiness>,
    node_tx: watch::Sender<Option<NodeRef>>,
    view: watch::Sender<Arc<ClusterView>>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, node::LEASE_NAMESPACE);
    let input = NodeSpecInput {
        node_name: cfg.node_name.clone(),
        host_ip: cfg.host_ip.clone(),
        labels: cfg.node_labels.clone(),
        taints: cfg.register_with_taints.clone(),
        facts: cfg.facts.clone(),
        kubelet_port: cfg.kubelet_port,
    };
    let mut ready_since: (bool, String, SystemTime) = (false, String::new(), clock.now());
    let mut last_report: Option<(bool, String, tokio::time::Instant)> = None;
    let mut backoff = Duration::from_millis(200);
    let mut last_error: Option<String> = None;
    loop {
        let r = readiness.borrow_and_update().clone();
        if (r.runtime_ready, &r.message) != (ready_since.0, &ready_since.1) {
            ready_since = (r.runtime_ready, r.message.clone(), clock.now());
        }
        let result = sync_node(
            &nodes,
            &leases,
            &cfg,
            &input,
            &ready_since,
            &mut last_report,
            clock,
        )
        .await;
        let wait = match result {
            Ok(uid) => {
                backoff = Duration::from_millis(200);
                if last_error.take().is_some() {
                    info!(node = %cfg.node_name, "API server reachable again: Node and Lease in sync");
                }
                node_tx.send_if_modified(|n| {
                    let new = Some(NodeRef { uid: uid.clone() });
                    let changed = *n != new;
                    *n = new;
                    changed
                });
                let now = clock.now();
                view.send_modify(|v| {
                    let v = Arc::make_mut(v);
                    v.node_uid = Some(uid);
                    v.error = None;
                    v.lease_renewed = Some(now);
                });
                LEASE_RENEW
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_ref() != Some(&msg) {
                    warn!(node = %cfg.node_name, error = %msg, "cannot sync the Node with the API server; retrying");
                }
                last_error = Some(msg.clone());
                view.send_modify(|v| Arc::make_mut(v).error = Some(msg));
                let w = backoff;
                backoff = (backoff * 2).min(LEASE_RENEW);
                w
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            r = readiness.changed() => if r.is_err() { return },
        }
    }
}

/// One pass: get or create the Node, reconcile labels, report status when it changed (or every
/// [`NODE_STATUS_REPORT`]), renew the Lease. Returns the Node's UID.
async fn sync_node(
    nodes: &Api<Node>,
    leases: &Api<Lease>,
    cfg: &ClusterConfig,
    input: &NodeSpecInput,
    ready: &(bool, String, SystemTime),
    last_report: &mut Option<(bool, String, tokio::time::Instant)>,
    clock: Clock,
) -> Result<String, ClusterError> {
    let name = &cfg.node_name;
    let now = clock.now();
    let cond = node::ready_condition(ready.0, &ready.1, ready.2, now);
    let existing = call(format!("get Node {name}"), nodes.get_opt(name))
        .await
        .map_err(|e| e.0)?;
    let node = match existing {
        Some(n) => n,
        None if cfg.register_node => {
            info!(node = %name, "registering Node");
            let created = call(
                format!("register Node {name}"),
                nodes.create(&PostParams::default(), &node::new_node(input, cond.clone())),
            )
            .await;
            match created {
                Ok(n) => {
                    *last_report = Some((ready.0, ready.1.clone(), tokio::time::Instant::now()));
                    n
                }
                // Someone (an earlier staticlet) created it meanwhile: adopt it.
                Err((_, Some(409))) => call(format!("get Node {name}"), nodes.get(name))
                    .await
                    .map_err(|e| e.0)?,
                Err((e, _)) => return Err(e),
            }
        }
        None => {
            return Err(ClusterError::Api {
                what: format!("get Node {name}"),
                message: "the Node does not exist and --register-node=false".into(),
            })
        }
    };
    let uid = node.metadata.uid.clone().unwrap_or_default();
    if node.metadata.deletion_timestamp.is_some() {
        return Err(ClusterError::Api {
            what: format!("Node {name}"),
            message: "the Node is being deleted".into(),
        });
    }
    if let Some(p) = node::labels_patch(input, &node) {
        call(
            format!("update labels of Node {name}"),
            nodes.patch(name, &PatchParams::default(), &Patch::Merge(p)),
        )
        .await
        .map_err(|e| e.0)?;
    }
    let due = match last_report {
        Some((r, m, at)) => *r != ready.0 || *m != ready.1 || at.elapsed() >= NODE_STATUS_REPORT,
        None => true,
    };
    if due {
        call(
            format!("update status of Node {name}"),
            nodes.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Strategic(node::status_patch(input, cond)),
            ),
        )
        .await
        .map_err(|e| e.0)?;
        *last_report = Some((ready.0, ready.1.clone(), tokio::time::Instant::now()));
    }
    renew_lease(leases, name, &uid, now).await?;
    Ok(uid)
}

async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    node_uid: &str,
    now: SystemTime,
) -> Result<(), ClusterError> {
    let current = call(format!("get Lease {name}"), leases.get_opt(name))
        .await
        .map_err(|e| e.0)?;
    match current {
        None => {
            call(
                format!("create Lease {name}"),
                leases.create(
                    &PostParams::default(),
                    &node::lease(name, node_uid, now, None),
                ),
            )
            .await
            .map_err(|e| e.0)?;
        }
        Some(l) => {
            call(
                format!("renew Lease {name}"),
                leases.replace(
                    name,
                    &PostParams::default(),
                    &node::lease(name, node_uid, now, Some(l)),
                ),
            )
            .await
            .map_err(|e| e.0)?;
        }
    }
    Ok(())
}
