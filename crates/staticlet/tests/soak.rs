//! Long runs (embedded runtime): `PODS` static pods churned for `SECS` seconds — edited,
//! removed and added again, some crash-looping, some with exec readiness probes, some on a pod
//! network — while the agent's resident memory, open fds, threads and live tasks are sampled
//! from its `/metrics` and printed as a curve. The churn ends with every pod wanted again at a
//! known version: each must converge, and the agent's figures then must not have grown beyond
//! the bounds below compared with the same steady state before the churn. Finally every
//! manifest is removed and nothing may be left (shim processes, sandboxes, containers, pod
//! directories, mounts).
//!
//! `STATICLET_SOAK_SECS` (default 180: CI's 3 minutes), `STATICLET_SOAK_PODS` (default 100) and
//! `STATICLET_SOAK_SEED` (printed); `bench/soak.sh` runs it for 30 minutes.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// xorshift64*: the seed is printed, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What pod `i` is: one in ten crash-loops (quick back-off), one in ten has an exec readiness
/// probe, one in ten is on the pod network; the rest sleep.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Crashes,
    Probed,
    Networked,
    Sleeps,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Crashes,
        1 => Kind::Probed,
        2 => Kind::Networked,
        _ => Kind::Sleeps,
    }
}

fn manifest(env: &Env, i: usize, version: u64) -> String {
    let (annotations, command, extra) = match kind(i) {
        Kind::Crashes => (
            "  annotations:\n    staticlet.io/backoff-initial: 500ms\n    staticlet.io/backoff-max: 5s\n",
            "[sh, -c, 'sleep 3; exit 1']",
            "",
        ),
        Kind::Probed => (
            "",
            "[sleep, '3600']",
            "    readinessProbe:\n      exec: {command: ['true']}\n      periodSeconds: 10\n",
        ),
        Kind::Networked | Kind::Sleeps => ("", "[sleep, '3600']", ""),
    };
    let net = if kind(i) == Kind::Networked {
        ""
    } else {
        "  hostNetwork: true\n"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: s{i}\n{annotations}spec:\n{net}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: IfNotPresent\n    command: {command}\n    env:\n    - {{name: VERSION, value: \"{version}\"}}\n{extra}",
        env.image()
    )
}

/// The agent's own figures, from its `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_mib: f64,
    fds: f64,
    threads: f64,
    tasks: f64,
    cpu_s: f64,
}

fn sample(env: &Env) -> Option<Sample> {
    let text = env.api_get("/metrics")?;
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some(Sample {
        rss_mib: get("process_resident_memory_bytes")? / (1024.0 * 1024.0),
        fds: get("process_open_fds")?,
        threads: get("process_threads")?,
        tasks: get("staticlet_tasks")?,
        cpu_s: get("process_cpu_seconds_total")?,
    })
}

/// Pods not (yet) in their wanted state: wanted ones running `version` (a crasher in back-off
/// counts), unwanted ones gone.
fn unconverged(env: &Env, wanted: &[Option<u64>]) -> Vec<String> {
    let Some(body) = env.api_get("/pods") else {
        return vec!["the local API does not answer".into()];
    };
    let pods: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut by_name: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for p in pods["items"].as_array().into_iter().flatten() {
        if let Some(n) = p["metadata"]["name"].as_str() {
            by_name.insert(n.to_string(), p);
        }
    }
    let mut left = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let name = format!("s{i}-{}", env.node());
        match (w, by_name.get(&name)) {
            (None, None) => {}
            (None, Some(_)) => left.push(format!("s{i}: still listed")),
            (Some(_), None) => left.push(format!("s{i}: not listed")),
            (Some(v), Some(p)) => {
                let env_version = &p["spec"]["containers"][0]["env"][0]["value"];
                let c = &p["status"]["containerStatuses"][0];
                let ok = p["metadata"]["deletionTimestamp"].is_null()
                    && env_version == &serde_json::Value::String(v.to_string())
                    && (c["state"]["running"].is_object()
                        || (kind(i) == Kind::Crashes
                            && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"));
                if !ok {
                    left.push(format!("s{i} (version {v}): {}", p["status"]));
                }
            }
        }
    }
    left
}

fn converge(env: &Env, wanted: &[Option<u64>], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = unconverged(env, wanted);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} pods not converged {when}:\n{}\nagent log:\n{}",
            left.len(),
            left.iter().take(10).cloned().collect::<Vec<_>>().join("\n"),
            env.agent_log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the agent is done with the last change (the runtime holds one sandbox per pod:
/// the old versions' teardown, a few at a time, is over) and its figures stop moving (the same
/// thread count over three samples 2 s apart: longer than the 2 s blocking threads stay idle
/// before they retire), and returns the last sample.
fn settled(env: &Env, pods: usize) -> Sample {
    env.wait(
        "one sandbox per pod (teardown of old versions over)",
        180,
        || env.sandboxes() == pods,
    );
    let mut samples = vec![sample(env).expect("/metrics answers")];
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(2));
        samples.push(sample(env).expect("/metrics answers"));
        let last3 = &samples[samples.len().saturating_sub(3)..];
        let still = last3.len() == 3
            && last3
                .iter()
                .all(|s| (s.threads - last3[0].threads).abs() < 1.0)
            && last3.iter().all(|s| (s.tasks - last3[0].tasks).abs() < 5.0);
        if still {
            break;
        }
    }
    samples.pop().unwrap()
}

#[test]
fn churned_pods_converge_and_the_agent_does_not_grow() {
    if !can_run() {
        return;
    }
    let secs = env_or("STATICLET_SOAK_SECS", 180);
    let pods = env_or("STATICLET_SOAK_PODS", 100) as usize;
    let seed = env_or(
        "STATICLET_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("soak: {pods} pods for {secs} s, STATICLET_SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let mut env = Env::new("soak");
    env.pod_network();
    let mut wanted: Vec<Option<u64>> = vec![Some(0); pods];
    for i in 0..pods {
        env.manifest(&format!("s{i}"), &manifest(&env, i, 0));
    }
    let t0 = Instant::now();
    env.start();
    converge(&env, &wanted, "at start");
    eprintln!(
        "soak: {pods} pods converged in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let before = settled(&env, pods);

    // Churn: one change every 250 ms; a sample every 10 s.
    eprintln!("soak:   time   RSS MiB   fds  threads  tasks  agent CPU s   changes");
    let print = |t: f64, s: &Sample, changes: u64| {
        eprintln!(
            "soak: {t:6.0} s {:9.1} {:5} {:8} {:6} {:12.1} {changes:9}",
            s.rss_mib, s.fds, s.threads, s.tasks, s.cpu_s
        )
    };
    print(0.0, &before, 0);
    let mut curve = vec![before];
    let churn = Instant::now();
    let mut next_sample = churn + Duration::from_secs(10);
    let mut changes = 0u64;
    let mut next_version = 1u64;
    while churn.elapsed() < Duration::from_secs(secs) {
        let i = rng.below(pods as u64) as usize;
        match (rng.below(4), wanted[i]) {
            (0 | 1, Some(_)) | (_, None) => {
                // An edit (or the pod back, at a new version).
                wanted[i] = Some(next_version);
                env.manifest(&format!("s{i}"), &manifest(&env, i, next_version));
                next_version += 1;
            }
            (2, Some(_)) => {
                env.remove_manifest(&format!("s{i}"));
                wanted[i] = None;
            }
            _ => {}
        }
        changes += 1;
        std::thread::sleep(Duration::from_millis(250));
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            let s = sample(&env).expect("/metrics answers during the churn");
            print(churn.elapsed().as_secs_f64(), &s, changes);
            curve.push(s);
        }
    }

    // Every pod wanted again, at a new version: the same steady state as before the churn.
    for (i, w) in wanted.iter_mut().enumerate() {
        *w = Some(next_version);
        env.manifest(&format!("s{i}"), &manifest(&env, i, next_version));
    }
    let t_all = Instant::now();
    converge(&env, &wanted, "after the churn");
    eprintln!(
        "soak: every pod edited at once: converged in {:.1} s",
        t_all.elapsed().as_secs_f64()
    );
    let after = settled(&env, pods);
    print(churn.elapsed().as_secs_f64(), &after, changes);
    let peak = curve.iter().fold(0.0f64, |m, s| m.max(s.rss_mib));
    eprintln!(
        "soak: {changes} changes; RSS {:.1} -> {:.1} MiB (peak {peak:.1}), fds {} -> {}, threads {} -> {}, tasks {} -> {}",
        before.rss_mib, after.rss_mib, before.fds, after.fds, before.threads, after.threads, before.tasks, after.tasks
    );
    // Bounds: the same pods in the same state. Memory may keep what the allocator holds after
    // the churn's peak, but not grow with the number of changes.
    assert!(
        after.rss_mib <= before.rss_mib * 1.5 + 8.0,
        "RSS grew from {:.1} to {:.1} MiB over {changes} changes",
        before.rss_mib,
        after.rss_mib
    );
    assert!(
        after.fds <= before.fds + 8.0,
        "open fds grew from {} to {}",
        before.fds,
        after.fds
    );
    assert!(
        after.threads <= before.threads + 8.0,
        "threads grew from {} to {}",
        before.threads,
        after.threads
    );
    assert!(
        after.tasks <= before.tasks + 20.0,
        "live tasks grew from {} to {}",
        before.tasks,
        after.tasks
    );

    // Everything removed: nothing is left.
    for i in 0..pods {
        env.remove_manifest(&format!("s{i}"));
    }
    let none = vec![None; pods];
    converge(&env, &none, "after removing every manifest");
    env.wait("nothing left under the root directory", 180, || {
        env.leftovers().is_empty()
    });
    let left = env.mounts_left();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let end = sample(&env).unwrap();
    eprintln!(
        "soak: every pod removed: RSS {:.1} MiB, fds {}, threads {}, tasks {}",
        end.rss_mib, end.fds, end.threads, end.tasks
    );
}
