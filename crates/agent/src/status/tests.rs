//! Table tests of status computation: container states in, phase and conditions out.
#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    ContainerState as S, ContainerStateTerminated, ContainerStateWaiting,
};
use staticlet_manifest::Origin;

use super::*;
use crate::pod_workers::plan::Waiting;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

fn running() -> K8sContainerStatus {
    K8sContainerStatus {
        state: Some(S {
            running: Some(Default::default()),
            ..Default::default()
        }),
        started: Some(true),
        ready: true,
        ..Default::default()
    }
}

fn exited(code: i32) -> K8sContainerStatus {
    K8sContainerStatus {
        state: Some(S {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(last_exit: Option<i32>) -> K8sContainerStatus {
    K8sContainerStatus {
        state: Some(S {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }),
        last_state: last_exit.map(|c| S {
            terminated: Some(ContainerStateTerminated {
                exit_code: c,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn phase_table_matches_kubelet_get_phase() {
    use ContainerKind::*;
    let cases: Vec<(
        &str,
        Vec<(ContainerKind, K8sContainerStatus)>,
        Vec<K8sContainerStatus>,
        &str,
    )> = vec![
        ("Always", vec![], vec![running()], "Running"),
        ("Always", vec![], vec![waiting(None)], "Pending"),
        ("Always", vec![], vec![waiting(Some(1))], "Running"),
        ("Always", vec![], vec![exited(0)], "Running"),
        ("OnFailure", vec![], vec![exited(0)], "Succeeded"),
        ("OnFailure", vec![], vec![exited(1)], "Running"),
        ("Never", vec![], vec![exited(0), exited(0)], "Succeeded"),
        ("Never", vec![], vec![exited(0), exited(3)], "Failed"),
        ("Never", vec![], vec![running(), exited(3)], "Running"),
        (
            "Always",
            vec![(Init, running())],
            vec![waiting(None)],
            "Pending",
        ),
        (
            "Always",
            vec![(Init, exited(0))],
            vec![running()],
            "Running",
        ),
        (
            "Never",
            vec![(Init, exited(1))],
            vec![waiting(None)],
            "Failed",
        ),
        (
            "Always",
            vec![(Init, waiting(Some(1)))],
            vec![waiting(None)],
            "Pending",
        ),
        (
            "Always",
            vec![(Sidecar, waiting(None))],
            vec![waiting(None)],
            "Pending",
        ),
        (
            "Always",
            vec![(Sidecar, running())],
            vec![running()],
            "Running",
        ),
    ];
    for (i, (policy, inits, apps, want)) in cases.iter().enumerate() {
        let inits: Vec<(ContainerKind, &K8sContainerStatus)> =
            inits.iter().map(|(k, s)| (*k, s)).collect();
        let apps: Vec<&K8sContainerStatus> = apps.iter().collect();
        assert_eq!(phase(policy, &inits, &apps), *want, "case {i}");
    }
}

fn pod(spec: &str) -> StaticPod {
    let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}");
    staticlet_manifest::load(m.as_bytes(), &Origin::File("/m/p.yaml".into()), "n").unwrap()
}

#[test]
fn waiting_pod_has_kubelet_conditions() {
    let p = pod("  initContainers:\n  - {name: i, image: b}\n  containers:\n  - {name: a, image: b}\n  - {name: c, image: b}\n");
    let obs = Observed::default();
    let w = BTreeMap::new();
    let st = compute(&Input {
        pod: &p,
        obs: &obs,
        waiting: &w,
        start_time: t(0),
        runtime_name: "fake",
        host_ip: "192.0.2.1",
        previous: None,
        now: t(1),
        probes: None,
        deadline_exceeded: false,
    });
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let conds: Vec<(String, String, Option<String>, Option<String>)> = st
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason, c.message))
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        conds,
        vec![
            (
                "PodReadyToStartContainers".into(),
                "False".into(),
                None,
                None
            ),
            (
                "Initialized".into(),
                "False".into(),
                s("ContainersNotInitialized"),
                s("containers with incomplete status: [i]")
            ),
            (
                "Ready".into(),
                "False".into(),
                s("ContainersNotReady"),
                s("containers with unready status: [a c]")
            ),
            (
                "ContainersReady".into(),
                "False".into(),
                s("ContainersNotReady"),
                s("containers with unready status: [a c]")
            ),
            ("PodScheduled".into(), "True".into(), None, None),
        ]
    );
    let cs = st.container_statuses.unwrap();
    assert_eq!(
        cs[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("PodInitializing")
    );
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(st.host_ip.as_deref(), Some("192.0.2.1"));
}

#[test]
fn crash_loop_status_shows_waiting_and_last_state() {
    use staticlet_runtime::{ContainerId, ContainerState, ContainerStatus, ImageSpec, SandboxId};
    let p = pod("  containers:\n  - {name: a, image: b}\n");
    let c = ContainerStatus {
        id: ContainerId("c1".into()),
        sandbox_id: SandboxId("s".into()),
        name: "a".into(),
        attempt: 3,
        state: ContainerState::Exited,
        created_at: t(0),
        started_at: Some(t(1)),
        finished_at: Some(t(2)),
        exit_code: Some(1),
        reason: String::new(),
        message: String::new(),
        image: ImageSpec { image: "b".into() },
        image_ref: "sha256:b".into(),
        labels: Default::default(),
        annotations: Default::default(),
        log_path: Default::default(),
    };
    let obs = Observed {
        sandboxes: vec![],
        containers: vec![c],
    };
    let w = BTreeMap::from([(
        "a".to_string(),
        Waiting::new("CrashLoopBackOff", "back-off 40s"),
    )]);
    let st = compute(&Input {
        pod: &p,
        obs: &obs,
        waiting: &w,
        start_time: t(0),
        runtime_name: "fake",
        host_ip: "h",
        previous: None,
        now: t(3),
        probes: None,
        deadline_exceeded: false,
    });
    let cs = &st.container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 3);
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(last.container_id.as_deref(), Some("fake://c1"));
    assert_eq!(st.phase.as_deref(), Some("Running"));
}

#[test]
fn qos_classes() {
    let g = pod("  containers:\n  - name: a\n    image: b\n    resources: {limits: {cpu: 500m, memory: 64Mi}}\n");
    assert_eq!(qos_class(&g), "Guaranteed");
    let b =
        pod("  containers:\n  - name: a\n    image: b\n    resources: {requests: {cpu: 250m}}\n");
    assert_eq!(qos_class(&b), "Burstable");
}
