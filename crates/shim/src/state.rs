//! The shim's record of one container: `state.json` in the shim's state directory.
//!
//! The shim is the only writer; the agent (through [`crate::client`]) only reads it. Every write
//! goes to a temporary file in the same directory that is then renamed over `state.json`, so a
//! reader sees either the previous or the next complete record, never a torn one.
//!
//! Timestamps are RFC 3339 strings with nanoseconds in UTC (Go's `time.RFC3339Nano` parses them),
//! the format of CRI logs and of kubelet's container statuses.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the state file inside a shim's state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the shim's own diagnostics log (its stderr) inside the state directory.
pub const SHIM_LOG_FILE: &str = "shim.log";

/// Life-cycle phase of the supervised container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The container exists (its init waits to exec the entrypoint) and has not been started.
    Created,
    /// The entrypoint runs.
    Running,
    /// The container's init has exited (or never started): `exit_code` and `reason` are final.
    Exited,
}

/// Why the container stopped, in kubelet's words (`ContainerStateTerminated.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit code or a signal.
    Error,
    /// The kernel's OOM killer killed a process of the container's cgroup.
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// The container could not be created or started; `message` says why.
    StartError,
}

/// Contents of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// The container id (also libcontainer's id).
    pub id: String,
    /// Pid of the container's init process (host pid namespace), 0 before it exists.
    pub pid: i32,
    /// Start time of `pid` (field 22 of `/proc/<pid>/stat`, clock ticks since boot): a pid
    /// whose start time differs is a reused pid, not our container.
    pub pid_start_time: u64,
    /// Pid of the shim process.
    pub shim_pid: i32,
    /// Start time of `shim_pid`, as `pid_start_time`.
    pub shim_start_time: u64,
    /// Phase.
    pub status: Status,
    /// When the container was created (RFC 3339, nanoseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the entrypoint was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the exit was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Exit code: the process's, or 128 + signal number when a signal killed it (like runc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped (set with `exit_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Human-readable detail (start errors, OOM note).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Absolute cgroup directories of the container's init (one per mounted hierarchy the
    /// runtime placed it in: those it does not share with the shim), taken from
    /// `/proc/<pid>/cgroup` when it was created. Used to kill what is left of a container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_dirs: Vec<PathBuf>,
}

impl ShimState {
    /// A fresh record of a shim that has not created its container yet.
    pub fn new(id: &str, shim_pid: i32, shim_start_time: u64) -> Self {
        Self {
            id: id.to_owned(),
            pid: 0,
            pid_start_time: 0,
            shim_pid,
            shim_start_time,
            status: Status::Created,
            created_at: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: String::new(),
            cgroup_dirs: Vec::new(),
        }
    }

    /// Whether the container has finished (or failed to start).
    pub fn is_exited(&self) -> bool {
        self.status == Status::Exited
    }
}

/// The current UTC time as RFC 3339 with nanoseconds (`2026-04-20T10:11:12.123456789Z`).
pub fn now_rfc3339() -> String {
    crate::crilog::Timestamp::now().as_str().to_owned()
}

/// Path of `state.json` in `state_dir`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Reads `state.json` from a shim's state directory.
///
/// `NotFound` when the shim has not written it yet (or the directory is gone).
pub fn read_state(state_dir: &Path) -> io::Result<ShimState> {
    let bytes = fs::read(state_path(state_dir))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `state.json` atomically: a temporary file in `state_dir`, renamed over it.
///
/// Only an exit record is fsync'd first. The records of a live container (created, running)
/// are written on the path that starts it, where an fsync costs a disk flush (0.3 ms on a
/// quiet disk, tens of ms beside a busy etcd on the same disk) and buys nothing: every reader
/// sees the rename at once, an agent or shim killed still leaves the page cache behind, and
/// after a power loss every container is gone anyway (a record that did not reach the disk
/// reads as a created container, a stale one as a running container whose shim is gone: the
/// agent replaces both). The exit record is the container's last word (its exit code and
/// reason, which restart counts and back-off rest on): it is made durable.
pub fn write_state(state_dir: &Path, state: &ShimState) -> io::Result<()> {
    let tmp = state_dir.join(format!(".{STATE_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    // One write (serde_json's writer would make hundreds of tiny ones on an unbuffered file).
    let mut text = serde_json::to_vec_pretty(state)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    text.push(b'\n');
    f.write_all(&text)?;
    if state.is_exited() {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, state_path(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_kubelet_words() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ShimState::new("c1", 10, 20);
        s.status = Status::Exited;
        s.exit_code = Some(137);
        s.reason = Some(Reason::OomKilled);
        write_state(dir.path(), &s).unwrap();
        let text = fs::read_to_string(state_path(dir.path())).unwrap();
        assert!(text.contains("\"OOMKilled\""), "{text}");
        assert!(text.contains("\"exited\""), "{text}");
        assert_eq!(read_state(dir.path()).unwrap(), s);
    }

    #[test]
    fn timestamps_have_nanoseconds_and_z() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z'), "{t}");
        let frac = t.rsplit('.').next().unwrap();
        assert_eq!(frac.len(), 10, "{t}");
    }
}
