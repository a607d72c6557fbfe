//! Pod status as kubelet computes it (`kubelet_pods.go` `getPhase`, `generateAPIPodStatus`,
//! `status/generate.go`): container statuses, phase, the five conditions, IPs, QoS class.
//!
//! [`compute`] is pure: the worker owns its pod's status and calls it after every step.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sContainerStatus, HostIP, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use staticlet_manifest::StaticPod;
use staticlet_runtime::{ContainerState, ContainerStatus, SandboxState};

use crate::kuberuntime::ContainerKind;
use crate::pod_workers::plan::{Observed, Waiting};

/// Everything status is computed from.
#[derive(Debug)]
pub struct Input<'a> {
    pub pod: &'a StaticPod,
    pub obs: &'a Observed,
    /// Waiting reasons of this step (back-offs, start errors).
    pub waiting: &'a BTreeMap<String, Waiting>,
    pub start_time: SystemTime,
    /// Prefix of container IDs (`staticlet`, `containerd`, ...).
    pub runtime_name: &'a str,
    pub host_ip: &'a str,
    /// The previous status, for condition transition times and terminal phases.
    pub previous: Option<&'a PodStatus>,
    pub now: SystemTime,
    /// Probe results: `started` / `ready` of running containers with probes.
    pub probes: Option<&'a crate::prober::ProbeManager>,
    /// `activeDeadlineSeconds` has passed: the pod is Failed with reason DeadlineExceeded.
    pub deadline_exceeded: bool,
}

/// A `metav1.Time` (second precision, as Kubernetes serialises it) from a system time; times
/// before 1970 become the epoch.
pub fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs as i64).unwrap_or_default())
}

fn terminated(c: &ContainerStatus, runtime: &str) -> ContainerStateTerminated {
    let code = c.exit_code.unwrap_or(0);
    let reason = if c.reason.is_empty() {
        if code == 0 { "Completed" } else { "Error" }.to_string()
    } else {
        c.reason.clone()
    };
    ContainerStateTerminated {
        exit_code: code,
        reason: Some(reason),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: c.started_at.map(time),
        finished_at: c.finished_at.map(time),
        container_id: Some(format!("{runtime}://{}", c.id)),
        signal: None,
    }
}

fn waiting_state(w: &Waiting) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    }
}

fn container_status(
    input: &Input<'_>,
    spec: &Container,
    kind: ContainerKind,
    default_waiting: &str,
    apps_started: bool,
) -> K8sContainerStatus {
    let attempts = input.obs.attempts(&spec.name);
    let latest = attempts.first().copied();
    let previous = attempts.get(1).copied();
    let image = spec.image.clone().unwrap_or_default();
    let mut st = K8sContainerStatus {
        name: spec.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        ..Default::default()
    };
    let last_terminated = |c: Option<&ContainerStatus>| {
        c.filter(|c| c.state == ContainerState::Exited)
            .map(|c| K8sState {
                terminated: Some(terminated(c, input.runtime_name)),
                ..Default::default()
            })
    };
    let Some(l) = latest else {
        if kind == ContainerKind::Init && apps_started {
            // kubelet keeps reporting a completed init container whose runtime container is gone.
            st.state = Some(K8sState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            return st;
        }
        let w = input
            .waiting
            .get(&spec.name)
            .cloned()
            .unwrap_or_else(|| Waiting::new(default_waiting, ""));
        st.state = Some(waiting_state(&w));
        return st;
    };
    st.restart_count = l.attempt as i32;
    st.image_id = l.image_ref.clone();
    st.container_id = Some(format!("{}://{}", input.runtime_name, l.id));
    match l.state {
        ContainerState::Running => {
            st.state = Some(K8sState {
                running: Some(ContainerStateRunning {
                    started_at: l.started_at.map(time),
                }),
                ..Default::default()
            });
            st.last_state = last_terminated(previous);
            let probed = |f: fn(&crate::prober::ProbeManager, &str) -> Option<bool>| {
                input.probes.and_then(|p| f(p, &spec.name))
            };
            st.ready = kind != ContainerKind::Init
                && probed(crate::prober::ProbeManager::ready).unwrap_or(true);
            st.started = Some(probed(crate::prober::ProbeManager::started).unwrap_or(true));
        }
        ContainerState::Exited => match input.waiting.get(&spec.name) {
            Some(w) => {
                st.state = Some(waiting_state(w));
                st.last_state = last_terminated(Some(l));
            }
            None => {
                st.state = last_terminated(Some(l));
                st.last_state = last_terminated(previous);
            }
        },
        ContainerState::Created => {
            let w = input
                .waiting
                .get(&spec.name)
                .cloned()
                .unwrap_or_else(|| Waiting::new("ContainerCreating", ""));
            st.state = Some(waiting_state(&w));
            st.last_state = last_terminated(previous);
        }
        ContainerState::Unknown => {
            st.state = Some(waiting_state(&Waiting::new(
                "ContainerStatusUnknown",
                "The container state could not be determined",
            )));
        }
    }
    st
}

fn is_running(s: &K8sContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn terminated_code(s: &K8sContainerStatus) -> Option<i32> {
    s.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code)
}

fn last_terminated_code(s: &K8sContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn is_waiting(s: &K8sContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.waiting.is_some())
}

/// kubelet's `getPhase`.
pub fn phase(
    policy: &str,
    inits: &[(ContainerKind, &K8sContainerStatus)],
    apps: &[&K8sContainerStatus],
) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    let mut pending_sidecars = 0;
    for (kind, s) in inits {
        if *kind == ContainerKind::Sidecar {
            if !(is_running(s) && s.started == Some(true)) {
                pending_sidecars += 1;
            }
            continue;
        }
        if is_running(s) {
            pending_init += 1;
        } else if let Some(code) = terminated_code(s) {
            if code != 0 {
                failed_init += 1;
            }
        } else if is_waiting(s) {
            match last_terminated_code(s) {
                Some(code) if code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for s in apps {
        if is_running(s) {
            running += 1;
        } else if let Some(code) = terminated_code(s) {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else if is_waiting(s) {
            if last_terminated_code(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let initialized = apps.iter().any(|s| {
        is_running(s) || terminated_code(s).is_some() || last_terminated_code(s).is_some()
    });
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || (pending_sidecars > 0 && !initialized) || failed_init > 0 && !initialized
    {
        return "Pending";
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(
    previous: Option<&PodStatus>,
    now: SystemTime,
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let last = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.to_string(),
        status,
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: Some(last.unwrap_or_else(|| time(now))),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The QoS class (`Guaranteed`, `Burstable`, `BestEffort`) of a pod spec.
pub fn qos_class(pod: &StaticPod) -> &'static str {
    let spec = pod.spec();
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        for r in ["cpu", "memory"] {
            let q = |m: Option<
                &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >| {
                m.and_then(|m| m.get(r))
                    .and_then(|q| staticlet_manifest::validate::parse_quantity(&q.0).ok())
            };
            let (rq, lq) = (q(req), q(lim));
            if rq.is_some_and(|v| v.nanos() != 0) || lq.is_some_and(|v| v.nanos() != 0) {
                any = true;
            }
            match (rq, lq) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a.nanos() != b.nanos() => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Computes the pod's status. See the module doc.
pub fn compute(input: &Input<'_>) -> PodStatus {
    let spec = input.pod.spec();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let apps_started = spec
        .containers
        .iter()
        .any(|c| input.obs.latest(&c.name).is_some());
    let init_specs: Vec<&Container> = spec.init_containers.iter().flatten().collect();
    let inits: Vec<(ContainerKind, K8sContainerStatus)> = init_specs
        .iter()
        .map(|c| {
            let kind = ContainerKind::of_init(c);
            (
                kind,
                container_status(input, c, kind, "PodInitializing", apps_started),
            )
        })
        .collect();
    let init_pending = inits.iter().any(|(kind, s)| match kind {
        ContainerKind::Sidecar => !is_running(s),
        _ => terminated_code(s) != Some(0),
    });
    let app_default = if init_pending && !apps_started {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let apps: Vec<K8sContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(input, c, ContainerKind::App, app_default, apps_started))
        .collect();

    let init_refs: Vec<(ContainerKind, &K8sContainerStatus)> =
        inits.iter().map(|(k, s)| (*k, s)).collect();
    let app_refs: Vec<&K8sContainerStatus> = apps.iter().collect();
    let mut phase = phase(policy, &init_refs, &app_refs);
    if input.deadline_exceeded {
        phase = "Failed";
    }
    if let Some(prev) = input.previous.and_then(|p| p.phase.as_deref()) {
        // A terminal phase is never left.
        if prev == "Succeeded" || prev == "Failed" {
            phase = if prev == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            };
        }
    }
    let terminal = phase == "Succeeded" || phase == "Failed";

    let sandbox_ready = input
        .obs
        .sandbox()
        .is_some_and(|s| s.state == SandboxState::Ready);
    let initialized = apps_started || !init_pending;
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|(kind, s)| match kind {
            ContainerKind::Sidecar => !is_running(s),
            _ => terminated_code(s) != Some(0),
        })
        .map(|(_, s)| s.name.as_str())
        .collect();
    let unready: Vec<&str> = inits
        .iter()
        .filter(|(kind, _)| *kind == ContainerKind::Sidecar)
        .map(|(_, s)| s)
        .chain(apps.iter())
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = unready.is_empty();
    let (ready_reason, ready_message) = if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let prev = input.previous;
    let now = input.now;
    let conditions = vec![
        condition(
            prev,
            now,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            None,
        ),
        condition(
            prev,
            now,
            "Initialized",
            initialized,
            Some("ContainersNotInitialized".into()),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        ),
        condition(
            prev,
            now,
            "Ready",
            ready && !terminal,
            ready_reason.clone(),
            ready_message.clone(),
        ),
        condition(
            prev,
            now,
            "ContainersReady",
            ready && !terminal,
            ready_reason,
            ready_message,
        ),
        condition(prev, now, "PodScheduled", true, None, None),
    ];

    let host_network = spec.host_network.unwrap_or(false);
    let pod_ip = if host_network {
        Some(input.host_ip.to_string())
    } else {
        input
            .obs
            .sandbox()
            .map(|s| s.ip.clone())
            .filter(|ip| !ip.is_empty())
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_string(),
        }]),
        pod_ips: pod_ip.as_ref().map(|ip| vec![PodIP { ip: ip.clone() }]),
        pod_ip,
        start_time: Some(time(input.start_time)),
        container_statuses: Some(apps),
        init_container_statuses: (!inits.is_empty())
            .then(|| inits.into_iter().map(|(_, s)| s).collect()),
        qos_class: Some(qos_class(input.pod).to_string()),
        reason: input
            .deadline_exceeded
            .then(|| "DeadlineExceeded".to_string()),
        message: input
            .deadline_exceeded
            .then(|| "Pod was active on the node longer than the specified deadline".to_string()),
        ..Default::default()
    }
}

/// The status of a pod that has no worker yet (waiting for its turn or for the runtime).
pub fn pending(
    pod: &StaticPod,
    host_ip: &str,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> PodStatus {
    let waiting = BTreeMap::from_iter(
        pod.spec()
            .containers
            .iter()
            .map(|c| (c.name.clone(), Waiting::new(reason, message))),
    );
    let obs = Observed::default();
    let input = Input {
        pod,
        obs: &obs,
        waiting: &waiting,
        start_time: SystemTime::UNIX_EPOCH,
        runtime_name: "",
        host_ip,
        previous: None,
        now,
        probes: None,
        deadline_exceeded: false,
    };
    let mut st = compute(&input);
    st.start_time = None;
    st
}

#[cfg(test)]
mod tests;
