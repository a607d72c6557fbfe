//! The async shell of one pod worker: observe → [`plan`](super::plan::plan) → execute → publish
//! status → wait, until told to terminate; then stop the containers in kubelet's order and
//! clean up. One worker per pod UID; a worker never reads another pod's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, PodStatus};
use staticlet_manifest::StaticPod;
use staticlet_runtime::{
    Clock, ContainerId, ContainerRuntime, ContainerState, ContainerStatus, ImageSpec,
    LabelSelector, RuntimeError, SandboxId, SandboxState,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn, Instrument};

use super::kill::{Kill, KillReason, Killer};
use super::plan::{self, backoff_key, Action, Memory, Observed, Waiting};
use crate::kuberuntime::{self, ContainerKind, NodeContext};
use crate::status;

/// What every worker shares.
pub struct WorkerCtx {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node: NodeContext,
    pub clock: Clock,
    /// Prefix of container IDs in status (`staticlet://...`).
    pub runtime_name: String,
    /// Period of the relist that backs up runtime events (kubelet's PLEG: 1 s).
    pub relist_period: Duration,
    /// The mount table in which the agent finds the cgroup hierarchies its pods' cgroups live in
    /// (`/proc/self/mountinfo`), to remove a pod's cgroup once its sandboxes are gone; `None`
    /// when the runtime makes no cgroups (the fake and simulated runtimes).
    pub cgroup_mountinfo: Option<std::path::PathBuf>,
    /// Counted for `/metrics`.
    pub counters: Arc<super::WorkerCounters>,
}

/// Messages from the pod manager.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The pod's spec changed (same UID).
    Update(Arc<StaticPod>),
    /// Stop the pod (grace period override in seconds).
    Terminate { grace: Option<i64> },
    /// The UID is wanted again while terminating: start it again once stopped.
    Restart,
    /// Stop the pod (kill sequence, the pod's grace) and start it again with the same UID (a
    /// new sandbox; restart counts go up), because of `why` (shown in the `Killing` event):
    /// `staticlet restart pod`, or its manifest removed and added again.
    RestartPod { why: &'static str },
    /// The manager's relist saw the pod's sandboxes or containers change: observe them now.
    RuntimeChanged,
}

/// What a worker is doing, as the manager and the API see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub status: Option<PodStatus>,
    /// When termination started (shown as `deletionTimestamp`).
    pub terminating_since: Option<SystemTime>,
    pub grace: Option<i64>,
    /// What happened to the pod (Pulling, Started, BackOff, ...).
    pub events: crate::events::EventLog,
}

/// Sent to the manager when a worker has fully finished.
#[derive(Debug)]
pub struct Finished {
    pub uid: String,
}

/// The manager's handle of a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub tx: mpsc::UnboundedSender<WorkerMsg>,
    pub status: watch::Receiver<WorkerStatus>,
}

/// How the worker identifies its pod.
enum Subject {
    Pod(Arc<StaticPod>),
    /// A pod found in the runtime with no manifest: only its labels are known.
    Orphan {
        uid: String,
    },
}

impl Subject {
    fn uid(&self) -> &str {
        match self {
            Subject::Pod(p) => &p.uid,
            Subject::Orphan { uid } => uid,
        }
    }
}

/// Starts a worker for a static pod.
pub fn spawn(
    ctx: Arc<WorkerCtx>,
    pod: Arc<StaticPod>,
    done: mpsc::UnboundedSender<Finished>,
) -> WorkerHandle {
    let span = tracing::info_span!("pod", ns = %pod.namespace, name = %pod.name, uid = %pod.uid);
    start(ctx, Subject::Pod(pod), None, done, span)
}

/// Starts a worker that stops and removes a runtime pod that has no manifest (kubelet stops
/// such orphans with a grace period of 1 s).
pub fn spawn_orphan(
    ctx: Arc<WorkerCtx>,
    uid: String,
    name: String,
    namespace: String,
    done: mpsc::UnboundedSender<Finished>,
) -> WorkerHandle {
    let span = tracing::info_span!("pod", ns = %namespace, name = %name, uid = %uid, orphan = true);
    start(ctx, Subject::Orphan { uid }, Some(1), done, span)
}

fn start(
    ctx: Arc<WorkerCtx>,
    subject: Subject,
    terminate: Option<i64>,
    done: mpsc::UnboundedSender<Finished>,
    span: tracing::Span,
) -> WorkerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(WorkerStatus {
        status: None,
        terminating_since: None,
        grace: None,
        events: Default::default(),
    });
    let mem = match &subject {
        Subject::Pod(pod) => Memory::for_pod(pod),
        Subject::Orphan { .. } => Memory::default(),
    };
    let w = Worker {
        ctx,
        subject,
        rx,
        status: status_tx,
        mem,
        start_time: None,
        restart_requested: false,
        failures: 0,
        probes: None,
        last_pod_ip: String::new(),
        termination_messages: Default::default(),
    };
    tokio::spawn(w.run(terminate, done).instrument(span));
    WorkerHandle {
        tx,
        status: status_rx,
    }
}

struct Worker {
    ctx: Arc<WorkerCtx>,
    subject: Subject,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    status: watch::Sender<WorkerStatus>,
    mem: Memory,
    start_time: Option<SystemTime>,
    restart_requested: bool,
    failures: u32,
    /// Liveness / readiness / startup probes of the pod's containers.
    probes: Option<crate::prober::ProbeManager>,
    /// The pod IP as last observed (hooks and probes connect to it).
    last_pod_ip: String,
    /// Termination messages of exited containers, by container id.
    termination_messages: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

/// How long a postStart hook may run: the pod's grace period, at least 2 s (kubelet gives it
/// no limit of its own; an endless hook would keep the container from ever counting as started).
fn hook_timeout(grace: i64) -> Duration {
    Duration::from_secs(grace.max(0) as u64).max(super::kill::MINIMUM_GRACE_PERIOD)
}

/// What interrupted a wait.
enum Wake {
    Msg(Option<WorkerMsg>),
    /// A runtime event for this pod (`None`: events were lost).
    RuntimeEvent(Option<staticlet_runtime::ContainerEvent>),
    Timer,
}

/// What an executed action left in the runtime, so the worker can read it back by id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Made {
    /// Nothing changed (a start that failed before creating anything).
    Nothing,
    /// This sandbox was created.
    Sandbox(SandboxId),
    /// This container was created and started.
    Container(ContainerId),
    /// The runtime changed in a way only a list shows (stops, removals, a failed start).
    Unknown,
}

/// A worker syncs at least every this many relist periods even when nothing told it to (the
/// safety net behind the manager's relist and runtime events; kubelet resyncs every minute).
const RESYNC_RELISTS: u32 = 10;

/// At most this many syncs in a row plan on statuses read back by id before the pod is listed
/// again (a start is sandbox, init containers one by one, then the regular containers).
const MAX_READ_BACKS: u32 = 8;

impl Worker {
    async fn run(mut self, mut terminate: Option<i64>, done: mpsc::UnboundedSender<Finished>) {
        loop {
            if terminate.is_none() {
                terminate = self.sync_loop().await;
            }
            let grace = terminate.take();
            self.terminate(grace).await;
            if std::mem::take(&mut self.restart_requested) {
                if let Subject::Pod(_) = self.subject {
                    info!("pod wanted again while terminating; starting it again");
                    self.status.send_modify(|s| {
                        s.terminating_since = None;
                        s.grace = None;
                    });
                    continue;
                }
            }
            self.cleanup().await;
            let _ = done.send(Finished {
                uid: self.subject.uid().to_string(),
            });
            return;
        }
    }

    async fn observe(&self) -> Result<Observed, RuntimeError> {
        let sel = LabelSelector::pod(self.subject.uid());
        let sandboxes = self.ctx.runtime.list_pod_sandboxes(&sel).await?;
        let containers = self.ctx.runtime.list_containers(&sel).await?;
        let mut obs = Observed {
            sandboxes,
            containers,
        };
        self.add_termination_messages(&mut obs.containers);
        Ok(obs)
    }

    /// Keeps [`plan::Memory::next_attempts`] up to date: one more than each container's highest
    /// attempt seen in the runtime; for a container of the spec the runtime holds none of and
    /// the worker has not seen yet (a new worker: the agent restarted, or the pod is new), what
    /// its log directory shows.
    fn remember_attempts(&mut self, pod: &StaticPod, obs: &Observed) {
        for c in &obs.containers {
            let next = self.mem.next_attempts.entry(c.name.clone()).or_insert(0);
            *next = (*next).max(c.attempt.saturating_add(1));
        }
        let spec = pod.spec();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            if !self.mem.next_attempts.contains_key(&c.name) {
                let dir = self.ctx.node.pod_log_dir(pod).join(&c.name);
                self.mem
                    .next_attempts
                    .insert(c.name.clone(), kuberuntime::next_attempt_from_logs(&dir));
            }
        }
    }

    /// Fills in the termination messages of exited containers.
    fn add_termination_messages(&self, containers: &mut [ContainerStatus]) {
        let Subject::Pod(p) = &self.subject else {
            return;
        };
        // An exited container's message never changes: read its file once, not every relist.
        let mut cache = self
            .termination_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.retain(|id, _| containers.iter().any(|c| c.id.0 == *id));
        for c in containers
            .iter_mut()
            .filter(|c| c.state == ContainerState::Exited)
        {
            let m = cache
                .entry(c.id.0.clone())
                .or_insert_with(|| kuberuntime::termination_message(p, c, &self.ctx.node));
            if let Some(m) = m {
                c.message = m.clone();
            }
        }
    }

    /// Reads back by id what the last actions made (kubelet's SyncPod reads the new sandbox's
    /// status and goes on with its containers in the same pass), so a start costs no re-list.
    /// `None` when an action's effect is not known this way: the caller lists the pod again.
    async fn read_back(&self, mut obs: Observed, made: &[Made]) -> Option<Observed> {
        for m in made {
            match m {
                Made::Nothing => {}
                Made::Unknown => return None,
                Made::Sandbox(id) => {
                    let s = self.ctx.runtime.pod_sandbox_status(id).await.ok()?;
                    obs.sandboxes.retain(|x| x.id != s.id);
                    obs.sandboxes.push(s);
                }
                Made::Container(id) => {
                    let c = self.ctx.runtime.container_status(id).await.ok()?;
                    obs.containers.retain(|x| x.id != c.id);
                    obs.containers.push(c);
                }
            }
        }
        self.add_termination_messages(&mut obs.containers);
        Some(obs)
    }

    /// Syncs until told to terminate; returns the grace override.
    ///
    /// A sync (observe → probes → plan → publish → act) runs when something may have changed:
    /// at start, on a message (including the manager's [`WorkerMsg::RuntimeChanged`]), on a
    /// runtime event, after acting, when the plan asked to be woken (a back-off expiring) and
    /// every [`RESYNC_RELISTS`] relist periods as a safety net. A wake-up that is only for a
    /// due probe runs the probe against the last observation and syncs only if the probe
    /// changed something (readiness, startup, liveness), so periodic probes of a steady pod
    /// never list the runtime.
    async fn sync_loop(&mut self) -> Option<i64> {
        let mut events = self.ctx.runtime.subscribe_events();
        let uid = self.subject.uid().to_string();
        let resync = self.ctx.relist_period * RESYNC_RELISTS;
        // The last observation and when the next full sync is due at the latest.
        let mut last: Option<Observed> = None;
        // What the last actions made, read back by id: the next sync plans on it without
        // listing the pod (bounded, so a plan that keeps acting is re-listed regularly).
        let mut read_back: Option<Observed> = None;
        let mut read_backs = 0;
        let mut plan_wake: Option<SystemTime> = None;
        let mut sync_due = tokio::time::Instant::now();
        // Whether only the manager's relist woke this worker since its last observation.
        let mut relist_woke = false;
        loop {
            let Subject::Pod(pod) = &self.subject else {
                return Some(1);
            };
            let pod = pod.clone();
            let mut wake_at = None;
            let mut acted = false;
            let now = self.ctx.clock.now();
            let full = last.is_none()
                || read_back.is_some()
                || tokio::time::Instant::now() >= sync_due
                || plan_wake.is_some_and(|w| w <= now);
            if !full {
                let obs = last.as_ref().expect("observed before");
                let ip = self.probe_ip(&pod, obs);
                let mut runtime_changed = false;
                let probe_events = match self.probes.as_ref() {
                    Some(p) if p.next_due(now).is_some_and(|d| d <= now) => {
                        match self.run_probes(now, &ip).await {
                            Ok((events, rc)) => {
                                runtime_changed = rc;
                                // The relist's notice: what the next observation finds new
                                // was not reported by an event (see `relist_woke`).
                                relist_woke |= rc;
                                events
                            }
                            Err(m) => {
                                if let Some(g) = self.interrupted(m).await {
                                    return Some(g);
                                }
                                sync_due = tokio::time::Instant::now();
                                continue;
                            }
                        }
                    }
                    _ => Vec::new(),
                };
                let changed = probe_events
                    .iter()
                    .any(|e| !matches!(e, crate::prober::ProbeEvent::AttemptFailed { .. }));
                self.handle_probe_events(probe_events).await;
                if changed || runtime_changed {
                    // Readiness, startup or liveness changed (or the runtime did while the
                    // probes ran): sync now.
                    sync_due = tokio::time::Instant::now();
                    continue;
                }
                wake_at = self.next_wake(plan_wake, self.ctx.clock.now());
            } else {
                sync_due = tokio::time::Instant::now() + resync;
            }
            let observed = match read_back.take() {
                Some(obs) => Some(Ok(obs)),
                None if full => {
                    read_backs = 0;
                    let obs = self.observe().await;
                    if let (Ok(now), Some(before), true) = (&obs, &last, relist_woke) {
                        let missed = now.exits_since(before);
                        if missed > 0 {
                            info!(
                                exits = missed,
                                "container exit found by the relist: the runtime sent no event for it"
                            );
                            self.ctx
                                .counters
                                .relist_found_exits
                                .fetch_add(missed as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    relist_woke = false;
                    Some(obs)
                }
                None => None,
            };
            match observed {
                None => {}
                Some(Ok(obs)) => {
                    let now = self.ctx.clock.now();
                    if self.start_time.is_none() {
                        self.event(
                            "Normal",
                            "Seen",
                            &format!(
                                "Static pod read from {} {}",
                                pod.origin.source_kind(),
                                pod.origin
                            ),
                        );
                    }
                    self.start_time.get_or_insert(now);
                    self.mem.started_at = self.start_time;
                    self.last_pod_ip = self.probe_ip(&pod, &obs);
                    let probes = self.probes.get_or_insert_with(|| {
                        crate::prober::ProbeManager::new(self.ctx.runtime.clone(), pod.spec())
                    });
                    let mut probe_events = probes.observe_runtime(&obs.containers, now);
                    if probes.next_due(now).is_some_and(|d| d <= now) {
                        let ip = self.probe_ip(&pod, &obs);
                        match self.run_probes(now, &ip).await {
                            Ok((events, runtime_changed)) => {
                                probe_events.extend(events);
                                if runtime_changed {
                                    sync_due = tokio::time::Instant::now();
                                }
                            }
                            Err(m) => {
                                self.handle_probe_events(probe_events).await;
                                if let Some(g) = self.interrupted(m).await {
                                    return Some(g);
                                }
                                sync_due = tokio::time::Instant::now();
                                continue;
                            }
                        }
                    }
                    self.handle_probe_events(probe_events).await;
                    self.remember_attempts(&pod, &obs);
                    let now = self.ctx.clock.now();
                    let step = plan::plan(&pod, &obs, &self.mem, now);
                    for (name, w) in &step.waiting {
                        match w.reason.as_str() {
                            "CrashLoopBackOff" => self.event(
                                "Warning",
                                "BackOff",
                                &format!(
                                    "Back-off restarting failed container {name} in pod {}_{}({})",
                                    pod.name, pod.namespace, pod.uid
                                ),
                            ),
                            "ImagePullBackOff" => self.event("Normal", "BackOff", &w.message),
                            _ => {}
                        }
                    }
                    self.publish(&pod, &obs, &step.waiting);
                    plan_wake = step.wake_at;
                    wake_at = self.next_wake(plan_wake, now);
                    let mut ok = true;
                    let mut made = Vec::new();
                    for action in step.actions {
                        acted = true;
                        match self.execute(&pod, &obs, action).await {
                            Ok(m) => made.push(m),
                            Err(e) => {
                                warn!(error = %e, "pod sync step failed");
                                ok = false;
                                break;
                            }
                        }
                    }
                    self.failures = if ok { 0 } else { self.failures + 1 };
                    if ok && acted && read_backs < MAX_READ_BACKS {
                        read_back = self.read_back(obs.clone(), &made).await;
                        read_backs += 1;
                    }
                    last = Some(obs);
                }
                Some(Err(e)) => {
                    self.failures += 1;
                    if self.failures == 1 {
                        warn!(error = %e, "cannot observe pod in the runtime; retrying");
                    }
                }
            }
            let now_i = tokio::time::Instant::now();
            if self.failures > 0 {
                // kubelet requeues a failed sync after ~10 s; start faster, for a runtime blip.
                let retry = Duration::from_secs(1 << self.failures.min(3).saturating_sub(1))
                    .min(Duration::from_secs(10));
                sync_due = now_i + retry;
            } else if acted {
                // Observe the result of what was just done, but first take any message
                // already queued.
                match self.rx.try_recv() {
                    Ok(msg) => {
                        if let Some(g) = self.handle(Some(msg)) {
                            return Some(g);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                sync_due = now_i;
                continue;
            }
            let mut until = sync_due;
            if let Some(w) = wake_at {
                until = until.min(self.ctx.clock.instant_at(w));
            }
            let wake = tokio::select! {
                m = self.rx.recv() => Wake::Msg(m),
                _ = tokio::time::sleep_until(until) => Wake::Timer,
                ev = async {
                    match events.as_mut() {
                        Some(rx) => loop {
                            match rx.recv().await {
                                Ok(ev) if ev.pod_uid == uid => return Some(ev),
                                Ok(_) => continue,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    return None
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    std::future::pending::<()>().await
                                }
                            }
                        },
                        None => std::future::pending().await,
                    }
                } => Wake::RuntimeEvent(ev)
            };
            match wake {
                Wake::Msg(m) => {
                    if matches!(m, Some(WorkerMsg::RuntimeChanged)) {
                        relist_woke = true;
                    }
                    if m.is_none() {
                        // The manager is gone (agent shutting down): leave the pod running.
                        std::future::pending::<()>().await;
                    }
                    if let Some(g) = self.handle(m) {
                        return Some(g);
                    }
                    sync_due = tokio::time::Instant::now();
                }
                // The echo of what this worker did and already read back changes nothing.
                Wake::RuntimeEvent(Some(ev))
                    if last.as_ref().is_some_and(|o| o.already_shows(&ev)) => {}
                Wake::RuntimeEvent(_) => {
                    relist_woke = false;
                    sync_due = tokio::time::Instant::now();
                }
                // A due probe, a plan wake-up or the resync: the loop's head tells which.
                Wake::Timer => {}
            }
        }
    }

    /// Runs the probes due at `now`, and says whether the manager saw the pod's runtime state
    /// change meanwhile ([`WorkerMsg::RuntimeChanged`]: observe again). A probe may take up to
    /// its timeout (kube-apiserver's readiness probe: 15 s); any other message (a termination,
    /// an update, a restart) arriving meanwhile is returned at once and the attempts are
    /// thrown away, as kubelet's probe workers never hold up its pod worker.
    async fn run_probes(
        &mut self,
        now: SystemTime,
        ip: &str,
    ) -> Result<(Vec<crate::prober::ProbeEvent>, bool), Option<WorkerMsg>> {
        let Some(p) = self.probes.as_mut() else {
            return Ok((Vec::new(), false));
        };
        let jobs = p.take_due(now, ip);
        if jobs.is_empty() {
            return Ok((Vec::new(), false));
        }
        let keys: Vec<_> = jobs.iter().map(|j| (j.container.clone(), j.kind)).collect();
        let run = futures::future::join_all(jobs.into_iter().map(crate::prober::ProbeJob::run));
        tokio::pin!(run);
        let mut runtime_changed = false;
        loop {
            tokio::select! {
                done = &mut run => {
                    let events = done.into_iter().flat_map(|d| p.apply(d)).collect();
                    return Ok((events, runtime_changed));
                }
                m = self.rx.recv() => match m {
                    Some(WorkerMsg::RuntimeChanged) => runtime_changed = true,
                    m => {
                        p.abandon(&keys);
                        return Err(m);
                    }
                }
            }
        }
    }

    /// Acts on a message that interrupted the probes; returns the grace override when it
    /// means "terminate".
    async fn interrupted(&mut self, m: Option<WorkerMsg>) -> Option<i64> {
        if m.is_none() {
            // The manager is gone (agent shutting down): leave the pod running.
            std::future::pending::<()>().await;
        }
        self.handle(m)
    }

    /// When to wake up at the latest: the plan's wake-up or the next due probe, whichever first.
    fn next_wake(&self, plan: Option<SystemTime>, now: SystemTime) -> Option<SystemTime> {
        match (plan, self.probes.as_ref().and_then(|p| p.next_due(now))) {
            (Some(w), Some(due)) => Some(w.min(due)),
            (w, due) => w.or(due),
        }
    }

    /// Applies a manager message; returns the grace override when it means "terminate".
    fn handle(&mut self, msg: Option<WorkerMsg>) -> Option<i64> {
        match msg? {
            WorkerMsg::Update(p) => {
                info!("pod spec updated");
                self.subject = Subject::Pod(p);
                None
            }
            WorkerMsg::Terminate { grace } => {
                let g = grace.unwrap_or_else(|| self.grace());
                Some(g)
            }
            WorkerMsg::RestartPod { why } => {
                self.event(
                    "Normal",
                    "Killing",
                    &format!("Stopping the pod to restart it ({why})"),
                );
                self.restart_requested = true;
                Some(self.grace())
            }
            WorkerMsg::Restart | WorkerMsg::RuntimeChanged => None,
        }
    }

    fn grace(&self) -> i64 {
        match &self.subject {
            Subject::Pod(p) => p.spec().termination_grace_period_seconds.unwrap_or(30),
            Subject::Orphan { .. } => 1,
        }
    }

    /// Records a pod event (published with the status).
    fn event(&self, type_: &'static str, reason: &str, message: &str) {
        let now = self.ctx.clock.now();
        self.status
            .send_modify(|s| s.events.record(type_, reason, message, now));
    }

    /// The kill sequence for this pod's containers (hooks reach the pod at its last IP).
    fn killer(&self) -> Killer {
        let status = self.status.clone();
        let clock = self.ctx.clock;
        Killer {
            runtime: self.ctx.runtime.clone(),
            pod: match &self.subject {
                Subject::Pod(p) => Some(p.clone()),
                Subject::Orphan { .. } => None,
            },
            pod_ip: self.last_pod_ip.clone(),
            events: Arc::new(move |type_, reason, message| {
                let now = clock.now();
                status.send_modify(|s| s.events.record(type_, reason, message, now));
            }),
        }
    }

    /// The address probes connect to: the pod IP, or the node's under hostNetwork.
    fn probe_ip(&self, pod: &StaticPod, obs: &Observed) -> String {
        if pod.spec().host_network.unwrap_or(false) {
            return self.ctx.node.host_ip.clone();
        }
        obs.sandbox().map(|s| s.ip.clone()).unwrap_or_default()
    }

    /// Kills containers whose liveness or startup probe failed (kubelet: "Container X failed
    /// liveness probe, will be restarted"); the plan restarts them per the restart policy.
    async fn handle_probe_events(&mut self, events: Vec<crate::prober::ProbeEvent>) {
        for ev in events {
            match &ev {
                crate::prober::ProbeEvent::ContainerUnhealthy {
                    container,
                    container_id,
                    message,
                    kind,
                    ..
                } => {
                    // Its failed attempts were recorded as `Unhealthy` already.
                    warn!(container = %container, probe_output = %message, "container unhealthy");
                    let kill = Kill {
                        id: container_id.clone(),
                        name: container.clone(),
                        message: ev.kill_message(),
                        reason: match kind {
                            crate::prober::ProbeKind::Startup => KillReason::StartupProbe,
                            _ => KillReason::LivenessProbe,
                        },
                        grace_override: None,
                    };
                    if let Err(e) = self.killer().kill(&kill, None).await {
                        warn!(container = %container, error = %e, "killing unhealthy container failed");
                    }
                }
                crate::prober::ProbeEvent::AttemptFailed { message, .. } => {
                    self.event("Warning", "Unhealthy", message);
                }
                crate::prober::ProbeEvent::ReadinessChanged { container, ready } => {
                    info!(container = %container, ready, "readiness changed");
                }
                crate::prober::ProbeEvent::Started { container } => {
                    info!(container = %container, "startup probe succeeded");
                }
            }
        }
    }

    fn publish(&self, pod: &StaticPod, obs: &Observed, waiting: &BTreeMap<String, Waiting>) {
        let mut all: BTreeMap<String, Waiting> = self
            .mem
            .start_errors
            .iter()
            .map(|(k, (w, _))| (k.clone(), w.clone()))
            .collect();
        all.extend(waiting.iter().map(|(k, v)| (k.clone(), v.clone())));
        let prev = self.status.borrow().status.clone();
        let st = status::compute(&status::Input {
            pod,
            obs,
            waiting: &all,
            start_time: self.start_time.unwrap_or_else(|| self.ctx.clock.now()),
            runtime_name: &self.ctx.runtime_name,
            host_ip: &self.ctx.node.host_ip,
            previous: prev.as_ref(),
            now: self.ctx.clock.now(),
            probes: self.probes.as_ref(),
            deadline_exceeded: plan::deadline_exceeded(pod, &self.mem, self.ctx.clock.now()),
        });
        self.status.send_if_modified(|s| {
            if s.status.as_ref() == Some(&st) {
                return false;
            }
            if let (Some(old), Some(new)) = (
                s.status.as_ref().and_then(|s| s.phase.as_deref()),
                st.phase.as_deref(),
            ) {
                if old != new {
                    info!(from = old, to = new, "pod phase changed");
                }
            }
            s.status = Some(st.clone());
            true
        });
    }

    async fn execute(
        &mut self,
        pod: &StaticPod,
        obs: &Observed,
        action: Action,
    ) -> Result<Made, String> {
        let rt = &self.ctx.runtime;
        match action {
            Action::KillPod { reason } => {
                info!(%reason, "killing pod before recreating its sandbox");
                let kills = obs
                    .containers
                    .iter()
                    .filter(|c| c.state == ContainerState::Running)
                    .map(|c| Kill {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        message: None,
                        reason: KillReason::Other,
                        grace_override: None,
                    })
                    .collect();
                for (_, r) in self.killer().kill_all(kills).await {
                    r.map_err(|e| e.to_string())?;
                }
                if let Some(sb) = obs.sandbox() {
                    rt.stop_pod_sandbox(&sb.id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Made::Unknown)
            }
            Action::CreateSandbox { attempt } => {
                let cfg = kuberuntime::sandbox_config(pod, attempt, &self.ctx.node);
                // The pod's directory exists before anything of the pod does (kubelet's
                // makePodDataDirs): after a crash, it tells the agent a pod may have left
                // something behind (its cgroup) even when the runtime holds nothing of it.
                let pod_dir = self.ctx.node.pod_dir(&pod.uid);
                if let Err(e) = std::fs::create_dir_all(&pod_dir) {
                    return Err(format!("creating pod directory {}: {e}", pod_dir.display()));
                }
                if let Err(e) = std::fs::create_dir_all(&cfg.log_directory) {
                    return Err(format!(
                        "creating log directory {}: {e}",
                        cfg.log_directory.display()
                    ));
                }
                let id = match rt.run_pod_sandbox(&cfg).await {
                    Ok(id) => id,
                    Err(e) => {
                        // Shown as the containers' waiting message (kubelet's
                        // FailedCreatePodSandBox), until a sandbox exists.
                        let msg = format!("failed to create pod sandbox: {e}");
                        self.event("Warning", "FailedCreatePodSandBox", &msg);
                        let now = self.ctx.clock.now();
                        let spec = pod.spec();
                        for c in spec
                            .containers
                            .iter()
                            .chain(spec.init_containers.iter().flatten())
                        {
                            self.mem.start_errors.insert(
                                c.name.clone(),
                                (Waiting::new("ContainerCreating", msg.clone()), now),
                            );
                        }
                        return Err(msg);
                    }
                };
                info!(sandbox = %id, attempt, "pod sandbox created");
                Ok(Made::Sandbox(id))
            }
            Action::StopSandbox { id } => rt
                .stop_pod_sandbox(&id)
                .await
                .map(|()| Made::Unknown)
                .map_err(|e| e.to_string()),
            Action::RemoveSandbox { id } => rt
                .remove_pod_sandbox(&id)
                .await
                .map(|()| Made::Unknown)
                .map_err(|e| e.to_string()),
            Action::KillContainer { id, name, message } => {
                let kill = Kill {
                    id,
                    name,
                    message,
                    reason: KillReason::Other,
                    grace_override: None,
                };
                self.killer()
                    .kill(&kill, None)
                    .await
                    .map(|()| Made::Unknown)
                    .map_err(|e| e.to_string())
            }
            Action::RemoveContainer { id } => rt
                .remove_container(&id)
                .await
                .map(|()| Made::Unknown)
                .map_err(|e| e.to_string()),
            Action::StartContainer {
                name,
                kind,
                attempt,
                restart_of,
            } => Ok(self
                .start_container(pod, obs, &name, kind, attempt, restart_of)
                .await),
        }
    }

    /// Pulls, creates and starts one container. Failures are not errors of the sync: they are
    /// recorded as the container's waiting reason with a back-off, as kubelet does.
    async fn start_container(
        &mut self,
        pod: &StaticPod,
        obs: &Observed,
        name: &str,
        kind: ContainerKind,
        attempt: u32,
        restart_of: Option<SystemTime>,
    ) -> Made {
        let spec = pod.spec();
        let Some(c): Option<&Container> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
        else {
            return Made::Nothing;
        };
        let now = self.ctx.clock.now();
        let key = backoff_key(c);
        if let Some(finished) = restart_of {
            self.mem.backoff.next(&key, finished, now);
        }
        let result = match self.create(pod, obs, c, kind, attempt).await {
            Ok((id, pod_ip)) => match self.run_created(&id, c, pod_ip).await {
                Ok(()) => Ok(Made::Container(id)),
                Err(e) => Err((e, Made::Unknown)),
            },
            Err(e) => Err((e, Made::Nothing)),
        };
        match result {
            Ok(made) => {
                self.mem.start_errors.remove(name);
                info!(container = %name, attempt, "container started");
                made
            }
            Err(((reason, message), made)) => {
                warn!(container = %name, %reason, %message, "container not started");
                self.event("Warning", "Failed", &format!("Error: {reason}: {message}"));
                let now = self.ctx.clock.now();
                if reason == "ErrImagePull" {
                    let image = c.image.clone().unwrap_or_default();
                    self.mem.image_backoff.next(&image, now, now);
                } else if restart_of.is_none() {
                    self.mem.backoff.next(&key, now, now);
                }
                self.mem
                    .start_errors
                    .insert(name.to_string(), (Waiting::new(reason, message), now));
                made
            }
        }
    }

    /// Pulls the image (per policy) and creates the container; returns its id and the IP its
    /// hooks reach it on.
    async fn create(
        &self,
        pod: &StaticPod,
        obs: &Observed,
        c: &Container,
        kind: ContainerKind,
        attempt: u32,
    ) -> Result<(ContainerId, String), (&'static str, String)> {
        let rt = &self.ctx.runtime;
        let sandbox = obs
            .sandbox()
            .filter(|s| s.state == SandboxState::Ready)
            .ok_or(("ContainerCreating", "pod sandbox is not ready".to_string()))?;
        let image = c.image.clone().unwrap_or_default();
        let spec = ImageSpec {
            image: image.clone(),
        };
        let present = rt
            .image_status(&spec)
            .await
            .map_err(|e| ("ErrImagePull", e.to_string()))?;
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let pull = match (policy, &present) {
            ("Never", None) => {
                return Err((
                    "ErrImageNeverPull",
                    format!("Container image {image:?} is not present with pull policy of Never"),
                ))
            }
            ("Never", Some(_)) | ("IfNotPresent", Some(_)) => false,
            _ => true,
        };
        if pull {
            info!(%image, "pulling image");
            self.event("Normal", "Pulling", &format!("Pulling image {image:?}"));
            rt.pull_image(&spec, None).await.map_err(|e| match e {
                RuntimeError::ImagePull { message, .. } => ("ErrImagePull", message),
                other => ("ErrImagePull", other.to_string()),
            })?;
            self.event(
                "Normal",
                "Pulled",
                &format!("Successfully pulled image {image:?}"),
            );
        } else {
            self.event(
                "Normal",
                "Pulled",
                &format!("Container image {image:?} already present on machine"),
            );
        }
        let node = self.ctx.node.clone();
        let p = pod.clone();
        let volumes = tokio::task::spawn_blocking(move || kuberuntime::setup_volumes(&p, &node))
            .await
            .map_err(|e| ("CreateContainerConfigError", e.to_string()))?
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let pod_ip = if pod.spec().host_network.unwrap_or(false) {
            self.ctx.node.host_ip.clone()
        } else {
            sandbox.ip.clone()
        };
        let mut cfg =
            kuberuntime::container_config(pod, c, kind, attempt, &pod_ip, &self.ctx.node, &volumes)
                .map_err(|e| ("CreateContainerConfigError", e))?;
        kuberuntime::add_termination_log(&mut cfg, pod, c, attempt, &self.ctx.node)
            .map_err(|e| ("CreateContainerConfigError", e))?;
        kuberuntime::add_hosts_file(&mut cfg, pod, &sandbox.ip, &self.ctx.node)
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let sb_cfg = kuberuntime::sandbox_config(pod, sandbox.attempt, &self.ctx.node);
        let id = rt
            .create_container(&sandbox.id, &cfg, &sb_cfg)
            .await
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        staticlet_runtime::fault::point("container-created");
        self.event(
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );
        Ok((id, pod_ip))
    }

    /// Starts a created container and runs its postStart hook.
    async fn run_created(
        &self,
        id: &ContainerId,
        c: &Container,
        pod_ip: String,
    ) -> Result<(), (&'static str, String)> {
        let rt = &self.ctx.runtime;
        rt.start_container(id)
            .await
            .map_err(|e| ("RunContainerError", e.to_string()))?;
        self.event(
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        // postStart: the container is not reported started until it returns; a failure kills
        // the container (kubelet's FailedPostStartHook), which restarts per its policy.
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let grace = self.grace();
            let target = crate::prober::handler::Target {
                runtime: rt.clone(),
                container_id: id.clone(),
                pod_ip,
            };
            let outcome = match crate::prober::handler::ProbeHandler::from_lifecycle(hook, c) {
                Ok(h) => crate::prober::handler::run(&h, &target, hook_timeout(grace)).await,
                Err(e) => crate::prober::handler::ProbeOutcome::Error(e),
            };
            if let crate::prober::handler::ProbeOutcome::Failure(m)
            | crate::prober::handler::ProbeOutcome::Error(m) = outcome
            {
                self.event(
                    "Warning",
                    "FailedPostStartHook",
                    // kubelet: "do not record the message in the event so that secrets won't
                    // leak" (the output is in the log and the container's status).
                    "PostStartHook failed",
                );
                // kubelet's killContainer with its message "FailedPostStartHook" (the preStop
                // hook runs, as for every kill).
                let kill = Kill {
                    id: id.clone(),
                    name: c.name.clone(),
                    message: Some("FailedPostStartHook".into()),
                    reason: KillReason::Other,
                    grace_override: None,
                };
                if let Err(e) = self.killer().kill(&kill, None).await {
                    warn!(container = %c.name, error = %e, "killing container after its failed postStart hook failed");
                }
                return Err(("PostStartHookError", format!("PostStartHook failed: {m}")));
            }
        }
        Ok(())
    }

    /// Stops the pod: every running container through the kill sequence at once, with the
    /// pod's termination grace period (regular containers first, then sidecars in reverse
    /// order, as [`Killer::kill_all`] orders them), then the sandbox.
    async fn terminate(&mut self, grace: Option<i64>) {
        // kubelet's SyncTerminatingPod: liveness and startup probes stop before the kill.
        if let Some(p) = self.probes.as_mut() {
            p.stop_liveness_and_startup();
        }
        let grace = grace.unwrap_or_else(|| self.grace()).max(0);
        let now = self.ctx.clock.now();
        info!(grace_seconds = grace, "terminating pod");
        self.status.send_modify(|s| {
            s.terminating_since.get_or_insert(now);
            s.grace = Some(grace);
        });
        let mut attempt = 0u32;
        let obs = loop {
            match self.observe().await {
                Ok(o) => break o,
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 {
                        warn!(error = %e, "cannot observe pod to terminate it; retrying");
                    }
                    self.drain_restart();
                    tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
                }
            }
        };
        let kills: Vec<Kill> = obs
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| Kill {
                id: c.id.clone(),
                name: c.name.clone(),
                message: None,
                reason: KillReason::Other,
                grace_override: Some(grace),
            })
            .collect();
        let killer = self.killer();
        // While the containers stop, readiness keeps probing (kubelet: Ready turns False during
        // termination when the readiness probe starts failing).
        let mut all = std::pin::pin!(killer.kill_all(kills));
        let results = loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tokio::time::sleep(self.ctx.relist_period) => self.probe_while_terminating().await,
            }
        };
        for (k, r) in results {
            if let Err(e) = r {
                warn!(container = %k.name, error = %e, "stopping container failed");
            }
        }
        self.drain_restart();
        for sb in obs
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
        {
            if let Err(e) = self.ctx.runtime.stop_pod_sandbox(&sb.id).await {
                warn!(sandbox = %sb.id, error = %e, "stopping sandbox failed");
            }
        }
        if let (Subject::Pod(p), Ok(obs)) = (&self.subject, self.observe().await) {
            let p = p.clone();
            self.publish(&p, &obs, &BTreeMap::new());
        }
        self.drain_restart();
        info!("pod terminated");
    }

    /// One round of readiness probing and status publishing during termination.
    async fn probe_while_terminating(&mut self) {
        let Subject::Pod(pod) = &self.subject else {
            return;
        };
        let pod = pod.clone();
        let Ok(obs) = self.observe().await else {
            return;
        };
        let now = self.ctx.clock.now();
        let ip = self.probe_ip(&pod, &obs);
        if let Some(p) = self.probes.as_mut() {
            p.observe_runtime(&obs.containers, now);
            let events = if p.next_due(now).is_some_and(|d| d <= now) {
                p.run_due(now, &ip).await
            } else {
                Vec::new()
            };
            for e in events {
                if let crate::prober::ProbeEvent::AttemptFailed { message, .. } = e {
                    self.event("Warning", "Unhealthy", &message);
                }
            }
        }
        self.publish(&pod, &obs, &BTreeMap::new());
    }

    /// Notes a `Restart` that arrived during termination.
    fn drain_restart(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                WorkerMsg::Restart | WorkerMsg::RestartPod { .. } => self.restart_requested = true,
                WorkerMsg::Update(p) => self.subject = Subject::Pod(p),
                WorkerMsg::Terminate { .. } => self.restart_requested = false,
                WorkerMsg::RuntimeChanged => {}
            }
        }
    }

    /// Removes the pod's containers, sandboxes, cgroup, volumes and logs. Retries until the
    /// runtime answers: a pod is only forgotten once nothing of it is left.
    async fn cleanup(&mut self) {
        let mut attempt = 0u32;
        loop {
            match self.try_cleanup().await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 {
                        warn!(error = %e, "cleaning up pod failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
                }
            }
        }
        let uid = self.subject.uid().to_string();
        // Every sandbox is gone: the pod cgroup they ran in can go too (before the pod's
        // directory, which marks the pod as not fully cleaned up until then).
        let mut cgroup_left = false;
        if let Some(mountinfo) = self.ctx.cgroup_mountinfo.clone() {
            let u = uid.clone();
            let removed =
                tokio::task::spawn_blocking(move || kuberuntime::remove_pod_cgroup(&u, &mountinfo))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
            match removed {
                Ok((killed, left)) => {
                    if killed > 0 {
                        warn!(
                            processes = killed,
                            "killed processes left in the pod's cgroup after its sandboxes were removed"
                        );
                    }
                    for (dir, e) in &left {
                        warn!(cgroup = %dir.display(), error = %e, "cannot remove the pod's cgroup");
                    }
                    cgroup_left = !left.is_empty();
                }
                Err(e) => {
                    warn!(error = %e, "cannot remove the pod's cgroup");
                    cgroup_left = true;
                }
            }
        }
        if cgroup_left {
            // The directory marks the pod as not fully cleaned up: the agent's next start
            // finds it and tries the cgroup again.
            warn!("keeping the pod's directory until its cgroup can be removed (next agent start)");
        } else if let Err(e) = kuberuntime::cleanup_pod_dir(&self.ctx.node, &uid) {
            warn!(error = %e, "removing pod directory failed");
        }
        if let Subject::Pod(p) = &self.subject {
            let _ = std::fs::remove_dir_all(self.ctx.node.pod_log_dir(p));
        }
        debug!("pod cleaned up");
    }

    async fn try_cleanup(&self) -> Result<(), RuntimeError> {
        let obs = self.observe().await?;
        for c in &obs.containers {
            if c.state == ContainerState::Running {
                self.ctx
                    .runtime
                    .stop_container(&c.id, Duration::from_secs(2))
                    .await?;
            }
            self.ctx.runtime.remove_container(&c.id).await?;
        }
        if !obs.containers.is_empty() {
            staticlet_runtime::fault::point("teardown-containers-removed");
        }
        for sb in &obs.sandboxes {
            self.ctx.runtime.stop_pod_sandbox(&sb.id).await?;
            self.ctx.runtime.remove_pod_sandbox(&sb.id).await?;
        }
        Ok(())
    }
}
