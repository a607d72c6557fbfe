use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, PodCondition, PodStatus,
};
use staticlet_manifest::Origin;
use staticlet_runtime::{labels, ContainerId, ContainerStats};

use super::*;
use crate::cluster::MirrorState;
use crate::pod_workers::PodView;

fn view() -> (PodsView, String) {
    let pod = staticlet_manifest::load(
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: edge\nspec:\n  containers:\n  - name: app\n    image: busybox\n",
        &Origin::File("/m/web.yaml".into()),
        "n1",
    )
    .unwrap();
    let uid = pod.uid.clone();
    let status = PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            restart_count: 3,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut v = PodsView::new();
    v.insert(
        uid.clone(),
        Arc::new(PodView {
            pod: Arc::new(pod),
            status,
            terminating_since: None,
            grace: None,
            events: Default::default(),
        }),
    );
    (v, uid)
}

#[test]
fn renders_pods_containers_manifests_cluster_and_usage() {
    let (pods, uid) = view();
    let manifests = vec![ManifestRecord {
        source: crate::config::SourceKind::File,
        origin: "/m/web.yaml".into(),
        pods: vec!["edge/web-n1".into()],
        hashes: vec![uid.clone()],
        error: Some("spec.containers[0].image: Required value".into()),
        last_applied: None,
        stale: true,
        seen: None,
        applied: None,
        ready: None,
        running: None,
        rollout: None,
    }];
    let mut cluster = ClusterView {
        enabled: true,
        node_uid: Some("node-uid".into()),
        ..Default::default()
    };
    cluster.mirrors.insert(
        uid.clone(),
        MirrorState {
            mirror_uid: Some("m1".into()),
            ..Default::default()
        },
    );
    let stats = vec![
        ContainerStats {
            id: ContainerId("c1".into()),
            labels: [
                (labels::POD_UID.to_string(), uid.clone()),
                (labels::CONTAINER_NAME.to_string(), "app".to_string()),
            ]
            .into(),
            timestamp: SystemTime::UNIX_EPOCH,
            cpu_usage_core_nanos: Some(1_500_000_000),
            memory_working_set_bytes: Some(4096),
        },
        // Not one of ours (no pod for its UID): left out.
        ContainerStats {
            id: ContainerId("c2".into()),
            labels: [(labels::POD_UID.to_string(), "other".to_string())].into(),
            timestamp: SystemTime::UNIX_EPOCH,
            cpu_usage_core_nanos: Some(1),
            memory_working_set_bytes: None,
        },
    ];
    let text = render(&Input {
        pods: &pods,
        manifests: &manifests,
        readiness: &Readiness {
            sources_seen: true,
            runtime_ready: true,
            message: String::new(),
        },
        cluster: &cluster,
        stats: &stats,
        counters: &crate::pod_workers::WorkerCounters {
            relist_found_exits: 2.into(),
        },
        process: Some(ProcessStats {
            resident_bytes: 12 << 20,
            open_fds: 40,
            threads: 5,
            cpu_seconds: 1.25,
            tasks: 77,
        }),
    });
    for want in [
        "staticlet_build_info{version=\"0.1.0\"} 1",
        "staticlet_runtime_ready 1",
        "staticlet_pods{phase=\"Running\"} 1",
        "staticlet_pods{phase=\"Pending\"} 0",
        "staticlet_pod_ready{namespace=\"edge\",pod=\"web-n1\"} 1",
        "staticlet_containers{state=\"running\"} 1",
        "staticlet_container_restarts{namespace=\"edge\",pod=\"web-n1\",container=\"app\"} 3",
        "staticlet_manifest_errors 1",
        "staticlet_manifests_stale 1",
        "staticlet_cluster_reachable 1",
        "staticlet_mirror_pods 1",
        "staticlet_relist_found_exits_total 2",
        "process_resident_memory_bytes 12582912",
        "process_open_fds 40",
        "process_threads 5",
        "process_cpu_seconds_total 1.25",
        "staticlet_tasks 77",
        "container_cpu_usage_seconds_total{namespace=\"edge\",pod=\"web-n1\",container=\"app\"} 1.5",
        "container_memory_working_set_bytes{namespace=\"edge\",pod=\"web-n1\",container=\"app\"} 4096",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("other"), "{text}");
}

#[test]
fn no_cluster_metrics_when_standalone() {
    let (pods, _) = view();
    let text = render(&Input {
        pods: &pods,
        manifests: &[],
        readiness: &Readiness::default(),
        cluster: &ClusterView::default(),
        stats: &[],
        counters: &Default::default(),
        process: None,
    });
    assert!(!text.contains("process_"), "{text}");
    assert!(!text.contains("staticlet_mirror_pods"), "{text}");
    assert!(text.contains("staticlet_sources_seen 0"), "{text}");
}

/// The agent's own figures as /proc shows them for this test process.
#[tokio::test]
async fn process_stats_are_read_from_proc() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rx);
    let p = ProcessStats::read().unwrap();
    drop(tx);
    let _ = task.await;
    assert!(p.resident_bytes > 1 << 20, "{p:?}");
    assert!(p.open_fds >= 3, "{p:?}");
    assert!(p.threads >= 1, "{p:?}");
    assert!(p.tasks >= 1, "a task is spawned: {p:?}");
}
