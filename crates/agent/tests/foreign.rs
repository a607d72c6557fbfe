//! Component test: runtime objects of other clients (`crictl` or `kubeadm` through staticlet's
//! CRI endpoint, other users of a shared containerd) carry no `io.staticlet.managed` label, and
//! the agent never stops, restarts or removes them: not as orphans, not as dead containers,
//! not when they carry kubelet's pod labels, not when their pod has a static pod's full name.
//! Two layers keep them safe: the manager's relist (orphan detection, full-name checks) lists
//! only managed objects, and so does each worker (`LabelSelector::pod`); this test fails only
//! when both are broken, so it pins the property, not one of the layers.

use std::sync::Arc;
use std::time::Duration;

use staticlet_agent::config::merge::{self, DesiredPods, Merger};
use staticlet_agent::config::{SourceKind, SourceSnapshot, SourceUpdate};
use staticlet_agent::kuberuntime::NodeContext;
use staticlet_agent::pod_workers::worker::WorkerCtx;
use staticlet_agent::pod_workers::{PodManager, PodsView};
use staticlet_manifest::Origin;
use staticlet_runtime::fake::{Call, FakeRuntime};
use staticlet_runtime::{
    labels, Clock, ContainerConfig, ContainerRuntime, ContainerState, ImageSpec, Labels,
    SandboxConfig, SandboxState,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const FOREIGN_UID: &str = "0f0f0f0f-crictl-pod";

#[tokio::test(start_paused = true)]
async fn objects_without_the_managed_label_are_never_touched() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);

    // A pod made through CRI by another client, with kubelet's pod labels (what a kubelet-style
    // client would set) and the full name `web-n` in `default`: the static pod's below.
    let pod_labels = Labels::from([
        (labels::POD_UID.to_string(), FOREIGN_UID.to_string()),
        (labels::POD_NAME.to_string(), "web-n".to_string()),
        (labels::POD_NAMESPACE.to_string(), "default".to_string()),
        ("app".to_string(), "crictl".to_string()),
    ]);
    let sandbox_config = SandboxConfig {
        name: "web-n".into(),
        namespace: "default".into(),
        uid: FOREIGN_UID.into(),
        labels: pod_labels.clone(),
        ..Default::default()
    };
    let sb = rt.run_pod_sandbox(&sandbox_config).await.unwrap();
    let image = ImageSpec {
        image: "busybox".into(),
    };
    rt.pull_image(&image, None).await.unwrap();
    let container = |name: &str| {
        let mut l = pod_labels.clone();
        l.insert(labels::CONTAINER_NAME.into(), name.into());
        ContainerConfig {
            name: name.into(),
            image: image.clone(),
            labels: l,
            ..Default::default()
        }
    };
    let running = rt
        .create_container(&sb, &container("app"), &sandbox_config)
        .await
        .unwrap();
    rt.start_container(&running).await.unwrap();
    // An exited one too: the agent removes dead containers of its own pods.
    let dead = rt
        .create_container(&sb, &container("job"), &sandbox_config)
        .await
        .unwrap();
    rt.start_container(&dead).await.unwrap();
    rt.crash(&dead, 1);
    let foreign_calls_before = foreign_calls(&rt);

    // The agent, with one static pod whose full name is the foreign pod's.
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (desired_tx, desired_rx) = watch::channel(Arc::new(DesiredPods::default()));
    let (manifests_tx, _m) = watch::channel(Arc::new(Vec::new()));
    let stop = CancellationToken::new();
    tokio::spawn(merge::run(
        Merger::new([SourceKind::File]),
        rx,
        desired_tx,
        manifests_tx,
        clock,
        stop.clone(),
    ));
    let ctx = Arc::new(WorkerCtx {
        runtime: Arc::new(rt.clone()),
        node: NodeContext {
            node_name: "n".into(),
            root_dir: dir.path().join("root"),
            log_dir: dir.path().join("logs"),
            host_ip: "192.0.2.10".into(),
        },
        clock,
        runtime_name: "fake".into(),
        relist_period: Duration::from_secs(1),
        cgroup_mountinfo: None,
        counters: Default::default(),
    });
    let (pods_tx, mut pods) = watch::channel(Arc::new(PodsView::new()));
    tokio::spawn(PodManager::new(ctx, pods_tx).run(desired_rx, stop.clone()));
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - {name: app, image: busybox}\n";
    let web = Arc::new(
        staticlet_manifest::load(
            manifest.as_bytes(),
            &Origin::File("/m/web.yaml".into()),
            "n",
        )
        .unwrap(),
    );
    assert_eq!(
        (web.full_name().as_str(), web.uid.as_str() != FOREIGN_UID),
        ("web-n_default", true)
    );
    tx.send(SourceUpdate {
        kind: SourceKind::File,
        snapshot: SourceSnapshot {
            pods: vec![web.clone()],
            manifests: vec![],
        },
    })
    .await
    .unwrap();

    // The static pod starts although a foreign pod has its full name.
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let running = pods
                .borrow_and_update()
                .get(&web.uid)
                .is_some_and(|v| v.status.phase.as_deref() == Some("Running"));
            if running {
                return;
            }
            pods.changed().await.unwrap();
        }
    })
    .await
    .expect("the static pod runs");
    // Ten minutes of relists, resyncs and orphan sweeps.
    tokio::time::sleep(Duration::from_secs(600)).await;

    assert_eq!(
        foreign_calls(&rt),
        foreign_calls_before,
        "no call about the foreign pod: {:#?}",
        rt.calls()
    );
    let sandbox = rt.sandboxes().into_iter().find(|s| s.id == sb).unwrap();
    assert_eq!(sandbox.state, SandboxState::Ready);
    let states: Vec<(String, ContainerState)> = rt
        .containers()
        .into_iter()
        .filter(|c| c.sandbox_id == sb)
        .map(|c| (c.name, c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("app".to_string(), ContainerState::Running),
            ("job".to_string(), ContainerState::Exited)
        ]
    );
    // The view shows the static pod only.
    assert_eq!(
        pods.borrow().keys().cloned().collect::<Vec<_>>(),
        std::slice::from_ref(&web.uid)
    );
    stop.cancel();
}

/// The runtime calls about the foreign pod so far.
fn foreign_calls(rt: &FakeRuntime) -> Vec<Call> {
    rt.calls()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| match c {
            Call::RunSandbox { uid, .. }
            | Call::StopSandbox { uid }
            | Call::RemoveSandbox { uid }
            | Call::Create { uid, .. }
            | Call::Start { uid, .. }
            | Call::Stop { uid, .. }
            | Call::Remove { uid, .. }
            | Call::Exec { uid, .. }
            | Call::InteractiveExec { uid, .. }
            | Call::PortForward { uid, .. } => uid == FOREIGN_UID,
            Call::PullImage { .. } | Call::RemoveImage { .. } => false,
        })
        .collect()
}
