//! Component tests: the merger and the pod manager against the fake runtime, with paused time.
//! The test plays the sources by sending snapshots.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use staticlet_agent::config::merge::{self, DesiredPods, Merger};
use staticlet_agent::config::{SourceKind, SourceSnapshot, SourceUpdate};
use staticlet_agent::control::{self, ControlError, ControlRequest, Verb};
use staticlet_agent::kuberuntime::NodeContext;
use staticlet_agent::nodeshutdown::{self, Group, ShutdownEvent, ShutdownPolicy};
use staticlet_agent::ordering;
use staticlet_agent::pod_workers::worker::WorkerCtx;
use staticlet_agent::pod_workers::{PodManager, PodsView, WorkerCounters};
use staticlet_manifest::{Origin, StaticPod};
use staticlet_runtime::fake::{Call, FakeRuntime, Run, Script};
use staticlet_runtime::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

struct Harness {
    tx: mpsc::Sender<SourceUpdate>,
    pods: watch::Receiver<Arc<PodsView>>,
    rt: FakeRuntime,
    stop: CancellationToken,
    /// `--root-dir`.
    root: std::path::PathBuf,
    /// Two cgroup hierarchies (a v1 controller and v2) the agent finds in its mount table.
    cgroups: [std::path::PathBuf; 2],
    /// The control verbs (the local API's `staticlet restart|stop|start pod`).
    control: mpsc::Sender<ControlRequest>,
    /// What the workers count for `/metrics`.
    counters: Arc<WorkerCounters>,
    _dir: tempfile::TempDir,
}

fn start(rt: &FakeRuntime, clock: Clock) -> Harness {
    start_with(rt, clock, None).0
}

/// [`start`], with graceful node shutdown under `policy`: the pod manager sees the desired pods
/// through the node shutdown filter, whose events go to the returned sender.
fn start_with(
    rt: &FakeRuntime,
    clock: Clock,
    policy: Option<ShutdownPolicy>,
) -> (Harness, Option<mpsc::Sender<ShutdownEvent>>) {
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
    // The agent's mount table names two directories of the test as cgroup hierarchies.
    let cgroups = [
        dir.path().join("cgroup/cpu"),
        dir.path().join("cgroup/unified"),
    ];
    let mountinfo = dir.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        format!(
            "32 31 0:29 / {} rw - cgroup cgroup rw,cpu\n41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            cgroups[0].display(),
            cgroups[1].display()
        ),
    )
    .unwrap();
    let counters = Arc::new(WorkerCounters::default());
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
        cgroup_mountinfo: Some(mountinfo),
        counters: counters.clone(),
    });
    let (pods_tx, pods) = watch::channel(Arc::new(PodsView::new()));
    let (desired_rx, events) = match policy {
        None => (desired_rx, None),
        Some(policy) => {
            let (events_tx, events_rx) = mpsc::channel(4);
            let (tx, rx) = watch::channel(desired_rx.borrow().clone());
            tokio::spawn(nodeshutdown::run(
                policy,
                events_rx,
                desired_rx,
                tx,
                pods.clone(),
                stop.clone(),
            ));
            (rx, Some(events_tx))
        }
    };
    let manager = PodManager::new(ctx, pods_tx);
    let (control, control_rx) = mpsc::channel(4);
    let (ctl_tx, ctl_rx) = watch::channel(desired_rx.borrow().clone());
    tokio::spawn(control::run(
        control::Stopped::open(&dir.path().join("root/control")),
        control_rx,
        desired_rx,
        ctl_tx,
        manager.requests(),
        stop.clone(),
    ));
    let (ord_tx, ord_rx) = watch::channel(ctl_rx.borrow().clone());
    tokio::spawn(ordering::run(ctl_rx, pods.clone(), ord_tx, stop.clone()));
    tokio::spawn(manager.run(ord_rx, stop.clone()));
    let h = Harness {
        tx,
        pods,
        rt: rt.clone(),
        stop,
        root: dir.path().join("root"),
        cgroups,
        control,
        counters,
        _dir: dir,
    };
    (h, events)
}

fn pod(name: &str, spec: &str) -> Arc<StaticPod> {
    annotated_pod(name, "", spec)
}

/// [`pod`] with `annotations` (YAML lines under `metadata.annotations`, indented by four).
fn annotated_pod(name: &str, annotations: &str, spec: &str) -> Arc<StaticPod> {
    let meta = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{meta}spec:\n{spec}");
    Arc::new(
        staticlet_manifest::load(m.as_bytes(), &Origin::File(format!("/m/{name}.yaml")), "n")
            .unwrap(),
    )
}

impl Harness {
    async fn set(&self, pods: Vec<Arc<StaticPod>>) {
        let snapshot = SourceSnapshot {
            pods,
            manifests: vec![],
        };
        self.tx
            .send(SourceUpdate {
                kind: SourceKind::File,
                snapshot,
            })
            .await
            .unwrap();
    }

    /// Waits (in paused time, up to an hour of it) until `pred` holds for the pods view.
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
            "timed out waiting for: {what}\ncalls: {:#?}",
            self.rt.calls()
        );
    }

    /// The pod's cgroup directory in each hierarchy.
    fn pod_cgroups(&self, uid: &str) -> Vec<std::path::PathBuf> {
        self.cgroups
            .iter()
            .map(|h| h.join(format!("staticlet/pod{uid}")))
            .collect()
    }

    /// Waits (in paused time, polling) until `pred` holds.
    async fn until_true(&self, what: &str, pred: impl Fn() -> bool) {
        let r = tokio::time::timeout(Duration::from_secs(3600), async {
            while !pred() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "timed out waiting for: {what}\ncalls: {:#?}",
            self.rt.calls()
        );
    }

    async fn until_calls(&self, what: &str, pred: impl Fn(&[(SystemTime, Call)]) -> bool) {
        let r = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                if pred(&self.rt.calls()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "timed out waiting for: {what}\ncalls: {:#?}",
            self.rt.calls()
        );
    }
}

fn starts(calls: &[(SystemTime, Call)], uid: &str, name: &str) -> Vec<SystemTime> {
    calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Start { uid: u, name: n, .. } if u == uid && n == name))
        .map(|(t, _)| *t)
        .collect()
}

fn phase(v: &PodsView, uid: &str) -> Option<String> {
    v.get(uid)?.status.phase.clone()
}

#[tokio::test(start_paused = true)]
async fn crash_loop_back_off_sequence() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("app", Script::exits(Duration::from_secs(1), 1));
    let mut h = start(&rt, clock);
    let p = pod("crash", "  containers:\n  - {name: app, image: busybox}\n");
    h.set(vec![p.clone()]).await;
    h.until_calls("7 starts", |c| starts(c, &p.uid, "app").len() >= 7)
        .await;
    let s = starts(&rt.calls(), &p.uid, "app");
    // Each run lasts 1 s; the delay before each restart is 0, 10, 20, 40, 80, 160 s.
    let delays: Vec<u64> = s
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap().as_secs() - 1)
        .collect();
    assert_eq!(delays, vec![0, 10, 20, 40, 80, 160]);
    h.until("CrashLoopBackOff status", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            let cs = &pv.status.container_statuses.as_ref().unwrap()[0];
            cs.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
                && cs.restart_count == 6
                && cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                    == Some(1)
        })
    })
    .await;
    h.stop.cancel();
}

/// `staticlet.io/backoff-*` annotations replace kubelet's 10 s -> 300 s for that pod only.
#[tokio::test(start_paused = true)]
async fn per_pod_back_off_from_annotations() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("app", Script::exits(Duration::from_secs(1), 1));
    rt.script("other", Script::exits(Duration::from_secs(1), 1));
    let h = start(&rt, clock);
    let quick = annotated_pod(
        "quick",
        "    staticlet.io/backoff-initial: 2s\n    staticlet.io/backoff-max: 8s\n",
        "  containers:\n  - {name: app, image: busybox}\n",
    );
    let plain = pod(
        "plain",
        "  containers:\n  - {name: other, image: busybox}\n",
    );
    h.set(vec![quick.clone(), plain.clone()]).await;
    h.until_calls("6 starts", |c| starts(c, &quick.uid, "app").len() >= 6)
        .await;
    let delays = |uid: &str, name: &str| -> Vec<u64> {
        starts(&rt.calls(), uid, name)
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap().as_secs() - 1)
            .collect()
    };
    assert_eq!(delays(&quick.uid, "app")[..5], [0, 2, 4, 8, 8]);
    // The other pod keeps kubelet's numbers: after 0 and 10 s, nothing for 20 s.
    assert_eq!(delays(&plain.uid, "other")[..2], [0, 10]);
    h.stop.cancel();
}

/// Graceful node shutdown: regular pods stop first within their group's period (or their own
/// shorter grace), critical pods after them, then the shutdown may proceed; a cancelled
/// shutdown starts the pods again.
#[tokio::test(start_paused = true)]
async fn node_shutdown_stops_pods_by_priority_then_lets_go() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    // Each container takes 3 s to stop after its signal.
    for c in ["web", "etcd", "quick"] {
        rt.script(c, Script::forever().on_signal(Some(Duration::from_secs(3))));
    }
    let policy = ShutdownPolicy::from_kubelet(
        Duration::from_secs(30),
        Duration::from_secs(10),
        &[] as &[Group],
    )
    .unwrap();
    let (mut h, events) = start_with(&rt, clock, Some(policy));
    let events = events.unwrap();
    let web = pod("web", "  containers:\n  - {name: web, image: b}\n");
    let quick = pod(
        "quick",
        "  terminationGracePeriodSeconds: 5\n  containers:\n  - {name: quick, image: b}\n",
    );
    let etcd = pod(
        "etcd",
        "  priorityClassName: system-node-critical\n  containers:\n  - {name: etcd, image: b}\n",
    );
    h.set(vec![web.clone(), quick.clone(), etcd.clone()]).await;
    h.until("all running", |v| {
        [&web, &quick, &etcd]
            .iter()
            .all(|p| phase(v, &p.uid).as_deref() == Some("Running"))
    })
    .await;

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let asked = clock.now();
    events
        .send(ShutdownEvent::Shutdown { done: done_tx })
        .await
        .unwrap();
    done_rx.await.unwrap();
    let released = clock.now();
    let calls = rt.calls();
    let stop_of = |uid: &str| {
        calls
            .iter()
            .find_map(|(t, c)| match c {
                Call::Stop {
                    uid: u, timeout, ..
                } if u == uid => Some((*t, *timeout)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{uid} was not stopped"))
    };
    let (web_at, web_grace) = stop_of(&web.uid);
    let (quick_at, quick_grace) = stop_of(&quick.uid);
    let (etcd_at, etcd_grace) = stop_of(&etcd.uid);
    // Regular pods: the group's 20 s, or the pod's own 5 s; critical: its group's 10 s.
    assert_eq!(web_grace, Duration::from_secs(20));
    assert_eq!(quick_grace, Duration::from_secs(5));
    assert_eq!(etcd_grace, Duration::from_secs(10));
    // The critical pod is stopped only once the regular ones are gone (3 s after their signal).
    assert!(web_at < etcd_at && quick_at < etcd_at, "{calls:#?}");
    assert!(etcd_at.duration_since(asked).unwrap() >= Duration::from_secs(3));
    // Everything stopped well before the 30 s the node waits at most.
    let took = released.duration_since(asked).unwrap();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(30),
        "{took:?}"
    );
    h.until("no pods", |v| v.is_empty()).await;

    // Cancelled: everything runs again.
    events.send(ShutdownEvent::Cancelled).await.unwrap();
    h.until("all running again", |v| {
        [&web, &quick, &etcd]
            .iter()
            .all(|p| phase(v, &p.uid).as_deref() == Some("Running"))
    })
    .await;
    h.stop.cancel();
}

/// A pod that does not stop within its group's period does not hold up the node's shutdown
/// beyond it.
#[tokio::test(start_paused = true)]
async fn node_shutdown_waits_no_longer_than_each_groups_period() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("stuck", Script::forever().on_signal(None));
    let policy = ShutdownPolicy::from_kubelet(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &[] as &[Group],
    )
    .unwrap();
    let (mut h, events) = start_with(&rt, clock, Some(policy));
    let events = events.unwrap();
    let stuck = pod(
        "stuck",
        "  terminationGracePeriodSeconds: 300\n  containers:\n  - {name: stuck, image: b}\n",
    );
    h.set(vec![stuck.clone()]).await;
    h.until("running", |v| {
        phase(v, &stuck.uid).as_deref() == Some("Running")
    })
    .await;
    // The runtime takes 10 minutes to stop it: only the group's period ends the wait.
    rt.delay(
        staticlet_runtime::fake::Op::StopContainer,
        Duration::from_secs(600),
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let asked = clock.now();
    events
        .send(ShutdownEvent::Shutdown { done: done_tx })
        .await
        .unwrap();
    done_rx.await.unwrap();
    let took = clock.now().duration_since(asked).unwrap();
    // Its group's 15 s (the critical group is empty: no wait for it).
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(17),
        "{took:?}"
    );
    h.stop.cancel();
}

/// Image garbage collection against the runtime: an image a container uses (even an exited
/// one) stays, an unused one goes when the disk is over the high threshold.
#[tokio::test(start_paused = true)]
async fn image_gc_removes_only_unused_images() {
    use staticlet_agent::image_gc::{DiskUsage, ImageGc, ImageGcPolicy};
    use staticlet_runtime::{ContainerRuntime, ImageSpec};
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("once", Script::exits(Duration::from_secs(1), 0));
    let mut h = start(&rt, clock);
    let web = pod("web", "  containers:\n  - {name: web, image: web:1}\n");
    let job = pod(
        "job",
        "  restartPolicy: Never\n  containers:\n  - {name: once, image: job:1}\n",
    );
    h.set(vec![web.clone(), job.clone()]).await;
    h.until("web running, job done", |v| {
        phase(v, &web.uid).as_deref() == Some("Running")
            && phase(v, &job.uid).as_deref() == Some("Succeeded")
    })
    .await;
    rt.pull_image(
        &ImageSpec {
            image: "old:1".into(),
        },
        None,
    )
    .await
    .unwrap();
    let full = DiskUsage {
        capacity: 100_000,
        available: 1_000,
    };
    let policy = ImageGcPolicy {
        min_age: Duration::ZERO,
        ..Default::default()
    };
    let mut gc = ImageGc::default();
    // While a wanted pod names it (not running now, e.g. backing off), it stays.
    let wanted = ["old:1".to_string()].into();
    let done = gc
        .collect(&rt, &wanted, full, &policy, clock.now())
        .await
        .unwrap();
    assert!(done.remove.is_empty(), "{done:?}");
    let done = gc
        .collect(&rt, &Default::default(), full, &policy, clock.now())
        .await
        .unwrap();
    assert_eq!(done.remove.len(), 1, "{done:?}");
    let left: Vec<String> = rt
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    assert!(left.contains(&"web:1".to_string()), "{left:?}");
    assert!(
        left.contains(&"job:1".to_string()),
        "an exited container keeps its image: {left:?}"
    );
    assert!(!left.contains(&"old:1".to_string()), "{left:?}");
    h.stop.cancel();
}

impl Harness {
    async fn verb(&self, verb: Verb, name: &str) -> Result<String, ControlError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control
            .send(ControlRequest {
                verb,
                namespace: "default".into(),
                name: name.into(),
                reply,
            })
            .await
            .unwrap();
        rx.await.unwrap()
    }
}

fn restarts(v: &PodsView, uid: &str) -> Option<i32> {
    Some(v.get(uid)?.status.container_statuses.as_ref()?[0].restart_count)
}

/// A dead sandbox is replaced and removed with its containers; the containers started in the
/// new one continue the attempt numbers (kubelet: restart count +1), never back to 0.
#[tokio::test(start_paused = true)]
async fn restart_count_survives_the_removal_of_a_dead_sandbox() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let p = pod("sb", "  containers:\n  - {name: app, image: busybox}\n");
    h.set(vec![p.clone()]).await;
    let running = |v: &PodsView, n: i32| {
        restarts(v, &p.uid) == Some(n)
            && v.get(&p.uid).is_some_and(|pv| {
                pv.status.container_statuses.as_ref().unwrap()[0]
                    .state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some())
            })
    };
    h.until("running", |v| running(v, 0)).await;
    for n in 1..=2 {
        let id = rt
            .containers()
            .into_iter()
            .find(|c| c.state == staticlet_runtime::ContainerState::Running);
        rt.crash(&id.unwrap().id, 1);
        h.until("restarted", |v| running(v, n)).await;
    }
    let sb = rt.sandboxes().into_iter().next().unwrap();
    rt.kill_sandbox(&sb.id);
    h.until("running in a new sandbox, restart count 3", |v| {
        running(v, 3)
    })
    .await;
    let sandboxes = rt.sandboxes();
    assert!(
        sandboxes.iter().all(|s| s.id != sb.id),
        "the dead sandbox is removed: {sandboxes:?}"
    );
    h.stop.cancel();
}

/// `staticlet stop|start|restart pod`: a stopped pod stays shown as Stopped (and stopped for a
/// later agent, from its record on disk) until started; a restart stops and starts the pod in
/// place (its restart count goes up); unknown pods and restarting a stopped pod are refused.
#[tokio::test(start_paused = true)]
async fn control_verbs_stop_start_and_restart_pods() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let a = pod("a", "  containers:\n  - {name: c, image: b}\n");
    let b = pod("b", "  containers:\n  - {name: c, image: b}\n");
    h.set(vec![a.clone(), b.clone()]).await;
    let running = |v: &PodsView, uid: &str| phase(v, uid).as_deref() == Some("Running");
    h.until("both running", |v| running(v, &a.uid) && running(v, &b.uid))
        .await;

    // Stop: by the manifest's name too (the API's is "a-n").
    assert_eq!(h.verb(Verb::Stop, "a").await.unwrap(), "pod a-n stopped");
    h.until("a shown as stopped", |v| {
        v.get(&a.uid).is_some_and(|p| {
            p.terminating_since.is_none() && p.status.reason.as_deref() == Some("Stopped")
        }) && running(v, &b.uid)
    })
    .await;
    assert!(
        rt.calls()
            .iter()
            .any(|(_, c)| matches!(c, Call::RemoveSandbox { uid } if *uid == a.uid)),
        "a's sandbox is gone"
    );
    assert!(matches!(
        h.verb(Verb::Restart, "a-n").await,
        Err(ControlError::Conflict(m)) if m.contains("is stopped")
    ));
    assert!(matches!(
        h.verb(Verb::Stop, "nope").await,
        Err(ControlError::NotFound { .. })
    ));
    // Recorded on disk for the next agent.
    let record = control::Stopped::open(&h.root.join("control"));
    assert!(record.is_stopped(&a) && !record.is_stopped(&b));

    assert_eq!(h.verb(Verb::Start, "a-n").await.unwrap(), "pod a-n started");
    h.until("a running again", |v| running(v, &a.uid)).await;
    assert!(!control::Stopped::open(&h.root.join("control")).is_stopped(&a));

    // Restart in place: same UID, restart count 1.
    assert_eq!(
        h.verb(Verb::Restart, "b-n").await.unwrap(),
        "pod b-n restarting"
    );
    h.until("b restarted", |v| {
        running(v, &b.uid) && restarts(v, &b.uid) == Some(1)
    })
    .await;

    // A stop ends when the manifest changes (another UID).
    h.verb(Verb::Stop, "a").await.unwrap();
    h.until("a stopped", |v| {
        v.get(&a.uid)
            .is_some_and(|p| p.status.reason.as_deref() == Some("Stopped"))
    })
    .await;
    let a2 = pod("a", "  containers:\n  - {name: c, image: other}\n");
    h.set(vec![a2.clone(), b.clone()]).await;
    h.until("the new a runs", |v| running(v, &a2.uid)).await;
    h.stop.cancel();
}

/// `staticlet.io/after`: the API server starts only once etcd is Ready; a pod naming an unknown
/// pod waits and says so.
#[tokio::test(start_paused = true)]
async fn after_annotation_orders_starts() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let spec = "  containers:\n  - name: c\n    image: b\n    readinessProbe:\n      exec: {command: [ready]}\n      periodSeconds: 1\n";
    let etcd = annotated_pod("etcd", "", spec);
    let api = annotated_pod("api", "    staticlet.io/after: etcd\n", spec);
    let lost = annotated_pod("lost", "    staticlet.io/after: nope\n", spec);
    // etcd's readiness probe fails until the test lets it pass.
    rt.exec_script("c", [], staticlet_runtime::fake::ExecReply::code(1));
    h.set(vec![etcd.clone(), api.clone(), lost.clone()]).await;
    let waiting = |v: &PodsView, uid: &str| {
        v.get(uid).and_then(|p| {
            let w = p.status.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .clone()?;
            (w.reason.as_deref() == Some("WaitingForDependency"))
                .then(|| w.message.unwrap_or_default())
        })
    };
    h.until("etcd running, the others waiting", |v| {
        phase(v, &etcd.uid).as_deref() == Some("Running")
            && waiting(v, &api.uid).is_some_and(|m| m.contains("waiting for etcd"))
            && waiting(v, &lost.uid)
                .is_some_and(|m| m.contains("no static pod") && m.contains("nope"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        starts(&rt.calls(), &api.uid, "c").is_empty(),
        "api waits while etcd is not Ready"
    );
    rt.exec_script("c", [], staticlet_runtime::fake::ExecReply::code(0));
    h.until("api running once etcd is Ready", |v| {
        phase(v, &api.uid).as_deref() == Some("Running")
    })
    .await;
    assert!(starts(&rt.calls(), &lost.uid, "c").is_empty());
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn init_sidecar_order_and_termination_order() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("init1", Script::exits(Duration::from_secs(2), 0));
    rt.script("init2", Script::exits(Duration::from_secs(2), 0));
    rt.script(
        "side",
        Script::forever().on_signal(Some(Duration::from_secs(1))),
    );
    rt.script(
        "app",
        Script::forever().on_signal(Some(Duration::from_secs(3))),
    );
    let mut h = start(&rt, clock);
    let p = pod("ordered", "  terminationGracePeriodSeconds: 20\n  initContainers:\n  - {name: init1, image: b}\n  - {name: side, image: b, restartPolicy: Always}\n  - {name: init2, image: b}\n  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    let order: Vec<String> = rt
        .calls()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Call::Start { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["init1", "side", "init2", "app"]);

    h.set(vec![]).await;
    h.until("pod gone", |v| v.is_empty()).await;
    let stops: Vec<(SystemTime, String, Duration)> = rt
        .calls()
        .into_iter()
        .filter_map(|(t, c)| match c {
            Call::Stop { name, timeout, .. } => Some((t, name, timeout)),
            _ => None,
        })
        .collect();
    let app = stops.iter().find(|s| s.1 == "app").unwrap();
    let side = stops.iter().find(|s| s.1 == "side").unwrap();
    assert_eq!(
        app.2,
        Duration::from_secs(20),
        "the app gets the whole grace period"
    );
    assert!(
        side.0 >= app.0 + Duration::from_secs(3),
        "the sidecar stops after the app has exited"
    );
    assert_eq!(
        side.2,
        Duration::from_secs(17),
        "what is left of the grace period"
    );
    assert!(
        rt.containers().is_empty() && rt.sandboxes().is_empty(),
        "everything removed"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn update_stops_old_pod_completely_before_new_starts_and_skips_unstarted_versions() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    // The old container ignores SIGTERM: it dies only at the end of its 5 s grace period.
    rt.script("app", Script::forever().on_signal(None));
    let mut h = start(&rt, clock);
    let v1 = pod(
        "web",
        "  terminationGracePeriodSeconds: 5\n  containers:\n  - {name: app, image: img:1}\n",
    );
    let v2 = pod("web", "  containers:\n  - {name: app, image: img:2}\n");
    let v3 = pod("web", "  containers:\n  - {name: app, image: img:3}\n");
    h.set(vec![v1.clone()]).await;
    h.until("v1 running", |v| {
        phase(v, &v1.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![v2.clone()]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.set(vec![v3.clone()]).await;
    h.until("v3 running", |v| {
        phase(v, &v3.uid).as_deref() == Some("Running") && v.len() == 1
    })
    .await;
    let calls = rt.calls();
    let removed_v1 = calls
        .iter()
        .find(|(_, c)| matches!(c, Call::RemoveSandbox { uid } if *uid == v1.uid))
        .map(|(t, _)| *t)
        .expect("v1 cleaned up");
    let v3_sandbox = calls
        .iter()
        .find(|(_, c)| matches!(c, Call::RunSandbox { uid, .. } if *uid == v3.uid))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(
        v3_sandbox >= removed_v1,
        "new pod starts only after the old one is gone"
    );
    let v1_stop = calls
        .iter()
        .find(|(_, c)| matches!(c, Call::Stop { uid, .. } if *uid == v1.uid))
        .unwrap()
        .0;
    assert!(
        removed_v1 >= v1_stop + Duration::from_secs(5),
        "the old pod had its whole grace period"
    );
    assert!(
        !calls
            .iter()
            .any(|(_, c)| matches!(c, Call::RunSandbox { uid, .. } if *uid == v2.uid)),
        "a version that never started is skipped"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn agent_restart_adopts_running_containers_and_stops_orphans() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let keep = pod("keep", "  containers:\n  - {name: app, image: b}\n");
    let gone = pod(
        "gone",
        "  terminationGracePeriodSeconds: 30\n  containers:\n  - {name: app, image: b}\n",
    );
    let mut h = start(&rt, clock);
    h.set(vec![keep.clone(), gone.clone()]).await;
    h.until("both running", |v| {
        phase(v, &keep.uid).as_deref() == Some("Running")
            && phase(v, &gone.uid).as_deref() == Some("Running")
    })
    .await;
    h.stop.cancel();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = rt.calls().len();

    // A new agent: `gone`'s manifest was deleted while it was down.
    let mut h2 = start(&rt, clock);
    h2.set(vec![keep.clone()]).await;
    h2.until("keep adopted, orphan removed", |v| {
        v.len() == 1 && phase(v, &keep.uid).as_deref() == Some("Running")
    })
    .await;
    h2.until_calls("orphan removed", |c| {
        c.iter()
            .any(|(_, c)| matches!(c, Call::RemoveSandbox { uid } if *uid == gone.uid))
    })
    .await;
    let after = &rt.calls()[before..];
    assert!(
        !after.iter().any(|(_, c)| matches!(c, Call::Start { uid, .. } | Call::RunSandbox { uid, .. } if *uid == keep.uid)),
        "no restart of the adopted pod: {after:#?}"
    );
    let orphan_stop = after.iter().find_map(|(_, c)| match c {
        Call::Stop { uid, timeout, .. } if *uid == gone.uid => Some(*timeout),
        _ => None,
    });
    assert_eq!(
        orphan_stop,
        Some(Duration::from_secs(2)),
        "orphans get grace 1 s (2 s minimum)"
    );
    let st = &h2.pods.borrow()[&keep.uid].status;
    assert_eq!(st.container_statuses.as_ref().unwrap()[0].restart_count, 0);
    h2.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn same_uid_back_while_terminating_restarts_with_restart_count_one() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script(
        "app",
        Script::forever().on_signal(Some(Duration::from_secs(3))),
    );
    let mut h = start(&rt, clock);
    let p = pod("m4", "  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![]).await;
    h.until("terminating", |v| {
        v.get(&p.uid)
            .is_some_and(|pv| pv.terminating_since.is_some())
    })
    .await;
    h.set(vec![p.clone()]).await;
    h.until("running again with restartCount 1", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.terminating_since.is_none()
                && pv.status.container_statuses.as_ref().is_some_and(|cs| {
                    cs[0].restart_count == 1
                        && cs[0].state.as_ref().is_some_and(|s| s.running.is_some())
                })
        })
    })
    .await;
    h.stop.cancel();
}

/// A manifest moved out of the directory and back at once (`kubeadm upgrade` backs up a
/// manifest and puts it back this way): the file source sends the pod's removal and its
/// return back to back, which the pod manager may only see as "still wanted"; the pod is
/// restarted all the same, as kubelet restarts a static pod on a REMOVE then ADD of its UID.
#[tokio::test(start_paused = true)]
async fn same_uid_removed_and_added_back_at_once_restarts_like_kubelet() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("app", Script::forever());
    let mut h = start(&rt, clock);
    let p = pod("m5", "  containers:\n  - {name: app, image: b}\n");
    let other = pod("m6", "  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone(), other.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
            && phase(v, &other.uid).as_deref() == Some("Running")
    })
    .await;
    // Both snapshots are queued before the merger runs (a send to a channel with room does
    // not yield), so the filters after it and the manager see only the second state.
    h.set(vec![other.clone()]).await;
    h.set(vec![p.clone(), other.clone()]).await;
    h.until("running again with restartCount 1", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.terminating_since.is_none()
                && pv.status.container_statuses.as_ref().is_some_and(|cs| {
                    cs[0].restart_count == 1
                        && cs[0].state.as_ref().is_some_and(|s| s.running.is_some())
                })
        })
    })
    .await;
    let v = h.pods.borrow().clone();
    assert!(
        has_event(
            &v,
            &p.uid,
            "Killing",
            "Stopping the pod to restart it (its manifest was removed and added again)"
        ),
        "{:?}",
        v[&p.uid].events
    );
    // The pod that stayed was not touched.
    let st = &v[&other.uid].status;
    assert_eq!(st.container_statuses.as_ref().unwrap()[0].restart_count, 0);
    h.stop.cancel();
}

/// A probe attempt in flight (up to its timeout: kube-apiserver's readiness probe has 15 s)
/// does not hold up the pod's termination: kubelet's probe workers never block its pod
/// worker. Here the attempt would take 20 s; the pod starts terminating at once.
#[tokio::test(start_paused = true)]
async fn a_slow_probe_does_not_delay_termination() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.script("app", Script::forever());
    rt.exec_script_for_command(
        "app",
        "check",
        [ExecReply::Exit {
            code: 0,
            stdout: String::new(),
        }],
        ExecReply::Slow {
            after: Duration::from_secs(20),
            code: 0,
        },
    );
    let mut h = start(&rt, clock);
    let p = pod(
        "slowprobe",
        "  containers:\n  - name: app\n    image: b\n    readinessProbe:\n      exec: {command: [check]}\n      periodSeconds: 1\n      timeoutSeconds: 30\n",
    );
    h.set(vec![p.clone()]).await;
    h.until("Ready", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.status
                .container_statuses
                .as_ref()
                .is_some_and(|cs| cs[0].ready)
        })
    })
    .await;
    // The next attempt starts a second later and would answer 20 s after that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = clock.now();
    h.set(vec![]).await;
    h.until_calls("the container stopped", |c| {
        c.iter().any(|(_, c)| matches!(c, Call::Stop { .. }))
    })
    .await;
    let stopped = rt
        .calls()
        .into_iter()
        .find(|(_, c)| matches!(c, Call::Stop { .. }))
        .map(|(t, _)| t)
        .unwrap();
    let after = stopped.duration_since(asked).unwrap();
    assert!(
        after < Duration::from_secs(2),
        "the container was stopped {after:?} after the pod was removed"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn image_pull_errors_back_off() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.pull_error("bad:1", Some("manifest unknown"));
    let mut h = start(&rt, clock);
    let p = pod("pull", "  containers:\n  - {name: app, image: 'bad:1'}\n");
    h.set(vec![p.clone()]).await;
    let reason = |v: &PodsView| {
        v.get(&p.uid).and_then(|pv| {
            pv.status.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .as_ref()?
                .reason
                .clone()
        })
    };
    h.until("ErrImagePull or ImagePullBackOff", |v| {
        reason(v).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    h.until_calls("3 pulls", |c| {
        c.iter()
            .filter(|(_, c)| matches!(c, Call::PullImage { .. }))
            .count()
            >= 3
    })
    .await;
    let pulls: Vec<SystemTime> = rt
        .calls()
        .into_iter()
        .filter(|(_, c)| matches!(c, Call::PullImage { .. }))
        .map(|(t, _)| t)
        .collect();
    let gaps: Vec<u64> = pulls
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap().as_secs())
        .collect();
    assert_eq!(gaps, vec![10, 20]);
    rt.pull_error("bad:1", None);
    h.until("running once the registry answers", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    let _ = Run::Forever;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn sandbox_failure_is_shown_and_retried() {
    use staticlet_runtime::fake::Op;
    use staticlet_runtime::RuntimeError;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    // Two failures: the status showing the first is published by the sync that makes the
    // second attempt, and stays while that one backs off (with one failure, the retry that
    // succeeds could replace it before the test task runs).
    for _ in 0..2 {
        rt.fail_next(
            Op::RunSandbox,
            RuntimeError::Unavailable("NetworkNotReady: no CNI configuration".into()),
        );
    }
    let mut h = start(&rt, clock);
    let p = pod("net", "  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone()]).await;
    h.until("sandbox error in status", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            let w = pv
                .status
                .container_statuses
                .as_ref()
                .and_then(|cs| cs[0].state.clone())
                .and_then(|s| s.waiting);
            w.is_some_and(|w| {
                w.reason.as_deref() == Some("ContainerCreating")
                    && w.message.as_deref().is_some_and(|m| {
                        m.contains("failed to create pod sandbox") && m.contains("NetworkNotReady")
                    })
            })
        })
    })
    .await;
    h.until("running after the retry", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn failing_liveness_probe_restarts_the_container() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    // Healthy twice, then failing for good.
    rt.exec_script(
        "app",
        [ExecReply::code(0), ExecReply::code(0)],
        ExecReply::code(1),
    );
    let h = start(&rt, clock);
    let p = pod(
        "live",
        "  containers:\n  - name: app\n    image: b\n    livenessProbe:\n      exec: {command: [check]}\n      periodSeconds: 5\n      failureThreshold: 2\n",
    );
    h.set(vec![p.clone()]).await;
    h.until_calls("restarted after the liveness failures", |c| {
        starts(c, &p.uid, "app").len() >= 2
    })
    .await;
    let calls = rt.calls();
    let s = starts(&calls, &p.uid, "app");
    // Probes at +0, +5 (ok), +10, +15 (fail, threshold 2) → killed at +15, restarted at once
    // (the first restart has no back-off).
    let gap = s[1].duration_since(s[0]).unwrap().as_secs();
    assert!((15..=17).contains(&gap), "restart {gap}s after start");
    assert!(calls
        .iter()
        .any(|(_, c)| matches!(c, Call::Stop { uid, .. } if *uid == p.uid)));
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn readiness_probe_drives_ready_condition() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script(
        "app",
        [ExecReply::code(1), ExecReply::code(0)],
        ExecReply::code(0),
    );
    let mut h = start(&rt, clock);
    let p = pod(
        "ready",
        "  containers:\n  - name: app\n    image: b\n    readinessProbe:\n      exec: {command: [check]}\n      periodSeconds: 3\n",
    );
    let ready = |v: &PodsView| {
        v.get(&p.uid).and_then(|pv| {
            let c = pv
                .status
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?;
            Some(c.status.clone())
        })
    };
    h.set(vec![p.clone()]).await;
    h.until("running but not ready", |v| {
        phase(v, &p.uid).as_deref() == Some("Running") && ready(v).as_deref() == Some("False")
    })
    .await;
    h.until("ready once the probe passes", |v| {
        ready(v).as_deref() == Some("True")
    })
    .await;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn pre_stop_runs_before_the_stop_signal_and_uses_up_grace() {
    use staticlet_runtime::fake::Op;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.delay(Op::Exec, Duration::from_secs(3));
    let mut h = start(&rt, clock);
    let p = pod(
        "hooks",
        "  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: b\n    lifecycle:\n      preStop:\n        exec: {command: [drain]}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![]).await;
    h.until("gone", |v| v.is_empty()).await;
    let calls = rt.calls();
    let exec = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::Exec { name, .. } if name == "app"))
        .expect("preStop ran");
    let (stop_index, timeout) = calls
        .iter()
        .enumerate()
        .find_map(|(i, (_, c))| match c {
            Call::Stop { name, timeout, .. } if name == "app" => Some((i, *timeout)),
            _ => None,
        })
        .unwrap();
    assert!(stop_index > exec, "preStop before the stop");
    assert_eq!(
        timeout,
        Duration::from_secs(7),
        "the hook's 3 s came out of the 10 s grace period"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn failing_pre_stop_is_an_event_and_the_stop_goes_on() {
    use staticlet_runtime::fake::{ExecReply, Script};
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script("app", [ExecReply::code(1)], ExecReply::code(1));
    rt.script(
        "app",
        Script::forever().on_signal(Some(Duration::from_secs(2))),
    );
    let mut h = start(&rt, clock);
    let p = pod(
        "hooks",
        "  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: b\n    lifecycle:\n      preStop:\n        exec: {command: [drain]}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![]).await;
    h.until("FailedPreStopHook recorded while terminating", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.events.iter().any(|e| {
                e.reason == "FailedPreStopHook"
                    && e.type_ == "Warning"
                    && e.message == "PreStopHook failed"
            })
        })
    })
    .await;
    h.until("gone", |v| v.is_empty()).await;
    assert!(
        rt.calls()
            .iter()
            .any(|(_, c)| matches!(c, Call::Stop { name, .. } if name == "app")),
        "the container is stopped anyway"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn failing_post_start_kills_the_container() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script("app", [ExecReply::code(1)], ExecReply::code(0));
    let h = start(&rt, clock);
    let p = pod(
        "post",
        "  containers:\n  - name: app\n    image: b\n    lifecycle:\n      postStart:\n        exec: {command: [setup]}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until_calls("killed after the failed hook, then restarted", |c| {
        starts(c, &p.uid, "app").len() >= 2
    })
    .await;
    let calls = rt.calls();
    let first_stop = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::Stop { name, attempt: 0, .. } if name == "app"));
    let second_start = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::Start { name, attempt: 1, .. } if name == "app"));
    assert!(
        first_stop.is_some() && first_stop < second_start,
        "{calls:#?}"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn active_deadline_fails_the_pod() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let p = pod(
        "deadline",
        "  activeDeadlineSeconds: 30\n  containers:\n  - {name: app, image: b}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.until("failed with DeadlineExceeded", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.status.phase.as_deref() == Some("Failed")
                && pv.status.reason.as_deref() == Some("DeadlineExceeded")
        })
    })
    .await;
    let calls = rt.calls();
    let (start, stop) = (
        calls
            .iter()
            .find(|(_, c)| matches!(c, Call::Start { .. }))
            .unwrap()
            .0,
        calls
            .iter()
            .find(|(_, c)| matches!(c, Call::Stop { .. }))
            .expect("container killed")
            .0,
    );
    let after = stop.duration_since(start).unwrap().as_secs();
    assert!((30..=32).contains(&after), "killed {after}s after start");
    // Never restarted.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(starts(&rt.calls(), &p.uid, "app").len(), 1);
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn ready_turns_false_during_termination_while_readiness_keeps_probing() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    // Ready for the first probes, failing afterwards (the app removes its ready file on SIGTERM).
    rt.exec_script(
        "app",
        (0..4).map(|_| ExecReply::code(0)),
        ExecReply::code(1),
    );
    // Takes 15 s to exit after SIGTERM.
    rt.script(
        "app",
        Script::forever().on_signal(Some(Duration::from_secs(15))),
    );
    let mut h = start(&rt, clock);
    let p = pod(
        "r1",
        "  terminationGracePeriodSeconds: 30\n  containers:\n  - name: app\n    image: b\n    readinessProbe:\n      exec: {command: [cat, /tmp/ready]}\n      periodSeconds: 2\n      failureThreshold: 1\n",
    );
    let ready = |v: &PodsView| {
        v.get(&p.uid).and_then(|pv| {
            pv.status
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status.clone())
        })
    };
    h.set(vec![p.clone()]).await;
    h.until("ready", |v| ready(v).as_deref() == Some("True"))
        .await;
    h.set(vec![]).await;
    h.until("Ready False while still terminating", |v| {
        v.get(&p.uid)
            .is_some_and(|pv| pv.terminating_since.is_some())
            && ready(v).as_deref() == Some("False")
            && v[&p.uid]
                .status
                .container_statuses
                .as_ref()
                .is_some_and(|cs| cs[0].state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await;
    h.until("gone", |v| v.is_empty()).await;
    h.stop.cancel();
}

/// Steady pods with a probe every second: the probes run on time, but the runtime is listed by
/// the manager's shared relist (once per period) and by each worker's rare resync only, not by
/// every worker every second.
#[tokio::test(start_paused = true)]
async fn steady_probed_pods_share_one_relist() {
    const PODS: u64 = 20;
    const SECONDS: u64 = 30;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let pods: Vec<_> = (0..PODS)
        .map(|i| {
            pod(
                &format!("p{i}"),
                "  containers:\n  - name: app\n    image: b\n    readinessProbe:\n      exec: {command: [check]}\n      periodSeconds: 1\n",
            )
        })
        .collect();
    h.set(pods.clone()).await;
    h.until("all running and ready", |v| {
        pods.iter().all(|p| {
            v.get(&p.uid).is_some_and(|pv| {
                pv.status.phase.as_deref() == Some("Running")
                    && pv.status.container_statuses.as_ref().unwrap()[0].ready
            })
        })
    })
    .await;
    let execs = |c: &[(SystemTime, Call)]| {
        c.iter()
            .filter(|(_, c)| matches!(c, Call::Exec { .. }))
            .count() as u64
    };
    let (lists0, execs0) = (rt.container_lists(), execs(&rt.calls()));
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let lists = rt.container_lists() - lists0;
    let probes = execs(&rt.calls()) - execs0;
    assert!(
        probes >= PODS * (SECONDS - 2),
        "every pod probed about every second: {probes} probes in {SECONDS} s"
    );
    // One relist per second plus one resync per pod every 10 s (and a little slack); a list per
    // pod per second would be 600.
    let bound = SECONDS + PODS * (SECONDS / 10 + 1) + 5;
    assert!(
        lists <= bound,
        "{lists} container lists in {SECONDS} s (bound {bound})"
    );
    h.stop.cancel();
}

/// A pod whose container `app` exits 1 after `runs` on `rt`: the time from its start to its
/// first restart (which has no back-off), and the harness (still running) to look at after.
async fn first_restart_gap(rt: FakeRuntime, clock: Clock, runs: Duration) -> (Duration, Harness) {
    rt.script("app", Script::exits(runs, 1));
    let h = start(&rt, clock);
    let p = pod(
        "crashes",
        "  containers:\n  - {name: app, image: busybox}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until_calls("restarted once", |c| starts(c, &p.uid, "app").len() >= 2)
        .await;
    let s = starts(&rt.calls(), &p.uid, "app");
    (s[1].duration_since(s[0]).unwrap(), h)
}

fn exits_found_by_relist(h: &Harness) -> u64 {
    h.counters
        .relist_found_exits
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Without runtime events, a container's exit is seen by the manager's relist within about a
/// relist period (not only at the worker's 10 s resync), and the container restarted; the exit
/// is counted as found by the relist (`/metrics`).
#[tokio::test(start_paused = true)]
async fn exit_without_runtime_events_is_noticed_by_the_relist() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock).without_events();
    let (gap, h) = first_restart_gap(rt, clock, Duration::from_secs(5)).await;
    assert!(
        gap >= Duration::from_secs(5) && gap <= Duration::from_millis(6500),
        "restart {gap:?} after the start"
    );
    assert_eq!(exits_found_by_relist(&h), 1);
    h.stop.cancel();
}

/// With runtime events, the exit wakes the worker at once (restarted at the exit, not at the
/// next relist), and the relist that follows finds nothing new: no exit is counted as found by
/// it.
#[tokio::test(start_paused = true)]
async fn exit_with_runtime_events_is_restarted_at_once_and_not_counted() {
    let clock = Clock::new();
    // Exits between two relists (they tick on whole seconds).
    let (gap, h) =
        first_restart_gap(FakeRuntime::new(clock), clock, Duration::from_millis(5500)).await;
    assert!(
        gap >= Duration::from_millis(5500) && gap < Duration::from_millis(5600),
        "restart {gap:?} after the start"
    );
    // Past the next relists.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(exits_found_by_relist(&h), 0);
    h.stop.cancel();
}

/// A pod start lists the pod once: what the worker creates (the sandbox, then each container)
/// is read back by id and planned on at once, as kubelet's SyncPod does; the runtime's events
/// echoing those creates and starts wake no new sync.
#[tokio::test(start_paused = true)]
async fn a_pod_start_lists_the_runtime_once() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    // Between two of the manager's relists.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = pod(
        "p",
        "  containers:\n  - {name: a, image: b}\n  - {name: c, image: b}\n",
    );
    let lists0 = rt.container_lists();
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.status.phase.as_deref() == Some("Running")
                && pv
                    .status
                    .container_statuses
                    .iter()
                    .flatten()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
    })
    .await;
    assert_eq!(rt.container_lists() - lists0, 1, "{:#?}", rt.calls());
    // Still nothing more once the echoes of the start are in.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rt.container_lists() - lists0, 1);
    h.stop.cancel();
}

/// The agent removes a pod's cgroup in every hierarchy once its sandboxes are gone, then its
/// directory; a running pod's is left alone; after a restart, what an earlier run left of a pod
/// (its directory and cgroup, nothing in the runtime) is cleaned up too.
#[tokio::test(start_paused = true)]
async fn pod_cgroup_and_directory_go_with_the_pod_also_after_a_restart() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    // An earlier run was killed after removing this pod's sandbox, before its cgroup.
    let left = "0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(h.root.join("pods").join(left).join("volumes")).unwrap();
    for d in h.pod_cgroups(left) {
        std::fs::create_dir_all(d).unwrap();
    }
    let p = pod("web", "  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    assert!(
        h.root.join("pods").join(&p.uid).is_dir(),
        "the pod's directory exists once its sandbox does"
    );
    // The runtime made the pod's cgroup (the fake makes none: the test plays containerd).
    for d in h.pod_cgroups(&p.uid) {
        std::fs::create_dir_all(d).unwrap();
    }
    h.until_true("the leftover pod's cgroup and directory removed", || {
        !h.root.join("pods").join(left).exists() && h.pod_cgroups(left).iter().all(|d| !d.exists())
    })
    .await;
    assert!(
        h.pod_cgroups(&p.uid).iter().all(|d| d.is_dir()),
        "a running pod's cgroup is left alone"
    );

    h.set(vec![]).await;
    h.until_calls("sandbox removed", |c| {
        c.iter()
            .any(|(_, c)| matches!(c, Call::RemoveSandbox { uid } if *uid == p.uid))
    })
    .await;
    h.until_true("the pod's cgroup and directory removed", || {
        !h.root.join("pods").join(&p.uid).exists()
            && h.pod_cgroups(&p.uid).iter().all(|d| !d.exists())
    })
    .await;
    // Only the pods' own cgroups went, never their parent.
    assert!(h.cgroups.iter().all(|c| c.join("staticlet").is_dir()));
    h.stop.cancel();
}

/// A pod cgroup that cannot be removed (still busy: here a child cgroup in one hierarchy that
/// refuses `rmdir`) keeps the pod's directory, so the agent's next start tries again (the sweep
/// of the test above); the cgroups of the other hierarchies go, with an empty child cgroup a
/// runtime left behind (containerd killed while creating a container leaves one).
#[tokio::test(start_paused = true)]
async fn a_busy_pod_cgroup_keeps_the_pod_directory_for_the_next_start() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    let mut h = start(&rt, clock);
    let p = pod("web", "  containers:\n  - {name: app, image: b}\n");
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    let cgroups = h.pod_cgroups(&p.uid);
    for d in &cgroups {
        std::fs::create_dir_all(d).unwrap();
    }
    // Something still holds the first hierarchy's pod cgroup (a file: `rmdir` refuses it, as a
    // cgroup that cannot be emptied refuses it).
    std::fs::create_dir_all(cgroups[0].join("stray")).unwrap();
    std::fs::write(cgroups[0].join("stray/busy"), "").unwrap();
    std::fs::create_dir_all(cgroups[1].join("left-by-a-runtime/deeper")).unwrap();
    h.set(vec![]).await;
    h.until("pod gone", |v| v.is_empty()).await;
    assert!(cgroups[0].join("stray").is_dir());
    assert!(cgroups[1..].iter().all(|d| !d.exists()), "{cgroups:?}");
    assert!(
        h.root.join("pods").join(&p.uid).is_dir(),
        "the pod's directory is kept for the next start"
    );
    h.stop.cancel();
}

// --- The kill sequence (kubelet's killContainer) on every path that stops a container ---

/// A container's kill: when its preStop hook (the command `drain`) was called, when the
/// runtime was told to stop it, and with what timeout. Panics unless the hook came first.
fn kill_of(
    calls: &[(SystemTime, Call)],
    uid: &str,
    name: &str,
) -> (SystemTime, SystemTime, Duration) {
    let (hook_at, hook) = calls
        .iter()
        .enumerate()
        .find_map(|(i, (t, c))| match c {
            Call::Exec {
                uid: u,
                name: n,
                cmd,
            } if u == uid && n == name && cmd[0] == "drain" => Some((*t, i)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no preStop hook of {name} in {calls:#?}"));
    let (stop_at, stop, timeout) = calls
        .iter()
        .enumerate()
        .find_map(|(i, (t, c))| match c {
            Call::Stop {
                uid: u,
                name: n,
                timeout,
                ..
            } if u == uid && n == name => Some((*t, i, *timeout)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} never stopped: {calls:#?}"));
    assert!(
        hook < stop,
        "preStop hook before the stop signal: {calls:#?}"
    );
    (hook_at, stop_at, timeout)
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap().as_secs_f64()
}

fn has_event(v: &PodsView, uid: &str, reason: &str, message: &str) -> bool {
    v.get(uid).is_some_and(|pv| {
        pv.events
            .iter()
            .any(|e| e.reason == reason && e.message == message)
    })
}

/// A preStop hook (`drain`) that takes 3 s.
fn slow_drain(rt: &FakeRuntime, container: &str) {
    use staticlet_runtime::fake::ExecReply;
    let slow = ExecReply::Slow {
        after: Duration::from_secs(3),
        code: 0,
    };
    rt.exec_script_for_command(container, "drain", [], slow);
}

const DRAIN: &str = "    lifecycle:\n      preStop:\n        exec: {command: [drain]}\n";

/// A liveness or startup kill (`probe` is `livenessProbe` or `startupProbe`, its `check`
/// answering `first` then failing): the preStop hook (3 s) runs first, the stop gets the probe's
/// grace period (`probe_grace`) less the hook's time, and the `Killing` event says which probe.
async fn probe_kill_runs_pre_stop(
    probe: &str,
    first: Vec<staticlet_runtime::fake::ExecReply>,
    probe_grace: u64,
    message: &str,
) {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script_for_command("app", "check", first, ExecReply::code(1));
    slow_drain(&rt, "app");
    let mut h = start(&rt, clock);
    let p = pod(
        "probed",
        &format!("  terminationGracePeriodSeconds: 20\n  containers:\n  - name: app\n    image: b\n    {probe}:\n      exec: {{command: [check]}}\n      periodSeconds: 5\n      failureThreshold: 1\n      terminationGracePeriodSeconds: {probe_grace}\n{DRAIN}"),
    );
    h.set(vec![p.clone()]).await;
    h.until_calls("restarted after the probe failure", |c| {
        starts(c, &p.uid, "app").len() >= 2
    })
    .await;
    let (hook, stop, timeout) = kill_of(&rt.calls(), &p.uid, "app");
    assert_eq!(secs(hook, stop), 3.0, "the stop waits for the hook");
    assert_eq!(
        timeout,
        Duration::from_secs(probe_grace - 3),
        "the probe's grace period (not the pod's 20 s), less the hook's 3 s"
    );
    h.until("Killing event with kubelet's message", |v| {
        has_event(v, &p.uid, "Killing", message)
    })
    .await;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn liveness_kill_runs_pre_stop_within_the_probe_grace_period() {
    probe_kill_runs_pre_stop(
        "livenessProbe",
        vec![staticlet_runtime::fake::ExecReply::code(0)],
        8,
        "Container app failed liveness probe, will be restarted",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn startup_kill_runs_pre_stop_within_the_probe_grace_period() {
    probe_kill_runs_pre_stop(
        "startupProbe",
        vec![],
        6,
        "Container app failed startup probe, will be restarted",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn deadline_kill_runs_pre_stop_within_the_pod_grace_period() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    slow_drain(&rt, "app");
    let mut h = start(&rt, clock);
    let p = pod(
        "deadline",
        &format!("  activeDeadlineSeconds: 10\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: b\n{DRAIN}"),
    );
    h.set(vec![p.clone()]).await;
    h.until("failed with DeadlineExceeded", |v| {
        v.get(&p.uid).is_some_and(|pv| {
            pv.status.reason.as_deref() == Some("DeadlineExceeded")
                && pv.status.container_statuses.as_ref().is_some_and(|cs| {
                    cs.iter()
                        .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
                })
        })
    })
    .await;
    let calls = rt.calls();
    let (hook, stop, timeout) = kill_of(&calls, &p.uid, "app");
    let started = starts(&calls, &p.uid, "app")[0];
    assert!(
        (10.0..=12.0).contains(&secs(started, hook)),
        "hook at the deadline"
    );
    assert_eq!(secs(hook, stop), 3.0);
    assert_eq!(timeout, Duration::from_secs(7));
    h.until("Killing event", |v| {
        has_event(v, &p.uid, "Killing", "Stopping container app")
    })
    .await;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_edited_manifest_stops_the_old_pod_through_its_pre_stop_hook() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    slow_drain(&rt, "app");
    let mut h = start(&rt, clock);
    let spec = format!(
        "  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: b\n{DRAIN}"
    );
    let old = pod("edited", &spec);
    let new = pod("edited", &spec.replace("image: b", "image: c"));
    assert_ne!(old.uid, new.uid);
    h.set(vec![old.clone()]).await;
    h.until("old running", |v| {
        phase(v, &old.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![new.clone()]).await;
    h.until("new running", |v| {
        phase(v, &new.uid).as_deref() == Some("Running")
    })
    .await;
    let calls = rt.calls();
    let (hook, stop, timeout) = kill_of(&calls, &old.uid, "app");
    assert_eq!(secs(hook, stop), 3.0);
    assert_eq!(timeout, Duration::from_secs(7));
    assert!(
        starts(&calls, &new.uid, "app")[0] >= stop,
        "old stopped before new started"
    );
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_start_hook_kills_through_the_pre_stop_hook() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script_for_command("app", "setup", [ExecReply::code(1)], ExecReply::code(0));
    slow_drain(&rt, "app");
    let mut h = start(&rt, clock);
    let p = pod(
        "post",
        "  containers:\n  - name: app\n    image: b\n    lifecycle:\n      postStart:\n        exec: {command: [setup]}\n      preStop:\n        exec: {command: [drain]}\n",
    );
    h.set(vec![p.clone()]).await;
    h.until_calls("restarted", |c| starts(c, &p.uid, "app").len() >= 2)
        .await;
    let (hook, stop, timeout) = kill_of(&rt.calls(), &p.uid, "app");
    assert_eq!(secs(hook, stop), 3.0);
    assert_eq!(
        timeout,
        Duration::from_secs(27),
        "the pod's default 30 s less 3 s"
    );
    h.until("Killing event", |v| {
        has_event(v, &p.uid, "Killing", "FailedPostStartHook")
    })
    .await;
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_runs_its_pre_stop_at_once_and_stops_after_the_app() {
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    slow_drain(&rt, "side");
    rt.script(
        "app",
        Script::forever().on_signal(Some(Duration::from_secs(5))),
    );
    let mut h = start(&rt, clock);
    let p = pod(
        "sidecar",
        &format!("  terminationGracePeriodSeconds: 20\n  initContainers:\n  - name: side\n    image: b\n    restartPolicy: Always\n{DRAIN}  containers:\n  - {{name: app, image: b}}\n"),
    );
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![]).await;
    h.until("gone", |v| v.is_empty()).await;
    let calls = rt.calls();
    let (hook, stop, timeout) = kill_of(&calls, &p.uid, "side");
    let app_stop = calls
        .iter()
        .find_map(|(t, c)| matches!(c, Call::Stop { name, .. } if name == "app").then_some(*t))
        .unwrap();
    assert_eq!(
        hook, app_stop,
        "the sidecar's hook runs while the app stops"
    );
    assert_eq!(
        secs(app_stop, stop),
        5.0,
        "its signal waits until the app has exited"
    );
    assert_eq!(timeout, Duration::from_secs(15), "what is left of the 20 s");
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_pre_stop_hook_that_outlasts_the_grace_period_is_cut() {
    use staticlet_runtime::fake::ExecReply;
    let clock = Clock::new();
    let rt = FakeRuntime::new(clock);
    rt.exec_script_for_command("app", "drain", [], ExecReply::Hang);
    let mut h = start(&rt, clock);
    let p = pod(
        "hang",
        &format!("  terminationGracePeriodSeconds: 5\n  containers:\n  - name: app\n    image: b\n{DRAIN}"),
    );
    h.set(vec![p.clone()]).await;
    h.until("running", |v| {
        phase(v, &p.uid).as_deref() == Some("Running")
    })
    .await;
    h.set(vec![]).await;
    h.until("gone", |v| v.is_empty()).await;
    let (hook, stop, timeout) = kill_of(&rt.calls(), &p.uid, "app");
    assert_eq!(secs(hook, stop), 5.0, "cut at the grace period");
    assert_eq!(
        timeout,
        Duration::from_secs(2),
        "kubelet's minimum after the signal"
    );
    h.stop.cancel();
}
