//! The crate's error type: every variant names what it was doing (file, plugin, command).

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Errors from loading CNI configuration, invoking plugins and keeping the result cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration directory exists but could not be listed.
    #[error("reading CNI configuration directory {}: {source}", dir.display())]
    ReadConfDir {
        /// The configuration directory.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration file could not be read.
    #[error("reading CNI configuration file {}: {source}", file.display())]
    ReadConfig {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration file is not valid JSON or lacks a required field.
    #[error("invalid CNI configuration file {}: {msg}", file.display())]
    InvalidConfig {
        /// The file.
        file: PathBuf,
        /// What is wrong, naming the field.
        msg: String,
    },
    /// No configuration file in the directory (kubelet's `NetworkNotReady`).
    #[error("no CNI configuration file in {}", dir.display())]
    NoConfig {
        /// The configuration directory.
        dir: PathBuf,
    },
    /// The plugin binary is in none of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {}", join_paths(bin_dirs))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// The directories searched, in order.
        bin_dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started or talked to.
    #[error("CNI plugin {plugin:?} {command} ({}): {source}", path.display())]
    Exec {
        /// The plugin's `type`.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The plugin did not finish in time; it was killed.
    #[error("CNI plugin {plugin:?} {command} timed out after {timeout:?} and was killed")]
    Timeout {
        /// The plugin's `type`.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The time it was given.
        timeout: Duration,
    },
    /// The plugin exited non-zero; `msg`/`details` are from its CNI error JSON (or its output).
    #[error("CNI plugin {plugin:?} {command} failed ({}): {}", failure_code(*.code, *.exit), failure_text(.msg, .details))]
    PluginFailed {
        /// The plugin's `type`.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The CNI error code, when the plugin printed an error object.
        code: Option<u64>,
        /// The process's exit code (`None` when a signal ended it).
        exit: Option<i32>,
        /// The error message.
        msg: String,
        /// The error details (may be empty).
        details: String,
    },
    /// The plugin succeeded but printed something that is not a CNI result.
    #[error("CNI plugin {plugin:?} {command} returned an invalid result: {msg}")]
    InvalidResult {
        /// The plugin's `type`.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// The result cache could not be read or written.
    #[error("CNI result cache {}: {source}", path.display())]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A cache file exists but does not hold a cached result.
    #[error("invalid CNI result cache file {}: {msg}", path.display())]
    InvalidCache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The request cannot be passed to a plugin (e.g. a container ID with a `/`).
    #[error("invalid CNI attach request: {0}")]
    InvalidRequest(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no bin dirs configured)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn failure_code(code: Option<u64>, exit: Option<i32>) -> String {
    let mut s = String::new();
    if let Some(code) = code {
        let _ = write!(s, "CNI error code {code}, ");
    }
    match exit {
        Some(exit) => {
            let _ = write!(s, "exit status {exit}");
        }
        None => s.push_str("killed by a signal"),
    }
    s
}

fn failure_text(msg: &str, details: &str) -> String {
    match (msg.is_empty(), details.is_empty()) {
        (_, true) => msg.to_string(),
        (true, false) => details.to_string(),
        (false, false) => format!("{msg}: {details}"),
    }
}
