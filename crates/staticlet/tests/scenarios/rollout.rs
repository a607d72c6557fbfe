//! Health-gated updates with real containers: a new version that exits or whose readiness probe
//! never passes is rolled back to the last Ready version, also across an agent restart; a good
//! edit is applied. The versions are told apart by their content hash in `/manifests`.

use crate::common::{bin, condition, Env};

on_both_backends!(
    failing_updates_are_rolled_back,
    rollback_survives_an_agent_restart_and_a_good_edit_applies,
);

/// The deadline the scenarios use: long enough for the old version to stop and the new one to
/// start and stay Ready for the 10 s a version needs, on a loaded machine.
const DEADLINE: &str = "40s";

/// A hostNetwork pod `web` whose container runs `script`, with `extra` container lines.
fn web(env: &Env, annotations: &str, script: &str, extra: &str) -> String {
    let m = env.pod_manifest(
        "web",
        &format!(
            r#"  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'trap "exit 0" TERM; {script}']
{extra}"#
        ),
    );
    // Annotations go under metadata (the pod_manifest helper writes `metadata:\n  name: ...`).
    m.replacen("metadata:\n", &format!("metadata:\n{annotations}"), 1)
}

const RUNS: &str = "echo up; while true; do sleep 1; done";

/// The `/manifests` record of `web.yaml`.
fn record(env: &Env) -> Option<serde_json::Value> {
    let body = env.api_get("/manifests")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|r| {
            r["origin"]
                .as_str()
                .is_some_and(|o| o.ends_with("/web.yaml"))
        })
        .cloned()
}

fn hash(content: &str) -> String {
    staticlet_manifest::content_hash(content.as_bytes())
}

/// Writes `content` as web.yaml; returns its content hash.
fn write(env: &Env, content: &str) -> String {
    env.manifest("web", content);
    hash(content)
}

fn wait_ready_hash(env: &Env, what: &str, h: &str, timeout_s: u64) {
    env.wait(what, timeout_s, || {
        record(env).is_some_and(|r| r["ready"]["hash"] == h && r["running"] == h)
    });
}

fn wait_rolled_back(env: &Env, from: &str, to: &str, timeout_s: u64) -> String {
    let mut msg = String::new();
    env.wait("rolled back", timeout_s, || {
        record(env).is_some_and(|r| {
            let ro = &r["rollout"];
            let done = ro["state"] == "rolledBack"
                && ro["rolledBackFrom"] == from
                && ro["rolledBackTo"] == to
                && r["running"] == to;
            if done {
                msg = ro["message"].as_str().unwrap_or_default().to_string();
            }
            done
        })
    });
    msg
}

/// The running, Ready `web` pod's content hash is `h` (from its events' point of view, the pod
/// the local API serves is the version running).
fn wait_pod_ready(env: &Env, uid: &str) {
    env.wait("the pod Running and Ready", 120, || {
        env.pod("web").is_some_and(|p| {
            p["metadata"]["uid"] == uid
                && p["metadata"]["deletionTimestamp"].is_null()
                && condition(&p, "Ready") == Some("True")
        })
    });
}

fn rolled_back_event(env: &Env) -> Option<String> {
    env.events("web")
        .into_iter()
        .rev()
        .find(|e| e["reason"] == "RolledBack")
        .and_then(|e| e["message"].as_str().map(str::to_string))
}

/// With `--rollout-ready-deadline`: a version whose container exits 1 is rolled back (and not
/// retried); with the annotation, a version whose readiness probe never passes is too, and the
/// event carries the probe's output.
fn failing_updates_are_rolled_back(env: &mut Env) {
    let v1 = web(env, "", RUNS, "");
    let h1 = write(env, &v1);
    env.start_with(&["--rollout-ready-deadline".into(), DEADLINE.into()]);
    wait_ready_hash(env, "v1 Ready", &h1, 120);
    let uid1 = env.uid("web");

    // A version that cannot start.
    let v2 = web(env, "", "echo failing; exit 1", "");
    let h2 = write(env, &v2);
    env.wait("v2 applied", 60, || {
        record(env).is_some_and(|r| r["applied"]["hash"] == h2)
    });
    let msg = wait_rolled_back(env, &h2, &h1, 180);
    assert!(
        msg.starts_with(&format!(
            "rolled back from {} to {}: not Ready within 40s: container app",
            &h2[..12],
            &h1[..12]
        )) && msg.contains("exited with code 1"),
        "{msg}"
    );
    wait_pod_ready(env, &uid1);
    env.wait("RolledBack event", 30, || {
        rolled_back_event(env).is_some_and(|m| m == msg)
    });
    // The same content is not retried: v1 keeps running through relists.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let r = record(env).unwrap();
    assert_eq!(r["running"], h1.as_str());
    assert_eq!(r["seen"]["hash"], h2.as_str());
    assert_eq!(env.uid("web"), uid1);

    // A version whose readiness probe never passes; the annotation sets its deadline.
    let v3 = web(
        env,
        "  annotations:\n    staticlet.io/ready-deadline: 30s\n",
        RUNS,
        "    readinessProbe:\n      exec: {command: [sh, -c, 'echo backend unreachable; exit 1']}\n      periodSeconds: 2\n",
    );
    let h3 = write(env, &v3);
    let msg = wait_rolled_back(env, &h3, &h1, 180);
    assert!(
        msg.contains("not Ready within 30s: container app is running but not ready: Readiness probe failed: backend unreachable"),
        "{msg}"
    );
    wait_pod_ready(env, &uid1);
}

/// `staticlet wait manifest web.yaml ARGS`: its exit code and output.
fn wait_manifest(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = bin()
        .args(["wait", "manifest"])
        .arg(env.path("manifests").join("web.yaml"))
        .args(args)
        .arg("--root-dir")
        .arg(env.root())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A rollout in progress when the agent is killed, whose deadline passes while it is down, is
/// rolled back as soon as the agent is back; then a good edit is applied and recorded Ready,
/// which `staticlet wait manifest` acknowledges by content hash.
fn rollback_survives_an_agent_restart_and_a_good_edit_applies(env: &mut Env) {
    let flags = ["--rollout-ready-deadline".to_string(), "20s".to_string()];
    let v1 = web(env, "", RUNS, "");
    let h1 = write(env, &v1);
    env.start_with(&flags);
    wait_ready_hash(env, "v1 Ready", &h1, 120);
    let uid1 = env.uid("web");

    let v2 = web(env, "", "echo failing; exit 1", "");
    let h2 = write(env, &v2);
    env.wait("v2 progressing", 60, || {
        record(env)
            .is_some_and(|r| r["applied"]["hash"] == h2 && r["rollout"]["state"] == "progressing")
    });
    env.kill_agent();
    // The rollout is on disk; the deadline passes while the agent is down.
    let stored = std::fs::read_dir(env.root().join("rollout"))
        .unwrap()
        .count();
    assert_eq!(stored, 1);
    std::thread::sleep(std::time::Duration::from_secs(22));
    env.start_with(&flags);
    let started = std::time::Instant::now();
    let msg = wait_rolled_back(env, &h2, &h1, 60);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "rolled back only after {:?}",
        started.elapsed()
    );
    assert!(msg.contains("not Ready within 20s"), "{msg}");
    wait_pod_ready(env, &uid1);
    let (code, out) = wait_manifest(
        env,
        &["--for=rolledback", "--hash", &h2, "--timeout", "10s"],
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = wait_manifest(env, &["--for=ready", "--hash", &h2, "--timeout", "10s"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("will not be Ready: rolled back from"), "{out}");

    // A good edit is applied and becomes the version recorded as Ready.
    let v3 = web(env, "", "echo v3; while true; do sleep 1; done", "");
    let h3 = write(env, &v3);
    // Without --hash: the file's content now, i.e. v3.
    let (code, out) = wait_manifest(env, &["--for=ready", "--timeout", "120s"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("version {} ready", &h3[..12])),
        "{out}"
    );
    wait_ready_hash(env, "v3 Ready", &h3, 10);
    let r = record(env).unwrap();
    assert_eq!(r["rollout"]["state"], "steady");
    assert_eq!(r["applied"]["hash"], h3.as_str());
    assert_ne!(env.uid("web"), uid1);
}
