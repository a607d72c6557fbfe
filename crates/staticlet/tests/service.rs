//! staticlet as a system service: the Debian package (scripts/package-deb.sh) and the sd_notify
//! protocol of `Type=notify` (packaging/systemd/staticlet.service), without systemd: a test
//! `NOTIFY_SOCKET` listener plays its part.
//!
//! - The package builds from the debug binaries, holds every file, passes lintian (errors
//!   fail), installs into a throwaway root (`dpkg --root`, scripts chrootless), where
//!   `systemd-analyze verify` accepts the unit, and purges cleanly.
//! - READY=1 only once the pod is running, and after a restart only once the running container
//!   is adopted (same container, no restart); STATUS= with the counts; WATCHDOG=1 at half the
//!   interval; SIGHUP with a broken config is refused (STATUS= names the field) and the agent
//!   runs on; SIGHUP with a good one sends RELOADING=1, then READY=1 from the same process,
//!   and no container restarts.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_debian_package_installs_verifies_and_purges() {
    if !can_run() {
        return;
    }
    for tool in ["dpkg-deb", "lintian", "strip", "systemd-analyze"] {
        assert!(
            have(tool),
            "{tool} is missing: scripts/test.sh installs it (scripts/deps.sh test)"
        );
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_staticlet")).parent().unwrap();
    assert!(
        bin_dir.join("staticlet-shim").exists(),
        "no {}: `cargo build -p staticlet-shim` (cargo test --workspace builds it)",
        bin_dir.join("staticlet-shim").display()
    );
    let out = tempfile::tempdir().unwrap();
    let stdout = run(Command::new(repo().join("scripts/package-deb.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg(out.path())
        // Debug binaries are large: fast compression for the test.
        .env("DPKG_DEB_COMPRESSOR_TYPE", "gzip")
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1"));
    let deb = PathBuf::from(stdout.lines().last().unwrap().trim());
    assert!(deb.exists(), "{stdout}");

    // Contents and control data.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut want = vec![
        "./usr/bin/staticlet".to_string(),
        "./usr/bin/staticlet-shim".into(),
        "./lib/systemd/system/staticlet.service".into(),
        "./etc/staticlet/config.yaml".into(),
        "./usr/share/bash-completion/completions/staticlet".into(),
        "./usr/share/zsh/vendor-completions/_staticlet".into(),
        "./usr/share/fish/vendor_completions.d/staticlet.fish".into(),
        "./usr/share/doc/staticlet/copyright".into(),
        "./usr/share/doc/staticlet/changelog.gz".into(),
        "./usr/share/man/man1/staticlet.1.gz".into(),
        "./usr/share/man/man1/staticlet-shim.1.gz".into(),
    ];
    for sub in [
        "run",
        "get",
        "validate",
        "images",
        "logs",
        "exec",
        "wait",
        "describe",
        "completion",
    ] {
        want.push(format!("./usr/share/man/man1/staticlet-{sub}.1.gz"));
    }
    for w in &want {
        assert!(
            contents.lines().any(|l| l.ends_with(w.as_str())),
            "{w} not in the package:\n{contents}"
        );
    }
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    for d in ["libseccomp2", "containernetworking-plugins", "libc6"] {
        assert!(depends.contains(d), "Depends: {depends}");
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/staticlet/config.yaml");
    // lintian: errors fail (warnings and information are printed).
    let lint = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Installed into a throwaway root: maintainer scripts run outside a chroot with DPKG_ROOT
    // set (the host's systemd and /var/lib/staticlet are not touched).
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args))
    };
    dpkg(&["--install", deb.to_str().unwrap()]);
    for f in [
        "usr/bin/staticlet",
        "usr/bin/staticlet-shim",
        "lib/systemd/system/staticlet.service",
        "etc/staticlet/config.yaml",
        "etc/kubernetes/manifests",
        "var/lib/staticlet",
        "etc/systemd/system/multi-user.target.wants/staticlet.service",
    ] {
        assert!(
            r.join(f).symlink_metadata().is_ok(),
            "{f} missing after install"
        );
    }
    let installed = r.join("usr/bin/staticlet");
    let version = run(Command::new(&installed).arg("--version"));
    assert!(version.starts_with("staticlet 0."), "{version}");
    assert!(version.contains("(commit "), "{version}");
    // systemd-analyze verify in that root: the targets the unit names and /bin/kill
    // (ExecReload) are the host's.
    let units = r.join("lib/systemd/system");
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".target") && !units.join(&name).exists() {
            std::fs::copy(e.path(), units.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", r.display()))
        .arg("staticlet.service"));

    // Purge: binaries, unit, conffile and state gone; the manifest directory stays.
    dpkg(&["--purge", "staticlet"]);
    for f in [
        "usr/bin/staticlet",
        "lib/systemd/system/staticlet.service",
        "etc/staticlet/config.yaml",
        "var/lib/staticlet",
        "etc/systemd/system/multi-user.target.wants/staticlet.service",
    ] {
        assert!(
            r.join(f).symlink_metadata().is_err(),
            "{f} left after purge"
        );
    }
    assert!(r.join("etc/kubernetes/manifests").is_dir());
}

/// The test's side of NOTIFY_SOCKET: every datagram, with its arrival time.
struct Notifications {
    sock: UnixDatagram,
    path: PathBuf,
    got: Vec<(Instant, String)>,
}

impl Notifications {
    fn bind(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications {
            sock,
            path,
            got: Vec::new(),
        }
    }

    /// Reads until a message has the line `want` (or panics after `timeout`); its index.
    fn until(&mut self, want: &str, timeout: Duration) -> usize {
        self.until_line(want, timeout, |l| l == want)
    }

    /// As `until`, for a line starting with `prefix`.
    fn until_prefix(&mut self, prefix: &str, timeout: Duration) -> usize {
        self.until_line(prefix, timeout, |l| l.starts_with(prefix))
    }

    fn until_line(&mut self, what: &str, timeout: Duration, hit: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        let mut seen = 0;
        loop {
            while seen < self.got.len() {
                if self.got[seen].1.lines().any(&hit) {
                    return seen;
                }
                seen += 1;
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {timeout:?}; got {:?}",
                self.got.iter().map(|(_, m)| m).collect::<Vec<_>>()
            );
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    }

    fn statuses(&self) -> Vec<&str> {
        self.got
            .iter()
            .flat_map(|(_, m)| m.lines())
            .filter_map(|l| l.strip_prefix("STATUS="))
            .collect()
    }
}

fn container_of(env: &Env, pod: &str) -> (String, i64) {
    let p = env.pod(pod).expect("the pod is listed");
    let c = &p["status"]["containerStatuses"][0];
    (
        c["containerID"].as_str().unwrap_or_default().to_string(),
        c["restartCount"].as_i64().unwrap_or(-1),
    )
}

fn signal(pid: u32, sig: &str) {
    run(Command::new("kill").args([sig, &pid.to_string()]));
}

#[test]
fn sd_notify_ready_after_adoption_status_watchdog_and_reload() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("notify");
    env.manifest(
        "sleeper",
        &env.pod_manifest(
            "sleeper",
            "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n",
        ),
    );
    // The shipped configuration, with this test's manifest directory and no healthz port.
    let shipped = std::fs::read_to_string(repo().join("packaging/config.yaml")).unwrap();
    let config = env.path("config.yaml");
    let good = shipped
        .replace(
            "staticPodPath: /etc/kubernetes/manifests",
            &format!("staticPodPath: {}", env.path("manifests").display()),
        )
        .replace("healthzPort: 10248", "healthzPort: 0");
    assert_ne!(good, shipped, "packaging/config.yaml changed shape");
    std::fs::write(&config, &good).unwrap();
    let args = ["--config".to_string(), config.display().to_string()];
    // WATCHDOG_USEC: 6 s, so pings every 3 s.
    let watchdog = Duration::from_secs(6);
    let usec = watchdog.as_micros().to_string();

    // First start: READY=1 once the pod runs.
    let mut n = Notifications::bind(&env.path(""), "notify-1.sock");
    let sock = n.path.display().to_string();
    env.start_with_env(&args, &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", &usec)]);
    n.until("READY=1", Duration::from_secs(180));
    let pod = env.pod("sleeper").expect("listed at READY=1");
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert!(
        n.statuses().contains(&"1 pod, 1 running"),
        "{:?}",
        n.statuses()
    );
    // WATCHDOG=1 about every 3 s: three more pings, each within the interval of the last.
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let i = n.until("WATCHDOG=1", Duration::from_secs(30));
        pings.push(n.got[i].0);
        n.got.drain(..=i);
    }
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap > Duration::from_millis(1500) && gap < watchdog,
            "watchdog gaps {:?}",
            pings.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        );
    }
    let before = container_of(&env, "sleeper");
    assert!(!before.0.is_empty(), "{before:?}");

    // kill -9, start again: READY=1 only with the running container adopted.
    env.kill_agent();
    let mut n = Notifications::bind(&env.path(""), "notify-2.sock");
    let sock = n.path.display().to_string();
    env.start_with_env(&args, &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", &usec)]);
    n.until("READY=1", Duration::from_secs(120));
    assert_eq!(
        container_of(&env, "sleeper"),
        before,
        "adopted at READY=1, not restarted"
    );
    let pid = env.agent_pid().unwrap();

    // SIGHUP with a broken configuration: refused, named, and the agent runs on.
    std::fs::write(&config, format!("{good}fileCheckFrequency: often\n")).unwrap();
    signal(pid, "-HUP");
    let i = n.until_prefix("STATUS=reload refused: ", Duration::from_secs(60));
    assert!(n.got[i].1.contains("fileCheckFrequency"), "{}", n.got[i].1);
    assert!(env.pod("sleeper").is_some(), "the agent still serves");

    // SIGHUP with a good one: RELOADING=1, then READY=1 from the same process (re-executed),
    // and the container is the same.
    std::fs::write(&config, &good).unwrap();
    let seen = n.got.len();
    signal(pid, "-HUP");
    let r = n.until("RELOADING=1", Duration::from_secs(60));
    assert!(r >= seen);
    n.got.drain(..=r);
    n.until("READY=1", Duration::from_secs(120));
    assert_eq!(env.agent_pid(), Some(pid));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the same process runs on"
    );
    assert_eq!(
        container_of(&env, "sleeper"),
        before,
        "no restart on reload"
    );

    // A broken configuration at start (an upgrade's bad edit): the agent exits, systemd's
    // status names the field, and the pod runs on (the next good start adopts it).
    env.kill_agent();
    std::fs::write(&config, format!("{good}syncFrequency: soon\n")).unwrap();
    let mut n = Notifications::bind(&env.path(""), "notify-3.sock");
    let sock = n.path.display().to_string();
    env.start_with_env(&args, &[("NOTIFY_SOCKET", &sock)]);
    assert!(!env.agent_exit(60).success());
    let i = n.until_prefix("STATUS=failed: ", Duration::from_secs(10));
    assert!(n.got[i].1.contains("syncFrequency"), "{}", n.got[i].1);
    std::fs::write(&config, &good).unwrap();
    env.start_with(&args);
    env.wait("adopted after the bad start", 60, || {
        env.pod("sleeper")
            .is_some_and(|_| container_of(&env, "sleeper") == before)
    });
    env.remove_manifest("sleeper");
    env.wait("sleeper stopped", 60, || env.pod("sleeper").is_none());
}

/// An Inhibit call: what, who, mode, and the read end of the lock's pipe.
type Lock = (String, String, String, std::io::PipeReader);

/// A stand-in for systemd-logind on a private bus: hands out delay locks (keeping the read end
/// of each, to see when it is released) and emits `PrepareForShutdown` when told.
struct FakeLogind {
    /// (what, who, mode) of each Inhibit call and the read end of its lock.
    locks: std::sync::Arc<std::sync::Mutex<Vec<Lock>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeLogind {
    async fn inhibit(
        &self,
        what: &str,
        who: &str,
        _why: &str,
        mode: &str,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (r, w) = std::io::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        self.locks
            .lock()
            .unwrap()
            .push((what.into(), who.into(), mode.into(), r));
        Ok(std::os::fd::OwnedFd::from(w).into())
    }

    /// Longer than the test's 20 s, so no logind drop-in is written on this machine.
    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> u64 {
        60_000_000
    }

    #[zbus(signal)]
    async fn prepare_for_shutdown(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        start: bool,
    ) -> zbus::Result<()>;
}

/// A private D-Bus daemon (killed on drop).
struct Bus {
    daemon: std::process::Child,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("system_bus_socket");
        let address = format!("unix:path={}", socket.display());
        let daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .spawn()
            .expect("dbus-daemon (scripts/deps.sh test installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus { daemon, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Graceful node shutdown (`shutdownGracePeriod`): the agent holds a logind delay lock; on
/// `PrepareForShutdown(true)` it stops the regular pod, then the critical one (each got its
/// SIGTERM, in that order), then releases the lock; `PrepareForShutdown(false)` makes it take
/// a lock again and run the pods again.
#[test]
fn graceful_node_shutdown_through_logind() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("shutdown");
    let bus = Bus::start(&env.path(""));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let locks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let conn = rt
        .block_on(async {
            zbus::connection::Builder::address(bus.address.as_str())?
                .name("org.freedesktop.login1")?
                .serve_at(
                    "/org/freedesktop/login1",
                    FakeLogind {
                        locks: locks.clone(),
                    },
                )?
                .build()
                .await
        })
        .expect("the fake logind on the private bus");
    let announce = |start: bool| {
        rt.block_on(async {
            let iface = conn
                .object_server()
                .interface::<_, FakeLogind>("/org/freedesktop/login1")
                .await?;
            FakeLogind::prepare_for_shutdown(iface.signal_emitter(), start).await
        })
        .unwrap()
    };

    let order = env.path("order");
    std::fs::write(&order, "").unwrap();
    let pod = |name: &str, extra: &str| {
        env.pod_manifest(
            name,
            &format!(
                "  hostNetwork: true\n{extra}  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'trap \"echo {name} >> /shared/order; exit 0\" TERM; while true; do usleep 50000; done']\n    volumeMounts:\n    - {{name: shared, mountPath: /shared}}\n  volumes:\n  - name: shared\n    hostPath: {{path: {}}}\n",
                order.parent().unwrap().display()
            ),
        )
    };
    env.manifest("web", &pod("web", ""));
    env.manifest(
        "etcd",
        &pod("etcd", "  priorityClassName: system-node-critical\n"),
    );
    let config = env.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\nhealthzPort: 0\nshutdownGracePeriod: 20s\nshutdownGracePeriodCriticalPods: 10s\n",
            env.path("manifests").display()
        ),
    )
    .unwrap();
    let args = ["--config".to_string(), config.display().to_string()];
    env.start_with_env(&args, &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)]);
    let running = |env: &Env, name: &str| {
        env.pod(name)
            .is_some_and(|p| p["status"]["phase"] == "Running")
    };
    env.wait("both pods running", 180, || {
        running(&env, "web") && running(&env, "etcd")
    });
    env.wait("a delay lock taken", 60, || {
        !locks.lock().unwrap().is_empty()
    });
    {
        let l = locks.lock().unwrap();
        assert_eq!(
            (l[0].0.as_str(), l[0].1.as_str(), l[0].2.as_str()),
            ("shutdown", "staticlet", "delay")
        );
    }
    // The lock is released when every copy of its write end is closed: the read end sees EOF.
    let reader = locks.lock().unwrap()[0].3.try_clone().unwrap();
    let (released_tx, released) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut reader, &mut buf);
        let _ = released_tx.send(n.map_err(|e| e.to_string()));
    });
    assert!(
        released.recv_timeout(Duration::from_millis(500)).is_err(),
        "the lock is held while the node runs"
    );

    announce(true);
    let got = released
        .recv_timeout(Duration::from_secs(60))
        .expect("the lock released within the grace period");
    assert_eq!(got, Ok(0), "EOF: every copy closed");
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "web\netcd\n",
        "the regular pod got its SIGTERM first, the critical one after it stopped\n{}",
        env.agent_log()
    );
    env.wait("both pods stopped", 60, || {
        env.pod("web").is_none() && env.pod("etcd").is_none()
    });

    // Cancelled: a new lock, and the pods run again.
    announce(false);
    env.wait("a second delay lock", 60, || {
        locks.lock().unwrap().len() >= 2
    });
    env.wait("both pods running again", 180, || {
        running(&env, "web") && running(&env, "etcd")
    });
    env.remove_manifest("web");
    env.remove_manifest("etcd");
    env.wait("pods removed", 120, || {
        env.pod("web").is_none() && env.pod("etcd").is_none()
    });
}
