//! A minimal OCI bundle around the host's static busybox, for tests and smoke checks.
//!
//! `config.json` starts from `oci_spec`'s `Spec::default()` (runc's defaults: `/proc`, `/dev`,
//! `/sys` mounts, masked paths, a small capability set, read-only root) and sets the process
//! arguments, environment and working directory, the hostname, the namespaces (pid, ipc, uts,
//! mount, and network if asked), `linux.cgroupsPath` and optionally a memory limit. The rootfs
//! holds a copy of `/bin/busybox` (Debian's `busybox-static`), a symlink per applet the tests
//! use, and `/etc/hostname`.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxResourcesBuilder, Spec,
};

/// Where the static busybox is taken from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into the rootfs's `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "ls", "head", "tr", "kill", "ps", "hostname", "env", "true",
    "false", "dd", "yes", "wc", "printf", "seq", "pwd", "id", "mkdir", "rm", "touch", "stty",
    "tty",
];

/// What the bundle's container runs.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// Process arguments (`process.args`).
    pub args: Vec<String>,
    /// Extra `KEY=VALUE` environment (after the default `PATH` and `TERM`).
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// Hostname (also written to `/etc/hostname`).
    pub hostname: String,
    /// Give the container its own network namespace.
    pub network_namespace: bool,
    /// `linux.cgroupsPath`, e.g. `/staticlet/test-<id>`.
    pub cgroups_path: String,
    /// Memory limit in bytes (`linux.resources.memory.limit`).
    pub memory_limit: Option<i64>,
    /// Run on a terminal (`process.terminal`; the shim's `tty` must be set too).
    pub terminal: bool,
}

impl BundleOptions {
    /// A bundle running `args` with hostname `hostname` and cgroup `/staticlet/test-<id>`.
    pub fn new(id: &str, args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            cwd: "/".into(),
            hostname: format!("host-{id}"),
            network_namespace: false,
            cgroups_path: format!("/staticlet/test-{id}"),
            memory_limit: None,
            terminal: false,
        }
    }
}

/// Writes `dir/config.json` and `dir/rootfs`; returns `dir`.
pub fn write_busybox_bundle(dir: &Path, opts: &BundleOptions) -> io::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    for applet in APPLETS {
        let link = rootfs.join("bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            symlink("busybox", link)?;
        }
    }
    fs::write(rootfs.join("etc/hostname"), format!("{}\n", opts.hostname))?;
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;

    let spec = spec_for(opts).map_err(io::Error::other)?;
    spec.save(dir.join("config.json"))
        .map_err(io::Error::other)?;
    Ok(dir.to_path_buf())
}

fn spec_for(opts: &BundleOptions) -> Result<Spec, oci_spec::OciSpecError> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(opts.hostname.clone()));
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(opts.args.clone()));
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(opts.env.iter().cloned());
        p.set_env(Some(env));
        p.set_cwd(opts.cwd.clone().into());
        p.set_terminal(Some(opts.terminal));
    }
    if let Some(root) = spec.root_mut() {
        root.set_path("rootfs".into());
    }
    if let Some(linux) = spec.linux_mut() {
        let mut kinds = vec![
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
        ];
        if opts.network_namespace {
            kinds.push(LinuxNamespaceType::Network);
        }
        let namespaces = kinds
            .into_iter()
            .map(|t| {
                let mut ns = LinuxNamespace::default();
                ns.set_typ(t);
                ns
            })
            .collect();
        linux.set_namespaces(Some(namespaces));
        linux.set_cgroups_path(Some(opts.cgroups_path.clone().into()));
        if let Some(limit) = opts.memory_limit {
            let mut resources = linux
                .resources()
                .clone()
                .unwrap_or(LinuxResourcesBuilder::default().build()?);
            resources.set_memory(Some(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .swap(limit)
                    .build()?,
            ));
            linux.set_resources(Some(resources));
        }
    }
    Ok(spec)
}
