//! Validation of a defaulted static pod: the parts of the API server's pod validation
//! (`pkg/apis/core/validation`) that matter on a node, plus kubelet's static-pod rules.
//!
//! Every error carries the field path in the API's notation
//! (`spec.containers[1].ports[0].containerPort`), so a user can find it in the file, and a
//! message in the API server's style (`Required value`, `Invalid value: 0: must be between 1 and
//! 65535, inclusive`, `Unsupported value: "x": supported values: "a", "b"`, ...).
//!
//! Order of the errors: the API server's (`ValidatePodCreate`): metadata, then the spec (volumes,
//! containers, init containers, ephemeral containers, pod-level fields), then kubelet's
//! static-pod reference check (`HasAPIObjectReference`: service accounts, secrets, config maps,
//! resource claims, volume types), which kubelet runs after the API validation. Unlike kubelet,
//! which stops at the first reference, every reference is reported at its own path.
//!
//! Deliberate differences from the API server, all towards precision:
//! - map entries carry their key (`resources.requests[cpu]`, `metadata.labels[app]`);
//! - `subPath` errors name the mount (`volumeMounts[0].subPath`);
//! - `mountPath` must be absolute (the node runs Linux containers);
//! - probe timings must be ≥ 1 (the API defaults a Go zero; here 0 is explicit and rejected);
//! - environment variable names use the strict (pre-1.32) C-identifier-like rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, DownwardAPIVolumeFile, EnvFromSource, EnvVar, HTTPGetAction,
    Lifecycle, LifecycleHandler, Pod, PodSpec, Probe, ResourceRequirements, SeccompProfile, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].image`.
    pub path: String,
    /// What is wrong, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Validates a defaulted static pod (name already suffixed with the node name). Returns every
/// problem found, in field order (see the module documentation).
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.metadata(pod);
    if let Some(spec) = pod.spec.as_ref() {
        v.spec(spec);
        v.static_pod_references(spec);
    } else {
        v.required("spec", "");
    }
    v.errs
}

// ------------------------------------------------------------------------------------------------
// Message formatting, as `k8s.io/apimachinery/pkg/util/validation/field` does.

/// A value shown in an `Invalid value: ...` message: strings quoted, numbers bare.
enum Shown<'a> {
    Str(&'a str),
    Int(i64),
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Str(s) => write!(f, "{s:?}"),
            Shown::Int(n) => write!(f, "{n}"),
        }
    }
}

impl<'a> From<&'a str> for Shown<'a> {
    fn from(s: &'a str) -> Self {
        Shown::Str(s)
    }
}

impl<'a> From<&'a String> for Shown<'a> {
    fn from(s: &'a String) -> Self {
        Shown::Str(s)
    }
}

impl From<i32> for Shown<'_> {
    fn from(n: i32) -> Self {
        Shown::Int(n.into())
    }
}

impl From<i64> for Shown<'_> {
    fn from(n: i64) -> Self {
        Shown::Int(n)
    }
}

#[derive(Default)]
struct Validator {
    errs: Vec<FieldError>,
}

impl Validator {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errs.push(FieldError::new(path, message));
    }

    /// `Required value` (with an optional detail).
    fn required(&mut self, path: impl Into<String>, detail: &str) {
        let msg = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        self.push(path, msg);
    }

    fn invalid<'a>(&mut self, path: impl Into<String>, value: impl Into<Shown<'a>>, detail: &str) {
        let value = value.into();
        self.push(path, format!("Invalid value: {value}: {detail}"));
    }

    /// One `Invalid value` error per message.
    fn invalid_each(&mut self, path: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid(path, value, &m);
        }
    }

    fn forbidden(&mut self, path: impl Into<String>, detail: &str) {
        self.push(path, format!("Forbidden: {detail}"));
    }

    fn duplicate(&mut self, path: impl Into<String>, value: &str) {
        self.push(path, format!("Duplicate value: {value:?}"));
    }

    fn not_found(&mut self, path: impl Into<String>, value: &str) {
        self.push(path, format!("Not found: {value:?}"));
    }

    /// `Unsupported value`; the supported values are listed sorted.
    fn not_supported(&mut self, path: impl Into<String>, value: &str, supported: &[&str]) {
        let mut sorted = supported.to_vec();
        sorted.sort_unstable();
        let list = sorted
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            path,
            format!("Unsupported value: {value:?}: supported values: {list}"),
        );
    }

    /// Checks that `value` is one of `supported`; an empty value is `Required value`.
    fn one_of(&mut self, path: impl Into<String>, value: &str, supported: &[&str]) {
        if value.is_empty() {
            self.required(path, "");
        } else if !supported.contains(&value) {
            self.not_supported(path, value, supported);
        }
    }

    fn dns_label(&mut self, path: &str, value: &str) {
        self.invalid_each(path, value, dns1123_label_errors(value));
    }

    fn dns_subdomain(&mut self, path: &str, value: &str) {
        self.invalid_each(path, value, dns1123_subdomain_errors(value));
    }

    // --------------------------------------------------------------------------------------------
    // metadata

    fn metadata(&mut self, pod: &Pod) {
        let meta = &pod.metadata;
        let name = meta.name.as_deref().unwrap_or("");
        if name.is_empty() {
            self.required("metadata.name", "name or generateName is required");
        } else {
            self.dns_subdomain("metadata.name", name);
        }
        let namespace = meta.namespace.as_deref().unwrap_or("");
        if namespace.is_empty() {
            self.required("metadata.namespace", "");
        } else {
            self.dns_label("metadata.namespace", namespace);
        }
        if let Some(labels) = meta.labels.as_ref() {
            self.labels("metadata.labels", labels);
        }
        if let Some(annotations) = meta.annotations.as_ref() {
            for k in annotations.keys() {
                // "The rule is QualifiedName except that case doesn't matter".
                self.invalid_each(
                    "metadata.annotations",
                    k,
                    qualified_name_errors(&k.to_lowercase()),
                );
            }
            if let Some(v) = annotations.get(crate::ANNOTATION_READY_DEADLINE) {
                if let Err(e) = crate::duration::parse_go_duration(v) {
                    self.invalid(
                        format!("metadata.annotations[{}]", crate::ANNOTATION_READY_DEADLINE),
                        v.as_str(),
                        &format!("{e}; must be a Go duration such as 5m (0 turns the rollout check off for this pod)"),
                    );
                }
            }
            let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > TOTAL_ANNOTATION_SIZE_LIMIT {
                self.push(
                    "metadata.annotations",
                    format!("Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
                );
            }
            self.errs.extend(crate::extensions::errors(annotations));
        }
    }

    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.invalid_each(path, k, qualified_name_errors(k));
            self.invalid_each(&format!("{path}[{k}]"), v, label_value_errors(v));
        }
    }

    // --------------------------------------------------------------------------------------------
    // spec

    fn spec(&mut self, spec: &PodSpec) {
        match spec.termination_grace_period_seconds {
            None => self.required("spec.terminationGracePeriodSeconds", ""),
            Some(g) if g < 0 => self.invalid(
                "spec.terminationGracePeriodSeconds",
                g,
                "must be greater than or equal to 0",
            ),
            Some(_) => {}
        }
        let grace = spec.termination_grace_period_seconds;

        let volumes = self.volumes(spec.volumes.as_deref().unwrap_or_default());
        self.resource_claims(spec);

        let ctx = ContainerCtx {
            volumes: &volumes,
            grace,
        };
        let containers = &spec.containers;
        let init_containers = spec.init_containers.as_deref().unwrap_or_default();

        // Containers.
        if containers.is_empty() {
            self.required("spec.containers", "");
        }
        let mut names = BTreeSet::new();
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.containers[{i}]");
            self.container_common(c, &path, &ctx);
            if !names.insert(c.name.as_str()) {
                self.duplicate(format!("{path}.name"), &c.name);
            }
            self.lifecycle_and_probes(c, &path, &ctx);
            if c.restart_policy.is_some() {
                self.forbidden(
                    format!("{path}.restartPolicy"),
                    "may not be set for non-init containers",
                );
            }
        }
        self.host_port_conflicts(containers.iter().enumerate(), "spec.containers");

        // Init containers: names unique across regular and init containers.
        for (i, c) in init_containers.iter().enumerate() {
            let path = format!("spec.initContainers[{i}]");
            self.container_common(c, &path, &ctx);
            let mut sidecar = false;
            if let Some(policy) = c.restart_policy.as_deref() {
                if policy == "Always" {
                    sidecar = true;
                } else {
                    self.not_supported(format!("{path}.restartPolicy"), policy, &["Always"]);
                }
            }
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                self.duplicate(format!("{path}.name"), &c.name);
            }
            self.host_port_conflicts(std::iter::once((i, c)), "spec.initContainers");
            if sidecar {
                self.lifecycle_and_probes(c, &path, &ctx);
            } else {
                const WHY: &str = "may not be set for init containers without restartPolicy=Always";
                if c.lifecycle.is_some() {
                    self.forbidden(format!("{path}.lifecycle"), WHY);
                }
                if c.liveness_probe.is_some() {
                    self.forbidden(format!("{path}.livenessProbe"), WHY);
                }
                if c.readiness_probe.is_some() {
                    self.forbidden(format!("{path}.readinessProbe"), WHY);
                }
                if c.startup_probe.is_some() {
                    self.forbidden(format!("{path}.startupProbe"), WHY);
                }
            }
        }

        // Ephemeral containers: only their names are checked; the list itself is refused.
        if let Some(ephemeral) = spec
            .ephemeral_containers
            .as_deref()
            .filter(|e| !e.is_empty())
        {
            for (i, c) in ephemeral.iter().enumerate() {
                let path = format!("spec.ephemeralContainers[{i}].name");
                if c.name.is_empty() {
                    self.required(path, "");
                } else {
                    self.dns_label(&path, &c.name);
                    if !names.insert(c.name.as_str()) {
                        self.duplicate(path, &c.name);
                    }
                }
            }
            self.forbidden(
                "spec.ephemeralContainers",
                "cannot be set on create (static pods do not support ephemeral containers)",
            );
        }

        if spec.host_network == Some(true) {
            for (i, c) in containers.iter().enumerate() {
                for (j, p) in c.ports.iter().flatten().enumerate() {
                    let hp = p.host_port.unwrap_or(0);
                    if hp != p.container_port {
                        self.invalid(
                            format!("spec.containers[{i}].ports[{j}].hostPort"),
                            hp,
                            "must match `containerPort` when `hostNetwork` is true",
                        );
                    }
                }
            }
        }

        self.one_of(
            "spec.restartPolicy",
            spec.restart_policy.as_deref().unwrap_or(""),
            &["Always", "OnFailure", "Never"],
        );
        let dns_policy = spec.dns_policy.as_deref().unwrap_or("");
        self.one_of(
            "spec.dnsPolicy",
            dns_policy,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        );
        if let Some(sel) = spec.node_selector.as_ref() {
            self.labels("spec.nodeSelector", sel);
        }
        self.pod_security_context(spec);
        self.dns_config(spec, dns_policy);
        self.scheduling_gates(spec);

        if let Some(d) = spec.active_deadline_seconds {
            if !(1..=i64::from(i32::MAX)).contains(&d) {
                self.invalid(
                    "spec.activeDeadlineSeconds",
                    d,
                    "must be between 1 and 2147483647, inclusive",
                );
            }
        }
        if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
            self.dns_label("spec.hostname", h);
        }
        if let Some(s) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            self.dns_label("spec.subdomain", s);
        }
        self.tolerations(spec);
        for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
            self.ip(&format!("spec.hostAliases[{i}].ip"), &alias.ip);
            for (j, h) in alias.hostnames.iter().flatten().enumerate() {
                self.dns_subdomain(&format!("spec.hostAliases[{i}].hostnames[{j}]"), h);
            }
        }
        if let Some(p) = spec
            .priority_class_name
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            self.dns_subdomain("spec.priorityClassName", p);
        }
        if let Some(p) = spec.preemption_policy.as_deref() {
            self.one_of(
                "spec.preemptionPolicy",
                p,
                &["PreemptLowerPriority", "Never"],
            );
        }
    }

    fn ip(&mut self, path: &str, value: &str) {
        if value.parse::<std::net::IpAddr>().is_err() {
            self.invalid(
                path,
                value,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
        }
    }

    fn resource_claims(&mut self, spec: &PodSpec) {
        let mut seen = BTreeSet::new();
        for (i, claim) in spec.resource_claims.iter().flatten().enumerate() {
            let path = format!("spec.resourceClaims[{i}]");
            if claim.name.is_empty() {
                self.required(format!("{path}.name"), "");
            } else if !seen.insert(claim.name.as_str()) {
                self.duplicate(format!("{path}.name"), &claim.name);
            } else {
                self.dns_label(&format!("{path}.name"), &claim.name);
            }
            match (&claim.resource_claim_name, &claim.resource_claim_template_name) {
                (Some(_), Some(_)) => self.push(
                    path,
                    "Invalid value: at most one of `resourceClaimName` or `resourceClaimTemplateName` may be specified",
                ),
                (None, None) => self.push(
                    path,
                    "Invalid value: must specify one of: `resourceClaimName`, `resourceClaimTemplateName`",
                ),
                _ => {}
            }
        }
    }

    fn pod_security_context(&mut self, spec: &PodSpec) {
        let Some(sc) = spec.security_context.as_ref() else {
            return;
        };
        let host_network = spec.host_network == Some(true);
        let host_ipc = spec.host_ipc == Some(true);
        let mut seen = BTreeSet::new();
        for (i, s) in sc.sysctls.iter().flatten().enumerate() {
            let path = format!("spec.securityContext.sysctls[{i}].name");
            if s.name.is_empty() {
                self.required(path, "");
                continue;
            } else if !is_valid_sysctl_name(&s.name) {
                self.invalid(
                    &path,
                    &s.name,
                    &format!("must have at most {SYSCTL_MAX_LENGTH} characters and match regex {SYSCTL_FMT}"),
                );
                continue;
            } else if !seen.insert(s.name.as_str()) {
                self.duplicate(&path, &s.name);
            }
            let name = s.name.replace('/', ".");
            if host_network && name.starts_with("net.") {
                self.invalid(
                    &path,
                    &s.name,
                    "may not be specified when 'hostNetwork' is true",
                );
            }
            let ipc = name.starts_with("kernel.shm")
                || name.starts_with("kernel.msg")
                || name == "kernel.sem"
                || name.starts_with("fs.mqueue.");
            if host_ipc && ipc {
                self.invalid(
                    &path,
                    &s.name,
                    "may not be specified when 'hostIPC' is true",
                );
            }
        }
        if let Some(sp) = sc.seccomp_profile.as_ref() {
            self.seccomp_profile("spec.securityContext.seccompProfile", sp);
        }
    }

    fn seccomp_profile(&mut self, path: &str, sp: &SeccompProfile) {
        self.one_of(
            format!("{path}.type"),
            &sp.type_,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        );
        match (sp.type_.as_str(), sp.localhost_profile.as_deref()) {
            ("Localhost", None) => {
                self.required(
                    format!("{path}.localhostProfile"),
                    "must be set when seccomp type is Localhost",
                );
            }
            ("Localhost", Some(p)) => {
                self.local_descending_path(&format!("{path}.localhostProfile"), p)
            }
            (_, Some(p)) => self.invalid(
                format!("{path}.localhostProfile"),
                p,
                "can only be set when seccomp type is Localhost",
            ),
            (_, None) => {}
        }
    }

    fn dns_config(&mut self, spec: &PodSpec, dns_policy: &str) {
        let path = "spec.dnsConfig";
        let config = spec.dns_config.as_ref();
        if dns_policy == "None" {
            match config {
                None => {
                    return self
                        .required(path, "must provide `dnsConfig` when `dnsPolicy` is None");
                }
                Some(c) if c.nameservers.as_ref().is_none_or(Vec::is_empty) => {
                    return self.required(
                        format!("{path}.nameservers"),
                        "must provide at least one DNS nameserver when `dnsPolicy` is None",
                    );
                }
                Some(_) => {}
            }
        }
        let Some(config) = config else { return };
        let nameservers = config.nameservers.as_deref().unwrap_or_default();
        if nameservers.len() > 3 {
            self.push(
                format!("{path}.nameservers"),
                "Invalid value: must not have more than 3 nameservers",
            );
        }
        for (i, ns) in nameservers.iter().enumerate() {
            self.ip(&format!("{path}.nameservers[{i}]"), ns);
        }
        let searches = config.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            self.push(
                format!("{path}.searches"),
                "Invalid value: must not have more than 32 search paths",
            );
        }
        if searches.join(" ").len() > 2048 {
            self.push(
                format!("{path}.searches"),
                "Invalid value: must not have more than 2048 characters (including spaces) in the search list",
            );
        }
        for (i, s) in searches.iter().enumerate() {
            if s != "." {
                let s = s.strip_suffix('.').unwrap_or(s);
                self.dns_subdomain(&format!("{path}.searches[{i}]"), s);
            }
        }
        for (i, o) in config.options.iter().flatten().enumerate() {
            if o.name.as_deref().unwrap_or("").is_empty() {
                self.required(format!("{path}.options[{i}]"), "must not be empty");
            }
        }
    }

    fn scheduling_gates(&mut self, spec: &PodSpec) {
        let gates = spec.scheduling_gates.as_deref().unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (i, g) in gates.iter().enumerate() {
            let path = format!("spec.schedulingGates[{i}]");
            self.invalid_each(&path, &g.name, qualified_name_errors(&g.name));
            if !seen.insert(g.name.as_str()) {
                self.duplicate(path, &g.name);
            }
        }
        if !gates.is_empty() && spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
            self.forbidden(
                "spec.schedulingGates",
                "static pods may not have scheduling gates: spec.nodeName is set to the node, and it cannot be set until all schedulingGates have been cleared",
            );
        }
    }

    fn tolerations(&mut self, spec: &PodSpec) {
        for (i, t) in spec.tolerations.iter().flatten().enumerate() {
            let path = format!("spec.tolerations[{i}]");
            let key = t.key.as_deref().unwrap_or("");
            let operator = t.operator.as_deref().unwrap_or("");
            let effect = t.effect.as_deref().unwrap_or("");
            let value = t.value.as_deref().unwrap_or("");
            if !key.is_empty() {
                self.invalid_each(&format!("{path}.key"), key, qualified_name_errors(key));
            }
            if key.is_empty() && operator != "Exists" {
                self.invalid(
                    format!("{path}.operator"),
                    operator,
                    "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                );
            }
            if t.toleration_seconds.is_some() && effect != "NoExecute" {
                self.invalid(
                    format!("{path}.effect"),
                    effect,
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                );
            }
            match operator {
                "" | "Equal" => {
                    let errs = label_value_errors(value);
                    if !errs.is_empty() {
                        self.invalid(format!("{path}.operator"), value, &errs.join(";"));
                    }
                }
                "Exists" => {
                    if !value.is_empty() {
                        self.invalid(
                            format!("{path}.operator"),
                            value,
                            "value must be empty when `operator` is 'Exists'",
                        );
                    }
                }
                other => {
                    self.not_supported(format!("{path}.operator"), other, &["Equal", "Exists"])
                }
            }
            if !effect.is_empty()
                && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
            {
                self.not_supported(
                    format!("{path}.effect"),
                    effect,
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                );
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // volumes

    /// Validates the volumes; returns every named volume (even an invalid one, so that mounts of
    /// it are not reported a second time).
    fn volumes<'a>(&mut self, volumes: &'a [Volume]) -> BTreeMap<&'a str, &'a Volume> {
        let mut by_name = BTreeMap::new();
        for (i, vol) in volumes.iter().enumerate() {
            let path = format!("spec.volumes[{i}]");
            self.volume_source(vol, &path);
            let name_path = format!("{path}.name");
            if vol.name.is_empty() {
                self.required(name_path, "");
            } else {
                self.dns_label(&name_path, &vol.name);
                if by_name.insert(vol.name.as_str(), vol).is_some() {
                    self.duplicate(name_path, &vol.name);
                }
            }
        }
        by_name
    }

    fn volume_source(&mut self, v: &Volume, path: &str) {
        let mut n = 0;
        // In the API server's order (`validateVolumeSource`).
        let sources: [(bool, &str); 30] = [
            (v.empty_dir.is_some(), "emptyDir"),
            (v.host_path.is_some(), "hostPath"),
            (v.git_repo.is_some(), "gitRepo"),
            (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
            (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
            (v.secret.is_some(), "secret"),
            (v.nfs.is_some(), "nfs"),
            (v.iscsi.is_some(), "iscsi"),
            (v.glusterfs.is_some(), "glusterfs"),
            (v.flocker.is_some(), "flocker"),
            (v.persistent_volume_claim.is_some(), "persistentVolumeClaim"),
            (v.rbd.is_some(), "rbd"),
            (v.cinder.is_some(), "cinder"),
            (v.cephfs.is_some(), "cephfs"),
            (v.quobyte.is_some(), "quobyte"),
            (v.downward_api.is_some(), "downwardAPI"),
            (v.fc.is_some(), "fc"),
            (v.flex_volume.is_some(), "flexVolume"),
            (v.config_map.is_some(), "configMap"),
            (v.azure_file.is_some(), "azureFile"),
            (v.vsphere_volume.is_some(), "vsphereVolume"),
            (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
            (v.portworx_volume.is_some(), "portworxVolume"),
            (v.azure_disk.is_some(), "azureDisk"),
            (v.storageos.is_some(), "storageos"),
            (v.projected.is_some(), "projected"),
            (v.scale_io.is_some(), "scaleIO"),
            (v.csi.is_some(), "csi"),
            (v.ephemeral.is_some(), "ephemeral"),
            (v.image.is_some(), "image"),
        ];
        for (set, field) in sources {
            if !set {
                continue;
            }
            let fpath = format!("{path}.{field}");
            if n > 0 {
                self.forbidden(fpath, "may not specify more than 1 volume type");
                continue;
            }
            n += 1;
            self.volume_source_detail(v, field, &fpath);
        }
        if n == 0 {
            self.required(path, "must specify a volume type");
        }
    }

    fn volume_source_detail(&mut self, v: &Volume, field: &str, path: &str) {
        // Sources whose only checked field is a required name.
        let missing = match field {
            "secret" => v
                .secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref().unwrap_or("").is_empty())
                .then_some("secretName"),
            "configMap" => v
                .config_map
                .as_ref()
                .is_some_and(|c| c.name.is_empty())
                .then_some("name"),
            "persistentVolumeClaim" => v
                .persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name.is_empty())
                .then_some("claimName"),
            "csi" => v
                .csi
                .as_ref()
                .is_some_and(|c| c.driver.is_empty())
                .then_some("driver"),
            "image" => v
                .image
                .as_ref()
                .is_some_and(|i| i.reference.as_deref().unwrap_or("").is_empty())
                .then_some("reference"),
            _ => None,
        };
        if let Some(sub) = missing {
            self.required(format!("{path}.{sub}"), "");
        }
        match field {
            "emptyDir" => {
                let ed = v.empty_dir.as_ref().expect("set");
                let medium = ed.medium.as_deref().unwrap_or("");
                let hugepages_sized = medium
                    .strip_prefix("HugePages-")
                    .is_some_and(|size| parse_quantity(size).is_ok());
                if !["", "Memory", "HugePages"].contains(&medium) && !hugepages_sized {
                    self.not_supported(
                        format!("{path}.medium"),
                        medium,
                        &["", "HugePages", "Memory"],
                    );
                }
                if let Some(q) = ed.size_limit.as_ref() {
                    self.quantity_nonnegative(&format!("{path}.sizeLimit"), q);
                }
            }
            "hostPath" => {
                let hp = v.host_path.as_ref().expect("set");
                if hp.path.is_empty() {
                    return self.required(format!("{path}.path"), "");
                }
                self.no_backsteps(&format!("{path}.path"), &hp.path);
                let t = hp.type_.as_deref().unwrap_or("");
                if !HOST_PATH_TYPES.contains(&t) {
                    self.not_supported(format!("{path}.type"), t, &HOST_PATH_TYPES);
                }
            }
            "nfs" => {
                let nfs = v.nfs.as_ref().expect("set");
                if nfs.server.is_empty() {
                    self.required(format!("{path}.server"), "");
                }
                if nfs.path.is_empty() {
                    self.required(format!("{path}.path"), "");
                }
                if !nfs.path.starts_with('/') {
                    self.invalid(
                        format!("{path}.path"),
                        &nfs.path,
                        "must be an absolute path",
                    );
                }
            }
            "downwardAPI" => {
                let d = v.downward_api.as_ref().expect("set");
                self.file_mode(&format!("{path}.defaultMode"), d.default_mode);
                for (i, f) in d.items.iter().flatten().enumerate() {
                    self.downward_api_file(f, &format!("{path}.items[{i}]"));
                }
            }
            "projected" => {
                let p = v.projected.as_ref().expect("set");
                self.file_mode(&format!("{path}.defaultMode"), p.default_mode);
                for (i, s) in p.sources.iter().flatten().enumerate() {
                    let spath = format!("{path}.sources[{i}]");
                    let kinds = [
                        (s.secret.is_some(), "secret"),
                        (s.config_map.is_some(), "configMap"),
                        (s.downward_api.is_some(), "downwardAPI"),
                        (s.service_account_token.is_some(), "serviceAccountToken"),
                        (s.cluster_trust_bundle.is_some(), "clusterTrustBundle"),
                        (s.pod_certificate.is_some(), "podCertificate"),
                    ];
                    let mut count = 0;
                    for (set, kind) in kinds {
                        if set {
                            count += 1;
                            if count > 1 {
                                self.forbidden(
                                    format!("{spath}.{kind}"),
                                    "may not specify more than 1 projection type",
                                );
                            }
                        }
                    }
                    if count == 0 {
                        self.required(&spath, "must specify exactly 1 projection type");
                    }
                    if let Some(d) = s.downward_api.as_ref() {
                        for (j, f) in d.items.iter().flatten().enumerate() {
                            self.downward_api_file(f, &format!("{spath}.downwardAPI.items[{j}]"));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn file_mode(&mut self, path: &str, mode: Option<i32>) {
        if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
            self.invalid(
                path,
                m,
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }

    fn downward_api_file(&mut self, f: &DownwardAPIVolumeFile, path: &str) {
        if f.path.is_empty() {
            self.required(format!("{path}.path"), "");
        } else {
            self.local_non_reserved_path(&format!("{path}.path"), &f.path);
        }
        match (f.field_ref.as_ref(), f.resource_field_ref.as_ref()) {
            (Some(fr), rfr) => {
                self.field_ref(
                    &format!("{path}.fieldRef"),
                    fr.field_path.as_str(),
                    VOLUME_FIELD_PATHS,
                );
                if rfr.is_some() {
                    self.push(
                        path,
                        "Invalid value: \"resource\": fieldRef and resourceFieldRef can not be specified simultaneously",
                    );
                }
            }
            (None, Some(rfr)) => {
                if rfr.container_name.as_deref().unwrap_or("").is_empty() {
                    self.required(format!("{path}.resourceFieldRef.containerName"), "");
                } else {
                    self.resource_field(
                        &format!("{path}.resourceFieldRef.resource"),
                        &rfr.resource,
                    );
                }
            }
            (None, None) => self.required(path, "one of fieldRef and resourceFieldRef is required"),
        }
        self.file_mode(&format!("{path}.mode"), f.mode);
    }

    fn field_ref(&mut self, path: &str, field_path: &str, supported: &[&str]) {
        if field_path.is_empty() {
            return self.required(format!("{path}.fieldPath"), "");
        }
        if let Some((base, rest)) = field_path.split_once('[') {
            let key = rest.strip_suffix(']').map(|k| k.trim_matches('\''));
            match (base, key) {
                ("metadata.labels", Some(k)) => {
                    self.invalid_each(path, k, qualified_name_errors(k))
                }
                ("metadata.annotations", Some(k)) => {
                    self.invalid_each(path, k, qualified_name_errors(&k.to_lowercase()))
                }
                _ => self.invalid(path, base, "does not support subscript"),
            }
        } else if !supported.contains(&field_path) {
            self.not_supported(format!("{path}.fieldPath"), field_path, supported);
        }
    }

    fn resource_field(&mut self, path: &str, resource: &str) {
        if resource.is_empty() {
            return self.required(path, "");
        }
        let hugepages = resource.starts_with("requests.hugepages-")
            || resource.starts_with("limits.hugepages-");
        if !RESOURCE_FIELD_PATHS.contains(&resource) && !hugepages {
            self.not_supported(path, resource, RESOURCE_FIELD_PATHS);
        }
    }

    fn no_backsteps(&mut self, path: &str, p: &str) {
        if p.split('/').any(|part| part == "..") {
            self.invalid(path, p, "must not contain '..'");
        }
    }

    fn local_descending_path(&mut self, path: &str, p: &str) {
        if p.starts_with('/') {
            self.invalid(path, p, "must be a relative path");
        }
        self.no_backsteps(path, p);
    }

    fn local_non_reserved_path(&mut self, path: &str, p: &str) {
        self.local_descending_path(path, p);
        if p.starts_with("..") {
            self.invalid(path, p, "must not start with '..'");
        }
    }

    // --------------------------------------------------------------------------------------------
    // containers

    fn container_common(&mut self, c: &Container, path: &str, ctx: &ContainerCtx<'_>) {
        let name_path = format!("{path}.name");
        if c.name.is_empty() {
            self.required(name_path, "");
        } else {
            self.dns_label(&name_path, &c.name);
        }
        let image = c.image.as_deref().unwrap_or("");
        if image.trim().is_empty() {
            self.required(format!("{path}.image"), "");
        } else if image.trim() != image {
            self.invalid(
                format!("{path}.image"),
                image,
                "must not have leading or trailing whitespace",
            );
        }
        self.one_of(
            format!("{path}.terminationMessagePolicy"),
            c.termination_message_policy.as_deref().unwrap_or(""),
            &["File", "FallbackToLogsOnError"],
        );
        self.ports(
            c.ports.as_deref().unwrap_or_default(),
            &format!("{path}.ports"),
        );
        self.env(c.env.as_deref().unwrap_or_default(), &format!("{path}.env"));
        self.env_from(
            c.env_from.as_deref().unwrap_or_default(),
            &format!("{path}.envFrom"),
        );
        self.volume_mounts(c, &format!("{path}.volumeMounts"), ctx);
        for (i, d) in c.volume_devices.iter().flatten().enumerate() {
            let dpath = format!("{path}.volumeDevices[{i}]");
            if d.name.is_empty() {
                self.required(format!("{dpath}.name"), "");
            } else if let Some(vol) = ctx.volumes.get(d.name.as_str()) {
                if vol.persistent_volume_claim.is_none() && vol.ephemeral.is_none() {
                    self.invalid(
                        format!("{dpath}.name"),
                        &d.name,
                        "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
                    );
                }
            } else {
                self.not_found(format!("{dpath}.name"), &d.name);
            }
            if d.device_path.is_empty() {
                self.required(format!("{dpath}.devicePath"), "");
            }
        }
        self.one_of(
            format!("{path}.imagePullPolicy"),
            c.image_pull_policy.as_deref().unwrap_or(""),
            &["Always", "IfNotPresent", "Never"],
        );
        if let Some(r) = c.resources.as_ref() {
            self.resources(r, &format!("{path}.resources"));
        }
        if let Some(sp) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.seccomp_profile.as_ref())
        {
            self.seccomp_profile(&format!("{path}.securityContext.seccompProfile"), sp);
        }
    }

    fn lifecycle_and_probes(&mut self, c: &Container, path: &str, ctx: &ContainerCtx<'_>) {
        if let Some(lc) = c.lifecycle.as_ref() {
            self.lifecycle(lc, &format!("{path}.lifecycle"), ctx.grace);
        }
        if let Some(p) = c.liveness_probe.as_ref() {
            let ppath = format!("{path}.livenessProbe");
            self.probe(p, &ppath);
            self.success_threshold_one(p, &ppath);
        }
        if let Some(p) = c.readiness_probe.as_ref() {
            let ppath = format!("{path}.readinessProbe");
            self.probe(p, &ppath);
            if p.termination_grace_period_seconds.is_some() {
                self.push(
                    format!("{ppath}.terminationGracePeriodSeconds"),
                    "Invalid value: must not be set for readinessProbes",
                );
            }
        }
        if let Some(p) = c.startup_probe.as_ref() {
            let ppath = format!("{path}.startupProbe");
            self.probe(p, &ppath);
            self.success_threshold_one(p, &ppath);
        }
    }

    fn success_threshold_one(&mut self, p: &Probe, path: &str) {
        if let Some(t) = p.success_threshold.filter(|t| *t != 1) {
            self.invalid(format!("{path}.successThreshold"), t, "must be 1");
        }
    }

    fn ports(&mut self, ports: &[ContainerPort], path: &str) {
        let mut names = BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let ppath = format!("{path}[{i}]");
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let errs = port_name_errors(name);
                if !errs.is_empty() {
                    self.invalid_each(&format!("{ppath}.name"), name, errs);
                } else if !names.insert(name) {
                    self.duplicate(format!("{ppath}.name"), name);
                }
            }
            if p.container_port == 0 {
                self.required(format!("{ppath}.containerPort"), "");
            } else if !(1..=65535).contains(&p.container_port) {
                self.invalid(
                    format!("{ppath}.containerPort"),
                    p.container_port,
                    PORT_RANGE,
                );
            }
            if let Some(hp) = p
                .host_port
                .filter(|hp| *hp != 0 && !(1..=65535).contains(hp))
            {
                self.invalid(format!("{ppath}.hostPort"), hp, PORT_RANGE);
            }
            self.one_of(
                format!("{ppath}.protocol"),
                p.protocol.as_deref().unwrap_or(""),
                &["TCP", "UDP", "SCTP"],
            );
            if let Some(ip) = p.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                self.ip(&format!("{ppath}.hostIP"), ip);
            }
        }
    }

    fn host_port_conflicts<'a>(
        &mut self,
        containers: impl Iterator<Item = (usize, &'a Container)>,
        path: &str,
    ) {
        let mut seen = BTreeSet::new();
        for (i, c) in containers {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let hp = p.host_port.unwrap_or(0);
                if hp == 0 {
                    continue;
                }
                let key = format!(
                    "{}/{}/{hp}",
                    p.protocol.as_deref().unwrap_or(""),
                    p.host_ip.as_deref().unwrap_or("")
                );
                if !seen.insert(key.clone()) {
                    self.duplicate(format!("{path}[{i}].ports[{j}].hostPort"), &key);
                }
            }
        }
    }

    fn env(&mut self, vars: &[EnvVar], path: &str) {
        for (i, e) in vars.iter().enumerate() {
            let epath = format!("{path}[{i}]");
            if e.name.is_empty() {
                self.required(format!("{epath}.name"), "");
            } else {
                self.invalid_each(
                    &format!("{epath}.name"),
                    &e.name,
                    env_var_name_errors(&e.name),
                );
            }
            let Some(vf) = e.value_from.as_ref() else {
                continue;
            };
            let vpath = format!("{epath}.valueFrom");
            let mut n = 0;
            if let Some(fr) = vf.field_ref.as_ref() {
                n += 1;
                let frpath = format!("{vpath}.fieldRef");
                if fr.api_version.as_deref().unwrap_or("").is_empty() {
                    self.required(format!("{frpath}.apiVersion"), "");
                } else {
                    self.field_ref(&frpath, &fr.field_path, ENV_FIELD_PATHS);
                }
            }
            if let Some(rfr) = vf.resource_field_ref.as_ref() {
                n += 1;
                self.resource_field(&format!("{vpath}.resourceFieldRef.resource"), &rfr.resource);
            }
            if let Some(r) = vf.config_map_key_ref.as_ref() {
                n += 1;
                self.key_selector(&format!("{vpath}.configMapKeyRef"), &r.name, &r.key);
            }
            if let Some(r) = vf.secret_key_ref.as_ref() {
                n += 1;
                self.key_selector(&format!("{vpath}.secretKeyRef"), &r.name, &r.key);
            }
            if vf.file_key_ref.is_some() {
                n += 1;
            }
            if n == 0 {
                self.invalid(
                    vpath,
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                );
            } else if !e.value.as_deref().unwrap_or("").is_empty() {
                self.invalid(vpath, "", "may not be specified when `value` is not empty");
            } else if n > 1 {
                self.invalid(
                    vpath,
                    "",
                    "may not have more than one field specified at a time",
                );
            }
        }
    }

    fn key_selector(&mut self, path: &str, name: &str, key: &str) {
        self.dns_subdomain(&format!("{path}.name"), name);
        if key.is_empty() {
            self.required(format!("{path}.key"), "");
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            self.invalid(
                format!("{path}.key"),
                key,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            );
        }
    }

    fn env_from(&mut self, sources: &[EnvFromSource], path: &str) {
        for (i, s) in sources.iter().enumerate() {
            let spath = format!("{path}[{i}]");
            if let Some(prefix) = s.prefix.as_deref().filter(|p| !p.is_empty()) {
                self.invalid_each(
                    &format!("{spath}.prefix"),
                    prefix,
                    env_var_name_errors(prefix),
                );
            }
            let mut n = 0;
            if let Some(r) = s.config_map_ref.as_ref() {
                n += 1;
                if r.name.is_empty() {
                    self.required(format!("{spath}.configMapRef.name"), "");
                }
            }
            if let Some(r) = s.secret_ref.as_ref() {
                n += 1;
                if r.name.is_empty() {
                    self.required(format!("{spath}.secretRef.name"), "");
                }
            }
            if n == 0 {
                self.invalid(
                    spath,
                    "",
                    "must specify one of: `configMapRef` or `secretRef`",
                );
            } else if n > 1 {
                self.invalid(
                    spath,
                    "",
                    "may not have more than one field specified at a time",
                );
            }
        }
    }

    fn volume_mounts(&mut self, c: &Container, path: &str, ctx: &ContainerCtx<'_>) {
        let mut mount_paths = BTreeSet::new();
        let privileged = c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true);
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let mpath = format!("{path}[{i}]");
            let vol = ctx.volumes.get(m.name.as_str());
            if m.name.is_empty() {
                self.required(format!("{mpath}.name"), "");
            } else if vol.is_none() {
                self.not_found(format!("{mpath}.name"), &m.name);
            }
            if m.mount_path.is_empty() {
                self.required(format!("{mpath}.mountPath"), "");
            } else if !m.mount_path.starts_with('/') {
                self.invalid(
                    format!("{mpath}.mountPath"),
                    &m.mount_path,
                    "must be an absolute path",
                );
            }
            if !mount_paths.insert(m.mount_path.as_str()) {
                self.invalid(
                    format!("{mpath}.mountPath"),
                    &m.mount_path,
                    "must be unique",
                );
            }
            self.sub_paths(m, &mpath, vol.is_some_and(|v| v.image.is_some()));
            if let Some(prop) = m.mount_propagation.as_deref() {
                let ppath = format!("{mpath}.mountPropagation");
                self.one_of(&ppath, prop, &["None", "HostToContainer", "Bidirectional"]);
                if prop == "Bidirectional" && !privileged {
                    self.forbidden(ppath, "Bidirectional mount propagation is available only to privileged containers");
                }
            }
        }
    }

    fn sub_paths(&mut self, m: &VolumeMount, mpath: &str, image_volume: bool) {
        let sub_path = m.sub_path.as_deref().unwrap_or("");
        let sub_path_expr = m.sub_path_expr.as_deref().unwrap_or("");
        if image_volume && !sub_path.is_empty() {
            self.invalid(
                format!("{mpath}.subPath"),
                sub_path,
                "not allowed in image volume sources",
            );
        }
        if image_volume && !sub_path_expr.is_empty() {
            self.invalid(
                format!("{mpath}.subPathExpr"),
                sub_path_expr,
                "not allowed in image volume sources",
            );
        }
        if !sub_path.is_empty() {
            self.local_descending_path(&format!("{mpath}.subPath"), sub_path);
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                self.invalid(
                    format!("{mpath}.subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                );
            }
            self.local_descending_path(&format!("{mpath}.subPathExpr"), sub_path_expr);
        }
    }

    fn resources(&mut self, r: &ResourceRequirements, path: &str) {
        let empty = BTreeMap::new();
        let limits = r.limits.as_ref().unwrap_or(&empty);
        let requests = r.requests.as_ref().unwrap_or(&empty);
        let mut parsed_limits = BTreeMap::new();
        let mut bad_limits = BTreeSet::new();
        for (name, q) in limits {
            let qpath = format!("{path}.limits[{name}]");
            let before = self.errs.len();
            self.container_resource_name(&qpath, name);
            if let Some(p) = self.resource_quantity(&qpath, name, q) {
                parsed_limits.insert(name.as_str(), p);
            }
            if self.errs.len() > before {
                bad_limits.insert(name.as_str());
            }
        }
        for (name, q) in requests {
            let qpath = format!("{path}.requests[{name}]");
            if limits.get(name) == Some(q) && bad_limits.contains(name.as_str()) {
                // Requests default to limits: the same problem, already reported at the limit.
                continue;
            }
            self.container_resource_name(&qpath, name);
            let Some(req) = self.resource_quantity(&qpath, name, q) else {
                continue;
            };
            let overcommit = is_native_resource(name) && !name.starts_with("hugepages-");
            match (parsed_limits.get(name.as_str()), limits.get(name)) {
                (Some(limit), Some(limit_text)) => {
                    if !overcommit && req != *limit {
                        self.invalid(
                            &qpath,
                            &q.0,
                            &format!("must be equal to {name} limit of {}", limit_text.0),
                        );
                    } else if req > *limit {
                        self.invalid(
                            &qpath,
                            &q.0,
                            &format!(
                                "must be less than or equal to {name} limit of {}",
                                limit_text.0
                            ),
                        );
                    }
                }
                (None, None) if !overcommit => self.required(
                    format!("{path}.limits[{name}]"),
                    "Limit must be set for non overcommitable resources",
                ),
                _ => {}
            }
        }
    }

    fn container_resource_name(&mut self, path: &str, name: &str) {
        let errs = qualified_name_errors(name);
        if !errs.is_empty() {
            return self.invalid_each(path, name, errs);
        }
        if !name.contains('/') {
            let standard = ["cpu", "memory", "ephemeral-storage"].contains(&name)
                || name.starts_with("hugepages-");
            if !standard {
                self.invalid(path, name, "must be a standard resource for containers");
            }
        } else if !is_native_resource(name) && !is_extended_resource_name(name) {
            self.invalid(path, name, "doesn't follow extended resource name standard");
        }
    }

    /// Parses a quantity; reports a syntax error, a negative value or (for extended resources) a
    /// fraction. Returns the value when it parsed.
    fn resource_quantity(
        &mut self,
        path: &str,
        name: &str,
        q: &Quantity,
    ) -> Option<ParsedQuantity> {
        let p = self.quantity_nonnegative(path, q)?;
        if is_extended_resource_name(name) && !p.is_integer() {
            self.invalid(path, &q.0, "must be an integer");
        }
        Some(p)
    }

    fn quantity_nonnegative(&mut self, path: &str, q: &Quantity) -> Option<ParsedQuantity> {
        match parse_quantity(&q.0) {
            Err(e) => {
                self.invalid(path, &q.0, &e);
                None
            }
            Ok(p) => {
                if p.is_negative() {
                    self.invalid(path, &q.0, "must be greater than or equal to 0");
                }
                Some(p)
            }
        }
    }

    fn lifecycle(&mut self, lc: &Lifecycle, path: &str, grace: Option<i64>) {
        for (h, name) in [(&lc.post_start, "postStart"), (&lc.pre_stop, "preStop")] {
            if let Some(h) = h.as_ref() {
                self.lifecycle_handler(h, &format!("{path}.{name}"), grace);
            }
        }
    }

    fn lifecycle_handler(&mut self, h: &LifecycleHandler, path: &str, grace: Option<i64>) {
        let mut n = 0;
        if let Some(e) = h.exec.as_ref() {
            n += 1;
            if e.command.as_ref().is_none_or(Vec::is_empty) {
                self.required(format!("{path}.exec.command"), "");
            }
        }
        if let Some(g) = h.http_get.as_ref() {
            n = self.second_handler(n, path, "httpGet");
            if n == 1 {
                self.http_get(g, &format!("{path}.httpGet"));
            }
        }
        if let Some(t) = h.tcp_socket.as_ref() {
            n = self.second_handler(n, path, "tcpSocket");
            if n == 1 {
                self.port_num_or_name(&format!("{path}.tcpSocket.port"), &t.port);
            }
        }
        if let Some(s) = h.sleep.as_ref() {
            n = self.second_handler(n, path, "sleep");
            if let (1, Some(g)) = (n, grace) {
                if s.seconds < 0 || s.seconds > g {
                    self.invalid(
                        format!("{path}.sleep"),
                        s.seconds,
                        &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
                    );
                }
            }
        }
        if n == 0 {
            self.required(path, "must specify a handler type");
        }
    }

    /// Counts one more handler; reports it if one was already there. Returns the new count, or
    /// a count > 1 that tells the caller not to validate the extra handler.
    fn second_handler(&mut self, n: usize, path: &str, field: &str) -> usize {
        if n > 0 {
            self.forbidden(
                format!("{path}.{field}"),
                "may not specify more than 1 handler type",
            );
            n + 1
        } else {
            1
        }
    }

    fn probe(&mut self, p: &Probe, path: &str) {
        let mut n = 0;
        if let Some(e) = p.exec.as_ref() {
            n += 1;
            if e.command.as_ref().is_none_or(Vec::is_empty) {
                self.required(format!("{path}.exec.command"), "");
            }
        }
        if let Some(g) = p.http_get.as_ref() {
            n = self.second_handler(n, path, "httpGet");
            if n == 1 {
                self.http_get(g, &format!("{path}.httpGet"));
            }
        }
        if let Some(t) = p.tcp_socket.as_ref() {
            n = self.second_handler(n, path, "tcpSocket");
            if n == 1 {
                self.port_num_or_name(&format!("{path}.tcpSocket.port"), &t.port);
            }
        }
        if let Some(g) = p.grpc.as_ref() {
            n = self.second_handler(n, path, "grpc");
            if n == 1 && !(1..=65535).contains(&g.port) {
                self.invalid(format!("{path}.grpc.port"), g.port, PORT_RANGE);
            }
        }
        if n == 0 {
            self.required(path, "must specify a handler type");
        }
        if let Some(d) = p.initial_delay_seconds.filter(|d| *d < 0) {
            self.invalid(
                format!("{path}.initialDelaySeconds"),
                d,
                "must be greater than or equal to 0",
            );
        }
        for (value, field) in [
            (p.timeout_seconds, "timeoutSeconds"),
            (p.period_seconds, "periodSeconds"),
            (p.success_threshold, "successThreshold"),
            (p.failure_threshold, "failureThreshold"),
        ] {
            if let Some(v) = value.filter(|v| *v < 1) {
                self.invalid(
                    format!("{path}.{field}"),
                    v,
                    "must be greater than or equal to 1",
                );
            }
        }
        if let Some(g) = p.termination_grace_period_seconds.filter(|g| *g <= 0) {
            self.invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            );
        }
    }

    fn http_get(&mut self, g: &HTTPGetAction, path: &str) {
        if g.path.as_deref().unwrap_or("").is_empty() {
            self.required(format!("{path}.path"), "");
        }
        self.port_num_or_name(&format!("{path}.port"), &g.port);
        let scheme = g.scheme.as_deref().unwrap_or("");
        if !["HTTP", "HTTPS"].contains(&scheme) {
            self.not_supported(format!("{path}.scheme"), scheme, &["HTTP", "HTTPS"]);
        }
        for h in g.http_headers.iter().flatten() {
            let valid = !h.name.is_empty()
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid {
                self.invalid(
                    format!("{path}.httpHeaders"),
                    &h.name,
                    "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                );
            }
        }
    }

    fn port_num_or_name(&mut self, path: &str, port: &IntOrString) {
        match port {
            IntOrString::Int(n) => {
                if !(1..=65535).contains(n) {
                    self.invalid(path, *n, PORT_RANGE);
                }
            }
            IntOrString::String(s) => self.invalid_each(path, s, port_name_errors(s)),
        }
    }

    // --------------------------------------------------------------------------------------------
    // kubelet's static-pod rule: no references to API objects (`podutil.HasAPIObjectReference`)

    fn static_pod_references(&mut self, spec: &PodSpec) {
        const PREFIX: &str = "static pods may not reference";
        let sa = spec.service_account_name.as_deref().unwrap_or("");
        let legacy_sa = spec.service_account.as_deref().unwrap_or("");
        if !sa.is_empty() {
            self.push(
                "spec.serviceAccountName",
                format!("{PREFIX} serviceaccounts"),
            );
        } else if !legacy_sa.is_empty() {
            // The deprecated alias: the API copies it into serviceAccountName.
            self.push("spec.serviceAccount", format!("{PREFIX} serviceaccounts"));
        }

        let mut secrets = Vec::new();
        let mut configmaps = Vec::new();
        for i in 0..spec.image_pull_secrets.as_ref().map_or(0, Vec::len) {
            secrets.push(format!("spec.imagePullSecrets[{i}]"));
        }
        let lists = [
            (
                "initContainers",
                spec.init_containers.as_deref().unwrap_or_default(),
            ),
            ("containers", spec.containers.as_slice()),
        ];
        for (list, containers) in lists {
            for (i, c) in containers.iter().enumerate() {
                let path = format!("spec.{list}[{i}]");
                env_refs(
                    &path,
                    c.env_from.as_deref(),
                    c.env.as_deref(),
                    &mut secrets,
                    &mut configmaps,
                );
            }
        }
        for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
            let path = format!("spec.ephemeralContainers[{i}]");
            env_refs(
                &path,
                c.env_from.as_deref(),
                c.env.as_deref(),
                &mut secrets,
                &mut configmaps,
            );
        }
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        for (i, v) in volumes.iter().enumerate() {
            volume_refs(
                &format!("spec.volumes[{i}]"),
                v,
                &mut secrets,
                &mut configmaps,
            );
        }
        for p in secrets {
            self.push(p, format!("{PREFIX} secrets"));
        }
        for p in configmaps {
            self.push(p, format!("{PREFIX} configmaps"));
        }
        if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
            self.push("spec.resourceClaims", format!("{PREFIX} resourceclaims"));
        }

        // Volume types. A volume with an allowed source passes (a second source is already an
        // API error); secret and config map sources were reported above.
        for (i, v) in volumes.iter().enumerate() {
            let path = format!("spec.volumes[{i}]");
            let allowed = v.aws_elastic_block_store.is_some()
                || v.azure_disk.is_some()
                || v.cephfs.is_some()
                || v.cinder.is_some()
                || v.downward_api.is_some()
                || v.empty_dir.is_some()
                || v.fc.is_some()
                || v.flex_volume.is_some()
                || v.flocker.is_some()
                || v.gce_persistent_disk.is_some()
                || v.git_repo.is_some()
                || v.host_path.is_some()
                || v.image.is_some()
                || v.iscsi.is_some()
                || v.nfs.is_some()
                || v.photon_persistent_disk.is_some()
                || v.portworx_volume.is_some()
                || v.quobyte.is_some()
                || v.rbd.is_some()
                || v.scale_io.is_some()
                || v.storageos.is_some()
                || v.vsphere_volume.is_some();
            if allowed || v.config_map.is_some() || v.secret.is_some() {
                continue;
            }
            if v.csi.is_some() {
                self.push(
                    format!("{path}.csi"),
                    format!("{PREFIX} csidrivers (via CSI volumes)"),
                );
            } else if v.glusterfs.is_some() {
                self.push(
                    format!("{path}.glusterfs"),
                    format!("{PREFIX} endpoints (via glusterFS volumes)"),
                );
            } else if v.persistent_volume_claim.is_some() {
                self.push(
                    format!("{path}.persistentVolumeClaim"),
                    format!("{PREFIX} persistentvolumeclaims"),
                );
            } else if v.ephemeral.is_some() {
                self.push(
                    format!("{path}.ephemeral"),
                    format!("{PREFIX} persistentvolumeclaims (via ephemeral volumes)"),
                );
            } else if v.azure_file.is_some() {
                // Its secretName was reported as a secret reference.
            } else if let Some(p) = v.projected.as_ref() {
                for (j, s) in p.sources.iter().flatten().enumerate() {
                    let spath = format!("{path}.projected.sources[{j}]");
                    if s.config_map.is_some() || s.secret.is_some() || s.downward_api.is_some() {
                        continue; // reported above, or allowed
                    } else if s.service_account_token.is_some() {
                        self.push(
                            format!("{spath}.serviceAccountToken"),
                            format!("{PREFIX} serviceaccounts (via projected volumes)"),
                        );
                    } else if s.cluster_trust_bundle.is_some() {
                        self.push(
                            format!("{spath}.clusterTrustBundle"),
                            format!("{PREFIX} clustertrustbundles"),
                        );
                    } else if s.pod_certificate.is_some() {
                        self.push(
                            format!("{spath}.podCertificate"),
                            format!("{PREFIX} podcertificates"),
                        );
                    } else {
                        self.push(
                            spath,
                            format!("unknown source for projected volume {:?}", v.name),
                        );
                    }
                }
            } else {
                self.push(
                    path,
                    format!("unknown volume type for volume  {:?}", v.name),
                );
            }
        }
    }
}

/// What a container's validation needs from the pod.
struct ContainerCtx<'a> {
    volumes: &'a BTreeMap<&'a str, &'a Volume>,
    grace: Option<i64>,
}

fn env_refs(
    path: &str,
    env_from: Option<&[EnvFromSource]>,
    env: Option<&[EnvVar]>,
    secrets: &mut Vec<String>,
    configmaps: &mut Vec<String>,
) {
    for (i, e) in env.unwrap_or_default().iter().enumerate() {
        let Some(vf) = e.value_from.as_ref() else {
            continue;
        };
        if vf.secret_key_ref.is_some() {
            secrets.push(format!("{path}.env[{i}].valueFrom.secretKeyRef"));
        }
        if vf.config_map_key_ref.is_some() {
            configmaps.push(format!("{path}.env[{i}].valueFrom.configMapKeyRef"));
        }
    }
    for (i, s) in env_from.unwrap_or_default().iter().enumerate() {
        if s.secret_ref.is_some() {
            secrets.push(format!("{path}.envFrom[{i}].secretRef"));
        }
        if s.config_map_ref.is_some() {
            configmaps.push(format!("{path}.envFrom[{i}].configMapRef"));
        }
    }
}

fn volume_refs(path: &str, v: &Volume, secrets: &mut Vec<String>, configmaps: &mut Vec<String>) {
    let secret_refs = [
        (v.secret.is_some(), "secret"),
        (v.azure_file.is_some(), "azureFile.secretName"),
        (
            v.cephfs.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "cephfs.secretRef",
        ),
        (
            v.cinder.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "cinder.secretRef",
        ),
        (
            v.flex_volume
                .as_ref()
                .is_some_and(|s| s.secret_ref.is_some()),
            "flexVolume.secretRef",
        ),
        (
            v.iscsi.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "iscsi.secretRef",
        ),
        (
            v.rbd.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "rbd.secretRef",
        ),
        (v.scale_io.is_some(), "scaleIO.secretRef"),
        (
            v.storageos.as_ref().is_some_and(|s| s.secret_ref.is_some()),
            "storageos.secretRef",
        ),
        (
            v.csi
                .as_ref()
                .is_some_and(|s| s.node_publish_secret_ref.is_some()),
            "csi.nodePublishSecretRef",
        ),
    ];
    for (set, field) in secret_refs {
        if set {
            secrets.push(format!("{path}.{field}"));
        }
    }
    if v.config_map.is_some() {
        configmaps.push(format!("{path}.configMap"));
    }
    if let Some(p) = v.projected.as_ref() {
        for (j, s) in p.sources.iter().flatten().enumerate() {
            if s.secret.is_some() {
                secrets.push(format!("{path}.projected.sources[{j}].secret"));
            }
            if s.config_map.is_some() {
                configmaps.push(format!("{path}.projected.sources[{j}].configMap"));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Constants

/// `TotalAnnotationSizeLimitB`: 256 KiB for all annotation keys and values together.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 << 10;

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

const SYSCTL_MAX_LENGTH: usize = 253;
const SYSCTL_FMT: &str = r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";

/// The quantity syntax error, as `resource.ErrFormatWrong`.
pub const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

// ------------------------------------------------------------------------------------------------
// Name syntax (`k8s.io/apimachinery/pkg/util/validation`)

/// apimachinery's `RegexError`, including its odd `',  or '` separator.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let ex = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{msg} (e.g. {ex}regex used for validation is '{fmt}')")
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends, ≤ 63.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, alphanumeric at both ends, ≤ 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_chars)
}

/// `IsDNS1123Label`'s messages (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_label_chars(s) {
        if s.split('.').all(is_label_chars) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`'s messages (empty when valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(is_label_chars) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `IsQualifiedName`'s messages: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 characters of `[-A-Za-z0-9_.]`, alphanumeric at both ends. Used for label and annotation
/// keys.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`'s messages: empty, or at most 63 characters of `[-A-Za-z0-9_.]`,
/// alphanumeric at both ends.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortName`'s messages (an IANA_SVC_NAME).
pub fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// `IsEnvVarName`'s messages: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`, `..` or `..*`.
pub fn env_var_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(c));
    if !ok {
        errs.push(regex_error(
            ENV_VAR_NAME_MSG,
            ENV_VAR_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".into());
    } else if s == ".." {
        errs.push("must not be '..'".into());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn is_valid_sysctl_name(s: &str) -> bool {
    if s.is_empty() || s.len() > SYSCTL_MAX_LENGTH {
        return false;
    }
    s.split(['.', '/']).all(|seg| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    })
}

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// An extended resource: domain-prefixed, not `kubernetes.io/`, and `requests.<name>` is a
/// qualified name.
fn is_extended_resource_name(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && qualified_name_errors(&format!("requests.{name}")).is_empty()
}

// ------------------------------------------------------------------------------------------------
// Quantities (`k8s.io/apimachinery/pkg/api/resource`)

/// A parsed resource quantity, exact to the nano-unit (`1` = 10⁹ nanos, `1m` = 10⁶ nanos).
///
/// As in Go, a value more precise than a nano-unit is rounded up (away from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParsedQuantity {
    nanos: i128,
}

impl ParsedQuantity {
    /// The value in nano-units.
    pub fn nanos(self) -> i128 {
        self.nanos
    }

    /// The value in milli-units, rounded up (Go's `MilliValue`).
    pub fn millis(self) -> i128 {
        div_round_away(self.nanos, 1_000_000)
    }

    /// The value in units, rounded up (Go's `Value`), e.g. bytes for memory.
    pub fn units(self) -> i128 {
        div_round_away(self.nanos, 1_000_000_000)
    }

    /// Whether the value is below zero.
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is a whole number of units.
    pub fn is_integer(self) -> bool {
        self.nanos % 1_000_000_000 == 0
    }
}

fn div_round_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

/// Parses a Kubernetes quantity: `<sign><digits>[.<digits>]<suffix>`, the suffix being a binary
/// SI one (`Ki Mi Gi Ti Pi Ei`), a decimal SI one (`n u m "" k M G T P E`) or a decimal exponent
/// (`e3`, `E-2`). Surrounding whitespace is ignored, as the API's JSON decoding does.
///
/// The error is [`QUANTITY_FORMAT_ERROR`] for a syntax error, or a message saying the value is
/// out of range (beyond ±10²⁰ units, far above any real resource).
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, String> {
    let s = s.trim();
    let bad = || QUANTITY_FORMAT_ERROR.to_string();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let num_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(bad());
    }
    let (pow10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (exp.parse::<i32>().map_err(|_| out_of_range())?, 0)
        }
    };
    // Leading zeros do not count towards the precision.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| out_of_range())?;
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| out_of_range())?
    };
    mantissa = mantissa
        .checked_mul(1i128 << pow2)
        .ok_or_else(out_of_range)?;
    let scale = pow10 - frac_len + 9;
    let mut nanos = if mantissa == 0 {
        0
    } else if scale >= 0 {
        let factor = 10i128
            .checked_pow(scale.unsigned_abs())
            .ok_or_else(out_of_range)?;
        mantissa.checked_mul(factor).ok_or_else(out_of_range)?
    } else {
        match 10i128.checked_pow(scale.unsigned_abs()) {
            Some(d) => div_round_away(mantissa, d),
            None => 1, // far below a nano-unit: rounds up to one
        }
    };
    if nanos.unsigned_abs() > MAX_QUANTITY_NANOS {
        return Err(out_of_range());
    }
    if negative {
        nanos = -nanos;
    }
    Ok(ParsedQuantity { nanos })
}

/// 10²⁰ units, in nanos.
const MAX_QUANTITY_NANOS: u128 = 100_000_000_000_000_000_000_000_000_000;

fn out_of_range() -> String {
    "quantity is out of range (at most 1e20)".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load, Origin};

    const HDR: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n";
    /// One valid container; cases append container fields (4 spaces) or spec fields (2 spaces,
    /// after the container).
    const C: &str = "  containers:\n  - name: app\n    image: nginx:1.27\n";

    /// The error lines of a manifest (empty when it loads).
    fn lines(manifest: &str) -> Vec<String> {
        match load(
            manifest.as_bytes(),
            &Origin::File("/m/web.yaml".into()),
            "node-1",
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.lines(),
        }
    }

    fn spec(body: &str) -> String {
        format!("{HDR}{body}")
    }

    fn container(fields: &str) -> String {
        format!("{HDR}{C}{fields}")
    }

    /// Runs a table: each manifest must give exactly the expected lines, in order.
    fn table(cases: &[(String, &[&str])]) {
        let mut failures = Vec::new();
        for (manifest, want) in cases {
            let got = lines(manifest);
            if got != *want {
                failures.push(format!(
                    "manifest:\n{manifest}\nwant: {want:#?}\ngot:  {got:#?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn valid_pods_have_no_errors() {
        table(&[
            (container(""), &[]),
            (container("    ports:\n    - containerPort: 80\n      name: http\n    livenessProbe:\n      httpGet:\n        port: http\n"), &[]),
            (spec("  hostNetwork: true\n  containers:\n  - name: app\n    image: x\n    ports:\n    - containerPort: 8080\n"), &[]),
            (container("    resources:\n      limits:\n        example.com/widget: \"2\"\n        hugepages-2Mi: 4Mi\n"), &[]),
            (container("    lifecycle:\n      postStart:\n        exec:\n          command: [\"true\"]\n      preStop:\n        sleep:\n          seconds: 0\n"), &[]),
        ]);
    }

    #[test]
    fn metadata_rules() {
        let long_key = format!("{}: x", "k".repeat(64));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        table(&[
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\nspec:\n{C}", "a".repeat(250)),
                &[&format!("metadata.name: Invalid value: \"{}-node-1\": must be no more than 253 characters", "a".repeat(250))],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: Team\nspec:\n{C}"),
                &["metadata.namespace: Invalid value: \"Team\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    {long_key}\nspec:\n{C}"),
                &[&format!("metadata.labels: Invalid value: \"{}\": name part must be no more than 63 characters", "k".repeat(64))],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    /app: \"\"\nspec:\n{C}"),
                &["metadata.labels: Invalid value: \"/app\": prefix part must be non-empty"],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    big: {big}\nspec:\n{C}"),
                &["metadata.annotations: Too long: may not be more than 262144 bytes"],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    staticlet.io/ready-deadline: soon\nspec:\n{C}"),
                &["metadata.annotations[staticlet.io/ready-deadline]: Invalid value: \"soon\": invalid duration \"soon\" (expected e.g. 20s, 1m30s, 500ms); must be a Go duration such as 5m (0 turns the rollout check off for this pod)"],
            ),
            (
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    staticlet.io/ready-deadline: 1m30s\nspec:\n{C}"),
                &[],
            ),
            (
                // Annotation keys are case-insensitive.
                format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    Example.COM/Owner: x\nspec:\n{C}"),
                &[],
            ),
        ]);
    }

    #[test]
    fn container_rules() {
        table(&[
            (
                spec("  containers:\n  - name: app\n    image: \" nginx\"\n"),
                &["spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace"],
            ),
            (spec("  containers:\n  - name: app\n    image: \"  \"\n"), &["spec.containers[0].image: Required value"]),
            (
                spec("  containers:\n  - name: app\n    image: a\n  - name: app\n    image: b\n"),
                &["spec.containers[1].name: Duplicate value: \"app\""],
            ),
            (
                spec(&format!("{C}  ephemeralContainers:\n  - name: app\n    image: busybox\n")),
                &[
                    "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
                    "spec.ephemeralContainers: Forbidden: cannot be set on create (static pods do not support ephemeral containers)",
                ],
            ),
            (
                container("    ports:\n    - containerPort: 0\n"),
                &["spec.containers[0].ports[0].containerPort: Required value"],
            ),
            (
                container("    ports:\n    - containerPort: 80\n      name: \"-web\"\n"),
                &["spec.containers[0].ports[0].name: Invalid value: \"-web\": must not begin or end with a hyphen"],
            ),
            (
                container("    ports:\n    - containerPort: 80\n      hostPort: 8080\n    - containerPort: 81\n      hostPort: 8080\n"),
                &["spec.containers[0].ports[1].hostPort: Duplicate value: \"TCP//8080\""],
            ),
            (
                spec("  hostNetwork: true\n  initContainers:\n  - name: i\n    image: x\n    ports:\n    - containerPort: 80\n  containers:\n  - name: app\n    image: x\n    ports:\n    - containerPort: 80\n"),
                &[],
            ),
        ]);
    }

    #[test]
    fn env_rules() {
        table(&[
            (
                container("    env:\n    - name: \"..cfg\"\n      value: x\n"),
                &["spec.containers[0].env[0].name: Invalid value: \"..cfg\": must not start with '..'"],
            ),
            (
                container("    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: spec.hostname\n"),
                &["spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.hostname\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\""],
            ),
            (
                container("    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n        resourceFieldRef:\n          resource: limits.cpu\n"),
                &["spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"],
            ),
            (
                container("    env:\n    - name: A\n      valueFrom:\n        resourceFieldRef:\n          resource: limits.gpu\n"),
                &["spec.containers[0].env[0].valueFrom.resourceFieldRef.resource: Unsupported value: \"limits.gpu\": supported values: \"limits.cpu\", \"limits.ephemeral-storage\", \"limits.memory\", \"requests.cpu\", \"requests.ephemeral-storage\", \"requests.memory\""],
            ),
            (
                container("    envFrom:\n    - prefix: \"1_\"\n"),
                &[
                    "spec.containers[0].envFrom[0].prefix: Invalid value: \"1_\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
                    "spec.containers[0].envFrom[0]: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
                ],
            ),
            (
                container("    env:\n    - name: A\n      valueFrom:\n        configMapKeyRef:\n          name: Cfg\n          key: \"a b\"\n"),
                &[
                    "spec.containers[0].env[0].valueFrom.configMapKeyRef.name: Invalid value: \"Cfg\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                    "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    "spec.containers[0].env[0].valueFrom.configMapKeyRef: static pods may not reference configmaps",
                ],
            ),
        ]);
    }

    #[test]
    fn volume_mount_rules() {
        const VOL: &str = "  volumes:\n  - name: data\n    emptyDir: {}\n";
        table(&[
            (
                container(&format!("    volumeMounts:\n    - name: data\n      mountPath: \"\"\n{VOL}")),
                &["spec.containers[0].volumeMounts[0].mountPath: Required value"],
            ),
            (
                container(&format!("    volumeMounts:\n    - name: data\n      mountPath: /d\n      subPath: /abs\n{VOL}")),
                &["spec.containers[0].volumeMounts[0].subPath: Invalid value: \"/abs\": must be a relative path"],
            ),
            (
                container(&format!("    volumeMounts:\n    - name: data\n      mountPath: /d\n      subPath: a\n      subPathExpr: $(POD)\n{VOL}")),
                &["spec.containers[0].volumeMounts[0].subPathExpr: Invalid value: \"$(POD)\": subPathExpr and subPath are mutually exclusive"],
            ),
            (
                container(&format!("    volumeMounts:\n    - name: data\n      mountPath: /d\n      mountPropagation: Bidirectional\n{VOL}")),
                &["spec.containers[0].volumeMounts[0].mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"],
            ),
            (
                container(&format!("    volumeMounts:\n    - name: data\n      mountPath: /d\n      mountPropagation: Shared\n{VOL}")),
                &["spec.containers[0].volumeMounts[0].mountPropagation: Unsupported value: \"Shared\": supported values: \"Bidirectional\", \"HostToContainer\", \"None\""],
            ),
            (
                container(&format!("    volumeDevices:\n    - name: data\n      devicePath: /dev/xvda\n{VOL}")),
                &["spec.containers[0].volumeDevices[0].name: Invalid value: \"data\": can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode"],
            ),
        ]);
    }

    #[test]
    fn resource_rules() {
        table(&[
            (
                container("    resources:\n      limits:\n        example.com/widget: \"1.5\"\n"),
                &["spec.containers[0].resources.limits[example.com/widget]: Invalid value: \"1.5\": must be an integer"],
            ),
            (
                container("    resources:\n      limits:\n        example.com/widget: \"2\"\n      requests:\n        example.com/widget: \"1\"\n"),
                &["spec.containers[0].resources.requests[example.com/widget]: Invalid value: \"1\": must be equal to example.com/widget limit of 2"],
            ),
            (
                container("    resources:\n      requests:\n        example.com/widget: \"1\"\n"),
                &["spec.containers[0].resources.limits[example.com/widget]: Required value: Limit must be set for non overcommitable resources"],
            ),
            (
                container("    resources:\n      requests:\n        memory: -1Mi\n"),
                &["spec.containers[0].resources.requests[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0"],
            ),
            (
                // 1e0 = 1 CPU, 1001m is above it.
                container("    resources:\n      limits:\n        cpu: \"1e0\"\n      requests:\n        cpu: 1001m\n"),
                &["spec.containers[0].resources.requests[cpu]: Invalid value: \"1001m\": must be less than or equal to cpu limit of 1e0"],
            ),
            (
                // An invalid limit copied into the requests by defaulting is reported once.
                container("    resources:\n      limits:\n        gpu: \"1\"\n"),
                &["spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"],
            ),
            (
                container("    resources:\n      limits:\n        example.com/a/b: \"1\"\n"),
                &["spec.containers[0].resources.limits[example.com/a/b]: Invalid value: \"example.com/a/b\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"],
            ),
        ]);
    }

    #[test]
    fn probe_and_lifecycle_rules() {
        table(&[
            (
                container("    livenessProbe:\n      exec: {}\n      timeoutSeconds: -2\n      failureThreshold: -1\n"),
                &[
                    "spec.containers[0].livenessProbe.exec.command: Required value",
                    "spec.containers[0].livenessProbe.timeoutSeconds: Invalid value: -2: must be greater than or equal to 1",
                    "spec.containers[0].livenessProbe.failureThreshold: Invalid value: -1: must be greater than or equal to 1",
                ],
            ),
            (
                container("    startupProbe:\n      grpc:\n        port: 70000\n      successThreshold: 3\n"),
                &[
                    "spec.containers[0].startupProbe.grpc.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1",
                ],
            ),
            (
                // readiness may have successThreshold > 1
                container("    readinessProbe:\n      httpGet:\n        port: 80\n        scheme: FTP\n        httpHeaders:\n        - name: \"X Bad\"\n          value: v\n      successThreshold: 3\n"),
                &[
                    "spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
                    "spec.containers[0].readinessProbe.httpGet.httpHeaders: Invalid value: \"X Bad\": a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                ],
            ),
            (
                container("    lifecycle:\n      postStart:\n        exec:\n          command: [a]\n        sleep:\n          seconds: 1\n      preStop:\n        sleep:\n          seconds: 60\n"),
                &[
                    "spec.containers[0].lifecycle.postStart.sleep: Forbidden: may not specify more than 1 handler type",
                    "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 60: must be non-negative and less than terminationGracePeriodSeconds (30)",
                ],
            ),
            (
                // A sidecar's probes are validated like a regular container's.
                spec(&format!("{C}  initContainers:\n  - name: side\n    image: x\n    restartPolicy: Always\n    livenessProbe:\n      tcpSocket:\n        port: 0\n")),
                &["spec.initContainers[0].livenessProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive"],
            ),
            (
                spec(&format!("{C}  initContainers:\n  - name: init\n    image: x\n    lifecycle:\n      preStop:\n        exec:\n          command: [a]\n    livenessProbe:\n      exec:\n        command: [a]\n    startupProbe:\n      exec:\n        command: [a]\n")),
                &[
                    "spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always",
                    "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                    "spec.initContainers[0].startupProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                ],
            ),
        ]);
    }

    #[test]
    fn volume_rules() {
        table(&[
            (
                spec(&format!("{C}  volumes:\n  - name: Data\n    emptyDir: {{}}\n")),
                &["spec.volumes[0].name: Invalid value: \"Data\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"],
            ),
            (
                spec(&format!("{C}  volumes:\n  - name: d\n    hostPath:\n      path: /srv/../etc\n")),
                &["spec.volumes[0].hostPath.path: Invalid value: \"/srv/../etc\": must not contain '..'"],
            ),
            (
                spec(&format!("{C}  volumes:\n  - name: d\n    emptyDir:\n      medium: HugePages-2Mi\n      sizeLimit: lots\n")),
                &["spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"],
            ),
            (
                spec(&format!("{C}  volumes:\n  - name: d\n    downwardAPI:\n      items:\n      - path: ../x\n        fieldRef:\n          fieldPath: metadata.labels\n      - path: other\n")),
                &[
                    "spec.volumes[0].downwardAPI.items[0].path: Invalid value: \"../x\": must not contain '..'",
                    "spec.volumes[0].downwardAPI.items[0].path: Invalid value: \"../x\": must not start with '..'",
                    "spec.volumes[0].downwardAPI.items[1]: Required value: one of fieldRef and resourceFieldRef is required",
                ],
            ),
            (
                spec(&format!("{C}  volumes:\n  - name: d\n    nfs:\n      server: nas\n      path: share\n")),
                &["spec.volumes[0].nfs.path: Invalid value: \"share\": must be an absolute path"],
            ),
        ]);
    }

    #[test]
    fn pod_spec_rules() {
        table(&[
            (
                spec(&format!("{C}  dnsPolicy: None\n  dnsConfig:\n    searches: [example.com]\n")),
                &["spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"],
            ),
            (
                spec(&format!("{C}  dnsConfig:\n    nameservers: [1.1.1.1, 8.8.8.8, 9.9.9.9, dns]\n    options:\n    - value: \"2\"\n")),
                &[
                    "spec.dnsConfig.nameservers: Invalid value: must not have more than 3 nameservers",
                    "spec.dnsConfig.nameservers[3]: Invalid value: \"dns\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    "spec.dnsConfig.options[0]: Required value: must not be empty",
                ],
            ),
            (
                spec(&format!("{C}  subdomain: a.b\n  hostAliases:\n  - ip: \"::1\"\n    hostnames: [Bad_Host]\n")),
                &[
                    "spec.subdomain: Invalid value: \"a.b\": must not contain dots",
                    "spec.hostAliases[0].hostnames[0]: Invalid value: \"Bad_Host\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ],
            ),
            (
                spec(&format!("{C}  tolerations:\n  - operator: Equal\n    value: x\n  - key: k\n    operator: Maybe\n    effect: NoWay\n")),
                &[
                    "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    "spec.tolerations[1].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"",
                    "spec.tolerations[1].effect: Unsupported value: \"NoWay\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
                ],
            ),
            (
                spec(&format!("{C}  securityContext:\n    seccompProfile:\n      type: Localhost\n")),
                &["spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"],
            ),
            (
                spec(&format!("{C}  securityContext:\n    sysctls:\n    - name: kernel.shm_rmid_forced\n      value: \"1\"\n    - name: kernel.shm_rmid_forced\n      value: \"0\"\n  hostIPC: true\n")),
                &[
                    "spec.securityContext.sysctls[0].name: Invalid value: \"kernel.shm_rmid_forced\": may not be specified when 'hostIPC' is true",
                    "spec.securityContext.sysctls[1].name: Duplicate value: \"kernel.shm_rmid_forced\"",
                    "spec.securityContext.sysctls[1].name: Invalid value: \"kernel.shm_rmid_forced\": may not be specified when 'hostIPC' is true",
                ],
            ),
            (
                spec(&format!("{C}  priorityClassName: System_Critical\n  nodeSelector:\n    disk: \"ssd!\"\n")),
                &[
                    "spec.nodeSelector[disk]: Invalid value: \"ssd!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                    "spec.priorityClassName: Invalid value: \"System_Critical\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ],
            ),
        ]);
    }

    #[test]
    fn static_pod_reference_rules() {
        table(&[
            (spec(&format!("{C}  serviceAccount: legacy\n")), &["spec.serviceAccount: static pods may not reference serviceaccounts"]),
            (
                spec(&format!("{C}  volumes:\n  - name: a\n    azureFile:\n      secretName: s\n      shareName: x\n  - name: b\n    cephfs:\n      monitors: [m]\n      secretRef:\n        name: s\n  - name: c\n    csi:\n      driver: d.example.com\n      nodePublishSecretRef:\n        name: s\n")),
                &[
                    "spec.volumes[0].azureFile.secretName: static pods may not reference secrets",
                    "spec.volumes[1].cephfs.secretRef: static pods may not reference secrets",
                    "spec.volumes[2].csi.nodePublishSecretRef: static pods may not reference secrets",
                    "spec.volumes[2].csi: static pods may not reference csidrivers (via CSI volumes)",
                ],
            ),
            (
                spec(&format!("{C}  volumes:\n  - name: g\n    glusterfs:\n      endpoints: ep\n      path: vol\n  - name: e\n    ephemeral:\n      volumeClaimTemplate:\n        spec:\n          accessModes: [ReadWriteOnce]\n  - name: p\n    projected:\n      sources:\n      - configMap:\n          name: c\n      - clusterTrustBundle:\n          path: b\n          signerName: example.com/s\n")),
                &[
                    "spec.volumes[2].projected.sources[0].configMap: static pods may not reference configmaps",
                    "spec.volumes[0].glusterfs: static pods may not reference endpoints (via glusterFS volumes)",
                    "spec.volumes[1].ephemeral: static pods may not reference persistentvolumeclaims (via ephemeral volumes)",
                    "spec.volumes[2].projected.sources[1].clusterTrustBundle: static pods may not reference clustertrustbundles",
                ],
            ),
            (
                // API errors first, then the references in kubelet's order.
                spec(&format!("{C}    env:\n    - name: A\n      valueFrom:\n        configMapKeyRef:\n          name: c\n          key: k\n  serviceAccountName: sa\n  restartPolicy: Sometimes\n  imagePullSecrets:\n  - name: r\n")),
                &[
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
                    "spec.serviceAccountName: static pods may not reference serviceaccounts",
                    "spec.imagePullSecrets[0]: static pods may not reference secrets",
                    "spec.containers[0].env[0].valueFrom.configMapKeyRef: static pods may not reference configmaps",
                ],
            ),
        ]);
    }

    #[test]
    fn name_helpers() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(""));
        assert!(qualified_name_errors("example.com/My_Name.1").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(port_name_errors("http-8080").is_empty());
        assert_eq!(
            port_name_errors("8080"),
            ["must contain at least one letter (a-z)"]
        );
        assert!(env_var_name_errors("_A.b-c").is_empty());
        assert!(is_valid_sysctl_name("net/ipv4/ip_forward"));
        assert!(!is_valid_sysctl_name("net.ipv4."));
        assert!(is_extended_resource_name("example.com/widget"));
        assert!(!is_extended_resource_name("kubernetes.io/widget"));
    }

    #[test]
    fn quantities() {
        let n = |s: &str| parse_quantity(s).unwrap().nanos();
        const G: i128 = 1_000_000_000;
        for (s, want) in [
            ("1", G),
            ("250m", 250_000_000),
            ("0.5", G / 2),
            (".5", G / 2),
            ("1.", G),
            ("+2k", 2000 * G),
            ("-1", -G),
            ("1Ki", 1024 * G),
            ("100Mi", 100 * (1 << 20) * G),
            ("1.5Gi", 3 * (1 << 29) * G),
            ("1Ei", (1i128 << 60) * G),
            ("1e3", 1000 * G),
            ("1E-3", G / 1000),
            ("12e+2", 1200 * G),
            ("5n", 5),
            ("3u", 3000),
            ("2M", 2_000_000 * G),
            ("1T", 1_000_000_000_000 * G),
            ("1P", 10i128.pow(15) * G),
            ("1E", 10i128.pow(18) * G),
            ("0", 0),
            (" 7 ", 7 * G),
            ("0.0000000001", 1), // below a nano: rounds up
        ] {
            assert_eq!(n(s), want, "{s}");
        }
        for bad in [
            "", "m", "1GB", "1.2.3", "1e", "1e+", "Ki", "1 Ki", "--1", "1ki", "0x10", "1e3m",
        ] {
            assert_eq!(
                parse_quantity(bad),
                Err(QUANTITY_FORMAT_ERROR.to_string()),
                "{bad:?}"
            );
        }
        assert!(parse_quantity("1e30").is_err());
        let q = parse_quantity("1500m").unwrap();
        assert_eq!((q.millis(), q.units(), q.is_integer()), (1500, 2, false));
        assert!(parse_quantity("2").unwrap().is_integer());
        assert!(parse_quantity("1Gi").unwrap() > parse_quantity("1G").unwrap());
    }
}
