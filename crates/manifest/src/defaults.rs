//! The API server's v1 defaults that matter on a node (`pkg/apis/core/v1/defaults.go`).
//!
//! kubelet decodes static pods with the API's normal defaulting, so the pods it runs and serves
//! carry these values; staticlet applies the same ones after computing the hash (defaults are
//! not part of a pod's identity, see [`crate::hash`]).

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// kubelet's `DefaultTerminationGracePeriodSeconds`.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Applies the defaults in place.
pub fn apply(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    apply_spec(spec);
}

fn apply_spec(spec: &mut PodSpec) {
    set(&mut spec.restart_policy, "Always");
    set(&mut spec.dns_policy, "ClusterFirst");
    set(&mut spec.scheduler_name, "default-scheduler");
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(TERMINATION_GRACE_PERIOD_SECONDS);
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.containers.iter_mut() {
        apply_container(c, host_network);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        apply_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        apply_volume(v);
    }
}

fn set(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or("").is_empty() {
        *field = Some(value.to_string());
    }
}

/// `Always` for `:latest` or an untagged image without digest, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn apply_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        let image = c.image.as_deref().unwrap_or("");
        c.image_pull_policy = Some(default_pull_policy(image).to_string());
    }
    set(&mut c.termination_message_path, "/dev/termination-log");
    set(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        set(&mut p.protocol, "TCP");
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        apply_env(e);
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        apply_probe(probe);
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for h in [&mut lc.post_start, &mut lc.pre_stop].into_iter().flatten() {
            if let Some(get) = h.http_get.as_mut() {
                set(&mut get.path, "/");
                set(&mut get.scheme, "HTTP");
            }
        }
    }
    // Requests default to limits for every resource that has a limit and no request.
    if let Some(res) = c.resources.as_mut() {
        if let Some(limits) = res.limits.clone() {
            let requests = res.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

fn apply_env(e: &mut EnvVar) {
    if let Some(field_ref) = e.value_from.as_mut().and_then(|vf| vf.field_ref.as_mut()) {
        set(&mut field_ref.api_version, "v1");
    }
}

fn apply_probe(p: &mut Probe) {
    // The API server treats an explicit 0 as unset.
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(get) = p.http_get.as_mut() {
        set(&mut get.path, "/");
        set(&mut get.scheme, "HTTP");
    }
    if let Some(grpc) = p.grpc.as_mut() {
        if grpc.service.is_none() {
            grpc.service = Some(String::new());
        }
    }
}

fn apply_volume(v: &mut Volume) {
    let has_source = v.host_path.is_some()
        || v.empty_dir.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.persistent_volume_claim.is_some()
        || v.nfs.is_some()
        || v.iscsi.is_some()
        || v.csi.is_some()
        || v.ephemeral.is_some()
        || v.image.is_some()
        || v.fc.is_some()
        || v.rbd.is_some()
        || v.cephfs.is_some()
        || v.cinder.is_some()
        || v.flex_volume.is_some()
        || v.git_repo.is_some()
        || v.glusterfs.is_some()
        || v.azure_disk.is_some()
        || v.azure_file.is_some()
        || v.aws_elastic_block_store.is_some()
        || v.gce_persistent_disk.is_some()
        || v.portworx_volume.is_some()
        || v.quobyte.is_some()
        || v.scale_io.is_some()
        || v.storageos.is_some()
        || v.vsphere_volume.is_some()
        || v.photon_persistent_disk.is_some()
        || v.flocker.is_some();
    if !has_source {
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    if let Some(hp) = v.host_path.as_mut() {
        if hp.type_.is_none() {
            hp.type_ = Some(String::new());
        }
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(0o644);
    }
}

/// The port a probe or hook handler names, resolved against the container's named ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<i32> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_rule() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("registry.k8s.io/etcd:3.5.15-0", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:1", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
