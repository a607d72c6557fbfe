//! Command-line form of the shim's modes, so any binary can re-exec itself into them.
//!
//! The agent's own binary (or the small `staticlet-shim` binary of this crate) is started as
//! `<exe> <prefix args...> <mode> <options...>`; the binary strips its prefix and hands the rest
//! to [`ShimArgs::parse`], then calls [`crate::shim_main`] before it starts any thread. The
//! client side builds the same argument lists with [`ShimArgs::to_args`].
//!
//! Modes:
//! - `launch`: started by the agent; re-execs itself as `run` in a new session, with its stdio
//!   away from the agent's, and exits at once so the supervisor is re-parented away from the agent.
//! - `run`: the supervisor itself (creates, starts, logs, reaps and records the container).
//! - `monitor`: what a supervisor of an earlier version re-execs itself into after it started
//!   its container (today's supervisors fork a creator child instead): kept so that one caught
//!   mid-start by a package upgrade goes on supervising under the new binary.
//! - `exec`: the helper that runs one command inside a running container's namespaces
//!   (`--interactive`: with the caller's stdin, in a session of its own; `--tty`: on the terminal
//!   that is its stdio).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

/// What a shim-mode process is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimArgs {
    /// Start a supervisor for one container, detached from the caller, then exit.
    Launch(SupervisorArgs),
    /// Be the supervisor of one container (normally reached through `Launch`).
    Run(SupervisorArgs),
    /// Run one command inside a running container.
    Exec(ExecArgs),
    /// The supervisor of an earlier version after it started the container and re-executed
    /// itself (internal; today's supervisors no longer re-exec).
    Monitor(MonitorArgs),
    /// Be PID 1 of a shared PID namespace: reap orphans until killed (kubelet's pause).
    Pause,
}

/// Options of the supervisor's `monitor` phase: its own options plus the inherited descriptors
/// of the container's stdio and of the attach socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorArgs {
    /// The supervisor's options.
    pub supervisor: SupervisorArgs,
    /// Read end of the container's stdout pipe, or the terminal's master with `tty`.
    pub stdout_fd: i32,
    /// Read end of the container's stderr pipe (none with `tty`).
    pub stderr_fd: Option<i32>,
    /// Write end of the container's stdin pipe (with `stdin`, without `tty`).
    pub stdin_fd: Option<i32>,
    /// The listening attach socket.
    pub attach_fd: i32,
}

/// Options of the supervisor (`launch` and `run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorArgs {
    /// Container id (libcontainer's, unique under `root`).
    pub id: String,
    /// OCI bundle directory (`config.json` and the rootfs it names).
    pub bundle: PathBuf,
    /// Directory of the shim's `state.json` and `shim.log` (created if missing).
    pub state_dir: PathBuf,
    /// The container's CRI log file.
    pub log_path: PathBuf,
    /// libcontainer's state root (like `runc --root`).
    pub root: PathBuf,
    /// Arguments that come before the mode word when re-executing the binary (`launch` passes
    /// them on to `run`).
    pub prefix: Vec<OsString>,
    /// Keep the container's stdin open for attached clients (Kubernetes `stdin`).
    pub stdin: bool,
    /// Close the container's stdin when the first attached client's stdin ends (`stdinOnce`).
    pub stdin_once: bool,
    /// Run the container on a terminal whose master the shim owns (Kubernetes `tty`; the
    /// bundle's `process.terminal` must say so too).
    pub tty: bool,
}

/// Options of the exec helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// Pid of the container's init (host pid namespace).
    pub pid: i32,
    /// Its start time as recorded in `state.json`, to refuse a reused pid (0: do not check).
    pub start_time: u64,
    /// `KEY=VALUE` entries added to (and overriding) the environment of the container's init.
    pub env: Vec<String>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// The container's own cgroup directories as its shim recorded them; empty: find them from
    /// `/proc` (which means reading `mountinfo`, costly with many container mounts).
    pub cgroups: Vec<PathBuf>,
    /// An interactive command (`kubectl exec`): it reads the helper's stdin (rather than
    /// `/dev/null`), and the helper first starts a session of its own (`setsid`), so the caller
    /// can kill the command and its descendants as one session (see [`crate::sys::kill_session`]).
    pub interactive: bool,
    /// The helper's stdio is the slave of a pseudo-terminal: with `interactive`, the helper makes
    /// it the controlling terminal of its new session, which the command inherits.
    pub tty: bool,
    /// The command and its arguments.
    pub cmd: Vec<OsString>,
}

impl ShimArgs {
    /// Parses the arguments that follow the prefix (the first one is the mode word).
    pub fn parse<I, S>(args: I) -> Result<ShimArgs, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut it = args.into_iter().map(Into::into);
        let mode = it.next().ok_or("missing mode (launch, run or exec)")?;
        let mode = mode.to_str().ok_or("mode is not UTF-8")?.to_owned();
        match mode.as_str() {
            "launch" | "run" | "monitor" => {
                let (mut id, mut bundle, mut state_dir, mut log_path, mut root) =
                    (None, None, None, None, None);
                let (mut stdout_fd, mut stderr_fd, mut stdin_fd, mut attach_fd) =
                    (None, None, None, None);
                let (mut stdin, mut stdin_once, mut tty) = (false, false, false);
                let mut prefix = Vec::new();
                while let Some(flag) = it.next() {
                    match flag.to_str() {
                        Some("--stdin") => {
                            stdin = true;
                            continue;
                        }
                        Some("--stdin-once") => {
                            stdin_once = true;
                            continue;
                        }
                        Some("--tty") => {
                            tty = true;
                            continue;
                        }
                        _ => {}
                    }
                    let value = it.next().ok_or_else(|| format!("{flag:?} needs a value"))?;
                    match flag.to_str() {
                        Some("--id") => id = Some(utf8(value)?),
                        Some("--bundle") => bundle = Some(PathBuf::from(value)),
                        Some("--state-dir") => state_dir = Some(PathBuf::from(value)),
                        Some("--log") => log_path = Some(PathBuf::from(value)),
                        Some("--root") => root = Some(PathBuf::from(value)),
                        Some("--prefix") => prefix.push(value),
                        Some("--stdout-fd") => stdout_fd = Some(number(&utf8(value)?)?),
                        Some("--stderr-fd") => stderr_fd = Some(number(&utf8(value)?)?),
                        Some("--stdin-fd") => stdin_fd = Some(number(&utf8(value)?)?),
                        Some("--attach-fd") => attach_fd = Some(number(&utf8(value)?)?),
                        _ => return Err(format!("unknown option {flag:?}")),
                    }
                }
                let a = SupervisorArgs {
                    id: id.ok_or("--id is required")?,
                    bundle: bundle.ok_or("--bundle is required")?,
                    state_dir: state_dir.ok_or("--state-dir is required")?,
                    log_path: log_path.ok_or("--log is required")?,
                    root: root.ok_or("--root is required")?,
                    prefix,
                    stdin,
                    stdin_once,
                    tty,
                };
                Ok(match mode.as_str() {
                    "launch" => ShimArgs::Launch(a),
                    "run" => ShimArgs::Run(a),
                    _ => ShimArgs::Monitor(MonitorArgs {
                        supervisor: a,
                        stdout_fd: stdout_fd.ok_or("--stdout-fd is required")?,
                        stderr_fd,
                        stdin_fd,
                        attach_fd: attach_fd.ok_or("--attach-fd is required")?,
                    }),
                })
            }
            "exec" => {
                let (mut pid, mut start_time, mut env, mut timeout) = (None, 0, Vec::new(), None);
                let mut cgroups = Vec::new();
                let (mut interactive, mut tty) = (false, false);
                let mut cmd = Vec::new();
                while let Some(flag) = it.next() {
                    match flag.to_str() {
                        Some("--") => {
                            cmd.extend(it.by_ref());
                            break;
                        }
                        Some("--interactive") => {
                            interactive = true;
                            continue;
                        }
                        Some("--tty") => {
                            tty = true;
                            continue;
                        }
                        _ => {}
                    }
                    let value = it.next().ok_or_else(|| format!("{flag:?} needs a value"))?;
                    let value = utf8(value)?;
                    match flag.to_str() {
                        Some("--pid") => pid = Some(number(&value)?),
                        Some("--start-time") => start_time = number(&value)?,
                        Some("--env") => env.push(value),
                        Some("--cgroup") => cgroups.push(PathBuf::from(value)),
                        Some("--timeout-ms") => {
                            timeout = Some(Duration::from_millis(number(&value)?))
                        }
                        _ => return Err(format!("unknown option {flag:?}")),
                    }
                }
                if cmd.is_empty() {
                    return Err("exec needs a command after --".into());
                }
                Ok(ShimArgs::Exec(ExecArgs {
                    pid: pid.ok_or("--pid is required")?,
                    start_time,
                    env,
                    timeout,
                    cgroups,
                    interactive,
                    tty,
                    cmd,
                }))
            }
            "pause" => Ok(ShimArgs::Pause),
            other => Err(format!("unknown mode {other:?}")),
        }
    }

    /// The argument list (without prefix) that [`ShimArgs::parse`] turns back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        let mut push = |a: &dyn AsRef<OsStr>| v.push(a.as_ref().to_owned());
        match self {
            ShimArgs::Launch(a)
            | ShimArgs::Run(a)
            | ShimArgs::Monitor(MonitorArgs { supervisor: a, .. }) => {
                push(&match self {
                    ShimArgs::Launch(_) => "launch",
                    ShimArgs::Run(_) => "run",
                    _ => "monitor",
                });
                push(&"--id");
                push(&a.id);
                push(&"--bundle");
                push(&a.bundle);
                push(&"--state-dir");
                push(&a.state_dir);
                push(&"--log");
                push(&a.log_path);
                push(&"--root");
                push(&a.root);
                for p in &a.prefix {
                    push(&"--prefix");
                    push(p);
                }
                for (set, flag) in [
                    (a.stdin, "--stdin"),
                    (a.stdin_once, "--stdin-once"),
                    (a.tty, "--tty"),
                ] {
                    if set {
                        push(&flag);
                    }
                }
                if let ShimArgs::Monitor(m) = self {
                    push(&"--stdout-fd");
                    push(&m.stdout_fd.to_string());
                    for (fd, flag) in [(m.stderr_fd, "--stderr-fd"), (m.stdin_fd, "--stdin-fd")] {
                        if let Some(fd) = fd {
                            push(&flag);
                            push(&fd.to_string());
                        }
                    }
                    push(&"--attach-fd");
                    push(&m.attach_fd.to_string());
                }
            }
            ShimArgs::Pause => push(&"pause"),
            ShimArgs::Exec(a) => {
                push(&"exec");
                push(&"--pid");
                push(&a.pid.to_string());
                push(&"--start-time");
                push(&a.start_time.to_string());
                for e in &a.env {
                    push(&"--env");
                    push(e);
                }
                if let Some(t) = a.timeout {
                    push(&"--timeout-ms");
                    push(&t.as_millis().to_string());
                }
                for c in &a.cgroups {
                    push(&"--cgroup");
                    push(c);
                }
                if a.interactive {
                    push(&"--interactive");
                }
                if a.tty {
                    push(&"--tty");
                }
                push(&"--");
                for c in &a.cmd {
                    push(c);
                }
            }
        }
        v
    }
}

fn utf8(s: OsString) -> Result<String, String> {
    s.into_string().map_err(|s| format!("{s:?} is not UTF-8"))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_args_round_trip() {
        let a = ShimArgs::Launch(SupervisorArgs {
            id: "c1".into(),
            bundle: "/b".into(),
            state_dir: "/s".into(),
            log_path: "/l".into(),
            root: "/r".into(),
            prefix: vec!["__shim".into()],
            stdin: true,
            stdin_once: false,
            tty: true,
        });
        assert_eq!(ShimArgs::parse(a.to_args()).unwrap(), a);
        let ShimArgs::Launch(sup) = a else {
            unreachable!()
        };
        let m = ShimArgs::Monitor(MonitorArgs {
            supervisor: sup,
            stdout_fd: 5,
            stderr_fd: Some(6),
            stdin_fd: None,
            attach_fd: 8,
        });
        assert_eq!(ShimArgs::parse(m.to_args()).unwrap(), m);
        let ShimArgs::Monitor(mut m) = m else {
            unreachable!()
        };
        (m.stderr_fd, m.stdin_fd, m.supervisor.stdin_once) = (None, Some(7), true);
        let m = ShimArgs::Monitor(m);
        assert_eq!(ShimArgs::parse(m.to_args()).unwrap(), m);
    }

    #[test]
    fn exec_args_round_trip_with_dashes_in_command() {
        let a = ShimArgs::Exec(ExecArgs {
            pid: 7,
            start_time: 99,
            env: vec!["A=b".into()],
            timeout: Some(Duration::from_millis(1500)),
            cgroups: vec!["/sys/fs/cgroup/memory/staticlet/pod1/c1".into()],
            interactive: false,
            tty: false,
            cmd: vec!["ls".into(), "--".into(), "-l".into()],
        });
        assert_eq!(ShimArgs::parse(a.to_args()).unwrap(), a);
        let interactive = ShimArgs::Exec(ExecArgs {
            pid: 7,
            start_time: 0,
            env: vec!["TERM=xterm".into()],
            timeout: None,
            cgroups: vec![],
            interactive: true,
            tty: true,
            cmd: vec!["sh".into(), "--tty".into()],
        });
        let args = interactive.to_args();
        assert!(!args.contains(&OsString::from("--timeout-ms")), "{args:?}");
        assert_eq!(ShimArgs::parse(args).unwrap(), interactive);
        assert!(ShimArgs::parse(["exec", "--pid", "1"]).is_err());
        assert!(ShimArgs::parse(["bogus"]).is_err());
    }
}
