//! Interactive exec and port forwarding of [`EmbeddedRuntime`] with real containers (needs root,
//! Debian's `busybox-static` and `containernetworking-plugins`).
//!
//! The runtime re-executes a binary in shim mode for its shims and exec helpers; here that
//! binary is this test binary (`harness = false` in Cargo.toml): started as `<test> __shim
//! <mode> ...` it is a shim, otherwise it runs the tests below one after the other (selected as
//! libtest does: names or parts of names, `--exact`, `--skip`). Each test creates its
//! own runtime root, sandbox and busybox container (image built by `scripts/busybox-image.sh`)
//! and removes them afterwards, also when it fails. Waits are on conditions with generous
//! deadlines; nothing depends on a fixed sleep.
#![allow(clippy::disallowed_types)] // Real processes in real time: std's Instant is right here.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use staticlet_runtime::{
    labels, AttachRequest, ContainerConfig, ContainerId, ContainerRuntime, ContainerState, ExecIo,
    ExecRequest, ImageSpec, LabelSelector, RuntimeError, SandboxConfig, SandboxId, TerminalSize,
};
use staticlet_runtime_embedded::{Config, EmbeddedRuntime};
use staticlet_shim::Reexec;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

/// The argument that makes this binary a shim.
const SHIM_PREFIX: &str = "__shim";
const DEADLINE: Duration = Duration::from_secs(60);

type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "exec_streams_stdio_and_returns_the_exit_code",
        exec_streams_stdio_and_returns_the_exit_code,
    ),
    (
        "exec_output_arrives_while_the_command_runs",
        exec_output_arrives_while_the_command_runs,
    ),
    (
        "exec_on_a_terminal_of_the_container",
        exec_on_a_terminal_of_the_container,
    ),
    (
        "exec_of_missing_or_unrunnable_commands",
        exec_of_missing_or_unrunnable_commands,
    ),
    (
        "dropping_an_exec_kills_its_processes",
        dropping_an_exec_kills_its_processes,
    ),
    (
        "exec_sync_runs_through_the_shim_or_a_helper_for_an_earlier_shim",
        exec_sync_runs_through_the_shim_or_a_helper_for_an_earlier_shim,
    ),
    (
        "idle_exec_sessions_hold_no_thread",
        idle_exec_sessions_hold_no_thread,
    ),
    (
        "attach_streams_output_and_stdin_and_detaches_at_stdin_end",
        attach_streams_output_and_stdin_and_detaches_at_stdin_end,
    ),
    (
        "attach_with_stdin_once_closes_stdin_and_follows_to_the_exit",
        attach_with_stdin_once_closes_stdin_and_follows_to_the_exit,
    ),
    (
        "attach_on_a_terminal_resizes_it",
        attach_on_a_terminal_resizes_it,
    ),
    (
        "port_forward_to_a_pod_network_sandbox",
        port_forward_to_a_pod_network_sandbox,
    ),
    (
        "port_forward_to_a_host_network_sandbox",
        port_forward_to_a_host_network_sandbox,
    ),
    (
        "exits_are_events_also_for_shims_of_an_earlier_runtime",
        exits_are_events_also_for_shims_of_an_earlier_runtime,
    ),
    (
        "a_container_whose_shim_is_killed_is_killed_and_its_exit_recorded",
        a_container_whose_shim_is_killed_is_killed_and_its_exit_recorded,
    ),
    (
        "stopping_many_containers_holds_no_thread_per_container",
        stopping_many_containers_holds_no_thread_per_container,
    ),
];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == SHIM_PREFIX) {
        return match staticlet_shim::ShimArgs::parse(args[2..].iter().cloned()) {
            Ok(a) => staticlet_shim::shim_main(a),
            Err(e) => {
                eprintln!("shim: {e}");
                ExitCode::from(2)
            }
        };
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    // libtest's command line, as far as selecting tests goes: names (substrings, or whole with
    // `--exact`), `--skip NAME`; other options (and the values of those that take one) ignored.
    let (mut filters, mut skips, mut exact) = (Vec::new(), Vec::new(), false);
    let mut words = args[1..].iter().filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        match word {
            "--skip" => skips.extend(words.next()),
            "--exact" => exact = true,
            "--test-threads" | "--format" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => filters.push(w),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| name.contains(s)))
        .collect();
    if selected.is_empty() {
        return ExitCode::SUCCESS;
    }
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipped {} tests: {why}", selected.len());
        return ExitCode::SUCCESS;
    }
    let mut failed = Vec::new();
    for (name, test) in &selected {
        eprintln!("running {name}");
        let started = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => eprintln!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    eprintln!(
        "test result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for name in failed {
            eprintln!("    {name}");
        }
        ExitCode::FAILURE
    }
}

/// Why the tests cannot run here (not root); a missing package is a broken setup: panics.
fn missing_prerequisite() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("real containers need root");
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "busybox-static is missing: run scripts/test.sh, which installs it"
    );
    assert!(
        cni_bin_dirs().iter().any(|d| d.join("bridge").exists()),
        "containernetworking-plugins is missing: run scripts/test.sh, which installs it"
    );
    None
}

fn cni_bin_dirs() -> Vec<PathBuf> {
    vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()]
}

/// The busybox image (a docker archive), built once per run.
fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TAR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("busybox.tar");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/busybox-image.sh"
        );
        let out = Command::new("bash").arg(script).arg(&tar).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, tar)
    })
    .1
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The runtime's configuration for a test directory (root `root/`, CNI configuration `cni/`).
fn runtime_config(dir: &Path) -> Config {
    Config {
        root_dir: dir.join("root"),
        reexec: Reexec {
            exe: std::env::current_exe().unwrap(),
            prefix: vec![SHIM_PREFIX.into()],
        },
        cni_conf_dir: dir.join("cni"),
        cni_bin_dirs: cni_bin_dirs(),
        default_network: None,
        image_credentials: Vec::new(),
        insecure_registries: Vec::new(),
        image_limits: Default::default(),
        pull_stall_timeout: staticlet_images::DEFAULT_STALL_TIMEOUT,
    }
}

/// One runtime (own root directory) with one sandbox; removes everything when dropped.
struct Pod {
    rt: tokio::runtime::Runtime,
    runtime: EmbeddedRuntime,
    sandbox: SandboxId,
    sandbox_config: SandboxConfig,
    bridge: Option<String>,
    dir: tempfile::TempDir,
}

impl Pod {
    /// The state directory of a container's shim (its `state.json` and sockets).
    fn shim_dir(&self, id: &ContainerId) -> PathBuf {
        self.dir
            .path()
            .join("root/runtime/containers")
            .join(&id.0)
            .join("shim")
    }

    /// A runtime and a ready sandbox named `name`, with a network namespace of its own (a CNI
    /// bridge of this test) unless `host_network`.
    fn new(name: &str, host_network: bool) -> Pod {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let n = (std::process::id().wrapping_mul(7) + seq * 13) % 200 + 20;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("cni");
        std::fs::create_dir_all(&conf).unwrap();
        let bridge = (!host_network).then(|| format!("stlstr{n}"));
        if let Some(bridge) = &bridge {
            std::fs::write(
                conf.join("10-test.conflist"),
                format!(
                    r#"{{"cniVersion":"1.0.0","name":"streams-{bridge}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.236.{n}.0/24"}}]],"dataDir":"{}"}}}},
  {{"type":"loopback"}}]}}"#,
                    dir.path().join("ipam").display()
                ),
            )
            .unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let runtime = EmbeddedRuntime::new(runtime_config(dir.path())).unwrap();
        runtime.images().import(busybox_tar()).unwrap();
        let uid = format!("streams-{}-{seq}", std::process::id());
        let mut labels = LabelSelector::pod(&uid).0;
        labels.insert(labels::POD_NAME.into(), name.into());
        labels.insert(labels::POD_NAMESPACE.into(), "default".into());
        let sandbox_config = SandboxConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.clone(),
            hostname: if host_network {
                String::new()
            } else {
                name.into()
            },
            log_directory: dir.path().join("logs"),
            labels,
            host_network,
            cgroup_parent: format!("/staticlet/pod{uid}"),
            ..Default::default()
        };
        let sandbox = rt
            .block_on(runtime.run_pod_sandbox(&sandbox_config))
            .unwrap();
        Pod {
            rt,
            runtime,
            sandbox,
            sandbox_config,
            bridge,
            dir,
        }
    }

    /// Creates and starts a busybox container running `command`; waits until it runs.
    fn container(&self, name: &str, command: &[&str]) -> ContainerId {
        self.container_with(name, command, |_| {})
    }

    /// [`Pod::container`] with its configuration changed by `tweak` (stdin, tty).
    fn container_with(
        &self,
        name: &str,
        command: &[&str],
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> ContainerId {
        let mut labels = self.sandbox_config.labels.clone();
        labels.insert(labels::CONTAINER_NAME.into(), name.into());
        let config = ContainerConfig {
            name: name.into(),
            image: ImageSpec {
                image: "busybox".into(),
            },
            command: command.iter().map(|s| s.to_string()).collect(),
            labels,
            log_path: format!("{name}/0.log").into(),
            ..Default::default()
        };
        let mut config = config;
        tweak(&mut config);
        self.rt.block_on(async {
            let id = self
                .runtime
                .create_container(&self.sandbox, &config, &self.sandbox_config)
                .await
                .unwrap();
            self.runtime.start_container(&id).await.unwrap();
            let deadline = Instant::now() + DEADLINE;
            loop {
                let st = self.runtime.container_status(&id).await.unwrap();
                match st.state {
                    ContainerState::Running => return id,
                    ContainerState::Exited => panic!("container {name} exited: {st:?}"),
                    _ => {}
                }
                assert!(Instant::now() < deadline, "container {name} never ran");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Starts an exec of `cmd` in `id` with `io` on the runtime; the handle's result is the
    /// exec's. Aborting the handle drops the exec's future, as a client going away does.
    fn exec(
        &self,
        id: &ContainerId,
        cmd: &[&str],
        tty: bool,
        io: ExecIo,
    ) -> JoinHandle<Result<i32, RuntimeError>> {
        let req = ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: io.stdin.is_some(),
            stdout: io.stdout.is_some(),
            stderr: io.stderr.is_some(),
        };
        let (runtime, id) = (self.runtime.clone(), id.clone());
        self.rt
            .spawn(async move { runtime.exec(&id, &req, io).await })
    }

    /// Starts an attach to `id` with `io`; the handle's result is the attach's.
    fn attach(&self, id: &ContainerId, io: ExecIo) -> JoinHandle<Result<(), RuntimeError>> {
        let req = AttachRequest {
            tty: false,
            stdin: io.stdin.is_some(),
            stdout: io.stdout.is_some(),
            stderr: io.stderr.is_some(),
        };
        let (runtime, id) = (self.runtime.clone(), id.clone());
        self.rt
            .spawn(async move { runtime.attach(&id, &req, io).await })
    }

    fn state(&self, id: &ContainerId) -> ContainerState {
        self.rt
            .block_on(self.runtime.container_status(id))
            .unwrap()
            .state
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.rt.block_on(async {
            self.runtime.stop_pod_sandbox(&self.sandbox).await?;
            self.runtime.remove_pod_sandbox(&self.sandbox).await
        });
        // The pod cgroup is the agent's to remove.
        let mountinfo = Path::new(staticlet_runtime::cgroups::MOUNTINFO);
        if let Ok(h) = staticlet_runtime::cgroups::hierarchies(mountinfo) {
            let _ = staticlet_runtime::cgroups::remove(&h, &self.sandbox_config.cgroup_parent);
        }
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
        let _ = staticlet_runtime_embedded::release(&self.dir.path().join("root"));
    }
}

/// Streams for an exec: the exec's ends and the test's ends of each one asked for.
struct Streams {
    io: ExecIo,
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
}

/// Pipes for the streams asked for (small buffers, so back-pressure is part of every test).
fn streams(stdin: bool, stdout: bool, stderr: bool, resize: bool) -> Streams {
    fn pair(wanted: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
        if wanted {
            let (a, b) = tokio::io::duplex(256);
            (Some(a), Some(b))
        } else {
            (None, None)
        }
    }
    let (in_exec, in_test) = pair(stdin);
    let (out_exec, out_test) = pair(stdout);
    let (err_exec, err_test) = pair(stderr);
    let (resize_tx, resize_rx) = if resize {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    Streams {
        io: ExecIo {
            stdin: in_exec.map(|s| Box::new(s) as _),
            stdout: out_exec.map(|s| Box::new(s) as _),
            stderr: err_exec.map(|s| Box::new(s) as _),
            resize: resize_rx,
        },
        stdin: in_test,
        stdout: out_test,
        stderr: err_test,
        resize: resize_tx,
    }
}

/// Reads `from` until what was read contains `needle` (panics after [`DEADLINE`] or at EOF);
/// returns everything read.
async fn read_until(from: &mut DuplexStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, from.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within {DEADLINE:?}: {:?}",
                    String::from_utf8_lossy(&seen)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn read_all(from: Option<DuplexStream>) -> String {
    let mut s = String::new();
    if let Some(mut from) = from {
        tokio::time::timeout(DEADLINE, from.read_to_string(&mut s))
            .await
            .expect("the stream ends")
            .unwrap();
    }
    s
}

async fn finished(task: JoinHandle<Result<i32, RuntimeError>>) -> Result<i32, RuntimeError> {
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the exec ends")
        .expect("the exec task does not panic")
}

/// Pids of the processes whose command line is exactly `cmdline` (words joined by spaces).
fn processes(cmdline: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let words: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            (words.join(" ") == cmdline).then_some(pid)
        })
        .collect()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A number for command lines that no other test run uses.
fn unique() -> u32 {
    40_000 + std::process::id() % 10_000 * 10 + SEQ.fetch_add(1, Ordering::SeqCst) % 10
}

// ---------------------------------------------------------------------------------------------

fn exec_streams_stdio_and_returns_the_exit_code() {
    let pod = Pod::new("stdio", true);
    let id = pod.container("app", &["sleep", "3600"]);
    let mut s = streams(true, true, true, false);
    let task = pod.exec(
        &id,
        &["sh", "-c", "read x; echo got $x; echo err >&2; exit 42"],
        false,
        s.io,
    );
    pod.block_on(async {
        let mut stdin = s.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let (out, err) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
        assert_eq!(out, "got hello\n");
        assert_eq!(err, "err\n");
        assert_eq!(finished(task).await.unwrap(), 42);
    });
    // The container's environment and working directory, as exec_sync's commands have them.
    let mut s = streams(false, true, false, false);
    let task = pod.exec(&id, &["sh", "-c", "echo $PATH; pwd"], false, s.io);
    pod.block_on(async {
        let out = read_all(s.stdout.take()).await;
        assert!(out.contains("/bin") && out.ends_with("/\n"), "{out:?}");
        assert_eq!(finished(task).await.unwrap(), 0);
    });
}

fn exec_output_arrives_while_the_command_runs() {
    let pod = Pod::new("flow", true);
    let id = pod.container("app", &["sleep", "3600"]);
    let mut s = streams(true, true, true, false);
    let task = pod.exec(
        &id,
        &["sh", "-c", "echo first; read x; echo second $x"],
        false,
        s.io,
    );
    pod.block_on(async {
        let mut out = s.stdout.take().unwrap();
        // The command waits for its stdin: what it printed before comes now, not at its exit.
        assert_eq!(read_until(&mut out, "first\n").await, "first\n");
        assert!(!task.is_finished());
        let mut stdin = s.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        assert_eq!(read_until(&mut out, "second go\n").await, "second go\n");
        assert_eq!(finished(task).await.unwrap(), 0);
        drop(stdin);
    });
    // The caller's stdin reaching its end closes the command's: cat ends.
    let mut s = streams(true, true, false, false);
    let task = pod.exec(&id, &["cat"], false, s.io);
    pod.block_on(async {
        let mut stdin = s.stdin.take().unwrap();
        // More than the duplex buffers and a pipe hold: back-pressure both ways.
        let data: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let (_, out) = tokio::join!(
            async {
                stdin.write_all(data.as_bytes()).await.unwrap();
                drop(stdin);
            },
            read_all(s.stdout.take())
        );
        assert!(
            out == data,
            "cat gave back {} of {} bytes",
            out.len(),
            data.len()
        );
        assert_eq!(finished(task).await.unwrap(), 0);
    });
}

fn exec_on_a_terminal_of_the_container() {
    let pod = Pod::new("tty", true);
    let id = pod.container("app", &["sleep", "3600"]);
    // A size sent before the exec starts is the terminal's from the start.
    let mut s = streams(false, true, false, true);
    let resize = s.resize.take().unwrap();
    pod.block_on(resize.send(TerminalSize {
        width: 100,
        height: 40,
    }))
    .unwrap();
    let task = pod.exec(
        &id,
        &[
            "sh",
            "-c",
            "tty; stty size; echo term=$TERM; echo oops >&2; exit 3",
        ],
        true,
        s.io,
    );
    pod.block_on(async {
        let out = read_all(s.stdout.take()).await;
        // The container's own devpts: its first terminal.
        assert_eq!(
            out, "/dev/pts/0\r\n40 100\r\nterm=xterm\r\noops\r\n",
            "stdout and stderr merged, with the terminal's line endings"
        );
        assert_eq!(finished(task).await.unwrap(), 3);
    });
    drop(resize);

    // Sizes sent while it runs reach the command (SIGWINCH and the new size).
    let mut s = streams(true, true, false, true);
    let resize = s.resize.take().unwrap();
    pod.block_on(resize.send(TerminalSize {
        width: 80,
        height: 24,
    }))
    .unwrap();
    let task = pod.exec(
        &id,
        &[
            "sh",
            "-c",
            "stty size; read x; while [ \"$(stty size)\" != '50 120' ]; do sleep 0.05; done; echo resized",
        ],
        true,
        s.io,
    );
    pod.block_on(async {
        let mut out = s.stdout.take().unwrap();
        read_until(&mut out, "24 80\r\n").await;
        resize
            .send(TerminalSize {
                width: 120,
                height: 50,
            })
            .await
            .unwrap();
        let mut stdin = s.stdin.take().unwrap();
        stdin.write_all(b"x\n").await.unwrap();
        read_until(&mut out, "resized").await;
        assert_eq!(finished(task).await.unwrap(), 0);
    });

    // The end of the caller's stdin is the terminal's EOF character: cat ends, even after a
    // partial line.
    let mut s = streams(true, true, false, false);
    let task = pod.exec(&id, &["cat"], true, s.io);
    pod.block_on(async {
        let mut stdin = s.stdin.take().unwrap();
        stdin.write_all(b"abc\ndef").await.unwrap();
        drop(stdin);
        let out = read_all(s.stdout.take()).await;
        // Echoed by the terminal, and written back by cat.
        assert!(
            out.matches("abc").count() == 2 && out.matches("def").count() == 2,
            "{out:?}"
        );
        assert_eq!(finished(task).await.unwrap(), 0);
    });
}

fn exec_of_missing_or_unrunnable_commands() {
    let pod = Pod::new("missing", true);
    let id = pod.container("app", &["sleep", "3600"]);
    for (cmd, tty, code) in [
        (&["no-such-command"][..], false, 127),
        (&["/etc/passwd"][..], false, 126),
        (&["no-such-command"][..], true, 127),
    ] {
        let mut s = streams(false, true, !tty, false);
        let task = pod.exec(&id, cmd, tty, s.io);
        pod.block_on(async {
            let (out, err) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
            assert_eq!(finished(task).await.unwrap(), code, "{cmd:?}");
            // The helper's message: on stderr, or on the terminal.
            let said = if tty { out } else { err };
            assert!(said.contains(cmd[0]), "{cmd:?}: {said:?}");
        });
    }
    let s = streams(false, true, true, false);
    let err = pod
        .block_on(pod.exec(
            &ContainerId("no-such-container".into()),
            &["true"],
            false,
            s.io,
        ))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
}

/// The parent pid of a process (field 4 of `/proc/<pid>/stat`).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

/// `ExecSync` (probes) runs the command from a child of the container's shim (no helper binary
/// exec'd): output, exit code and timeout as the helper gives them. A shim without the exec
/// socket (one an earlier version started) gets the helper, with the same results.
fn exec_sync_runs_through_the_shim_or_a_helper_for_an_earlier_shim() {
    let pod = Pod::new("execsync", true);
    let id = pod.container("app", &["sleep", "3600"]);
    let shim_dir = pod.shim_dir(&id);
    let shim_pid = staticlet_shim::read_state(&shim_dir).unwrap().shim_pid;
    let exec = |cmd: &[&str], timeout: Duration| {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let runtime = pod.runtime.clone();
        let id = id.clone();
        pod.rt
            .spawn(async move { runtime.exec_sync(&id, &cmd, timeout).await })
    };
    let me = std::process::id() as i32;
    for (via_shim, grandparent) in [(true, shim_pid), (false, me)] {
        if !via_shim {
            std::fs::remove_file(shim_dir.join(staticlet_shim::exec::EXEC_SOCKET)).unwrap();
        }
        let r = pod
            .block_on(exec(
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                DEADLINE,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
            (&b"out\n"[..], &b"err\n"[..], 3),
            "via the shim: {via_shim}"
        );
        // Who started the command: a child of the shim, or a helper of ours.
        let marker = unique();
        let wait_go = format!("while [ ! -e /tmp/go{marker} ]; do usleep 10000; done");
        let waiting = exec(&["sh", "-c", &wait_go], DEADLINE);
        let cmdline = format!("sh -c {wait_go}");
        wait("the waiting command", || processes(&cmdline).len() == 1);
        let sh = processes(&cmdline)[0];
        assert_eq!(
            parent_of(parent_of(sh)),
            grandparent,
            "the command's parent's parent (via the shim: {via_shim})"
        );
        let touch = exec(&["touch", &format!("/tmp/go{marker}")], DEADLINE);
        assert_eq!(pod.block_on(touch).unwrap().unwrap().exit_code, 0);
        assert_eq!(pod.block_on(waiting).unwrap().unwrap().exit_code, 0);
        // Killed after its timeout.
        let err = pod
            .block_on(exec(&["sleep", "100"], Duration::from_millis(300)))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}

fn dropping_an_exec_kills_its_processes() {
    let pod = Pod::new("drop", true);
    let id = pod.container("app", &["sleep", "3600"]);
    // Without a terminal: the command and the child it forked.
    let (a, b) = (unique(), unique());
    let s = streams(true, true, true, false);
    let task = pod.exec(
        &id,
        &["sh", "-c", &format!("sleep {a} & sleep {b}; echo never")],
        false,
        s.io,
    );
    let (sa, sb) = (format!("sleep {a}"), format!("sleep {b}"));
    wait("both sleeps to run", || {
        !processes(&sa).is_empty() && !processes(&sb).is_empty()
    });
    task.abort();
    let aborted = pod.block_on(task);
    assert!(aborted.unwrap_err().is_cancelled());
    wait("both sleeps to be killed", || {
        processes(&sa).is_empty() && processes(&sb).is_empty()
    });

    // On a terminal, with an interactive shell: job control puts the job in a process group
    // of its own, which only the session still holds.
    let c = unique();
    let mut s = streams(true, true, false, false);
    let task = pod.exec(&id, &["sh", "-i"], true, s.io);
    let job = format!("sleep {c}");
    let (stdin, stdout) = (s.stdin.take(), s.stdout.take());
    pod.block_on(async {
        let mut stdin = stdin.unwrap();
        stdin
            .write_all(format!("{job}\n").as_bytes())
            .await
            .unwrap();
        // Keep the stdin open and read the terminal, as a client does.
        tokio::spawn(async move {
            let mut out = stdout.unwrap();
            let mut buf = [0u8; 1024];
            while out.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            drop(stdin);
        });
    });
    wait("the job to run", || !processes(&job).is_empty());
    let pid = processes(&job)[0];
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_ne!(
        fields[2], fields[3],
        "the job leads a group of its own: {stat}"
    );
    task.abort();
    assert!(pod.block_on(task).unwrap_err().is_cancelled());
    wait("the job and its shell to be killed", || {
        processes(&job).is_empty() && processes("sh -i").is_empty()
    });
    // The container itself is untouched.
    let st = pod.block_on(pod.runtime.container_status(&id)).unwrap();
    assert_eq!(st.state, ContainerState::Running);
}

/// This process's thread count (`Threads:` of `/proc/self/status`).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
}

fn idle_exec_sessions_hold_no_thread() {
    let pod = Pod::new("idle", true);
    let id = pod.container("app", &["sleep", "3600"]);
    let before = threads();
    let mut sessions = Vec::new();
    for i in 0..6 {
        let tty = i % 2 == 1;
        let Streams {
            io,
            stdin,
            stdout,
            stderr,
            resize,
        } = streams(true, true, !tty, tty);
        let task = pod.exec(&id, &["sh", "-c", "echo ready; exec cat"], tty, io);
        let mut out = stdout.unwrap();
        pod.block_on(read_until(&mut out, "ready"));
        // The test's ends of every stream stay open while the session idles.
        sessions.push((task, stdin.unwrap(), out, (stderr, resize)));
    }
    let during = threads();
    assert!(
        during <= before,
        "6 idle sessions: {before} threads before, {during} during"
    );
    // Each still works.
    for (_, stdin, out, _) in &mut sessions {
        pod.block_on(async {
            stdin.write_all(b"ping\n").await.unwrap();
            read_until(out, "ping").await;
        });
    }
    for (task, stdin, out, rest) in sessions {
        drop(stdin);
        let code = pod.block_on(finished(task)).unwrap();
        assert_eq!(code, 0);
        drop((out, rest));
    }
}

async fn attach_ended(task: JoinHandle<Result<(), RuntimeError>>) -> Result<(), RuntimeError> {
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the attach ends")
        .expect("the attach task does not panic")
}

fn attach_streams_output_and_stdin_and_detaches_at_stdin_end() {
    let pod = Pod::new("attach", true);
    let id = pod.container_with(
        "app",
        &[
            "sh",
            "-c",
            "while read l; do echo got:$l; echo err:$l >&2; done; echo closed",
        ],
        |c| c.stdin = true,
    );
    for word in ["one", "two"] {
        let mut s = streams(true, true, true, false);
        let task = pod.attach(&id, s.io);
        pod.block_on(async {
            let mut stdin = s.stdin.take().unwrap();
            let (mut out, mut err) = (s.stdout.take().unwrap(), s.stderr.take().unwrap());
            stdin
                .write_all(format!("{word}\n").as_bytes())
                .await
                .unwrap();
            read_until(&mut out, &format!("got:{word}\n")).await;
            read_until(&mut err, &format!("err:{word}\n")).await;
            // The caller's stdin ends: the attach ends, the container's stdin stays open.
            drop(stdin);
            attach_ended(task).await.unwrap();
        });
        assert_eq!(pod.state(&id), ContainerState::Running);
    }
    // Output only: what the container writes from now on.
    let mut s = streams(false, true, false, false);
    let task = pod.attach(&id, s.io);
    let mut feeder = streams(true, false, false, false);
    let feed = pod.attach(&id, feeder.io);
    pod.block_on(async {
        let mut out = s.stdout.take().unwrap();
        let mut stdin = feeder.stdin.take().unwrap();
        // Fed until heard: the output-only attach may connect after the first lines.
        let mut seen = String::new();
        let deadline = Instant::now() + DEADLINE;
        while !seen.contains("got:three\n") {
            assert!(Instant::now() < deadline, "nothing heard: {seen:?}");
            stdin.write_all(b"three\n").await.unwrap();
            let mut buf = [0u8; 1024];
            if let Ok(n) = tokio::time::timeout(Duration::from_secs(1), out.read(&mut buf)).await {
                seen.push_str(&String::from_utf8_lossy(&buf[..n.unwrap()]));
            }
        }
        assert!(!seen.contains("one"), "{seen:?}");
        drop(stdin);
        attach_ended(feed).await.unwrap();
    });
    // The container stops: the attach ends.
    pod.block_on(pod.runtime.stop_container(&id, Duration::from_secs(1)))
        .unwrap();
    pod.block_on(async { attach_ended(task).await.unwrap() });
    // A container that is not running cannot be attached to.
    let s = streams(false, true, false, false);
    let err = pod
        .block_on(async { attach_ended(pod.attach(&id, s.io)).await })
        .unwrap_err();
    assert!(err.to_string().contains("is not running"), "{err}");
}

fn attach_with_stdin_once_closes_stdin_and_follows_to_the_exit() {
    let pod = Pod::new("once", true);
    let id = pod.container_with(
        "app",
        &[
            "sh",
            "-c",
            "while read l; do echo got:$l; done; echo stdin-closed; exit 3",
        ],
        |c| {
            c.stdin = true;
            c.stdin_once = true;
        },
    );
    let mut s = streams(true, true, true, false);
    let task = pod.attach(&id, s.io);
    pod.block_on(async {
        let mut stdin = s.stdin.take().unwrap();
        let mut out = s.stdout.take().unwrap();
        stdin.write_all(b"one\n").await.unwrap();
        read_until(&mut out, "got:one\n").await;
        // stdinOnce: the caller's stdin end closes the container's; the attach follows the
        // container's output to its exit.
        drop(stdin);
        read_until(&mut out, "stdin-closed\n").await;
        attach_ended(task).await.unwrap();
    });
}

fn attach_on_a_terminal_resizes_it() {
    let pod = Pod::new("attty", true);
    let id = pod.container_with(
        "app",
        &["sh", "-c", "while read l; do echo got:$l; stty size; done"],
        |c| {
            c.stdin = true;
            c.tty = true;
        },
    );
    let mut s = streams(true, true, false, true);
    let resize = s.resize.take().unwrap();
    let task = pod.attach(&id, s.io);
    pod.block_on(async {
        resize
            .send(TerminalSize {
                width: 90,
                height: 21,
            })
            .await
            .unwrap();
        let mut stdin = s.stdin.take().unwrap();
        let mut out = s.stdout.take().unwrap();
        // Sent until answered after the size: the attach may not be connected yet.
        let deadline = Instant::now() + DEADLINE;
        loop {
            stdin.write_all(b"x\n").await.unwrap();
            let mut buf = [0u8; 1024];
            let mut seen = String::new();
            let got = tokio::time::timeout(Duration::from_secs(1), async {
                while !seen.contains("21 90") {
                    let n = out.read(&mut buf).await.unwrap();
                    assert!(n > 0, "EOF: {seen:?}");
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
            .await;
            if got.is_ok() {
                assert!(seen.contains("got:x\r\n"), "{seen:?}");
                break;
            }
            assert!(Instant::now() < deadline, "no answer on the terminal");
        }
        drop(stdin);
        attach_ended(task).await.unwrap();
    });
    assert_eq!(pod.state(&id), ContainerState::Running);
}

fn httpd_command(addr: &str, body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo {body} > /www/index.html; exec httpd -f -p {addr} -h /www"),
    ]
}

/// Connects through port forwarding (retried while the server starts) and fetches `/`.
fn fetch_through_port_forward(pod: &Pod, port: u16) -> String {
    pod.block_on(async {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut conn = loop {
            match pod.runtime.port_forward(&pod.sandbox, port).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        tokio::time::timeout(DEADLINE, conn.read_to_string(&mut resp))
            .await
            .unwrap()
            .unwrap();
        resp
    })
}

fn assert_refused(pod: &Pod, port: u16) {
    let err = pod
        .block_on(pod.runtime.port_forward(&pod.sandbox, port))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("localhost:{port}")) && msg.contains("refused"),
        "{msg}"
    );
}

fn port_forward_to_a_pod_network_sandbox() {
    let pod = Pod::new("fwd", false);
    // Listening on the pod's loopback only: reachable from nowhere but the pod's namespace.
    let cmd = httpd_command("127.0.0.1:18080", "hello-from-the-pod");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    pod.container("web", &cmd);
    let resp = fetch_through_port_forward(&pod, 18080);
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains("hello-from-the-pod"),
        "{resp}"
    );
    assert_refused(&pod, 18081);
    // A server on the IPv6 loopback only is found too.
    let cmd = httpd_command("[::1]:18082", "hello-over-ipv6");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    pod.container("web6", &cmd);
    let resp = fetch_through_port_forward(&pod, 18082);
    assert!(resp.contains("hello-over-ipv6"), "{resp}");
    let err = pod
        .block_on(
            pod.runtime
                .port_forward(&SandboxId("no-such-sandbox".into()), 80),
        )
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
}

fn port_forward_to_a_host_network_sandbox() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .map(|a: SocketAddr| a.port())
            .unwrap()
    };
    let pod = Pod::new("hostfwd", true);
    let port = free_port();
    let cmd = httpd_command(&format!("127.0.0.1:{port}"), "hello-from-the-host-network");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    pod.container("web", &cmd);
    let resp = fetch_through_port_forward(&pod, port);
    assert!(resp.contains("hello-from-the-host-network"), "{resp}");
    assert_refused(&pod, free_port());
}

/// Waits for the exit event of `id` on `events`; panics after the deadline.
async fn exit_event(
    events: &mut tokio::sync::broadcast::Receiver<staticlet_runtime::ContainerEvent>,
    id: &ContainerId,
) -> staticlet_runtime::ContainerEvent {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.container_id == *id => return ev,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no exit event for {id:?}"))
}

/// A container's exit reaches the runtime's event subscribers as it happens (the agent's
/// workers then restart it at once instead of at their next relist): for a shim the runtime
/// started (its own child) and for one an earlier runtime started (an agent restarted since:
/// the shim is not its child, it is watched once a list has seen it running).
fn exits_are_events_also_for_shims_of_an_earlier_runtime() {
    let pod = Pod::new("exits", true);
    let mut events = pod
        .runtime
        .subscribe_events()
        .expect("the runtime has events");
    let waits = [
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do usleep 10000; done; exit 3",
    ];
    let go = |id: &ContainerId| {
        let r = pod
            .block_on(pod.runtime.exec_sync(
                id,
                &["touch".into(), "/tmp/go".into()],
                Duration::from_secs(30),
            ))
            .unwrap();
        assert_eq!(r.exit_code, 0, "{r:?}");
    };

    let first = pod.container("first", &waits);
    go(&first);
    let ev = pod.block_on(exit_event(&mut events, &first));
    assert_eq!(ev.state, ContainerState::Exited);
    assert_eq!(ev.pod_uid, pod.sandbox_config.uid);
    let st = pod.block_on(pod.runtime.container_status(&first)).unwrap();
    assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(3)));

    // A second runtime on the same root, as an agent started after the first one.
    let second = pod.container("second", &waits);
    let later = pod.block_on(async { EmbeddedRuntime::new(runtime_config(pod.dir.path())) });
    let later = later.unwrap();
    let mut later_events = later.subscribe_events().unwrap();
    let listed = pod
        .block_on(later.list_containers(&LabelSelector::pod(&pod.sandbox_config.uid)))
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.id == second && c.state == ContainerState::Running),
        "{listed:?}"
    );
    go(&second);
    let ev = pod.block_on(exit_event(&mut later_events, &second));
    assert_eq!(ev.state, ContainerState::Exited);
    assert_eq!(ev.pod_uid, pod.sandbox_config.uid);
    let st = pod.block_on(later.container_status(&second)).unwrap();
    assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(3)));
}

/// A shim killed with SIGKILL (its container orphaned: nothing logs its output or records its
/// exit any more): a list (the agent relists every second) kills the container and records its
/// exit as unknown (255), reported as an event; for a shim the runtime started (its child) and
/// for one an earlier runtime started (an agent restarted since).
fn a_container_whose_shim_is_killed_is_killed_and_its_exit_recorded() {
    let pod = Pod::new("orphan", true);
    let all = LabelSelector::pod(&pod.sandbox_config.uid);
    let later = EmbeddedRuntime::new(runtime_config(pod.dir.path())).unwrap();
    for (which, runtime) in [("own", &pod.runtime), ("earlier", &later)] {
        let mut events = runtime.subscribe_events().unwrap();
        let marker = unique().to_string();
        let id = pod.container(which, &["sleep", &marker]);
        let state = pod.shim_dir(&id);
        let st = staticlet_shim::read_state(&state).unwrap();
        assert_eq!(st.status, staticlet_shim::Status::Running, "{st:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(st.shim_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait("the shim gone", || !staticlet_shim::client::shim_alive(&st));
        let ev = pod.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                loop {
                    runtime.list_containers(&all).await.unwrap();
                    let got = tokio::time::timeout(
                        Duration::from_millis(200),
                        exit_event(&mut events, &id),
                    );
                    if let Ok(ev) = got.await {
                        return ev;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{which}: no exit event"))
        });
        assert_eq!(ev.state, ContainerState::Exited, "{which}");
        let st = pod.block_on(runtime.container_status(&id)).unwrap();
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_str()),
            (ContainerState::Exited, Some(255), "Error"),
            "{which}: {st:?}"
        );
        wait("the orphaned container killed", || {
            processes(&format!("sleep {marker}")).is_empty()
        });
    }
}

/// Stopping many containers at once (a pod deletion of many pods) holds no thread per container
/// for its grace period: 50 containers that ignore SIGTERM, stopped together with a 3 s grace,
/// are each SIGKILLed at the end of their grace (exit 137, not before the grace), while the
/// process keeps a bounded number of threads (the stops used to hold one blocking thread each:
/// 50 + the rest).
fn stopping_many_containers_holds_no_thread_per_container() {
    const N: usize = 50;
    const GRACE: Duration = Duration::from_secs(3);
    let pod = Pod::new("stops", true);
    let marker = unique();
    let command = format!("trap '' TERM; exec sleep {marker}");
    let ids: Vec<ContainerId> = (0..N)
        .map(|i| pod.container(&format!("c{i}"), &["sh", "-c", &command]))
        .collect();
    let sleeping = || processes(&format!("sleep {marker}")).len();
    wait("every container's sleep running", || sleeping() == N);
    let before = threads();

    let started = std::time::SystemTime::now();
    let stops: Vec<JoinHandle<Result<(), RuntimeError>>> = ids
        .iter()
        .map(|id| {
            let (runtime, id) = (pod.runtime.clone(), id.clone());
            pod.rt
                .spawn(async move { runtime.stop_container(&id, GRACE).await })
        })
        .collect();
    // Sampled until every stop returned.
    let mut most = before;
    let deadline = Instant::now() + GRACE + DEADLINE;
    while !stops.iter().all(|t| t.is_finished()) {
        most = most.max(threads());
        assert!(Instant::now() < deadline, "the stops never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed().unwrap();
    for (i, t) in stops.into_iter().enumerate() {
        pod.block_on(t)
            .expect("the stop task does not panic")
            .unwrap_or_else(|e| panic!("stop of c{i}: {e}"));
    }
    eprintln!(
        "{N} stops with a {GRACE:?} grace: {elapsed:.1?}, threads {before} before, at most {most} during"
    );
    assert_eq!(sleeping(), 0, "every container's process is gone");
    for (i, id) in ids.iter().enumerate() {
        let st = pod.block_on(pod.runtime.container_status(id)).unwrap();
        assert_eq!(
            (st.state, st.exit_code),
            (ContainerState::Exited, Some(137)),
            "c{i} ignores SIGTERM: killed by SIGKILL: {st:?}"
        );
        let finished = st.finished_at.expect("an exit time");
        assert!(
            finished >= started + GRACE,
            "c{i} was killed before the end of its grace: {:?} after the stop began",
            finished.duration_since(started)
        );
    }
    assert!(
        most <= 40,
        "{N} containers stopping at once: {before} threads before, {most} during"
    );

    // One that handles SIGTERM stops at once, far within its grace, with its own exit code.
    let polite = pod.container(
        "polite",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; touch /tmp/trapped; while true; do usleep 10000; done",
        ],
    );
    // A SIGTERM sent before the shell set its trap is ignored (the shell is its namespace's
    // init, which has no default action for it): the stop begins once the trap is set.
    wait("the polite container's trap set", || {
        pod.block_on(pod.runtime.exec_sync(
            &polite,
            &["test".into(), "-e".into(), "/tmp/trapped".into()],
            Duration::from_secs(30),
        ))
        .is_ok_and(|r| r.exit_code == 0)
    });
    let begun = Instant::now();
    pod.block_on(pod.runtime.stop_container(&polite, 4 * DEADLINE))
        .unwrap();
    assert!(begun.elapsed() < DEADLINE, "{:?}", begun.elapsed());
    let st = pod.block_on(pod.runtime.container_status(&polite)).unwrap();
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::Exited, Some(7)),
        "{st:?}"
    );
}
