//! Start-up latency of static pods on containerd through staticlet's CRI backend, beside the
//! floor: the raw CRI call sequence (RunPodSandbox, CreateContainer, StartContainer) issued
//! directly against the same private containerd.
//!
//! ```text
//! cargo build --release -p staticlet
//! cargo run --release -p staticlet-runtime-cri --features testutil --example cri_bench [N]
//! ```
//! Root and containerd are needed. After one unmeasured pod each, measures 5 single pods one
//! after another and N pods (default 50) at once, each until its container's process runs: the container writes its name into a
//! FIFO (a hostPath mount) that the benchmark reads, for the floor from the first call
//! (RunPodSandbox) and for staticlet from the manifest written. For staticlet it also shows
//! when its API reports the container running (polled every 20 ms, so +-20 ms). Prints p50 / p90
//! and the ratio to the floor (issue 4's target: within 1.3x).
// A benchmark in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staticlet_runtime::{ContainerConfig, ContainerRuntime, ImageSpec, Mount, SandboxConfig};
use staticlet_runtime_cri::testutil::{repo_root, skip_reason, Containerd, BUSYBOX};
use staticlet_runtime_cri::{CriOptions, CriRuntime};

fn pct(xs: &[Duration], p: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// When each container's process first ran, by the name it wrote into the FIFO.
#[derive(Clone)]
struct Fifo {
    dir: PathBuf,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Fifo {
    fn new(dir: &Path) -> Fifo {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("fifo");
        let ok = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(ok.success(), "mkfifo {}", path.display());
        // Opened read-write, the FIFO never reports end of file between writers.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(f).lines() {
                let Ok(line) = line else { return };
                s.lock().unwrap().entry(line).or_insert_with(Instant::now);
            }
        });
        Fifo {
            dir: dir.to_path_buf(),
            seen,
        }
    }

    /// Waits until `name` has written, and returns when it did.
    fn wait(&self, name: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(t) = self.seen.lock().unwrap().get(name) {
                return *t;
            }
            assert!(Instant::now() < deadline, "{name} did not run within 600 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The container's command: write its name into the FIFO, then stay up.
fn command(name: &str) -> String {
    format!("echo {name} > /bench/fifo; exec sleep 3600")
}

/// One pod through the raw CRI sequence; returns its latency from `t0` to the process running.
async fn raw_pod(
    cri: CriRuntime,
    logs: PathBuf,
    fifo: Fifo,
    name: String,
    t0: Instant,
) -> Duration {
    let sb = SandboxConfig {
        name: name.clone(),
        namespace: "bench".into(),
        uid: format!("{name}-uid"),
        log_directory: logs.join(&name),
        host_network: true,
        ..Default::default()
    };
    std::fs::create_dir_all(&sb.log_directory).unwrap();
    let id = cri.run_pod_sandbox(&sb).await.unwrap();
    let c = cri
        .create_container(
            &id,
            &ContainerConfig {
                name: "app".into(),
                image: ImageSpec {
                    image: BUSYBOX.into(),
                },
                command: vec!["sh".into(), "-c".into(), command(&name)],
                log_path: "app/0.log".into(),
                mounts: vec![Mount {
                    container_path: "/bench".into(),
                    host_path: fifo.dir.clone(),
                    readonly: false,
                    propagation: String::new(),
                }],
                ..Default::default()
            },
            &sb,
        )
        .await
        .unwrap();
    cri.start_container(&c).await.unwrap();
    tokio::task::spawn_blocking(move || fifo.wait(&name))
        .await
        .unwrap()
        - t0
}

fn manifest(name: &str, fifo_dir: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{}']\n    volumeMounts: [{{name: bench, mountPath: /bench}}]\n  volumes:\n  - {{name: bench, hostPath: {{path: {}}}}}\n",
        command(name),
        fifo_dir.display()
    )
}

struct Agent {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: std::process::Child,
    fifo: Fifo,
}

impl Agent {
    fn start(bin: PathBuf, endpoint: &str, fifo: Fifo) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        let child = Command::new(&bin)
            .args(["run", "--hostname-override", "bench"])
            .args(["--container-runtime-endpoint", endpoint])
            .arg("--pod-manifest-path")
            .arg(dir.path().join("m"))
            .arg("--root-dir")
            .arg(dir.path().join("root"))
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            bin,
            dir,
            child,
            fifo,
        }
    }

    /// Writes `names`' manifests and returns each pod's manifest → process runs and
    /// manifest → API reports running latencies.
    fn run(&self, names: &[String]) -> (Vec<Duration>, Vec<Duration>) {
        let m = self.dir.path().join("m");
        let mut written = HashMap::new();
        for n in names {
            let tmp = m.join(format!(".{n}"));
            std::fs::write(&tmp, manifest(n, &self.fifo.dir)).unwrap();
            std::fs::rename(&tmp, m.join(format!("{n}.yaml"))).unwrap();
            written.insert(format!("{n}-bench"), Instant::now());
        }
        let mut running: HashMap<String, Duration> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while running.len() < names.len() {
            assert!(Instant::now() < deadline, "pods not running within 600 s");
            let out = Command::new(&self.bin)
                .args(["get", "pods", "-o", "json", "--root-dir"])
                .arg(self.dir.path().join("root"))
                .output()
                .unwrap();
            let now = Instant::now();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                for item in v["items"].as_array().into_iter().flatten() {
                    let name = item["metadata"]["name"].as_str().unwrap_or_default();
                    let up = item["status"]["containerStatuses"][0]["state"]["running"].is_object();
                    if let (true, Some(t)) = (up, written.get(name)) {
                        running.entry(name.to_string()).or_insert(now - *t);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let runs = names
            .iter()
            .map(|n| self.fifo.wait(n) - written[&format!("{n}-bench")])
            .collect();
        (runs, running.into_values().collect())
    }

    /// Removes every manifest and waits until the agent serves no pod.
    fn clear(&self) {
        let m = self.dir.path().join("m");
        for e in std::fs::read_dir(&m).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = Command::new(&self.bin)
                .args(["get", "pods", "-o", "json", "--root-dir"])
                .arg(self.dir.path().join("root"))
                .output()
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!({"items": [1]}));
            if v["items"].as_array().is_some_and(|a| a.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "pods not removed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    if let Some(why) = skip_reason() {
        eprintln!("cannot run: {why}");
        std::process::exit(1);
    }
    let bin = std::env::var_os("STATICLET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/staticlet"));
    assert!(
        bin.is_file(),
        "{} missing: cargo build --release -p staticlet",
        bin.display()
    );
    let cd = Containerd::start().await;
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = Fifo::new(fifo_dir.path());
    let cri = CriRuntime::connect(&cd.endpoint(), CriOptions::default())
        .await
        .unwrap();

    // The floor: raw CRI calls, after one unmeasured pod (containerd's first sandbox and
    // container after its start are slower: caches, the pause image's first unpack).
    raw_pod(
        cri.clone(),
        cd.logs_dir(),
        fifo.clone(),
        "warmup".into(),
        Instant::now(),
    )
    .await;
    let mut floor1 = Vec::new();
    for i in 0..5 {
        let name = format!("floor{i}");
        floor1.push(
            raw_pod(
                cri.clone(),
                cd.logs_dir(),
                fifo.clone(),
                name,
                Instant::now(),
            )
            .await,
        );
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tasks.spawn(raw_pod(
            cri.clone(),
            cd.logs_dir(),
            fifo.clone(),
            format!("floorn{i}"),
            t0,
        ));
    }
    let mut floor_n = Vec::new();
    while let Some(one) = tasks.join_next().await {
        floor_n.push(one.unwrap());
    }
    cd.remove_all_sandboxes();

    // staticlet on the same containerd.
    let agent = Agent::start(bin, &cd.endpoint(), fifo.clone());
    // One unmeasured pod here too (the agent's own start-up, its first pod).
    agent.run(&["warmup-agent".to_string()]);
    agent.clear();
    let (mut agent1, mut agent1_api) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let (runs, api) = agent.run(&[format!("one{i}")]);
        agent1.extend(runs);
        agent1_api.extend(api);
        agent.clear();
    }
    let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let (agent_n, agent_n_api) = agent.run(&names);
    agent.clear();
    drop(agent);

    println!(
        "containerd (Debian) via CRI, this machine ({} cores); ms",
        num_cpus()
    );
    println!("until the container's process runs (API: until the agent's API says running)");
    println!(
        "{:44} {:>8} {:>8} {:>10}",
        "what", "p50", "p90", "p50/floor"
    );
    let row = |what: &str, xs: &[Duration], floor: &[Duration]| {
        println!(
            "{what:44} {:8.0} {:8.0} {:>9.2}x",
            pct(xs, 50.0).as_secs_f64() * 1e3,
            pct(xs, 90.0).as_secs_f64() * 1e3,
            pct(xs, 50.0).as_secs_f64() / pct(floor, 50.0).as_secs_f64()
        )
    };
    row("raw CRI sequence, 1 pod (x5 in turn)", &floor1, &floor1);
    row("staticlet --cri, 1 pod (x5 in turn)", &agent1, &floor1);
    row("staticlet --cri, 1 pod, API", &agent1_api, &floor1);
    row(
        &format!("raw CRI sequence, {n} pods at once"),
        &floor_n,
        &floor_n,
    );
    row(
        &format!("staticlet --cri, {n} pods at once"),
        &agent_n,
        &floor_n,
    );
    row(
        &format!("staticlet --cri, {n} pods at once, API"),
        &agent_n_api,
        &floor_n,
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
