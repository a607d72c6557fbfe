//! Pure conversions between staticlet's runtime types and CRI v1 messages.
//!
//! Everything here is a plain function (no I/O), so the mapping is unit-tested as tables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;
use staticlet_runtime::{
    AuthConfig, ContainerConfig, ContainerEvent, ContainerId, ContainerState, ContainerStats,
    ContainerStatus, DnsConfig, Image, ImageSpec, LabelSelector, Labels, Mount, PortMapping,
    Resources, RuntimeError, RuntimeStatus, SandboxConfig, SandboxId, SandboxState, SandboxStatus,
    Seccomp, SecurityContext,
};

/// CRI's condition type for the runtime being ready.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// CRI's condition type for the pod network being ready.
pub const NETWORK_READY: &str = "NetworkReady";

fn to_map(l: &Labels) -> HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn from_map(m: HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

/// A CRI timestamp (nanoseconds since the epoch) as a `SystemTime`; `None` for 0 (unset).
pub fn time_from_nanos(nanos: i64) -> Option<SystemTime> {
    (nanos > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// The CRI protocol of a port (`TCP` when empty).
pub fn protocol(p: &str) -> Result<cri::Protocol, RuntimeError> {
    match p.to_ascii_uppercase().as_str() {
        "" | "TCP" => Ok(cri::Protocol::Tcp),
        "UDP" => Ok(cri::Protocol::Udp),
        "SCTP" => Ok(cri::Protocol::Sctp),
        other => Err(RuntimeError::InvalidConfig(format!(
            "unsupported port protocol {other:?}"
        ))),
    }
}

/// The CRI mount propagation of a Kubernetes `mountPropagation` (`None` when empty).
pub fn propagation(p: &str) -> Result<cri::MountPropagation, RuntimeError> {
    match p {
        "" | "None" => Ok(cri::MountPropagation::PropagationPrivate),
        "HostToContainer" => Ok(cri::MountPropagation::PropagationHostToContainer),
        "Bidirectional" => Ok(cri::MountPropagation::PropagationBidirectional),
        other => Err(RuntimeError::InvalidConfig(format!(
            "unsupported mount propagation {other:?}"
        ))),
    }
}

fn port_mapping(p: &PortMapping) -> Result<cri::PortMapping, RuntimeError> {
    Ok(cri::PortMapping {
        protocol: protocol(&p.protocol)? as i32,
        container_port: p.container_port,
        host_port: p.host_port,
        host_ip: p.host_ip.clone(),
    })
}

fn dns_config(d: &DnsConfig) -> cri::DnsConfig {
    cri::DnsConfig {
        servers: d.servers.clone(),
        searches: d.searches.clone(),
        options: d.options.clone(),
    }
}

/// The namespace modes of a sandbox: network, pid, ipc.
pub fn namespace_options(c: &SandboxConfig) -> cri::NamespaceOption {
    let mode = |host: bool| {
        if host {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        }
    };
    let pid = if c.host_pid {
        cri::NamespaceMode::Node
    } else if c.share_process_namespace {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: mode(c.host_network) as i32,
        pid: pid as i32,
        ipc: mode(c.host_ipc) as i32,
        ..Default::default()
    }
}

/// CRI's `PodSandboxConfig` for a sandbox.
///
/// The hostname is forced empty under hostNetwork (runtimes refuse a hostname there). Host
/// aliases have no CRI field: the agent writes the pod's `/etc/hosts` and mounts it into each
/// container, as kubelet does.
pub fn sandbox_config(c: &SandboxConfig) -> Result<cri::PodSandboxConfig, RuntimeError> {
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: c.name.clone(),
            uid: c.uid.clone(),
            namespace: c.namespace.clone(),
            attempt: c.attempt,
        }),
        hostname: if c.host_network {
            String::new()
        } else {
            c.hostname.clone()
        },
        log_directory: c.log_directory.to_string_lossy().into_owned(),
        dns_config: c.dns.as_ref().map(dns_config),
        port_mappings: c
            .port_mappings
            .iter()
            .map(port_mapping)
            .collect::<Result<_, _>>()?,
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: c.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(c)),
                ..Default::default()
            }),
            sysctls: to_map(&c.sysctls),
            ..Default::default()
        }),
        windows: None,
    })
}

/// CRI's `SecurityProfile` for a seccomp setting.
pub fn seccomp_profile(s: &Seccomp) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    match s {
        Seccomp::Unconfined => cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
        Seccomp::RuntimeDefault => cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        Seccomp::Localhost(p) => cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: p.to_string_lossy().into_owned(),
        },
    }
}

fn security_context(
    s: &SecurityContext,
    sandbox: &SandboxConfig,
) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: s.add_capabilities.clone(),
            drop_capabilities: s.drop_capabilities.clone(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: s.privileged,
        namespace_options: Some(namespace_options(sandbox)),
        run_as_user: s.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: s.run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups.clone(),
        no_new_privs: s.no_new_privs,
        seccomp: Some(seccomp_profile(&s.seccomp)),
        // kubelet sends its default masked and read-only paths for every container that is not
        // privileged: without them a CRI runtime applies none (its own defaults are replaced).
        masked_paths: confined(s.privileged, staticlet_runtime::confinement::MASKED_PATHS),
        readonly_paths: confined(s.privileged, staticlet_runtime::confinement::READONLY_PATHS),
        ..Default::default()
    }
}

/// kubelet's masked or read-only paths for a container: none when it is privileged.
fn confined(privileged: bool, paths: &[&str]) -> Vec<String> {
    if privileged {
        Vec::new()
    } else {
        paths.iter().map(|p| p.to_string()).collect()
    }
}

fn resources(r: &Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        ..Default::default()
    }
}

fn mount(m: &Mount) -> Result<cri::Mount, RuntimeError> {
    Ok(cri::Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.to_string_lossy().into_owned(),
        readonly: m.readonly,
        propagation: propagation(&m.propagation)? as i32,
        ..Default::default()
    })
}

/// CRI's `ContainerConfig` for a container of the given sandbox.
///
/// `stop_signal` has no field in this CRI version (the runtime uses the image's `StopSignal`).
pub fn container_config(
    c: &ContainerConfig,
    sandbox: &SandboxConfig,
) -> Result<cri::ContainerConfig, RuntimeError> {
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        image: Some(image_spec(&c.image)),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .envs
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: c.mounts.iter().map(mount).collect::<Result<_, _>>()?,
        labels: to_map(&c.labels),
        annotations: to_map(&c.annotations),
        log_path: c.log_path.to_string_lossy().into_owned(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(&c.resources)),
            security_context: Some(security_context(&c.security, sandbox)),
        }),
        ..Default::default()
    })
}

/// CRI's `ImageSpec`.
pub fn image_spec(i: &ImageSpec) -> cri::ImageSpec {
    cri::ImageSpec {
        image: i.image.clone(),
        ..Default::default()
    }
}

/// CRI's `AuthConfig`.
pub fn auth_config(a: &AuthConfig) -> cri::AuthConfig {
    cri::AuthConfig {
        username: a.username.clone(),
        password: a.password.clone(),
        auth: a.auth.clone(),
        server_address: a.server_address.clone(),
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    }
}

/// An image from CRI's `Image`.
pub fn image_from_cri(i: cri::Image) -> Image {
    Image {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
    }
}

/// Why an image would run as root when `runAsNonRoot` is set (kubelet's `verifyRunAsNonRoot`);
/// `None` when it is allowed.
pub fn run_as_non_root_violation(
    s: &SecurityContext,
    image: Option<&cri::Image>,
) -> Option<String> {
    if !s.run_as_non_root {
        return None;
    }
    if let Some(uid) = s.run_as_user {
        return (uid == 0)
            .then(|| "container's runAsUser breaks non-root policy (runAsUser 0)".to_string());
    }
    // Like kubelet: an image that names no user (or is unknown) runs as root.
    let (uid, name) = match image {
        Some(i) => (i.uid.as_ref().map(|u| u.value), i.username.as_str()),
        None => (None, ""),
    };
    match (uid, name) {
        (Some(0), _) | (None, "") => {
            Some("container has runAsNonRoot and image will run as root".to_string())
        }
        (Some(_), _) => None,
        (None, name) => Some(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify \
             user is non-root"
        )),
    }
}

/// A label filter.
pub fn label_filter(s: &LabelSelector) -> HashMap<String, String> {
    to_map(&s.0)
}

/// Our sandbox state.
pub fn sandbox_state(state: i32) -> SandboxState {
    match cri::PodSandboxState::try_from(state) {
        Ok(cri::PodSandboxState::SandboxReady) => SandboxState::Ready,
        _ => SandboxState::NotReady,
    }
}

/// Our container state.
pub fn container_state(state: i32) -> ContainerState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

/// A sandbox status from CRI's `PodSandboxStatus`.
pub fn sandbox_status_from_cri(s: cri::PodSandboxStatus) -> SandboxStatus {
    let md = s.metadata.unwrap_or_default();
    SandboxStatus {
        id: SandboxId(s.id),
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        attempt: md.attempt,
        state: sandbox_state(s.state),
        created_at: time_from_nanos(s.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
        ip: s.network.map(|n| n.ip).unwrap_or_default(),
        labels: from_map(s.labels),
        annotations: from_map(s.annotations),
    }
}

/// A container status from CRI's `ContainerStatus` and the id of the container's sandbox
/// (which CRI's status lacks).
pub fn container_status_from_cri(s: cri::ContainerStatus, sandbox_id: String) -> ContainerStatus {
    let md = s.metadata.unwrap_or_default();
    let state = container_state(s.state);
    ContainerStatus {
        id: ContainerId(s.id),
        sandbox_id: SandboxId(sandbox_id),
        name: md.name,
        attempt: md.attempt,
        state,
        created_at: time_from_nanos(s.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
        started_at: time_from_nanos(s.started_at),
        finished_at: time_from_nanos(s.finished_at),
        exit_code: (state == ContainerState::Exited).then_some(s.exit_code),
        reason: s.reason,
        message: s.message,
        image: ImageSpec {
            image: s.image.map(|i| i.image).unwrap_or_default(),
        },
        image_ref: s.image_ref,
        labels: from_map(s.labels),
        annotations: from_map(s.annotations),
        log_path: PathBuf::from(s.log_path),
    }
}

/// A runtime status from CRI's conditions. A missing condition counts as not ready.
pub fn runtime_status_from_cri(s: Option<cri::RuntimeStatus>) -> RuntimeStatus {
    let conditions = s.map(|s| s.conditions).unwrap_or_default();
    let mut out = RuntimeStatus {
        runtime_ready: false,
        network_ready: false,
        message: String::new(),
    };
    let mut problems = Vec::new();
    for want in [RUNTIME_READY, NETWORK_READY] {
        match conditions.iter().find(|c| c.r#type == want) {
            Some(c) if c.status => {
                if want == RUNTIME_READY {
                    out.runtime_ready = true;
                } else {
                    out.network_ready = true;
                }
            }
            Some(c) => {
                let why = [c.reason.as_str(), c.message.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                problems.push(if why.is_empty() {
                    format!("{want}=false")
                } else {
                    format!("{want}=false ({why})")
                });
            }
            None => problems.push(format!("{want} not reported")),
        }
    }
    out.message = problems.join("; ");
    out
}

/// A container event from CRI's `ContainerEventResponse`.
pub fn event_from_cri(e: cri::ContainerEventResponse) -> ContainerEvent {
    let state = match cri::ContainerEventType::try_from(e.container_event_type) {
        Ok(cri::ContainerEventType::ContainerCreatedEvent) => ContainerState::Created,
        Ok(cri::ContainerEventType::ContainerStartedEvent) => ContainerState::Running,
        Ok(cri::ContainerEventType::ContainerStoppedEvent) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    };
    ContainerEvent {
        container_id: ContainerId(e.container_id),
        pod_uid: e
            .pod_sandbox_status
            .and_then(|s| s.metadata)
            .map(|m| m.uid)
            .unwrap_or_default(),
        state,
    }
}

/// A container's stats from CRI (`None` without attributes: nothing to attribute them to).
pub fn container_stats_from_cri(s: cri::ContainerStats, now: SystemTime) -> Option<ContainerStats> {
    let a = s.attributes?;
    let cpu_time = s.cpu.as_ref().and_then(|c| time_from_nanos(c.timestamp));
    Some(ContainerStats {
        id: ContainerId(a.id),
        labels: from_map(a.labels),
        timestamp: cpu_time.unwrap_or(now),
        cpu_usage_core_nanos: s
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value),
        memory_working_set_bytes: s.memory.and_then(|m| m.working_set_bytes).map(|v| v.value),
    })
}

/// The timeout in whole seconds CRI takes (`StopContainer`, `ExecSync`), rounding up so a
/// sub-second timeout is not turned into "no timeout" (0 means none for ExecSync).
pub fn timeout_secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// The URL a runtime's `Exec` / `PortForward` answered with, as the node API proxies to it:
/// an absolute `http(s)://host[:port]/...` URL, returned unchanged.
///
/// containerd and CRI-O build it from their streaming server's own address (containerd's
/// default: `http://127.0.0.1:<random port>/exec/<token>`, the port taken when the server
/// started listening), which only the runtime knows. kubelet proxies to what it gets
/// (`url.Parse`, then an upgrade-aware proxy), so a relative or host-less URL fails there too;
/// here it is refused with the runtime's answer in the message.
pub fn streaming_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(url.to_string()),
        _ => Err(format!(
            "the runtime's streaming server answered with {url:?}, not an absolute http(s) URL"
        )),
    }
}

/// The runtime's cgroup driver, from its answer to CRI `RuntimeConfig` (kubelet's
/// `getCgroupDriverFromCRI`, v1.34).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedCgroupDriver {
    /// `RuntimeConfig` is not implemented (containerd before 1.7), or the answer has no Linux
    /// part: the runtime does not say, and kubelet uses its configured `cgroupDriver`.
    NotReported,
    Systemd,
    Cgroupfs,
}

/// Reads a `RuntimeConfig` answer as kubelet does: `Unimplemented` or an answer without its
/// Linux part is [`ReportedCgroupDriver::NotReported`] (CRI's enum makes a missing driver read
/// as `SYSTEMD`, its zero value, so the part's absence must be checked first); a driver number
/// CRI does not define is an error, as is any other failure (the caller retries those).
pub fn cgroup_driver_from_cri(
    answer: Result<cri::RuntimeConfigResponse, tonic::Status>,
) -> Result<ReportedCgroupDriver, RuntimeError> {
    let resp = match answer {
        Ok(r) => r,
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            return Ok(ReportedCgroupDriver::NotReported)
        }
        Err(s) => return Err(crate::map_status("RuntimeConfig", "runtime", "", s)),
    };
    let Some(linux) = resp.linux else {
        return Ok(ReportedCgroupDriver::NotReported);
    };
    match cri::CgroupDriver::try_from(linux.cgroup_driver) {
        Ok(cri::CgroupDriver::Systemd) => Ok(ReportedCgroupDriver::Systemd),
        Ok(cri::CgroupDriver::Cgroupfs) => Ok(ReportedCgroupDriver::Cgroupfs),
        Err(_) => Err(RuntimeError::Failed {
            op: "RuntimeConfig",
            message: format!(
                "the runtime returned an unknown cgroup driver {}",
                linux.cgroup_driver
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri::security_profile::ProfileType;

    #[test]
    fn cgroup_driver_from_runtime_config() {
        use tonic::{Code, Status};
        let linux = |d: i32| {
            Ok(cri::RuntimeConfigResponse {
                linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: d }),
            })
        };
        type Answer = Result<cri::RuntimeConfigResponse, Status>;
        let cases: Vec<(Answer, Result<ReportedCgroupDriver, &str>)> = vec![
            (linux(0), Ok(ReportedCgroupDriver::Systemd)),
            (linux(1), Ok(ReportedCgroupDriver::Cgroupfs)),
            // No Linux part: CRI's zero value would read as SYSTEMD; kubelet ignores the answer.
            (
                Ok(cri::RuntimeConfigResponse { linux: None }),
                Ok(ReportedCgroupDriver::NotReported),
            ),
            // containerd 1.6.
            (
                Err(Status::new(
                    Code::Unimplemented,
                    "unknown method RuntimeConfig",
                )),
                Ok(ReportedCgroupDriver::NotReported),
            ),
            (linux(7), Err("unknown cgroup driver 7")),
            (Err(Status::new(Code::Internal, "boom")), Err("boom")),
        ];
        for (answer, want) in cases {
            let shown = format!("{answer:?}");
            match (cgroup_driver_from_cri(answer), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{shown}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{shown}: {e}"),
                (got, want) => panic!("{shown}: got {got:?}, want {want:?}"),
            }
        }
        assert!(matches!(
            cgroup_driver_from_cri(Err(Status::new(Code::Unavailable, "gone"))),
            Err(RuntimeError::Unavailable(_))
        ));
    }

    #[test]
    fn container_stats_keep_what_the_runtime_measured() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let full = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: "c1".into(),
                labels: HashMap::from([("io.staticlet.managed".into(), "true".into())]),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: 5_000_000_000,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: 42 }),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: Some(cri::UInt64Value { value: 4096 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = container_stats_from_cri(full, now).unwrap();
        assert_eq!(s.id, ContainerId("c1".into()));
        assert_eq!(
            s.labels.get("io.staticlet.managed").map(String::as_str),
            Some("true")
        );
        assert_eq!(s.timestamp, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(s.cpu_usage_core_nanos, Some(42));
        assert_eq!(s.memory_working_set_bytes, Some(4096));
        // Missing measurements stay missing; no attributes, no stats.
        let bare = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: "c2".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = container_stats_from_cri(bare, now).unwrap();
        assert_eq!(
            (
                s.timestamp,
                s.cpu_usage_core_nanos,
                s.memory_working_set_bytes
            ),
            (now, None, None)
        );
        assert_eq!(
            container_stats_from_cri(cri::ContainerStats::default(), now),
            None
        );
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn namespace_modes_table() {
        use cri::NamespaceMode::{Container, Node, Pod};
        // (host_network, host_pid, host_ipc, share_pid) -> (network, pid, ipc)
        let table = [
            ((false, false, false, false), (Pod, Container, Pod)),
            ((true, false, false, false), (Node, Container, Pod)),
            ((false, true, false, false), (Pod, Node, Pod)),
            ((false, false, true, false), (Pod, Container, Node)),
            ((false, false, false, true), (Pod, Pod, Pod)),
            ((false, true, false, true), (Pod, Node, Pod)),
            ((true, true, true, false), (Node, Node, Node)),
        ];
        for ((net, pid, ipc, share), (wn, wp, wi)) in table {
            let c = SandboxConfig {
                host_network: net,
                host_pid: pid,
                host_ipc: ipc,
                share_process_namespace: share,
                ..Default::default()
            };
            let ns = namespace_options(&c);
            assert_eq!(
                (ns.network, ns.pid, ns.ipc),
                (wn as i32, wp as i32, wi as i32),
                "{net} {pid} {ipc} {share}"
            );
        }
    }

    #[test]
    fn protocol_and_propagation_tables() {
        for (p, want) in [
            ("", Some(cri::Protocol::Tcp)),
            ("TCP", Some(cri::Protocol::Tcp)),
            ("udp", Some(cri::Protocol::Udp)),
            ("SCTP", Some(cri::Protocol::Sctp)),
            ("ICMP", None),
        ] {
            assert_eq!(protocol(p).ok(), want, "{p}");
        }
        for (p, want) in [
            ("", Some(cri::MountPropagation::PropagationPrivate)),
            ("None", Some(cri::MountPropagation::PropagationPrivate)),
            (
                "HostToContainer",
                Some(cri::MountPropagation::PropagationHostToContainer),
            ),
            (
                "Bidirectional",
                Some(cri::MountPropagation::PropagationBidirectional),
            ),
            ("Shared", None),
        ] {
            assert_eq!(propagation(p).ok(), want, "{p}");
        }
    }

    #[test]
    fn sandbox_config_maps_every_field() {
        let c = SandboxConfig {
            name: "web-node1".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 2,
            hostname: "web".into(),
            log_directory: "/var/log/pods/default_web_u1".into(),
            dns: Some(DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc".into()],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![PortMapping {
                protocol: "UDP".into(),
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            labels: labels(&[("a", "1")]),
            annotations: labels(&[("b", "2")]),
            cgroup_parent: "/kubepods/pod-u1".into(),
            sysctls: labels(&[("net.ipv4.ip_forward", "1")]),
            runtime_handler: "runc".into(),
            ..Default::default()
        };
        let got = sandbox_config(&c).unwrap();
        let md = got.metadata.clone().unwrap();
        assert_eq!(
            (
                md.name.as_str(),
                md.namespace.as_str(),
                md.uid.as_str(),
                md.attempt
            ),
            ("web-node1", "default", "u1", 2)
        );
        assert_eq!(got.hostname, "web");
        assert_eq!(got.log_directory, "/var/log/pods/default_web_u1");
        let dns = got.dns_config.unwrap();
        assert_eq!(dns.servers, ["10.0.0.10"]);
        assert_eq!(dns.searches, ["svc"]);
        assert_eq!(dns.options, ["ndots:5"]);
        assert_eq!(
            got.port_mappings,
            [cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }]
        );
        assert_eq!(got.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(got.annotations.get("b").map(String::as_str), Some("2"));
        let linux = got.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/pod-u1");
        assert_eq!(
            linux.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);

        // hostNetwork: the hostname must be empty whatever the config says.
        let host = SandboxConfig {
            host_network: true,
            ..c
        };
        assert_eq!(sandbox_config(&host).unwrap().hostname, "");
        let bad = SandboxConfig {
            port_mappings: vec![PortMapping {
                protocol: "ICMP".into(),
                container_port: 1,
                host_port: 1,
                host_ip: String::new(),
            }],
            ..Default::default()
        };
        assert!(matches!(
            sandbox_config(&bad),
            Err(RuntimeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn seccomp_table() {
        for (s, want_type, want_ref) in [
            (Seccomp::Unconfined, ProfileType::Unconfined, ""),
            (Seccomp::RuntimeDefault, ProfileType::RuntimeDefault, ""),
            (
                Seccomp::Localhost("/var/lib/seccomp/p.json".into()),
                ProfileType::Localhost,
                "/var/lib/seccomp/p.json",
            ),
        ] {
            let p = seccomp_profile(&s);
            assert_eq!(p.profile_type, want_type as i32, "{s:?}");
            assert_eq!(p.localhost_ref, want_ref, "{s:?}");
        }
    }

    #[test]
    fn container_config_maps_every_field() {
        let sandbox = SandboxConfig {
            share_process_namespace: true,
            ..Default::default()
        };
        let c = ContainerConfig {
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
            labels: labels(&[("l", "1")]),
            annotations: labels(&[("a", "2")]),
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
                run_as_non_root: true,
                seccomp: Seccomp::RuntimeDefault,
            },
            stop_signal: "SIGINT".into(),
        };
        let got = container_config(&c, &sandbox).unwrap();
        let md = got.metadata.unwrap();
        assert_eq!((md.name.as_str(), md.attempt), ("app", 3));
        assert_eq!(got.image.unwrap().image, "busybox:latest");
        assert_eq!(got.command, ["sh"]);
        assert_eq!(got.args, ["-c", "sleep 1"]);
        assert_eq!(got.working_dir, "/tmp");
        assert_eq!(
            got.envs
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_str()))
                .collect::<Vec<_>>(),
            [("A", "1"), ("B", "x=y")]
        );
        assert_eq!(
            got.mounts,
            [cri::Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }]
        );
        assert_eq!(got.labels.get("l").map(String::as_str), Some("1"));
        assert_eq!(got.annotations.get("a").map(String::as_str), Some("2"));
        assert_eq!(got.log_path, "app/3.log");
        assert!(got.stdin && got.tty && got.stdin_once);
        let linux = got.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(
            (
                r.cpu_period,
                r.cpu_quota,
                r.cpu_shares,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (100_000, 50_000, 512, 64 << 20, 900)
        );
        let s = linux.security_context.unwrap();
        assert!(s.privileged && s.readonly_rootfs && s.no_new_privs);
        // Privileged: kubelet sends no masked or read-only paths (see below for the others).
        assert!(s.masked_paths.is_empty() && s.readonly_paths.is_empty());
        assert_eq!(s.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(s.run_as_group.map(|v| v.value), Some(2000));
        assert_eq!(s.supplemental_groups, [3000]);
        let caps = s.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert_eq!(
            s.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        assert_eq!(
            s.namespace_options.unwrap().pid,
            cri::NamespaceMode::Pod as i32
        );

        let unset = container_config(&ContainerConfig::default(), &sandbox).unwrap();
        let s = unset.linux.unwrap().security_context.unwrap();
        assert_eq!(s.run_as_user, None);
        assert_eq!(s.run_as_group, None);
        assert_eq!(
            s.seccomp.unwrap().profile_type,
            ProfileType::Unconfined as i32
        );

        let bad = ContainerConfig {
            mounts: vec![Mount {
                propagation: "rshared".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            container_config(&bad, &sandbox),
            Err(RuntimeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn container_status_table() {
        let t = |n: i64| SystemTime::UNIX_EPOCH + Duration::from_nanos(n as u64);
        // (state, exit_code in CRI) -> (state, exit_code, started set, finished set)
        let table = [
            (
                cri::ContainerState::ContainerCreated,
                0,
                (0, 0),
                (ContainerState::Created, None, false, false),
            ),
            (
                cri::ContainerState::ContainerRunning,
                0,
                (5, 0),
                (ContainerState::Running, None, true, false),
            ),
            (
                cri::ContainerState::ContainerExited,
                3,
                (5, 9),
                (ContainerState::Exited, Some(3), true, true),
            ),
            (
                cri::ContainerState::ContainerExited,
                0,
                (5, 9),
                (ContainerState::Exited, Some(0), true, true),
            ),
            (
                cri::ContainerState::ContainerUnknown,
                0,
                (0, 0),
                (ContainerState::Unknown, None, false, false),
            ),
        ];
        for (state, code, (started, finished), (ws, wcode, wstarted, wfinished)) in table {
            let s = cri::ContainerStatus {
                id: "c1".into(),
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 1,
                }),
                state: state as i32,
                created_at: 1_700_000_000_000_000_001,
                started_at: started,
                finished_at: finished,
                exit_code: code,
                image: Some(cri::ImageSpec {
                    image: "docker.io/library/busybox:latest".into(),
                    ..Default::default()
                }),
                image_ref: "sha256:abc".into(),
                reason: "Error".into(),
                message: "boom".into(),
                labels: HashMap::from([("l".to_string(), "1".to_string())]),
                annotations: HashMap::from([("a".to_string(), "2".to_string())]),
                log_path: "/var/log/pods/x/app/1.log".into(),
                ..Default::default()
            };
            let got = container_status_from_cri(s, "sb".into());
            assert_eq!(got.state, ws);
            assert_eq!(got.exit_code, wcode);
            assert_eq!(got.started_at.is_some(), wstarted);
            assert_eq!(got.finished_at.is_some(), wfinished);
            if wfinished {
                assert_eq!(got.finished_at, Some(t(finished)));
            }
            assert_eq!(got.created_at, t(1_700_000_000_000_000_001));
            assert_eq!(got.id.0, "c1");
            assert_eq!(got.sandbox_id.0, "sb");
            assert_eq!((got.name.as_str(), got.attempt), ("app", 1));
            assert_eq!(got.image.image, "docker.io/library/busybox:latest");
            assert_eq!(got.image_ref, "sha256:abc");
            assert_eq!(
                (got.reason.as_str(), got.message.as_str()),
                ("Error", "boom")
            );
            assert_eq!(got.labels, labels(&[("l", "1")]));
            assert_eq!(got.annotations, labels(&[("a", "2")]));
            assert_eq!(got.log_path, PathBuf::from("/var/log/pods/x/app/1.log"));
        }
    }

    #[test]
    fn sandbox_status_table() {
        for (state, ip, want_state) in [
            (
                cri::PodSandboxState::SandboxReady,
                "10.235.0.5",
                SandboxState::Ready,
            ),
            (
                cri::PodSandboxState::SandboxNotready,
                "",
                SandboxState::NotReady,
            ),
        ] {
            let s = cri::PodSandboxStatus {
                id: "sb".into(),
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u".into(),
                    namespace: "ns".into(),
                    attempt: 4,
                }),
                state: state as i32,
                created_at: 1_000_000_000,
                network: Some(cri::PodSandboxNetworkStatus {
                    ip: ip.into(),
                    additional_ips: vec![],
                }),
                labels: HashMap::from([("l".to_string(), "1".to_string())]),
                ..Default::default()
            };
            let got = sandbox_status_from_cri(s);
            assert_eq!(got.state, want_state);
            assert_eq!(got.ip, ip);
            assert_eq!(
                (
                    got.name.as_str(),
                    got.namespace.as_str(),
                    got.uid.as_str(),
                    got.attempt
                ),
                ("web", "ns", "u", 4)
            );
            assert_eq!(
                got.created_at,
                SystemTime::UNIX_EPOCH + Duration::from_secs(1)
            );
            assert_eq!(got.labels, labels(&[("l", "1")]));
        }
        // No network status at all (hostNetwork on some runtimes).
        let got = sandbox_status_from_cri(cri::PodSandboxStatus::default());
        assert_eq!(got.ip, "");
        assert_eq!(got.state, SandboxState::Ready);
    }

    #[test]
    fn runtime_status_table() {
        let cond = |t: &str, status: bool, reason: &str| cri::RuntimeCondition {
            r#type: t.into(),
            status,
            reason: reason.into(),
            message: String::new(),
        };
        let table = [
            (
                vec![cond(RUNTIME_READY, true, ""), cond(NETWORK_READY, true, "")],
                (true, true, ""),
            ),
            (
                vec![
                    cond(RUNTIME_READY, true, ""),
                    cond(NETWORK_READY, false, "NetworkPluginNotReady"),
                ],
                (true, false, "NetworkReady=false (NetworkPluginNotReady)"),
            ),
            (
                vec![cond(NETWORK_READY, true, "")],
                (false, true, "RuntimeReady not reported"),
            ),
            (
                vec![
                    cond(RUNTIME_READY, false, ""),
                    cond(NETWORK_READY, false, ""),
                ],
                (false, false, "RuntimeReady=false; NetworkReady=false"),
            ),
        ];
        for (conditions, (r, n, msg)) in table {
            let got = runtime_status_from_cri(Some(cri::RuntimeStatus { conditions }));
            assert_eq!(
                (got.runtime_ready, got.network_ready, got.message.as_str()),
                (r, n, msg)
            );
        }
        assert!(!runtime_status_from_cri(None).runtime_ready);
    }

    #[test]
    fn run_as_non_root_table() {
        let img = |uid: Option<i64>, user: &str| cri::Image {
            uid: uid.map(|value| cri::Int64Value { value }),
            username: user.into(),
            ..Default::default()
        };
        let sc = |non_root: bool, user: Option<i64>| SecurityContext {
            run_as_non_root: non_root,
            run_as_user: user,
            ..Default::default()
        };
        let table = [
            (sc(false, None), Some(img(Some(0), "")), false),
            (sc(true, Some(0)), None, true),
            (sc(true, Some(1000)), Some(img(Some(0), "")), false),
            (sc(true, None), Some(img(Some(0), "")), true),
            (sc(true, None), Some(img(Some(1000), "")), false),
            (sc(true, None), Some(img(None, "web")), true),
            (sc(true, None), Some(img(None, "")), true),
            (sc(true, None), None, true),
        ];
        for (i, (s, image, bad)) in table.into_iter().enumerate() {
            assert_eq!(
                run_as_non_root_violation(&s, image.as_ref()).is_some(),
                bad,
                "row {i}"
            );
        }
    }

    #[test]
    fn small_conversions() {
        assert_eq!(time_from_nanos(0), None);
        assert_eq!(time_from_nanos(-1), None);
        assert_eq!(
            time_from_nanos(1_500_000_000),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500))
        );
        for (d, want) in [
            (Duration::ZERO, 0),
            (Duration::from_millis(1), 1),
            (Duration::from_secs(30), 30),
            (Duration::from_millis(30_500), 31),
        ] {
            assert_eq!(timeout_secs(d), want, "{d:?}");
        }
        let a = auth_config(&AuthConfig {
            username: "u".into(),
            password: "p".into(),
            auth: "dTpw".into(),
            server_address: "r.example".into(),
            identity_token: "i".into(),
            registry_token: "t".into(),
        });
        assert_eq!(
            (
                a.username.as_str(),
                a.password.as_str(),
                a.auth.as_str(),
                a.server_address.as_str(),
                a.identity_token.as_str(),
                a.registry_token.as_str()
            ),
            ("u", "p", "dTpw", "r.example", "i", "t")
        );
        let e = event_from_cri(cri::ContainerEventResponse {
            container_id: "c".into(),
            container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
            pod_sandbox_status: Some(cri::PodSandboxStatus {
                metadata: Some(cri::PodSandboxMetadata {
                    uid: "u".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            e,
            ContainerEvent {
                container_id: ContainerId("c".into()),
                pod_uid: "u".into(),
                state: ContainerState::Exited,
            }
        );
        assert_eq!(
            label_filter(&LabelSelector::pod("u")).len(),
            2,
            "managed + uid"
        );
    }

    #[test]
    fn streaming_url_table() {
        for (url, ok) in [
            ("http://127.0.0.1:35093/exec/AbCd_12", true),
            ("https://10.0.0.5:10010/portforward/xyz", true),
            ("http://[::1]:4000/exec/t", true),
            ("/exec/AbCd_12", false),
            ("", false),
            ("http://", false),
            ("http:///exec/x", false),
            ("ftp://host/exec/x", false),
        ] {
            let got = streaming_url(url);
            assert_eq!(got.is_ok(), ok, "{url:?}: {got:?}");
            match got {
                Ok(u) => assert_eq!(u, url),
                Err(e) => assert!(e.contains(&format!("{url:?}")), "{e}"),
            }
        }
    }

    #[test]
    fn unprivileged_containers_get_kubelets_masked_and_read_only_paths() {
        let masked = confined(false, staticlet_runtime::confinement::MASKED_PATHS);
        assert!(masked.iter().any(|p| p == "/proc/kcore"), "{masked:?}");
        assert!(masked.iter().any(|p| p == "/sys/firmware"), "{masked:?}");
        let ro = confined(false, staticlet_runtime::confinement::READONLY_PATHS);
        assert!(ro.iter().any(|p| p == "/proc/sys"), "{ro:?}");
        assert!(confined(true, staticlet_runtime::confinement::MASKED_PATHS).is_empty());
    }
}
