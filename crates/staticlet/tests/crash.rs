//! Crash consistency of the agent (embedded runtime): the agent is killed with SIGKILL at random
//! moments — and made to die at each fault point (`staticlet_runtime::fault`), the moments
//! random kills rarely hit — while pods start, crash, get edited and removed. After every
//! restart: every wanted pod converges, no container runs twice, restart counts never go
//! backwards; at the end, with every manifest removed: nothing is left — sandboxes, containers,
//! shim and container processes, mounts, pod cgroups, pod directories, IP allocations.
//!
//! `STATICLET_CRASH_KILLS` sets the number of random kills (default 30, CI's size; the soak is
//! `STATICLET_CRASH_KILLS=200`); `STATICLET_CRASH_SEED` replays a run (the seed is printed).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// A small deterministic generator (the seed is printed, so a failing run can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Marks each pod's process (`sleep 3607NN`), so duplicates are found in /proc.
fn marker(i: usize) -> String {
    format!("36070{i:02}")
}

fn manifest(env: &Env, i: usize, version: u32, pod_network: bool) -> String {
    let name = format!("p{i}");
    // Every third pod crashes every 2 s (a quick back-off keeps it converging).
    let command = if i.is_multiple_of(3) {
        format!("[sh, -c, 'timeout 2 sleep {}; exit 1']", marker(i))
    } else {
        format!("[sleep, '{}']", marker(i))
    };
    let crash = if i.is_multiple_of(3) {
        "  annotations:\n    staticlet.io/backoff-initial: 200ms\n    staticlet.io/backoff-max: 1s\n"
    } else {
        ""
    };
    let net = if pod_network {
        ""
    } else {
        "  hostNetwork: true\n"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{crash}spec:\n{net}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: IfNotPresent\n    command: {command}\n    env:\n    - {{name: VERSION, value: \"{version}\"}}\n",
        env.image()
    )
}

/// Processes whose command line is `sleep <marker>` (the containers' own).
fn sleepers(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c == format!("sleep\0{marker}\0").as_bytes())
                .unwrap_or(false)
        })
        .count()
}

/// Processes of this agent's root directory (shims, helpers).
fn processes_under(root: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(root).then_some(c)
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_and_at_every_fault_point() {
    if !can_run() {
        return;
    }
    let kills: usize = std::env::var("STATICLET_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("STATICLET_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash consistency: {kills} kills, STATICLET_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut env = Env::new("crash");
    let subnet = env.pod_network();
    const PODS: usize = 8;
    // Pods 6 and 7 have a pod network (CNI ADD/DEL, IP allocations, veths).
    let pod_network = |i: usize| i >= 6;
    let mut version = [0u32; PODS];
    let mut present = [true; PODS];
    for i in 0..PODS {
        env.manifest(&format!("p{i}"), &manifest(&env, i, 0, pod_network(i)));
    }
    // The highest restart count seen per pod UID.
    // The highest restart count seen per pod UID, since the pod was last (re)added: a removed
    // pod that comes back with the same manifest is a new pod with the same UID.
    let mut restarts: BTreeMap<(usize, String), i64> = BTreeMap::new();
    let mut uids_seen: BTreeSet<String> = BTreeSet::new();
    let mut ips_seen = Vec::new();

    let check = |env: &Env,
                 present: &[bool; PODS],
                 restarts: &mut BTreeMap<(usize, String), i64>,
                 uids_seen: &mut BTreeSet<String>,
                 ips: &mut Vec<String>,
                 when: &str| {
        // Converges: every wanted pod runs its container (a crasher between its restarts
        // counts as converged when it is waiting in back-off); removed pods are gone.
        let unconverged = |env: &Env| -> Vec<String> {
            (0..PODS)
                .filter_map(|i| {
                    let name = format!("p{i}");
                    let ok = match (present[i], env.pod(&name)) {
                        (false, None) => sleepers(&marker(i)) == 0,
                        (true, Some(p)) => {
                            p["metadata"]["deletionTimestamp"].is_null()
                                && status(env, &name, "app").is_some_and(|c| {
                                    c["state"]["running"].is_object()
                                        || (i.is_multiple_of(3)
                                            && c["state"]["waiting"]["reason"]
                                                == "CrashLoopBackOff")
                                })
                        }
                        _ => false,
                    };
                    (!ok).then(|| {
                        format!(
                            "p{i} (wanted: {}, sleeping: {}): {}",
                            present[i],
                            sleepers(&marker(i)),
                            env.pod(&name)
                                .map(|p| p["status"].to_string())
                                .unwrap_or_else(|| "not listed".into())
                        )
                    })
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = unconverged(env);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not converged ({when}):\n{}\nagent log:\n{}",
                left.join("\n"),
                env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for (i, &wanted) in present.iter().enumerate() {
            // Never twice: one `sleep` of this pod at most.
            let n = sleepers(&marker(i));
            assert!(n <= 1, "p{i} runs {n} times ({when})");
            if !wanted {
                assert_eq!(n, 0, "p{i} was removed but runs ({when})");
                continue;
            }
            let name = format!("p{i}");
            let pod = env.pod(&name).unwrap();
            let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
            let count = status(env, &name, "app").unwrap()["restartCount"]
                .as_i64()
                .unwrap();
            uids_seen.insert(uid.clone());
            let before = restarts.entry((i, uid)).or_insert(0);
            assert!(
                count >= *before,
                "p{i}'s restart count went back from {before} to {count} ({when})"
            );
            *before = count;
            if let Some(ip) = pod["status"]["podIP"].as_str() {
                if ip.starts_with(&subnet) && !ips.contains(&ip.to_string()) {
                    ips.push(ip.to_string());
                }
            }
        }
    };

    // 1. Every fault point once: the agent dies there by itself; the next one recovers.
    for point in staticlet_runtime::fault::POINTS {
        // Something for each point to do: a pod to create and one to tear down (a pod with a
        // network for the sandbox points).
        let i = if point.starts_with("sandbox") {
            6 + rng.below(2) as usize
        } else {
            rng.below(PODS as u64) as usize
        };
        version[i] += 1;
        env.manifest(
            &format!("p{i}"),
            &manifest(&env, i, version[i], pod_network(i)),
        );
        env.start_with_env(&[], &[(staticlet_runtime::fault::ENV, point)]);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if env.agent_log().contains(&format!("fault point {point}")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fault point {point} was never reached:\n{}",
                env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        env.agent_exit(30);
        env.start();
        check(
            &env,
            &present,
            &mut restarts,
            &mut uids_seen,
            &mut ips_seen,
            point,
        );
        env.kill_agent();
    }

    // 2. Random kills while manifests change.
    for k in 0..kills {
        let i = rng.below(PODS as u64) as usize;
        match rng.below(4) {
            0 => {
                version[i] += 1;
                env.manifest(
                    &format!("p{i}"),
                    &manifest(&env, i, version[i], pod_network(i)),
                );
                present[i] = true;
            }
            1 if present[i] => {
                env.remove_manifest(&format!("p{i}"));
                present[i] = false;
                // Whatever it ran is gone; the same content later is a new pod.
                restarts.retain(|(j, _), _| *j != i);
            }
            1 | 2 if !present[i] => {
                env.manifest(
                    &format!("p{i}"),
                    &manifest(&env, i, version[i], pod_network(i)),
                );
                present[i] = true;
            }
            _ => {}
        }
        env.start();
        // A random moment in the agent's first 1.5 s (start-up, adoption, the change).
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        env.kill_agent();
        for m in 0..PODS {
            let n = sleepers(&marker(m));
            assert!(n <= 1, "p{m} runs {n} times right after kill {k}");
        }
        if k % 5 == 4 || k + 1 == kills {
            env.start();
            check(
                &env,
                &present,
                &mut restarts,
                &mut uids_seen,
                &mut ips_seen,
                &format!("kill {k}"),
            );
            env.kill_agent();
        }
    }

    // 3. Everything removed: nothing is left behind.
    for (i, wanted) in present.iter().enumerate() {
        if *wanted {
            env.remove_manifest(&format!("p{i}"));
        }
    }
    env.start();
    env.wait("every pod gone", 180, || {
        (0..PODS).all(|i| env.pod(&format!("p{i}")).is_none())
    });
    let root = env.root().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !env.leftovers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left under the root directory: {:#?}\nagent log:\n{}",
            env.leftovers(),
            env.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for uid in &uids_seen {
        assert!(pod_cgroups(uid).is_empty(), "pod {uid}'s cgroup is left");
    }
    for i in 0..PODS {
        assert_eq!(sleepers(&marker(i)), 0, "p{i} still runs");
    }
    let left = env.mounts_left();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    for ip in &ips_seen {
        assert!(!env.ip_allocated(ip), "IP {ip} still allocated");
    }
    env.kill_agent();
    let procs: Vec<String> = processes_under(&root)
        .into_iter()
        .filter(|c| !c.contains(" run "))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:#?}");
    eprintln!(
        "crash consistency: {} fault points, {kills} kills, {} pod UIDs, {} pod IPs: no duplicate, no lost restart, nothing left",
        staticlet_runtime::fault::POINTS.len(),
        uids_seen.len(),
        ips_seen.len()
    );
}
