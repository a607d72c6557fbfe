//! Crash consistency (issue 16 item 2). Pods start, crash, get edited and removed while
//! something is killed with SIGKILL at random moments:
//! - the agent (embedded runtime), and the agent made to die at each fault point
//!   (`staticlet_runtime::fault`), the moments random kills rarely hit;
//! - shims and containers' processes (embedded runtime), the agent running (or down);
//! - containerd and its shims (CRI backend), the agent running.
//!
//! After every kill round ([`Harness::check`]): every wanted pod converges, no container runs
//! twice, restart counts never go backwards (with containerd: no pod has two ready sandboxes or
//! two running containers of one name). At the end ([`Harness::finish`]), with every manifest
//! removed: nothing is left — sandboxes, containers, shim and container processes, mounts, pod
//! cgroups, pod directories, IP allocations (containerd's own shim leaks are reported).
//!
//! Sizes: `STATICLET_CRASH_KILLS` random agent kills (default 30, CI's size; the soak is 200),
//! `STATICLET_CRASH_PROCESS_KILLS` kills of each kind of process (shims, containers; default 12),
//! `STATICLET_CRASH_CONTAINERD_KILLS` containerd kills (default 10),
//! `STATICLET_CRASH_CONTAINERD_SHIM_KILLS` containerd shim kills (default 6).
//! `STATICLET_CRASH_SEED` replays a run's order (the seed is printed; timing still varies). The
//! tests can run side by side (each has its own node name and process markers).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use staticlet_runtime::{labels, ContainerRuntime, ContainerState, LabelSelector, SandboxState};

use common::*;

/// A small deterministic generator (the seed is printed, so a failing run can be replayed).
struct Rng(u64);

impl Rng {
    /// Seeded from `STATICLET_CRASH_SEED`, else from the clock; prints the seed for `what`.
    fn from_env(what: &str) -> Self {
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
        eprintln!("{what}: STATICLET_CRASH_SEED={seed}");
        Rng(seed)
    }

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

/// A count from the environment variable `var`, else `default`.
fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const PODS: usize = 8;

/// Every third pod crashes every 2 s.
fn crasher(i: usize) -> bool {
    i.is_multiple_of(3)
}

/// Pods 6 and 7 have a pod network (CNI ADD/DEL, IP allocations, veths).
fn pod_network(i: usize) -> bool {
    i >= 6
}

/// Pod `i`'s manifest at `version`; its process is `sleep <marker>`.
fn manifest(env: &Env, i: usize, version: u32, marker: &str) -> String {
    let name = format!("p{i}");
    let command = if crasher(i) {
        format!("[sh, -c, 'timeout 2 sleep {marker}; exit 1']")
    } else {
        format!("[sleep, '{marker}']")
    };
    // A quick back-off keeps crashers converging, and the pods whose processes the tests kill
    // restarting at once.
    let crash = "  annotations:\n    staticlet.io/backoff-initial: 200ms\n    staticlet.io/backoff-max: 1s\n";
    let net = if pod_network(i) {
        ""
    } else {
        "  hostNetwork: true\n"
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{crash}spec:\n{net}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: IfNotPresent\n    command: {command}\n    env:\n    - {{name: VERSION, value: \"{version}\"}}\n",
        env.image()
    )
}

/// Pids of the processes whose command line is `sleep <marker>` (the containers' own).
fn sleeper_pids(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c == format!("sleep\0{marker}\0").as_bytes())
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn sleepers(marker: &str) -> usize {
    sleeper_pids(marker).len()
}

/// Processes whose command line contains `s` (shims, helpers).
fn processes_with(s: &str) -> Vec<String> {
    pids_with(s).into_iter().map(|(_, c)| c).collect()
}

/// Pids and command lines of the processes whose command line contains `s`.
fn pids_with(s: &str) -> Vec<(i64, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(s).then_some((pid, c))
        })
        .collect()
}

/// Field 22 of `/proc/<pid>/stat` (start time): with the pid, names one process for good.
/// `None` when the process is gone, or dead and not reaped yet (a zombie: a shim killed a moment
/// ago stays one until init reaps it).
fn start_time(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// SIGKILL to `pid` if it is still the process that started at `start`; whether it was sent.
fn kill_9(pid: i64, start: u64) -> bool {
    pid > 0
        && start_time(pid) == Some(start)
        && Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
}

/// What is in pod `uid`'s cgroup (every hierarchy): each directory below it and the command
/// lines of its processes (for a failure's message).
fn cgroup_tree(uid: &str) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let procs: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .map(|pid| {
                let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid}: {}", String::from_utf8_lossy(&c).replace('\0', " "))
            })
            .collect();
        out.push(format!("{}: {procs:?}", dir.display()));
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for d in pod_cgroups(uid) {
        walk(&d, &mut out);
    }
    out
}

/// The pods (`p0`..`p7`), what they should be, and what was seen of them across kills.
struct Harness {
    env: Env,
    /// Each pod's process is `sleep <marks>0<NN>` (`marks` differs per test: they run side by
    /// side), so duplicates are found in /proc.
    marks: u32,
    rng: Rng,
    subnet: String,
    version: [u32; PODS],
    present: [bool; PODS],
    /// The highest restart count seen per pod UID, since the pod was last (re)added: a removed
    /// pod that comes back with the same manifest is a new pod with the same UID.
    restarts: BTreeMap<(usize, String), i64>,
    uids_seen: BTreeSet<String>,
    ips_seen: Vec<String>,
}

impl Harness {
    /// An agent's environment on `backend` with a pod network and every pod's manifest (the
    /// agent is not started).
    fn new(backend: Backend, node: &str, marks: u32, rng: Rng) -> Self {
        let mut env = Env::with_backend(backend, node);
        let subnet = env.pod_network();
        let h = Harness {
            env,
            marks,
            rng,
            subnet,
            version: [0; PODS],
            present: [true; PODS],
            restarts: BTreeMap::new(),
            uids_seen: BTreeSet::new(),
            ips_seen: Vec::new(),
        };
        for i in 0..PODS {
            h.write(i);
        }
        h
    }

    fn marker(&self, i: usize) -> String {
        format!("{}0{i:02}", self.marks)
    }

    fn write(&self, i: usize) {
        let m = manifest(&self.env, i, self.version[i], &self.marker(i));
        self.env.manifest(&format!("p{i}"), &m);
    }

    /// A new version of pod `i` (a new UID: the old pod goes, the new one starts).
    fn edit(&mut self, i: usize) {
        self.version[i] += 1;
        self.write(i);
        self.present[i] = true;
    }

    /// One random change: a pod edited, removed or added back (or nothing); the pod's index.
    fn random_change(&mut self) -> usize {
        let i = self.rng.below(PODS as u64) as usize;
        match self.rng.below(4) {
            0 => self.edit(i),
            1 if self.present[i] => {
                self.env.remove_manifest(&format!("p{i}"));
                self.present[i] = false;
                // Whatever it ran is gone; the same content later is a new pod.
                self.restarts.retain(|(j, _), _| *j != i);
            }
            1 | 2 if !self.present[i] => {
                self.write(i);
                self.present[i] = true;
            }
            _ => {}
        }
        i
    }

    /// No pod's process runs twice, right now.
    fn no_duplicate_now(&self, when: &str) {
        for m in 0..PODS {
            let n = sleepers(&self.marker(m));
            assert!(n <= 1, "p{m} runs {n} times ({when})");
        }
    }

    /// Waits until every wanted pod runs its container (a crasher between its restarts counts
    /// as converged when it is waiting in back-off) and removed pods are gone, then checks: no
    /// container runs twice, restart counts never go back, (containerd) no pod has two ready
    /// sandboxes or two running containers of one name. The agent must be running.
    fn check(&mut self, when: &str) {
        let unconverged = |h: &Harness| -> Vec<String> {
            (0..PODS)
                .filter_map(|i| {
                    let name = format!("p{i}");
                    let ok = match (h.present[i], h.env.pod(&name)) {
                        (false, None) => sleepers(&h.marker(i)) == 0,
                        (true, Some(p)) => {
                            p["metadata"]["deletionTimestamp"].is_null()
                                && status(&h.env, &name, "app").is_some_and(|c| {
                                    c["state"]["running"].is_object()
                                        || (crasher(i)
                                            && c["state"]["waiting"]["reason"]
                                                == "CrashLoopBackOff")
                                })
                        }
                        _ => false,
                    };
                    (!ok).then(|| {
                        format!(
                            "p{i} (wanted: {}, sleeping: {}): {}",
                            h.present[i],
                            sleepers(&h.marker(i)),
                            h.env
                                .pod(&name)
                                .map(|p| p["status"].to_string())
                                .unwrap_or_else(|| "not listed".into())
                        )
                    })
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = unconverged(self);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not converged ({when}):\n{}\nagent log:\n{}",
                left.join("\n"),
                self.env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for i in 0..PODS {
            // Never twice: one `sleep` of this pod at most.
            let n = sleepers(&self.marker(i));
            assert!(n <= 1, "p{i} runs {n} times ({when})");
            if !self.present[i] {
                assert_eq!(n, 0, "p{i} was removed but runs ({when})");
                continue;
            }
            let name = format!("p{i}");
            let pod = self.env.pod(&name).unwrap();
            let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
            let count = status(&self.env, &name, "app").unwrap()["restartCount"]
                .as_i64()
                .unwrap();
            self.uids_seen.insert(uid.clone());
            let before = self.restarts.entry((i, uid)).or_insert(0);
            assert!(
                count >= *before,
                "p{i}'s restart count went back from {before} to {count} ({when})"
            );
            *before = count;
            if let Some(ip) = pod["status"]["podIP"].as_str() {
                if ip.starts_with(&self.subnet) && !self.ips_seen.contains(&ip.to_string()) {
                    self.ips_seen.push(ip.to_string());
                }
            }
        }
        if self.env.backend() == Backend::Containerd {
            let dups = self.runtime_duplicates();
            assert!(
                dups.is_empty(),
                "duplicates in containerd ({when}): {dups:#?}"
            );
        }
    }

    /// (containerd) Pods with more than one ready sandbox, or more than one running container
    /// of one name, among the objects with the agent's labels.
    fn runtime_duplicates(&self) -> Vec<String> {
        let (cri, rt) = self.env.cri();
        let all = LabelSelector::managed();
        let (sandboxes, containers) = rt.block_on(async {
            (
                cri.list_pod_sandboxes(&all).await.unwrap(),
                cri.list_containers(&all).await.unwrap(),
            )
        });
        let mut ready: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
            ready.entry(s.uid.clone()).or_default().push(s.id.0.clone());
        }
        let mut running: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for c in containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let uid = c.labels.get(labels::POD_UID).cloned().unwrap_or_default();
            running
                .entry((uid, c.name.clone()))
                .or_default()
                .push(c.id.0.clone());
        }
        ready
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(uid, v)| format!("pod {uid}: ready sandboxes {v:?}"))
            .chain(
                running
                    .into_iter()
                    .filter(|(_, v)| v.len() > 1)
                    .map(|((uid, c), v)| format!("pod {uid}: running containers {c}: {v:?}")),
            )
            .collect()
    }

    /// Removes every manifest (the agent must be running) and checks that nothing is left:
    /// sandboxes, containers and pod directories, pod cgroups, containers' processes, mounts
    /// below the runtime's directories, IP allocations, shims. Stops the agent.
    fn finish(&mut self, what: &str) {
        for (i, wanted) in self.present.iter().enumerate() {
            if *wanted {
                self.env.remove_manifest(&format!("p{i}"));
            }
        }
        let env = &self.env;
        env.wait("every pod gone", 180, || {
            (0..PODS).all(|i| env.pod(&format!("p{i}")).is_none())
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let left = || {
            let mut left = env.leftovers();
            left.extend(
                env.containers()
                    .into_iter()
                    .map(|c| format!("container {c}")),
            );
            if env.sandboxes() > 0 {
                left.push(format!("{} sandboxes", env.sandboxes()));
            }
            left
        };
        while !left().is_empty() {
            assert!(
                Instant::now() < deadline,
                "left: {:#?}\npod cgroups: {:#?}\nagent log:\n{}",
                left(),
                self.uids_seen
                    .iter()
                    .flat_map(|u| cgroup_tree(u))
                    .collect::<Vec<_>>(),
                env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for uid in &self.uids_seen {
            assert!(pod_cgroups(uid).is_empty(), "pod {uid}'s cgroup is left");
        }
        for i in 0..PODS {
            assert_eq!(sleepers(&self.marker(i)), 0, "p{i} still runs");
        }
        let mounts = env.mounts_left();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        for ip in &self.ips_seen {
            assert!(!env.ip_allocated(ip), "IP {ip} still allocated");
        }
        self.env.kill_agent();
        // Shims: the embedded runtime's name the root directory; containerd's its socket (they
        // exit once their sandbox is removed).
        let mark = match self.env.backend() {
            Backend::Embedded => self.env.root().display().to_string(),
            Backend::Containerd => self.env.containerd().sock().display().to_string(),
        };
        // containerd's shims are per sandbox (`-id <sandbox id>`). Once CRI lists none of the
        // agent's sandboxes (checked above), a shim still running is containerd's own leak: no
        // CRI client can see or remove it. Two kinds were seen, both reported (with what the
        // agent's and containerd's logs say of the sandbox), not failed:
        // - a sandbox the agent never got back from RunPodSandbox (containerd killed in the
        //   middle of it): containerd lists it after its restart and the agent removes it, but
        //   its shim runs on (containerd/containerd#6860);
        // - a sandbox the agent created, stopped and removed through CRI while containerd was
        //   being killed and restarted (containerd/containerd#10421 is the same symptom).
        // The embedded runtime's shims are the agent's own: any one left fails.
        let log = self.env.agent_log();
        let created: BTreeSet<&str> = log
            .split("pod sandbox created sandbox=")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let containerds_own = loop {
            let (ours, theirs): (Vec<String>, Vec<String>) = processes_with(&mark)
                .into_iter()
                .filter(|c| {
                    !c.contains(" run --hostname-override") && !c.starts_with("containerd ")
                })
                .partition(|c| !c.contains("containerd-shim"));
            if ours.is_empty() && (theirs.is_empty() || Instant::now() >= deadline) {
                break theirs;
            }
            assert!(Instant::now() < deadline, "processes left: {ours:#?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        for shim in &containerds_own {
            let id = shim
                .split(" -id ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or_default();
            let mentions = |log: &str| -> Vec<String> {
                log.lines()
                    .filter(|l| !id.is_empty() && l.contains(id))
                    .map(|l| l.chars().take(300).collect())
                    .collect()
            };
            let containerd_log = self.env.containerd().log();
            eprintln!(
                "{what}: containerd left the shim of sandbox {id} ({}): {shim}\nagent log:\n{}\ncontainerd log:\n{}",
                if created.contains(id) {
                    "created by the agent, removed through CRI"
                } else {
                    "never returned to the agent"
                },
                mentions(&log).join("\n"),
                mentions(&containerd_log).join("\n")
            );
        }
        let sandboxes = match self.env.backend() {
            Backend::Embedded => String::new(),
            Backend::Containerd => format!(", {} sandboxes created", created.len()),
        };
        eprintln!(
            "{what}: {} pod UIDs, {} pod IPs{sandboxes}: no duplicate, no lost restart, nothing left{}",
            self.uids_seen.len(),
            self.ips_seen.len(),
            if containerds_own.is_empty() {
                String::new()
            } else {
                format!(" (but {} shims containerd left)", containerds_own.len())
            }
        );
    }
}

#[test]
fn sigkill_at_random_moments_and_at_every_fault_point() {
    if !can_run() {
        return;
    }
    let kills = count("STATICLET_CRASH_KILLS", 30);
    let rng = Rng::from_env(&format!("crash consistency (agent): {kills} kills"));
    let mut h = Harness::new(Backend::Embedded, "crash", 3607, rng);

    // 1. Every fault point once: the agent dies there by itself; the next one recovers.
    for point in staticlet_runtime::fault::POINTS {
        // Something for each point to do: a pod to create and one to tear down (a pod with a
        // network for the sandbox points).
        let i = if point.starts_with("sandbox") {
            6 + h.rng.below(2) as usize
        } else {
            h.rng.below(PODS as u64) as usize
        };
        h.edit(i);
        h.env
            .start_with_env(&[], &[(staticlet_runtime::fault::ENV, point)]);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if h.env.agent_log().contains(&format!("fault point {point}")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fault point {point} was never reached:\n{}",
                h.env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        h.env.agent_exit(30);
        h.env.start();
        h.check(point);
        h.env.kill_agent();
    }

    // 2. Random kills while manifests change.
    for k in 0..kills {
        h.random_change();
        h.env.start();
        // A random moment in the agent's first 1.5 s (start-up, adoption, the change).
        std::thread::sleep(Duration::from_millis(h.rng.below(1500)));
        h.env.kill_agent();
        h.no_duplicate_now(&format!("right after kill {k}"));
        if k % 5 == 4 || k + 1 == kills {
            h.env.start();
            h.check(&format!("kill {k}"));
            h.env.kill_agent();
        }
    }

    // 3. Everything removed: nothing is left behind.
    h.env.start();
    h.finish(&format!(
        "crash consistency (agent): {} fault points, {kills} kills",
        staticlet_runtime::fault::POINTS.len()
    ));
}

/// What a kill hits in [`sigkill_of_shims_and_of_containers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The container's shim (its supervisor).
    Shim,
    /// The container's init process (the pod's `sleep`).
    Container,
}

/// The embedded runtime's records of pod `name`'s containers: (container id, `shim/state.json`)
/// of every container directory whose `container.json` names the pod.
fn shim_records(env: &Env, name: &str) -> Vec<(String, serde_json::Value)> {
    let full = env.full_name(name);
    let dir = env.root().join("runtime/containers");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path().join("container.json")).ok()?)
                    .ok()?;
            if rec["labels"][labels::POD_NAME] != full.as_str() {
                return None;
            }
            let st = serde_json::from_slice(&std::fs::read(e.path().join("shim/state.json")).ok()?)
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), st))
        })
        .collect()
}

/// Pod `name`'s container `app` as the agent reports it running, its id, and its shim record
/// (also running, the shim and the init alive), once they are (waits up to 180 s).
fn wait_running(
    env: &Env,
    name: &str,
    when: &str,
) -> (serde_json::Value, String, serde_json::Value) {
    let running = || {
        let c = status(env, name, "app")?;
        let id = c["containerID"]
            .as_str()?
            .strip_prefix(env.container_id_prefix())?
            .to_string();
        if !c["state"]["running"].is_object() {
            return None;
        }
        let (_, st) = shim_records(env, name)
            .into_iter()
            .find(|(cid, _)| *cid == id)?;
        // Both alive: an earlier kill of any moment may have left a record whose shim is gone
        // (until the next relist kills its container).
        let alive = |pid: &str, start: &str| {
            st[pid]
                .as_i64()
                .is_some_and(|p| start_time(p) == st[start].as_u64())
        };
        (st["status"] == "running"
            && alive("shim_pid", "shim_start_time")
            && alive("pid", "pid_start_time"))
        .then_some((c, id, st))
    };
    env.wait(&format!("{name} running ({when})"), 180, || {
        running().is_some()
    });
    running().unwrap()
}

/// The files of a shim's state directory and their contents (for a failure's message).
fn shim_dir_contents(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let text = std::fs::read(e.path()).unwrap_or_default();
            format!(
                "{}:\n{}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&text)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGKILL to `victim` of a container from its shim record; whether one was sent.
fn kill_victim(st: &serde_json::Value, victim: Victim) -> bool {
    let (pid, start) = match victim {
        Victim::Shim => ("shim_pid", "shim_start_time"),
        Victim::Container => ("pid", "pid_start_time"),
    };
    match (st[pid].as_i64(), st[start].as_u64()) {
        (Some(pid), Some(start)) => kill_9(pid, start),
        _ => false,
    }
}

/// SIGKILLs of shims and of containers' init processes (embedded runtime) while the agent runs
/// and pods start, crash, get edited and removed.
///
/// Two kinds of kills, alternating shims and containers:
/// - measured: a running `sleep` pod (not one being changed) loses its shim or its process; the
///   exit must be recorded and the pod restarted exactly once: restart count +1, a new
///   container, and as its last state the exit: 137 (SIGKILL) for a killed container, 255
///   (unknown: nobody saw the process exit) for a killed shim, whose orphaned container the
///   runtime kills — a container without its shim has no log, no exit record, no attach;
/// - at a random moment (up to 1 s) after a random change, whatever shim or process a random
///   pod has, in any state (being created, started, stopped): only the common checks.
#[test]
fn sigkill_of_shims_and_of_containers() {
    if !can_run() {
        return;
    }
    let kills = count("STATICLET_CRASH_PROCESS_KILLS", 12);
    let rng = Rng::from_env(&format!(
        "crash consistency (shims, containers): {kills} kills of each"
    ));
    let mut h = Harness::new(Backend::Embedded, "crashp", 3608, rng);
    h.env.start();
    h.check("start");
    restart_policies(&mut h);
    let mut measured = [0usize; 2];
    let mut measured_down = 0;
    for k in 0..2 * kills {
        let victim = if k % 2 == 0 {
            Victim::Shim
        } else {
            Victim::Container
        };
        let changed = (h.rng.below(2) == 0).then(|| h.random_change());
        if h.rng.below(3) == 0 {
            // Any moment, any state.
            let i = h.rng.below(PODS as u64) as usize;
            std::thread::sleep(Duration::from_millis(h.rng.below(1000)));
            for (_, st) in shim_records(&h.env, &format!("p{i}")) {
                kill_victim(&st, victim);
            }
            h.no_duplicate_now(&format!("kill {k} ({victim:?} of p{i}, any state)"));
        } else {
            // Measured: a running sleeper that is not being changed.
            let candidates: Vec<usize> = (0..PODS)
                .filter(|&i| !crasher(i) && h.present[i] && Some(i) != changed)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let i = candidates[h.rng.below(candidates.len() as u64) as usize];
            let name = format!("p{i}");
            let when = format!("kill {k} ({victim:?} of {name})");
            let (before, id, st) = wait_running(&h.env, &name, &when);
            let restarts = before["restartCount"].as_i64().unwrap();
            // One in four while the agent is down: the next one finds the exit (or the
            // orphan) when it adopts the pod.
            let agent_down = h.rng.below(4) == 0;
            if agent_down {
                h.env.kill_agent();
            }
            assert!(kill_victim(&st, victim), "{when}: nothing to kill: {st}");
            if agent_down {
                h.env.start();
            }
            measured_down += usize::from(agent_down);
            let env = &h.env;
            let restarted = || {
                status(env, &name, "app").filter(|c| {
                    c["restartCount"].as_i64() > Some(restarts)
                        && c["state"]["running"].is_object()
                        && c["containerID"] != before["containerID"]
                })
            };
            env.wait(&format!("{name} restarted ({when})"), 120, || {
                restarted().is_some()
            });
            let after = restarted().unwrap();
            let exit = &after["lastState"]["terminated"];
            let want = match victim {
                Victim::Shim => 255,
                Victim::Container => 137,
            };
            assert!(
                after["restartCount"].as_i64() == Some(restarts + 1)
                    && exit["exitCode"] == want
                    && exit["reason"] == "Error"
                    && exit["containerID"] == before["containerID"],
                "{when} (agent down: {agent_down}): want restart count {} and exit {want} of {id}, got {after}\nshim record before the kill: {st}\nshim directory now: {}\nagent log:\n{}",
                restarts + 1,
                shim_dir_contents(&env.root().join("runtime/containers").join(&id).join("shim")),
                env.agent_log()
            );
            assert_eq!(sleepers(&h.marker(i)), 1, "{when}: {name} runs once");
            measured[victim as usize] += 1;
        }
        if k % 6 == 5 || k + 1 == 2 * kills {
            h.check(&format!("kill {k}"));
        }
    }
    h.finish(&format!(
        "crash consistency (shims, containers): {kills} kills of each, measured: {} shims, {} containers ({measured_down} with the agent down)",
        measured[0], measured[1]
    ));
}

/// A killed shim or container and the pod's restartPolicy: under `Never` a killed shim leaves
/// the container terminated (255, the orphan killed) and the pod `Failed`, never restarted;
/// under `OnFailure` a killed container (137) and a killed shim (255) are failures: restarted.
fn restart_policies(h: &mut Harness) {
    let pod = |name: &str, policy: &str, marker: u32| {
        h.env.pod_manifest(
            name,
            &format!(
                "  hostNetwork: true\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '{}0{marker}']\n",
                h.marks
            ),
        )
        .replace("spec:\n", "  annotations:\n    staticlet.io/backoff-initial: 200ms\n    staticlet.io/backoff-max: 1s\nspec:\n")
    };
    h.env.manifest("never", &pod("never", "Never", 90));
    h.env
        .manifest("onfailure", &pod("onfailure", "OnFailure", 91));
    let env = &h.env;

    let (_, _, st) = wait_running(env, "never", "restartPolicy Never");
    assert!(kill_victim(&st, Victim::Shim));
    env.wait("never: terminated, Failed", 120, || {
        env.pod("never").is_some_and(|p| {
            p["status"]["phase"] == "Failed"
                && container_state(&p, "app").is_some_and(|c| {
                    c["state"]["terminated"]["exitCode"] == 255 && c["restartCount"] == 0
                })
        })
    });
    env.wait("never's orphaned container killed", 60, || {
        sleepers(&format!("{}090", h.marks)) == 0
    });

    for (restarts, (victim, code)) in [(1, (Victim::Container, 137)), (2, (Victim::Shim, 255))] {
        let (_, _, st) = wait_running(env, "onfailure", &format!("OnFailure, {victim:?}"));
        assert!(kill_victim(&st, victim));
        env.wait(
            &format!("onfailure restarted after {victim:?} kill"),
            120,
            || {
                status(env, "onfailure", "app").is_some_and(|c| {
                    c["restartCount"] == restarts
                        && c["state"]["running"].is_object()
                        && c["lastState"]["terminated"]["exitCode"] == code
                })
            },
        );
    }
    for name in ["never", "onfailure"] {
        let uid = env.uid(name);
        h.uids_seen.insert(uid);
        h.env.remove_manifest(name);
    }
    let env = &h.env;
    env.wait("never and onfailure gone", 120, || {
        env.pod("never").is_none() && env.pod("onfailure").is_none()
    });
}

/// containerd (CRI backend) SIGKILLed at a random moment after a random change, and restarted
/// after a random pause, or one of its shims (a random sandbox's) SIGKILLed, while the agent
/// runs: every wanted pod converges, no pod gets a second ready sandbox or running container,
/// and nothing is left once every manifest is removed.
#[test]
fn sigkill_of_containerd() {
    if !Backend::Containerd.can_run() {
        return;
    }
    let kills = count("STATICLET_CRASH_CONTAINERD_KILLS", 10);
    let shim_kills = count("STATICLET_CRASH_CONTAINERD_SHIM_KILLS", 6);
    let rng = Rng::from_env(&format!(
        "crash consistency (containerd): {kills} kills, {shim_kills} shim kills"
    ));
    let mut h = Harness::new(Backend::Containerd, "crashc", 3609, rng);
    h.env.start();
    h.check("start");
    let sock = h.env.containerd().sock().display().to_string();
    let (mut left, mut shims_left) = (kills, shim_kills);
    let mut shims_killed = 0;
    for k in 0..kills + shim_kills {
        h.random_change();
        std::thread::sleep(Duration::from_millis(h.rng.below(1500)));
        // containerd or one of its shims (one per sandbox), in a random order.
        if h.rng.below((left + shims_left) as u64) < left as u64 {
            left -= 1;
            h.env.containerd().kill();
            h.no_duplicate_now(&format!("right after kill {k} (containerd)"));
            std::thread::sleep(Duration::from_millis(h.rng.below(1000)));
            h.env.containerd().spawn();
        } else {
            shims_left -= 1;
            let shims: Vec<(i64, String)> = pids_with(&sock)
                .into_iter()
                .filter(|(_, c)| c.contains("containerd-shim"))
                .collect();
            if !shims.is_empty() {
                let (pid, _) = &shims[h.rng.below(shims.len() as u64) as usize];
                if let Some(start) = start_time(*pid) {
                    shims_killed += usize::from(kill_9(*pid, start));
                }
            }
            h.no_duplicate_now(&format!("right after kill {k} (a shim)"));
        }
        if k % 3 == 2 || k + 1 == kills + shim_kills {
            h.check(&format!("kill {k}"));
        }
    }
    h.finish(&format!(
        "crash consistency (containerd): {kills} kills, {shims_killed} shims killed"
    ));
}
