//! Component tests of health-gated rollouts: the merger, the rollout controller and the pod
//! manager against the fake runtime, with paused time. The test plays the file source by
//! sending snapshots; an agent restart is a new harness on the same root directory and runtime.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use staticlet_agent::config::merge::{self, DesiredPods, Merger};
use staticlet_agent::config::{ManifestRecord, SourceKind, SourceSnapshot, SourceUpdate};
use staticlet_agent::kuberuntime::NodeContext;
use staticlet_agent::pod_workers::worker::WorkerCtx;
use staticlet_agent::pod_workers::{PodManager, PodsView};
use staticlet_agent::rollout::controller::Controller;
use staticlet_agent::rollout::store::Store;
use staticlet_manifest::{Origin, StaticPod};
use staticlet_runtime::fake::{Call, ExecReply, FakeRuntime, Script};
use staticlet_runtime::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const ORIGIN: &str = "/m/web.yaml";

struct Harness {
    tx: mpsc::Sender<SourceUpdate>,
    pods: watch::Receiver<Arc<PodsView>>,
    manifests: watch::Receiver<Arc<Vec<ManifestRecord>>>,
    _rt: FakeRuntime,
    stop: CancellationToken,
}

fn start(
    rt: &FakeRuntime,
    clock: Clock,
    root: &std::path::Path,
    node_deadline: Option<Duration>,
) -> Harness {
    let (tx, rx) = mpsc::channel(16);
    let (desired_tx, desired_rx) = watch::channel(Arc::new(DesiredPods::default()));
    let (merged_tx, merged_rx) = watch::channel(Arc::new(Vec::new()));
    let (run_tx, run_rx) = watch::channel(Arc::new(DesiredPods::default()));
    let (manifests_tx, manifests) = watch::channel(Arc::new(Vec::new()));
    let stop = CancellationToken::new();
    tokio::spawn(merge::run(
        Merger::new([SourceKind::File]),
        rx,
        desired_tx,
        merged_tx,
        clock,
        stop.clone(),
    ));
    let ctx = Arc::new(WorkerCtx {
        runtime: Arc::new(rt.clone()),
        node: NodeContext {
            node_name: "n".into(),
            root_dir: root.to_path_buf(),
            log_dir: root.join("logs"),
            host_ip: "192.0.2.10".into(),
        },
        clock,
        runtime_name: "fake".into(),
        relist_period: Duration::from_secs(1),
        cgroup_mountinfo: None,
        counters: Default::default(),
    });
    let (pods_tx, pods) = watch::channel(Arc::new(PodsView::new()));
    let controller = Controller::new(Store::new(root.join("rollout")), node_deadline, "n", clock);
    tokio::spawn(controller.run(
        desired_rx,
        merged_rx,
        pods.clone(),
        run_tx,
        manifests_tx,
        stop.clone(),
    ));
    tokio::spawn(PodManager::new(ctx, pods_tx).run(run_rx, stop.clone()));
    Harness {
        tx,
        pods,
        manifests,
        _rt: rt.clone(),
        stop,
    }
}

/// The manifest `web` with one container, `extra` lines of metadata (annotations) and `more`
/// lines of the container.
fn web(container: &str, annotations: &str, more: &str) -> Arc<StaticPod> {
    let m = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n{annotations}spec:\n  containers:\n  - name: {container}\n    image: img\n{more}"
    );
    Arc::new(staticlet_manifest::load(m.as_bytes(), &Origin::File(ORIGIN.into()), "n").unwrap())
}

fn deadline(d: &str) -> String {
    format!("  annotations:\n    staticlet.io/ready-deadline: \"{d}\"\n")
}

impl Harness {
    async fn set(&self, pod: &Arc<StaticPod>) {
        let record = ManifestRecord {
            source: SourceKind::File,
            origin: ORIGIN.into(),
            pods: vec![format!("{}/{}", pod.namespace, pod.name)],
            hashes: vec![pod.uid.clone()],
            error: None,
            last_applied: None,
            stale: false,
            seen: None,
            applied: None,
            ready: None,
            running: None,
            rollout: None,
        };
        self.tx
            .send(SourceUpdate {
                kind: SourceKind::File,
                snapshot: SourceSnapshot {
                    pods: vec![pod.clone()],
                    manifests: vec![record],
                },
            })
            .await
            .unwrap();
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&PodsView) -> bool) {
        let r = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                if pred(&self.pods.borrow_and_update()) {
                    return;
                }
                self.pods.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "timed out waiting for: {what}\npods: {:#?}\nmanifests: {:#?}",
            self.pods
                .borrow()
                .values()
                .map(|v| (&v.pod.uid, &v.status, &v.events))
                .collect::<Vec<_>>(),
            self.manifests.borrow()
        );
    }

    async fn until_record(
        &mut self,
        what: &str,
        pred: impl Fn(&ManifestRecord) -> bool,
    ) -> ManifestRecord {
        let r = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                if let Some(r) = self.manifests.borrow_and_update().first() {
                    if pred(r) {
                        return r.clone();
                    }
                }
                self.manifests.changed().await.unwrap();
            }
        })
        .await;
        match r {
            Ok(r) => r,
            Err(_) => panic!(
                "timed out waiting for: {what}\nmanifests: {:#?}",
                self.manifests.borrow()
            ),
        }
    }

    /// Stops the agent (containers keep running, as on a real shutdown).
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ready(v: &PodsView, uid: &str) -> bool {
    v.get(uid).is_some_and(|p| {
        p.terminating_since.is_none()
            && p.status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn starts(calls: &[(SystemTime, Call)], name: &str) -> usize {
    calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Start { name: n, .. } if n == name))
        .count()
}

fn events(v: &PodsView, uid: &str) -> Vec<(String, String)> {
    v.get(uid)
        .map(|p| {
            p.events
                .iter()
                .map(|e| (e.reason.clone(), e.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn an_update_ready_in_time_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(60)));
    let v1 = web("app", "", "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    let rec = h
        .until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;
    assert_eq!(rec.ready.unwrap().hash, v1.content_hash);
    assert_eq!(rec.rollout.unwrap().state, "steady");

    let v2 = web("app2", "", "");
    h.set(&v2).await;
    let rec = h
        .until_record("v2 progressing", |r| {
            r.rollout.as_ref().is_some_and(|s| s.state == "progressing")
        })
        .await;
    assert_eq!(rec.applied.unwrap().hash, v2.content_hash);
    assert!(rec.rollout.unwrap().deadline.is_some());
    h.until("v2 Ready", |v| ready(v, &v2.uid)).await;
    let rec = h
        .until_record("v2 recorded as Ready", |r| {
            r.ready.as_ref().is_some_and(|x| x.hash == v2.content_hash)
        })
        .await;
    assert_eq!(rec.running.as_deref(), Some(v2.content_hash.as_str()));
    assert_eq!(rec.rollout.unwrap().state, "steady");
    let ev = events(&h.pods.borrow(), &v2.uid);
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Updating" && m.contains("within 1m0s")),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(r, _)| r == "Updated"), "{ev:?}");
    // Long after the deadline, v2 still runs.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(ready(&h.pods.borrow(), &v2.uid));
    assert_eq!(starts(&rt.calls(), "app"), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_version_that_exits_is_rolled_back_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("bad", Script::exits(Duration::from_secs(1), 1));
    let mut h = start(&rt, clock, dir.path(), None);
    let v1 = web("app", &deadline("1m"), "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    h.until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;

    let v2 = web("bad", &deadline("1m"), "");
    h.set(&v2).await;
    h.until("v2 started", |v| v.contains_key(&v2.uid)).await;
    let t0 = clock.now();
    // Rolled back: v1 runs and is Ready again; v2 is gone.
    h.until("v1 Ready again", |v| {
        ready(v, &v1.uid) && !v.contains_key(&v2.uid)
    })
    .await;
    assert!(clock.now().duration_since(t0).unwrap() >= Duration::from_secs(59));
    let rec = h
        .until_record("rolled back", |r| {
            r.rollout.as_ref().is_some_and(|s| s.state == "rolledBack")
        })
        .await;
    let ro = rec.rollout.clone().unwrap();
    assert_eq!(
        ro.rolled_back_from.as_deref(),
        Some(v2.content_hash.as_str())
    );
    assert_eq!(ro.rolled_back_to.as_deref(), Some(v1.content_hash.as_str()));
    assert_eq!(rec.running.as_deref(), Some(v1.content_hash.as_str()));
    assert_eq!(rec.applied.as_ref().unwrap().hash, v2.content_hash);
    assert_eq!(rec.ready.as_ref().unwrap().hash, v1.content_hash);
    let msg = ro.message.unwrap();
    assert!(
        msg.starts_with(&format!(
            "rolled back from {} to {}: not Ready within 1m0s: container bad ",
            &v2.content_hash[..12],
            &v1.content_hash[..12]
        )) && msg.contains("exited with code 1"),
        "{msg}"
    );
    let ev = events(&h.pods.borrow(), &v1.uid);
    assert!(
        ev.iter().any(|(r, m)| r == "RolledBack" && *m == msg),
        "{ev:?}"
    );

    // The same content again (a relist) is not retried.
    let bad_starts = starts(&rt.calls(), "bad");
    h.set(&v2).await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(starts(&rt.calls(), "bad"), bad_starts);
    assert!(ready(&h.pods.borrow(), &v1.uid));

    // A new edit is tried.
    let v3 = web("app3", &deadline("1m"), "");
    h.set(&v3).await;
    h.until("v3 Ready", |v| ready(v, &v3.uid)).await;
    h.until_record("v3 steady", |r| {
        r.running.as_deref() == Some(v3.content_hash.as_str())
            && r.rollout.as_ref().is_some_and(|s| s.state == "steady")
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_version_whose_readiness_probe_fails_is_rolled_back_with_the_probe_output() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script_for_command(
        "probed",
        "check",
        [],
        ExecReply::Exit {
            code: 1,
            stdout: "database not reachable".into(),
        },
    );
    // v2 ignores its stop signal: it terminates for its whole grace period after the rollback.
    rt.script("probed", Script::forever().on_signal(None));
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(120)));
    let v1 = web("app", "", "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    h.until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;
    let v2 = web(
        "probed",
        "",
        "    readinessProbe:\n      exec: {command: [check]}\n      periodSeconds: 5\n",
    );
    h.set(&v2).await;
    let rec = h
        .until_record("rolled back", |r| {
            r.rollout.as_ref().is_some_and(|s| s.state == "rolledBack")
        })
        .await;
    let msg = rec.rollout.unwrap().message.unwrap();
    assert!(
        msg.contains("not Ready within 2m0s: container probed is running but not ready: Readiness probe failed: database not reachable"),
        "{msg}"
    );
    // While v2 terminates under the same name, the rollback's event is v1's only: it is about
    // the version that runs after it (the cluster's copy of the event refers to that UID).
    h.until(
        "v2 terminating, v1 waiting with the rollback's event",
        |v| {
            v.get(&v2.uid)
                .is_some_and(|p| p.terminating_since.is_some())
                && events(v, &v1.uid).iter().any(|(r, _)| r == "RolledBack")
        },
    )
    .await;
    let v2_events = events(&h.pods.borrow(), &v2.uid);
    assert!(
        !v2_events.iter().any(|(r, _)| r == "RolledBack"),
        "the terminating version got the rollback's event: {v2_events:?}"
    );
    h.until("v1 Ready again", |v| ready(v, &v1.uid)).await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_annotation_wins_over_the_node_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("bad", Script::exits(Duration::from_secs(1), 1));
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(60)));
    let v1 = web("app", "", "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    h.until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;
    // 0 turns the check off for this pod: the failing version keeps running (crash looping).
    let v2 = web("bad", &deadline("0"), "");
    h.set(&v2).await;
    h.until("v2 started", |v| v.contains_key(&v2.uid)).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(h.pods.borrow().contains_key(&v2.uid));
    assert!(!h.pods.borrow().contains_key(&v1.uid));
    let rec = h.manifests.borrow().first().cloned().unwrap();
    assert_eq!(rec.rollout.unwrap().state, "steady");
    assert_eq!(rec.running.as_deref(), Some(v2.content_hash.as_str()));
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollout_in_progress_survives_a_restart_and_a_passed_deadline_rolls_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("bad", Script::exits(Duration::from_secs(1), 1));
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(600)));
    let v1 = web("app", "", "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    h.until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;
    let v2 = web("bad", "", "");
    h.set(&v2).await;
    h.until("v2 started", |v| v.contains_key(&v2.uid)).await;
    h.until_record("progressing", |r| {
        r.rollout.as_ref().is_some_and(|s| s.state == "progressing")
    })
    .await;
    // The state is on disk.
    let stored = Store::new(dir.path().join("rollout")).load_all();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].deadline().is_some());
    h.shutdown().await;

    // The agent is down for longer than the deadline.
    tokio::time::sleep(Duration::from_secs(900)).await;
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(600)));
    let t0 = clock.now();
    h.set(&v2).await;
    let rec = h
        .until_record("rolled back after the restart", |r| {
            r.rollout.as_ref().is_some_and(|s| s.state == "rolledBack")
        })
        .await;
    assert!(clock.now().duration_since(t0).unwrap() < Duration::from_secs(5));
    assert!(rec
        .rollout
        .unwrap()
        .message
        .unwrap()
        .contains("not Ready within 10m0s"));
    h.until("v1 Ready again", |v| {
        ready(v, &v1.uid) && !v.contains_key(&v2.uid)
    })
    .await;
    h.shutdown().await;

    // Restarted again while rolled back: v1 keeps running, v2 is not retried.
    let bad_starts = starts(&rt.calls(), "bad");
    let app_starts = starts(&rt.calls(), "app");
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(600)));
    h.set(&v2).await;
    h.until("v1 adopted", |v| ready(v, &v1.uid)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(starts(&rt.calls(), "bad"), bad_starts);
    assert_eq!(
        starts(&rt.calls(), "app"),
        app_starts,
        "v1 adopted, not restarted"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollback_target_that_no_longer_validates_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("bad", Script::exits(Duration::from_secs(1), 1));
    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(60)));
    let v1 = web("app", "", "");
    h.set(&v1).await;
    h.until("v1 Ready", |v| ready(v, &v1.uid)).await;
    h.until_record("v1 recorded as Ready", |r| r.ready.is_some())
        .await;
    let v2 = web("bad", "", "");
    h.set(&v2).await;
    h.until("v2 started", |v| v.contains_key(&v2.uid)).await;
    h.until_record("progressing", |r| {
        r.rollout.as_ref().is_some_and(|s| s.state == "progressing")
    })
    .await;
    h.shutdown().await;

    // While the agent is down, the stored last Ready version stops validating (as a version
    // accepted by an older staticlet can).
    let store = Store::new(dir.path().join("rollout"));
    let mut r = store.load_all().remove(0);
    let good = r.good.as_mut().unwrap();
    good.content = good.content.replace("image: img", "image: \"\"");
    store.save(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;

    let mut h = start(&rt, clock, dir.path(), Some(Duration::from_secs(60)));
    h.set(&v2).await;
    let rec = h
        .until_record("stopped", |r| {
            r.rollout.as_ref().is_some_and(|s| s.state == "rolledBack")
        })
        .await;
    let ro = rec.rollout.unwrap();
    assert_eq!(ro.rolled_back_to, None);
    assert!(
        ro.message
            .as_deref()
            .unwrap()
            .contains("no longer validates"),
        "{ro:?}"
    );
    assert_eq!(rec.running, None);
    h.until("nothing runs", |v| v.is_empty()).await;
    // The failing version's containers are stopped.
    let running: Vec<_> = rt
        .containers()
        .into_iter()
        .filter(|c| c.state == staticlet_runtime::ContainerState::Running)
        .collect();
    assert!(running.is_empty(), "{running:?}");
    h.shutdown().await;
}
