//! Mirror pods, the pure part (≈ kubelet `tryReconcileMirrorPods`, `HandlePodCleanups` and the
//! status manager's `needsReconcile`): what the API should hold ([`Wanted`], from the agent's
//! pods) against what it holds ([`Observed`], from a watch of the pods bound to this node) gives
//! a list of [`Action`]s. No I/O here; `reconciler.rs` executes the actions.
//!
//! Rules (kubelet's, see the spec §4):
//! - a mirror is ours when it carries `kubernetes.io/config.mirror` and is bound to this node;
//!   nothing else is ever touched (a pod of the same name without the annotation is reported);
//! - a mirror being deleted, with another hash, or owned by another incarnation of the Node is
//!   deleted (grace 0, UID precondition) and recreated;
//! - a terminating static pod keeps its mirror (Running, then Ready False) until it is gone, and
//!   gets no new mirror;
//! - mirrors of ours without a static pod are deleted;
//! - the mirror's status follows the static pod's live status; a drift (any field we own that
//!   differs in the API) is a patch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Map, Value};
use staticlet_agent::pod_workers::PodsView;
use staticlet_manifest::{ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_MIRROR};

/// `(namespace, name)` of a pod in the API.
pub type Key = (String, String);

/// The mirror one static pod should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub static_uid: String,
    /// `kubernetes.io/config.hash`, what the mirror's `kubernetes.io/config.mirror` must equal.
    pub hash: String,
    pub terminating: bool,
    /// The static pod (with its live status, see [`staticlet_agent::server::pod_object`]).
    pub pod: Pod,
}

/// A pod bound to this node, as the API holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub uid: String,
    /// `kubernetes.io/config.mirror`; `None`: not a mirror pod (never ours).
    pub mirror_hash: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The UID of its `Node` owner reference, if any.
    pub owner_uid: Option<String>,
    pub resource_version: Option<String>,
    /// `status` as JSON (`null` when absent).
    pub status: Value,
}

impl Observed {
    /// Reads what the planner needs of a pod from the API.
    pub fn from_pod(pod: &Pod) -> Option<(Key, Observed)> {
        let m = &pod.metadata;
        let key = (m.namespace.clone()?, m.name.clone()?);
        let owner_uid = m
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Node" && o.api_version == "v1")
            .map(|o| o.uid.clone());
        let obs = Observed {
            uid: m.uid.clone()?,
            mirror_hash: m
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_CONFIG_MIRROR))
                .cloned(),
            deleting: m.deletion_timestamp.is_some(),
            owner_uid,
            resource_version: m.resource_version.clone(),
            status: pod
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null),
        };
        Some((key, obs))
    }
}

/// One step toward the wanted state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete a mirror with grace 0 and a UID precondition.
    Delete {
        key: Key,
        uid: String,
        /// The static pod it belonged to, when it still exists (for its events).
        static_uid: Option<String>,
        why: &'static str,
    },
    /// Create the mirror of a static pod.
    Create { static_uid: String, pod: Box<Pod> },
    /// Patch the mirror's `status` subresource (a JSON merge patch carrying the UID as a
    /// precondition).
    PatchStatus {
        key: Key,
        uid: String,
        static_uid: String,
        patch: Value,
    },
    /// A pod that is not a mirror holds the static pod's name: reported, never touched.
    Blocked { static_uid: String, message: String },
}

/// The mirror each static pod should have, one per `(namespace, name)`. When an old version is
/// still terminating next to its replacement, the old one owns the mirror until it is gone.
pub fn wanted(view: &PodsView) -> BTreeMap<Key, Wanted> {
    let mut out: BTreeMap<Key, Wanted> = BTreeMap::new();
    for v in view.values() {
        let key = (v.pod.namespace.clone(), v.pod.name.clone());
        let terminating = v.terminating_since.is_some();
        if out
            .get(&key)
            .is_some_and(|w| w.terminating || (!terminating && w.static_uid < v.pod.uid))
        {
            continue;
        }
        let hash = v
            .pod
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONFIG_HASH))
            .cloned()
            .unwrap_or_else(|| v.pod.uid.clone());
        out.insert(
            key,
            Wanted {
                static_uid: v.pod.uid.clone(),
                hash,
                terminating,
                pod: staticlet_agent::server::pod_object(v),
            },
        );
    }
    out
}

/// The mirror pod object for a static pod: same name, namespace, labels, annotations and spec,
/// plus `kubernetes.io/config.mirror` and the Node as controlling owner (which NodeRestriction
/// requires). No status (the API server sets Pending; the status patch follows).
pub fn mirror_pod(w: &Wanted, node_name: &str, node_uid: &str) -> Pod {
    let src = &w.pod.metadata;
    let mut annotations = src.annotations.clone().unwrap_or_default();
    annotations.insert(ANNOTATION_CONFIG_MIRROR.to_string(), w.hash.clone());
    Pod {
        metadata: ObjectMeta {
            name: src.name.clone(),
            namespace: src.namespace.clone(),
            labels: src.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node_name.to_string(),
                uid: node_uid.to_string(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: w.pod.spec.clone(),
        status: None,
    }
}

/// The planner. `node_uid` is `None` until the Node is registered: then nothing is created
/// (kubelet: "No need to create a mirror pod, since failed to get node info").
pub fn plan(
    wanted: &BTreeMap<Key, Wanted>,
    observed: &BTreeMap<Key, Observed>,
    node_name: &str,
    node_uid: Option<&str>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (key, w) in wanted {
        let create = |actions: &mut Vec<Action>| {
            if let (false, Some(node_uid)) = (w.terminating, node_uid) {
                actions.push(Action::Create {
                    static_uid: w.static_uid.clone(),
                    pod: Box::new(mirror_pod(w, node_name, node_uid)),
                });
            }
        };
        match observed.get(key) {
            None => create(&mut actions),
            Some(o) if o.mirror_hash.is_none() => actions.push(Action::Blocked {
                static_uid: w.static_uid.clone(),
                message: format!(
                    "pod {}/{} exists in the API and is not a mirror pod (no {} annotation); \
                     it is left alone and this static pod has no mirror",
                    key.0, key.1, ANNOTATION_CONFIG_MIRROR
                ),
            }),
            Some(o) => {
                let why = if o.deleting {
                    Some("the mirror pod is being deleted")
                } else if o.mirror_hash.as_deref() != Some(w.hash.as_str()) {
                    Some("the mirror pod does not match the static pod")
                } else if node_uid.is_some() && o.owner_uid.as_deref() != node_uid {
                    Some("the mirror pod belongs to an earlier incarnation of the Node")
                } else {
                    None
                };
                match why {
                    // A terminating static pod leaves a mismatched mirror alone (kubelet does
                    // not reconcile mirrors of terminating pods); it is cleaned up afterwards.
                    Some(_) if w.terminating => {}
                    Some(why) => {
                        actions.push(Action::Delete {
                            key: key.clone(),
                            uid: o.uid.clone(),
                            static_uid: Some(w.static_uid.clone()),
                            why,
                        });
                        create(&mut actions);
                    }
                    None => {
                        let ours = w
                            .pod
                            .status
                            .as_ref()
                            .and_then(|s| serde_json::to_value(s).ok())
                            .unwrap_or(Value::Null);
                        if needs_status_patch(&ours, &o.status) {
                            actions.push(Action::PatchStatus {
                                key: key.clone(),
                                uid: o.uid.clone(),
                                static_uid: w.static_uid.clone(),
                                patch: status_patch(&o.uid, &ours, &o.status),
                            });
                        }
                    }
                }
            }
        }
    }
    for (key, o) in observed {
        if o.mirror_hash.is_some() && !wanted.contains_key(key) {
            actions.push(Action::Delete {
                key: key.clone(),
                uid: o.uid.clone(),
                static_uid: None,
                why: "the static pod is gone",
            });
        }
    }
    actions
}

/// Top-level status fields the agent owns: absent in ours and present in the API's → removed.
const OWNED: &[&str] = &[
    "phase",
    "conditions",
    "message",
    "reason",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
];

/// Condition types the agent owns; others (set by controllers) are kept as they are.
const OWNED_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// Whether the API's copy of the status differs from ours in anything we own. The API may add
/// fields of its own (defaults, `observedGeneration`, conditions of other writers): those are
/// not a difference.
pub fn needs_status_patch(ours: &Value, theirs: &Value) -> bool {
    let (Some(o), t) = (ours.as_object(), theirs.as_object()) else {
        return false;
    };
    let empty = Map::new();
    let t = t.unwrap_or(&empty);
    for k in OWNED {
        if !o.contains_key(*k) && t.get(*k).is_some_and(|v| !v.is_null()) {
            return true;
        }
    }
    o.iter().any(|(k, v)| {
        let tv = t.get(k).unwrap_or(&Value::Null);
        if k == "conditions" {
            !conditions_subset(v, tv)
        } else {
            !subset(v, tv)
        }
    })
}

/// `ours ⊆ theirs`: every object key of ours has an equal value in theirs (recursively);
/// arrays match element by element; scalars are equal.
pub fn subset(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .all(|(k, v)| subset(v, b.get(k).unwrap_or(&Value::Null))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| subset(x, y))
        }
        (Value::Null, _) => true,
        (a, b) => a == b,
    }
}

fn cond_type(c: &Value) -> Option<&str> {
    c.get("type").and_then(Value::as_str)
}

/// Conditions compared by type: each of ours is in theirs; theirs has no owned type we lack.
fn conditions_subset(ours: &Value, theirs: &Value) -> bool {
    let (Some(o), t) = (ours.as_array(), theirs.as_array()) else {
        return subset(ours, theirs);
    };
    let t: &[Value] = t.map(Vec::as_slice).unwrap_or(&[]);
    let all_ours_there = o.iter().all(|c| {
        t.iter()
            .any(|x| cond_type(x) == cond_type(c) && subset(c, x))
    });
    let no_stale = t.iter().all(|x| {
        let ty = cond_type(x).unwrap_or("");
        !OWNED_CONDITIONS.contains(&ty) || o.iter().any(|c| cond_type(c) == Some(ty))
    });
    all_ours_there && no_stale
}

/// A JSON merge patch for the `status` subresource: our status, `null` for owned fields we no
/// longer set, other writers' conditions kept (a merge patch replaces lists whole), and
/// `metadata.uid` so the API server refuses it if the mirror was recreated meanwhile.
pub fn status_patch(uid: &str, ours: &Value, theirs: &Value) -> Value {
    let mut status = ours.as_object().cloned().unwrap_or_default();
    if let Some(t) = theirs.as_object() {
        for k in OWNED {
            if !status.contains_key(*k) && t.get(*k).is_some_and(|v| !v.is_null()) {
                status.insert(k.to_string(), Value::Null);
            }
        }
        let foreign: Vec<Value> = t
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| !OWNED_CONDITIONS.contains(&cond_type(c).unwrap_or("")))
            .cloned()
            .collect();
        if !foreign.is_empty() {
            let mut conds = status
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conds.extend(foreign);
            status.insert("conditions".into(), Value::Array(conds));
        }
    }
    serde_json::json!({ "metadata": { "uid": uid }, "status": status })
}

#[cfg(test)]
mod tests;
