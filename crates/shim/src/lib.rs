//! The per-container supervisor ("shim") of staticlet's embedded runtime, and its client side.
//!
//! Each container runs under a small process of its own, like conmon or containerd-shim: the
//! shim creates the container with youki's `libcontainer`, owns its stdout and stderr pipes and
//! writes them to a CRI-format log file, reaps the container's init and records its exit in
//! `state.json`, and outlives restarts of the agent. libcontainer is only ever called in that
//! single-threaded process (it forks with a raw `clone3` and deadlocks in busy multi-threaded
//! callers), never in the agent.
//!
//! Layout:
//! - [`shim_main`] with [`ShimArgs`]: the entry point of every shim-mode process (supervisor,
//!   its launcher, and the exec helper). A binary re-execs itself into it; it must be called
//!   before any thread (or tokio runtime) exists.
//! - [`client`]: used by the agent: [`spawn_shim`], [`read_state`], [`stop`].
//! - [`exec`]: [`exec_in_container`], a command in a running container through a helper process;
//!   [`interactive_helper_command`], the same helper for an interactive command whose stdio the
//!   caller streams (`kubectl exec`), in a session the caller kills with [`sys::kill_session`].
//! - [`attach`]: the attach socket every shim serves (`kubectl attach`: live output, stdin,
//!   terminal resize) and its frames.
//! - [`state`]: the `state.json` record; [`crilog`]: the CRI log format; [`bundle`]: a minimal
//!   busybox OCI bundle for tests; [`sys`]: `/proc` and cgroup helpers.
#![allow(clippy::disallowed_types)] // No tokio here: std's Instant is the right clock.

pub mod args;
pub mod attach;
pub mod bundle;
pub mod client;
pub mod crilog;
pub mod exec;
pub mod state;
mod supervisor;
pub mod sys;

use std::process::ExitCode;

pub use args::{ExecArgs, MonitorArgs, ShimArgs, SupervisorArgs};
pub use client::{
    spawn_shim, spawn_shim_with, stop, ContainerStdio, Reexec, ShimConfig, ShimHandle,
};
pub use exec::{
    exec_in_container, exec_result, helper_command, interactive_helper_command, ExecOutput,
    ExecTarget, InteractiveHelper, MAX_OUTPUT,
};
pub use state::{read_state, Reason, ShimState, Status};
pub use supervisor::START_ERROR_EXIT_CODE;

/// Runs a shim-mode process to completion and returns its exit code.
///
/// Call it from `main` (after recognising the shim-mode arguments, e.g. with
/// [`ShimArgs::parse`]) before any other thread or async runtime is started: the supervisor
/// calls libcontainer and the exec helper joins mount namespaces, both of which need a
/// single-threaded process.
pub fn shim_main(args: ShimArgs) -> ExitCode {
    match args {
        ShimArgs::Launch(a) => supervisor::launch(a),
        ShimArgs::Run(a) => supervisor::run(a),
        ShimArgs::Monitor(a) => supervisor::monitor(a),
        ShimArgs::Exec(a) => exec::run_helper(a),
        ShimArgs::Pause => pause(),
    }
}

/// PID 1 of a pod's shared PID namespace: holds the namespace and reaps the orphans that are
/// reparented to it, until it is killed (SIGKILL from the runtime when the sandbox goes).
fn pause() -> ExitCode {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitPidFlag};
    loop {
        match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::__WALL)) {
            Err(Errno::ECHILD) => std::thread::sleep(std::time::Duration::from_secs(1)),
            Err(Errno::EINTR) | Ok(_) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}
