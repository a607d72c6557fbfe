//! Fault points for crash-consistency tests: named steps where a process can be made to die as
//! if killed (SIGKILL: no unwinding, no clean-up), at moments random kills rarely hit (between
//! a CNI ADD and the record of its result, between removing a pod's containers and its
//! sandbox, ...).
//!
//! Off unless `STATICLET_FAULT_POINT` names a point; then the process kills itself the first
//! time it reaches that point. Nothing else reads the variable, and an unset variable costs
//! one environment lookup per process.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const ENV: &str = "STATICLET_FAULT_POINT";

/// Every fault point, for the tests that walk them.
pub const POINTS: &[&str] = &[
    "sandbox-namespaces-pinned",
    "sandbox-network-added",
    "container-created",
    "teardown-containers-removed",
];

/// Dies here (SIGKILL to itself) if `STATICLET_FAULT_POINT` names `name`.
pub fn point(name: &'static str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    debug_assert!(POINTS.contains(&name), "undeclared fault point {name}");
    let chosen = CHOSEN.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if chosen.as_deref() == Some(name) {
        eprintln!("fault point {name}: killing this process ({ENV})");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; should it somehow return, do not go on either.
        std::process::abort();
    }
}
