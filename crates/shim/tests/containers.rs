//! Real containers under the shim (needs root and Debian's `busybox-static`).
//!
//! Each test builds a busybox bundle in a temporary directory, starts a shim through the
//! `staticlet-shim` binary and waits on conditions in `state.json` with generous deadlines. Every
//! test checks on its way out that its cgroups (`/staticlet/test-<id>` in every hierarchy) and
//! libcontainer state are gone and no process is left.
#![allow(clippy::disallowed_types)] // No tokio here: std's Instant is the right clock.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use staticlet_shim::attach::{Frame, ATTACH_SOCKET, CLIENT_QUEUE_LIMIT};
use staticlet_shim::bundle::{write_busybox_bundle, BundleOptions};
use staticlet_shim::client::{self, wait_for};
use staticlet_shim::exec::{
    exec_outcome, exec_request, send_exec_request, EXEC_SOCKET, MAX_SHIM_EXECS,
};
use staticlet_shim::{
    exec_in_container, read_state, spawn_shim, stop, ContainerStdio, ExecOutput, ExecTarget,
    Reason, Reexec, ShimConfig, ShimState, Status,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// The shim binary: this crate's (debug) one, or `STATICLET_SHIM_TEST_EXE` (e.g. a release build,
/// to measure its memory).
fn reexec() -> Reexec {
    let exe = std::env::var_os("STATICLET_SHIM_TEST_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_staticlet-shim")));
    Reexec {
        exe,
        prefix: Vec::new(),
    }
}

/// Root and busybox are needed; without them the test is skipped (with a note on stderr).
fn prerequisites() -> bool {
    let ok =
        nix::unistd::geteuid().is_root() && Path::new(staticlet_shim::bundle::BUSYBOX).exists();
    if !ok {
        eprintln!("skipped: needs root and /bin/busybox (busybox-static)");
    }
    ok
}

/// The shim configuration of a container whose files live under `dir`.
fn config_for(dir: &Path, id: &str) -> ShimConfig {
    ShimConfig {
        reexec: reexec(),
        id: id.to_owned(),
        bundle: dir.join("bundle"),
        state_dir: dir.join("state"),
        log_path: dir.join("container.log"),
        root: dir.join("root"),
        start_timeout: DEADLINE,
        stdio: ContainerStdio::default(),
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    id: String,
    cfg: ShimConfig,
}

impl Fixture {
    fn new(name: &str, args: &[&str]) -> Self {
        Self::with(name, args, |_| {})
    }

    fn with(name: &str, args: &[&str], tweak: impl FnOnce(&mut BundleOptions)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let id = format!("{name}-{}", std::process::id());
        let mut opts = BundleOptions::new(&id, args);
        tweak(&mut opts);
        write_busybox_bundle(&tmp.path().join("bundle"), &opts).unwrap();
        let cfg = config_for(tmp.path(), &id);
        Self { _tmp: tmp, id, cfg }
    }

    fn state(&self) -> ShimState {
        read_state(&self.cfg.state_dir).unwrap()
    }

    fn wait_exited(&self) -> ShimState {
        wait_for(
            &self.cfg.state_dir,
            Instant::now() + DEADLINE,
            ShimState::is_exited,
        )
        .unwrap()
    }

    /// Waits until the container's log has a record whose text is `text`.
    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if fs::read_to_string(&self.cfg.log_path)
                .unwrap_or_default()
                .lines()
                .any(|l| parse_record(l).3 == text)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log: {:?}",
                self.log_lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.cfg.log_path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the shim is gone, then checks nothing of the container is left.
    fn assert_cleaned_up(&self, st: &ShimState) {
        let deadline = Instant::now() + DEADLINE;
        while client::shim_alive(st) {
            assert!(
                Instant::now() < deadline,
                "shim {} still alive",
                st.shim_pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!client::init_alive(st), "init {} still alive", st.pid);
        assert!(!st.cgroup_dirs.is_empty());
        for dir in &st.cgroup_dirs {
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
        for entry in fs::read_dir("/sys/fs/cgroup").unwrap() {
            let leaf = entry
                .unwrap()
                .path()
                .join("staticlet")
                .join(format!("test-{}", self.id));
            assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
        }
        assert!(
            !self.cfg.root.join(&self.id).exists(),
            "libcontainer state left behind"
        );
        // Best effort: the shared parent goes once no test's container is left under it.
        for entry in fs::read_dir("/sys/fs/cgroup").unwrap() {
            let _ = fs::remove_dir(entry.unwrap().path().join("staticlet"));
        }
        let shim_log = fs::read_to_string(self.cfg.state_dir.join("shim.log")).unwrap_or_default();
        assert!(shim_log.is_empty(), "shim complained: {shim_log}");
    }
}

/// `<timestamp> <stream> <tag> <text>` split into its four parts.
fn parse_record(line: &str) -> (String, String, String, String) {
    let mut p = line.splitn(4, ' ');
    let ts = p.next().unwrap().to_owned();
    let stream = p.next().unwrap().to_owned();
    let tag = p.next().unwrap().to_owned();
    let text = p.next().unwrap_or("").to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&ts).is_ok(),
        "bad timestamp {ts:?}"
    );
    (ts, stream, tag, text)
}

#[test]
fn exit_code_and_both_streams_are_recorded() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("hello", &["sh", "-c", "echo hello; echo err >&2; exit 3"]);
    let handle = spawn_shim(&fx.cfg).unwrap();
    assert!(handle.state.pid > 0);
    let st = fx.wait_exited();
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason, Some(Reason::Error));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    let records: Vec<_> = fx.log_lines().iter().map(|l| parse_record(l)).collect();
    let mut got: Vec<(String, String, String)> =
        records.into_iter().map(|(_, s, t, x)| (s, t, x)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("stderr".into(), "F".into(), "err".into()),
            ("stdout".into(), "F".into(), "hello".into())
        ]
    );
    fx.assert_cleaned_up(&st);
}

#[test]
fn shim_outlives_the_process_that_spawned_it() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("orphan", &["sh", "-c", "echo started; exec sleep 1000"]);
    // The spawner is this test binary re-run as `spawner_helper`, which calls spawn_shim and
    // then blocks on its stdin until it is killed.
    let mut spawner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "spawner_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STATICLET_SHIM_SPAWNER_DIR", fx._tmp.path())
        .env("STATICLET_SHIM_SPAWNER_ID", &fx.id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(spawner.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints `test spawner_helper ... ` on the same line.
    while !line.contains("spawned ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "spawner ended early");
    }
    let shim_pid: i32 = line
        .rsplit("spawned ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let before = fx.state();
    assert_eq!(before.shim_pid, shim_pid);
    assert_eq!(before.status, Status::Running);

    // The shim is not the spawner's child and holds none of its stdio.
    let ppid = fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let ppid: i32 = ppid[ppid.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid as u32, spawner.id());
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{shim_pid}/fd/{fd}")).unwrap();
        let target = target.to_string_lossy();
        assert!(
            target == "/dev/null" || target.ends_with("shim.log"),
            "fd {fd} is {target}"
        );
    }

    spawner.kill().unwrap(); // SIGKILL
    spawner.wait().unwrap();
    fx.wait_log("started");
    let after = fx.state();
    assert_eq!(after.status, Status::Running);
    assert!(client::shim_alive(&after), "shim died with its spawner");
    assert!(
        client::init_alive(&after),
        "container died with the spawner"
    );

    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    assert_eq!(st.exit_code, Some(137));
    fx.assert_cleaned_up(&st);
}

/// Not a test: the spawner process of `shim_outlives_the_process_that_spawned_it`.
#[test]
#[ignore = "helper process, run by shim_outlives_the_process_that_spawned_it"]
fn spawner_helper() {
    let (Ok(dir), Ok(id)) = (
        std::env::var("STATICLET_SHIM_SPAWNER_DIR"),
        std::env::var("STATICLET_SHIM_SPAWNER_ID"),
    ) else {
        return;
    };
    let handle = spawn_shim(&config_for(Path::new(&dir), &id)).unwrap();
    println!("spawned {}", handle.state.shim_pid);
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

#[test]
fn stop_with_grace_lets_a_term_trap_run() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 143' TERM; echo ready; sleep 1000 & wait",
        ],
    );
    spawn_shim(&fx.cfg).unwrap();
    fx.wait_log("ready");
    let t = Instant::now();
    let grace = Duration::from_secs(20);
    let st = stop(&fx.cfg.state_dir, Signal::SIGTERM, grace).unwrap();
    assert!(t.elapsed() < grace / 2, "took {:?}", t.elapsed());
    assert_eq!(st.exit_code, Some(143));
    assert_eq!(st.reason, Some(Reason::Error));
    assert!(fx.log_lines().iter().any(|l| parse_record(l).3 == "bye"));
    // Idempotent: a second stop returns the same record.
    assert_eq!(stop(&fx.cfg.state_dir, Signal::SIGTERM, grace).unwrap(), st);
    fx.assert_cleaned_up(&st);
}

#[test]
fn stop_kills_after_grace_when_term_is_ignored() {
    if !prerequisites() {
        return;
    }
    // As pid 1 of its namespace, a shell without a TERM handler does not die of SIGTERM.
    let fx = Fixture::new(
        "ignore",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"],
    );
    spawn_shim(&fx.cfg).unwrap();
    fx.wait_log("ready");
    let grace = Duration::from_millis(500);
    let t = Instant::now();
    let st = stop(&fx.cfg.state_dir, Signal::SIGTERM, grace).unwrap();
    assert!(t.elapsed() >= grace);
    assert_eq!(st.exit_code, Some(137));
    assert_eq!(st.status, Status::Exited);
    fx.assert_cleaned_up(&st);
}

#[test]
fn long_line_is_written_as_partial_records() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new(
        "long",
        &[
            "sh",
            "-c",
            "head -c 40000 /dev/zero | tr '\\0' x; echo; echo done",
        ],
    );
    spawn_shim(&fx.cfg).unwrap();
    let st = fx.wait_exited();
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(st.reason, Some(Reason::Completed));
    let got: Vec<(String, String, usize)> = fx
        .log_lines()
        .iter()
        .map(|l| parse_record(l))
        .map(|(_, s, t, x)| (s, t, if x == "done" { 0 } else { x.len() }))
        .collect();
    let m = staticlet_shim::crilog::MAX_LINE;
    assert_eq!(
        got,
        [
            ("stdout".into(), "P".into(), m),
            ("stdout".into(), "P".into(), m),
            ("stdout".into(), "F".into(), 40000 - 2 * m),
            ("stdout".into(), "F".into(), 0),
        ]
    );
    fx.assert_cleaned_up(&st);
}

#[test]
fn exec_runs_inside_the_container() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::with("exec", &["sleep", "1000"], |o| {
        o.env.push("FROM_SPEC=yes".into())
    });
    spawn_shim(&fx.cfg).unwrap();
    // The same checks through the helper binary and through the shim's exec socket.
    for via_shim in [false, true] {
        let exec = |cmd: &[String], env: &[String], timeout: Duration| {
            if via_shim {
                exec_via_shim(&fx.cfg.state_dir, cmd, env, timeout)
            } else {
                let target = ExecTarget::StateDir(&fx.cfg.state_dir);
                exec_in_container(&reexec(), target, cmd, env, timeout)
            }
        };
        check_exec(&fx, &exec);
    }
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    fx.assert_cleaned_up(&st);
    assert!(
        !fx.cfg.state_dir.join(EXEC_SOCKET).exists(),
        "the exec socket is removed with the container"
    );
}

type ExecFn<'a> = dyn Fn(&[String], &[String], Duration) -> std::io::Result<ExecOutput> + 'a;

fn check_exec(fx: &Fixture, exec: &ExecFn<'_>) {
    let run = |cmd: &[&str], env: &[&str]| {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        exec(&cmd, &env, DEADLINE).unwrap()
    };
    let hostname = format!("host-{}\n", fx.id);
    let out = run(&["cat", "/etc/hostname"], &[]);
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.exit_code
        ),
        (hostname.clone(), 0)
    );
    // uts namespace: the kernel's hostname, not just the file.
    assert_eq!(
        String::from_utf8_lossy(&run(&["hostname"], &[]).stdout),
        hostname
    );
    // pid namespace: the container's init is pid 1, and it is `sleep`.
    let out = run(&["cat", "/proc/1/cmdline"], &[]);
    assert_eq!(out.stdout, b"sleep\x001000\x00");
    // cgroups: the command is in the init's (the ones its shim recorded), so it counts towards
    // the container's limits and is killed with it.
    let out = run(&["cat", "/proc/self/cgroup"], &[]);
    let init = std::fs::read_to_string(format!(
        "/proc/{}/cgroup",
        read_state(&fx.cfg.state_dir).unwrap().pid
    ))
    .unwrap();
    let st = read_state(&fx.cfg.state_dir).unwrap();
    assert!(
        !st.cgroup_dirs.is_empty(),
        "the shim records the container's cgroups"
    );
    let (theirs, ours) = (String::from_utf8_lossy(&out.stdout), init);
    for line in theirs.lines() {
        // The cgroup namespace may hide the path prefix; what is shown must match the init's.
        let ctrl = line.split(':').nth(1).unwrap();
        let init_line = ours
            .lines()
            .find(|l| l.split(':').nth(1) == Some(ctrl))
            .unwrap();
        assert!(
            init_line.ends_with(line.rsplit(':').next().unwrap()),
            "exec'd {line:?} vs init {init_line:?}"
        );
    }
    // environment of the init plus overrides; both streams; exit code.
    let out = run(
        &["sh", "-c", "echo $FROM_SPEC $EXTRA; echo oops >&2; exit 5"],
        &["EXTRA=1"],
    );
    assert_eq!(out.stdout, b"yes 1\n");
    assert_eq!(out.stderr, b"oops\n");
    assert_eq!(out.exit_code, 5);
    let out = run(&["no-such-command"], &[]);
    assert_eq!(
        out.exit_code,
        127,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A command that overstays its timeout is killed.
    let t = Instant::now();
    let err = exec(
        &["sleep".into(), "1000".into()],
        &[],
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(t.elapsed() < DEADLINE);
}

/// `ExecSync` through the shim's exec socket, as the agent does it (its client is async:
/// `runtime-embedded`), with blocking calls.
fn exec_via_shim(
    dir: &Path,
    cmd: &[String],
    env: &[String],
    timeout: Duration,
) -> std::io::Result<ExecOutput> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let request = exec_request(cmd, env, timeout)?;
    let started = Instant::now();
    let sock = UnixStream::connect(dir.join(EXEC_SOCKET))?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let ((out_r, out_w), (err_r, err_w)) = (pipe(), pipe());
    let sent = send_exec_request(sock.as_fd(), &request, out_w.as_fd(), err_w.as_fd())?;
    (&sock).write_all(&request[sent..])?;
    drop((out_w, err_w));
    let drain = |fd: std::os::fd::OwnedFd| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = fs::File::from(fd).read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (drain(out_r), drain(err_r));
    let mut code = [0u8; 4];
    (&sock).read_exact(&mut code)?;
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    exec_outcome(
        i32::from_be_bytes(code),
        out,
        err,
        started.elapsed(),
        timeout,
    )
}

/// The shim runs at most MAX_SHIM_EXECS commands at a time (one more is refused: its
/// connection closes without a code) and takes new ones once those end; a request it cannot
/// read is refused without running anything.
#[test]
fn exec_socket_bounds_its_children_and_refuses_bad_requests() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("execs", &["sleep", "1000"]);
    spawn_shim(&fx.cfg).unwrap();
    let dir = fx.cfg.state_dir.clone();
    let wait_go: Vec<String> = [
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do usleep 10000; done; echo went",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let waiting: Vec<_> = (0..MAX_SHIM_EXECS)
        .map(|_| {
            let (dir, cmd) = (dir.clone(), wait_go.clone());
            std::thread::spawn(move || exec_via_shim(&dir, &cmd, &[], DEADLINE))
        })
        .collect();
    // Each waiting command's sh runs in the container: all of them before the next request.
    let deadline = Instant::now() + DEADLINE;
    let shells = || {
        staticlet_shim::sys::cgroup_pids(&fx.state().cgroup_dirs)
            .into_iter()
            .filter(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sh\n"))
            .count()
    };
    while shells() < MAX_SHIM_EXECS {
        assert!(
            Instant::now() < deadline,
            "the waiting commands never all ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = exec_via_shim(&dir, &["true".into()], &[], DEADLINE).unwrap_err();
    // Closed at once: the client sees it when it sends (EPIPE) or reads (EOF).
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    assert!(
        matches!(refused.kind(), UnexpectedEof | BrokenPipe | ConnectionReset),
        "{refused}"
    );
    fs::write(fx._tmp.path().join("bundle/rootfs/tmp/go"), b"").unwrap();
    for t in waiting {
        let out = t.join().unwrap().unwrap();
        assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"went\n"[..]));
    }
    // Once their children have exited (and are reaped: a client can have its code a moment
    // before), the shim takes commands again.
    let deadline = Instant::now() + DEADLINE;
    let out = loop {
        match exec_via_shim(&dir, &["echo".into(), "again".into()], &[], DEADLINE) {
            Ok(out) => break out,
            Err(e) if matches!(e.kind(), UnexpectedEof | BrokenPipe | ConnectionReset) => {
                assert!(Instant::now() < deadline, "still refused: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"again\n"[..]));

    // Not an exec request: nothing runs, the helper's exit code for "cannot run" and why.
    let garbage = b"run\0--id\0x\0";
    let mut request = (garbage.len() as u32).to_be_bytes().to_vec();
    request.extend_from_slice(garbage);
    let out = send_raw(&dir, &request, true);
    let why = String::from_utf8_lossy(&out.1);
    assert_eq!(out.0, Some(126), "{why}");
    assert!(why.starts_with("staticlet-shim exec: "), "{why}");
    // An interactive exec is not served either (it needs the caller's stdin and a session).
    let mut interactive = Vec::new();
    for w in ["exec", "--pid", "1", "--interactive", "--", "true"] {
        interactive.extend_from_slice(w.as_bytes());
        interactive.push(0);
    }
    let mut request = (interactive.len() as u32).to_be_bytes().to_vec();
    request.extend_from_slice(&interactive);
    let out = send_raw(&dir, &request, true);
    let why = String::from_utf8_lossy(&out.1);
    assert_eq!(out.0, Some(126), "{why}");
    assert!(why.contains("not a non-interactive exec"), "{why}");
    // No descriptors attached: closed without a code (the shim's log says why).
    let out = send_raw(&dir, &request, false);
    assert_eq!(out.0, None, "{out:?}");

    // The shim's log says why for both refusals (and is emptied for the clean-up check).
    let log_path = fx.cfg.state_dir.join("shim.log");
    let log = fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!("exec refused: {MAX_SHIM_EXECS} running")),
        "{log}"
    );
    assert!(log.contains("exactly two descriptors"), "{log}");
    fs::write(&log_path, b"").unwrap();

    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    fx.assert_cleaned_up(&st);
}

/// Sends a raw request (with stdout and stderr pipes attached, or nothing); returns the exit
/// code, if one came, and what the command's stderr got.
fn send_raw(dir: &Path, request: &[u8], with_fds: bool) -> (Option<i32>, Vec<u8>) {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let sock = UnixStream::connect(dir.join(EXEC_SOCKET)).unwrap();
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let ((_out_r, out_w), (err_r, err_w)) = (pipe(), pipe());
    if with_fds {
        let sent = send_exec_request(sock.as_fd(), request, out_w.as_fd(), err_w.as_fd()).unwrap();
        (&sock).write_all(&request[sent..]).unwrap();
    } else {
        (&sock).write_all(request).unwrap();
    }
    drop((out_w, err_w));
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut code = [0u8; 4];
    let code = (&sock)
        .read_exact(&mut code)
        .ok()
        .map(|()| i32::from_be_bytes(code));
    let mut err = Vec::new();
    let _ = fs::File::from(err_r).read_to_end(&mut err);
    (code, err)
}

/// Resident memory of the shim while its container runs (printed; `--nocapture` shows it).
/// Measure a shim-profile build with `bench/shim_rss.sh`.
#[test]
fn shim_resident_memory_is_small() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("rss", &["sh", "-c", "echo ready; exec sleep 1000"]);
    let handle = spawn_shim(&fx.cfg).unwrap();
    fx.wait_log("ready");
    // The monitor's loop goes back to poll(2) after writing the record: let it settle (longer
    // with STATICLET_SHIM_TEST_HOLD_MS, to look at the process from outside meanwhile).
    let hold = env_number("STATICLET_SHIM_TEST_HOLD_MS").unwrap_or(100);
    eprintln!(
        "shim {} ({}): measuring in {hold} ms",
        handle.state.shim_pid,
        fx.cfg.reexec.exe.display()
    );
    std::thread::sleep(Duration::from_millis(hold));
    let status = fs::read_to_string(format!("/proc/{}/status", handle.state.shim_pid)).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (rss, anon, file) = (field("VmRSS:"), field("RssAnon:"), field("RssFile:"));
    eprintln!("shim VmRSS {rss} kB (RssAnon {anon} kB, RssFile {file} kB)");
    // Per mapping, for whoever wants to make it smaller.
    let smaps = fs::read_to_string(format!("/proc/{}/smaps", handle.state.shim_pid)).unwrap();
    let mut mapping = String::new();
    for line in smaps.lines() {
        if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            mapping = line.to_owned();
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            if kb.trim() != "0 kB" {
                eprintln!("  {:>8} {mapping}", kb.trim());
            }
        }
    }
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    fx.assert_cleaned_up(&st);
    // A guard against gross regressions only: a debug build is several times a release one.
    assert!(rss < 16 * 1024, "shim VmRSS {rss} kB");
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn missing_executable_is_a_start_error() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("nostart", &["/no/such/binary"]);
    let err = spawn_shim(&fx.cfg).unwrap_err();
    assert!(err.to_string().contains("failed to start"), "{err}");
    let st = fx.wait_exited();
    assert_eq!(st.reason, Some(Reason::StartError));
    assert_eq!(st.exit_code, Some(staticlet_shim::START_ERROR_EXIT_CODE));
    // libcontainer's error, from the creator child, names what is missing.
    assert!(st.message.contains("/no/such/binary"), "{}", st.message);
    // Nothing was created that could be left behind; the shim said why it failed.
    let deadline = Instant::now() + DEADLINE;
    while client::shim_alive(&st) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !fx.cfg.root.join(&fx.id).exists(),
        "libcontainer state left behind"
    );
    for entry in fs::read_dir("/sys/fs/cgroup").unwrap() {
        let leaf = entry
            .unwrap()
            .path()
            .join("staticlet")
            .join(format!("test-{}", fx.id));
        assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
    }
}

#[test]
fn oom_kill_is_reported() {
    if !prerequisites() {
        return;
    }
    // The shell keeps a command substitution's output in memory: 64 MiB against a 16 MiB limit.
    let fx = Fixture::with(
        "oom",
        &["sh", "-c", "x=$(yes | head -c 67108864); echo survived"],
        |o| o.memory_limit = Some(16 * 1024 * 1024),
    );
    spawn_shim(&fx.cfg).unwrap();
    let st = fx.wait_exited();
    assert_eq!(st.reason, Some(Reason::OomKilled), "{st:?}");
    assert_eq!(st.exit_code, Some(137));
    fx.assert_cleaned_up(&st);
}

/// A client of a shim's attach socket, as the runtime is one.
struct AttachClient {
    sock: std::os::unix::net::UnixStream,
    inbuf: Vec<u8>,
    /// Output received so far (stdout and stderr), as text.
    seen: String,
    eof: bool,
}

impl AttachClient {
    fn connect(fx: &Fixture) -> Self {
        let sock =
            std::os::unix::net::UnixStream::connect(fx.cfg.state_dir.join(ATTACH_SOCKET)).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        AttachClient {
            sock,
            inbuf: Vec::new(),
            seen: String::new(),
            eof: false,
        }
    }

    fn send(&mut self, f: Frame) {
        use std::io::Write;
        let mut b = Vec::new();
        f.encode(&mut b);
        self.sock.write_all(&b).unwrap();
    }

    /// The next frame; `None` at EOF (or when the shim dropped the connection).
    fn next(&mut self) -> Option<Frame> {
        use std::io::Read;
        loop {
            if let Some((f, n)) = Frame::decode(&self.inbuf).unwrap() {
                self.inbuf.drain(..n);
                if let Frame::Stdout(d) | Frame::Stderr(d) = &f {
                    self.seen.push_str(&String::from_utf8_lossy(d));
                }
                return Some(f);
            }
            let mut b = [0u8; 65536];
            match self.sock.read(&mut b) {
                Ok(0) => {
                    self.eof = true;
                    return None;
                }
                Ok(n) => self.inbuf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    self.eof = true;
                    return None;
                }
                Err(e) => panic!("attach read: {e} (seen {:?})", self.seen),
            }
        }
    }

    /// Reads until the output so far contains `want`.
    fn wait_output(&mut self, want: &str) {
        while !self.seen.contains(want) {
            assert!(
                self.next().is_some(),
                "attach ended without {want:?}: {:?}",
                self.seen
            );
        }
    }
}

impl Fixture {
    fn with_stdio(mut self, stdio: ContainerStdio) -> Self {
        self.cfg.stdio = stdio;
        self
    }
}

/// Reads `line-<n> ...` lines from a client until `count` whole lines came; returns their
/// numbers (the first line seen may be partial and is skipped).
fn read_numbered_lines(mut c: AttachClient, count: usize) -> (AttachClient, Vec<u64>) {
    let mut partial = String::new();
    let mut numbers = Vec::new();
    let mut first = true;
    while numbers.len() < count {
        let Some(Frame::Stdout(d)) = c.next() else {
            panic!("attach ended after {} lines", numbers.len());
        };
        partial.push_str(&String::from_utf8_lossy(&d));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            if !std::mem::take(&mut first) {
                let n = line
                    .strip_prefix("line-")
                    .and_then(|l| l.split(' ').next()?.parse().ok());
                numbers.push(n.unwrap_or_else(|| panic!("not a numbered line: {line:?}")));
            }
        }
    }
    c.seen.clear();
    (c, numbers)
}

#[test]
fn attach_copies_output_to_every_client_and_drops_one_that_does_not_read() {
    if !prerequisites() {
        return;
    }
    // About 1 KiB lines, a hundred at a time.
    let fx = Fixture::new(
        "fanout",
        &[
            "sh",
            "-c",
            "p=x; for k in 1 2 3 4 5 6 7 8 9 10; do p=$p$p; done; i=0; while true; do i=$((i+1)); echo \"line-$i $p\"; [ $((i % 20)) -eq 0 ] && sleep 0.01; done",
        ],
    );
    let handle = spawn_shim(&fx.cfg).unwrap();
    // Never reads: the shim must drop it rather than wait for it.
    let mut slow = AttachClient::connect(&fx);
    // Both readers get every line, none missing, well past what the slow client's queue and
    // socket buffers hold.
    let wanted = CLIENT_QUEUE_LIMIT / 1024 * 4;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let c = AttachClient::connect(&fx);
            std::thread::spawn(move || read_numbered_lines(c, wanted))
        })
        .collect();
    let mut readers: Vec<_> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    for (_, n) in &readers {
        assert!(
            n.windows(2).all(|w| w[1] == w[0] + 1),
            "a gap in the output"
        );
    }
    // The slow client was dropped (its connection ends) while the container runs on.
    slow.sock.shutdown(std::net::Shutdown::Write).unwrap();
    while slow.next().is_some() {}
    assert!(slow.eof);
    assert_eq!(fx.state().status, Status::Running);
    let log_lines = fx.log_lines().len();
    assert!(log_lines > wanted, "{log_lines}");
    drop(handle);
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    // The readers see the end of the attach when the container exits.
    let (a, _) = &mut readers[0];
    while a.next().is_some() {}
    // The drop is the one thing the shim says.
    let shim_log = fx.cfg.state_dir.join("shim.log");
    assert_eq!(
        fs::read_to_string(&shim_log).unwrap(),
        "staticlet-shim: attach client too slow, dropped\n"
    );
    fs::write(&shim_log, "").unwrap();
    fx.assert_cleaned_up(&st);
    assert!(!fx.cfg.state_dir.join(ATTACH_SOCKET).exists());
}

/// A container echoing its stdin lines, then saying so when its stdin ends.
const ECHO_STDIN: &str = "while read l; do echo got:$l; done; echo stdin-closed; sleep 1000";

#[test]
fn attach_stdin_reaches_the_container_and_stdin_once_closes_it() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("stdin-once", &["sh", "-c", ECHO_STDIN]).with_stdio(ContainerStdio {
        stdin: true,
        stdin_once: true,
        tty: false,
    });
    spawn_shim(&fx.cfg).unwrap();
    let mut first = AttachClient::connect(&fx);
    let mut watcher = AttachClient::connect(&fx);
    first.send(Frame::AttachStdin);
    first.send(Frame::Stdin(b"one\n".to_vec()));
    first.wait_output("got:one\n");
    watcher.wait_output("got:one\n");
    // The first client's stdin ends: the container's is closed (stdinOnce).
    first.send(Frame::StdinEof);
    watcher.wait_output("stdin-closed\n");
    // Stdin of a later client goes nowhere.
    let mut late = AttachClient::connect(&fx);
    late.send(Frame::AttachStdin);
    late.send(Frame::Stdin(b"two\n".to_vec()));
    late.send(Frame::StdinEof);
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    while watcher.next().is_some() {}
    assert!(!watcher.seen.contains("got:two"), "{:?}", watcher.seen);
    fx.assert_cleaned_up(&st);
}

#[test]
fn attach_stdin_stays_open_across_clients_without_stdin_once() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::new("stdin-open", &["sh", "-c", ECHO_STDIN]).with_stdio(ContainerStdio {
        stdin: true,
        stdin_once: false,
        tty: false,
    });
    spawn_shim(&fx.cfg).unwrap();
    for word in ["one", "two"] {
        let mut c = AttachClient::connect(&fx);
        c.send(Frame::AttachStdin);
        c.send(Frame::Stdin(format!("{word}\n").into_bytes()));
        c.wait_output(&format!("got:{word}\n"));
        c.send(Frame::StdinEof);
        // A client that just goes away does not close it either.
        drop(c);
    }
    let mut c = AttachClient::connect(&fx);
    c.send(Frame::Stdin(b"three\n".to_vec()));
    c.wait_output("got:three\n");
    assert!(!c.seen.contains("stdin-closed"));
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    fx.assert_cleaned_up(&st);
    let log = fx.log_lines().join("\n");
    assert!(!log.contains("stdin-closed"), "{log}");
}

#[test]
fn attach_without_stdin_streams_output_and_drops_stdin() {
    if !prerequisites() {
        return;
    }
    // Without `stdin` the container reads EOF at once; stdin sent by a client is dropped.
    let fx = Fixture::new(
        "no-stdin",
        &[
            "sh",
            "-c",
            "cat; echo cat-done; while true; do echo tick; sleep 0.1; done",
        ],
    );
    spawn_shim(&fx.cfg).unwrap();
    fx.wait_log("cat-done");
    let mut c = AttachClient::connect(&fx);
    c.send(Frame::AttachStdin);
    c.send(Frame::Stdin(b"ignored\n".to_vec()));
    c.send(Frame::StdinEof);
    c.wait_output("tick\ntick\n");
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    while c.next().is_some() {}
    assert!(!c.seen.contains("ignored"), "{:?}", c.seen);
    fx.assert_cleaned_up(&st);
}

#[test]
fn attach_to_a_terminal_writes_stdin_resizes_and_logs_as_stdout() {
    if !prerequisites() {
        return;
    }
    let fx = Fixture::with(
        "tty",
        &[
            "sh",
            "-c",
            "tty; while read l; do echo got:$l; stty size; done",
        ],
        |o| o.terminal = true,
    )
    .with_stdio(ContainerStdio {
        stdin: true,
        stdin_once: false,
        tty: true,
    });
    spawn_shim(&fx.cfg).unwrap();
    fx.wait_log("/dev/pts/0");
    let mut c = AttachClient::connect(&fx);
    c.send(Frame::Resize {
        width: 101,
        height: 33,
    });
    c.send(Frame::AttachStdin);
    c.send(Frame::Stdin(b"hi\n".to_vec()));
    c.wait_output("got:hi\r\n33 101\r\n");
    // One stream: everything is stdout, in the log too.
    fx.wait_log("got:hi");
    let st = stop(&fx.cfg.state_dir, Signal::SIGKILL, Duration::ZERO).unwrap();
    fx.assert_cleaned_up(&st);
    for l in fx.log_lines() {
        assert_eq!(parse_record(&l).1, "stdout", "{l}");
    }
}
