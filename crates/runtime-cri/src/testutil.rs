//! A real containerd for tests (feature `testutil`): started as a child process on a private
//! socket with private root/state directories, a private CNI bridge (unique name, a
//! 10.235.x.0/24 subnet, no masquerading, no gateway) and locally built pause and busybox images
//! (`scripts/pause-image.sh`, `scripts/busybox-image.sh`) imported with `ctr`. Everything is torn
//! down in `Drop`: sandboxes stopped and removed, leftover shims killed by pid, containerd killed,
//! mounts under the private root unmounted, the bridge deleted.
#![allow(clippy::disallowed_types, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{CriOptions, CriRuntime};
use staticlet_runtime::{ContainerRuntime, LabelSelector, Labels};

/// The busybox image the harness imports.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// The sandbox image the harness imports and configures.
pub const PAUSE: &str = "registry.k8s.io/pause:3.6";

/// The name of the pod network in the CNI configuration the harness gives containerd.
pub const CNI_NETWORK: &str = "staticlet-cri-test";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `None` (after saying why) when this machine cannot run the tests.
pub fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        return Some("not root");
    }
    if !have("containerd") || !have("ctr") {
        return Some("containerd is not installed (apt-get install containerd runc)");
    }
    None
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    bridge: String,
    pub subnet_prefix: String,
}

impl Containerd {
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// Where the pod network's IPAM (host-local) records its leases: one file per allocated IP.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam").join(CNI_NETWORK)
    }

    /// Starts containerd, waits for CRI to answer and imports the images.
    pub async fn start() -> Self {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("stl-cri-")
            .tempdir()
            .unwrap();
        let n = (pid.wrapping_mul(7).wrapping_add(seq * 13)) % 250 + 1;
        let bridge = format!("stcri{:x}", (pid << 4 | seq) & 0xff_ffff);
        let me = Self {
            dir,
            child: None,
            bridge,
            subnet_prefix: format!("10.235.{n}."),
        };
        let d = me.dir.path();
        for sub in ["root", "state", "cni", "opt", "ipam", "pods"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("cni/10-staticlet-test.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"{}","plugins":[{{"type":"bridge","bridge":"{}","isGateway":false,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{}0/24"}}]]}}}},{{"type":"loopback"}}]}}"#,
                CNI_NETWORK,
                me.bridge,
                d.join("ipam").display(),
                me.subnet_prefix
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("config.toml"),
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"
"#,
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = me.sock().display(),
                opt = d.join("opt").display(),
                cni = d.join("cni").display(),
            ),
        )
        .unwrap();
        let mut me = me;
        me.spawn();
        me.wait_ready().await;
        me.import_images();
        me
    }

    pub fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.child = Some(child);
    }

    /// containerd's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until CRI answers `Version` (containerd takes a moment to load its plugins).
    pub async fn wait_ready(&mut self) {
        let ep = self.endpoint();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("containerd exited: {status}\n{}", self.log_tail());
                }
            }
            if CriRuntime::connect(&ep, CriOptions::default())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "containerd did not become ready\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn import_images(&self) {
        let d = self.dir.path();
        for (script, tar, reference) in [
            ("scripts/pause-image.sh", "pause.tar", PAUSE),
            ("scripts/busybox-image.sh", "busybox.tar", BUSYBOX),
        ] {
            run(Command::new("bash")
                .arg(repo_root().join(script))
                .arg(d.join(tar))
                .arg(reference));
            run(Command::new("ctr")
                .arg("-a")
                .arg(self.sock())
                .args(["-n", "k8s.io", "images", "import"])
                .arg(d.join(tar)));
        }
    }

    /// Kills containerd (its shims and containers keep running), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Best-effort teardown through CRI, from a thread of its own (Drop may run in a runtime).
    pub fn remove_all_sandboxes(&self) {
        let ep = self.endpoint();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = CriOptions {
                    request_timeout: Duration::from_secs(20),
                    ..Default::default()
                };
                let Ok(cri) = CriRuntime::connect(&ep, opts).await else {
                    return;
                };
                let all = LabelSelector(Labels::new());
                for s in cri.list_pod_sandboxes(&all).await.unwrap_or_default() {
                    let _ = cri.stop_pod_sandbox(&s.id).await;
                    let _ = cri.remove_pod_sandbox(&s.id).await;
                }
            });
        })
        .join();
    }

    /// Kills processes whose command line names this containerd's socket (its shims).
    pub fn kill_shims(&self) {
        let sock = self.sock().display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&sock) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }

    pub fn unmount_all(&self) {
        let root = self.dir.path().display().to_string();
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .map(str::to_string)
            .collect();
        points.sort();
        for p in points.iter().rev() {
            let _ = Command::new("umount")
                .args(["-l", p])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_all_sandboxes();
        }
        self.kill();
        self.kill_shims();
        self.unmount_all();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}
