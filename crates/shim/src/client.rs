//! The agent's side of the shim: start a shim, read its record, stop its container.
//!
//! Nothing here calls libcontainer or joins a namespace, so it is safe in the multi-threaded
//! (tokio) agent; the calls block, so an async caller wraps them in `spawn_blocking` (except
//! the steps of [`stop`], which never wait, so that a caller can wait for the exit without a
//! thread). The only processes started are re-execs of the agent's binary ([`Reexec`]) in a
//! shim mode.
//!
//! Waiting re-reads `state.json` whenever inotify says it was replaced (and every 50 ms at most,
//! to notice a shim that died silently) until a condition holds or a deadline passes.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::args::{ShimArgs, SupervisorArgs};
use crate::state::{self, read_state, write_state, Reason, ShimState, Status, SHIM_LOG_FILE};
use crate::sys;

/// How to re-exec the binary that contains the shim: `<exe> <prefix...> <mode> <options...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reexec {
    /// The executable (for the agent itself: `/proc/self/exe` or `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Arguments before the mode word (e.g. `["__shim"]` for the agent's hidden subcommand).
    pub prefix: Vec<OsString>,
}

/// Everything needed to start one container under a shim.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The binary to run in shim mode.
    pub reexec: Reexec,
    /// Container id (unique under `root`).
    pub id: String,
    /// OCI bundle directory (`config.json` + rootfs).
    pub bundle: PathBuf,
    /// The shim's state directory (`state.json`, `shim.log`); must not hold a `state.json` yet.
    pub state_dir: PathBuf,
    /// The container's CRI log file.
    pub log_path: PathBuf,
    /// libcontainer's state root.
    pub root: PathBuf,
    /// How long to wait for the container to be running (or to have failed to start).
    pub start_timeout: Duration,
    /// The container's stdio as attach serves it: Kubernetes `stdin`, `stdinOnce`, `tty`.
    pub stdio: ContainerStdio,
}

/// How the shim sets up a container's stdio (see [`crate::attach`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStdio {
    /// Keep the container's stdin open for attached clients (else it reads EOF at once).
    pub stdin: bool,
    /// Close it when the first attached client's stdin ends (not on a terminal, as containerd).
    pub stdin_once: bool,
    /// Run the container on a terminal (the bundle's `process.terminal` must be set too).
    pub tty: bool,
}

/// A started shim: its state directory and the record seen when the start was confirmed.
#[derive(Debug, Clone)]
pub struct ShimHandle {
    /// The shim's state directory.
    pub state_dir: PathBuf,
    /// `state.json` as read when the container was seen running (or already exited).
    pub state: ShimState,
}

impl ShimHandle {
    /// Re-reads `state.json`.
    pub fn state(&self) -> io::Result<ShimState> {
        read_state(&self.state_dir)
    }
}

/// Starts a shim for one container and waits until it is running or has exited.
///
/// Errors: `AlreadyExists` if the state directory already has a record, `TimedOut` if the
/// container is not running within `start_timeout`, and `Other` with libcontainer's message if
/// the container failed to start (its `state.json` then says `StartError`).
///
/// The supervisor is started through a short-lived launcher process that exits at once, so it
/// is re-parented to init and the caller has no child to reap. A caller that reaps its children
/// (the agent: tokio reaps dropped children) uses [`spawn_shim_with`] instead and saves the
/// launcher's exec (about 2 ms of every container start).
pub fn spawn_shim(cfg: &ShimConfig) -> io::Result<ShimHandle> {
    let launch = |mut cmd: Command| -> io::Result<()> {
        // The launcher exits as soon as the supervisor is spawned; `output` also proves that
        // the supervisor does not hold our pipes (it would block here otherwise).
        let out = cmd.stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "shim launcher failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    };
    start(cfg, true, launch)
}

/// [`spawn_shim`], but the supervisor is the caller's own child: `spawn` receives its command
/// (stdio set up: null, null, the shim's diagnostics log) and must start it without waiting
/// for it, and reap it once it exits (it lives as long as the container).
pub fn spawn_shim_with(
    cfg: &ShimConfig,
    spawn: impl FnOnce(Command) -> io::Result<()>,
) -> io::Result<ShimHandle> {
    start(cfg, false, spawn)
}

fn start(
    cfg: &ShimConfig,
    launcher: bool,
    spawn: impl FnOnce(Command) -> io::Result<()>,
) -> io::Result<ShimHandle> {
    std::fs::create_dir_all(&cfg.state_dir)?;
    if state::state_path(&cfg.state_dir).exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already has a shim record", cfg.state_dir.display()),
        ));
    }
    let abs = |p: &Path| std::path::absolute(p);
    let sup = SupervisorArgs {
        id: cfg.id.clone(),
        bundle: abs(&cfg.bundle)?,
        state_dir: abs(&cfg.state_dir)?,
        log_path: abs(&cfg.log_path)?,
        root: abs(&cfg.root)?,
        prefix: cfg.reexec.prefix.clone(),
        stdin: cfg.stdio.stdin,
        stdin_once: cfg.stdio.stdin_once,
        tty: cfg.stdio.tty,
    };
    let mut cmd = Command::new(&cfg.reexec.exe);
    cmd.args(&cfg.reexec.prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if launcher {
        cmd.args(ShimArgs::Launch(sup).to_args());
    } else {
        // What the launcher sets up for the supervisor it starts (supervisor::spawn_detached).
        let diag = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cfg.state_dir.join(SHIM_LOG_FILE))?;
        cmd.args(ShimArgs::Run(sup).to_args())
            .stderr(diag)
            .current_dir("/");
    }
    spawn(cmd)?;
    let deadline = Instant::now() + cfg.start_timeout;
    let state = wait_for(&cfg.state_dir, deadline, |s| s.status != Status::Created)
        .map_err(|e| add_shim_log(e, &cfg.state_dir))?;
    if state.reason == Some(Reason::StartError) {
        return Err(io::Error::other(format!(
            "container {} failed to start: {}",
            cfg.id, state.message
        )));
    }
    Ok(ShimHandle {
        state_dir: cfg.state_dir.clone(),
        state,
    })
}

fn add_shim_log(e: io::Error, state_dir: &Path) -> io::Error {
    let log = std::fs::read_to_string(state_dir.join(SHIM_LOG_FILE)).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("; ");
    if tail.is_empty() {
        e
    } else {
        io::Error::new(e.kind(), format!("{e} (shim log: {tail})"))
    }
}

/// Wakes a waiter when `state.json` is replaced (the shim writes it by rename), so a change is
/// seen at once instead of at the next poll; `None` (no inotify instance left) means polling.
struct StateWatch(nix::sys::inotify::Inotify);

impl StateWatch {
    fn new(state_dir: &Path) -> Option<StateWatch> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        ino.add_watch(
            state_dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .ok()?;
        Some(StateWatch(ino))
    }

    /// Sleeps until the directory changes or `pause` passes.
    fn wait(&self, pause: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = u16::try_from(pause.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0) {
            while self.0.read_events().is_ok_and(|evs| !evs.is_empty()) {}
        }
    }
}

/// Waits until `state.json` satisfies `cond` or `deadline` passes (`TimedOut`, with the last
/// state). Woken by inotify when the record is replaced; also re-reads it every 50 ms at most
/// (20 ms when inotify is unavailable) to notice a shim that died without recording anything.
pub fn wait_for(
    state_dir: &Path,
    deadline: Instant,
    mut cond: impl FnMut(&ShimState) -> bool,
) -> io::Result<ShimState> {
    let watch = StateWatch::new(state_dir);
    let mut pause = Duration::from_millis(1);
    let mut last = None;
    loop {
        match read_state(state_dir) {
            Ok(s) if cond(&s) => return Ok(s),
            Ok(s) => {
                // A shim that died without recording an exit will never satisfy anything new.
                if s.status != Status::Exited
                    && !sys::is_same_process(s.shim_pid, s.shim_start_time)
                {
                    if let Ok(s) = read_state(state_dir) {
                        if cond(&s) {
                            return Ok(s);
                        }
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!(
                            "shim {} exited without recording the container's exit",
                            s.shim_pid
                        ),
                    ));
                }
                last = Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A torn read cannot happen (rename), but a record being replaced can vanish briefly.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out waiting for {}: last state {:?}",
                    state_dir.display(),
                    last.map(|s| s.status)
                ),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match &watch {
            Some(w) => {
                w.wait(Duration::from_millis(50).min(left));
            }
            None => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// How long [`stop`] waits for the shim to record the exit after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Exit code recorded by [`stop`] when the shim died before recording the container's exit.
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// Stops the container of a shim: `signal` to its init, up to `grace` for it to exit, then
/// SIGKILL to every process of its cgroups, then waits for the shim to record the exit.
///
/// Idempotent: a container that already exited returns its record at once. The init is only
/// signalled while its pid still has the start time recorded in `state.json`, so a reused pid is
/// never hit. If the shim itself is gone (it was killed), the processes are killed all the same
/// and the record is completed here with exit code [`UNKNOWN_EXIT_CODE`].
///
/// Blocks its thread for up to `grace` + [`KILL_WAIT`]. An async caller that must not hold a
/// thread while waiting uses the steps instead: [`stop_signal`]; then, if it was sent, waits
/// up to the grace for the shim to exit (it exits right after recording the exit: a pidfd),
/// [`stop_check`] after a wake-up; then [`stop_kill`] every [`KILL_STEP`] up to [`KILL_WAIT`].
pub fn stop(state_dir: &Path, signal: Signal, grace: Duration) -> io::Result<ShimState> {
    let exited = |s: &ShimState| s.is_exited();
    match stop_signal(state_dir, signal)? {
        StopSignal::Exited(s) => return Ok(s),
        StopSignal::NoInit => {}
        StopSignal::Sent => match wait_for(state_dir, Instant::now() + grace, exited) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return finish_orphan(state_dir),
            Err(e) => return Err(e),
        },
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        if let Some(s) = stop_kill(state_dir)? {
            return Ok(s);
        }
        let step = (Instant::now() + KILL_STEP).min(deadline);
        match wait_for(state_dir, step, exited) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() < deadline => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return finish_orphan(state_dir),
            Err(e) => return Err(e),
        }
    }
}

/// How often [`stop`] repeats SIGKILL (to processes forked meanwhile) while it waits for the
/// exit record.
pub const KILL_STEP: Duration = Duration::from_millis(200);

/// What [`stop_signal`] did.
#[derive(Debug)]
pub enum StopSignal {
    /// The container had exited (or its shim was gone: the orphan was killed and an unknown
    /// exit recorded): the record.
    Exited(ShimState),
    /// The signal was sent to the init: wait up to the grace period for the exit.
    Sent,
    /// No init yet (being created): no grace, go on with [`stop_kill`].
    NoInit,
}

/// First step of [`stop`]: sends `signal` to the container's init unless the container already
/// exited or has no init yet. Quick: never waits.
pub fn stop_signal(state_dir: &Path, signal: Signal) -> io::Result<StopSignal> {
    let st = read_state(state_dir)?;
    if st.is_exited() {
        return Ok(StopSignal::Exited(st));
    }
    if st.pid <= 0 {
        return Ok(StopSignal::NoInit);
    }
    sys::signal_process(st.pid, st.pid_start_time, signal)?;
    Ok(match stop_check(state_dir)? {
        Some(s) => StopSignal::Exited(s),
        None => StopSignal::Sent,
    })
}

/// The record if the container has exited, or, if its shim is gone without recording the
/// exit, the orphan killed and an unknown exit recorded ([`UNKNOWN_EXIT_CODE`]); `None` while
/// the shim still supervises a running container. Quick: never waits.
pub fn stop_check(state_dir: &Path) -> io::Result<Option<ShimState>> {
    let st = read_state(state_dir)?;
    if st.is_exited() {
        return Ok(Some(st));
    }
    if !shim_alive(&st) {
        // The shim records the exit before it exits: read once more before deciding.
        let st = read_state(state_dir)?;
        if st.is_exited() {
            return Ok(Some(st));
        }
        return finish_orphan(state_dir).map(Some);
    }
    Ok(None)
}

/// The end of the grace period in [`stop`]: SIGKILL to the init and to every process of the
/// container's cgroups, then as [`stop_check`]. Repeat it every [`KILL_STEP`] until the
/// record says exited (up to [`KILL_WAIT`]). Quick: never waits.
pub fn stop_kill(state_dir: &Path) -> io::Result<Option<ShimState>> {
    let st = read_state(state_dir)?;
    if st.is_exited() {
        return Ok(Some(st));
    }
    if st.pid > 0 {
        let _ = sys::signal_process(st.pid, st.pid_start_time, Signal::SIGKILL);
    }
    sys::kill_cgroups(&st.cgroup_dirs);
    stop_check(state_dir)
}

/// The shim died before recording the exit: kill what is left and record an unknown exit.
fn finish_orphan(state_dir: &Path) -> io::Result<ShimState> {
    let mut st = read_state(state_dir)?;
    if st.is_exited() {
        return Ok(st);
    }
    let _ = sys::signal_process(st.pid, st.pid_start_time, Signal::SIGKILL);
    sys::kill_cgroups(&st.cgroup_dirs);
    st.status = Status::Exited;
    st.exit_code = Some(UNKNOWN_EXIT_CODE);
    st.reason = Some(Reason::Error);
    st.finished_at = Some(state::now_rfc3339());
    st.message = "the shim exited without recording the container's exit".into();
    write_state(state_dir, &st)?;
    Ok(st)
}

/// Whether the shim of this record is still alive (pid and start time match).
pub fn shim_alive(state: &ShimState) -> bool {
    sys::is_same_process(state.shim_pid, state.shim_start_time)
}

/// Whether the container's init of this record is still alive (pid and start time match).
pub fn init_alive(state: &ShimState) -> bool {
    sys::is_same_process(state.pid, state.pid_start_time)
}
