//! Whether the agent has finished starting: every pod source read once, and every pod it wants
//! adopted or started — what a service manager waits for before it calls the agent ready
//! (systemd's `READY=1`) and what `STATUS=` shows.
//!
//! A pod counts as *settled* once its worker has acted on it: its containers run (adopted or
//! started), have run, or are waiting for a reason other than being created (an image that
//! cannot be pulled, a crash loop): a pod that can never start must not hold the agent's
//! readiness forever. A pod still being created (`ContainerCreating`, `PodInitializing`, no
//! status yet) is not settled.

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};

use crate::config::merge::DesiredPods;
use crate::pod_workers::PodsView;

/// Counts of the pods the agent wants, for `STATUS=` and the ready decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupProgress {
    /// Every pod source has been read once.
    pub sources_seen: bool,
    /// Pods wanted.
    pub wanted: usize,
    /// Of them, settled (see the module doc).
    pub settled: usize,
    /// Of them, with phase Running.
    pub running: usize,
}

impl StartupProgress {
    /// Sources read, and every wanted pod settled.
    pub fn done(&self) -> bool {
        self.sources_seen && self.settled == self.wanted
    }

    /// One line for a service manager's status.
    pub fn status_line(&self) -> String {
        if !self.sources_seen {
            return "reading pod sources".to_string();
        }
        let plural = if self.wanted == 1 { "" } else { "s" };
        let mut s = format!("{} pod{plural}, {} running", self.wanted, self.running);
        if self.settled < self.wanted {
            s.push_str(&format!(", {} starting", self.wanted - self.settled));
        }
        s
    }
}

/// The progress of `pods` towards `desired`.
pub fn progress(desired: &DesiredPods, pods: &PodsView) -> StartupProgress {
    let mut p = StartupProgress {
        sources_seen: desired.all_sources_seen,
        wanted: desired.pods.len(),
        ..Default::default()
    };
    for uid in desired.pods.keys() {
        let Some(view) = pods.get(uid) else { continue };
        if view.status.phase.as_deref() == Some("Running") {
            p.running += 1;
        }
        if settled(&view.status) {
            p.settled += 1;
        }
    }
    p
}

/// Whether a pod's worker has acted on it (see the module doc).
pub fn settled(status: &PodStatus) -> bool {
    if matches!(
        status.phase.as_deref(),
        Some("Running" | "Succeeded" | "Failed")
    ) {
        return true;
    }
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    all.clone().any(acted_on)
}

fn acted_on(c: &ContainerStatus) -> bool {
    let Some(state) = &c.state else { return false };
    if state.running.is_some() || state.terminated.is_some() {
        return true;
    }
    state.waiting.as_ref().is_some_and(|w| {
        !matches!(
            w.reason.as_deref(),
            None | Some("" | "ContainerCreating" | "PodInitializing")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    fn waiting(reason: &str) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running() -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated() -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(phase: &str, init: Vec<ContainerStatus>, apps: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: (!apps.is_empty()).then_some(apps),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_is_settled_once_its_worker_acted_on_it() {
        let cases: Vec<(&str, PodStatus, bool)> = vec![
            ("no status yet", PodStatus::default(), false),
            ("running", status("Running", vec![], vec![running()]), true),
            (
                "completed",
                status("Succeeded", vec![], vec![terminated()]),
                true,
            ),
            ("failed", status("Failed", vec![], vec![terminated()]), true),
            (
                "being created",
                status("Pending", vec![], vec![waiting("ContainerCreating")]),
                false,
            ),
            (
                "image cannot be pulled",
                status("Pending", vec![], vec![waiting("ErrImagePull")]),
                true,
            ),
            (
                "crash loop before running",
                status("Pending", vec![], vec![waiting("CrashLoopBackOff")]),
                true,
            ),
            (
                "init container running",
                status("Pending", vec![running()], vec![waiting("PodInitializing")]),
                true,
            ),
            (
                "init container not started",
                status(
                    "Pending",
                    vec![waiting("PodInitializing")],
                    vec![waiting("PodInitializing")],
                ),
                false,
            ),
        ];
        for (what, s, want) in cases {
            assert_eq!(settled(&s), want, "{what}");
        }
    }

    #[test]
    fn progress_counts_wanted_pods_only_and_waits_for_the_sources() {
        use crate::pod_workers::PodView;
        use std::sync::Arc;
        let pod = |uid: &str| {
            Arc::new(staticlet_manifest::StaticPod {
                uid: uid.into(),
                name: format!("p-{uid}"),
                namespace: "default".into(),
                origin: staticlet_manifest::Origin::File(format!("/m/{uid}.yaml")),
                pod: Default::default(),
                content: "".into(),
                content_hash: String::new(),
            })
        };
        let mut desired = DesiredPods {
            pods: ["a", "b"].iter().map(|u| (u.to_string(), pod(u))).collect(),
            all_sources_seen: false,
            ..Default::default()
        };
        let view = |uid: &str, s: PodStatus| {
            std::sync::Arc::new(PodView {
                pod: pod(uid),
                status: s,
                terminating_since: None,
                grace: None,
                events: Default::default(),
            })
        };
        let mut pods = PodsView::new();
        pods.insert(
            "a".into(),
            view("a", status("Running", vec![], vec![running()])),
        );
        // A pod being removed is not waited for.
        pods.insert(
            "old".into(),
            view(
                "old",
                status("Pending", vec![], vec![waiting("ContainerCreating")]),
            ),
        );
        let p = progress(&desired, &pods);
        assert!(!p.done(), "sources not read yet");
        assert_eq!(p.status_line(), "reading pod sources");
        desired.all_sources_seen = true;
        let p = progress(&desired, &pods);
        assert_eq!((p.wanted, p.settled, p.running), (2, 1, 1));
        assert!(!p.done());
        assert_eq!(p.status_line(), "2 pods, 1 running, 1 starting");
        pods.insert(
            "b".into(),
            view(
                "b",
                status("Pending", vec![], vec![waiting("ImagePullBackOff")]),
            ),
        );
        let p = progress(&desired, &pods);
        assert!(p.done());
        assert_eq!(p.status_line(), "2 pods, 1 running");
        let none = DesiredPods {
            all_sources_seen: true,
            ..Default::default()
        };
        assert!(
            progress(&none, &PodsView::new()).done(),
            "no pods: ready at once"
        );
        desired.pods.remove("b");
        assert_eq!(progress(&desired, &pods).status_line(), "1 pod, 1 running");
    }
}
