//! From a Pod to runtime configurations (≈ kubelet's `pkg/kubelet/kuberuntime` conversions).
//!
//! **Architecture invariant:** this is the only module that turns Kubernetes Pod fields into
//! [`SandboxConfig`] and [`ContainerConfig`]. Both runtime backends receive the result, so they
//! cannot disagree on command expansion, environment, mounts, labels or log paths.
//!
//! It also prepares the pod's volumes on the host (emptyDir directories, hostPath type checks,
//! downwardAPI files) under `<root-dir>/pods/<uid>/volumes`, as kubelet's volume manager does.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, HostAlias, Volume};
use sha2::{Digest, Sha256};
use staticlet_manifest::validate::{parse_quantity, ParsedQuantity};
use staticlet_manifest::StaticPod;
use staticlet_runtime::{
    labels, ContainerConfig, DnsConfig, Labels, Mount, PortMapping, Resources, SandboxConfig,
    Seccomp, SecurityContext,
};

/// Where a node keeps its state, and what it is called.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_name: String,
    /// `--root-dir`.
    pub root_dir: PathBuf,
    /// `--log-dir`.
    pub log_dir: PathBuf,
    /// The node's IP (status.hostIP).
    pub host_ip: String,
}

impl NodeContext {
    /// `<root-dir>/pods/<uid>`: everything the agent keeps for one pod.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// `<log-dir>/<namespace>_<name>_<uid>`: the pod's log directory, as kubelet names it.
    pub fn pod_log_dir(&self, pod: &StaticPod) -> PathBuf {
        self.log_dir
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
    }
}

/// The attempt after the highest one whose log file is named in `names` (the entries of a
/// container's log directory): one more than the highest `N` of `N.log` or a rotated
/// `N.log.<suffix>`; 0 when there is none. kubelet's `calcRestartCountByLogDir`, which gives a
/// container's restart count when the runtime no longer holds any container of that name.
pub fn next_attempt_from_log_names<'a>(names: impl IntoIterator<Item = &'a str>) -> u32 {
    names
        .into_iter()
        .filter_map(|n| {
            let (num, rest) = n.split_once(".log")?;
            let valid = !num.is_empty()
                && num.bytes().all(|b| b.is_ascii_digit())
                && (rest.is_empty() || rest.starts_with('.'));
            valid.then(|| num.parse::<u32>().ok()).flatten()
        })
        .map(|n| n.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// [`next_attempt_from_log_names`] of the files in `dir` (a container's log directory, e.g.
/// `<log-dir>/<ns>_<pod>_<uid>/<container>`); 0 when it cannot be read.
pub fn next_attempt_from_logs(dir: &Path) -> u32 {
    let names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    next_attempt_from_log_names(names.iter().map(String::as_str))
}

/// The role of a container in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// A regular init container: runs to completion, one at a time, before the app containers.
    Init,
    /// A restartable init container (`restartPolicy: Always`): started in order with the init
    /// containers, kept running, stopped after the app containers.
    Sidecar,
    /// A regular container.
    App,
}

impl ContainerKind {
    /// The value of the [`labels::CONTAINER_KIND`] label.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Init => "init",
            ContainerKind::Sidecar => "sidecar",
            ContainerKind::App => "app",
        }
    }

    /// Parses the label value (unknown values are treated as app containers).
    pub fn from_label(s: Option<&String>) -> Self {
        match s.map(String::as_str) {
            Some("init") => ContainerKind::Init,
            Some("sidecar") => ContainerKind::Sidecar,
            _ => ContainerKind::App,
        }
    }

    /// The kind of an init container by its restart policy.
    pub fn of_init(c: &Container) -> Self {
        if c.restart_policy.as_deref() == Some("Always") {
            ContainerKind::Sidecar
        } else {
            ContainerKind::Init
        }
    }
}

/// A stable hash of a container's spec (8 bytes of SHA-256 over its canonical JSON). A running
/// container whose hash label differs from its spec's is restarted (kubelet's container hash).
pub fn container_hash(c: &Container) -> String {
    let v = serde_json::to_value(c).unwrap_or_default();
    let mut s = String::new();
    staticlet_manifest::hash::write_canonical(&v, &mut s);
    let d = Sha256::digest(s.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels every runtime object of `pod` carries.
pub fn pod_labels(pod: &StaticPod) -> Labels {
    let mut l = Labels::new();
    l.insert(labels::MANAGED.into(), "true".into());
    l.insert(labels::POD_UID.into(), pod.uid.clone());
    l.insert(labels::POD_NAME.into(), pod.name.clone());
    l.insert(labels::POD_NAMESPACE.into(), pod.namespace.clone());
    let grace = pod.spec().termination_grace_period_seconds.unwrap_or(30);
    l.insert(labels::GRACE_PERIOD.into(), grace.to_string());
    l
}

/// The pod's hostname (kubelet's `GeneratePodHostNameAndDomain`): `spec.hostname`, else the
/// pod's name, truncated to 63 characters without a trailing `-` or `.`.
pub fn pod_hostname(pod: &StaticPod) -> String {
    pod.spec().hostname.clone().unwrap_or_else(|| {
        let n = pod.pod.metadata.name.as_deref().unwrap_or(&pod.name);
        n.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    })
}

/// The pod's cgroup, as `SandboxConfig::cgroup_parent`: `/staticlet/pod<uid>`, absolute (as
/// kubelet's `/kubepods/...` with the cgroupfs driver), so every runtime puts it at the same
/// place in every hierarchy whatever cgroup the runtime itself runs in (a relative parent is
/// resolved against the runtime's shim's own cgroup). The agent removes it once the pod's
/// sandboxes are gone ([`remove_pod_cgroup`]).
pub fn pod_cgroup_parent(uid: &str) -> String {
    format!("/staticlet/pod{uid}")
}

/// Removes the pod's cgroup ([`pod_cgroup_parent`]) in every cgroup hierarchy listed in
/// `mountinfo` (normally `/proc/self/mountinfo`), as kubelet's pod container manager `Destroy`
/// does after the pod's sandboxes were removed: every process still in it or below it is killed
/// (a leak: e.g. a container a runtime lost when it was killed in the middle of creating it),
/// then the cgroups below it and itself are removed, deepest first, with `rmdir` only. Blocking
/// (a busy cgroup is retried for a moment). Idempotent; returns how many processes were killed
/// and the directories left, with why.
///
/// It is the agent's job, not the runtime's: the agent chose the pod's cgroup parent; the
/// runtimes create it implicitly (containerd through runc when the sandbox starts, the embedded
/// runtime when a container starts) but only own the container cgroups below it, and a pod may
/// have more than one sandbox (a replaced one is removed while the new one runs in the same pod
/// cgroup), so only the agent knows when the pod, not just a sandbox, is gone.
pub fn remove_pod_cgroup(
    uid: &str,
    mountinfo: &Path,
) -> Result<(usize, Vec<(PathBuf, std::io::Error)>), String> {
    if uid.is_empty() || uid.contains('/') || uid.contains("..") {
        return Err(format!("refusing to remove the cgroup of pod UID {uid:?}"));
    }
    let hierarchies = staticlet_runtime::cgroups::hierarchies(mountinfo)
        .map_err(|e| format!("finding cgroup hierarchies: {e}"))?;
    Ok(staticlet_runtime::cgroups::kill_and_remove_tree(
        &hierarchies,
        &pod_cgroup_parent(uid),
    ))
}

/// The sandbox configuration of `pod`.
pub fn sandbox_config(pod: &StaticPod, attempt: u32, ctx: &NodeContext) -> SandboxConfig {
    let spec = pod.spec();
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        pod_hostname(pod)
    };
    let dns = spec.dns_config.as_ref().map(|d| DnsConfig {
        servers: d.nameservers.clone().unwrap_or_default(),
        searches: d.searches.clone().unwrap_or_default(),
        options: d
            .options
            .iter()
            .flatten()
            .map(|o| match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            })
            .collect(),
    });
    let mut port_mappings = Vec::new();
    if !host_network {
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                    port_mappings.push(PortMapping {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        container_port: p.container_port,
                        host_port: hp,
                        host_ip: p.host_ip.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    let security = spec.security_context.as_ref();
    let sysctls = security
        .and_then(|s| s.sysctls.as_ref())
        .map(|s| {
            s.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    SandboxConfig {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
        attempt,
        hostname,
        log_directory: ctx.pod_log_dir(pod),
        dns,
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        host_network,
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        share_process_namespace: spec.share_process_namespace.unwrap_or(false),
        cgroup_parent: pod_cgroup_parent(&pod.uid),
        sysctls,
        runtime_handler: spec.runtime_class_name.clone().unwrap_or_default(),
    }
}

/// Expands `$(VAR)` references as Kubernetes does: defined variables are replaced, `$$` is an
/// escaped `$`, undefined references are left as written.
pub fn expand(input: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match env.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_value(pod: &StaticPod, path: &str, pod_ip: &str, ctx: &NodeContext) -> Option<String> {
    let meta = &pod.pod.metadata;
    let fmt_map = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return meta
            .labels
            .as_ref()
            .and_then(|l| l.get(key).cloned())
            .or(Some(String::new()));
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(key).cloned())
            .or(Some(String::new()));
    }
    Some(match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "metadata.labels" => fmt_map(&meta.labels),
        "metadata.annotations" => fmt_map(&meta.annotations),
        "spec.nodeName" => ctx.node_name.clone(),
        "spec.serviceAccountName" => pod.spec().service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        _ => return None,
    })
}

/// The runtime configuration of one container of `pod`.
pub fn container_config(
    pod: &StaticPod,
    c: &Container,
    kind: ContainerKind,
    attempt: u32,
    pod_ip: &str,
    ctx: &NodeContext,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<ContainerConfig, String> {
    let mut env_map: HashMap<String, String> = HashMap::new();
    let mut envs = Vec::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env_map)
        } else if let Some(vf) = &e.value_from {
            if let Some(fr) = &vf.field_ref {
                field_value(pod, &fr.field_path, pod_ip, ctx).ok_or_else(|| {
                    format!("env {}: unsupported fieldRef {:?}", e.name, fr.field_path)
                })?
            } else if let Some(rr) = &vf.resource_field_ref {
                resource_field(c, &rr.resource).ok_or_else(|| {
                    format!(
                        "env {}: unsupported resourceFieldRef {:?}",
                        e.name, rr.resource
                    )
                })?
            } else {
                return Err(format!("env {}: unsupported valueFrom", e.name));
            }
        } else {
            String::new()
        };
        env_map.insert(e.name.clone(), value.clone());
        envs.push((e.name.clone(), value));
    }
    let command = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &env_map))
        .collect();
    let args = c
        .args
        .iter()
        .flatten()
        .map(|s| expand(s, &env_map))
        .collect();

    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?}: volume not prepared", m.name))?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .map_err(|e| format!("subPath {}: {e}", p.display()))?;
                }
                p
            }
            None => base.clone(),
        };
        mounts.push(Mount {
            container_path: m.mount_path.clone(),
            host_path,
            readonly: m.read_only.unwrap_or(false),
            propagation: m.mount_propagation.clone().unwrap_or_else(|| "None".into()),
        });
    }

    let mut l = pod_labels(pod);
    l.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    l.insert(labels::CONTAINER_KIND.into(), kind.as_str().into());
    l.insert(labels::ATTEMPT.into(), attempt.to_string());
    l.insert(labels::CONTAINER_HASH.into(), container_hash(c));

    let sc = c.security_context.as_ref();
    let psc = pod.spec().security_context.as_ref();
    let security = SecurityContext {
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .or(psc.and_then(|s| s.run_as_user)),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .or(psc.and_then(|s| s.run_as_group)),
        supplemental_groups: psc
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default(),
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        add_capabilities: sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .unwrap_or_default(),
        drop_capabilities: sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.clone())
            .unwrap_or_default(),
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        run_as_non_root: sc
            .and_then(|s| s.run_as_non_root)
            .or(psc.and_then(|s| s.run_as_non_root))
            .unwrap_or(false),
        seccomp: {
            let profile = sc
                .and_then(|s| s.seccomp_profile.as_ref())
                .or(psc.and_then(|s| s.seccomp_profile.as_ref()));
            match profile.map(|p| (p.type_.as_str(), p.localhost_profile.as_deref())) {
                Some(("RuntimeDefault", _)) => Seccomp::RuntimeDefault,
                // kubelet: relative to <root-dir>/seccomp.
                Some(("Localhost", Some(f))) => {
                    Seccomp::Localhost(ctx.root_dir.join("seccomp").join(f))
                }
                _ => Seccomp::Unconfined,
            }
        },
    };

    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: staticlet_runtime::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
        },
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels: l,
        annotations: Labels::new(),
        log_path: PathBuf::from(&c.name).join(format!("{attempt}.log")),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        resources: resources(c),
        security,
        stop_signal: c
            .lifecycle
            .as_ref()
            .and_then(|l| l.stop_signal.clone())
            .unwrap_or_default(),
    })
}

fn quantity(c: &Container, which: &str, resource: &str) -> Option<ParsedQuantity> {
    let r = c.resources.as_ref()?;
    let list = if which == "limits" {
        r.limits.as_ref()?
    } else {
        r.requests.as_ref()?
    };
    parse_quantity(&list.get(resource)?.0).ok()
}

fn resource_field(c: &Container, resource: &str) -> Option<String> {
    let (which, name) = resource.split_once('.')?;
    if !matches!(which, "limits" | "requests")
        || !matches!(name, "cpu" | "memory" | "ephemeral-storage")
    {
        return None;
    }
    // Values rounded up to whole units (a divisor other than 1 is not supported yet).
    Some(
        quantity(c, which, name)
            .map_or(0, |q| q.units())
            .to_string(),
    )
}

/// CPU and memory in cgroup terms, as kubelet computes them (shares from requests, quota from
/// limits over a 100 ms period).
pub fn resources(c: &Container) -> Resources {
    const PERIOD: i64 = 100_000;
    let cpu_req = quantity(c, "requests", "cpu");
    let cpu_lim = quantity(c, "limits", "cpu");
    let shares = match cpu_req.or(cpu_lim) {
        Some(cpu) => (cpu.millis() as i64 * 1024 / 1000).max(2),
        None => 2,
    };
    let quota = cpu_lim
        .map(|cpu| (cpu.millis() as i64 * PERIOD / 1000).max(1000))
        .unwrap_or(0);
    Resources {
        cpu_period: if quota > 0 { PERIOD } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: quantity(c, "limits", "memory")
            .map(|m| m.units() as i64)
            .unwrap_or(0),
        oom_score_adj: 0,
    }
}

/// Prepares every volume of `pod` on the host; returns volume name → host path.
/// Idempotent: called on every start of a container.
pub fn setup_volumes(
    pod: &StaticPod,
    ctx: &NodeContext,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let vol_dir = ctx.pod_dir(&pod.uid).join("volumes");
    for v in pod.spec().volumes.iter().flatten() {
        let path =
            setup_volume(pod, v, &vol_dir).map_err(|e| format!("volume {:?}: {e}", v.name))?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn setup_volume(pod: &StaticPod, v: &Volume, vol_dir: &Path) -> Result<PathBuf, String> {
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        check_host_path(&p, hp.type_.as_deref().unwrap_or(""))?;
        return Ok(p);
    }
    if let Some(ed) = &v.empty_dir {
        let p = vol_dir.join("kubernetes.io~empty-dir").join(&v.name);
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        if ed.medium.as_deref() == Some("Memory") && !is_mountpoint(&p) {
            // tmpfs, sized by sizeLimit (kubelet: node allocatable memory when unset; here the
            // kernel's default of half the RAM).
            let mut opts = "mode=0777".to_string();
            if let Some(limit) = ed
                .size_limit
                .as_ref()
                .and_then(|q| parse_quantity(&q.0).ok())
            {
                opts.push_str(&format!(",size={}", limit.units()));
            }
            nix::mount::mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(|e| format!("mounting tmpfs at {}: {e}", p.display()))?;
        }
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777));
        return Ok(p);
    }
    if let Some(d) = &v.downward_api {
        let p = vol_dir.join("kubernetes.io~downward-api").join(&v.name);
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        let ctx_ip = "";
        for item in d.items.iter().flatten() {
            let Some(fr) = &item.field_ref else {
                return Err(format!(
                    "item {:?}: only fieldRef items are supported",
                    item.path
                ));
            };
            let ctx = NodeContext {
                node_name: pod.spec().node_name.clone().unwrap_or_default(),
                root_dir: PathBuf::new(),
                log_dir: PathBuf::new(),
                host_ip: String::new(),
            };
            let value = field_value(pod, &fr.field_path, ctx_ip, &ctx).ok_or_else(|| {
                format!(
                    "item {:?}: unsupported fieldRef {:?}",
                    item.path, fr.field_path
                )
            })?;
            if item.path.split('/').any(|s| s == "..") || item.path.starts_with('/') {
                return Err(format!(
                    "item path {:?} must be relative without '..'",
                    item.path
                ));
            }
            let f = p.join(&item.path);
            if let Some(parent) = f.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&f, value).map_err(|e| format!("writing {}: {e}", f.display()))?;
            let mode = item.mode.or(d.default_mode).unwrap_or(0o644) as u32;
            let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode));
        }
        return Ok(p);
    }
    Err("unsupported volume type for a static pod on this node".into())
}

/// Whether `path` is a mount point (per `/proc/self/mountinfo`).
fn is_mountpoint(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|p| Path::new(&p.replace("\\040", " ")) == path)
    })
}

/// kubelet's hostPath `type` checks (and creations).
pub fn check_host_path(p: &Path, kind: &str) -> Result<(), String> {
    let meta = std::fs::metadata(p);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not {what}",
            p.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                Ok(())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("a file"),
            Err(_) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("creating {}: {e}", p.display()))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644));
                Ok(())
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(format!("unsupported hostPath type {other:?}")),
    }
}

/// The host file behind a container attempt's `terminationMessagePath`.
pub fn termination_log_path(
    ctx: &NodeContext,
    uid: &str,
    container: &str,
    attempt: u32,
) -> PathBuf {
    ctx.pod_dir(uid)
        .join("containers")
        .join(container)
        .join(attempt.to_string())
        .join("termination-log")
}

/// Creates the attempt's termination log file and mounts it at the container's
/// `terminationMessagePath` (kubelet does the same for every runtime).
pub fn add_termination_log(
    cfg: &mut ContainerConfig,
    pod: &StaticPod,
    c: &Container,
    attempt: u32,
    ctx: &NodeContext,
) -> Result<(), String> {
    let Some(path) = c
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    if cfg.mounts.iter().any(|m| m.container_path == path) {
        return Ok(());
    }
    let file = termination_log_path(ctx, &pod.uid, &c.name, attempt);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&file, b"").map_err(|e| format!("creating {}: {e}", file.display()))?;
    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666));
    cfg.mounts.push(Mount {
        container_path: path.to_string(),
        host_path: file,
        readonly: false,
        propagation: "None".into(),
    });
    Ok(())
}

/// The first line of a pod's managed hosts file (kubelet's `managedHostsHeader`).
const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// The first line of a hostNetwork pod's hosts file (kubelet's
/// `managedHostsHeaderWithHostNetwork`).
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";
/// Where containers see the hosts file, and where the node keeps its own.
const ETC_HOSTS: &str = "/etc/hosts";

/// `<root-dir>/pods/<uid>/etc-hosts`: the pod's managed hosts file (kubelet's `getEtcHostsPath`).
pub fn hosts_file_path(ctx: &NodeContext, uid: &str) -> PathBuf {
    ctx.pod_dir(uid).join("etc-hosts")
}

/// The pod's DNS domain for its hosts entry (kubelet's `GeneratePodHostNameAndDomain`): with a
/// `subdomain`, `<subdomain>.<namespace>.svc.<cluster-domain>`, else none. staticlet has no
/// cluster domain, which is kubelet's default (an empty `clusterDomain`), so the domain ends
/// with `svc.` as kubelet's does then.
pub fn pod_host_domain(pod: &StaticPod) -> String {
    match pod.spec().subdomain.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) => format!("{sub}.{}.svc.", pod.namespace),
        None => String::new(),
    }
}

/// The `hostAliases` section of a hosts file (kubelet's `hostsEntriesFromHostAliases`): empty
/// without aliases, else a blank line, a comment and one `IP<TAB>name<TAB>name...` line each.
fn host_alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default();
        s.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
    }
    s
}

/// The managed hosts file of a pod on the pod network (kubelet's `managedHostsFileContent`):
/// localhost and the IPv6 names, one `IP<TAB>hostname` line per pod IP (`IP<TAB>fqdn<TAB>
/// hostname` with a domain), then the `hostAliases`.
pub fn managed_hosts_content(
    pod_ips: &[String],
    hostname: &str,
    host_domain: &str,
    aliases: &[HostAlias],
) -> String {
    let mut s = String::from(MANAGED_HOSTS_HEADER);
    s.push_str("127.0.0.1\tlocalhost\n");
    s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\n");
    s.push_str("fe00::0\tip6-mcastprefix\n");
    s.push_str("fe00::1\tip6-allnodes\n");
    s.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if host_domain.is_empty() {
            s.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            s.push_str(&format!("{ip}\t{hostname}.{host_domain}\t{hostname}\n"));
        }
    }
    s.push_str(&host_alias_entries(aliases));
    s
}

/// The hosts file of a hostNetwork pod (kubelet's `nodeHostsFileContent`): the node's own
/// `/etc/hosts` under a header, then the `hostAliases`.
pub fn node_hosts_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut s = String::from(MANAGED_HOSTS_HEADER_HOST_NETWORK);
    s.push_str(node_hosts);
    s.push_str(&host_alias_entries(aliases));
    s
}

/// Writes the pod's managed hosts file and mounts it at the container's `/etc/hosts`, for every
/// runtime (kubelet's `makeMounts` / `makeHostsMount` / `ensureHostsFile`): on the pod network
/// [`managed_hosts_content`] with the sandbox's IP (`pod_ip`), under hostNetwork
/// [`node_hosts_content`]. Not mounted when the container mounts `/etc/hosts` itself, nor on the
/// pod network before the pod has an IP. The file is rewritten in place (as kubelet does, so the
/// pod's running containers see the same file) and only when its content changes.
pub fn add_hosts_file(
    cfg: &mut ContainerConfig,
    pod: &StaticPod,
    pod_ip: &str,
    ctx: &NodeContext,
) -> Result<(), String> {
    let spec = pod.spec();
    let host_network = spec.host_network.unwrap_or(false);
    if cfg.mounts.iter().any(|m| m.container_path == ETC_HOSTS)
        || (!host_network && pod_ip.is_empty())
    {
        return Ok(());
    }
    let aliases = spec.host_aliases.as_deref().unwrap_or_default();
    let content = if host_network {
        let node = std::fs::read_to_string(ETC_HOSTS)
            .map_err(|e| format!("reading the node's {ETC_HOSTS}: {e}"))?;
        node_hosts_content(&node, aliases)
    } else {
        managed_hosts_content(
            &[pod_ip.to_string()],
            &pod_hostname(pod),
            &pod_host_domain(pod),
            aliases,
        )
    };
    let file = hosts_file_path(ctx, &pod.uid);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(content.as_str()) {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        std::fs::write(&file, &content).map_err(|e| format!("writing {}: {e}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("setting the mode of {}: {e}", file.display()))?;
    }
    cfg.mounts.push(Mount {
        container_path: ETC_HOSTS.into(),
        host_path: file,
        readonly: false,
        propagation: "None".into(),
    });
    Ok(())
}

/// kubelet's termination message of an exited container: the file at `terminationMessagePath`
/// (at most 4 KiB), or, with `FallbackToLogsOnError` and a failed container whose file is
/// empty, the end of its log (80 lines, at most 2 KiB).
pub fn termination_message(
    pod: &StaticPod,
    c: &staticlet_runtime::ContainerStatus,
    ctx: &NodeContext,
) -> Option<String> {
    const MAX_FILE: usize = 4096;
    const MAX_LOG: usize = 2048;
    let spec = pod.spec();
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|s| s.name == c.name)?;
    let read = |p: &Path, max: usize| -> Option<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::open(p)
            .ok()?
            .take(max as u64)
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    };
    let file = termination_log_path(ctx, &pod.uid, &c.name, c.attempt);
    let from_file = read(&file, MAX_FILE).unwrap_or_default();
    if !from_file.is_empty() {
        return Some(String::from_utf8_lossy(&from_file).into_owned());
    }
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if !fallback || c.exit_code == Some(0) {
        return None;
    }
    let log = std::fs::read_to_string(&c.log_path).ok()?;
    let lines: Vec<&str> = log.lines().collect();
    let mut text = String::new();
    for l in &lines[lines.len().saturating_sub(80)..] {
        // CRI log lines: <time> <stream> <F|P> <text>
        let mut parts = l.splitn(4, ' ');
        let (_, _, tag, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
        text.push_str(msg.unwrap_or(""));
        if tag.is_some_and(|t| t.starts_with('F')) {
            text.push('\n');
        }
    }
    let start = text.len().saturating_sub(MAX_LOG);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    Some(text[start..].to_string()).filter(|t| !t.is_empty())
}

/// Removes everything the agent kept for a pod (volumes of emptyDir and downwardAPI).
/// hostPath volumes are never touched. Idempotent.
pub fn cleanup_pod_dir(ctx: &NodeContext, uid: &str) -> std::io::Result<()> {
    // Memory-backed emptyDirs are tmpfs mounts: unmount them first (never follow into a mount).
    let empty = ctx.pod_dir(uid).join("volumes/kubernetes.io~empty-dir");
    for e in std::fs::read_dir(&empty).into_iter().flatten().flatten() {
        if is_mountpoint(&e.path()) {
            nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH)
                .map_err(std::io::Error::from)?;
        }
    }
    match std::fs::remove_dir_all(ctx.pod_dir(uid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node `n` with its root and log directories under `dir`.
    fn node_in(dir: &Path, host_ip: &str) -> NodeContext {
        NodeContext {
            node_name: "n".into(),
            root_dir: dir.join("root"),
            log_dir: dir.join("logs"),
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env: HashMap<String, String> = [("A".into(), "1".into()), ("B".into(), "two".into())]
            .into_iter()
            .collect();
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y$(B)", "x1ytwo"),
            ("$(C)", "$(C)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$(A", "$(A"),
            ("a$", "a$"),
            ("héllo $(B)", "héllo two"),
        ] {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    #[test]
    fn termination_message_from_file_or_log_tail() {
        let d = tempfile::tempdir().unwrap();
        let ctx = node_in(d.path(), "127.0.0.1");
        let m = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: b, terminationMessagePolicy: FallbackToLogsOnError}\n";
        let pod = staticlet_manifest::load(
            m.as_bytes(),
            &staticlet_manifest::Origin::File("/m/p.yaml".into()),
            "n",
        )
        .unwrap();
        let log = d.path().join("0.log");
        std::fs::write(&log, "2026-01-01T00:00:00Z stdout F first\n2026-01-01T00:00:01Z stderr P par\n2026-01-01T00:00:01Z stderr F tial\n").unwrap();
        let status = staticlet_runtime::ContainerStatus {
            id: staticlet_runtime::ContainerId("x".into()),
            sandbox_id: staticlet_runtime::SandboxId("s".into()),
            name: "a".into(),
            attempt: 0,
            state: staticlet_runtime::ContainerState::Exited,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            exit_code: Some(1),
            reason: String::new(),
            message: String::new(),
            image: Default::default(),
            image_ref: String::new(),
            labels: Default::default(),
            annotations: Default::default(),
            log_path: log,
        };
        assert_eq!(
            termination_message(&pod, &status, &ctx).as_deref(),
            Some("first\npartial\n")
        );
        let ok = staticlet_runtime::ContainerStatus {
            exit_code: Some(0),
            ..status.clone()
        };
        assert_eq!(
            termination_message(&pod, &ok, &ctx),
            None,
            "no fallback for a success"
        );
        let f = termination_log_path(&ctx, &pod.uid, "a", 0);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, "from the file").unwrap();
        assert_eq!(
            termination_message(&pod, &status, &ctx).as_deref(),
            Some("from the file")
        );
    }

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.into(),
            hostnames: Some(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    /// kubelet's `managedHostsFileContent` and `nodeHostsFileContent`, line for line.
    #[test]
    fn hosts_file_content_is_kubelets() {
        const LOCAL: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
        let managed = |rest: &str| format!("# Kubernetes-managed hosts file.\n{LOCAL}{rest}");
        for (ips, hostname, domain, aliases, want) in [
            (vec![], "web", "", vec![], managed("")),
            (
                vec!["10.0.0.5"],
                "web",
                "",
                vec![],
                managed("10.0.0.5\tweb\n"),
            ),
            (
                vec!["10.0.0.5", "fd00::5"],
                "web",
                "sub.default.svc.",
                vec![],
                managed("10.0.0.5\tweb.sub.default.svc.\tweb\nfd00::5\tweb.sub.default.svc.\tweb\n"),
            ),
            (
                vec!["10.0.0.5"],
                "web",
                "",
                vec![alias("10.1.1.1", &["a", "b.example"]), alias("10.1.1.2", &["c"])],
                managed("10.0.0.5\tweb\n\n# Entries added by HostAliases.\n10.1.1.1\ta\tb.example\n10.1.1.2\tc\n"),
            ),
        ] {
            let ips: Vec<String> = ips.into_iter().map(String::from).collect();
            assert_eq!(
                managed_hosts_content(&ips, hostname, domain, &aliases),
                want,
                "{ips:?} {domain:?} {aliases:?}"
            );
        }
        let node = "127.0.0.1 localhost\n192.0.2.1 node1\n";
        for (aliases, want) in [
            (
                vec![],
                "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.1 node1\n".to_string(),
            ),
            (
                vec![alias("10.1.1.1", &["a"])],
                "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.1 node1\n\n# Entries added by HostAliases.\n10.1.1.1\ta\n".to_string(),
            ),
        ] {
            assert_eq!(node_hosts_content(node, &aliases), want);
        }
    }

    #[test]
    fn hosts_file_is_mounted_by_kubelets_rules() {
        let d = tempfile::tempdir().unwrap();
        let ctx = node_in(d.path(), "192.0.2.10");
        let load = |spec: &str| {
            let m = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}  containers:\n  - {{name: a, image: b}}\n");
            staticlet_manifest::load(
                m.as_bytes(),
                &staticlet_manifest::Origin::File("/m/p.yaml".into()),
                "n",
            )
            .unwrap()
        };
        let hosts_mount = |cfg: &ContainerConfig| {
            cfg.mounts
                .iter()
                .find(|m| m.container_path == "/etc/hosts")
                .cloned()
        };
        // Pod network: the pod's IP and hostname (`<name>-<node>`, a subdomain's FQDN), aliases.
        let pod = load("  subdomain: sub\n  hostAliases:\n  - {ip: 10.1.1.1, hostnames: [a, b]}\n");
        let mut cfg = ContainerConfig::default();
        add_hosts_file(&mut cfg, &pod, "10.0.0.5", &ctx).unwrap();
        let m = hosts_mount(&cfg).expect("mounted");
        assert_eq!(m.host_path, ctx.pod_dir(&pod.uid).join("etc-hosts"));
        assert!(!m.readonly);
        let text = std::fs::read_to_string(&m.host_path).unwrap();
        assert!(
            text.starts_with("# Kubernetes-managed hosts file.\n")
                && text.contains("10.0.0.5\tp-n.sub.default.svc.\tp-n\n")
                && text.ends_with("# Entries added by HostAliases.\n10.1.1.1\ta\tb\n"),
            "{text}"
        );
        let mode = std::fs::metadata(&m.host_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Before the pod has an IP: not mounted (kubelet's shouldMountHostsFile).
        let mut cfg = ContainerConfig::default();
        add_hosts_file(&mut cfg, &pod, "", &ctx).unwrap();
        assert_eq!(hosts_mount(&cfg), None);
        // The container mounts /etc/hosts itself: left alone.
        let own = Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/elsewhere".into(),
            readonly: true,
            propagation: "None".into(),
        };
        let mut cfg = ContainerConfig {
            mounts: vec![own.clone()],
            ..Default::default()
        };
        add_hosts_file(&mut cfg, &pod, "10.0.0.5", &ctx).unwrap();
        assert_eq!(cfg.mounts, vec![own]);
        // hostNetwork: the node's /etc/hosts under its header, then the aliases.
        let pod = load("  hostNetwork: true\n  hostAliases:\n  - {ip: 10.1.1.1, hostnames: [a]}\n");
        let mut cfg = ContainerConfig::default();
        add_hosts_file(&mut cfg, &pod, "", &ctx).unwrap();
        let text = std::fs::read_to_string(hosts_mount(&cfg).unwrap().host_path).unwrap();
        let node = std::fs::read_to_string("/etc/hosts").unwrap();
        assert_eq!(
            text,
            format!("# Kubernetes-managed hosts file (host network).\n{node}\n# Entries added by HostAliases.\n10.1.1.1\ta\n")
        );
    }

    #[test]
    fn next_attempt_from_log_names_table() {
        let cases: &[(&[&str], u32)] = &[
            (&[], 0),
            (&["0.log"], 1),
            (&["0.log", "3.log", "1.log"], 4),
            (&["2.log.20261206-230000", "1.log"], 3),
            (&["x.log", "1x.log", ".log", "5.logs", "7.txt", "-1.log"], 0),
            (&["4294967295.log"], u32::MAX),
        ];
        for (names, want) in cases {
            assert_eq!(
                next_attempt_from_log_names(names.iter().copied()),
                *want,
                "{names:?}"
            );
        }
        let d = tempfile::tempdir().unwrap();
        assert_eq!(next_attempt_from_logs(&d.path().join("missing")), 0);
        std::fs::write(d.path().join("2.log"), "").unwrap();
        std::fs::create_dir(d.path().join("9.log")).unwrap();
        assert_eq!(
            next_attempt_from_logs(d.path()),
            3,
            "directories do not count"
        );
    }

    #[test]
    fn pod_cgroup_is_removed_in_every_hierarchy_of_the_mount_table() {
        let d = tempfile::tempdir().unwrap();
        let (cpu, unified) = (d.path().join("cpu"), d.path().join("unified"));
        let mountinfo = d.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            format!(
                "32 31 0:29 / {} rw - cgroup cgroup rw,cpu\n41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
                cpu.display(),
                unified.display()
            ),
        )
        .unwrap();
        assert_eq!(pod_cgroup_parent("u1"), "/staticlet/podu1");
        for h in [&cpu, &unified] {
            std::fs::create_dir_all(h.join("staticlet/podu1")).unwrap();
            std::fs::create_dir_all(h.join("staticlet/podu2")).unwrap();
        }
        assert!(remove_pod_cgroup("u1", &mountinfo).unwrap().1.is_empty());
        for h in [&cpu, &unified] {
            assert!(!h.join("staticlet/podu1").exists());
            assert!(h.join("staticlet/podu2").exists(), "another pod's is left");
        }
        assert!(
            remove_pod_cgroup("u1", &mountinfo).unwrap().1.is_empty(),
            "idempotent"
        );
        for bad in ["", "../x", "a/b"] {
            assert!(remove_pod_cgroup(bad, &mountinfo).is_err(), "{bad:?}");
        }
        let e = remove_pod_cgroup("u2", &d.path().join("nope")).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn host_path_types() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("made");
        check_host_path(&dir, "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        check_host_path(&dir, "Directory").unwrap();
        assert!(check_host_path(&dir, "File")
            .unwrap_err()
            .contains("is not a file"));
        let f = d.path().join("sub/f.conf");
        check_host_path(&f, "FileOrCreate").unwrap();
        assert!(f.is_file());
        check_host_path(&f, "File").unwrap();
        assert!(check_host_path(&f, "Directory")
            .unwrap_err()
            .contains("is not a directory"));
        assert!(check_host_path(&d.path().join("nope"), "Directory").is_err());
        assert!(check_host_path(&f, "Socket").is_err());
        check_host_path(Path::new("/dev/null"), "CharDevice").unwrap();
    }
}
