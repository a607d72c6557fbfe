//! Ordering between static pods (a documented extension, never required): a pod annotated
//! `staticlet.io/after: "etcd,other"` is not started until the pods of those manifest names,
//! in its namespace, are Ready. Until then it is shown waiting (`WaitingForDependency`, the
//! message names what it waits for); an unknown name or a cycle is reported the same way, with
//! what is wrong, never a silent hang (`staticlet validate` refuses both offline).
//!
//! Only *starting* is gated: a pod that runs already (its worker exists, or the runtime has it
//! from an earlier agent) is never held back, so an agent restart never stops a pod because a
//! dependency is briefly not Ready.
//!
//! [`holds`] is pure; [`run`] is a filter between the control verbs and the pod manager that
//! recomputes it when the desired pods or the pod view change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use staticlet_manifest::StaticPod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::merge::DesiredPods;
use crate::pod_workers::PodsView;

/// The container waiting reason of a held pod.
pub const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";

/// The manifest name of a static pod (its name without the node suffix).
pub fn manifest_name(p: &StaticPod) -> &str {
    let node = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();
    p.name
        .strip_suffix(node)
        .and_then(|n| n.strip_suffix('-'))
        .unwrap_or(&p.name)
}

/// What is wrong with the `after` annotations of `pods` as a set: unknown names and cycles,
/// per pod UID (each message names the pods).
pub fn problems<'a>(pods: impl IntoIterator<Item = &'a StaticPod>) -> BTreeMap<String, String> {
    let pods: Vec<&StaticPod> = pods.into_iter().collect();
    let key = |p: &StaticPod| (p.namespace.clone(), manifest_name(p).to_string());
    let by_name: BTreeMap<(String, String), &StaticPod> =
        pods.iter().map(|p| (key(p), *p)).collect();
    let deps = |p: &StaticPod| -> Vec<String> {
        staticlet_manifest::extensions::after(p.pod.metadata.annotations.as_ref())
    };
    let mut out = BTreeMap::new();
    for p in &pods {
        let unknown: Vec<String> = deps(p)
            .into_iter()
            .filter(|d| !by_name.contains_key(&(p.namespace.clone(), d.clone())))
            .collect();
        if !unknown.is_empty() {
            out.insert(
                p.uid.clone(),
                format!(
                    "staticlet.io/after names no static pod in namespace {:?}: {}",
                    p.namespace,
                    unknown.join(", ")
                ),
            );
            continue;
        }
        // A cycle through p: depth-first from p's dependencies back to p.
        let start = key(p);
        let mut stack: Vec<(String, Vec<String>)> = deps(p)
            .into_iter()
            .map(|d| (d.clone(), vec![manifest_name(p).to_string(), d]))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((name, path)) = stack.pop() {
            if (p.namespace.clone(), name.clone()) == start {
                out.insert(
                    p.uid.clone(),
                    format!("staticlet.io/after: dependency cycle {}", path.join(" -> ")),
                );
                break;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(q) = by_name.get(&(p.namespace.clone(), name)) {
                for d in deps(q) {
                    let mut next = path.clone();
                    next.push(d.clone());
                    stack.push((d, next));
                }
            }
        }
    }
    out
}

/// The pods of `desired` that must not start yet, with why (see the module documentation).
pub fn holds(desired: &DesiredPods, view: &PodsView) -> BTreeMap<String, String> {
    let bad = problems(desired.pods.values().map(|p| &**p));
    let mut out = BTreeMap::new();
    let ready = |namespace: &str, name: &str| {
        desired.pods.values().any(|q| {
            q.namespace == namespace
                && manifest_name(q) == name
                && view.get(&q.uid).is_some_and(|v| {
                    v.status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
    };
    for (uid, p) in &desired.pods {
        let deps = staticlet_manifest::extensions::after(p.pod.metadata.annotations.as_ref());
        if deps.is_empty() {
            continue;
        }
        if let Some(why) = bad.get(uid) {
            out.insert(uid.clone(), why.clone());
            continue;
        }
        let waiting: Vec<String> = deps
            .into_iter()
            .filter(|d| !ready(&p.namespace, d))
            .collect();
        if !waiting.is_empty() {
            out.insert(
                uid.clone(),
                format!(
                    "waiting for {} to be Ready (staticlet.io/after)",
                    waiting.join(", ")
                ),
            );
        }
    }
    out
}

/// Forwards `desired` with [`DesiredPods::held`] set from [`holds`], until `stop`.
pub async fn run(
    mut desired: watch::Receiver<Arc<DesiredPods>>,
    mut view: watch::Receiver<Arc<PodsView>>,
    out: watch::Sender<Arc<DesiredPods>>,
    stop: CancellationToken,
) {
    loop {
        let current = desired.borrow_and_update().clone();
        let held = holds(&current, &view.borrow_and_update());
        if held.is_empty() && current.held.is_empty() {
            out.send_replace(current);
        } else {
            let mut next = (*current).clone();
            next.held = held;
            out.send_if_modified(|old| {
                let changed = old.held != next.held || !Arc::ptr_eq(old, &current);
                if changed {
                    *old = Arc::new(next);
                }
                changed
            });
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = desired.changed() => if r.is_err() { return },
            r = view.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, after: Option<&str>) -> Arc<StaticPod> {
        let ann = after
            .map(|a| format!("  annotations:\n    staticlet.io/after: \"{a}\"\n"))
            .unwrap_or_default();
        let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{ann}spec:\n  containers:\n  - {{name: c, image: b}}\n");
        Arc::new(
            staticlet_manifest::load(
                m.as_bytes(),
                &staticlet_manifest::Origin::File(format!("/m/{name}.yaml")),
                "node-1",
            )
            .unwrap(),
        )
    }

    #[test]
    fn unknown_names_and_cycles_are_named() {
        let pods = [
            pod("etcd", None),
            pod("api", Some("etcd")),
            pod("sched", Some("api,nope")),
            pod("a", Some("b")),
            pod("b", Some("c")),
            pod("c", Some("a")),
            pod("d", Some("a")),
        ];
        let p = problems(pods.iter().map(|p| &**p));
        let of = |i: usize| p.get(&pods[i].uid).cloned().unwrap_or_default();
        assert_eq!(of(0), "");
        assert_eq!(of(1), "");
        assert_eq!(
            of(2),
            "staticlet.io/after names no static pod in namespace \"default\": nope"
        );
        assert_eq!(
            of(3),
            "staticlet.io/after: dependency cycle a -> b -> c -> a"
        );
        assert_eq!(
            of(4),
            "staticlet.io/after: dependency cycle b -> c -> a -> b"
        );
        // d depends on a cycle without being in it: it waits (for a), it is not a cycle.
        assert_eq!(of(6), "");
        assert_eq!(manifest_name(&pods[0]), "etcd");
    }

    #[test]
    fn a_pod_waits_until_its_dependencies_are_ready() {
        use crate::pod_workers::PodView;
        let etcd = pod("etcd", None);
        let api = pod("api", Some("etcd"));
        let desired = DesiredPods {
            pods: [&etcd, &api]
                .iter()
                .map(|p| (p.uid.clone(), (*p).clone()))
                .collect(),
            all_sources_seen: true,
            ..Default::default()
        };
        let view_with = |ready: &str| {
            let mut status = k8s_openapi::api::core::v1::PodStatus::default();
            status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]);
            PodsView::from([(
                etcd.uid.clone(),
                std::sync::Arc::new(PodView {
                    pod: etcd.clone(),
                    status,
                    terminating_since: None,
                    grace: None,
                    events: Default::default(),
                }),
            )])
        };
        let h = holds(&desired, &PodsView::new());
        assert_eq!(
            h.get(&api.uid).map(String::as_str),
            Some("waiting for etcd to be Ready (staticlet.io/after)")
        );
        assert!(!h.contains_key(&etcd.uid));
        assert!(holds(&desired, &view_with("False")).contains_key(&api.uid));
        assert!(holds(&desired, &view_with("True")).is_empty());
    }
}
