//! Running a command inside a running container (CRI `ExecSync`, and the interactive `Exec`).
//!
//! Joining a container's mount namespace needs a single-threaded process (`setns(CLONE_NEWNS)`
//! fails with `EINVAL` otherwise) and joining its pid namespace only affects children, so the
//! agent never does it itself: [`exec_in_container`] starts a helper, a re-exec of the agent's
//! binary in `exec` mode ([`crate::ShimArgs::Exec`]), and collects the helper's stdout, stderr and
//! exit code. The helper ([`run_helper`]):
//! 1. checks that the pid is still the container's init (start time from `state.json`);
//! 2. opens the init's namespace files, root and working directory, and reads its environment;
//! 3. moves itself into the init's cgroups (one per hierarchy, best effort; the directories its
//!    shim recorded in `state.json`, or else found from `/proc`);
//! 4. `setns` into the ipc, uts, net, pid, cgroup and finally mount namespaces (those that differ
//!    from its own), then `chroot`s to the init's root and `chdir`s to its working directory;
//! 5. spawns the command (the init's environment plus the given overrides; `PATH` lookup inside
//!    the container), which lands in the container's pid namespace, and waits for it with a
//!    `signalfd`; after the timeout it SIGKILLs it and exits [`TIMEOUT_EXIT_CODE`].
//!
//! The command's exit code is the helper's: its own, or 128 + signal. Failures of the helper
//! itself exit 126 (cannot enter or execute) or 127 (command not found), like `docker exec`,
//! with a message on stderr prefixed `staticlet-shim exec:`.
//!
//! Interactive commands (`kubectl exec`, [`interactive_helper_command`]) use the same helper with
//! no timeout and the caller's streams as its stdio: the command inherits the helper's stdin,
//! stdout and stderr (the caller's pipes, or the slave of a pseudo-terminal from the container's
//! own devpts, [`open_pty`], whose master the caller keeps), so its output flows to the caller as
//! it is written. The helper first calls `setsid`: the command and
//! everything it starts form a session named by the helper's pid, which the caller kills as a
//! whole when its client goes away ([`crate::sys::kill_session`]). On a terminal (`--tty`) the
//! helper also makes its stdin the session's controlling terminal (`TIOCSCTTY`), so the command
//! gets job control, `SIGINT` from `^C` and `SIGWINCH` on resizes.
//!
//! Limitation: the command runs with the helper's credentials (root, full capabilities, no
//! seccomp profile, no `no_new_privs`), not the restricted ones of the container's process spec.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chroot, fchdir, getpid, setsid, Pid};

use crate::args::{ExecArgs, ShimArgs};
use crate::client::Reexec;
use crate::state::read_state;
use crate::sys;

/// Exit code of the helper when the command ran past its timeout (as coreutils `timeout`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// Largest stdout (and stderr) kept from a command; the rest is read and dropped.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Output of a command run with [`exec_in_container`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// What the command wrote to stdout (at most [`MAX_OUTPUT`] bytes).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (at most [`MAX_OUTPUT`] bytes).
    pub stderr: Vec<u8>,
    /// Its exit code (128 + signal if a signal killed it).
    pub exit_code: i32,
}

/// Which container to exec in.
#[derive(Debug, Clone, Copy)]
pub enum ExecTarget<'a> {
    /// The container of a shim's state directory (must be running).
    StateDir(&'a Path),
    /// A process of the container, by pid and start time (0 skips the reuse check).
    Pid {
        /// Host pid.
        pid: i32,
        /// Start time from `/proc/<pid>/stat`.
        start_time: u64,
    },
}

/// The helper process that runs `cmd` in the container (see [`exec_in_container`]), with stdin
/// null and stdout/stderr piped, for callers that drive it themselves (the agent, with tokio).
/// Finish with [`exec_result`].
pub fn helper_command(
    reexec: &Reexec,
    target: ExecTarget<'_>,
    cmd: &[String],
    env: &[String],
    timeout: Duration,
) -> io::Result<Command> {
    let args = helper_args(target, cmd, env, Some(timeout))?;
    let mut command = Command::new(&reexec.exe);
    command
        .args(&reexec.prefix)
        .args(ShimArgs::Exec(args).to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command)
}

/// The helper of an interactive command ([`interactive_helper_command`]) and, for a command on
/// a terminal, the master side of that terminal.
#[derive(Debug)]
pub struct InteractiveHelper {
    /// The helper process. With a terminal its stdin, stdout and stderr are the terminal's
    /// slave; without, they are left to the caller (pipes or `/dev/null`).
    pub command: Command,
    /// The caller's end of the terminal (blocking, close-on-exec), with `tty`.
    pub pty_master: Option<OwnedFd>,
}

/// The helper process for an interactive command (`kubectl exec`): no timeout, the command
/// reads the helper's stdin, and the helper runs in a session of its own whose id is its pid
/// (kill it with [`crate::sys::kill_session`]). With `tty`, a pseudo-terminal is allocated
/// here (see [`open_pty`]): its slave is the helper's stdio and becomes the controlling terminal
/// of that session, its master is returned for the caller to stream.
pub fn interactive_helper_command(
    reexec: &Reexec,
    target: ExecTarget<'_>,
    cmd: &[String],
    env: &[String],
    tty: bool,
) -> io::Result<InteractiveHelper> {
    let mut args = helper_args(target, cmd, env, None)?;
    args.interactive = true;
    args.tty = tty;
    let pty = if tty {
        Some(open_pty(args.pid, args.start_time)?)
    } else {
        None
    };
    let mut command = Command::new(&reexec.exe);
    command
        .args(&reexec.prefix)
        .args(ShimArgs::Exec(args).to_args());
    let pty_master = match pty {
        Some((master, slave)) => {
            command
                .stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            Some(master)
        }
        None => None,
    };
    Ok(InteractiveHelper {
        command,
        pty_master,
    })
}

/// A new pseudo-terminal (master, slave) for a command in the container whose init is `pid`.
///
/// Taken from the container's own devpts instance (`/dev/pts/ptmx` inside its root, looked up
/// with `RESOLVE_IN_ROOT`, so the container's symlinks cannot lead out of it), as runc's
/// console is: the command then finds its terminal as `/dev/pts/N` of its own `/dev/pts`
/// (`tty`, `ttyname` work). A terminal of the host's devpts would work as a terminal but be
/// "not a tty" to `ttyname` inside the container, whose `/dev/pts` is a new instance; it is the
/// fallback for containers without a devpts of their own.
///
/// This looks a path up in the container's root from the caller's process: only a privileged
/// container could put a filesystem there whose lookups block (FUSE), and such a container is
/// trusted with the whole node anyway.
pub fn open_pty(pid: i32, start_time: u64) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use rustix::pty::{ioctl_tiocgptpeer, openpt, unlockpt, OpenptFlags};
    let root = File::open(format!("/proc/{pid}/root"))?;
    // Opened first and checked after: the root is the container's if its init is still the
    // process that had `start_time`.
    if start_time != 0 && !sys::is_same_process(pid, start_time) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} is not the container's init any more"),
        ));
    }
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
    let in_root = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let master = match openat2(&root, "dev/pts/ptmx", flags, Mode::empty(), in_root) {
        Ok(m) => m,
        Err(_) => openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?,
    };
    drop(root);
    unlockpt(&master)?;
    // Fails (ENOTTY) unless `master` really is the master of a pseudo-terminal.
    let slave = ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    Ok((master, slave))
}

fn helper_args(
    target: ExecTarget<'_>,
    cmd: &[String],
    env: &[String],
    timeout: Option<Duration>,
) -> io::Result<ExecArgs> {
    let (pid, start_time, cgroups) = match target {
        ExecTarget::StateDir(dir) => {
            let st = read_state(dir)?;
            // Whether the pid is still the container's init is checked by the helper (it must
            // be, right before it enters): checking here too would only cost every exec a read.
            if st.status != crate::Status::Running {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "container is not running",
                ));
            }
            (st.pid, st.pid_start_time, st.cgroup_dirs)
        }
        ExecTarget::Pid { pid, start_time } => (pid, start_time, Vec::new()),
    };
    if cmd.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    Ok(ExecArgs {
        pid,
        start_time,
        env: env.to_vec(),
        timeout,
        cgroups,
        interactive: false,
        tty: false,
        cmd: cmd.iter().map(OsString::from).collect(),
    })
}

/// The outcome of a helper that ended with `status` after `elapsed`, given the `timeout` it was
/// started with: `TimedOut` if it killed the command for overstaying, else the command's output.
pub fn exec_result(
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
    timeout: Duration,
) -> io::Result<ExecOutput> {
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    exec_outcome(exit_code, stdout, stderr, elapsed, timeout)
}

/// Runs `cmd` inside a running container through a helper process, waiting at most `timeout`.
///
/// `env` holds `KEY=VALUE` overrides of the container init's environment. Returns `TimedOut` if
/// the command did not finish in time (it is killed), `NotFound` if the container is not running.
/// Safe to call from a multi-threaded process: only `fork`+`exec` of the helper happens here.
/// Blocks; an async caller drives [`helper_command`] itself.
pub fn exec_in_container(
    reexec: &Reexec,
    target: ExecTarget<'_>,
    cmd: &[String],
    env: &[String],
    timeout: Duration,
) -> io::Result<ExecOutput> {
    let mut command = helper_command(reexec, target, cmd, env, timeout)?;
    let started = Instant::now();
    let mut child = command.spawn()?;
    let mut pipes: [Option<File>; 2] = [
        child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
        child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
    ];
    let mut sinks = [Vec::new(), Vec::new()];
    // The helper kills the command at `timeout`; this deadline only guards against a helper
    // that hangs itself.
    let hard_deadline = started + timeout + Duration::from_secs(10);
    let mut status = None;
    let mut buf = vec![0u8; 64 * 1024];
    while pipes.iter().any(Option::is_some) {
        if status.is_none() {
            status = child.try_wait()?;
        }
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut idx = Vec::new();
        for (i, p) in pipes.iter().enumerate() {
            if let Some(f) = p {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                idx.push(i);
            }
        }
        let n = match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let ready: Vec<usize> = fds
            .iter()
            .zip(&idx)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        for i in ready {
            let Some(f) = pipes[i].as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => pipes[i] = None,
                Ok(k) => {
                    let room = MAX_OUTPUT.saturating_sub(sinks[i].len());
                    sinks[i].extend_from_slice(&buf[..k.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => pipes[i] = None,
            }
        }
        // Once the helper is gone, something still holding the pipes (a daemon the command left
        // behind) must not keep us: stop when nothing more is readable.
        if status.is_some() && n == 0 {
            break;
        }
        if Instant::now() > hard_deadline {
            let _ = child.kill();
            status = Some(child.wait()?);
            break;
        }
    }
    let [stdout, stderr] = sinks;
    let status = match status {
        Some(s) => s,
        None => child.wait()?,
    };
    exec_result(status, stdout, stderr, started.elapsed(), timeout)
}

/// `exec` mode: the helper process. Must run single-threaded.
pub(crate) fn run_helper(args: ExecArgs) -> ExitCode {
    sys::close_inherited_fds();
    match helper(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(255)),
        Err((code, msg)) => {
            eprintln!("staticlet-shim exec: {msg}");
            ExitCode::from(code)
        }
    }
}

type HelperError = (u8, String);

fn cannot(what: &str) -> impl FnOnce(io::Error) -> HelperError + '_ {
    move |e| (126, format!("{what}: {e}"))
}

fn helper(args: &ExecArgs) -> Result<i32, HelperError> {
    // SIGCHLD goes to a signalfd; std resets the child's signal mask before it execs.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if args.interactive {
        // The command inherits our process group, so signals from its terminal (^C, ^\, ^Z,
        // a hangup) reach us too: blocked, they are read from the signalfd and dropped, and we
        // go on waiting for the command, whatever it makes of them (a shell ignores ^C at its
        // prompt).
        for sig in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTSTP,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
            Signal::SIGHUP,
        ] {
            mask.add(sig);
        }
    }
    mask.thread_block()
        .map_err(|e| (126, format!("block signals: {e}")))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| (126, format!("signalfd: {e}")))?;

    if args.interactive {
        // A session of our own (we were forked by the agent, so we lead no process group and
        // setsid cannot fail with EPERM): the command and its descendants inherit it, and the
        // caller kills them all by its id, our pid, when its client goes away.
        setsid().map_err(|e| (126, format!("setsid: {e}")))?;
        if args.tty {
            // Our stdio is the slave of the caller's pseudo-terminal: make it the controlling
            // terminal of the new session (its foreground process group is ours, which the
            // command inherits).
            rustix::process::ioctl_tiocsctty(io::stdin())
                .map_err(|e| (126, format!("set the controlling terminal: {e}")))?;
        }
    }
    let pid = args.pid;
    if args.start_time != 0 && !sys::is_same_process(pid, args.start_time) {
        return Err((
            126,
            format!("process {pid} is not the container's init any more"),
        ));
    }
    let proc_dir = format!("/proc/{pid}");
    let mut env: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let environ = fs::read(format!("{proc_dir}/environ")).map_err(cannot("read environment"))?;
    for entry in environ
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .chain(args.env.iter().map(|e| e.as_bytes()))
    {
        let (k, v) = match entry.iter().position(|&b| b == b'=') {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry, &b""[..]),
        };
        env.insert(k.to_vec(), v.to_vec());
    }
    let root = File::open(format!("{proc_dir}/root")).map_err(cannot("open root"))?;
    let cwd = File::open(format!("{proc_dir}/cwd")).map_err(cannot("open cwd"))?;
    // Open every namespace before joining any: /proc changes meaning after the mount ns.
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = format!("{proc_dir}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (fs::metadata(&theirs), fs::metadata(&ours)) else {
            continue;
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = File::open(&theirs).map_err(cannot("open namespace"))?;
        namespaces.push((name, flag, f));
    }
    let cgroups = if args.cgroups.is_empty() {
        sys::own_cgroup_dirs(pid).unwrap_or_default()
    } else {
        args.cgroups.clone()
    };
    sys::join_cgroups(getpid().as_raw(), &cgroups);
    for (name, flag, f) in &namespaces {
        setns(f.as_fd(), *flag).map_err(|e| (126, format!("setns {name}: {e}")))?;
    }
    fchdir(root.as_raw_fd()).map_err(|e| (126, format!("fchdir root: {e}")))?;
    chroot(".").map_err(|e| (126, format!("chroot: {e}")))?;
    fchdir(cwd.as_raw_fd()).map_err(|e| (126, format!("chdir: {e}")))?;
    drop((root, cwd, namespaces));

    let mut command = Command::new(&args.cmd[0]);
    command.args(&args.cmd[1..]).env_clear();
    if !args.interactive {
        command.stdin(Stdio::null());
    }
    for (k, v) in &env {
        command.env(
            std::ffi::OsStr::from_bytes(k),
            std::ffi::OsStr::from_bytes(v),
        );
    }
    let child = command.spawn().map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        (code, format!("{:?}: {e}", args.cmd[0]))
    })?;
    let child_pid = Pid::from_raw(child.id() as i32);
    let deadline = args.timeout.map(|t| Instant::now() + t);
    loop {
        match waitpid(child_pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err((126, format!("wait: {e}"))),
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = nix::sys::signal::kill(child_pid, Signal::SIGKILL);
                    let _ = waitpid(child_pid, None);
                    eprintln!(
                        "staticlet-shim exec: timed out after {:?}",
                        args.timeout.unwrap_or_default()
                    );
                    return Ok(TIMEOUT_EXIT_CODE);
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout);
        while let Ok(Some(_)) = sfd.read_signal() {}
    }
}

/// The exec socket's file name in the shim's state directory: a running container's shim runs
/// commands in it for the agent (probes, `ExecSync`) from a child it forks, instead of the agent
/// exec'ing a helper binary for each (that exec alone cost ~1.5–1.9 ms of CPU per command here).
///
/// Protocol: the client connects and sends one request, `[length: u32, big endian][payload]`
/// with the write ends of the command's stdout and stderr pipes attached (`SCM_RIGHTS`, on the
/// first bytes); the payload is the exec helper's arguments ([`ShimArgs::Exec`], non-interactive,
/// each followed by a NUL byte), whose pid, start time and cgroups the shim replaces with its
/// own container's. The shim forks a child, which runs the helper's steps with those pipes as
/// its stdout and stderr and, when the command has ended, writes its exit code (as the helper
/// process would exit: the command's, 124 on timeout, 126/127 when it could not run it) to the
/// connection as an `i32`, big endian, and exits. A connection closed without a code means the
/// child failed. At most [`MAX_SHIM_EXECS`] children run at a time; more connections are closed
/// at once. The socket exists while the container runs (bound before it starts, removed when it
/// exits); a shim of an earlier version has none (use the helper: [`helper_command`]).
pub const EXEC_SOCKET: &str = "exec.sock";

/// Exec children one shim runs at a time.
pub const MAX_SHIM_EXECS: usize = 16;

/// Largest request payload (the command, its arguments and the environment overrides).
pub const MAX_EXEC_REQUEST: usize = 64 * 1024;

/// How long a child waits for its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The request for [`EXEC_SOCKET`]: header and payload, to send with [`send_exec_request`].
pub fn exec_request(cmd: &[String], env: &[String], timeout: Duration) -> io::Result<Vec<u8>> {
    if cmd.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let args = ShimArgs::Exec(ExecArgs {
        pid: 0,
        start_time: 0,
        env: env.to_vec(),
        timeout: Some(timeout),
        cgroups: Vec::new(),
        interactive: false,
        tty: false,
        cmd: cmd.iter().map(OsString::from).collect(),
    })
    .to_args();
    let mut out = vec![0u8; 4];
    for a in &args {
        if a.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{a:?} contains a NUL byte"),
            ));
        }
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    let len = out.len() - 4;
    if len > MAX_EXEC_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("command and environment too long ({len} bytes, at most {MAX_EXEC_REQUEST})"),
        ));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Sends (the first part of) `request` on a connected exec socket, with the command's stdout
/// and stderr attached; returns how many bytes went (the caller writes the rest, if any).
pub fn send_exec_request(
    socket: BorrowedFd<'_>,
    request: &[u8],
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [stdout, stderr];
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    Ok(rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(request)],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )?)
}

/// The outcome of a command that ended with `exit_code` (as the helper reports it) after
/// `elapsed`, given its `timeout`: `TimedOut` if the helper killed it for overstaying.
pub fn exec_outcome(
    exit_code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
    timeout: Duration,
) -> io::Result<ExecOutput> {
    if exit_code == TIMEOUT_EXIT_CODE && elapsed >= timeout {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("command timed out after {timeout:?}"),
        ));
    }
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code,
    })
}

/// Serves one connection to the exec socket; runs in a child the shim forked for it, whose
/// container's init is `pid` (started at `start_time`, in `cgroups`). Returns the child's exit
/// status (0 once the code was written).
pub(crate) fn serve_exec(
    conn: std::os::unix::net::UnixStream,
    pid: i32,
    start_time: u64,
    cgroups: &[std::path::PathBuf],
) -> i32 {
    // Nothing of the monitor's (its pipes, sockets, log) stays open in the command.
    sys::close_fds_except(&[conn.as_raw_fd()]);
    let request = conn
        .set_nonblocking(false)
        .and_then(|()| conn.set_read_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|()| receive_exec_request(&conn));
    let (payload, stdout, stderr) = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("staticlet-shim exec: request: {e}");
            return 1;
        }
    };
    let code = match parse_exec_request(&payload) {
        Err(e) => {
            let _ = nix::unistd::write(&stderr, format!("staticlet-shim exec: {e}\n").as_bytes());
            126
        }
        Ok(mut args) => {
            args.pid = pid;
            args.start_time = start_time;
            args.cgroups = cgroups.to_vec();
            // The command's stdout and stderr, and the helper's own messages.
            if let Err(e) = nix::unistd::dup2(stdout.as_raw_fd(), 1)
                .and_then(|_| nix::unistd::dup2(stderr.as_raw_fd(), 2))
            {
                eprintln!("staticlet-shim exec: stdio: {e}");
                return 1;
            }
            drop((stdout, stderr));
            match helper(&args) {
                Ok(code) => code,
                Err((code, msg)) => {
                    eprintln!("staticlet-shim exec: {msg}");
                    i32::from(code)
                }
            }
        }
    };
    let mut to = &conn;
    match std::io::Write::write_all(&mut to, &code.to_be_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Reads a request: its payload and the two descriptors attached to it.
fn receive_exec_request(
    conn: &std::os::unix::net::UnixStream,
) -> io::Result<(Vec<u8>, OwnedFd, OwnedFd)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut header = [0u8; 4];
    let got = rustix::net::recvmsg(
        conn,
        &mut [io::IoSliceMut::new(&mut header)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
    )?;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if got.bytes != header.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the request",
        ));
    }
    let (Some(stderr), Some(stdout), None) = (fds.pop(), fds.pop(), fds.pop()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a request carries exactly two descriptors (stdout, stderr)",
        ));
    };
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_EXEC_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request of {len} bytes (at most {MAX_EXEC_REQUEST})"),
        ));
    }
    let mut payload = vec![0u8; len];
    let mut from = conn;
    from.read_exact(&mut payload)?;
    Ok((payload, stdout, stderr))
}

/// The helper's arguments in a request payload: non-interactive `exec` arguments, each ended by
/// a NUL byte.
fn parse_exec_request(payload: &[u8]) -> Result<ExecArgs, String> {
    let Some(body) = payload.strip_suffix(&[0]) else {
        return Err("malformed request (not NUL-terminated)".into());
    };
    let words = body
        .split(|&b| b == 0)
        .map(|w| OsString::from(std::ffi::OsStr::from_bytes(w)));
    match ShimArgs::parse(words)? {
        ShimArgs::Exec(a) if !a.interactive && !a.tty => Ok(a),
        _ => Err("the request is not a non-interactive exec".into()),
    }
}
