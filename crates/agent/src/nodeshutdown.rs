//! Graceful node shutdown, as kubelet's `pkg/kubelet/nodeshutdown`: when the node is about to
//! shut down, the pods are stopped by priority group (lowest first), each group within its own
//! grace period, and the agent then lets the shutdown proceed.
//!
//! The shutdown signal comes from outside (the binary's logind watcher holds a delay inhibitor
//! lock and reports `PrepareForShutdown`) as [`ShutdownEvent`]s. This module sits between the
//! merger and the pod manager: it forwards the desired pods unchanged until a shutdown starts,
//! then forwards them without the groups being stopped (with kubelet's grace override for each),
//! waits until their workers are gone (the pod view no longer shows them) or the group's period
//! ends, moves to the next group, and finally answers the event so the lock is released. A
//! cancelled shutdown (`PrepareForShutdown(false)`) forwards every pod again: they start again
//! (kubelet leaves them failed; a static pod has no controller that would recreate it).
//!
//! Pure parts ([`ShutdownPolicy`], [`ShutdownPolicy::group_of`]) are table-tested; [`run`] is
//! driven by channels and the clock, so component tests run it with paused time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use staticlet_manifest::StaticPod;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::merge::DesiredPods;
use crate::pod_workers::PodsView;

/// kubelet's `scheduling.SystemCriticalPriority`.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// kubelet's message for pods stopped because the node shuts down.
pub const NODE_SHUTDOWN_MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";

/// One priority group: pods of at least `priority` (and below the next group's) get `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub priority: i32,
    pub grace: Duration,
}

/// The groups, sorted by priority, lowest first (the order they are stopped in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownPolicy {
    groups: Vec<Group>,
}

impl ShutdownPolicy {
    /// kubelet's configuration: `shutdownGracePeriodByPodPriority` when given, else
    /// `shutdownGracePeriod` split into regular pods (the period minus the critical pods'
    /// share) and critical pods (`shutdownGracePeriodCriticalPods`). `None` when graceful
    /// shutdown is off (no period, or a critical share larger than the period, as kubelet).
    pub fn from_kubelet(
        period: Duration,
        critical: Duration,
        by_priority: &[Group],
    ) -> Option<Self> {
        let mut groups = if by_priority.is_empty() {
            if period.is_zero() || critical > period {
                return None;
            }
            vec![
                Group {
                    priority: 0,
                    grace: period - critical,
                },
                Group {
                    priority: SYSTEM_CRITICAL_PRIORITY,
                    grace: critical,
                },
            ]
        } else {
            by_priority.to_vec()
        };
        groups.sort_by_key(|g| g.priority);
        Some(Self { groups })
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The whole time the agent asks logind to wait (kubelet's `periodRequested`).
    pub fn requested(&self) -> Duration {
        self.groups.iter().map(|g| g.grace).sum()
    }

    /// The group index of a pod with `priority` (kubelet's `groupByPriority`): the highest
    /// group whose priority is at most the pod's; below every group, the lowest.
    pub fn group_of(&self, priority: i32) -> usize {
        let idx = self.groups.partition_point(|g| g.priority < priority);
        let above = idx == self.groups.len() || self.groups[idx].priority > priority;
        if above && idx > 0 {
            idx - 1
        } else {
            idx
        }
    }
}

/// A static pod's priority: `spec.priority`, else the value the API server's priority admission
/// gives the two built-in classes (kubeadm's manifests name `system-node-critical`), else 0.
pub fn priority(pod: &StaticPod) -> i32 {
    let spec = pod.spec();
    if let Some(p) = spec.priority {
        return p;
    }
    match spec.priority_class_name.as_deref() {
        Some("system-node-critical") => SYSTEM_CRITICAL_PRIORITY + 1000,
        Some("system-cluster-critical") => SYSTEM_CRITICAL_PRIORITY,
        _ => 0,
    }
}

/// What the node's shutdown watcher reports.
#[derive(Debug)]
pub enum ShutdownEvent {
    /// The node shuts down: stop the pods, then send on `done` (the watcher then releases its
    /// inhibitor lock).
    Shutdown { done: oneshot::Sender<()> },
    /// A shutdown was cancelled: run the pods again.
    Cancelled,
}

/// Forwards `desired` to `out`, stopping pods by group on a shutdown event (see the module
/// documentation). Runs until `stop` or until `desired` closes.
pub async fn run(
    policy: ShutdownPolicy,
    mut events: mpsc::Receiver<ShutdownEvent>,
    mut desired: watch::Receiver<Arc<DesiredPods>>,
    out: watch::Sender<Arc<DesiredPods>>,
    mut pods: watch::Receiver<Arc<PodsView>>,
    stop: CancellationToken,
) {
    // Groups stopped so far in the current shutdown (None: not shutting down).
    let mut stopped: Option<usize> = None;
    loop {
        let current = desired.borrow_and_update().clone();
        out.send_replace(filtered(&policy, &current, stopped));
        tokio::select! {
            _ = stop.cancelled() => return,
            r = desired.changed() => if r.is_err() { return },
            ev = events.recv() => match ev {
                None => return,
                Some(ShutdownEvent::Cancelled) => {
                    if stopped.take().is_some() {
                        info!("node shutdown cancelled: starting the pods again");
                    }
                }
                Some(ShutdownEvent::Shutdown { done }) => {
                    info!(period = ?policy.requested(), "node shutting down: stopping pods by priority");
                    for (i, group) in policy.groups().iter().enumerate() {
                        stopped = Some(i + 1);
                        let current = desired.borrow_and_update().clone();
                        out.send_replace(filtered(&policy, &current, stopped));
                        let members: BTreeSet<String> = current
                            .pods
                            .iter()
                            .filter(|(_, p)| policy.group_of(priority(p)) == i)
                            .map(|(uid, _)| uid.clone())
                            .collect();
                        if members.is_empty() {
                            continue;
                        }
                        let gone = pods.wait_for(|v| members.iter().all(|u| !v.contains_key(u)));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = gone => if r.is_err() { return },
                            _ = tokio::time::sleep(group.grace) => {
                                warn!(priority = group.priority, grace = ?group.grace, "pods of this priority group did not stop within its shutdown grace period");
                            }
                        }
                    }
                    info!("pods stopped for the node shutdown");
                    let _ = done.send(());
                }
            },
        }
    }
}

/// The desired pods without those of the groups stopped so far, with their grace overrides.
fn filtered(
    policy: &ShutdownPolicy,
    desired: &Arc<DesiredPods>,
    stopped: Option<usize>,
) -> Arc<DesiredPods> {
    let Some(stopped) = stopped else {
        return desired.clone();
    };
    let mut pods = BTreeMap::new();
    let mut grace_overrides = desired.grace_overrides.clone();
    for (uid, p) in &desired.pods {
        let g = policy.group_of(priority(p));
        if g < stopped {
            // kubelet: the group's period, or the pod's own grace if shorter.
            let group = policy.groups()[g].grace.as_secs() as i64;
            let own = p.spec().termination_grace_period_seconds.unwrap_or(30);
            grace_overrides.insert(uid.clone(), own.min(group));
        } else {
            pods.insert(uid.clone(), p.clone());
        }
    }
    Arc::new(DesiredPods {
        pods,
        all_sources_seen: desired.all_sources_seen,
        events: desired.events.clone(),
        grace_overrides,
        stopped: desired.stopped.clone(),
        held: desired.held.clone(),
        added: desired.added.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn policy_from_kubelet_configuration() {
        assert_eq!(ShutdownPolicy::from_kubelet(s(0), s(0), &[]), None);
        assert_eq!(ShutdownPolicy::from_kubelet(s(10), s(20), &[]), None);
        let p = ShutdownPolicy::from_kubelet(s(30), s(10), &[]).unwrap();
        assert_eq!(
            p.groups(),
            &[
                Group {
                    priority: 0,
                    grace: s(20)
                },
                Group {
                    priority: SYSTEM_CRITICAL_PRIORITY,
                    grace: s(10)
                }
            ]
        );
        assert_eq!(p.requested(), s(30));
        // By priority: sorted, and wins over the two periods.
        let by = [
            Group {
                priority: 100_000,
                grace: s(5),
            },
            Group {
                priority: 10,
                grace: s(7),
            },
        ];
        let p = ShutdownPolicy::from_kubelet(s(30), s(10), &by).unwrap();
        assert_eq!(p.groups()[0].priority, 10);
        assert_eq!(p.requested(), s(12));
    }

    #[test]
    fn pods_are_grouped_as_kubelet_does() {
        let g = |priority, grace| Group { priority, grace };
        let p =
            ShutdownPolicy::from_kubelet(s(0), s(0), &[g(10, s(1)), g(100, s(2)), g(1000, s(3))])
                .unwrap();
        for (priority, want) in [
            (-5, 0),
            (0, 0),
            (10, 0),
            (50, 0),
            (100, 1),
            (999, 1),
            (1000, 2),
            (i32::MAX, 2),
        ] {
            assert_eq!(p.group_of(priority), want, "priority {priority}");
        }
        let p = ShutdownPolicy::from_kubelet(s(30), s(10), &[]).unwrap();
        assert_eq!(p.group_of(0), 0);
        assert_eq!(p.group_of(SYSTEM_CRITICAL_PRIORITY - 1), 0);
        assert_eq!(p.group_of(SYSTEM_CRITICAL_PRIORITY + 1000), 1);
    }

    #[test]
    fn priority_of_static_pods() {
        let load = |extra: &str| {
            let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{extra}  containers:\n  - {{name: c, image: busybox}}\n");
            staticlet_manifest::load(
                m.as_bytes(),
                &staticlet_manifest::Origin::File("/m/p.yaml".into()),
                "n",
            )
            .unwrap()
        };
        assert_eq!(priority(&load("")), 0);
        assert_eq!(priority(&load("  priority: 7\n")), 7);
        assert_eq!(
            priority(&load("  priorityClassName: system-node-critical\n")),
            2_000_001_000
        );
        assert_eq!(
            priority(&load(
                "  priorityClassName: system-node-critical\n  priority: 2000001000\n"
            )),
            2_000_001_000
        );
        assert_eq!(
            priority(&load("  priorityClassName: system-cluster-critical\n")),
            SYSTEM_CRITICAL_PRIORITY
        );
    }
}
