//! The pure step of a pod worker: observed runtime state + memory + time → actions
//! (≈ kubelet's `kuberuntime_manager.go` `computePodActions`).
//!
//! [`plan`] never does I/O and never reads a clock; the worker shell executes the returned
//! actions, re-observes (by id what it just made, else by listing the pod), and plans again. Everything here is table-tested.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Container;
use staticlet_manifest::StaticPod;
use staticlet_runtime::{
    labels, ContainerEvent, ContainerId, ContainerState, ContainerStatus, SandboxId, SandboxState,
    SandboxStatus,
};

use super::backoff::Backoff;
use crate::kuberuntime::{container_hash, ContainerKind};

/// What the runtime holds for one pod, as listed by its UID label.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub sandboxes: Vec<SandboxStatus>,
    pub containers: Vec<ContainerStatus>,
}

impl Observed {
    /// The newest sandbox (highest attempt, then newest).
    pub fn sandbox(&self) -> Option<&SandboxStatus> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.attempt, s.created_at))
    }

    /// The containers named `name`, newest attempt first.
    pub fn attempts(&self, name: &str) -> Vec<&ContainerStatus> {
        let mut v: Vec<_> = self.containers.iter().filter(|c| c.name == name).collect();
        v.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        v
    }

    /// The newest container named `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.attempts(name).into_iter().next()
    }

    /// How many containers have exited in this observation that `before` showed created or
    /// running (by container id).
    pub fn exits_since(&self, before: &Observed) -> usize {
        self.containers
            .iter()
            .filter(|c| c.state == ContainerState::Exited)
            .filter(|c| {
                before.containers.iter().any(|b| {
                    b.id == c.id
                        && matches!(b.state, ContainerState::Created | ContainerState::Running)
                })
            })
            .count()
    }

    /// Whether this observation already shows what `ev` reports (the object in that state or a
    /// later one), as for the runtime's echo of the worker's own create and start, which the
    /// worker read back by id: such an event needs no new sync.
    pub fn already_shows(&self, ev: &ContainerEvent) -> bool {
        fn rank(s: ContainerState) -> Option<u8> {
            match s {
                ContainerState::Created => Some(0),
                ContainerState::Running => Some(1),
                ContainerState::Exited => Some(2),
                ContainerState::Unknown => None,
            }
        }
        let Some(event_rank) = rank(ev.state) else {
            return false;
        };
        if let Some(c) = self.containers.iter().find(|c| c.id == ev.container_id) {
            return rank(c.state).is_some_and(|r| r >= event_rank);
        }
        // CRI runtimes report sandboxes in the same stream, by the sandbox's id.
        self.sandboxes.iter().any(|s| {
            s.id.0 == ev.container_id.0
                && (ev.state != ContainerState::Exited || s.state == SandboxState::NotReady)
        })
    }
}

/// Why a container is waiting, as shown in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// What a worker remembers between steps (lost on agent restart, like kubelet's).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Container restart back-off, keyed by [`backoff_key`].
    pub backoff: Backoff,
    /// Image pull back-off, keyed by image.
    pub image_backoff: Backoff,
    /// The last failure to start each container (ErrImagePull, CreateContainerError, ...).
    pub start_errors: HashMap<String, (Waiting, SystemTime)>,
    /// When the worker started the pod (for `activeDeadlineSeconds`).
    pub started_at: Option<SystemTime>,
    /// The least attempt number the next container of each name gets: one more than the
    /// highest attempt seen in the runtime, or found in the pod's log directory when the runtime
    /// holds none (kubelet's `calcRestartCountByLogDir`). A dead sandbox is removed with its
    /// containers, so without it a container started in the next sandbox would begin again at
    /// attempt 0: its restart count would go back (and its log file `0.log` be reused).
    pub next_attempts: HashMap<String, u32>,
}

impl Memory {
    /// A fresh memory for `pod`: its container restart back-off is the pod's own
    /// (`staticlet.io/backoff-*` annotations), else kubelet's.
    pub fn for_pod(pod: &StaticPod) -> Self {
        let policy = staticlet_manifest::extensions::backoff(pod.pod.metadata.annotations.as_ref());
        Self {
            backoff: Backoff::from_policy(&policy),
            ..Default::default()
        }
    }
}

/// Whether the pod has been active longer than its `activeDeadlineSeconds`.
pub fn deadline_exceeded(pod: &StaticPod, mem: &Memory, now: SystemTime) -> bool {
    match (pod.spec().active_deadline_seconds, mem.started_at) {
        (Some(d), Some(start)) if d > 0 => {
            now.duration_since(start).unwrap_or_default() >= Duration::from_secs(d as u64)
        }
        _ => false,
    }
}

/// One step's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop every running container and the sandbox (before a new sandbox).
    KillPod { reason: String },
    /// Create a sandbox with this attempt number.
    CreateSandbox { attempt: u32 },
    /// Stop an old sandbox.
    StopSandbox { id: SandboxId },
    /// Remove an old, stopped sandbox.
    RemoveSandbox { id: SandboxId },
    /// Pull (per policy), create and start a container. `restart_of` is the finish time of the
    /// attempt it replaces, for the back-off bookkeeping.
    StartContainer {
        name: String,
        kind: ContainerKind,
        attempt: u32,
        restart_of: Option<SystemTime>,
    },
    /// Stop a container through the kill sequence (preStop hook, stop signal, the pod's grace
    /// period); `message` is the `Killing` event's text (`None`: `Stopping container NAME`).
    KillContainer {
        id: ContainerId,
        name: String,
        message: Option<String>,
    },
    /// Remove an exited container.
    RemoveContainer { id: ContainerId },
}

/// The output of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When to plan again at the latest (a back-off ending).
    pub wake_at: Option<SystemTime>,
    /// Waiting reasons decided by this step (CrashLoopBackOff, ImagePullBackOff, ...).
    pub waiting: BTreeMap<String, Waiting>,
    /// The pod has finished (restartPolicy Never/OnFailure with nothing left to run).
    pub done: bool,
}

impl Plan {
    fn wake(&mut self, at: SystemTime) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The back-off key of a container: kubelet keys it by pod and container hash, so a new spec
/// starts with a fresh back-off.
pub fn backoff_key(c: &Container) -> String {
    format!("{}_{}", c.name, container_hash(c))
}

/// kubelet's `ShouldContainerBeRestarted` for an exited container.
pub fn should_restart(policy: &str, kind: ContainerKind, exit_code: Option<i32>) -> bool {
    if kind == ContainerKind::Sidecar {
        return true;
    }
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != Some(0),
        _ => true,
    }
}

fn is_running(c: &ContainerStatus) -> bool {
    c.state == ContainerState::Running
}

fn hash_of(c: &ContainerStatus) -> Option<&String> {
    c.labels.get(labels::CONTAINER_HASH)
}

struct Ctx<'a> {
    pod: &'a StaticPod,
    mem: &'a Memory,
    now: SystemTime,
    plan: Plan,
}

enum Gate {
    /// Start it now (with the finish time of the attempt it replaces).
    Go(Option<SystemTime>),
    /// Wait; the reason is recorded in the plan.
    Wait,
}

impl Ctx<'_> {
    fn pod_ref(&self) -> String {
        format!("{}_{}({})", self.pod.name, self.pod.namespace, self.pod.uid)
    }

    /// Decides whether a container that must (re)start may start now.
    fn gate(&mut self, c: &Container, previous: Option<&ContainerStatus>) -> Gate {
        let key = backoff_key(c);
        let image = c.image.clone().unwrap_or_default();
        // A start that failed (pull, create, start) waits for its back-off.
        if let Some((waiting, at)) = self.mem.start_errors.get(&c.name) {
            let until = if waiting.reason == "ErrImagePull" || waiting.reason == "ImagePullBackOff"
            {
                self.mem
                    .image_backoff
                    .in_backoff_since(&image, *at, self.now)
                    .map(|u| {
                        (
                            u,
                            Waiting::new(
                                "ImagePullBackOff",
                                format!("Back-off pulling image {image:?}"),
                            ),
                        )
                    })
            } else {
                self.mem
                    .backoff
                    .in_backoff_since(&key, *at, self.now)
                    .map(|u| (u, waiting.clone()))
            };
            if let Some((until, w)) = until {
                self.plan.waiting.insert(c.name.clone(), w);
                self.plan.wake(until);
                return Gate::Wait;
            }
        }
        let Some(prev) = previous else {
            return Gate::Go(None);
        };
        if prev.state != ContainerState::Exited {
            return Gate::Go(None);
        }
        let finished = prev.finished_at.unwrap_or(self.now);
        match self.mem.backoff.in_backoff_since(&key, finished, self.now) {
            Some(until) => {
                let d = self.mem.backoff.get(&key);
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    staticlet_manifest::duration::format_go_duration(d),
                    c.name,
                    self.pod_ref()
                );
                self.plan
                    .waiting
                    .insert(c.name.clone(), Waiting::new("CrashLoopBackOff", msg));
                self.plan.wake(until);
                Gate::Wait
            }
            None => Gate::Go(Some(finished)),
        }
    }

    fn start(
        &mut self,
        c: &Container,
        kind: ContainerKind,
        latest: Option<&ContainerStatus>,
    ) -> bool {
        let attempt = latest
            .map_or(0, |l| l.attempt + 1)
            .max(self.mem.next_attempts.get(&c.name).copied().unwrap_or(0));
        match self.gate(c, latest) {
            Gate::Go(restart_of) => {
                if let Some(l) = latest.filter(|l| l.state == ContainerState::Created) {
                    self.plan
                        .actions
                        .push(Action::RemoveContainer { id: l.id.clone() });
                }
                self.plan.actions.push(Action::StartContainer {
                    name: c.name.clone(),
                    kind,
                    attempt,
                    restart_of,
                });
                true
            }
            Gate::Wait => false,
        }
    }

    fn kill(&mut self, c: &ContainerStatus, message: Option<String>) {
        self.plan.actions.push(Action::KillContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            message,
        });
    }
}

/// kubelet's `Killing` message for a container whose spec changed.
fn changed(name: &str) -> String {
    format!("Container {name} definition changed, will be restarted")
}

/// One step for a pod that should be running. See the module doc.
pub fn plan(pod: &StaticPod, obs: &Observed, mem: &Memory, now: SystemTime) -> Plan {
    let mut cx = Ctx {
        pod,
        mem,
        now,
        plan: Plan::default(),
    };
    let spec = pod.spec();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits: Vec<&Container> = spec.init_containers.iter().flatten().collect();
    let apps: Vec<&Container> = spec.containers.iter().collect();

    // Garbage: containers of names no longer in the spec, and attempts older than the one kept
    // for `lastState`.
    for c in &obs.containers {
        let known = inits.iter().chain(apps.iter()).any(|s| s.name == c.name);
        if !known {
            if is_running(c) {
                cx.kill(
                    c,
                    Some(format!(
                        "Container {} is not in the pod spec any more, killing it",
                        c.name
                    )),
                );
            } else {
                cx.plan
                    .actions
                    .push(Action::RemoveContainer { id: c.id.clone() });
            }
        }
    }
    for s in inits.iter().chain(apps.iter()) {
        for old in obs.attempts(&s.name).into_iter().skip(2) {
            if old.state == ContainerState::Exited {
                cx.plan
                    .actions
                    .push(Action::RemoveContainer { id: old.id.clone() });
            }
        }
    }

    // Is the pod finished? (Never/OnFailure: every app container exited for good, or a regular
    // init container failed under Never.)
    let init_failed = policy == "Never"
        && inits.iter().any(|c| {
            ContainerKind::of_init(c) == ContainerKind::Init
                && obs
                    .latest(&c.name)
                    .is_some_and(|l| l.state == ContainerState::Exited && l.exit_code != Some(0))
        });
    let apps_done = !apps.is_empty()
        && apps.iter().all(|c| {
            obs.latest(&c.name).is_some_and(|l| {
                l.state == ContainerState::Exited
                    && hash_of(l) == Some(&container_hash(c))
                    && !should_restart(policy, ContainerKind::App, l.exit_code)
            })
        });
    let deadline = deadline_exceeded(pod, mem, now);
    if init_failed || apps_done || deadline {
        cx.plan.done = true;
        if deadline {
            for c in obs.containers.iter().filter(|c| is_running(c)) {
                // The pod failed (DeadlineExceeded): kubelet terminates it, with the default
                // message.
                cx.kill(c, None);
            }
        }
        for c in inits.iter().rev() {
            if let Some(l) = obs.latest(&c.name).filter(|l| is_running(l)) {
                if !deadline {
                    cx.kill(&l.clone(), None);
                }
            }
        }
        if let Some(sb) = obs.sandbox().filter(|s| s.state == SandboxState::Ready) {
            if cx
                .plan
                .actions
                .iter()
                .all(|a| !matches!(a, Action::KillContainer { .. }))
            {
                cx.plan
                    .actions
                    .push(Action::StopSandbox { id: sb.id.clone() });
            }
        }
        return cx.plan;
    }

    // Sandbox: a missing or dead sandbox means a fresh start of the whole pod.
    let sandbox = obs.sandbox();
    match sandbox {
        Some(sb) if sb.state == SandboxState::Ready => {
            for old in obs.sandboxes.iter().filter(|s| s.id != sb.id) {
                if old.state == SandboxState::Ready {
                    cx.plan
                        .actions
                        .push(Action::StopSandbox { id: old.id.clone() });
                } else {
                    cx.plan
                        .actions
                        .push(Action::RemoveSandbox { id: old.id.clone() });
                }
            }
        }
        _ => {
            if obs.containers.iter().any(is_running) {
                cx.plan.actions.push(Action::KillPod {
                    reason: "pod sandbox is not ready".into(),
                });
            }
            let attempt = sandbox.map_or(0, |s| s.attempt + 1);
            cx.plan.actions.push(Action::CreateSandbox { attempt });
            return cx.plan;
        }
    }

    // Init containers, one at a time, unless an app container has ever started (kubelet does
    // not re-run init containers then, even if their runtime containers are gone).
    let apps_started = apps.iter().any(|c| obs.latest(&c.name).is_some());
    if !apps_started {
        for c in &inits {
            let kind = ContainerKind::of_init(c);
            let latest = obs.latest(&c.name).cloned();
            match (&latest, kind) {
                (Some(l), _) if is_running(l) => {
                    if hash_of(l) != Some(&container_hash(c)) {
                        cx.kill(l, Some(changed(&l.name)));
                        return cx.plan;
                    }
                    if kind == ContainerKind::Sidecar {
                        continue;
                    }
                    return cx.plan; // a regular init container is still running
                }
                (Some(l), ContainerKind::Init)
                    if l.state == ContainerState::Exited && l.exit_code == Some(0) =>
                {
                    continue;
                }
                _ => {
                    cx.start(c, kind, latest.as_ref());
                    return cx.plan;
                }
            }
        }
    } else {
        // After initialisation, sidecars are kept running independently.
        for c in inits
            .iter()
            .filter(|c| ContainerKind::of_init(c) == ContainerKind::Sidecar)
        {
            let latest = obs.latest(&c.name).cloned();
            match &latest {
                Some(l) if is_running(l) => {
                    if hash_of(l) != Some(&container_hash(c)) {
                        cx.kill(l, Some(changed(&l.name)));
                    }
                }
                _ => {
                    cx.start(c, ContainerKind::Sidecar, latest.as_ref());
                }
            }
        }
    }

    // App containers.
    for c in &apps {
        let latest = obs.latest(&c.name).cloned();
        let want_hash = container_hash(c);
        match &latest {
            None => {
                cx.start(c, ContainerKind::App, None);
            }
            Some(l) => match l.state {
                ContainerState::Running => {
                    if hash_of(l) != Some(&want_hash) {
                        cx.kill(l, Some(changed(&l.name)));
                    }
                }
                ContainerState::Exited => {
                    let changed = hash_of(l) != Some(&want_hash);
                    if changed || should_restart(policy, ContainerKind::App, l.exit_code) {
                        cx.start(c, ContainerKind::App, latest.as_ref());
                    }
                }
                ContainerState::Created => {
                    cx.start(c, ContainerKind::App, latest.as_ref());
                }
                ContainerState::Unknown => cx.kill(
                    l,
                    Some(format!(
                        "Container {} is in an unknown state, killing it",
                        l.name
                    )),
                ),
            },
        }
    }
    cx.plan
}

#[cfg(test)]
mod tests;
