//! The shim process: creates, starts, logs, reaps and records one container.
//!
//! This is the only module that calls libcontainer. It runs in a process of its own that must be
//! single-threaded (libcontainer forks with a raw `clone3`, so a lock held by another thread at
//! that moment stays locked forever in the child; see the runtime notes), and that outlives the
//! agent: `launch` re-execs the binary as `run` with its stdio on `/dev/null` and its stderr
//! on the state directory's `shim.log`, then exits, so the supervisor is re-parented to init
//! (or the nearest subreaper) and never holds the agent's stdio.
//!
//! The supervisor:
//! 1. calls `setsid` (no controlling terminal, not in the agent's process group), becomes a child
//!    subreaper, and writes a first `state.json`;
//! 2. creates pipes for the container's stdout and stderr (never `/dev/null`: libcontainer
//!    reopens a host `/dev/null` stdio read-only inside the container) and a pipe as stdin, whose
//!    write end it keeps for attached clients with `stdin` (Kubernetes `stdin`) and closes at
//!    once otherwise (the container reads EOF); with `tty`, instead, the container's init makes
//!    a terminal in the container's devpts and sends its master over a console socket
//!    (libcontainer's `--console-socket`, as runc does for containerd), and the shim keeps the
//!    master: output is read from it (logged as stdout), stdin written to it. It also binds the
//!    attach socket ([`crate::attach`]) before the container starts;
//! 3. forks a creator child, which creates the container (`ContainerBuilder ... as_init(bundle)
//!    .with_systemd(false).with_detach(true).build()`), records `created` with the init's pid,
//!    its start time and its cgroup directories, starts it, records `running` and exits: the
//!    code and heap libcontainer used are never part of the long-lived supervisor (which saves
//!    the re-exec of the binary this step used to end with, ~2 ms of CPU per start here). The
//!    init, the creator's child, is re-parented to the supervisor, a subreaper, as the creator
//!    exits;
//! 4. sets up everything its loop needs, drops the start-up code from its resident set
//!    ([`sys::trim_clean_file_mappings`]), then
//!    loops on `poll(2)` over the two pipes (or the terminal), a `signalfd` (SIGCHLD, SIGUSR1 to
//!    reopen the log file after rotation; SIGTERM, SIGINT and SIGHUP are swallowed, so only the
//!    container's exit ends the shim) and the attach socket and its clients, writing CRI log
//!    records and copying output to attached clients, never waiting on one. Without attached
//!    clients the loop allocates nothing and calls as little code as it can: its resident memory is mostly the pages of code it touches, and the kernel
//!    maps a file's pages back a whole page-cache folio (up to 128 KiB or more) at a time;
//! 5. when the init exits (it is the shim's own child since the creator exited: libcontainer
//!    clones it with `CLONE_PARENT` from its intermediate process, whose parent is the
//!    creator), kills whatever is
//!    left in the container's cgroups, drains the pipes, closes the attached clients and removes
//!    the attach socket, reads the OOM counter, records
//!    `exited` with the exit code (128 + signal when killed) and reason, deletes the libcontainer
//!    container (its state directory and cgroups) and exits 0.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, pipe2, setsid, Pid};

use crate::args::{MonitorArgs, ShimArgs, SupervisorArgs};
use crate::attach::{AttachServer, Interest, ATTACH_SOCKET, MAX_CLIENTS};
use crate::crilog::{open_log, LineSplitter, Stream, Timestamp};
use crate::exec::{EXEC_SOCKET, MAX_SHIM_EXECS};
use crate::state::{now_rfc3339, write_state, Reason, ShimState, Status, SHIM_LOG_FILE};
use crate::sys;

/// Exit code recorded when the container could not be started (containerd records 128 too).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// `launch` mode: start the supervisor detached from the caller, then exit.
pub(crate) fn launch(args: SupervisorArgs) -> ExitCode {
    match spawn_detached(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("staticlet-shim launch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn spawn_detached(args: SupervisorArgs) -> io::Result<()> {
    fs::create_dir_all(&args.state_dir)?;
    let diag = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.state_dir.join(SHIM_LOG_FILE))?;
    let prefix = args.prefix.clone();
    let mut child = Command::new(self_exe())
        .args(&prefix)
        .args(ShimArgs::Run(args).to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(diag)
        .current_dir("/")
        .spawn()?;
    // Not waited for: this process exits now and the supervisor is re-parented. `try_wait` only
    // catches a supervisor that could not even run.
    if let Ok(Some(status)) = child.try_wait() {
        return Err(io::Error::other(format!(
            "supervisor exited at once: {status}"
        )));
    }
    Ok(())
}

/// `run` mode: supervise one container until it exits.
pub(crate) fn run(args: SupervisorArgs) -> ExitCode {
    // A long-lived process must not pin the agent's (or cargo's) inherited descriptors, such as
    // the write end of a pipe someone waits on for EOF.
    sys::close_inherited_fds();
    // Not fatal: fails only if we already lead a process group (e.g. started by hand).
    let _ = setsid();
    // The container's init comes to us when the creator child exits, and so do orphaned
    // processes of a container without its own pid namespace: both are reaped here.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let me = getpid().as_raw();
    let state = ShimState::new(&args.id, me, sys::pid_start_time(me).unwrap_or(0));
    if let Err(e) =
        fs::create_dir_all(&args.state_dir).and_then(|()| write_state(&args.state_dir, &state))
    {
        eprintln!("staticlet-shim {}: cannot write state: {e}", args.id);
        return ExitCode::FAILURE;
    }
    let (state, started) = match start(&args, &state) {
        Ok(s) => s,
        Err(StartFailure { state, message }) => {
            let state = state.map_or_else(|| state_of(&args, me), |s| *s);
            return fail_start(&args, state, message);
        }
    };
    let monitor = match Monitor::prepare(&args, state, started) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // This process never ran libcontainer (its creator child did); what start-up touched and
    // the loop never runs again leaves the resident set here.
    sys::trim_clean_file_mappings();
    monitor.run()
}

/// The supervisor's own first record, again (when the created one cannot be read back).
fn state_of(args: &SupervisorArgs, me: i32) -> ShimState {
    ShimState::new(&args.id, me, sys::pid_start_time(me).unwrap_or(0))
}

/// Records a container that could not be started: kills and reaps its init if there is one,
/// deletes what libcontainer left, removes the sockets and writes the exit record.
fn fail_start(args: &SupervisorArgs, mut state: ShimState, message: String) -> ExitCode {
    eprintln!("staticlet-shim {}: start failed: {message}", args.id);
    // The init may exist (created, not started): kill it and reap it before cleanup. (Its start
    // time guards against a reused pid; if it is not our child, waitpid returns at once.)
    if state.pid > 0 {
        let _ = sys::signal_process(state.pid, state.pid_start_time, Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(state.pid), Some(WaitPidFlag::__WALL));
    }
    delete_container(&args.root, &args.id);
    for socket in [ATTACH_SOCKET, EXEC_SOCKET, CONSOLE_SOCKET] {
        let _ = fs::remove_file(args.state_dir.join(socket));
    }
    state.status = Status::Exited;
    state.exit_code = Some(START_ERROR_EXIT_CODE);
    state.reason = Some(Reason::StartError);
    state.message = message;
    state.finished_at = Some(now_rfc3339());
    match write_state(&args.state_dir, &state) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Why a container did not start, with the record to finish (if one could be read back).
struct StartFailure {
    state: Option<Box<ShimState>>,
    message: String,
}

/// At most this much of a creator's error message is reported (one pipe write, never blocking).
const REPORT_MAX: usize = 4096;

/// Creates and starts the container from a forked child (the creator), so that libcontainer's
/// code and heap are never part of this long-lived process, without exec'ing the binary again.
///
/// Before the fork the supervisor binds the attach (and console) socket and makes the stdio
/// pipes; the creator builds and starts the container with the container's ends, records
/// `created` (the init's pid, start time and cgroups) and `running`, and exits. The init was
/// cloned with `CLONE_PARENT` by libcontainer's intermediate process, so it is the creator's
/// child: when the creator exits it is re-parented to this process, the nearest subreaper
/// (before the creator becomes waitable), alive or as a zombie with its exit status. Returns
/// the `running` record and the supervisor's ends of the stdio, or the record to finish (if one
/// was read) and why the start failed.
fn start(args: &SupervisorArgs, state: &ShimState) -> Result<(ShimState, Started), StartFailure> {
    let bare = |message: String| StartFailure {
        state: None,
        message,
    };
    fs::create_dir_all(&args.root).map_err(|e| bare(format!("create {:?}: {e}", args.root)))?;
    let attach = crate::attach::bind(&args.state_dir, ATTACH_SOCKET)
        .map_err(|e| bare(format!("attach socket: {e}")))?;
    let exec = crate::attach::bind(&args.state_dir, EXEC_SOCKET)
        .map_err(|e| bare(format!("exec socket: {e}")))?;
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| bare(format!("pipe: {e}")));
    let (console, container_stdio, kept) = if args.tty {
        let console = crate::attach::bind(&args.state_dir, CONSOLE_SOCKET)
            .map_err(|e| bare(format!("console socket: {e}")))?;
        (Some(console), None, None)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w) = pipe()?;
        // Without `stdin` the write end is closed now, so the container reads EOF.
        let in_w = args.stdin.then_some(in_w);
        (None, Some((in_r, out_w, err_w)), Some((out_r, err_r, in_w)))
    };
    let (report_r, report_w) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| bare(format!("pipe: {e}")))?;
    let creator =
        sys::fork_child(
            move || match create_and_start(args, state.clone(), container_stdio) {
                Ok(()) => 0,
                Err(message) => {
                    let mut end = message.len().min(REPORT_MAX);
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    let _ = nix::unistd::write(&report_w, &message.as_bytes()[..end]);
                    1
                }
            },
        )
        .map_err(|e| bare(format!("fork the creator: {e}")))?;
    // The container's ends of the pipes and the report's write end went with the closure.
    let status = loop {
        match waitpid(creator, Some(WaitPidFlag::__WALL)) {
            Err(Errno::EINTR) => {}
            other => break other,
        }
    };
    let mut report = vec![0u8; REPORT_MAX];
    let n = nix::unistd::read(report_r.as_raw_fd(), &mut report).unwrap_or(0);
    report.truncate(n);
    let report = String::from_utf8_lossy(&report).into_owned();
    // The creator's records (created: the init's pid; running), read back.
    let state = crate::state::read_state(&args.state_dir);
    let failed = |state: io::Result<ShimState>, message: String| StartFailure {
        state: state.ok().map(Box::new),
        message,
    };
    match status {
        Ok(WaitStatus::Exited(_, 0)) => {}
        Ok(WaitStatus::Exited(..)) if !report.is_empty() => return Err(failed(state, report)),
        Ok(other) => {
            return Err(failed(
                state,
                format!("the container's creator ended: {other:?} {report}"),
            ))
        }
        Err(e) => return Err(failed(state, format!("wait for the creator: {e}"))),
    }
    let state = match state {
        Ok(s) if s.status == Status::Running => s,
        Ok(s) => {
            let message = "the creator recorded no running container".into();
            return Err(failed(Ok(s), message));
        }
        Err(e) => return Err(bare(format!("read the creator's record: {e}"))),
    };
    let stdio = match (console, kept) {
        (Some(console), _) => {
            let master = receive_master(&console);
            let _ = fs::remove_file(args.state_dir.join(CONSOLE_SOCKET));
            master.map(|m| (m, None, None))
        }
        (None, Some((out_r, err_r, in_w))) => Ok((out_r, Some(err_r), in_w)),
        (None, None) => Err("no stdio for the container".to_string()),
    };
    let (stdout, stderr, stdin) = stdio.map_err(|m| failed(Ok(state.clone()), m))?;
    Ok((
        state,
        Started {
            stdout,
            stderr,
            stdin,
            attach,
            exec: Some(exec),
        },
    ))
}

/// The creator (a forked child of the supervisor): builds the container with its ends of the
/// stdio pipes (none on a terminal: the init sends the master over the console socket the
/// supervisor listens on), records `created`, starts it and records `running`. On failure it
/// kills and reaps an init it created (its own child), and says why.
fn create_and_start(
    args: &SupervisorArgs,
    mut state: ShimState,
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
) -> Result<(), String> {
    let builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.root)
        .and_then(|b| b.validate_id())
        .map_err(|e| format!("container {}: {e}", args.id))?;
    let builder = match stdio {
        Some((in_r, out_w, err_w)) => builder
            .with_stdin(in_r)
            .with_stdout(out_w)
            .with_stderr(err_w),
        None => builder.with_console_socket(Some(args.state_dir.join(CONSOLE_SOCKET))),
    };
    let mut container = builder
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container: {}", error_chain(&e)))?;
    let pid = container
        .pid()
        .ok_or("created container has no pid")?
        .as_raw();
    let result = (|| {
        state.pid = pid;
        state.pid_start_time = sys::pid_start_time(pid).map_err(|e| format!("init {pid}: {e}"))?;
        state.cgroup_dirs = sys::own_cgroup_dirs(pid).unwrap_or_default();
        state.created_at = Some(now_rfc3339());
        write_state(&args.state_dir, &state).map_err(|e| format!("write state: {e}"))?;
        container
            .start()
            .map_err(|e| format!("start container: {}", error_chain(&e)))?;
        state.status = Status::Running;
        state.started_at = Some(now_rfc3339());
        write_state(&args.state_dir, &state).map_err(|e| format!("write state: {e}"))
    })();
    if result.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
    }
    result
}

/// The path of the running binary: the real one (so `ps` shows its name) or /proc/self/exe if
/// it was replaced on disk since it started.
fn self_exe() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| "/proc/self/exe".into())
}

/// `monitor` mode: the supervisor of an earlier version after its re-exec, given the
/// container's output pipes. Supervisors no longer re-exec (their creator child runs
/// libcontainer); the mode stays for one that started a container while a package upgrade
/// replaced the binary: it re-execs the new binary into this mode.
pub(crate) fn monitor(args: MonitorArgs) -> ExitCode {
    let sup = args.supervisor;
    let adopt_all = || -> io::Result<Started> {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )?;
        // A duplicate of our own inherited descriptor, owned, then the inherited number is
        // closed: no raw descriptor has to be adopted with `unsafe`. (Reopening through
        // /proc/self/fd would do for pipes, but would open a new terminal for a master.)
        let adopt = |fd: i32| -> io::Result<OwnedFd> {
            let owned = rustix::process::pidfd_getfd(
                &pidfd,
                fd,
                rustix::process::PidfdGetfdFlags::empty(),
            )?;
            let _ = nix::unistd::close(fd);
            Ok(owned)
        };
        Ok(Started {
            stdout: adopt(args.stdout_fd)?,
            stderr: args.stderr_fd.map(adopt).transpose()?,
            stdin: args.stdin_fd.map(adopt).transpose()?,
            attach: UnixListener::from(adopt(args.attach_fd)?),
            // A supervisor of an earlier version bound none (its agent execs helpers).
            exec: None,
        })
    };
    let started = match adopt_all() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("staticlet-shim {}: monitor descriptors: {e}", sup.id);
            return ExitCode::FAILURE;
        }
    };
    let state = match crate::state::read_state(&sup.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("staticlet-shim {}: monitor state: {e}", sup.id);
            return ExitCode::FAILURE;
        }
    };
    let monitor = match Monitor::prepare(&sup, state, started) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // Start-up (std, argument parsing, reading the state, the set-up above) touched code the
    // loop never runs again: from here on only the loop's own pages are resident.
    sys::trim_clean_file_mappings();
    monitor.run()
}

/// The container's stdio as the shim holds it once the container runs.
struct Started {
    /// The read end of its stdout pipe, or the terminal's master.
    stdout: OwnedFd,
    /// The read end of its stderr pipe (none on a terminal).
    stderr: Option<OwnedFd>,
    /// The write end of its stdin pipe (with `stdin`, without a terminal).
    stdin: Option<OwnedFd>,
    /// The attach socket.
    attach: UnixListener,
    /// The exec socket ([`EXEC_SOCKET`]).
    exec: Option<UnixListener>,
}

/// The console socket's name in the state directory (only while the container is created).
const CONSOLE_SOCKET: &str = "console.sock";

/// Receives the terminal master the container's init sends over the console socket.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    // The init connected while libcontainer created the container: the connection is waiting.
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(10_000u16)) {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err("no connection on the console socket".into()),
        Err(e) => return Err(format!("console socket: {e}")),
    }
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    conn.set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut name = [0u8; 4096];
    rustix::net::recvmsg(
        &conn,
        &mut [io::IoSliceMut::new(&mut name)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    let master = cmsg.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    master.ok_or_else(|| "the console socket carried no terminal".to_string())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// One of the container's output pipes and its line splitter.
struct Pipe {
    fd: Option<File>,
    lines: LineSplitter,
}

impl Pipe {
    fn new(fd: OwnedFd, stream: Stream) -> io::Result<Self> {
        fcntl_nonblock(&fd)?;
        Ok(Self {
            fd: Some(File::from(fd)),
            lines: LineSplitter::new(stream),
        })
    }

    /// Reads what is available (all of it when `drain`), logs it and copies it to the attached
    /// clients; closes the pipe at EOF.
    fn pump(&mut self, log: &mut File, buf: &mut [u8], drain: bool, attach: &mut AttachServer) {
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        loop {
            // read(2) itself rather than std's `Read for File`, whose code is elsewhere in the
            // binary: the loop touches as few pages as it can.
            match nix::unistd::read(fd, buf).map_err(io::Error::from) {
                Ok(0) => {
                    let _ = self.lines.finish(log, &mut Timestamp::now);
                    self.fd = None;
                    return;
                }
                Ok(n) => {
                    if let Err(e) = self.lines.feed(&buf[..n], log, &mut Timestamp::now) {
                        eprintln!("staticlet-shim: write log: {e}");
                    }
                    attach.broadcast(self.lines.stream(), &buf[..n]);
                    if !drain && n < buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A terminal's master reads EIO once no process has the terminal open.
                Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => {
                    let _ = self.lines.finish(log, &mut Timestamp::now);
                    self.fd = None;
                    return;
                }
                Err(e) => {
                    eprintln!("staticlet-shim: read pipe: {e}");
                    self.fd = None;
                    return;
                }
            }
        }
    }

    /// Writes a pending unterminated line and stops reading.
    fn close(&mut self, log: &mut File) {
        if self.fd.take().is_some() {
            let _ = self.lines.finish(log, &mut Timestamp::now);
        }
    }
}

fn fcntl_nonblock(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every child that has exited (exec children are forgotten by `execs`); returns the
/// init's exit code if it was among them.
fn reap(init: Pid, execs: &mut Execs) -> Option<i32> {
    let mut init_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return init_code,
            Ok(status) => match status.pid() {
                Some(pid) if pid == init => init_code = exit_code_of(status).or(init_code),
                Some(pid) => execs.reaped(pid.as_raw()),
                None => {}
            },
            Err(Errno::EINTR) => {}
            Err(_) => return init_code,
        }
    }
}

/// The exec socket and the children that serve its connections (see [`EXEC_SOCKET`]).
struct Execs {
    /// None in a supervisor started by an earlier version, and once the container exited.
    listener: Option<UnixListener>,
    /// Pids of the children still running (the first `count`).
    children: [i32; MAX_SHIM_EXECS],
    count: usize,
}

impl Execs {
    fn new(listener: Option<UnixListener>) -> Self {
        Self {
            listener,
            children: [0; MAX_SHIM_EXECS],
            count: 0,
        }
    }

    /// Takes every waiting connection: each is served by a child forked for it (which reads
    /// the request, so no client can hold up the loop), or closed when
    /// [`MAX_SHIM_EXECS`] children run already.
    fn accept(&mut self, state: &ShimState) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.count == MAX_SHIM_EXECS {
                eprintln!("staticlet-shim: exec refused: {MAX_SHIM_EXECS} running");
                continue;
            }
            let (pid, start_time, cgroups) = (state.pid, state.pid_start_time, &state.cgroup_dirs);
            match sys::fork_child(move || crate::exec::serve_exec(conn, pid, start_time, cgroups)) {
                Ok(child) => {
                    self.children[self.count] = child.as_raw();
                    self.count += 1;
                }
                Err(e) => eprintln!("staticlet-shim: exec: fork: {e}"),
            }
        }
    }

    /// Forgets a reaped child (if it was one of ours).
    fn reaped(&mut self, pid: i32) {
        if let Some(i) = self.children[..self.count].iter().position(|&p| p == pid) {
            self.count -= 1;
            self.children[i] = self.children[self.count];
        }
    }

    /// No more execs (the container exited); those running finish on their own.
    fn close(&mut self, dir: &Path) {
        if self.listener.take().is_some() {
            let _ = fs::remove_file(dir.join(EXEC_SOCKET));
        }
    }
}

/// Size of the buffer the container's output is read into (a pipe holds 64 KiB).
const READ_BUF: usize = 16 * 1024;

/// The supervisor's loop and everything it needs, set up before the loop starts (so that the
/// monitor can drop the set-up code from its resident set before entering it).
struct Monitor<'a> {
    args: &'a SupervisorArgs,
    state: ShimState,
    init: Pid,
    sfd: SignalFd,
    log: File,
    out: Pipe,
    /// Closed from the start on a terminal (one stream).
    err: Pipe,
    attach: AttachServer,
    execs: Execs,
    buf: Box<[u8]>,
    /// The init's exit code, once it has been reaped.
    exit_code: Option<i32>,
}

/// What one slot of the poll set is.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Signal,
    Out,
    Err,
    Exec,
    Attach(Interest),
}

/// Slots of the poll set: the signalfd, two output pipes, the exec listener, the attach
/// listener, the container's stdin and the clients.
const SLOTS: usize = 6 + MAX_CLIENTS;

impl<'a> Monitor<'a> {
    /// Routes the signals to a `signalfd`, opens the log and prepares the pipes.
    fn prepare(
        args: &'a SupervisorArgs,
        state: ShimState,
        started: Started,
    ) -> Result<Self, ExitCode> {
        let Started {
            stdout,
            stderr,
            stdin,
            attach,
            exec,
        } = started;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            eprintln!("staticlet-shim {}: {what}: {e}", args.id);
            ExitCode::FAILURE
        };
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGUSR1,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block().map_err(|e| fail("block signals", &e))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| fail("signalfd", &e))?;
        let log = open_log(&args.log_path).map_err(|e| fail("open log", &e))?;
        // On a terminal the master is the container's stdin too, and what is resized.
        let (stdin, terminal) = if args.tty {
            let dup = || rustix::io::fcntl_dupfd_cloexec(&stdout, 0);
            let terminal = dup().map_err(|e| fail("terminal", &e))?;
            let stdin = if args.stdin {
                Some(dup().map_err(|e| fail("terminal", &e))?)
            } else {
                None
            };
            (stdin, Some(terminal))
        } else {
            (stdin, None)
        };
        let attach = AttachServer::new(attach, stdin, args.stdin_once, terminal)
            .map_err(|e| fail("attach socket", &e))?;
        let out = Pipe::new(stdout, Stream::Stdout).map_err(|e| fail("pipe", &e))?;
        let err = match stderr {
            Some(fd) => Pipe::new(fd, Stream::Stderr).map_err(|e| fail("pipe", &e))?,
            None => Pipe {
                fd: None,
                lines: LineSplitter::new(Stream::Stderr),
            },
        };
        let init = Pid::from_raw(state.pid);
        let mut execs = Execs::new(exec);
        Ok(Self {
            args,
            init,
            // The init may have exited before SIGCHLD was blocked and routed to the signalfd.
            exit_code: reap(init, &mut execs),
            execs,
            state,
            sfd,
            log,
            out,
            err,
            attach,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
        })
    }

    /// Logs the container's output (and copies it to attached clients) until its init exits,
    /// then records the exit and cleans up.
    ///
    /// Without attached clients the loop allocates nothing: a record is timestamped into a
    /// stack buffer and written straight from the read buffer.
    fn run(self) -> ExitCode {
        let Monitor {
            args,
            mut state,
            init,
            sfd,
            mut log,
            mut out,
            mut err,
            mut attach,
            mut execs,
            mut buf,
            mut exit_code,
        } = self;
        while exit_code.is_none() {
            let mut slots = [Slot::Signal; SLOTS];
            let mut ready = [(false, false); SLOTS];
            let n = {
                let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN); SLOTS];
                let mut n = 1;
                for (slot, p) in [(Slot::Out, &out), (Slot::Err, &err)] {
                    if let Some(f) = p.fd.as_ref() {
                        fds[n] = PollFd::new(f.as_fd(), PollFlags::POLLIN);
                        slots[n] = slot;
                        n += 1;
                    }
                }
                if let Some(l) = execs.listener.as_ref() {
                    fds[n] = PollFd::new(l.as_fd(), PollFlags::POLLIN);
                    slots[n] = Slot::Exec;
                    n += 1;
                }
                attach.interests(|fd, what| {
                    if n == SLOTS {
                        return;
                    }
                    let flags = match what {
                        Interest::Listener => PollFlags::POLLIN,
                        Interest::Stdin => PollFlags::POLLOUT,
                        Interest::Client { read, write, .. } => {
                            let mut f = PollFlags::empty();
                            f.set(PollFlags::POLLIN, read);
                            f.set(PollFlags::POLLOUT, write);
                            f
                        }
                    };
                    fds[n] = PollFd::new(fd, flags);
                    slots[n] = Slot::Attach(what);
                    n += 1;
                });
                match poll(&mut fds[..n], PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        eprintln!("staticlet-shim {}: poll: {e}", args.id);
                        return ExitCode::FAILURE;
                    }
                }
                for (r, f) in ready.iter_mut().zip(&fds[..n]) {
                    let ev = f.revents().unwrap_or(PollFlags::empty());
                    *r = (
                        !ev.is_empty(),
                        ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR),
                    );
                }
                n
            };
            let (mut signalled, mut exec_waiting) = (false, false);
            for i in 0..n {
                let (any, hup) = ready[i];
                if !any {
                    continue;
                }
                match slots[i] {
                    Slot::Signal => signalled = true,
                    Slot::Out => out.pump(&mut log, &mut buf, false, &mut attach),
                    Slot::Err => err.pump(&mut log, &mut buf, false, &mut attach),
                    Slot::Exec => exec_waiting = true,
                    Slot::Attach(what) => attach.ready(what, hup),
                }
            }
            attach.sweep();
            if signalled {
                let mut child_exited = false;
                while let Ok(Some(info)) = sfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => child_exited = true,
                        Ok(Signal::SIGUSR1) => match open_log(&args.log_path) {
                            Ok(f) => log = f,
                            Err(e) => eprintln!("staticlet-shim {}: reopen log: {e}", args.id),
                        },
                        _ => {}
                    }
                }
                if child_exited {
                    exit_code = reap(init, &mut execs);
                }
            }
            // After the reaping: an exec child that ended frees its slot before the next
            // connection is counted (its client may connect again as soon as it has the code).
            if exec_waiting && exit_code.is_none() {
                execs.accept(&state);
            }
        }
        let exit_code = exit_code.unwrap_or(START_ERROR_EXIT_CODE);
        let finished_at = now_rfc3339();
        execs.close(&args.state_dir);

        // Whatever the init left behind in its cgroups (a container without its own pid
        // namespace) dies with it, as with runc's `delete --force`; then the pipes reach EOF.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sys::kill_cgroups(&state.cgroup_dirs) > 0 && Instant::now() < deadline {
            out.pump(&mut log, &mut buf, true, &mut attach);
            err.pump(&mut log, &mut buf, true, &mut attach);
            let _ = reap(init, &mut execs);
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = reap(init, &mut execs);
        out.pump(&mut log, &mut buf, true, &mut attach);
        err.pump(&mut log, &mut buf, true, &mut attach);
        out.close(&mut log);
        err.close(&mut log);
        attach.shutdown(&args.state_dir);

        let oom = sys::oom_kill_count(&state.cgroup_dirs).unwrap_or(0) > 0;
        state.status = Status::Exited;
        state.exit_code = Some(exit_code);
        state.finished_at = Some(finished_at);
        state.reason = Some(if oom {
            Reason::OomKilled
        } else if exit_code == 0 {
            Reason::Completed
        } else {
            Reason::Error
        });
        if oom {
            state.message = "the kernel's OOM killer killed a process of the container".into();
        }
        if let Err(e) = write_state(&args.state_dir, &state) {
            eprintln!("staticlet-shim {}: write state: {e}", args.id);
            return ExitCode::FAILURE;
        }
        delete_container(&args.root, &args.id);
        ExitCode::SUCCESS
    }
}

/// Best-effort removal of a libcontainer container (state directory and cgroups) by id.
fn delete_container(root: &Path, id: &str) {
    let dir = root.join(id);
    if !dir.exists() {
        return;
    }
    match Container::load(dir.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                eprintln!("staticlet-shim {id}: delete container: {}", error_chain(&e));
                let _ = fs::remove_dir_all(&dir);
            }
        }
        Err(_) => {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
