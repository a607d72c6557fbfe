//! ProbeManager component tests: the fake runtime (scripted exec replies) under paused tokio
//! time, and one readiness test against a real local HTTP server.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use staticlet_runtime::fake::{container_labels, Call, ExecReply, FakeRuntime};
use staticlet_runtime::{
    Clock, ContainerConfig, ImageSpec, LabelSelector, SandboxConfig, SandboxId,
};

use super::*;

const UID: &str = "pod-uid";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn exec_probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["check".into()]),
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("img:1".into()),
        ..Default::default()
    }
}

fn spec(containers: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        ..Default::default()
    }
}

struct World {
    rt: FakeRuntime,
    clock: Clock,
    sandbox: SandboxId,
}

impl World {
    async fn new() -> Self {
        let clock = Clock::anchored(t0());
        let rt = FakeRuntime::new(clock);
        let sandbox = rt.run_pod_sandbox(&Self::sandbox_config()).await.unwrap();
        rt.pull_image(
            &ImageSpec {
                image: "img:1".into(),
            },
            None,
        )
        .await
        .unwrap();
        Self { rt, clock, sandbox }
    }

    fn sandbox_config() -> SandboxConfig {
        SandboxConfig {
            uid: UID.into(),
            labels: LabelSelector::pod(UID).0,
            ..Default::default()
        }
    }

    /// Creates and starts attempt `attempt` of `name`.
    async fn start(&self, name: &str, attempt: u32) -> ContainerId {
        let cfg = ContainerConfig {
            name: name.into(),
            attempt,
            image: ImageSpec {
                image: "img:1".into(),
            },
            labels: container_labels(UID, name, attempt),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(&self.sandbox, &cfg, &Self::sandbox_config())
            .await
            .unwrap();
        self.rt.start_container(&id).await.unwrap();
        id
    }

    fn manager(&self, spec: &PodSpec) -> ProbeManager {
        ProbeManager::new(Arc::new(self.rt.clone()), spec)
    }

    async fn observe(&self, m: &mut ProbeManager) -> Vec<ProbeEvent> {
        let cs = self
            .rt
            .list_containers(&LabelSelector::pod(UID))
            .await
            .unwrap();
        m.observe_runtime(&cs, self.clock.now())
    }

    fn secs(&self) -> u64 {
        self.clock.now().duration_since(t0()).unwrap().as_secs()
    }

    /// Runs the manager as a worker would until `until` seconds after t0: run what is due,
    /// sleep until the next due time. Returns the events with the second they happened at.
    async fn drive(&self, m: &mut ProbeManager, until: u64) -> Vec<(u64, ProbeEvent)> {
        let mut out = Vec::new();
        loop {
            let at = self.secs();
            for e in m.run_due(self.clock.now(), "10.88.0.1").await {
                // Per-attempt failures are checked by their own test.
                if !matches!(e, ProbeEvent::AttemptFailed { .. }) {
                    out.push((at, e));
                }
            }
            let Some(next) = m.next_due(self.clock.now()) else {
                break;
            };
            if next > t0() + Duration::from_secs(until) {
                break;
            }
            tokio::time::sleep_until(self.clock.instant_at(next)).await;
        }
        tokio::time::sleep_until(self.clock.instant_at(t0() + Duration::from_secs(until))).await;
        out
    }

    /// Exec calls per container so far.
    fn execs(&self, name: &str) -> usize {
        self.rt
            .calls()
            .iter()
            .filter(|(_, c)| matches!(c, Call::Exec { name: n, .. } if n == name))
            .count()
    }
}

fn ready(c: &str, ready: bool) -> ProbeEvent {
    ProbeEvent::ReadinessChanged {
        container: c.into(),
        ready,
    }
}

fn started(c: &str) -> ProbeEvent {
    ProbeEvent::Started {
        container: c.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_for_initial_delay_and_follows_thresholds() {
    let w = World::new().await;
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe(5, 2, 1, 2));
    let mut m = w.manager(&spec(vec![c]));
    assert_eq!(m.ready("app"), Some(false));
    w.start("app", 0).await;
    // Running, started (no startup probe), not ready until the first success.
    assert_eq!(w.observe(&mut m).await, vec![started("app")]);
    assert_eq!(
        (m.started("app"), m.ready("app")),
        (Some(true), Some(false))
    );
    assert_eq!(
        m.next_due(w.clock.now()),
        Some(t0() + Duration::from_secs(5))
    );

    // Attempts at 5 (ok), 7 (fail), 9 (fail: threshold 2), 11 (ok).
    w.rt.exec_script(
        "app",
        [ExecReply::code(0), ExecReply::code(1), ExecReply::code(1)],
        ExecReply::code(0),
    );
    let events = w.drive(&mut m, 12).await;
    assert_eq!(
        events,
        vec![
            (5, ready("app", true)),
            (9, ready("app", false)),
            (11, ready("app", true))
        ]
    );
    assert_eq!(w.execs("app"), 4);
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    let w = World::new().await;
    let mut c = container("app");
    c.startup_probe = Some(exec_probe(0, 1, 1, 5));
    c.liveness_probe = Some(exec_probe(0, 10, 1, 3));
    c.readiness_probe = Some(exec_probe(0, 10, 1, 3));
    let mut m = w.manager(&spec(vec![c]));
    w.start("app", 0).await;
    assert_eq!(w.observe(&mut m).await, vec![]);
    assert_eq!(m.started("app"), Some(false));
    // Startup fails at 0, 1, 2 and succeeds at 3; only then do liveness and readiness run
    // (right away), and startup never runs again.
    w.rt.exec_script(
        "app",
        [ExecReply::code(1), ExecReply::code(1), ExecReply::code(1)],
        ExecReply::code(0),
    );
    let events = w.drive(&mut m, 3).await;
    assert_eq!(events, vec![(3, started("app")), (3, ready("app", true))]);
    assert_eq!(w.execs("app"), 4 + 2);
    assert_eq!(
        m.result("app", ProbeKind::Startup),
        Some(ProbeResult::Success)
    );
    assert_eq!(
        m.result("app", ProbeKind::Readiness),
        Some(ProbeResult::Success)
    );
    assert_eq!(w.drive(&mut m, 25).await, vec![]);
    // Liveness and readiness at 3, 13, 23.
    assert_eq!(w.execs("app"), 4 + 6);
}

#[tokio::test(start_paused = true)]
async fn startup_failure_threshold_makes_the_container_unhealthy() {
    let w = World::new().await;
    let mut c = container("app");
    let mut p = exec_probe(0, 1, 1, 2);
    p.termination_grace_period_seconds = Some(4);
    c.startup_probe = Some(p);
    let mut m = w.manager(&spec(vec![c]));
    let id = w.start("app", 0).await;
    w.observe(&mut m).await;
    w.rt.exec_script(
        "app",
        [],
        ExecReply::Exit {
            code: 1,
            stdout: "not yet".into(),
        },
    );
    let events = w.drive(&mut m, 10).await;
    let unhealthy = ProbeEvent::ContainerUnhealthy {
        container: "app".into(),
        container_id: id,
        kind: ProbeKind::Startup,
        message: "Startup probe failed: not yet".into(),
        grace_period_seconds: Some(4),
    };
    assert_eq!(
        unhealthy.kill_message().as_deref(),
        Some("Container app failed startup probe, will be restarted")
    );
    assert_eq!(events, vec![(1, unhealthy)]);
    assert_eq!(w.execs("app"), 2);
    assert_eq!(m.started("app"), Some(false));
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_holds_until_a_new_container_instance() {
    let w = World::new().await;
    let mut c = container("app");
    c.liveness_probe = Some(exec_probe(0, 1, 1, 3));
    let mut m = w.manager(&spec(vec![c]));
    let first = w.start("app", 0).await;
    w.observe(&mut m).await;
    // Healthy at 0 and 1, failing from 2: unhealthy at the third failure (4), once.
    w.rt.exec_script(
        "app",
        [ExecReply::code(0), ExecReply::code(0)],
        ExecReply::Exit {
            code: 1,
            stdout: "dead".into(),
        },
    );
    let events = w.drive(&mut m, 10).await;
    assert_eq!(
        events,
        vec![(
            4,
            ProbeEvent::ContainerUnhealthy {
                container: "app".into(),
                container_id: first.clone(),
                kind: ProbeKind::Liveness,
                message: "Liveness probe failed: dead".into(),
                grace_period_seconds: None,
            }
        )]
    );
    assert_eq!(w.execs("app"), 5);
    assert_eq!(m.next_due(w.clock.now()), None);
    // The worker kills it; a new instance is probed afresh (healthy again).
    w.rt.stop_container(&first, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(w.observe(&mut m).await, vec![ready("app", false)]);
    assert_eq!(m.started("app"), Some(false));
    w.rt.exec_script("app", [], ExecReply::code(0));
    w.start("app", 1).await;
    assert_eq!(
        w.observe(&mut m).await,
        vec![started("app"), ready("app", true)]
    );
    assert_eq!(
        m.result("app", ProbeKind::Liveness),
        Some(ProbeResult::Success)
    );
    assert_eq!(m.next_due(w.clock.now()), Some(w.clock.now()));
    w.drive(&mut m, 13).await;
    assert_eq!(w.execs("app"), 5 + 4);
}

#[tokio::test(start_paused = true)]
async fn termination_stops_liveness_and_startup_but_not_readiness() {
    let w = World::new().await;
    let mut c = container("app");
    c.liveness_probe = Some(exec_probe(0, 1, 1, 1));
    c.readiness_probe = Some(exec_probe(0, 1, 1, 1));
    let mut other = container("slow");
    other.startup_probe = Some(exec_probe(0, 1, 1, 100));
    let mut m = w.manager(&spec(vec![c, other]));
    w.start("app", 0).await;
    w.start("slow", 0).await;
    w.observe(&mut m).await;
    w.rt.exec_script("slow", [], ExecReply::code(1));
    let events = w.drive(&mut m, 2).await;
    assert_eq!(events, vec![(0, ready("app", true))]);
    // app: liveness and readiness at 0, 1, 2; slow: startup at 0, 1, 2.
    assert_eq!((w.execs("app"), w.execs("slow")), (6, 3));

    // kubelet leaves liveness and startup at Success ("quiet shutdown").
    let events = m.stop_liveness_and_startup();
    assert_eq!(events, vec![started("slow"), ready("slow", true)]);
    // Readiness (app's only) goes on and can turn the container unready; liveness does not
    // run any more, so its failures would not matter.
    w.rt.exec_script("app", [], ExecReply::code(1));
    let events = w.drive(&mut m, 5).await;
    assert_eq!(events, vec![(3, ready("app", false))]);
    // Readiness alone at 3, 4, 5.
    assert_eq!((w.execs("app"), w.execs("slow")), (6 + 3, 3));
    assert_eq!(
        m.result("app", ProbeKind::Liveness),
        Some(ProbeResult::Success)
    );
    // An instance that appears during termination gets no liveness or startup either.
    let slow =
        w.rt.containers()
            .into_iter()
            .find(|c| c.name == "slow")
            .unwrap();
    w.rt.crash(&slow.id, 1);
    w.start("slow", 1).await;
    w.observe(&mut m).await;
    assert_eq!(m.started("slow"), Some(true));
    w.drive(&mut m, 7).await;
    assert_eq!(w.execs("slow"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_container_is_not_ready_and_not_probed() {
    let w = World::new().await;
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe(0, 1, 1, 3));
    let mut m = w.manager(&spec(vec![c]));
    let id = w.start("app", 0).await;
    w.observe(&mut m).await;
    w.drive(&mut m, 1).await;
    assert_eq!(m.ready("app"), Some(true));
    w.rt.crash(&id, 1);
    assert_eq!(w.observe(&mut m).await, vec![ready("app", false)]);
    assert_eq!(m.started("app"), Some(false));
    assert_eq!(m.next_due(w.clock.now()), None);
}

#[tokio::test(start_paused = true)]
async fn results_for_a_replaced_instance_are_ignored() {
    let w = World::new().await;
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe(0, 1, 1, 3));
    let mut m = w.manager(&spec(vec![c]));
    let first = w.start("app", 0).await;
    w.observe(&mut m).await;
    let jobs = m.take_due(w.clock.now(), "10.88.0.1");
    assert_eq!(jobs.len(), 1);
    // In flight: not due again.
    assert!(m.take_due(w.clock.now(), "10.88.0.1").is_empty());
    let done = jobs.into_iter().next().unwrap().run().await;
    assert_eq!(done.container_id, first);
    w.rt.crash(&first, 1);
    w.start("app", 1).await;
    w.observe(&mut m).await;
    assert_eq!(m.apply(done), vec![]);
    assert_eq!(m.ready("app"), Some(false));
    // The new instance is due right away.
    assert_eq!(m.take_due(w.clock.now(), "10.88.0.1").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn tracks_app_containers_and_sidecars_but_not_init_containers() {
    let w = World::new().await;
    let mut sidecar = container("proxy");
    sidecar.restart_policy = Some("Always".into());
    sidecar.readiness_probe = Some(exec_probe(0, 1, 1, 3));
    let init = container("setup");
    let mut s = spec(vec![container("plain")]);
    s.init_containers = Some(vec![init, sidecar]);
    let mut m = w.manager(&s);
    assert!(m.has_probes());
    assert_eq!(m.ready("setup"), None);
    assert_eq!(m.ready("plain"), Some(false));
    w.start("proxy", 0).await;
    w.start("plain", 0).await;
    let events = w.observe(&mut m).await;
    assert_eq!(
        events,
        vec![started("plain"), ready("plain", true), started("proxy")]
    );
    let events = w.drive(&mut m, 0).await;
    assert_eq!(events, vec![(0, ready("proxy", true))]);
}

#[tokio::test(start_paused = true)]
async fn an_unresolvable_probe_is_an_error_each_period() {
    let w = World::new().await;
    let mut c = container("app");
    c.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("missing".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    });
    let mut m = w.manager(&spec(vec![c]));
    w.start("app", 0).await;
    w.observe(&mut m).await;
    // Nothing runs, the result stays (not ready), and it is retried next period.
    assert!(m.take_due(w.clock.now(), "10.88.0.1").is_empty());
    assert_eq!(m.ready("app"), Some(false));
    assert_eq!(
        m.next_due(w.clock.now()),
        Some(t0() + Duration::from_secs(10))
    );
}

#[tokio::test]
async fn http_readiness_against_a_local_server() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let h = h.clone();
            async move {
                if h.load(std::sync::atomic::Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let w = World::new().await;
    let clock = w.clock;
    let mut c = container("web");
    c.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(port as i32),
            path: Some("/ready".into()),
            ..Default::default()
        }),
        failure_threshold: Some(1),
        ..Default::default()
    });
    let mut m = w.manager(&spec(vec![c]));
    w.start("web", 0).await;
    w.observe(&mut m).await;
    let deadline = tokio::time::Duration::from_secs(5);
    let events = tokio::time::timeout(deadline, m.run_due(clock.now(), "127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(events, vec![ready("web", true)]);
    // Not due again for a period; once due, the failing endpoint makes it unready.
    assert!(m.take_due(clock.now(), "127.0.0.1").is_empty());
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let later = clock.now() + Duration::from_secs(10);
    let events = tokio::time::timeout(deadline, m.run_due(later, "127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            ProbeEvent::AttemptFailed {
                container: "web".into(),
                kind: ProbeKind::Readiness,
                message: "Readiness probe failed: HTTP probe failed with statuscode: 500".into(),
            },
            ready("web", false)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn every_failed_attempt_is_reported_readiness_included() {
    let w = World::new().await;
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe(0, 1, 1, 3));
    let mut m = w.manager(&spec(vec![c]));
    w.start("app", 0).await;
    w.observe(&mut m).await;
    w.rt.exec_script(
        "app",
        [],
        ExecReply::Exit {
            code: 1,
            stdout: "cat: can't open '/tmp/ready'".into(),
        },
    );
    let mut failed = Vec::new();
    for _ in 0..3 {
        for e in m.run_due(w.clock.now(), "10.88.0.1").await {
            if let ProbeEvent::AttemptFailed { kind, message, .. } = e {
                failed.push((kind, message));
            }
        }
        let next = m.next_due(w.clock.now()).unwrap();
        tokio::time::sleep_until(w.clock.instant_at(next)).await;
    }
    assert_eq!(
        failed,
        vec![
            (
                ProbeKind::Readiness,
                "Readiness probe failed: cat: can't open '/tmp/ready'".to_string()
            );
            3
        ]
    );
}
