//! What the cluster side (mirror pods, Node, Lease; `staticlet-cluster`) reports back to the
//! agent, so the local API can show it: whether the API server is reachable, the Node's UID, and
//! per static pod its mirror's UID, the last error the API server gave for it, and mirror events;
//! and the pods the scheduler bound to this node, which are not run.
//!
//! The cluster side owns the sender; the local API only reads (see the server's invariant).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::events::EventLog;

/// The cluster side's state. `enabled == false` (the default) means no `--kubeconfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub enabled: bool,
    /// The API server URL from the kubeconfig.
    pub server: String,
    /// The Node's UID once registered (or adopted).
    pub node_uid: Option<String>,
    /// Why the API server could not be reached or refused the Node/Lease, if it did.
    pub error: Option<String>,
    /// Last successful Lease renewal.
    pub lease_renewed: Option<SystemTime>,
    /// Per static pod UID.
    pub mirrors: BTreeMap<String, MirrorState>,
    /// Pods the scheduler bound to this node (not mirror pods), never run here, by their UID.
    pub scheduled: BTreeMap<String, ScheduledPod>,
    /// The node's client certificate, when TLS bootstrap or rotation manages it.
    pub client_certificate: Option<ManagedCertificate>,
    /// The node API's serving certificate, when `serverTLSBootstrap` has it issued by the cluster.
    pub serving_certificate: Option<ManagedCertificate>,
}

/// A certificate of the node that the cluster issues and staticlet renews: the client one
/// (`--bootstrap-kubeconfig`, `rotateCertificates`) or the serving one (`serverTLSBootstrap`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedCertificate {
    /// The file it is read from (`None`: embedded in the kubeconfig, or none yet).
    pub file: Option<String>,
    /// Its subject's common name (`system:node:<node>`).
    pub subject: String,
    /// Its subject alternative names (`DNS:node-1, IP:10.0.0.5`; empty for a client one).
    pub sans: String,
    pub not_after: Option<SystemTime>,
    /// When it is renewed (`None`: rotation is off, or a renewal is under way).
    pub renew_at: Option<SystemTime>,
    /// A bootstrap or renewal under way, or why the last attempt failed (it is retried).
    pub status: Option<String>,
}

/// A pod the scheduler bound to this node: staticlet runs static pods only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduledPod {
    pub namespace: String,
    pub name: String,
    /// Whether its `StaticPodsOnly` Warning Event was recorded in the API.
    pub event_sent: bool,
}

/// One static pod's mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorState {
    /// The mirror pod's UID in the API (not the static pod's UID).
    pub mirror_uid: Option<String>,
    /// The API server's message when it last refused to create, delete or update the mirror.
    pub error: Option<String>,
    /// Mirror events: `MirrorCreated`, `MirrorDeleted`, `FailedMirror`, ...
    pub events: EventLog,
}

/// Annotation on pods served by the local API: the mirror pod's UID in the cluster.
pub const ANNOTATION_MIRROR_UID: &str = "staticlet.io/mirror-uid";
/// Annotation on pods served by the local API: why the API server refused the mirror pod.
pub const ANNOTATION_MIRROR_ERROR: &str = "staticlet.io/mirror-error";
