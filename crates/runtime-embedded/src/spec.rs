//! The OCI runtime spec (`config.json`) of a container, from its [`ContainerConfig`], the image's
//! config and the sandbox it joins. Pure: it computes JSON; the caller writes it.
//!
//! Decisions follow containerd's CRI plugin (`internal/cri/opts/spec_linux.go` and friends):
//! entrypoint/command resolution, containerd's default capability set, default masked and
//! read-only paths, the default device allow-list, and one cgroup per container below the pod's.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use staticlet_images::ImageConfig;
use staticlet_runtime::ContainerConfig;

/// containerd's default capabilities for unprivileged containers.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for privileged containers.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// Namespace files of the sandbox a container joins (`None`: the host's, or a new one for pid).
#[derive(Debug, Clone, Default)]
pub struct SandboxNamespaces {
    pub net: Option<String>,
    pub ipc: Option<String>,
    pub uts: Option<String>,
    /// The pod's shared PID namespace (shareProcessNamespace).
    pub pid: Option<String>,
    /// The host's pid namespace (hostPID).
    pub host_pid: bool,
}

/// Files of the sandbox bind-mounted into each container. `/etc/hosts` is not one of them: the
/// agent writes each pod's hosts file and mounts it through [`ContainerConfig::mounts`], for
/// every runtime alike (as kubelet does).
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub hostname: String,
    pub resolv_conf: String,
}

/// The process's argv per Kubernetes: `command` replaces the entrypoint (and drops the image's
/// cmd), `args` replaces the cmd.
pub fn argv(cfg: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    match (cfg.command.is_empty(), cfg.args.is_empty()) {
        (false, _) => cfg.command.iter().chain(cfg.args.iter()).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .chain(cfg.args.iter())
            .cloned()
            .collect(),
        (true, true) => image
            .entrypoint
            .iter()
            .chain(image.cmd.iter())
            .cloned()
            .collect(),
    }
}

/// The environment: the image's, overridden by the container's, plus `HOSTNAME`.
pub fn env(cfg: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut vals: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        if !vals.contains_key(k) {
            order.push(k.to_string());
        }
        vals.insert(k.to_string(), v.to_string());
    };
    if !image.env.iter().any(|e| e.starts_with("PATH=")) {
        set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    set("HOSTNAME", hostname);
    // As containerd does for a container on a terminal.
    if cfg.tty {
        set("TERM", "xterm");
    }
    for (k, v) in &cfg.envs {
        set(k, v);
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", vals[&k]))
        .collect()
}

/// Resolves the user: the security context's numeric ids win, then the image's `User`
/// (`uid`, `uid:gid`, `name`, `name:group`, looked up in the rootfs' /etc/passwd and /etc/group).
pub fn user(
    cfg: &ContainerConfig,
    image: &ImageConfig,
    rootfs: &Path,
) -> Result<(u32, u32), String> {
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let data = std::fs::read_to_string(rootfs.join(file)).ok()?;
        data.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() >= 3).then(|| {
                let id = f[2].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                Some((id, gid))
            })?
        })
    };
    let (mut uid, mut gid) = (0u32, 0u32);
    if !image.user.is_empty() {
        let (u, g) = image
            .user
            .split_once(':')
            .map_or((image.user.as_str(), None), |(u, g)| (u, Some(g)));
        match u.parse::<u32>() {
            Ok(n) => {
                uid = n;
                gid = lookup("etc/passwd", u).map_or(0, |(_, g)| g);
            }
            Err(_) => {
                let (n, g) = lookup("etc/passwd", u)
                    .ok_or_else(|| format!("image user {u:?} not found in /etc/passwd"))?;
                uid = n;
                gid = g;
            }
        }
        if let Some(g) = g {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup("etc/group", g)
                    .map(|(n, _)| n)
                    .ok_or_else(|| format!("image group {g:?} not found in /etc/group"))?,
            };
        }
    }
    if let Some(u) = cfg.security.run_as_user {
        uid = u as u32;
        if cfg.security.run_as_group.is_none() {
            gid = lookup_uid_gid(rootfs, uid).unwrap_or(gid);
        }
    }
    if let Some(g) = cfg.security.run_as_group {
        gid = g as u32;
    }
    Ok((uid, gid))
}

fn lookup_uid_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let data = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    data.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok())?
    })
}

/// The capability set after `privileged`, add and drop (names with or without `CAP_`; `ALL`).
pub fn capabilities(cfg: &ContainerConfig) -> Vec<String> {
    if cfg.security.privileged {
        return ALL_CAPS.iter().map(|s| s.to_string()).collect();
    }
    let norm = |c: &str| {
        let c = c.to_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for a in &cfg.security.add_capabilities {
        if a.eq_ignore_ascii_case("ALL") {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        } else if !caps.contains(&norm(a)) {
            caps.push(norm(a));
        }
    }
    for d in &cfg.security.drop_capabilities {
        if d.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else {
            caps.retain(|c| *c != norm(d));
        }
    }
    caps
}

/// Everything [`build`] needs besides the container's config.
pub struct SpecInput<'a> {
    pub cfg: &'a ContainerConfig,
    pub image: &'a ImageConfig,
    pub rootfs: &'a Path,
    pub namespaces: &'a SandboxNamespaces,
    pub files: &'a SandboxFiles,
    pub hostname: &'a str,
    /// cgroups path of the container (`/staticlet/pod<uid>/<id>`).
    pub cgroups_path: &'a str,
    /// The contents of a `Localhost` seccomp profile (read by the caller).
    pub localhost_seccomp: Option<Value>,
}

/// Syscalls the `RuntimeDefault` profile refuses (EPERM), for unprivileged containers: the ones
/// Docker's and containerd's default profiles leave out unless a capability such as
/// CAP_SYS_ADMIN is granted. A deny list on a default-allow filter, not their allow list: it
/// blocks the same dangerous calls (kernel modules, kexec, mount and namespace games, keyrings,
/// clock setting, tracing other processes, BPF, ...), but a syscall added to a future kernel is
/// allowed.
pub const RUNTIME_DEFAULT_DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "clone3",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

fn seccomp(input: &SpecInput<'_>) -> Option<Value> {
    if input.cfg.security.privileged {
        return None;
    }
    match &input.cfg.security.seccomp {
        staticlet_runtime::Seccomp::Unconfined => None,
        staticlet_runtime::Seccomp::Localhost(_) => input.localhost_seccomp.clone(),
        staticlet_runtime::Seccomp::RuntimeDefault => Some(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            // clone3 gets ENOSYS so libcs fall back to clone; the rest EPERM.
            "syscalls": [
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": RUNTIME_DEFAULT_DENIED.iter().filter(|s| **s != "clone3").collect::<Vec<_>>(),
                 "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            ],
        })),
    }
}

/// The OCI runtime spec as JSON.
pub fn build(input: &SpecInput<'_>) -> Result<Value, String> {
    let cfg = input.cfg;
    let args = argv(cfg, input.image);
    if args.is_empty() {
        return Err("no command specified: neither the pod nor the image gives one".into());
    }
    let (uid, gid) = user(cfg, input.image, input.rootfs)?;
    if cfg.security.run_as_non_root && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let caps = capabilities(cfg);
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".into()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    let bind = |dst: &str, src: &str, ro: bool| {
        let mut opts = vec!["rbind", "rprivate"];
        if ro {
            opts.push("ro");
        }
        json!({"destination": dst, "type": "bind", "source": src, "options": opts})
    };
    let user_mounts: Vec<&str> = cfg
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    for (dst, src) in [
        ("/etc/hostname", &input.files.hostname),
        ("/etc/resolv.conf", &input.files.resolv_conf),
    ] {
        if !user_mounts.contains(&dst) {
            mounts.push(bind(dst, src, false));
        }
    }
    for m in &cfg.mounts {
        let mut opts = vec!["rbind".to_string()];
        opts.push(
            match m.propagation.as_str() {
                "Bidirectional" => "rshared",
                "HostToContainer" => "rslave",
                _ => "rprivate",
            }
            .into(),
        );
        if m.readonly {
            opts.push("ro".into());
        }
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": opts,
        }));
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    match (&input.namespaces.pid, input.namespaces.host_pid) {
        (_, true) => {}
        (Some(p), false) => namespaces.push(json!({"type": "pid", "path": p})),
        (None, false) => namespaces.push(json!({"type": "pid"})),
    }
    for (kind, path) in [
        ("network", &input.namespaces.net),
        ("ipc", &input.namespaces.ipc),
        ("uts", &input.namespaces.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }

    let r = &cfg.resources;
    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        ],
    });
    if cfg.security.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota > 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if r.memory_limit_in_bytes > 0 {
        resources["memory"] = json!({"limit": r.memory_limit_in_bytes});
    }
    let (masked, readonly): (Vec<&str>, Vec<&str>) = if cfg.security.privileged {
        (vec![], vec![])
    } else {
        (
            staticlet_runtime::confinement::MASKED_PATHS.to_vec(),
            staticlet_runtime::confinement::READONLY_PATHS.to_vec(),
        )
    };
    let mut process = json!({
        // The container's init makes its terminal in the container's devpts and hands the
        // master to the shim (console socket).
        "terminal": cfg.tty,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env(cfg, input.image, input.hostname),
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": [],
        },
        // No rlimits: containers inherit the agent's. Raising a hard limit needs
        // CAP_SYS_RESOURCE, which some hosts (and this project's CI VM) do not grant.
        "noNewPrivileges": cfg.security.no_new_privs,
    });
    if !cfg.security.supplemental_groups.is_empty() {
        process["user"]["additionalGids"] = json!(cfg.security.supplemental_groups);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroups_path,
        "resources": resources,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if let Some(sc) = seccomp(input) {
        linux["seccomp"] = sc;
        // libcontainer installs the filter after switching to the container's user; the kernel
        // lets an unprivileged process do that only with no_new_privs. (runc installs it
        // earlier; here a seccomp-confined container cannot gain privileges through setuid
        // binaries, which is what allowPrivilegeEscalation: false means anyway.)
        process["noNewPrivileges"] = json!(true);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "root": {"path": input.rootfs, "readonly": cfg.security.readonly_rootfs},
        "mounts": mounts,
        "process": process,
        "annotations": cfg.annotations,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use staticlet_runtime::{Mount, Resources, SecurityContext};

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            ..Default::default()
        }
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let mut c = ContainerConfig::default();
        assert_eq!(argv(&c, &image()), vec!["/entry", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(argv(&c, &image()), vec!["/entry", "x"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(argv(&c, &image()), vec!["/cmd", "x"]);
        c.args.clear();
        assert_eq!(argv(&c, &image()), vec!["/cmd"]);
    }

    #[test]
    fn env_on_a_terminal_has_term_unless_the_pod_sets_it() {
        let mut c = ContainerConfig {
            tty: true,
            ..Default::default()
        };
        assert_eq!(
            env(&c, &image(), "h"),
            vec!["PATH=/bin", "A=image", "HOSTNAME=h", "TERM=xterm"]
        );
        c.envs = vec![("TERM".into(), "vt100".into())];
        assert_eq!(
            env(&c, &image(), "h"),
            vec!["PATH=/bin", "A=image", "HOSTNAME=h", "TERM=vt100"]
        );
    }

    #[test]
    fn env_overrides_image_and_sets_hostname() {
        let c = ContainerConfig {
            envs: vec![("A".into(), "pod".into()), ("B".into(), "2".into())],
            ..Default::default()
        };
        assert_eq!(
            env(&c, &image(), "h"),
            vec!["PATH=/bin", "A=pod", "HOSTNAME=h", "B=2"]
        );
    }

    #[test]
    fn capabilities_add_drop_privileged() {
        let mut c = ContainerConfig {
            security: SecurityContext {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["MKNOD".into(), "CAP_NET_RAW".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let caps = capabilities(&c);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(
            !caps.contains(&"CAP_MKNOD".to_string()) && !caps.contains(&"CAP_NET_RAW".to_string())
        );
        c.security.drop_capabilities = vec!["ALL".into()];
        c.security.add_capabilities = vec![];
        assert!(capabilities(&c).is_empty());
        c.security.privileged = true;
        assert_eq!(capabilities(&c).len(), ALL_CAPS.len());
    }

    #[test]
    fn run_as_non_root_and_runtime_default_seccomp() {
        let d = tempfile::tempdir().unwrap();
        let mut c = ContainerConfig::default();
        c.security.run_as_non_root = true;
        c.security.seccomp = staticlet_runtime::Seccomp::RuntimeDefault;
        let ns = SandboxNamespaces::default();
        let files = SandboxFiles {
            hostname: "/n".into(),
            resolv_conf: "/r".into(),
        };
        let input = |c: &ContainerConfig| {
            build(&SpecInput {
                cfg: c,
                image: &image(),
                rootfs: d.path(),
                namespaces: &ns,
                files: &files,
                hostname: "p",
                cgroups_path: "/x",
                localhost_seccomp: None,
            })
        };
        assert_eq!(
            input(&c).unwrap_err(),
            "container has runAsNonRoot and image will run as root"
        );
        c.security.run_as_user = Some(1000);
        let v = input(&c).unwrap();
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(v.clone()).expect("valid OCI spec");
        let sc = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        assert_eq!(sc.syscalls().as_ref().unwrap().len(), 2);
        assert!(v["linux"]["seccomp"]["syscalls"][1]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "mount"));
        c.security.privileged = true;
        assert!(input(&c).unwrap()["linux"].get("seccomp").is_none());
    }

    #[test]
    fn user_resolution() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nweb:x:33:34::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let mut img = ImageConfig::default();
        let mut c = ContainerConfig::default();
        assert_eq!(user(&c, &img, d.path()), Ok((0, 0)));
        img.user = "web".into();
        assert_eq!(user(&c, &img, d.path()), Ok((33, 34)));
        img.user = "web:staff".into();
        assert_eq!(user(&c, &img, d.path()), Ok((33, 50)));
        img.user = "1000:1000".into();
        assert_eq!(user(&c, &img, d.path()), Ok((1000, 1000)));
        img.user = "nobody".into();
        assert!(user(&c, &img, d.path()).unwrap_err().contains("nobody"));
        img.user = String::new();
        c.security.run_as_user = Some(33);
        assert_eq!(user(&c, &img, d.path()), Ok((33, 34)));
        c.security.run_as_group = Some(7);
        assert_eq!(user(&c, &img, d.path()), Ok((33, 7)));
    }

    #[test]
    fn spec_is_a_valid_oci_spec() {
        let d = tempfile::tempdir().unwrap();
        let c = ContainerConfig {
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/tmp/x".into(),
                readonly: true,
                propagation: "None".into(),
            }],
            resources: Resources {
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                memory_limit_in_bytes: 64 << 20,
                oom_score_adj: 0,
            },
            ..Default::default()
        };
        let ns = SandboxNamespaces {
            net: Some("/run/ns/net".into()),
            ipc: None,
            uts: Some("/run/ns/uts".into()),
            pid: None,
            host_pid: false,
        };
        let files = SandboxFiles {
            hostname: "/s/hostname".into(),
            resolv_conf: "/s/resolv.conf".into(),
        };
        let v = build(&SpecInput {
            cfg: &c,
            image: &image(),
            rootfs: d.path(),
            namespaces: &ns,
            files: &files,
            hostname: "p",
            cgroups_path: "/staticlet/podu/c1",
            localhost_seccomp: None,
        })
        .unwrap();
        assert!(
            v["linux"].get("seccomp").is_none(),
            "Unconfined by default, as Kubernetes"
        );
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(v.clone()).expect("valid OCI spec");
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &vec!["/entry".to_string(), "default".to_string()]
        );
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        let ns_types: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns_types, vec!["mount", "pid", "network", "uts"]);
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["options"], json!(["rbind", "rprivate", "ro"]));
    }
}
