//! Pods the scheduler bound to this node, the pure part. staticlet runs static pods only: a pod
//! with `spec.nodeName` = this node that is not a mirror pod (no `kubernetes.io/config.mirror`;
//! kube-proxy's DaemonSet pod on a kubeadm node, say) is never run. Each such pod gets one
//! Warning Event, reason [`REASON`], the first time it is seen, so `kubectl describe pod` says
//! why it stays Pending; the agent's `/cluster` lists them. Nothing else is ever written to
//! them (the invariant of `lib.rs`).
//!
//! The Event's name is derived from the pod's UID, so an agent restarted later does not repeat
//! it: creating it again is refused as AlreadyExists, which counts as sent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use staticlet_agent::cluster::ScheduledPod;
use staticlet_manifest::ANNOTATION_CONFIG_MIRROR;

/// The Event's reason.
pub const REASON: &str = "StaticPodsOnly";

/// The pods bound to this node that are not mirror pods, by UID. Pods being deleted are left
/// out (they go away by themselves).
pub fn bound(pods: &[impl AsRef<Pod>]) -> BTreeMap<String, ScheduledPod> {
    pods.iter()
        .map(AsRef::as_ref)
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !p
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANNOTATION_CONFIG_MIRROR))
        })
        .filter_map(|p| {
            let m = &p.metadata;
            Some((
                m.uid.clone()?,
                ScheduledPod {
                    namespace: m.namespace.clone()?,
                    name: m.name.clone()?,
                    event_sent: false,
                },
            ))
        })
        .collect()
}

/// Which pods have had their Event: the UIDs sent (or found already sent).
#[derive(Debug, Default)]
pub struct Tracker {
    sent: BTreeSet<String>,
}

impl Tracker {
    /// The pods of `seen` still owed their Event; forgets pods that are gone.
    pub fn due(&mut self, seen: &BTreeMap<String, ScheduledPod>) -> Vec<(String, ScheduledPod)> {
        self.sent.retain(|uid| seen.contains_key(uid));
        seen.iter()
            .filter(|(uid, _)| !self.sent.contains(*uid))
            .map(|(uid, p)| (uid.clone(), p.clone()))
            .collect()
    }

    /// The Event of `uid` was created (or existed already).
    pub fn sent(&mut self, uid: &str) {
        self.sent.insert(uid.to_string());
    }

    /// `seen` with each pod's `event_sent`, for `/cluster`.
    pub fn view(&self, seen: &BTreeMap<String, ScheduledPod>) -> BTreeMap<String, ScheduledPod> {
        seen.iter()
            .map(|(uid, p)| {
                let mut p = p.clone();
                p.event_sent = self.sent.contains(uid);
                (uid.clone(), p)
            })
            .collect()
    }
}

/// The Event for a pod bound to `node`, as kubelet's recorder writes a core/v1 Event.
pub fn event(uid: &str, pod: &ScheduledPod, node: &str, now: SystemTime) -> Event {
    let t = staticlet_agent::status::time(now);
    // A DNS subdomain of at most 253 characters: the pod's name (cut) and its UID.
    let mut prefix = pod.name.clone();
    prefix.truncate(253 - uid.len() - 1);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{uid}", prefix.trim_end_matches(['.', '-']))),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(uid.to_string()),
            ..Default::default()
        },
        reason: Some(REASON.into()),
        message: Some(format!(
            "Node {node} runs staticlet, which runs static pods only: this pod, bound to the node \
             by the scheduler, will not be run here"
        )),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("staticlet".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("staticlet".into()),
        reporting_instance: Some(node.to_string()),
        first_timestamp: Some(t.clone()),
        last_timestamp: Some(t),
        count: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, mirror: bool, deleting: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("kube-system".into());
        p.metadata.uid = Some(uid.into());
        if mirror {
            p.metadata.annotations = Some(BTreeMap::from([(
                ANNOTATION_CONFIG_MIRROR.to_string(),
                "h".to_string(),
            )]));
        }
        if deleting {
            p.metadata.deletion_timestamp =
                Some(staticlet_agent::status::time(SystemTime::UNIX_EPOCH));
        }
        p
    }

    #[test]
    fn only_scheduled_pods_are_listed() {
        let pods = [
            pod("etcd-n1", "m1", true, false),
            pod("kube-proxy-abcde", "u1", false, false),
            pod("coredns-x", "u2", false, true),
        ];
        let b = bound(&pods.map(std::sync::Arc::new));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["u1"]);
        assert_eq!(b["u1"].name, "kube-proxy-abcde");
        assert_eq!(b["u1"].namespace, "kube-system");
    }

    #[test]
    fn one_event_per_pod_the_first_time_it_is_seen() {
        let mut t = Tracker::default();
        let p = |n: &str| ScheduledPod {
            namespace: "kube-system".into(),
            name: n.into(),
            event_sent: false,
        };
        let mut seen = BTreeMap::from([("u1".to_string(), p("a"))]);
        assert_eq!(t.due(&seen).len(), 1);
        // Not sent (the API refused): due again at the next pass.
        assert_eq!(t.due(&seen).len(), 1);
        t.sent("u1");
        assert!(t.due(&seen).is_empty());
        assert!(t.view(&seen)["u1"].event_sent);
        seen.insert("u2".into(), p("b"));
        assert_eq!(
            t.due(&seen).into_iter().map(|(u, _)| u).collect::<Vec<_>>(),
            ["u2"]
        );
        assert!(!t.view(&seen)["u2"].event_sent);
        // Gone, then a new pod of the same name (a new UID): its own event.
        seen.remove("u1");
        t.due(&seen);
        assert!(t.sent.iter().all(|u| u != "u1"));
    }

    #[test]
    fn the_event_names_the_pod_and_is_named_by_its_uid() {
        let p = ScheduledPod {
            namespace: "kube-system".into(),
            name: "kube-proxy-abcde".into(),
            event_sent: false,
        };
        let e = event("0b7c-uid", &p, "n1", SystemTime::UNIX_EPOCH);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["metadata"]["name"], "kube-proxy-abcde.0b7c-uid");
        assert_eq!(v["metadata"]["namespace"], "kube-system");
        assert_eq!(v["involvedObject"]["kind"], "Pod");
        assert_eq!(v["involvedObject"]["uid"], "0b7c-uid");
        assert_eq!(v["reason"], "StaticPodsOnly");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["source"]["host"], "n1");
        assert_eq!(v["count"], 1);
        let long = ScheduledPod {
            name: "x".repeat(300),
            ..p
        };
        let name = event(&"u".repeat(36), &long, "n1", SystemTime::UNIX_EPOCH)
            .metadata
            .name
            .unwrap();
        assert_eq!(name.len(), 253);
    }
}
