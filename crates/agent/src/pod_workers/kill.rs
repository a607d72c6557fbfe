//! The one sequence by which a pod worker stops a container (≈ kubelet's `killContainer` in
//! `kuberuntime_container.go`). Every path goes through [`Killer::kill`]: a liveness or startup
//! probe failure, a failed postStart hook, a changed container spec, `activeDeadlineSeconds`, a
//! sandbox that died under running containers, and the pod's termination (manifest removed or
//! edited, agent-side orphans).
//!
//! The sequence, as kubelet's:
//! 1. the grace period: the probe's `terminationGracePeriodSeconds` for a liveness or startup
//!    kill when set, else the pod's `terminationGracePeriodSeconds` (30 s by default); a caller's
//!    override (the pod's termination grace) replaces it ([`grace_period`], pure);
//! 2. a `Normal` `Killing` event with kubelet's message (`Stopping container NAME` unless the
//!    caller gives the reason, e.g. `Container app failed liveness probe, will be restarted`);
//! 3. the container's preStop hook (exec, httpGet or sleep) when it has one and the grace
//!    period is not zero, bounded by the grace period, whose time it uses up; a failure is a
//!    `Warning` `FailedPreStopHook` event (without the hook's output, which may hold secrets)
//!    and the kill goes on;
//! 4. with sidecars (restartable init containers), the container's turn
//!    ([`TerminationOrdering`]): regular containers first, then sidecars in reverse order, each
//!    waiting at most until the end of its grace period;
//! 5. the stop: the runtime sends the container's stop signal (`lifecycle.stopSignal`, else
//!    the image's; the CRI backend has no field for it and uses the image's), then SIGKILL when
//!    what is left of the grace period runs out, but never less than 2 s after the signal
//!    (kubelet's `minimumGracePeriodInSeconds`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use staticlet_manifest::StaticPod;
use staticlet_runtime::{ContainerId, ContainerRuntime, RuntimeError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::prober::handler::{self, ProbeHandler, ProbeOutcome};

/// kubelet's `minimumGracePeriodInSeconds`: the least time a container gets between its stop
/// signal and SIGKILL.
pub const MINIMUM_GRACE_PERIOD: Duration = Duration::from_secs(2);

/// Why a container is killed, as far as the grace period depends on it (kubelet's
/// `containerKillReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    LivenessProbe,
    StartupProbe,
    /// Anything else (spec change, postStart failure, deadline, termination).
    Other,
}

/// One container to kill.
#[derive(Debug, Clone)]
pub struct Kill {
    pub id: ContainerId,
    pub name: String,
    /// The `Killing` event's message; `None` for kubelet's default `Stopping container NAME`.
    pub message: Option<String>,
    pub reason: KillReason,
    /// Replaces the computed grace period (the pod's termination grace, in seconds).
    pub grace_override: Option<i64>,
}

/// The grace period of a kill in seconds (kubelet's `setTerminationGracePeriod`, then the
/// override): a liveness or startup kill uses that probe's `terminationGracePeriodSeconds` when
/// set; otherwise the pod's, 30 s by default; an override wins over both. Negative values
/// count as 0.
pub fn grace_period(
    spec: Option<&PodSpec>,
    container: Option<&Container>,
    reason: KillReason,
    grace_override: Option<i64>,
) -> i64 {
    if let Some(g) = grace_override {
        return g.max(0);
    }
    let probe = container.and_then(|c| match reason {
        KillReason::LivenessProbe => c.liveness_probe.as_ref(),
        KillReason::StartupProbe => c.startup_probe.as_ref(),
        KillReason::Other => None,
    });
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0)
}

/// The container named `name` in the pod's spec (regular, init or sidecar).
pub fn container_spec<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Records a pod event: `(type, reason, message)`.
pub type EventFn = dyn Fn(&'static str, &str, &str) + Send + Sync;

/// What the kill sequence needs from its worker (cheap to clone, borrows nothing of it, so
/// kills can run while the worker goes on probing).
#[derive(Clone)]
pub struct Killer {
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The pod's current version (`None` for an orphan: no hooks, the caller's grace).
    pub pod: Option<Arc<StaticPod>>,
    /// Where hooks reach the pod (its IP, or the node's under hostNetwork).
    pub pod_ip: String,
    pub events: Arc<EventFn>,
}

impl Killer {
    /// Kills one container (see the module doc). Returns the runtime's error if the stop
    /// failed; a container that is already gone is success.
    pub async fn kill(
        &self,
        kill: &Kill,
        ordering: Option<&TerminationOrdering>,
    ) -> Result<(), RuntimeError> {
        let spec = self.pod.as_deref().map(|p| p.spec());
        let container = spec.and_then(|s| container_spec(s, &kill.name));
        let grace = grace_period(spec, container, kill.reason, kill.grace_override);
        let deadline = Instant::now() + Duration::from_secs(grace as u64);
        let message = kill
            .message
            .clone()
            .unwrap_or_else(|| format!("Stopping container {}", kill.name));
        info!(container = %kill.name, grace_seconds = grace, "{message}");
        (self.events)("Normal", "Killing", &message);

        let pre_stop = container.and_then(|c| {
            let hook = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
            Some(ProbeHandler::from_lifecycle(hook, c))
        });
        if let (Some(hook), true) = (pre_stop, grace > 0) {
            if let Err(m) = self.run_pre_stop(kill, hook, deadline).await {
                warn!(container = %kill.name, output = %m, "preStop hook failed (FailedPreStopHook)");
                // kubelet: "do not record the message in the event so that secrets won't leak".
                (self.events)("Warning", "FailedPreStopHook", "PreStopHook failed");
            }
        }
        if let Some(o) = ordering {
            o.wait_for_turn(&kill.name, deadline).await;
        }
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(MINIMUM_GRACE_PERIOD);
        info!(container = %kill.name, timeout_ms = timeout.as_millis() as u64, "stopping container");
        let r = self.runtime.stop_container(&kill.id, timeout).await;
        if let Some(o) = ordering {
            o.terminated(&kill.name);
        }
        r
    }

    /// Kills containers of the pod at once (kubelet's `killContainersWithSyncResult`), in
    /// termination order when the pod has sidecars; each result beside its kill.
    pub async fn kill_all(&self, kills: Vec<Kill>) -> Vec<(Kill, Result<(), RuntimeError>)> {
        let names: Vec<String> = kills.iter().map(|k| k.name.clone()).collect();
        let ordering = self
            .pod
            .as_deref()
            .and_then(|p| TerminationOrdering::new(p.spec(), &names));
        let ordering = ordering.as_ref();
        futures::future::join_all(kills.into_iter().map(|k| async move {
            let r = self.kill(&k, ordering).await;
            (k, r)
        }))
        .await
    }

    /// Runs a preStop hook until it ends or the deadline passes; `Err` with its output or
    /// error when it failed.
    async fn run_pre_stop(
        &self,
        kill: &Kill,
        hook: Result<ProbeHandler, String>,
        deadline: Instant,
    ) -> Result<(), String> {
        let hook = hook?;
        let left = deadline.saturating_duration_since(Instant::now());
        info!(container = %kill.name, "running preStop hook");
        let target = handler::Target {
            runtime: self.runtime.clone(),
            container_id: kill.id.clone(),
            pod_ip: self.pod_ip.clone(),
        };
        // The hook's own timeout is the grace period; the outer one makes sure a hook that
        // does not honour it (a handler blocked in I/O) cannot hold the kill past it.
        match tokio::time::timeout(left, handler::run(&hook, &target, left)).await {
            Ok(ProbeOutcome::Success) => Ok(()),
            Ok(ProbeOutcome::Failure(m) | ProbeOutcome::Error(m)) => Err(m),
            Err(_) => {
                info!(container = %kill.name, "preStop hook did not complete in the grace period");
                Ok(())
            }
        }
    }
}

/// Which containers each container waits for before its stop signal: with sidecars
/// (restartable init containers), regular containers stop first, then the sidecars in reverse
/// spec order (kubelet's `newTerminationOrdering`). Only containers being killed count: one not
/// in `killed` is not waited for. Pods without sidecars have no ordering.
pub fn termination_prerequisites(
    spec: &PodSpec,
    killed: &[String],
) -> Option<HashMap<String, Vec<String>>> {
    let sidecars: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    if sidecars.is_empty() {
        return None;
    }
    let regular: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let killed_set: BTreeSet<&str> = killed.iter().map(String::as_str).collect();
    let mut waits = HashMap::new();
    for (i, s) in sidecars.iter().enumerate() {
        let after: Vec<String> = regular
            .iter()
            .chain(sidecars[i + 1..].iter())
            .filter(|n| killed_set.contains(**n))
            .map(|n| n.to_string())
            .collect();
        waits.insert(s.to_string(), after);
    }
    Some(waits)
}

/// The order in which a pod's containers stop (see [`termination_prerequisites`]): a sidecar's
/// kill runs its preStop hook at once, with everyone else's, and then waits for its turn.
pub struct TerminationOrdering {
    waits: HashMap<String, Vec<String>>,
    done: watch::Sender<BTreeSet<String>>,
}

impl TerminationOrdering {
    /// The ordering of a pod's termination, `None` when the pod has no sidecars.
    pub fn new(spec: &PodSpec, killed: &[String]) -> Option<Self> {
        Some(Self {
            waits: termination_prerequisites(spec, killed)?,
            done: watch::channel(BTreeSet::new()).0,
        })
    }

    /// Waits until every container `name` waits for has stopped, or `deadline`.
    pub async fn wait_for_turn(&self, name: &str, deadline: Instant) {
        let Some(before) = self.waits.get(name).filter(|b| !b.is_empty()) else {
            return;
        };
        let mut rx = self.done.subscribe();
        let all_done = rx.wait_for(|done| before.iter().all(|b| done.contains(b)));
        if tokio::time::timeout_at(deadline, all_done).await.is_err() {
            info!(container = %name, "its turn to stop did not come within the grace period");
        }
    }

    /// Notes that `name` has stopped.
    pub fn terminated(&self, name: &str) {
        self.done.send_modify(|d| {
            d.insert(name.to_string());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Probe;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn grace_period_as_kubelet_computes_it() {
        let with_probe_grace = spec(json!({
            "terminationGracePeriodSeconds": 60,
            "containers": [{
                "name": "app",
                "livenessProbe": {"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 5},
                "startupProbe": {"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 7},
            }],
        }));
        let c = &with_probe_grace.containers[0];
        let plain = spec(json!({"containers": [{"name": "app"}]}));
        let negative =
            spec(json!({"terminationGracePeriodSeconds": -3, "containers": [{"name": "app"}]}));
        let cases: &[(&PodSpec, KillReason, Option<i64>, i64)] = &[
            (&with_probe_grace, KillReason::LivenessProbe, None, 5),
            (&with_probe_grace, KillReason::StartupProbe, None, 7),
            // The probe's grace is only for its own kills.
            (&with_probe_grace, KillReason::Other, None, 60),
            // An override (the pod's termination) wins.
            (&with_probe_grace, KillReason::LivenessProbe, Some(1), 1),
            (&with_probe_grace, KillReason::Other, Some(0), 0),
            // kubelet's default.
            (&plain, KillReason::Other, None, 30),
            (&plain, KillReason::LivenessProbe, None, 30),
            (&negative, KillReason::Other, None, 0),
        ];
        for (s, reason, over, want) in cases {
            let got = grace_period(Some(s), s.containers.first(), *reason, *over);
            assert_eq!(got, *want, "{reason:?} override {over:?}");
        }
        // A liveness probe without its own grace falls back to the pod's.
        let mut no_probe_grace = c.clone();
        no_probe_grace.liveness_probe = Some(Probe::default());
        assert_eq!(
            grace_period(
                Some(&with_probe_grace),
                Some(&no_probe_grace),
                KillReason::LivenessProbe,
                None
            ),
            60
        );
        // An orphan: no spec at all.
        assert_eq!(grace_period(None, None, KillReason::Other, Some(1)), 1);
        assert_eq!(grace_period(None, None, KillReason::Other, None), 30);
    }

    #[test]
    fn sidecars_stop_after_regular_containers_in_reverse_order() {
        let s = spec(json!({
            "containers": [{"name": "app"}, {"name": "web"}],
            "initContainers": [
                {"name": "setup"},
                {"name": "log", "restartPolicy": "Always"},
                {"name": "proxy", "restartPolicy": "Always"},
            ],
        }));
        let all: Vec<String> = ["app", "web", "log", "proxy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let w = termination_prerequisites(&s, &all).unwrap();
        assert_eq!(w["proxy"], ["app", "web"]);
        assert_eq!(w["log"], ["app", "web", "proxy"]);
        assert!(!w.contains_key("app") && !w.contains_key("setup"));
        // Containers that are not being killed (not running) are not waited for.
        let some: Vec<String> = vec!["app".into(), "log".into()];
        let w = termination_prerequisites(&s, &some).unwrap();
        assert_eq!(w["log"], ["app"]);
        // No sidecars: no ordering.
        assert!(
            termination_prerequisites(&spec(json!({"containers": [{"name": "a"}]})), &all)
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sidecar_waits_for_its_turn_but_not_past_its_deadline() {
        let s = spec(json!({
            "containers": [{"name": "app"}],
            "initContainers": [{"name": "log", "restartPolicy": "Always"}],
        }));
        let o = Arc::new(TerminationOrdering::new(&s, &["app".into(), "log".into()]).unwrap());
        let far = Instant::now() + Duration::from_secs(100);
        let waiter = {
            let o = o.clone();
            tokio::spawn(async move {
                o.wait_for_turn("log", far).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        o.terminated("app");
        let t = waiter.await.unwrap();
        assert_eq!(
            t,
            far - Duration::from_secs(97),
            "released when app stopped"
        );
        // Nobody stops: the wait ends at the deadline.
        let o = TerminationOrdering::new(&s, &["app".into(), "log".into()]).unwrap();
        let start = Instant::now();
        o.wait_for_turn("log", start + Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // Regular containers never wait.
        let start = Instant::now();
        o.wait_for_turn("app", start + Duration::from_secs(5)).await;
        assert_eq!(Instant::now(), start);
    }
}
