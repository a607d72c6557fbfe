//! Container probes: liveness, readiness and startup (≈ kubelet `pkg/kubelet/prober`).
//!
//! - [`handler`]: one attempt of an exec / httpGet / tcpSocket / grpc probe (and sleep hooks).
//! - [`state`]: the pure per-container, per-kind state machine (thresholds, initial delay,
//!   period, initial results), table-tested.
//! - [`ProbeManager`] (here): one per pod worker. It tracks the probed containers of the pod
//!   (app containers and sidecars), decides which probes are due, runs them concurrently and
//!   turns results into [`ProbeEvent`]s and into the `started` / `ready` values of container
//!   statuses. It never reads a clock (times are passed in) and never kills anything itself.
//!
//! # Integrating it into the pod worker
//!
//! The manager is owned by the worker (one per pod UID, created with the pod's spec; a spec
//! change means a new UID and so a new worker, hence a new manager):
//!
//! 1. **Create** it when the worker starts syncing:
//!    `ProbeManager::new(ctx.runtime.clone(), pod.spec())`. A manager whose
//!    [`has_probes`](ProbeManager::has_probes) is false can be skipped entirely (then
//!    `started = running` and `ready = running` for app containers and sidecars, as today).
//! 2. **Observe** after every successful `observe()` of the runtime, before `publish`:
//!    `probes.observe_runtime(&obs.containers, now)`. It picks the newest attempt per name, so a
//!    new container instance (new id) resets that container's probes (kubelet's worker does
//!    the same when it sees a new container id), and a container that is not running is not
//!    probed and is not ready.
//! 3. **Status**: in [`status::compute`](crate::status::compute), for a *running* app
//!    container or sidecar, take `started` from [`ProbeManager::started`] and `ready` from
//!    [`ProbeManager::ready`] instead of `true` (kubelet `prober_manager.UpdatePodStatus`).
//!    Both are `false` for a container that is not running. Regular init containers are not
//!    probed (validation forbids it); keep their current logic. Pod conditions `Ready` and
//!    `ContainersReady` then follow from the containers' `ready`, as they already do.
//! 4. **Run probes**: add [`ProbeManager::next_due`] to the worker's wake-up time (`wake_at`,
//!    via `clock.instant_at`). When woken (or on any loop iteration), call
//!    `probes.run_due(clock.now(), pod_ip).await`, where `pod_ip` is the sandbox IP, or the
//!    host IP under `hostNetwork` (the same value `try_start` passes as the pod IP). That runs
//!    every due probe concurrently and returns within the longest probe timeout (+1 s).
//!    The pod worker uses the two halves, `take_due` then [`ProbeManager::apply`], and races
//!    the jobs against its messages: a message (a termination, an update; not the manager's
//!    "the runtime changed", which only asks for a sync afterwards) wins at once and the jobs
//!    go back with [`ProbeManager::abandon`], their attempts thrown away. Another
//!    way is to spawn the jobs:
//!    `take_due(now, pod_ip)` returns `'static` [`ProbeJob`]s to `tokio::spawn` (`job.run()`),
//!    whose [`ProbeDone`] results go back through a channel into the worker's `select!` and
//!    into [`ProbeManager::apply`]. Results for a container instance that has been replaced
//!    meanwhile are ignored.
//! 5. **Events** returned by `observe_runtime`, `run_due`/`apply` and
//!    `stop_liveness_and_startup`:
//!    - [`ProbeEvent::ContainerUnhealthy`]: liveness or startup reached its failure threshold.
//!      The worker must stop that container (`container_id`) with a grace period of
//!      `grace_period_seconds` if set (probe-level `terminationGracePeriodSeconds`), else the
//!      pod's `terminationGracePeriodSeconds`, through the kill sequence
//!      (`pod_workers::kill`: preStop hook, 2 s floor). kubelet logs/records `message` as a `Warning Unhealthy` event
//!      and kills with "Container <name> failed <liveness|startup> probe, will be restarted"
//!      ([`ProbeEvent::kill_message`]). Whether it is started again is the plan's usual
//!      restart-policy decision once it has exited (with the usual back-off). This kill must
//!      happen even under `restartPolicy: Never`. Simplest wiring: remember the id in the
//!      worker's memory and have `plan` emit `Action::KillContainer` for it while it runs.
//!    - [`ProbeEvent::ReadinessChanged`] and [`ProbeEvent::Started`]: the container's `ready`
//!      / `started` changed; re-publish the status (no other action).
//! 6. **Termination**: at the start of `terminate()` (kubelet `SyncTerminatingPod`: "stop
//!    liveness/startup probes" before killing), call
//!    [`stop_liveness_and_startup`](ProbeManager::stop_liveness_and_startup). Readiness keeps
//!    running while containers are being stopped: keep calling `observe_runtime` and
//!    `run_due` and publishing status while waiting for the stops (e2e
//!    mirror_pod_readiness_test: `Ready` goes `False` during termination when the readiness
//!    probe starts failing). Liveness and startup are left at `Success`, as kubelet does
//!    ("to ensure quiet shutdown").
//!
//! Differences from kubelet, on purpose: the first attempt is due exactly `initialDelaySeconds`
//! after the container started (kubelet's ticker is phased from the worker's creation, so its
//! first attempt comes up to one period later, and a random jitter after a kubelet restart is
//! added); a container's attempts are not retried 3 times on prober error (they are thrown
//! away and the next period tries again).

pub mod handler;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use staticlet_runtime::{ContainerId, ContainerRuntime, ContainerState, ContainerStatus};
use tracing::{debug, info, warn};

use crate::kuberuntime::ContainerKind;
pub use handler::{ProbeHandler, ProbeOutcome, Target};
pub use state::{ProbeKind, ProbeResult, ProbeState, ProbeTiming};

/// What the manager needs to know about the current instance of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    pub running: bool,
    /// When it started running (`state.running.startedAt`).
    pub started_at: Option<SystemTime>,
}

impl ContainerInfo {
    pub fn from_status(c: &ContainerStatus) -> Self {
        Self {
            id: c.id.clone(),
            running: c.state == ContainerState::Running,
            started_at: c.started_at,
        }
    }
}

/// Something the worker must act on (see the module doc, step 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Liveness or startup failed `failureThreshold` times: kill the container.
    ContainerUnhealthy {
        container: String,
        container_id: ContainerId,
        kind: ProbeKind,
        /// kubelet's event text: `<Kind> probe failed: <output>`.
        message: String,
        /// The probe's `terminationGracePeriodSeconds`, which overrides the pod's for this kill.
        grace_period_seconds: Option<i64>,
    },
    /// One attempt of any probe failed (or could not run): kubelet records a Warning
    /// `Unhealthy` event for every such attempt, readiness included.
    AttemptFailed {
        container: String,
        kind: ProbeKind,
        /// kubelet's event text: `<Kind> probe failed: <output>` or `<Kind> probe errored: ...`.
        message: String,
    },
    /// The container's `ready` changed.
    ReadinessChanged { container: String, ready: bool },
    /// The container's `started` became true.
    Started { container: String },
}

impl ProbeEvent {
    /// For `ContainerUnhealthy`: kubelet's kill message.
    pub fn kill_message(&self) -> Option<String> {
        match self {
            ProbeEvent::ContainerUnhealthy {
                container, kind, ..
            } => Some(format!(
                "Container {container} failed {} probe, will be restarted",
                kind.as_str().to_ascii_lowercase()
            )),
            _ => None,
        }
    }
}

/// One probe of one container, across its instances.
#[derive(Debug)]
struct Slot {
    kind: ProbeKind,
    timing: ProbeTiming,
    handler: Result<Arc<ProbeHandler>, String>,
    /// The state for the current running instance.
    state: Option<ProbeState>,
    in_flight: bool,
    /// The handler error was logged for this instance.
    warned: bool,
}

#[derive(Debug)]
struct Tracked {
    slots: BTreeMap<ProbeKind, Slot>,
    instance: Option<ContainerInfo>,
}

impl Tracked {
    fn running(&self) -> bool {
        self.instance.as_ref().is_some_and(|i| i.running)
    }

    fn result(&self, kind: ProbeKind) -> Option<ProbeResult> {
        self.slots.get(&kind).map(|s| {
            s.state
                .as_ref()
                .map_or(ProbeResult::Unknown, |s| s.result())
        })
    }

    fn started(&self) -> bool {
        self.running()
            && self
                .result(ProbeKind::Startup)
                .is_none_or(|r| r == ProbeResult::Success)
    }

    fn ready(&self) -> bool {
        self.started()
            && self
                .result(ProbeKind::Readiness)
                .is_none_or(|r| r == ProbeResult::Success)
    }

    /// Whether `kind` may run now (kubelet's gating in `doProbe`).
    fn gated_open(&self, kind: ProbeKind, terminating: bool) -> bool {
        if !self.running() {
            return false;
        }
        match kind {
            ProbeKind::Startup => !terminating,
            ProbeKind::Liveness => !terminating && self.started(),
            ProbeKind::Readiness => self.started(),
        }
    }
}

/// A probe attempt ready to run; `'static`, so it can be spawned.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub container: String,
    pub kind: ProbeKind,
    pub handler: Arc<ProbeHandler>,
    pub target: Target,
    pub timeout: std::time::Duration,
    /// When the attempt was scheduled to begin (the `now` given to `take_due`).
    pub at: SystemTime,
}

impl ProbeJob {
    /// Runs the attempt.
    pub async fn run(self) -> ProbeDone {
        let outcome = handler::run(&self.handler, &self.target, self.timeout).await;
        ProbeDone {
            container: self.container,
            container_id: self.target.container_id,
            kind: self.kind,
            at: self.at,
            outcome,
        }
    }
}

/// The result of a [`ProbeJob`], for [`ProbeManager::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeDone {
    pub container: String,
    pub container_id: ContainerId,
    pub kind: ProbeKind,
    pub at: SystemTime,
    pub outcome: ProbeOutcome,
}

/// The probes of one pod. See the module doc.
pub struct ProbeManager {
    runtime: Arc<dyn ContainerRuntime>,
    containers: BTreeMap<String, Tracked>,
    terminating: bool,
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeManager")
            .field("containers", &self.containers)
            .field("terminating", &self.terminating)
            .finish_non_exhaustive()
    }
}

fn slot(kind: ProbeKind, probe: &Probe, c: &Container) -> Slot {
    Slot {
        kind,
        timing: ProbeTiming::of(probe),
        handler: ProbeHandler::from_probe(probe, c).map(Arc::new),
        state: None,
        in_flight: false,
        warned: false,
    }
}

impl ProbeManager {
    /// A manager for the app containers and sidecars of `spec`.
    pub fn new(runtime: Arc<dyn ContainerRuntime>, spec: &PodSpec) -> Self {
        let probed = spec.containers.iter().chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| ContainerKind::of_init(c) == ContainerKind::Sidecar),
        );
        let containers = probed
            .map(|c| {
                let mut slots = BTreeMap::new();
                for (kind, p) in [
                    (ProbeKind::Startup, &c.startup_probe),
                    (ProbeKind::Liveness, &c.liveness_probe),
                    (ProbeKind::Readiness, &c.readiness_probe),
                ] {
                    if let Some(p) = p {
                        slots.insert(kind, slot(kind, p, c));
                    }
                }
                (
                    c.name.clone(),
                    Tracked {
                        slots,
                        instance: None,
                    },
                )
            })
            .collect();
        Self {
            runtime,
            containers,
            terminating: false,
        }
    }

    /// Whether any container of the pod has a probe.
    pub fn has_probes(&self) -> bool {
        self.containers.values().any(|t| !t.slots.is_empty())
    }

    /// `started` of the container's status (kubelet `isContainerStarted`): running, and its
    /// startup probe (if any) has succeeded. `None` for a container this manager does not track.
    pub fn started(&self, container: &str) -> Option<bool> {
        self.containers.get(container).map(Tracked::started)
    }

    /// `ready` of the container's status: started, running, and its readiness probe (if any)
    /// has succeeded. `None` for a container this manager does not track.
    pub fn ready(&self, container: &str) -> Option<bool> {
        self.containers.get(container).map(Tracked::ready)
    }

    /// The settled result of one probe of the current instance (`None`: no such probe).
    pub fn result(&self, container: &str, kind: ProbeKind) -> Option<ProbeResult> {
        self.containers.get(container)?.result(kind)
    }

    fn snapshot(&self) -> BTreeMap<String, (bool, bool)> {
        self.containers
            .iter()
            .map(|(n, t)| (n.clone(), (t.started(), t.ready())))
            .collect()
    }

    fn diff(&self, before: &BTreeMap<String, (bool, bool)>, events: &mut Vec<ProbeEvent>) {
        for (name, t) in &self.containers {
            let (s0, r0) = before.get(name).copied().unwrap_or_default();
            let (s1, r1) = (t.started(), t.ready());
            if s1 && !s0 {
                events.push(ProbeEvent::Started {
                    container: name.clone(),
                });
            }
            if r1 != r0 {
                events.push(ProbeEvent::ReadinessChanged {
                    container: name.clone(),
                    ready: r1,
                });
            }
        }
    }

    /// Takes in the newest runtime container of each name (all attempts may be passed).
    pub fn observe_runtime(
        &mut self,
        containers: &[ContainerStatus],
        now: SystemTime,
    ) -> Vec<ProbeEvent> {
        let mut latest: BTreeMap<&str, &ContainerStatus> = BTreeMap::new();
        for c in containers {
            let newer = latest
                .get(c.name.as_str())
                .is_none_or(|l| (c.attempt, c.created_at) > (l.attempt, l.created_at));
            if newer {
                latest.insert(c.name.as_str(), c);
            }
        }
        let infos: Vec<(String, Option<ContainerInfo>)> = self
            .containers
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    latest
                        .get(n.as_str())
                        .map(|c| ContainerInfo::from_status(c)),
                )
            })
            .collect();
        let mut events = Vec::new();
        for (name, info) in infos {
            events.extend(self.observe(&name, info, now));
        }
        events
    }

    /// Takes in the current instance of one container (`None`: there is none).
    pub fn observe(
        &mut self,
        container: &str,
        info: Option<ContainerInfo>,
        now: SystemTime,
    ) -> Vec<ProbeEvent> {
        let before = self.snapshot();
        let terminating = self.terminating;
        let Some(t) = self.containers.get_mut(container) else {
            return Vec::new();
        };
        let same = t.instance.as_ref().map(|i| &i.id) == info.as_ref().map(|i| &i.id);
        if !same {
            for s in t.slots.values_mut() {
                s.state = None;
                s.in_flight = false;
                s.warned = false;
            }
        }
        t.instance = info;
        if let Some(inst) = t.instance.as_ref().filter(|i| i.running) {
            let started_at = inst.started_at.unwrap_or(now);
            for s in t.slots.values_mut() {
                if s.state.is_none() {
                    debug!(container, kind = %s.kind, "probing new container instance");
                    let mut st = ProbeState::with_timing(s.timing, s.kind, started_at);
                    if terminating && s.kind != ProbeKind::Readiness {
                        st.stop_with(ProbeResult::Success);
                    }
                    s.state = Some(st);
                }
            }
        } else if let Some(st) = t
            .slots
            .get_mut(&ProbeKind::Readiness)
            .and_then(|s| s.state.as_mut())
        {
            // kubelet: a probed container that is not running is not ready.
            st.force(ProbeResult::Failure);
        }
        let mut events = Vec::new();
        self.diff(&before, &mut events);
        events
    }

    /// When the next probe is due (never before `now`), or `None` if nothing will run
    /// until the containers change.
    pub fn next_due(&self, now: SystemTime) -> Option<SystemTime> {
        self.containers
            .values()
            .flat_map(|t| {
                t.slots
                    .values()
                    .filter(|s| !s.in_flight && t.gated_open(s.kind, self.terminating))
                    .filter_map(move |s| s.state.as_ref()?.due(now))
            })
            .min()
    }

    /// The probes due at `now`, marked in flight; see the module doc, step 4.
    pub fn take_due(&mut self, now: SystemTime, pod_ip: &str) -> Vec<ProbeJob> {
        let mut jobs = Vec::new();
        let terminating = self.terminating;
        for (name, t) in self.containers.iter_mut() {
            let open: Vec<ProbeKind> = t
                .slots
                .keys()
                .copied()
                .filter(|k| t.gated_open(*k, terminating))
                .collect();
            let Some(id) = t.instance.as_ref().map(|i| i.id.clone()) else {
                continue;
            };
            for kind in open {
                let s = t.slots.get_mut(&kind).expect("key from the map");
                if s.in_flight {
                    continue;
                }
                let Some(st) = s.state.as_mut() else {
                    continue;
                };
                if st.due(now).is_none_or(|d| d > now) {
                    continue;
                }
                match &s.handler {
                    Ok(h) => {
                        s.in_flight = true;
                        jobs.push(ProbeJob {
                            container: name.clone(),
                            kind,
                            handler: h.clone(),
                            target: Target {
                                runtime: self.runtime.clone(),
                                container_id: id.clone(),
                                pod_ip: pod_ip.to_string(),
                            },
                            timeout: s.timing.timeout,
                            at: now,
                        });
                    }
                    Err(e) => {
                        // kubelet: a prober error; the attempt is thrown away.
                        if !std::mem::replace(&mut s.warned, true) {
                            warn!(container = %name, %kind, error = %e, "probe cannot run");
                        }
                        st.record(state::Attempt::Error, now);
                    }
                }
            }
        }
        jobs
    }

    /// Applies the result of a job from [`take_due`](Self::take_due).
    pub fn apply(&mut self, done: ProbeDone) -> Vec<ProbeEvent> {
        let before = self.snapshot();
        let mut events = Vec::new();
        let Some(t) = self.containers.get_mut(&done.container) else {
            return events;
        };
        if t.instance.as_ref().map(|i| &i.id) != Some(&done.container_id) {
            debug!(container = %done.container, "dropping a probe result of a replaced container");
            return events;
        }
        let Some(s) = t.slots.get_mut(&done.kind) else {
            return events;
        };
        s.in_flight = false;
        let grace = s.timing.termination_grace_period_seconds;
        let Some(st) = s.state.as_mut() else {
            return events;
        };
        let name = &done.container;
        let kind = done.kind;
        match &done.outcome {
            ProbeOutcome::Success => debug!(container = %name, %kind, "probe succeeded"),
            ProbeOutcome::Failure(m) => {
                info!(container = %name, %kind, message = %m, "probe failed");
                events.push(ProbeEvent::AttemptFailed {
                    container: name.clone(),
                    kind,
                    message: format!("{kind} probe failed: {m}"),
                });
            }
            ProbeOutcome::Error(m) => {
                warn!(container = %name, %kind, error = %m, "probe errored");
                events.push(ProbeEvent::AttemptFailed {
                    container: name.clone(),
                    kind,
                    message: format!("{kind} probe errored: {m}"),
                });
            }
        }
        let tr = st.record(done.outcome.attempt(), done.at);
        if let (Some(tr), ProbeOutcome::Failure(m)) = (tr, &done.outcome) {
            if tr.to == ProbeResult::Failure && kind != ProbeKind::Readiness {
                warn!(container = %name, %kind, message = %m, "container is unhealthy; it will be killed");
                events.push(ProbeEvent::ContainerUnhealthy {
                    container: name.clone(),
                    container_id: done.container_id.clone(),
                    kind,
                    message: format!("{kind} probe failed: {m}"),
                    grace_period_seconds: grace,
                });
            }
        }
        self.diff(&before, &mut events);
        events
    }

    /// Runs every probe due at `now` concurrently and applies the results.
    pub async fn run_due(&mut self, now: SystemTime, pod_ip: &str) -> Vec<ProbeEvent> {
        let jobs = self.take_due(now, pod_ip);
        if jobs.is_empty() {
            return Vec::new();
        }
        let done = futures::future::join_all(jobs.into_iter().map(ProbeJob::run)).await;
        done.into_iter().flat_map(|d| self.apply(d)).collect()
    }

    /// Gives back jobs of [`take_due`](Self::take_due) (by container and kind) whose attempts
    /// were not run to the end because the worker had a message to act on first: their
    /// attempts are thrown away (nothing is recorded) and they are due again at once.
    pub fn abandon(&mut self, jobs: &[(String, ProbeKind)]) {
        for (container, kind) in jobs {
            if let Some(s) = self
                .containers
                .get_mut(container)
                .and_then(|t| t.slots.get_mut(kind))
            {
                s.in_flight = false;
            }
        }
    }

    /// Pod termination: liveness and startup stop for good (left at `Success`, as kubelet
    /// does); readiness keeps running.
    pub fn stop_liveness_and_startup(&mut self) -> Vec<ProbeEvent> {
        let before = self.snapshot();
        self.terminating = true;
        for t in self.containers.values_mut() {
            for s in t.slots.values_mut() {
                if s.kind == ProbeKind::Readiness {
                    continue;
                }
                s.in_flight = false;
                if let Some(st) = s.state.as_mut() {
                    st.stop_with(ProbeResult::Success);
                }
            }
        }
        let mut events = Vec::new();
        self.diff(&before, &mut events);
        events
    }
}

#[cfg(test)]
mod tests;
