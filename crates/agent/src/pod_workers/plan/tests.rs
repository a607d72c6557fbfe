//! Table tests of the planning step: runtime state in, actions out.
#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use staticlet_manifest::{Origin, StaticPod};
use staticlet_runtime::{
    labels, ContainerId, ContainerState, ContainerStatus, ImageSpec, SandboxId, SandboxState,
    SandboxStatus,
};

use super::*;
use crate::kuberuntime::{container_hash, ContainerKind};

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

fn pod(yaml_spec: &str) -> StaticPod {
    let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{yaml_spec}");
    staticlet_manifest::load(m.as_bytes(), &Origin::File("/m/p.yaml".into()), "n").unwrap()
}

const TWO_INITS_SIDECAR: &str = "  initContainers:
  - {name: init1, image: busybox}
  - {name: side, image: busybox, restartPolicy: Always}
  - {name: init2, image: busybox}
  containers:
  - {name: app, image: busybox}
";

fn sandbox(ready: bool) -> SandboxStatus {
    SandboxStatus {
        id: SandboxId("sb".into()),
        name: "p-n".into(),
        namespace: "default".into(),
        uid: "u".into(),
        attempt: 0,
        state: if ready {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        created_at: t(0),
        ip: "10.0.0.2".into(),
        labels: Default::default(),
        annotations: Default::default(),
    }
}

/// A container of `p` named `name`, attempt `attempt`, in `state` (exit code for Exited).
fn ctr(
    p: &StaticPod,
    name: &str,
    attempt: u32,
    state: ContainerState,
    code: Option<i32>,
    finished: u64,
) -> ContainerStatus {
    let spec = p.spec();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap();
    let mut l = staticlet_runtime::fake::container_labels(&p.uid, name, attempt);
    l.insert(labels::CONTAINER_HASH.into(), container_hash(c));
    ContainerStatus {
        id: ContainerId(format!("{name}-{attempt}")),
        sandbox_id: SandboxId("sb".into()),
        name: name.into(),
        attempt,
        state,
        created_at: t(finished.saturating_sub(1)),
        started_at: Some(t(finished.saturating_sub(1))),
        finished_at: (state == ContainerState::Exited).then(|| t(finished)),
        exit_code: code,
        reason: String::new(),
        message: String::new(),
        image: ImageSpec {
            image: "busybox".into(),
        },
        image_ref: "sha256:x".into(),
        labels: l,
        annotations: Default::default(),
        log_path: Default::default(),
    }
}

fn starts(plan: &Plan) -> Vec<(String, u32)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartContainer { name, attempt, .. } => Some((name.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn no_sandbox_creates_one_first() {
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let plan = plan(&p, &Observed::default(), &Memory::default(), t(0));
    assert_eq!(plan.actions, vec![Action::CreateSandbox { attempt: 0 }]);
    // A dead sandbox with a running container: kill the pod, then a new sandbox attempt.
    let obs = Observed {
        sandboxes: vec![sandbox(false)],
        containers: vec![ctr(&p, "app", 0, ContainerState::Running, None, 5)],
    };
    let plan = super::plan(&p, &obs, &Memory::default(), t(10));
    assert!(matches!(plan.actions[0], Action::KillPod { .. }));
    assert_eq!(plan.actions[1], Action::CreateSandbox { attempt: 1 });
}

#[test]
fn init_containers_run_one_at_a_time_and_sidecars_count_once_started() {
    use ContainerState::*;
    let p = pod(TWO_INITS_SIDECAR);
    let sb = vec![sandbox(true)];
    let mem = Memory::default();
    let table: Vec<(Vec<ContainerStatus>, Vec<(&str, u32)>)> = vec![
        (vec![], vec![("init1", 0)]),
        (vec![ctr(&p, "init1", 0, Running, None, 1)], vec![]),
        (
            vec![ctr(&p, "init1", 0, Exited, Some(0), 1)],
            vec![("side", 0)],
        ),
        (
            vec![
                ctr(&p, "init1", 0, Exited, Some(0), 1),
                ctr(&p, "side", 0, Running, None, 2),
            ],
            vec![("init2", 0)],
        ),
        (
            vec![
                ctr(&p, "init1", 0, Exited, Some(0), 1),
                ctr(&p, "side", 0, Running, None, 2),
                ctr(&p, "init2", 0, Exited, Some(0), 3),
            ],
            vec![("app", 0)],
        ),
        // Once an app container exists, init containers are not re-run even if removed; a dead
        // sidecar is restarted.
        (
            vec![
                ctr(&p, "app", 0, Running, None, 5),
                ctr(&p, "side", 0, Exited, Some(1), 6),
            ],
            vec![("side", 1)],
        ),
    ];
    for (i, (containers, want)) in table.into_iter().enumerate() {
        let obs = Observed {
            sandboxes: sb.clone(),
            containers,
        };
        let got = starts(&plan(&p, &obs, &mem, t(100)));
        let want: Vec<(String, u32)> = want.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn failed_init_container_retries_unless_never() {
    use ContainerState::*;
    for (policy, want_start, want_done) in [
        ("Always", true, false),
        ("OnFailure", true, false),
        ("Never", false, true),
    ] {
        let p = pod(&format!("  restartPolicy: {policy}\n{TWO_INITS_SIDECAR}"));
        let obs = Observed {
            sandboxes: vec![sandbox(true)],
            containers: vec![ctr(&p, "init1", 0, Exited, Some(2), 1)],
        };
        let plan = plan(&p, &obs, &Memory::default(), t(50));
        assert_eq!(!starts(&plan).is_empty(), want_start, "{policy}");
        assert_eq!(plan.done, want_done, "{policy}");
    }
}

#[test]
fn restart_policy_table() {
    use ContainerState::*;
    // (policy, exit code, restarted?)
    for (policy, code, restarted) in [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ] {
        let p = pod(&format!(
            "  restartPolicy: {policy}\n  containers:\n  - {{name: app, image: busybox}}\n"
        ));
        let obs = Observed {
            sandboxes: vec![sandbox(true)],
            containers: vec![ctr(&p, "app", 0, Exited, Some(code), 10)],
        };
        let plan = plan(&p, &obs, &Memory::default(), t(10));
        assert_eq!(!starts(&plan).is_empty(), restarted, "{policy} exit {code}");
        assert_eq!(plan.done, !restarted, "{policy} exit {code}");
        if !restarted {
            assert!(plan.actions.contains(&Action::StopSandbox {
                id: SandboxId("sb".into())
            }));
        }
    }
}

#[test]
fn crash_loop_waits_for_back_off_with_kubelet_message() {
    use ContainerState::*;
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let c = &p.spec().containers[0];
    let mut mem = Memory::default();
    // First crash: restart now.
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![ctr(&p, "app", 0, Exited, Some(1), 10)],
    };
    let plan1 = plan(&p, &obs, &mem, t(10));
    assert_eq!(
        plan1.actions,
        vec![Action::StartContainer {
            name: "app".into(),
            kind: ContainerKind::App,
            attempt: 1,
            restart_of: Some(t(10))
        }]
    );
    mem.backoff.next(&backoff_key(c), t(10), t(10));
    // Second crash at t(12): back-off 10 s from the finish time.
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![
            ctr(&p, "app", 0, Exited, Some(1), 10),
            ctr(&p, "app", 1, Exited, Some(1), 12),
        ],
    };
    let plan2 = plan(&p, &obs, &mem, t(13));
    assert!(starts(&plan2).is_empty());
    assert_eq!(plan2.wake_at, Some(t(22)));
    let w = &plan2.waiting["app"];
    assert_eq!(w.reason, "CrashLoopBackOff");
    assert_eq!(
        w.message,
        format!(
            "back-off 10s restarting failed container=app pod=p-n_default({})",
            p.uid
        )
    );
    // At t(22) it restarts as attempt 2.
    assert_eq!(
        starts(&plan(&p, &obs, &mem, t(22))),
        vec![("app".to_string(), 2)]
    );
}

#[test]
fn image_pull_back_off_after_err_image_pull() {
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let mut mem = Memory::default();
    mem.image_backoff.next("busybox", t(0), t(0));
    mem.start_errors.insert(
        "app".into(),
        (Waiting::new("ErrImagePull", "no such host"), t(0)),
    );
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![],
    };
    let plan1 = plan(&p, &obs, &mem, t(5));
    assert!(starts(&plan1).is_empty());
    assert_eq!(plan1.waiting["app"].reason, "ImagePullBackOff");
    assert_eq!(
        plan1.waiting["app"].message,
        "Back-off pulling image \"busybox\""
    );
    assert_eq!(plan1.wake_at, Some(t(10)));
    assert_eq!(
        starts(&plan(&p, &obs, &mem, t(10))),
        vec![("app".to_string(), 0)]
    );
}

#[test]
fn changed_spec_restarts_container_and_unknown_names_are_removed() {
    use ContainerState::*;
    let old = pod(
        "  containers:\n  - {name: app, image: busybox:1}\n  - {name: gone, image: busybox:1}\n",
    );
    let new = pod("  containers:\n  - {name: app, image: busybox:2}\n");
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![
            ctr(&old, "app", 0, Running, None, 1),
            ctr(&old, "gone", 0, Exited, Some(0), 1),
        ],
    };
    let plan = plan(&new, &obs, &Memory::default(), t(5));
    assert!(plan.actions.contains(&Action::RemoveContainer {
        id: ContainerId("gone-0".into())
    }));
    assert!(plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::KillContainer { name, .. } if name == "app")));
    // Once stopped, the new spec starts at once (no back-off, whatever the policy).
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![ctr(&old, "app", 0, Exited, Some(137), 6)],
    };
    let never = pod("  restartPolicy: Never\n  containers:\n  - {name: app, image: busybox:2}\n");
    assert_eq!(
        starts(&super::plan(&never, &obs, &Memory::default(), t(6))),
        vec![("app".to_string(), 1)]
    );
}

#[test]
fn only_the_newest_exited_attempt_is_kept() {
    use ContainerState::*;
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![
            ctr(&p, "app", 0, Exited, Some(1), 1),
            ctr(&p, "app", 1, Exited, Some(1), 2),
            ctr(&p, "app", 2, Running, None, 3),
        ],
    };
    let plan = plan(&p, &obs, &Memory::default(), t(5));
    assert_eq!(
        plan.actions,
        vec![Action::RemoveContainer {
            id: ContainerId("app-0".into())
        }]
    );
    let _ = BTreeMap::<(), ()>::new();
}

#[test]
fn runtime_events_already_shown_need_no_sync() {
    use staticlet_runtime::ContainerEvent;
    use ContainerState::*;
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let ev = |id: &str, state| ContainerEvent {
        container_id: ContainerId(id.into()),
        pod_uid: p.uid.clone(),
        state,
    };
    let running = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![ctr(&p, "app", 0, Running, None, 5)],
    };
    let exited = Observed {
        sandboxes: vec![sandbox(false)],
        containers: vec![ctr(&p, "app", 0, Exited, Some(1), 5)],
    };
    let table: &[(&Observed, &str, ContainerState, bool)] = &[
        // The echo of the worker's own create and start: already read back.
        (&running, "app-0", Created, true),
        (&running, "app-0", Running, true),
        // News: the container exited, or a state the agent can't order.
        (&running, "app-0", Exited, false),
        (&running, "app-0", Unknown, false),
        (&exited, "app-0", Running, true),
        (&exited, "app-0", Exited, true),
        // A container the observation doesn't have.
        (&running, "app-1", Created, false),
        // Sandboxes come by their id in CRI's stream.
        (&running, "sb", Created, true),
        (&running, "sb", Running, true),
        (&running, "sb", Exited, false),
        (&exited, "sb", Exited, true),
    ];
    for (obs, id, state, want) in table {
        assert_eq!(
            obs.already_shows(&ev(id, *state)),
            *want,
            "{id} {state:?} against {:?}",
            obs.containers[0].state
        );
    }
}

/// A container whose earlier attempts went with a removed (dead) sandbox continues their
/// numbering (the restart count never goes back): from the worker's memory of the highest
/// attempt, seeded from the log directory.
#[test]
fn attempts_continue_after_the_sandbox_holding_them_was_removed() {
    let p = pod("  containers:\n  - {name: app, image: busybox}\n");
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![],
    };
    let plan = super::plan(&p, &obs, &Memory::default(), t(10));
    assert_eq!(
        starts(&plan),
        vec![("app".into(), 0)],
        "a new pod starts at 0"
    );
    let mut mem = Memory::default();
    mem.next_attempts.insert("app".into(), 4);
    let plan = super::plan(&p, &obs, &mem, t(10));
    assert_eq!(starts(&plan), vec![("app".into(), 4)]);
    // The runtime's newest attempt counts when it is higher.
    let obs = Observed {
        sandboxes: vec![sandbox(true)],
        containers: vec![ctr(&p, "app", 6, ContainerState::Exited, Some(1), 5)],
    };
    let plan = super::plan(&p, &obs, &mem, t(1000));
    assert_eq!(starts(&plan), vec![("app".into(), 7)]);
}
