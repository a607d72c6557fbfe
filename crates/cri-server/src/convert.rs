//! Pure conversions of the CRI server: CRI requests into staticlet's runtime types, and
//! staticlet's statuses into CRI answers.
//!
//! This is the reverse direction of the CRI client's [`staticlet_runtime_cri::convert`], whose
//! helpers (states, timestamps, condition names) it reuses; the tests check round trips through
//! both. A request asking for something the runtime seam cannot carry (devices, image volumes,
//! a user name to resolve, cpusets, ...) is refused with the reason (`Err(String)`, which the
//! server answers as `InvalidArgument`) rather than silently run without it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;
use staticlet_runtime::{
    AuthConfig, ContainerConfig, ContainerState, ContainerStats, ContainerStatus, DnsConfig, Image,
    ImageSpec, LabelSelector, Labels, Mount, PortMapping, Resources, RuntimeStatus, SandboxConfig,
    SandboxState, SandboxStatus, Seccomp, SecurityContext,
};
use staticlet_runtime_cri::convert as client;

/// What `ExecSync` runs for when the request gives no timeout (CRI's 0: none). The runtime
/// seam always takes one; a day is "none" for a synchronous command.
pub const EXEC_SYNC_NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn labels(m: HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

fn to_map(l: &Labels) -> HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A time as CRI's nanoseconds since the epoch (0 for times before it).
pub fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn opt_nanos(t: Option<SystemTime>) -> i64 {
    t.map_or(0, nanos)
}

/// A name that ends up in paths and cgroups (a pod's name, namespace and UID, a container's
/// name): no `/`, no NUL, not `.` or `..`.
fn check_name(what: &str, v: &str, required: bool) -> Result<(), String> {
    if v.is_empty() {
        return if required {
            Err(format!("{what} is required"))
        } else {
            Ok(())
        };
    }
    if v == "." || v == ".." || v.contains('/') || v.contains('\0') {
        return Err(format!(
            "{what} {v:?} is not a valid name (no '/', NUL, '.' or '..')"
        ));
    }
    Ok(())
}

fn protocol_name(p: i32) -> Result<String, String> {
    match cri::Protocol::try_from(p) {
        Ok(cri::Protocol::Tcp) => Ok("TCP".into()),
        Ok(cri::Protocol::Udp) => Ok("UDP".into()),
        Ok(cri::Protocol::Sctp) => Ok("SCTP".into()),
        Err(_) => Err(format!("unknown port protocol {p}")),
    }
}

fn propagation_name(p: i32) -> Result<String, String> {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationPrivate) => Ok("None".into()),
        Ok(cri::MountPropagation::PropagationHostToContainer) => Ok("HostToContainer".into()),
        Ok(cri::MountPropagation::PropagationBidirectional) => Ok("Bidirectional".into()),
        Err(_) => Err(format!("unknown mount propagation {p}")),
    }
}

/// The namespace flags of a sandbox from its CRI namespace options: (hostNetwork, hostPID,
/// hostIPC, shareProcessNamespace). Absent options are CRI's defaults (pod network and IPC,
/// a PID namespace per container).
fn namespaces(o: Option<&cri::NamespaceOption>) -> Result<(bool, bool, bool, bool), String> {
    let Some(o) = o else {
        return Ok((false, false, false, false));
    };
    let mode = |what: &str, m: i32| {
        cri::NamespaceMode::try_from(m).map_err(|_| format!("unknown {what} namespace mode {m}"))
    };
    use cri::NamespaceMode::{Container, Node, Pod, Target};
    let host_network = match mode("network", o.network)? {
        Pod => false,
        Node => true,
        m @ (Container | Target) => {
            return Err(format!(
                "network namespace mode {} is not supported for a sandbox",
                m.as_str_name()
            ))
        }
    };
    let (host_pid, share) = match mode("pid", o.pid)? {
        Container => (false, false),
        Pod => (false, true),
        Node => (true, false),
        Target => return Err("pid namespace mode TARGET is not supported".into()),
    };
    let host_ipc = match mode("ipc", o.ipc)? {
        Pod => false,
        Node => true,
        m @ (Container | Target) => {
            return Err(format!(
                "ipc namespace mode {} is not supported for a sandbox",
                m.as_str_name()
            ))
        }
    };
    if let Some(u) = &o.userns_options {
        if u.mode != Node as i32 {
            return Err("user namespaces are not supported".into());
        }
    }
    Ok((host_network, host_pid, host_ipc, share))
}

/// A sandbox's configuration from CRI's `RunPodSandbox`.
///
/// Metadata with a name and a UID is required (the UID names the pod's cgroup, the name goes
/// into the pod network's arguments); the log directory, when given, must be absolute. The
/// sandbox's own security context (its pause container's, in other runtimes) has nothing to
/// apply to here: there is no pause process.
pub fn sandbox_config_from_cri(
    c: cri::PodSandboxConfig,
    runtime_handler: String,
) -> Result<SandboxConfig, String> {
    let md = c
        .metadata
        .ok_or("sandbox config must include metadata (name, uid, namespace)")?;
    check_name("metadata.name", &md.name, true)?;
    check_name("metadata.uid", &md.uid, true)?;
    check_name("metadata.namespace", &md.namespace, false)?;
    if !c.log_directory.is_empty() && !Path::new(&c.log_directory).is_absolute() {
        return Err(format!(
            "log_directory {:?} must be an absolute path",
            c.log_directory
        ));
    }
    let linux = c.linux.unwrap_or_default();
    let (host_network, host_pid, host_ipc, share_process_namespace) = namespaces(
        linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.as_ref()),
    )?;
    Ok(SandboxConfig {
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        attempt: md.attempt,
        hostname: c.hostname,
        log_directory: PathBuf::from(c.log_directory),
        dns: c.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(|p| {
                Ok(PortMapping {
                    protocol: protocol_name(p.protocol)?,
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
            })
            .collect::<Result<_, String>>()?,
        labels: labels(c.labels),
        annotations: labels(c.annotations),
        host_network,
        host_pid,
        host_ipc,
        share_process_namespace,
        cgroup_parent: linux.cgroup_parent,
        sysctls: labels(linux.sysctls),
        runtime_handler,
    })
}

/// A sandbox with a network (UTS) namespace of its own but no hostname gets the node's, as
/// containerd gives it (kubelet always sends the pod's; `crictl runp` configs may not).
pub fn default_hostname(config: &mut SandboxConfig, node_hostname: &str) {
    if config.hostname.is_empty() && !config.host_network {
        config.hostname = node_hostname.trim().to_string();
    }
}

fn mount_from_cri(m: cri::Mount) -> Result<Mount, String> {
    if !Path::new(&m.container_path).is_absolute() {
        return Err(format!(
            "mount container_path {:?} must be an absolute path",
            m.container_path
        ));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(format!(
            "mount {}: image volumes are not supported",
            m.container_path
        ));
    }
    if m.host_path.is_empty() {
        return Err(format!("mount {}: host_path is required", m.container_path));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(format!(
            "mount {}: ID-mapped mounts are not supported",
            m.container_path
        ));
    }
    if m.recursive_read_only {
        return Err(format!(
            "mount {}: recursive read-only mounts are not supported",
            m.container_path
        ));
    }
    Ok(Mount {
        propagation: propagation_name(m.propagation)?,
        container_path: m.container_path,
        host_path: PathBuf::from(m.host_path),
        readonly: m.readonly,
    })
}

/// The seccomp setting of a container: the `seccomp` profile when given, else the deprecated
/// `seccomp_profile_path` (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<absolute path>`; empty is unconfined, Kubernetes' default).
pub fn seccomp_from_cri(
    profile: Option<&cri::SecurityProfile>,
    path: &str,
) -> Result<Seccomp, String> {
    use cri::security_profile::ProfileType;
    let localhost = |p: &str| {
        if Path::new(p).is_absolute() {
            Ok(Seccomp::Localhost(PathBuf::from(p)))
        } else {
            Err(format!(
                "seccomp localhost profile {p:?} must be an absolute path"
            ))
        }
    };
    match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Seccomp::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Seccomp::Unconfined),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(format!("unknown seccomp profile type {}", p.profile_type)),
        },
        None => match path {
            "" | "unconfined" => Ok(Seccomp::Unconfined),
            "runtime/default" | "docker/default" => Ok(Seccomp::RuntimeDefault),
            other => match other.strip_prefix("localhost/") {
                Some(p) => localhost(p),
                None => Err(format!("unknown seccomp_profile_path {other:?}")),
            },
        },
    }
}

fn security_from_cri(s: cri::LinuxContainerSecurityContext) -> Result<SecurityContext, String> {
    if !s.run_as_username.is_empty() {
        return Err(format!(
            "run_as_username {:?} is not supported: give run_as_user (a UID)",
            s.run_as_username
        ));
    }
    let caps = s.capabilities.unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        return Err("ambient capabilities are not supported".into());
    }
    Ok(SecurityContext {
        privileged: s.privileged,
        run_as_user: s.run_as_user.map(|v| v.value),
        run_as_group: s.run_as_group.map(|v| v.value),
        supplemental_groups: s.supplemental_groups,
        readonly_rootfs: s.readonly_rootfs,
        add_capabilities: caps.add_capabilities,
        drop_capabilities: caps.drop_capabilities,
        no_new_privs: s.no_new_privs,
        // CRI has no such field: kubelet checks runAsNonRoot itself before creating.
        run_as_non_root: false,
        // Deprecated in CRI, still what older clients send.
        #[allow(deprecated)]
        seccomp: seccomp_from_cri(s.seccomp.as_ref(), &s.seccomp_profile_path)?,
    })
}

fn resources_from_cri(r: cri::LinuxContainerResources) -> Result<Resources, String> {
    if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() {
        return Err("cpuset_cpus and cpuset_mems are not supported".into());
    }
    if !r.unified.is_empty() {
        return Err("unified cgroup v2 settings are not supported".into());
    }
    // kubelet sends a zero limit for every huge page size the node has: only a real limit is
    // something this runtime would fail to apply.
    if r.hugepage_limits.iter().any(|h| h.limit != 0) {
        return Err("huge page limits are not supported".into());
    }
    Ok(Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
    })
}

/// A container's configuration from CRI's `CreateContainer`.
///
/// Metadata with a name and an image are required. The container joins its sandbox's
/// namespaces whatever its own `namespace_options` say; masked and read-only paths are the
/// runtime's defaults; the stop signal is the image's.
pub fn container_config_from_cri(c: cri::ContainerConfig) -> Result<ContainerConfig, String> {
    let md = c
        .metadata
        .ok_or("container config must include metadata (name)")?;
    check_name("metadata.name", &md.name, true)?;
    let image = c.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err("container config must name an image".into());
    }
    if !c.devices.is_empty() || !c.cdi_devices.is_empty() {
        return Err("devices are not supported".into());
    }
    let linux = c.linux.unwrap_or_default();
    Ok(ContainerConfig {
        name: md.name,
        attempt: md.attempt,
        image: ImageSpec { image },
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts: c
            .mounts
            .into_iter()
            .map(mount_from_cri)
            .collect::<Result<_, _>>()?,
        labels: labels(c.labels),
        annotations: labels(c.annotations),
        log_path: PathBuf::from(c.log_path),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: resources_from_cri(linux.resources.unwrap_or_default())?,
        security: security_from_cri(linux.security_context.unwrap_or_default())?,
        stop_signal: String::new(),
    })
}

/// Registry credentials from CRI's `AuthConfig`.
pub fn auth_from_cri(a: cri::AuthConfig) -> AuthConfig {
    AuthConfig {
        username: a.username,
        password: a.password,
        auth: a.auth,
        server_address: a.server_address,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }
}

/// `ExecSync`'s timeout: CRI's whole seconds, 0 (or less) meaning none.
pub fn exec_sync_timeout(secs: i64) -> Duration {
    match u64::try_from(secs) {
        Ok(s) if s > 0 => Duration::from_secs(s).min(EXEC_SYNC_NO_TIMEOUT),
        _ => EXEC_SYNC_NO_TIMEOUT,
    }
}

/// `StopContainer`'s grace period: CRI's whole seconds (a negative one is none).
pub fn stop_timeout(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// CRI's sandbox state.
pub fn sandbox_state_to_cri(s: SandboxState) -> cri::PodSandboxState {
    match s {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

/// CRI's container state.
pub fn container_state_to_cri(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

fn sandbox_metadata(s: &SandboxStatus) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: s.name.clone(),
        uid: s.uid.clone(),
        namespace: s.namespace.clone(),
        attempt: s.attempt,
    }
}

/// A `ListPodSandbox` item.
pub fn sandbox_to_cri(s: &SandboxStatus) -> cri::PodSandbox {
    cri::PodSandbox {
        id: s.id.0.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: sandbox_state_to_cri(s.state) as i32,
        created_at: nanos(s.created_at),
        labels: to_map(&s.labels),
        annotations: to_map(&s.annotations),
        runtime_handler: String::new(),
    }
}

/// A `PodSandboxStatus` answer (the pod IP in `network`).
pub fn sandbox_status_to_cri(s: &SandboxStatus) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: s.id.0.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: sandbox_state_to_cri(s.state) as i32,
        created_at: nanos(s.created_at),
        network: Some(cri::PodSandboxNetworkStatus {
            ip: s.ip.clone(),
            additional_ips: Vec::new(),
        }),
        linux: None,
        labels: to_map(&s.labels),
        annotations: to_map(&s.annotations),
        runtime_handler: String::new(),
    }
}

fn container_metadata(c: &ContainerStatus) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: c.name.clone(),
        attempt: c.attempt,
    }
}

/// A `ListContainers` item.
pub fn container_to_cri(c: &ContainerStatus) -> cri::Container {
    cri::Container {
        id: c.id.0.clone(),
        pod_sandbox_id: c.sandbox_id.0.clone(),
        metadata: Some(container_metadata(c)),
        image: Some(client::image_spec(&c.image)),
        image_ref: c.image_ref.clone(),
        state: container_state_to_cri(c.state) as i32,
        created_at: nanos(c.created_at),
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        image_id: c.image_ref.clone(),
    }
}

/// A `ContainerStatus` answer.
pub fn container_status_to_cri(c: &ContainerStatus) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: c.id.0.clone(),
        metadata: Some(container_metadata(c)),
        state: container_state_to_cri(c.state) as i32,
        created_at: nanos(c.created_at),
        started_at: opt_nanos(c.started_at),
        finished_at: opt_nanos(c.finished_at),
        exit_code: c.exit_code.unwrap_or(0),
        image: Some(client::image_spec(&c.image)),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        log_path: c.log_path.to_string_lossy().into_owned(),
        image_id: c.image_ref.clone(),
        ..Default::default()
    }
}

/// An image as CRI lists it (`spec` names it by id).
pub fn image_to_cri(i: &Image) -> cri::Image {
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid: None,
        username: String::new(),
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// CRI's runtime conditions (`RuntimeReady`, `NetworkReady`); a false one carries the
/// runtime's message.
pub fn runtime_status_to_cri(s: &RuntimeStatus) -> cri::RuntimeStatus {
    let cond = |kind: &str, ok: bool, reason: &str| cri::RuntimeCondition {
        r#type: kind.into(),
        status: ok,
        reason: if ok { String::new() } else { reason.into() },
        message: if ok { String::new() } else { s.message.clone() },
    };
    cri::RuntimeStatus {
        conditions: vec![
            cond(client::RUNTIME_READY, s.runtime_ready, "RuntimeNotReady"),
            cond(
                client::NETWORK_READY,
                s.network_ready,
                "NetworkPluginNotReady",
            ),
        ],
    }
}

/// CRI's stats of a container; `status` (when the container is still there) gives its
/// metadata and annotations.
pub fn container_stats_to_cri(
    s: &ContainerStats,
    status: Option<&ContainerStatus>,
) -> cri::ContainerStats {
    let at = nanos(s.timestamp);
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: s.id.0.clone(),
            metadata: status.map(container_metadata),
            labels: to_map(&s.labels),
            annotations: status.map(|c| to_map(&c.annotations)).unwrap_or_default(),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: s
                .cpu_usage_core_nanos
                .map(|value| cri::UInt64Value { value }),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: at,
            working_set_bytes: s
                .memory_working_set_bytes
                .map(|value| cri::UInt64Value { value }),
            ..Default::default()
        }),
        writable_layer: None,
        swap: None,
    }
}

/// An ID filter as containerd applies it: empty matches everything, otherwise the ID or a
/// prefix of it (what `crictl` prints is a truncated ID).
pub fn id_matches(filter: &str, id: &str) -> bool {
    id.starts_with(filter)
}

/// `ListPodSandbox`'s filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub id: String,
    pub state: Option<SandboxState>,
    pub selector: LabelSelector,
}

impl SandboxFilter {
    /// The filter of a request (none: everything).
    pub fn from_cri(f: Option<cri::PodSandboxFilter>) -> Self {
        let f = f.unwrap_or_default();
        Self {
            id: f.id,
            state: f.state.map(|s| client::sandbox_state(s.state)),
            selector: LabelSelector(labels(f.label_selector)),
        }
    }

    /// Whether a sandbox passes (the label selector included).
    pub fn matches(&self, s: &SandboxStatus) -> bool {
        id_matches(&self.id, &s.id.0)
            && self.state.is_none_or(|st| st == s.state)
            && self.selector.matches(&s.labels)
    }
}

/// `ListContainers`' and `ListContainerStats`' filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    pub id: String,
    pub sandbox_id: String,
    pub state: Option<ContainerState>,
    pub selector: LabelSelector,
}

impl ContainerFilter {
    /// The filter of a `ListContainers` request (none: everything).
    pub fn from_cri(f: Option<cri::ContainerFilter>) -> Self {
        let f = f.unwrap_or_default();
        Self {
            id: f.id,
            sandbox_id: f.pod_sandbox_id,
            state: f.state.map(|s| client::container_state(s.state)),
            selector: LabelSelector(labels(f.label_selector)),
        }
    }

    /// The filter of a `ListContainerStats` request (none: every running container).
    pub fn from_cri_stats(f: Option<cri::ContainerStatsFilter>) -> Self {
        let f = f.unwrap_or_default();
        Self {
            id: f.id,
            sandbox_id: f.pod_sandbox_id,
            state: None,
            selector: LabelSelector(labels(f.label_selector)),
        }
    }

    /// Whether a container passes (the label selector included).
    pub fn matches(&self, c: &ContainerStatus) -> bool {
        id_matches(&self.id, &c.id.0)
            && id_matches(&self.sandbox_id, &c.sandbox_id.0)
            && self.state.is_none_or(|st| st == c.state)
            && self.selector.matches(&c.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staticlet_runtime::{ContainerId, SandboxId};

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sandbox() -> SandboxConfig {
        SandboxConfig {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            attempt: 2,
            hostname: "web".into(),
            log_directory: "/var/log/pods/default_web_u-1".into(),
            dns: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![PortMapping {
                protocol: "UDP".into(),
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            labels: l(&[("app", "web")]),
            annotations: l(&[("note", "x")]),
            host_network: false,
            host_pid: false,
            host_ipc: true,
            share_process_namespace: true,
            cgroup_parent: "/staticlet/podu-1".into(),
            sysctls: l(&[("net.core.somaxconn", "1024")]),
            runtime_handler: String::new(),
        }
    }

    /// What the client sends is what the server reads back, field for field.
    #[test]
    fn sandbox_config_round_trips_through_the_client() {
        let mut host = sandbox();
        host.host_network = true;
        host.host_pid = true;
        host.share_process_namespace = false;
        // The client sends no hostname under hostNetwork (runtimes refuse one there).
        host.hostname = String::new();
        for want in [sandbox(), host] {
            let sent = client::sandbox_config(&want).unwrap();
            let got = sandbox_config_from_cri(sent, String::new()).unwrap();
            assert_eq!(got, want);
        }
        let got =
            sandbox_config_from_cri(client::sandbox_config(&sandbox()).unwrap(), "kata".into())
                .unwrap();
        assert_eq!(got.runtime_handler, "kata");
    }

    #[test]
    fn container_config_round_trips_through_the_client() {
        let want = ContainerConfig {
            name: "app".into(),
            attempt: 3,
            image: ImageSpec {
                image: "busybox:latest".into(),
            },
            command: vec!["sh".into()],
            args: vec!["-c".into(), "sleep 1".into()],
            working_dir: "/tmp".into(),
            envs: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                propagation: "HostToContainer".into(),
            }],
            labels: l(&[("l", "1")]),
            annotations: l(&[("a", "2")]),
            log_path: "app/3.log".into(),
            stdin: true,
            stdin_once: true,
            tty: true,
            resources: Resources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                oom_score_adj: 900,
            },
            security: SecurityContext {
                privileged: true,
                run_as_user: Some(1000),
                run_as_group: Some(2000),
                supplemental_groups: vec![3000],
                readonly_rootfs: true,
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                no_new_privs: true,
                run_as_non_root: false,
                seccomp: Seccomp::Localhost("/etc/seccomp/p.json".into()),
            },
            stop_signal: String::new(),
        };
        let sent = client::container_config(&want, &sandbox()).unwrap();
        assert_eq!(container_config_from_cri(sent).unwrap(), want);
        // Unset optional parts are CRI's defaults.
        let minimal = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = container_config_from_cri(minimal).unwrap();
        assert_eq!(got.security, SecurityContext::default());
        assert_eq!(got.resources, Resources::default());
        assert!(got.log_path.as_os_str().is_empty());
    }

    #[test]
    fn bad_sandbox_configs_are_refused_with_the_reason() {
        let base = || client::sandbox_config(&sandbox()).unwrap();
        let md = |name: &str, uid: &str, ns: &str| cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: ns.into(),
                attempt: 0,
            }),
            ..base()
        };
        let ns = |network: cri::NamespaceMode, pid: cri::NamespaceMode| {
            let mut c = base();
            let o = c
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap()
                .namespace_options
                .as_mut()
                .unwrap();
            o.network = network as i32;
            o.pid = pid as i32;
            c
        };
        let table: Vec<(cri::PodSandboxConfig, &str)> = vec![
            (
                cri::PodSandboxConfig {
                    metadata: None,
                    ..base()
                },
                "must include metadata",
            ),
            (md("", "u", "ns"), "metadata.name is required"),
            (md("web", "", "ns"), "metadata.uid is required"),
            (
                md("web", "../x", "ns"),
                "metadata.uid \"../x\" is not a valid name",
            ),
            (
                md("web", "u", ".."),
                "metadata.namespace \"..\" is not a valid name",
            ),
            (md("a/b", "u", "ns"), "metadata.name \"a/b\""),
            (
                cri::PodSandboxConfig {
                    log_directory: "logs".into(),
                    ..base()
                },
                "must be an absolute path",
            ),
            (
                ns(cri::NamespaceMode::Container, cri::NamespaceMode::Pod),
                "network namespace mode CONTAINER is not supported",
            ),
            (
                ns(cri::NamespaceMode::Pod, cri::NamespaceMode::Target),
                "pid namespace mode TARGET",
            ),
            (
                cri::PodSandboxConfig {
                    port_mappings: vec![cri::PortMapping {
                        protocol: 7,
                        ..Default::default()
                    }],
                    ..base()
                },
                "unknown port protocol 7",
            ),
        ];
        for (c, want) in table {
            let e = sandbox_config_from_cri(c, String::new()).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        // An empty namespace is allowed (crictl's examples have one, kubelet always does).
        assert!(sandbox_config_from_cri(md("web", "u", ""), String::new()).is_ok());
        // No linux section: CRI's default namespaces.
        let got = sandbox_config_from_cri(
            cri::PodSandboxConfig {
                linux: None,
                ..base()
            },
            String::new(),
        )
        .unwrap();
        assert!(!got.host_network && !got.host_pid && !got.host_ipc);
        assert!(!got.share_process_namespace);
    }

    #[test]
    fn bad_container_configs_are_refused_with_the_reason() {
        let base = || cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mount = |m: cri::Mount| cri::ContainerConfig {
            mounts: vec![cri::Mount {
                container_path: "/d".into(),
                host_path: "/h".into(),
                ..m
            }],
            ..base()
        };
        let linux =
            |resources: cri::LinuxContainerResources,
             security: cri::LinuxContainerSecurityContext| cri::ContainerConfig {
                linux: Some(cri::LinuxContainerConfig {
                    resources: Some(resources),
                    security_context: Some(security),
                }),
                ..base()
            };
        let table: Vec<(cri::ContainerConfig, &str)> = vec![
            (
                cri::ContainerConfig {
                    metadata: None,
                    ..base()
                },
                "must include metadata",
            ),
            (
                cri::ContainerConfig {
                    image: None,
                    ..base()
                },
                "must name an image",
            ),
            (
                cri::ContainerConfig {
                    devices: vec![cri::Device::default()],
                    ..base()
                },
                "devices are not supported",
            ),
            (
                mount(cri::Mount {
                    image: Some(cri::ImageSpec {
                        image: "data:1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                "image volumes are not supported",
            ),
            (
                cri::ContainerConfig {
                    mounts: vec![cri::Mount {
                        container_path: "rel".into(),
                        host_path: "/h".into(),
                        ..Default::default()
                    }],
                    ..base()
                },
                "must be an absolute path",
            ),
            (
                mount(cri::Mount {
                    propagation: 9,
                    ..Default::default()
                }),
                "unknown mount propagation 9",
            ),
            (
                linux(
                    cri::LinuxContainerResources {
                        cpuset_cpus: "0-1".into(),
                        ..Default::default()
                    },
                    Default::default(),
                ),
                "cpuset_cpus",
            ),
            (
                linux(
                    cri::LinuxContainerResources {
                        hugepage_limits: vec![cri::HugepageLimit {
                            page_size: "2MB".into(),
                            limit: 1 << 21,
                        }],
                        ..Default::default()
                    },
                    Default::default(),
                ),
                "huge page limits",
            ),
            (
                linux(
                    Default::default(),
                    cri::LinuxContainerSecurityContext {
                        run_as_username: "nobody".into(),
                        ..Default::default()
                    },
                ),
                "run_as_username \"nobody\" is not supported",
            ),
            (
                linux(
                    Default::default(),
                    #[allow(deprecated)]
                    cri::LinuxContainerSecurityContext {
                        seccomp_profile_path: "localhost/rel.json".into(),
                        ..Default::default()
                    },
                ),
                "must be an absolute path",
            ),
        ];
        for (c, want) in table {
            let e = container_config_from_cri(c).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        // kubelet's zero huge page limits are accepted.
        let zero = linux(
            cri::LinuxContainerResources {
                hugepage_limits: vec![cri::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                }],
                ..Default::default()
            },
            Default::default(),
        );
        assert!(container_config_from_cri(zero).is_ok());
    }

    #[test]
    fn an_empty_hostname_is_the_nodes() {
        for (hostname, host_network, want) in
            [("", false, "node-1"), ("web", false, "web"), ("", true, "")]
        {
            let mut c = SandboxConfig {
                hostname: hostname.into(),
                host_network,
                ..Default::default()
            };
            default_hostname(&mut c, "node-1\n");
            assert_eq!(c.hostname, want, "{hostname:?} {host_network}");
        }
    }

    #[test]
    fn seccomp_table() {
        use cri::security_profile::ProfileType;
        let p = |t: ProfileType, r: &str| cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        };
        let table: Vec<(Option<cri::SecurityProfile>, &str, Option<Seccomp>)> = vec![
            (None, "", Some(Seccomp::Unconfined)),
            (None, "unconfined", Some(Seccomp::Unconfined)),
            (None, "runtime/default", Some(Seccomp::RuntimeDefault)),
            (None, "docker/default", Some(Seccomp::RuntimeDefault)),
            (
                None,
                "localhost//p.json",
                Some(Seccomp::Localhost("/p.json".into())),
            ),
            (None, "bogus", None),
            (
                Some(p(ProfileType::RuntimeDefault, "")),
                "unconfined",
                Some(Seccomp::RuntimeDefault),
            ),
            (
                Some(p(ProfileType::Unconfined, "")),
                "",
                Some(Seccomp::Unconfined),
            ),
            (
                Some(p(ProfileType::Localhost, "/s.json")),
                "",
                Some(Seccomp::Localhost("/s.json".into())),
            ),
            (Some(p(ProfileType::Localhost, "s.json")), "", None),
        ];
        for (profile, path, want) in table {
            assert_eq!(
                seccomp_from_cri(profile.as_ref(), path).ok(),
                want,
                "{profile:?} {path:?}"
            );
        }
    }

    fn status(state: ContainerState) -> ContainerStatus {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        ContainerStatus {
            id: ContainerId("c1".into()),
            sandbox_id: SandboxId("sb".into()),
            name: "app".into(),
            attempt: 1,
            state,
            created_at: t(1_700_000_000),
            started_at: (state != ContainerState::Created).then(|| t(1_700_000_005)),
            finished_at: (state == ContainerState::Exited).then(|| t(1_700_000_009)),
            exit_code: (state == ContainerState::Exited).then_some(3),
            reason: "Error".into(),
            message: "boom".into(),
            image: ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
            },
            image_ref: "sha256:abc".into(),
            labels: l(&[("l", "1")]),
            annotations: l(&[("a", "2")]),
            log_path: "/var/log/pods/x/app/1.log".into(),
        }
    }

    /// The client reads back what the server answers, for every state.
    #[test]
    fn container_status_round_trips_through_the_client() {
        for state in [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Exited,
            ContainerState::Unknown,
        ] {
            let want = status(state);
            let got = client::container_status_from_cri(
                container_status_to_cri(&want),
                want.sandbox_id.0.clone(),
            );
            assert_eq!(got, want);
            let item = container_to_cri(&want);
            assert_eq!(item.pod_sandbox_id, "sb");
            assert_eq!(client::container_state(item.state), state);
            assert_eq!(item.image.unwrap().image, want.image.image);
            assert_eq!(
                (item.image_ref.as_str(), item.image_id.as_str()),
                ("sha256:abc", "sha256:abc")
            );
        }
    }

    #[test]
    fn sandbox_status_round_trips_through_the_client() {
        for (state, ip) in [
            (SandboxState::Ready, "10.88.0.4"),
            (SandboxState::NotReady, ""),
        ] {
            let want = SandboxStatus {
                id: SandboxId("sb".into()),
                name: "web".into(),
                namespace: "default".into(),
                uid: "u".into(),
                attempt: 1,
                state,
                created_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                ip: ip.into(),
                labels: l(&[("l", "1")]),
                annotations: l(&[("a", "2")]),
            };
            assert_eq!(
                client::sandbox_status_from_cri(sandbox_status_to_cri(&want)),
                want
            );
            let item = sandbox_to_cri(&want);
            assert_eq!(client::sandbox_state(item.state), state);
            assert_eq!(item.metadata.unwrap().uid, "u");
            assert_eq!(item.created_at, 1_700_000_000_123_000_000);
        }
    }

    #[test]
    fn runtime_status_round_trips_through_the_client() {
        for (r, n) in [(true, true), (true, false), (false, false)] {
            let s = RuntimeStatus {
                runtime_ready: r,
                network_ready: n,
                message: if r && n {
                    String::new()
                } else {
                    "cni not ready".into()
                },
            };
            let sent = runtime_status_to_cri(&s);
            let back = client::runtime_status_from_cri(Some(sent.clone()));
            assert_eq!((back.runtime_ready, back.network_ready), (r, n));
            for c in &sent.conditions {
                assert_eq!(c.message.is_empty(), c.status, "{c:?}");
            }
            if !n {
                assert!(back.message.contains("NetworkPluginNotReady"), "{back:?}");
            }
        }
    }

    #[test]
    fn stats_and_images() {
        let st = status(ContainerState::Running);
        let stats = ContainerStats {
            id: st.id.clone(),
            labels: st.labels.clone(),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
            cpu_usage_core_nanos: Some(42),
            memory_working_set_bytes: None,
        };
        let sent = container_stats_to_cri(&stats, Some(&st));
        let a = sent.attributes.as_ref().unwrap();
        assert_eq!(a.metadata.as_ref().unwrap().name, "app");
        assert_eq!(a.annotations.get("a").map(String::as_str), Some("2"));
        let back = client::container_stats_from_cri(sent, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(back, stats);
        let bare = container_stats_to_cri(&stats, None);
        assert_eq!(bare.attributes.unwrap().metadata, None);

        let img = Image {
            id: "sha256:abc".into(),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec!["docker.io/library/busybox@sha256:def".into()],
            size: 4096,
        };
        let c = image_to_cri(&img);
        assert_eq!(c.spec.as_ref().unwrap().image, "sha256:abc");
        assert_eq!(client::image_from_cri(c), img);
    }

    #[test]
    fn timeouts_and_times() {
        assert_eq!(exec_sync_timeout(0), EXEC_SYNC_NO_TIMEOUT);
        assert_eq!(exec_sync_timeout(-5), EXEC_SYNC_NO_TIMEOUT);
        assert_eq!(exec_sync_timeout(3), Duration::from_secs(3));
        assert_eq!(exec_sync_timeout(i64::MAX), EXEC_SYNC_NO_TIMEOUT);
        assert_eq!(stop_timeout(-1), Duration::ZERO);
        assert_eq!(stop_timeout(30), Duration::from_secs(30));
        assert_eq!(nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(nanos(SystemTime::UNIX_EPOCH + Duration::from_nanos(7)), 7);
        let a = auth_from_cri(client::auth_config(&AuthConfig {
            username: "u".into(),
            password: "p".into(),
            auth: "dTpw".into(),
            server_address: "r.example".into(),
            identity_token: "i".into(),
            registry_token: "t".into(),
        }));
        assert_eq!(
            (
                a.username.as_str(),
                a.identity_token.as_str(),
                a.registry_token.as_str()
            ),
            ("u", "i", "t")
        );
    }

    #[test]
    fn filters() {
        let st = status(ContainerState::Running);
        let f = |id: &str, sb: &str, state: Option<cri::ContainerState>, sel: &[(&str, &str)]| {
            ContainerFilter::from_cri(Some(cri::ContainerFilter {
                id: id.into(),
                pod_sandbox_id: sb.into(),
                state: state.map(|s| cri::ContainerStateValue { state: s as i32 }),
                label_selector: to_map(&l(sel)),
            }))
        };
        let table = [
            (f("", "", None, &[]), true),
            (f("c1", "", None, &[]), true),
            (f("c", "", None, &[]), true),
            (f("c2", "", None, &[]), false),
            (f("", "s", None, &[]), true),
            (f("", "x", None, &[]), false),
            (
                f("", "", Some(cri::ContainerState::ContainerRunning), &[]),
                true,
            ),
            (
                f("", "", Some(cri::ContainerState::ContainerExited), &[]),
                false,
            ),
            (f("", "", None, &[("l", "1")]), true),
            (f("", "", None, &[("l", "2")]), false),
        ];
        for (i, (filter, want)) in table.into_iter().enumerate() {
            assert_eq!(filter.matches(&st), want, "row {i}: {filter:?}");
        }
        assert_eq!(ContainerFilter::from_cri(None), ContainerFilter::default());
        assert!(ContainerFilter::default().matches(&st));

        let sb = SandboxStatus {
            id: SandboxId("abcdef".into()),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u".into(),
            attempt: 0,
            state: SandboxState::NotReady,
            created_at: SystemTime::UNIX_EPOCH,
            ip: String::new(),
            labels: l(&[("app", "web")]),
            annotations: Labels::new(),
        };
        let g = |id: &str, state: Option<cri::PodSandboxState>, sel: &[(&str, &str)]| {
            SandboxFilter::from_cri(Some(cri::PodSandboxFilter {
                id: id.into(),
                state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
                label_selector: to_map(&l(sel)),
            }))
        };
        let table = [
            (g("", None, &[]), true),
            (g("abc", None, &[]), true),
            (g("abd", None, &[]), false),
            (
                g("", Some(cri::PodSandboxState::SandboxNotready), &[]),
                true,
            ),
            (g("", Some(cri::PodSandboxState::SandboxReady), &[]), false),
            (g("", None, &[("app", "web")]), true),
            (g("", None, &[("app", "db")]), false),
        ];
        for (i, (filter, want)) in table.into_iter().enumerate() {
            assert_eq!(filter.matches(&sb), want, "row {i}: {filter:?}");
        }
    }
}
