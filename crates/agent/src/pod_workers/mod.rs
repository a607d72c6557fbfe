//! Pod workers and the pod manager that owns them (≈ kubelet's `pod_workers.go` and the pod
//! parts of `kubelet.go`'s sync loop and housekeeping).
//!
//! The [`PodManager`] is the only owner of the worker set. It is level-triggered: on every
//! change of the desired pods, every worker completion and every housekeeping tick it compares
//! what is wanted with what runs, and:
//! - starts a worker for a wanted UID, but only when no other UID of the same full name
//!   (`<name>_<namespace>`) is still running or terminating — an edited manifest's new pod starts
//!   only after the old one has completely stopped, and versions that never started are skipped
//!   because only the *current* desired UID is ever started;
//! - tells workers of unwanted UIDs to terminate, and a terminating worker whose UID is wanted
//!   again to start again when stopped (restart counts continue, as kubelet); a running pod
//!   whose UID was removed and added again meanwhile ([`DesiredPods::added`] grew: its
//!   manifest moved away and back faster than this manager looked) is restarted the same way,
//!   as kubelet restarts it on the REMOVE then ADD of its UID;
//! - once every source has been seen, stops runtime pods that no source wants (orphans, e.g. a
//!   manifest deleted while the agent was down) with a 1 s grace period, and, once after
//!   starting, finishes the cleanup of pods that left only their directory
//!   (`<root-dir>/pods/<uid>`) behind: an agent killed after removing a pod's sandboxes but
//!   before removing its cgroup and directory (kubelet's orphaned pod directories and cgroups).
//!
//! Its periodic relist (every `relist_period`, 1 s, kubelet's PLEG) is the one runtime-wide
//! listing of the agent: it finds orphans, and it compares every pod's sandbox and container
//! states with the previous relist and wakes only the workers whose pods changed
//! ([`WorkerMsg::RuntimeChanged`]). Workers therefore do not poll the runtime themselves: an
//! idle pod costs nothing between its rare resyncs, however many pods run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::PodStatus;
use staticlet_manifest::StaticPod;
use staticlet_runtime::{labels, ContainerState, LabelSelector, SandboxState};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::merge::DesiredPods;

pub mod backoff;
pub mod kill;
pub mod plan;
pub mod worker;

use worker::{Finished, WorkerCtx, WorkerHandle, WorkerMsg, WorkerStatus};

/// What the relist compares per pod: the id and state of each of its sandboxes and containers
/// (kubelet's generic PLEG compares container states the same way), sorted by id.
type Fingerprint = Vec<(String, Option<SandboxState>, Option<ContainerState>)>;

/// Every pod's [`Fingerprint`] from one relist, by UID.
fn fingerprints(
    sandboxes: &[staticlet_runtime::SandboxStatus],
    containers: &[staticlet_runtime::ContainerStatus],
) -> HashMap<String, Fingerprint> {
    let mut out: HashMap<String, Fingerprint> = HashMap::new();
    for s in sandboxes {
        out.entry(s.uid.clone())
            .or_default()
            .push((s.id.0.clone(), Some(s.state), None));
    }
    for c in containers {
        if let Some(uid) = c.labels.get(labels::POD_UID) {
            out.entry(uid.clone())
                .or_default()
                .push((c.id.0.clone(), None, Some(c.state)));
        }
    }
    for f in out.values_mut() {
        f.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// What the pod workers count, for `/metrics` (shared by all workers; atomics, no lock).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Container exits a worker found only because the manager's relist woke it: the runtime
    /// reported no event for them (or reported it later than the relist came).
    pub relist_found_exits: std::sync::atomic::AtomicU64,
}

/// One pod as the local API shows it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod: Arc<StaticPod>,
    pub status: PodStatus,
    /// Set while the pod terminates (shown as `metadata.deletionTimestamp`).
    pub terminating_since: Option<SystemTime>,
    pub grace: Option<i64>,
    pub events: crate::events::EventLog,
}

/// Every pod the agent knows, keyed by UID. Entries are shared between the views published
/// one after the other: an entry that did not change is the same `Arc`, so building, comparing
/// and reading a view costs what changed, not the number of pods.
pub type PodsView = BTreeMap<String, Arc<PodView>>;

struct Entry {
    handle: WorkerHandle,
    full_name: String,
    pod: Option<Arc<StaticPod>>,
    terminating: bool,
    /// The pod's [`DesiredPods::added`] the worker runs (0: an orphan's).
    added: u64,
}

/// A pod found in the runtime by its labels.
#[derive(Debug, Clone)]
struct RuntimePod {
    name: String,
    namespace: String,
}

/// `status.reason` of a pod stopped on request (`staticlet stop pod`).
pub const STOPPED_REASON: &str = "Stopped";

/// A request to the pod manager from outside its inputs (the local API's control verbs).
#[derive(Debug)]
pub enum ManagerRequest {
    /// Restart the pod with this UID in place; answers whether a worker runs it.
    RestartPod {
        uid: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

/// See the module doc.
pub struct PodManager {
    ctx: Arc<WorkerCtx>,
    workers: HashMap<String, Entry>,
    desired: Arc<DesiredPods>,
    /// UIDs found in the runtime at the last housekeeping, with their names.
    runtime_pods: HashMap<String, RuntimePod>,
    /// Every pod's sandbox and container states at the last relist.
    fingerprints: HashMap<String, Fingerprint>,
    listed_once: bool,
    /// Whether the pod directories left by an earlier run were looked at.
    pod_dirs_swept: bool,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    view: watch::Sender<Arc<PodsView>>,
    /// The workers' entries of the last view built, and the desired pods it was built from:
    /// an entry is built again only when its worker's status or the desired pods changed.
    built: BTreeMap<String, Arc<PodView>>,
    built_from: Option<Arc<DesiredPods>>,
    heartbeat: watch::Sender<tokio::time::Instant>,
    requests_tx: mpsc::Sender<ManagerRequest>,
    requests: mpsc::Receiver<ManagerRequest>,
}

impl PodManager {
    /// A manager whose workers use `ctx`; the pods it shows are published on `view`.
    pub fn new(ctx: Arc<WorkerCtx>, view: watch::Sender<Arc<PodsView>>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::channel(16);
        Self {
            ctx,
            workers: HashMap::new(),
            desired: Arc::new(DesiredPods::default()),
            runtime_pods: HashMap::new(),
            fingerprints: HashMap::new(),
            listed_once: false,
            pod_dirs_swept: false,
            done_tx,
            done_rx,
            view,
            built: BTreeMap::new(),
            built_from: None,
            heartbeat: watch::channel(tokio::time::Instant::now()).0,
            requests_tx,
            requests,
        }
    }

    /// Where requests to this manager go ([`ManagerRequest`]).
    pub fn requests(&self) -> mpsc::Sender<ManagerRequest> {
        self.requests_tx.clone()
    }

    /// When the manager's loop last listed the runtime (every relist period while it is
    /// healthy): a service manager's watchdog pings only while this moves.
    pub fn heartbeat(&self) -> watch::Receiver<tokio::time::Instant> {
        self.heartbeat.subscribe()
    }

    /// Runs until `shutdown`. Workers are left as they are on shutdown: containers keep running
    /// and are adopted by the next agent.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Arc<DesiredPods>>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.ctx.relist_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.desired = desired.borrow_and_update().clone();
            self.reconcile();
            let mut status_changed = futures::stream::SelectAll::new();
            for e in self.workers.values() {
                status_changed.push(changes(e.handle.status.clone()));
            }
            self.publish();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = desired.changed() => if r.is_err() { return },
                Some(f) = self.done_rx.recv() => {
                    info!(uid = %f.uid, "pod worker finished");
                    self.workers.remove(&f.uid);
                    self.runtime_pods.remove(&f.uid);
                }
                _ = tick.tick() => {
                    self.relist().await;
                    self.heartbeat.send_replace(tokio::time::Instant::now());
                }
                Some(req) = self.requests.recv() => match req {
                    ManagerRequest::RestartPod { uid, reply } => {
                        let found = match self.workers.get(&uid) {
                            Some(e) if !e.terminating && e.pod.is_some() => {
                                info!(%uid, "restarting the pod on request");
                                e.handle
                                    .tx
                                    .send(WorkerMsg::RestartPod {
                                        why: "staticlet restart pod",
                                    })
                                    .is_ok()
                            }
                            _ => false,
                        };
                        let _ = reply.send(found);
                    }
                },
                Some(()) = futures::StreamExt::next(&mut status_changed) => {}
            }
        }
    }

    /// Lists the runtime: finds the pods in it (for orphans) and wakes the workers of pods
    /// whose state changed since the last relist.
    async fn relist(&mut self) {
        let sel = LabelSelector::managed();
        let rt = &self.ctx.runtime;
        let listed = async {
            Ok::<_, staticlet_runtime::RuntimeError>((
                rt.list_pod_sandboxes(&sel).await?,
                rt.list_containers(&sel).await?,
            ))
        };
        match listed.await {
            Ok((sandboxes, containers)) => {
                let mut found = HashMap::new();
                let pairs = sandboxes
                    .iter()
                    .map(|s| &s.labels)
                    .chain(containers.iter().map(|c| &c.labels));
                for l in pairs {
                    if let (Some(uid), Some(name), Some(ns)) = (
                        l.get(labels::POD_UID),
                        l.get(labels::POD_NAME),
                        l.get(labels::POD_NAMESPACE),
                    ) {
                        found.insert(
                            uid.clone(),
                            RuntimePod {
                                name: name.clone(),
                                namespace: ns.clone(),
                            },
                        );
                    }
                }
                self.runtime_pods = found;
                self.listed_once = true;
                let prints = fingerprints(&sandboxes, &containers);
                for (uid, e) in &self.workers {
                    if prints.get(uid) != self.fingerprints.get(uid) {
                        let _ = e.handle.tx.send(WorkerMsg::RuntimeChanged);
                    }
                }
                self.fingerprints = prints;
            }
            Err(e) => warn!(error = %e, "relist cannot list runtime pods"),
        }
    }

    fn reconcile(&mut self) {
        let desired = self.desired.clone();
        // Workers of unwanted UIDs terminate; wanted-again ones restart; changed specs update.
        // A UID removed and added again since its worker last heard of it (a manifest moved
        // away and back, even when this manager never saw the removal) is restarted, as
        // kubelet restarts a static pod on a REMOVE then ADD of its UID.
        for (uid, e) in self.workers.iter_mut() {
            let added = desired.added.get(uid).copied();
            let again = added.is_some_and(|a| a > e.added);
            match desired.pods.get(uid) {
                None if !e.terminating => {
                    e.terminating = true;
                    let grace = desired.grace_overrides.get(uid).copied();
                    let _ = e.handle.tx.send(WorkerMsg::Terminate { grace });
                }
                Some(p) if e.terminating && e.pod.is_some() => {
                    e.terminating = false;
                    e.pod = Some(p.clone());
                    e.added = added.unwrap_or(e.added);
                    let _ = e.handle.tx.send(WorkerMsg::Restart);
                }
                Some(p) if again && e.pod.is_some() => {
                    e.added = added.unwrap_or(e.added);
                    if e.pod.as_ref().is_some_and(|old| **old != **p) {
                        let _ = e.handle.tx.send(WorkerMsg::Update(p.clone()));
                    }
                    e.pod = Some(p.clone());
                    info!(%uid, "restarting the pod: its manifest was removed and added again");
                    let _ = e.handle.tx.send(WorkerMsg::RestartPod {
                        why: "its manifest was removed and added again",
                    });
                }
                Some(p)
                    if e.pod
                        .as_ref()
                        .is_some_and(|old| !Arc::ptr_eq(old, p) && **old != **p) =>
                {
                    e.pod = Some(p.clone());
                    let _ = e.handle.tx.send(WorkerMsg::Update(p.clone()));
                }
                _ => {}
            }
        }
        // Orphans: runtime pods nobody wants, once every source has spoken.
        if desired.all_sources_seen && self.listed_once {
            let orphans: Vec<(String, RuntimePod)> = self
                .runtime_pods
                .iter()
                .filter(|(uid, _)| {
                    !self.workers.contains_key(*uid) && !desired.pods.contains_key(*uid)
                })
                .map(|(u, p)| (u.clone(), p.clone()))
                .collect();
            if !std::mem::replace(&mut self.pod_dirs_swept, true) {
                self.sweep_pod_dirs();
            }
            for (uid, rp) in orphans {
                info!(%uid, pod = %rp.name, namespace = %rp.namespace, "stopping runtime pod that has no manifest");
                let handle = worker::spawn_orphan(
                    self.ctx.clone(),
                    uid.clone(),
                    rp.name.clone(),
                    rp.namespace.clone(),
                    self.done_tx.clone(),
                );
                self.workers.insert(
                    uid,
                    Entry {
                        handle,
                        full_name: format!("{}_{}", rp.name, rp.namespace),
                        pod: None,
                        terminating: true,
                        added: 0,
                    },
                );
            }
        }
        // Start wanted pods whose full name is free.
        if !self.listed_once {
            return;
        }
        for (uid, pod) in &desired.pods {
            if self.workers.contains_key(uid) {
                continue;
            }
            // Waiting for its dependencies; one the runtime runs already is adopted anyway.
            if desired.held.contains_key(uid) && !self.runtime_pods.contains_key(uid) {
                continue;
            }
            let full = pod.full_name();
            let busy = self.workers.values().any(|e| e.full_name == full)
                || self.runtime_pods.iter().any(|(u, rp)| {
                    u != uid
                        && format!("{}_{}", rp.name, rp.namespace) == full
                        && !desired.pods.contains_key(u)
                });
            if busy {
                continue;
            }
            let handle = worker::spawn(self.ctx.clone(), pod.clone(), self.done_tx.clone());
            self.workers.insert(
                uid.clone(),
                Entry {
                    handle,
                    full_name: full,
                    pod: Some(pod.clone()),
                    terminating: false,
                    added: desired.added.get(uid).copied().unwrap_or(0),
                },
            );
        }
    }

    /// Starts an orphan worker for each pod directory of a UID that is neither wanted, nor
    /// in the runtime, nor handled by a worker: what is left of a pod whose cleanup an earlier
    /// run did not finish. The worker finds nothing in the runtime and goes straight to
    /// removing the pod's cgroup and directory.
    fn sweep_pod_dirs(&mut self) {
        let dir = self.ctx.node.root_dir.join("pods");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot list pod directories");
                return;
            }
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(uid) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if self.workers.contains_key(&uid)
                || self.desired.pods.contains_key(&uid)
                || self.runtime_pods.contains_key(&uid)
            {
                continue;
            }
            info!(%uid, "finishing the cleanup of a pod that has no manifest and nothing in the runtime");
            let handle = worker::spawn_orphan(
                self.ctx.clone(),
                uid.clone(),
                String::new(),
                String::new(),
                self.done_tx.clone(),
            );
            self.workers.insert(
                uid,
                Entry {
                    handle,
                    // No pod's full name (`<name>_<namespace>`) is empty: blocks none.
                    full_name: String::new(),
                    pod: None,
                    terminating: true,
                    added: 0,
                },
            );
        }
    }

    fn publish(&mut self) {
        let mut view = PodsView::new();
        let same_desired = self
            .built_from
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, &self.desired));
        let mut built = BTreeMap::new();
        for (uid, e) in &mut self.workers {
            let Some(pod) = &e.pod else { continue };
            let unchanged = same_desired && !e.handle.status.has_changed().unwrap_or(true);
            if let Some(v) = self
                .built
                .get(uid)
                .filter(|v| unchanged && Arc::ptr_eq(&v.pod, pod))
            {
                view.insert(uid.clone(), v.clone());
                built.insert(uid.clone(), v.clone());
                continue;
            }
            let mut ws: WorkerStatus = e.handle.status.borrow_and_update().clone();
            // The rollout's events (by full name) belong to the version that is wanted, not to
            // an old one still terminating under the same name: a `RolledBack` event is about
            // the pod that runs after it (its UID is what the cluster's event refers to).
            if let Some(extra) = self
                .desired
                .events
                .get(&e.full_name)
                .filter(|_| self.desired.pods.contains_key(uid))
            {
                ws.events = ws.events.merged(extra);
            }
            let status = ws.status.unwrap_or_else(|| {
                crate::status::pending(
                    pod,
                    &self.ctx.node.host_ip,
                    "ContainerCreating",
                    "",
                    self.ctx.clock.now(),
                )
            });
            let v = Arc::new(PodView {
                pod: pod.clone(),
                status,
                terminating_since: ws.terminating_since,
                grace: ws.grace,
                events: ws.events,
            });
            view.insert(uid.clone(), v.clone());
            built.insert(uid.clone(), v);
        }
        self.built = built;
        self.built_from = Some(self.desired.clone());
        for (uid, pod) in &self.desired.pods {
            if view.contains_key(uid) {
                continue;
            }
            let (reason, msg) = if let Some(why) = self.desired.held.get(uid) {
                (crate::ordering::WAITING_FOR_DEPENDENCY, why.as_str())
            } else if self.listed_once {
                (
                    "ContainerCreating",
                    "waiting for the previous pod of this name to stop",
                )
            } else {
                ("ContainerCreating", "waiting for the container runtime")
            };
            let status = crate::status::pending(
                pod,
                &self.ctx.node.host_ip,
                reason,
                msg,
                self.ctx.clock.now(),
            );
            view.insert(
                uid.clone(),
                Arc::new(PodView {
                    pod: pod.clone(),
                    status,
                    terminating_since: None,
                    grace: None,
                    events: self
                        .desired
                        .events
                        .get(&pod.full_name())
                        .cloned()
                        .unwrap_or_default(),
                }),
            );
        }
        // Stopped on request: shown (once its worker is gone) until started again.
        for (uid, pod) in &self.desired.stopped {
            if view.contains_key(uid) {
                continue;
            }
            let msg = format!(
                "stopped by `staticlet stop pod`; `staticlet start pod {} -n {}` runs it again",
                pod.name, pod.namespace
            );
            let mut status = crate::status::pending(
                pod,
                &self.ctx.node.host_ip,
                STOPPED_REASON,
                &msg,
                self.ctx.clock.now(),
            );
            status.reason = Some(STOPPED_REASON.into());
            status.message = Some(msg);
            view.insert(
                uid.clone(),
                Arc::new(PodView {
                    pod: pod.clone(),
                    status,
                    terminating_since: None,
                    grace: None,
                    events: Default::default(),
                }),
            );
        }
        self.view.send_if_modified(|old| {
            let same = old.len() == view.len()
                && old.iter().zip(view.iter()).all(|((ua, a), (ub, b))| {
                    ua == ub
                        && (Arc::ptr_eq(a, b)
                            || Arc::ptr_eq(&a.pod, &b.pod)
                                && a.status == b.status
                                && a.terminating_since == b.terminating_since
                                && a.events == b.events)
                });
            if !same {
                *old = Arc::new(view);
            }
            !same
        });
    }
}

/// A stream that yields once per change of a worker's status after now.
fn changes(mut rx: watch::Receiver<WorkerStatus>) -> futures::stream::BoxStream<'static, ()> {
    rx.mark_unchanged();
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    }))
}
