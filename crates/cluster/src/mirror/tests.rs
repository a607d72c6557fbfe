//! Table tests of the mirror planner.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::*;

const NODE: &str = "n1";
const NODE_UID: &str = "node-uid";

fn key(name: &str) -> Key {
    ("kube-system".into(), format!("{name}-{NODE}"))
}

fn wanted_pod(name: &str, hash: &str, terminating: bool, phase: &str) -> (Key, Wanted) {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{NODE}")),
            namespace: Some("kube-system".into()),
            uid: Some(hash.into()),
            labels: Some(BTreeMap::from([("tier".into(), "control-plane".into())])),
            annotations: Some(BTreeMap::from([
                ("kubernetes.io/config.hash".into(), hash.into()),
                ("kubernetes.io/config.source".into(), "file".into()),
            ])),
            resource_version: Some("must-not-be-copied".into()),
            ..Default::default()
        },
        spec: Some(Default::default()),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    };
    (
        key(name),
        Wanted {
            static_uid: hash.into(),
            hash: hash.into(),
            terminating,
            pod,
        },
    )
}

fn observed(name: &str, uid: &str, hash: Option<&str>, phase: &str) -> (Key, Observed) {
    (
        key(name),
        Observed {
            uid: uid.into(),
            mirror_hash: hash.map(String::from),
            deleting: false,
            owner_uid: Some(NODE_UID.into()),
            resource_version: Some("1".into()),
            status: json!({ "phase": phase, "qosClass": "BestEffort" }),
        },
    )
}

fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Delete { key, uid, why, .. } => format!("delete {} {uid} ({why})", key.1),
            Action::Create { pod, .. } => {
                format!("create {}", pod.metadata.name.as_deref().unwrap())
            }
            Action::PatchStatus { key, uid, .. } => format!("patch {} {uid}", key.1),
            Action::Blocked { .. } => "blocked".into(),
        })
        .collect()
}

#[test]
fn planner_table() {
    struct Case {
        name: &'static str,
        wanted: Vec<(Key, Wanted)>,
        observed: Vec<(Key, Observed)>,
        node_uid: Option<&'static str>,
        expect: Vec<&'static str>,
    }
    let deleting = {
        let mut o = observed("etcd", "m1", Some("h1"), "Running");
        o.1.deleting = true;
        o
    };
    let old_owner = {
        let mut o = observed("etcd", "m1", Some("h1"), "Running");
        o.1.owner_uid = Some("old-node".into());
        o
    };
    let cases = vec![
        Case {
            name: "missing mirror is created",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![],
            node_uid: Some(NODE_UID),
            expect: vec!["create etcd-n1"],
        },
        Case {
            name: "nothing is created before the Node is registered",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![],
            node_uid: None,
            expect: vec![],
        },
        Case {
            name: "matching mirror with the same status: nothing to do",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![observed("etcd", "m1", Some("h1"), "Running")],
            node_uid: Some(NODE_UID),
            expect: vec![],
        },
        Case {
            name: "matching mirror with another status is patched",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![observed("etcd", "m1", Some("h1"), "Pending")],
            node_uid: Some(NODE_UID),
            expect: vec!["patch etcd-n1 m1"],
        },
        Case {
            name: "mirror with another hash is deleted and recreated",
            wanted: vec![wanted_pod("etcd", "h2", false, "Running")],
            observed: vec![observed("etcd", "m1", Some("h1"), "Running")],
            node_uid: Some(NODE_UID),
            expect: vec![
                "delete etcd-n1 m1 (the mirror pod does not match the static pod)",
                "create etcd-n1",
            ],
        },
        Case {
            name: "gracefully deleted mirror is deleted now and recreated",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![deleting.clone()],
            node_uid: Some(NODE_UID),
            expect: vec![
                "delete etcd-n1 m1 (the mirror pod is being deleted)",
                "create etcd-n1",
            ],
        },
        Case {
            name: "mirror of an earlier Node incarnation is recreated",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![old_owner],
            node_uid: Some(NODE_UID),
            expect: vec![
                "delete etcd-n1 m1 (the mirror pod belongs to an earlier incarnation of the Node)",
                "create etcd-n1",
            ],
        },
        Case {
            name: "orphan mirror is deleted",
            wanted: vec![],
            observed: vec![observed("etcd", "m1", Some("h1"), "Running")],
            node_uid: Some(NODE_UID),
            expect: vec!["delete etcd-n1 m1 (the static pod is gone)"],
        },
        Case {
            name: "orphans are deleted even before the Node is known",
            wanted: vec![],
            observed: vec![observed("etcd", "m1", Some("h1"), "Running")],
            node_uid: None,
            expect: vec!["delete etcd-n1 m1 (the static pod is gone)"],
        },
        Case {
            name: "terminating static pod keeps its mirror and its status follows",
            wanted: vec![wanted_pod("etcd", "h1", true, "Running")],
            observed: vec![observed("etcd", "m1", Some("h1"), "Pending")],
            node_uid: Some(NODE_UID),
            expect: vec!["patch etcd-n1 m1"],
        },
        Case {
            name: "terminating static pod gets no new mirror",
            wanted: vec![wanted_pod("etcd", "h1", true, "Running")],
            observed: vec![],
            node_uid: Some(NODE_UID),
            expect: vec![],
        },
        Case {
            name: "terminating static pod leaves a deleting mirror alone",
            wanted: vec![wanted_pod("etcd", "h1", true, "Running")],
            observed: vec![deleting],
            node_uid: Some(NODE_UID),
            expect: vec![],
        },
        Case {
            name: "a pod that is not a mirror is never touched",
            wanted: vec![wanted_pod("etcd", "h1", false, "Running")],
            observed: vec![observed("etcd", "x1", None, "Running")],
            node_uid: Some(NODE_UID),
            expect: vec!["blocked"],
        },
        Case {
            name: "pods that are not mirrors and have no static pod are ignored",
            wanted: vec![],
            observed: vec![observed("web", "x1", None, "Running")],
            node_uid: Some(NODE_UID),
            expect: vec![],
        },
    ];
    for c in cases {
        let w: BTreeMap<Key, Wanted> = c.wanted.into_iter().collect();
        let o: BTreeMap<Key, Observed> = c.observed.into_iter().collect();
        let got = kinds(&plan(&w, &o, NODE, c.node_uid));
        assert_eq!(got, c.expect, "case: {}", c.name);
    }
}

#[test]
fn mirror_pod_content_is_what_node_restriction_requires() {
    let (_, w) = wanted_pod("etcd", "h1", false, "Running");
    let p = mirror_pod(&w, NODE, NODE_UID);
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["metadata"]["name"], "etcd-n1");
    assert_eq!(v["metadata"]["namespace"], "kube-system");
    assert_eq!(v["metadata"]["labels"]["tier"], "control-plane");
    assert_eq!(
        v["metadata"]["annotations"]["kubernetes.io/config.mirror"],
        "h1"
    );
    assert_eq!(
        v["metadata"]["annotations"]["kubernetes.io/config.hash"],
        "h1"
    );
    assert_eq!(
        v["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    assert_eq!(
        v["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE_UID, "controller": true}])
    );
    // Identity of the API object is the API server's to assign.
    assert!(v["metadata"].get("uid").is_none());
    assert!(v["metadata"].get("resourceVersion").is_none());
    assert!(v.get("status").is_none());
}

#[test]
fn status_comparison_ignores_what_the_api_adds() {
    let ours = json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "c", "ready": true}]
    });
    let theirs = json!({
        "phase": "Running",
        "qosClass": "BestEffort",
        "observedGeneration": 1,
        "conditions": [
            {"type": "DisruptionTarget", "status": "True"},
            {"type": "Ready", "status": "True", "observedGeneration": 1}
        ],
        "containerStatuses": [{"name": "c", "ready": true, "volumeMounts": []}]
    });
    assert!(!needs_status_patch(&ours, &theirs));
    // A stale owned condition type, a stale owned field, or a differing value is a drift.
    let stale_cond = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "False"}]});
    assert!(needs_status_patch(&ours, &stale_cond));
    let mut stale_ip = theirs.clone();
    stale_ip["podIP"] = json!("10.0.0.9");
    assert!(needs_status_patch(&ours, &stale_ip));
    let mut differs = theirs.clone();
    differs["containerStatuses"][0]["ready"] = json!(false);
    assert!(needs_status_patch(&ours, &differs));
}

#[test]
fn status_patch_keeps_foreign_conditions_and_clears_stale_fields() {
    let ours = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]});
    let theirs = json!({
        "phase": "Running",
        "podIP": "10.0.0.9",
        "qosClass": "BestEffort",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "DisruptionTarget", "status": "True"}
        ]
    });
    let p = status_patch("m1", &ours, &theirs);
    assert_eq!(p["metadata"]["uid"], "m1");
    assert_eq!(p["status"]["podIP"], Value::Null);
    assert!(p["status"].get("qosClass").is_none());
    assert_eq!(
        p["status"]["conditions"],
        json!([{"type": "Ready", "status": "False"}, {"type": "DisruptionTarget", "status": "True"}])
    );
}
