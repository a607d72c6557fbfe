//! The KubeletConfiguration file (`kubelet.config.k8s.io/v1beta1`, as of Kubernetes v1.34):
//! every field is decoded with its type checked, strictly (an unknown field or a wrong type is
//! an error naming the file and the field path), and [`settings`] merges it with the flags of
//! `staticlet run` into the effective [`Settings`], with kubelet's defaulting (a zero duration
//! or port means the default).
//!
//! What staticlet does with each field:
//! - honoured: `staticPodPath`, `staticPodURL`, `staticPodURLHeader`, `fileCheckFrequency`,
//!   `httpCheckFrequency`, `syncFrequency`, `podLogsDir`, `address`, `port`, `tlsCertFile`,
//!   `tlsPrivateKeyFile`, `authentication.*`, `authorization.*`, `healthzBindAddress`,
//!   `healthzPort`, `containerRuntimeEndpoint`, `registerNode`, `cgroupDriver` (checked
//!   against the runtime at start: `cgroupdriver`);
//! - carried in [`Settings`] for a later change, without effect yet: `clusterDomain`,
//!   `clusterDNS`;
//! - every other field is accepted and, when set to anything but its zero value, named in the
//!   one warning line `staticlet run` logs at start (as are `clusterDomain` and `clusterDNS`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;
use staticlet_manifest::duration::parse_go_duration;

use crate::options::{AuthzMode, NodeApiSettings, RunArgs, Settings};

/// A Go `metav1.Duration`: a string in Go's syntax; negative values decode (kubelet's decoder
/// accepts them) and are refused where staticlet uses the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoDuration {
    pub negative: bool,
    pub magnitude: Duration,
}

impl GoDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let magnitude = parse_go_duration(t)
            .map_err(|_| format!("invalid duration {s:?} (expected e.g. 20s, 1m30s, 500ms)"))?;
        Ok(Self {
            negative: negative && !magnitude.is_zero(),
            magnitude,
        })
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration string such as \"20s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                GoDuration::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// `logging.flushFrequency`: a duration string, or an integer number of nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrNanos;

impl<'de> Deserialize<'de> for DurationOrNanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationOrNanos;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration string such as \"5s\" or an integer of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationOrNanos, E> {
                GoDuration::parse(s)
                    .map(|_| DurationOrNanos)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<DurationOrNanos, E> {
                Ok(DurationOrNanos)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<DurationOrNanos, E> {
                Ok(DurationOrNanos)
            }
        }
        d.deserialize_any(V)
    }
}

/// A resource quantity (`"1Ki"`, `"0"`, or a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity;

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quantity such as \"1Ki\" or a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Quantity, E> {
                crate::kubeletflags::quantity(s)
                    .map(|()| Quantity)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Quantity, E> {
                Ok(Quantity)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Quantity, E> {
                Ok(Quantity)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Quantity, E> {
                Ok(Quantity)
            }
        }
        d.deserialize_any(V)
    }
}

type StringMap = BTreeMap<String, String>;

/// `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration`, every field of Kubernetes v1.34 (Go
/// `k8s.io/kubelet/config/v1beta1`). Fields staticlet does not use are decoded only to check
/// their types.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Most fields are only type-checked: see the module's documentation.
pub struct KubeletConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    enable_server: Option<bool>,
    pub static_pod_path: Option<String>,
    pub pod_logs_dir: Option<String>,
    pub sync_frequency: Option<GoDuration>,
    pub file_check_frequency: Option<GoDuration>,
    pub http_check_frequency: Option<GoDuration>,
    #[serde(rename = "staticPodURL")]
    pub static_pod_url: Option<String>,
    #[serde(rename = "staticPodURLHeader")]
    pub static_pod_url_header: Option<BTreeMap<String, Vec<String>>>,
    pub address: Option<String>,
    pub port: Option<i32>,
    read_only_port: Option<i32>,
    pub tls_cert_file: Option<String>,
    pub tls_private_key_file: Option<String>,
    tls_cipher_suites: Option<Vec<String>>,
    tls_min_version: Option<String>,
    rotate_certificates: Option<bool>,
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: Option<bool>,
    pub authentication: Option<KubeletAuthentication>,
    pub authorization: Option<KubeletAuthorization>,
    #[serde(rename = "registryPullQPS")]
    registry_pull_qps: Option<i32>,
    registry_burst: Option<i32>,
    image_pull_credentials_verification_policy: Option<String>,
    preloaded_images_verification_allowlist: Option<Vec<String>>,
    #[serde(rename = "eventRecordQPS")]
    event_record_qps: Option<i32>,
    event_burst: Option<i32>,
    enable_debugging_handlers: Option<bool>,
    enable_contention_profiling: Option<bool>,
    pub healthz_port: Option<i32>,
    pub healthz_bind_address: Option<String>,
    oom_score_adj: Option<i32>,
    pub cluster_domain: Option<String>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    streaming_connection_idle_timeout: Option<GoDuration>,
    node_status_update_frequency: Option<GoDuration>,
    node_status_report_frequency: Option<GoDuration>,
    node_lease_duration_seconds: Option<i32>,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Option<GoDuration>,
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: Option<GoDuration>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i32>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i32>,
    volume_stats_agg_period: Option<GoDuration>,
    kubelet_cgroups: Option<String>,
    system_cgroups: Option<String>,
    cgroup_root: Option<String>,
    #[serde(rename = "cgroupsPerQOS")]
    cgroups_per_qos: Option<bool>,
    pub cgroup_driver: Option<String>,
    #[serde(rename = "cpuManagerPolicy")]
    cpu_manager_policy: Option<String>,
    #[serde(rename = "singleProcessOOMKill")]
    single_process_oom_kill: Option<bool>,
    #[serde(rename = "cpuManagerPolicyOptions")]
    cpu_manager_policy_options: Option<StringMap>,
    #[serde(rename = "cpuManagerReconcilePeriod")]
    cpu_manager_reconcile_period: Option<GoDuration>,
    memory_manager_policy: Option<String>,
    topology_manager_policy: Option<String>,
    topology_manager_scope: Option<String>,
    topology_manager_policy_options: Option<StringMap>,
    qos_reserved: Option<StringMap>,
    runtime_request_timeout: Option<GoDuration>,
    hairpin_mode: Option<String>,
    max_pods: Option<i32>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    pod_pids_limit: Option<i64>,
    resolv_conf: Option<String>,
    run_once: Option<bool>,
    #[serde(rename = "cpuCFSQuota")]
    cpu_cfs_quota: Option<bool>,
    #[serde(rename = "cpuCFSQuotaPeriod")]
    cpu_cfs_quota_period: Option<GoDuration>,
    node_status_max_images: Option<i32>,
    max_open_files: Option<i64>,
    content_type: Option<String>,
    #[serde(rename = "kubeAPIQPS")]
    kube_api_qps: Option<i32>,
    #[serde(rename = "kubeAPIBurst")]
    kube_api_burst: Option<i32>,
    serialize_image_pulls: Option<bool>,
    max_parallel_image_pulls: Option<i32>,
    eviction_hard: Option<StringMap>,
    eviction_soft: Option<StringMap>,
    eviction_soft_grace_period: Option<StringMap>,
    eviction_pressure_transition_period: Option<GoDuration>,
    eviction_max_pod_grace_period: Option<i32>,
    eviction_minimum_reclaim: Option<StringMap>,
    merge_default_eviction_settings: Option<bool>,
    pods_per_core: Option<i32>,
    enable_controller_attach_detach: Option<bool>,
    protect_kernel_defaults: Option<bool>,
    #[serde(rename = "makeIPTablesUtilChains")]
    make_iptables_util_chains: Option<bool>,
    iptables_masquerade_bit: Option<i32>,
    iptables_drop_bit: Option<i32>,
    feature_gates: Option<BTreeMap<String, bool>>,
    fail_swap_on: Option<bool>,
    memory_swap: Option<MemorySwapConfiguration>,
    container_log_max_size: Option<String>,
    container_log_max_files: Option<i32>,
    container_log_max_workers: Option<i32>,
    container_log_monitor_interval: Option<GoDuration>,
    config_map_and_secret_change_detection_strategy: Option<String>,
    system_reserved: Option<StringMap>,
    kube_reserved: Option<StringMap>,
    #[serde(rename = "reservedSystemCPUs")]
    reserved_system_cpus: Option<String>,
    show_hidden_metrics_for_version: Option<String>,
    system_reserved_cgroup: Option<String>,
    kube_reserved_cgroup: Option<String>,
    enforce_node_allocatable: Option<Vec<String>>,
    allowed_unsafe_sysctls: Option<Vec<String>>,
    volume_plugin_dir: Option<String>,
    #[serde(rename = "providerID")]
    provider_id: Option<String>,
    kernel_memcg_notification: Option<bool>,
    logging: Option<LoggingConfiguration>,
    enable_system_log_handler: Option<bool>,
    enable_system_log_query: Option<bool>,
    pub shutdown_grace_period: Option<GoDuration>,
    pub shutdown_grace_period_critical_pods: Option<GoDuration>,
    pub shutdown_grace_period_by_pod_priority: Option<Vec<ShutdownGracePeriodByPodPriority>>,
    crash_loop_back_off: Option<CrashLoopBackOffConfig>,
    reserved_memory: Option<Vec<MemoryReservation>>,
    enable_profiling_handler: Option<bool>,
    enable_debug_flags_handler: Option<bool>,
    seccomp_default: Option<bool>,
    memory_throttling_factor: Option<f64>,
    pub register_with_taints: Option<Vec<Taint>>,
    pub register_node: Option<bool>,
    tracing: Option<TracingConfiguration>,
    local_storage_capacity_isolation: Option<bool>,
    pub container_runtime_endpoint: Option<String>,
    image_service_endpoint: Option<String>,
    #[serde(rename = "failCgroupV1")]
    fail_cgroup_v1: Option<bool>,
    user_namespaces: Option<UserNamespaces>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletAuthentication {
    pub x509: Option<KubeletX509Authentication>,
    pub webhook: Option<KubeletWebhookAuthentication>,
    pub anonymous: Option<KubeletAnonymousAuthentication>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletX509Authentication {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletWebhookAuthentication {
    pub enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<GoDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletAnonymousAuthentication {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletAuthorization {
    pub mode: Option<String>,
    pub webhook: Option<KubeletWebhookAuthorization>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<GoDuration>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<GoDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct MemorySwapConfiguration {
    swap_behavior: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct CrashLoopBackOffConfig {
    max_container_restart_period: Option<GoDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownGracePeriodByPodPriority {
    pub priority: Option<i32>,
    pub shutdown_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct MemoryReservation {
    numa_node: Option<i32>,
    limits: Option<BTreeMap<String, Quantity>>,
}

/// A core `v1` `Taint`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    key: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    #[allow(dead_code)] // Type-checked only: set by the API server.
    time_added: Option<String>,
}

/// component-base's `TracingConfiguration`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct TracingConfiguration {
    endpoint: Option<String>,
    sampling_rate_per_million: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct UserNamespaces {
    ids_per_pod: Option<i64>,
}

/// component-base's `LoggingConfiguration`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct LoggingConfiguration {
    format: Option<String>,
    flush_frequency: Option<DurationOrNanos>,
    verbosity: Option<u32>,
    vmodule: Option<Vec<VModuleItem>>,
    options: Option<FormatOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct VModuleItem {
    file_pattern: Option<String>,
    verbosity: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct FormatOptions {
    text: Option<OutputRoutingOptions>,
    json: Option<OutputRoutingOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Type-checked only.
struct OutputRoutingOptions {
    split_stream: Option<bool>,
    info_buffer_size: Option<Quantity>,
}

/// Top-level fields staticlet uses (or, for `apiVersion` and `kind`, checks). `clusterDomain`
/// and `clusterDNS` are carried in `Settings` but not used yet, so they are not here: the
/// warning names them.
const HONOURED: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "staticPodURL",
    "staticPodURLHeader",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "syncFrequency",
    "podLogsDir",
    "address",
    "port",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "authentication",
    "authorization",
    "healthzBindAddress",
    "healthzPort",
    "containerRuntimeEndpoint",
    "registerNode",
    "registerWithTaints",
    "podCIDR",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "rotateCertificates",
    "serverTLSBootstrap",
    "cgroupDriver",
];

/// Fields that are pointers in the Go type: present means set, even at `false` or `0`
/// (`failSwapOn: false` is a choice; `rotateCertificates: false` is the default).
const POINTERS: &[&str] = &[
    "enableServer",
    "registryPullQPS",
    "eventRecordQPS",
    "enableDebuggingHandlers",
    "oomScoreAdj",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "cgroupsPerQOS",
    "singleProcessOOMKill",
    "podPidsLimit",
    "resolvConf",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "kubeAPIQPS",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "mergeDefaultEvictionSettings",
    "enableControllerAttachDetach",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "failSwapOn",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "tracing",
    "localStorageCapacityIsolation",
    "failCgroupV1",
    "userNamespaces",
];

/// A decoded KubeletConfiguration file.
#[derive(Debug)]
pub struct ConfigFile {
    /// As given (`--config`), for messages.
    pub path: PathBuf,
    pub config: KubeletConfiguration,
    /// Top-level fields staticlet does not use that the file sets to something other than
    /// their zero value (Go's zero value is kubelet's "unset"), sorted.
    pub ignored_fields: Vec<String>,
}

/// Reads and decodes `--config`.
pub fn read(path: &Path) -> Result<ConfigFile> {
    let data =
        std::fs::read(path).with_context(|| format!("reading --config {}", path.display()))?;
    decode(path, &data)
}

/// Decodes a KubeletConfiguration (YAML or JSON, one document), strictly. Every error names
/// `path` and, for a field, its path (`authentication.webhook.cacheTTL`).
pub fn decode(path: &Path, data: &[u8]) -> Result<ConfigFile> {
    let file = path.display();
    let text = std::str::from_utf8(data).map_err(|e| anyhow::anyhow!("{file}: not UTF-8: {e}"))?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{file}: invalid JSON: {e}"))?
    } else {
        let mut docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| anyhow::anyhow!("{file}: invalid YAML: {e}"))?;
        docs.retain(|d| !d.is_null());
        match docs.len() {
            1 => docs.remove(0),
            0 => bail!("{file}: empty KubeletConfiguration"),
            n => bail!("{file}: {n} YAML documents; a KubeletConfiguration file has one"),
        }
    };
    let Value::Object(fields) = &value else {
        bail!("{file}: a KubeletConfiguration must be a YAML or JSON object");
    };
    let mut ignored_fields: Vec<String> = fields
        .iter()
        .filter(|(k, v)| {
            !HONOURED.contains(&k.as_str())
                && if POINTERS.contains(&k.as_str()) {
                    !v.is_null()
                } else {
                    !is_zero(v)
                }
        })
        .map(|(k, _)| k.clone())
        .collect();
    ignored_fields.sort();
    let config: KubeletConfiguration = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // serde names an unknown field and lists all the known ones; kubelet's strict
        // decoder says `unknown field "path.to.field"`.
        if msg.starts_with("unknown field `") {
            anyhow::anyhow!("{file}: unknown field {path:?}")
        } else {
            anyhow::anyhow!("{file}: {path}: {msg}")
        }
    })?;
    if let Some(kind) = config
        .kind
        .as_deref()
        .filter(|k| *k != "KubeletConfiguration")
    {
        bail!("{file}: kind: {kind:?} is not KubeletConfiguration");
    }
    if let Some(v) = config
        .api_version
        .as_deref()
        .filter(|v| *v != "kubelet.config.k8s.io/v1beta1")
    {
        bail!("{file}: apiVersion: {v:?} is not kubelet.config.k8s.io/v1beta1");
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        config,
        ignored_fields,
    })
}

/// Go's zero value as it appears in a file kubeadm writes: null, false, 0, "", a zero duration
/// ("0s"), an empty list, or an object of zero values (`memorySwap: {}`).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            s.is_empty() || GoDuration::parse(s).is_ok_and(|d| d.magnitude.is_zero())
        }
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// A relative path in the config file is relative to the file's directory, as in kubelet.
fn file_path(cfg: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// A non-negative duration of the file; zero means "the default", as kubelet's defaulting.
fn file_duration(cfg: &Path, field: &str, d: Option<GoDuration>) -> Result<Option<Duration>> {
    match d {
        Some(d) if d.negative => bail!("{}: {field}: must not be negative", cfg.display()),
        Some(d) if !d.magnitude.is_zero() => Ok(Some(d.magnitude)),
        _ => Ok(None),
    }
}

/// A port of the file.
fn file_port(cfg: &Path, field: &str, v: Option<i32>) -> Result<Option<u16>> {
    v.map(|p| {
        u16::try_from(p)
            .map_err(|_| anyhow::anyhow!("{}: {field}: {p} is not a port (0-65535)", cfg.display()))
    })
    .transpose()
}

/// An IP address of the file; empty means unset.
fn file_ip(cfg: &Path, field: &str, v: Option<&str>) -> Result<Option<IpAddr>> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                anyhow::anyhow!("{}: {field}: {s:?} is not an IP address", cfg.display())
            })
        })
        .transpose()
}

fn nonempty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// Image garbage collection from the file: kubelet's defaults (85 %, 80 %, 2 minutes, no
/// maximum age) where a field is unset.
fn image_gc(
    cfg: &Path,
    kc: &KubeletConfiguration,
) -> Result<staticlet_agent::image_gc::ImageGcPolicy> {
    let file = cfg.display();
    let mut p = staticlet_agent::image_gc::ImageGcPolicy::default();
    let percent = |field: &str, v: i32| {
        u8::try_from(v)
            .ok()
            .filter(|v| *v <= 100)
            .ok_or_else(|| anyhow::anyhow!("{file}: {field}: {v} must be between 0 and 100"))
    };
    // Pointers in kubelet's type: present means set, 0 included.
    if let Some(v) = kc.image_gc_high_threshold_percent {
        p.high_percent = percent("imageGCHighThresholdPercent", v)?;
    }
    if let Some(v) = kc.image_gc_low_threshold_percent {
        p.low_percent = percent("imageGCLowThresholdPercent", v)?;
    }
    if let Some(d) = file_duration(cfg, "imageMinimumGCAge", kc.image_minimum_gc_age)? {
        p.min_age = d;
    }
    p.max_age = file_duration(cfg, "imageMaximumGCAge", kc.image_maximum_gc_age)?;
    p.validate().map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok(p)
}

/// Graceful node shutdown from the file (kubelet has no flags for it), validated as kubelet
/// does: no negative period, the critical pods' share within the whole.
fn node_shutdown(
    cfg: &Path,
    kc: &KubeletConfiguration,
) -> Result<Option<staticlet_agent::nodeshutdown::ShutdownPolicy>> {
    use staticlet_agent::nodeshutdown::{Group, ShutdownPolicy};
    let file = cfg.display();
    let period =
        file_duration(cfg, "shutdownGracePeriod", kc.shutdown_grace_period)?.unwrap_or_default();
    let critical = file_duration(
        cfg,
        "shutdownGracePeriodCriticalPods",
        kc.shutdown_grace_period_critical_pods,
    )?
    .unwrap_or_default();
    if critical > period {
        bail!(
            "{file}: shutdownGracePeriodCriticalPods ({critical:?}) must not be greater than shutdownGracePeriod ({period:?})"
        );
    }
    let mut groups = Vec::new();
    for (i, g) in kc
        .shutdown_grace_period_by_pod_priority
        .iter()
        .flatten()
        .enumerate()
    {
        let secs = g.shutdown_grace_period_seconds.unwrap_or(0);
        if secs < 0 {
            bail!("{file}: shutdownGracePeriodByPodPriority[{i}].shutdownGracePeriodSeconds: must not be negative");
        }
        groups.push(Group {
            priority: g.priority.unwrap_or(0),
            grace: Duration::from_secs(secs as u64),
        });
    }
    let any_period = !period.is_zero() || !critical.is_zero();
    if !groups.is_empty() && any_period {
        bail!("{file}: shutdownGracePeriodByPodPriority: cannot be set with shutdownGracePeriod or shutdownGracePeriodCriticalPods (as kubelet)");
    }
    Ok(ShutdownPolicy::from_kubelet(period, critical, &groups))
}

/// The effective settings of `staticlet run`: its flags over the config file over kubelet's
/// defaults. Pure but for `os_hostname`, called only without `--hostname-override`.
pub fn settings(
    args: &RunArgs,
    file: Option<&ConfigFile>,
    os_hostname: impl FnOnce() -> Result<String>,
) -> Result<Settings> {
    let empty = KubeletConfiguration::default();
    let kc = file.map_or(&empty, |f| &f.config);
    let cfg = file.map_or(Path::new(""), |f| f.path.as_path());
    let node_api = node_api_settings(args, cfg, kc)?;

    let mut headers = Vec::new();
    for (k, vs) in kc.static_pod_url_header.iter().flatten() {
        for v in vs {
            headers.push((k.clone(), v.clone()));
        }
    }
    if !args.manifest_url_header.is_empty() {
        headers = staticlet_agent::config::http::parse_headers(&args.manifest_url_header)
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let node_name = match &args.hostname_override {
        Some(n) => n.trim().to_lowercase(),
        None => os_hostname()?,
    };
    if node_name.is_empty() {
        bail!("empty hostname is invalid (set --hostname-override)");
    }
    if !staticlet_manifest::validate::is_dns1123_subdomain(&node_name) {
        bail!(
            "node name {node_name:?} is not a valid DNS-1123 subdomain (set --hostname-override)"
        );
    }
    let manifest_url = args
        .manifest_url
        .clone()
        .or_else(|| nonempty(kc.static_pod_url.as_ref()).map(str::to_string))
        .filter(|u| !u.is_empty());
    if let Some(u) = &manifest_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("--manifest-url (staticPodURL) {u:?}: must be an http:// or https:// URL");
        }
    }
    let pick = |flag: Option<Duration>, file: Option<Duration>, default: u64| {
        flag.or(file).unwrap_or(Duration::from_secs(default))
    };
    let file_check = pick(
        args.file_check_frequency,
        file_duration(cfg, "fileCheckFrequency", kc.file_check_frequency)?,
        20,
    );
    let http_check = pick(
        args.http_check_frequency,
        file_duration(cfg, "httpCheckFrequency", kc.http_check_frequency)?,
        20,
    );
    let sync = pick(
        args.sync_frequency,
        file_duration(cfg, "syncFrequency", kc.sync_frequency)?,
        60,
    );
    for (name, d) in [
        ("file-check-frequency", file_check),
        ("http-check-frequency", http_check),
    ] {
        if d.is_zero() {
            bail!("--{name} must be greater than 0");
        }
    }
    let pod_manifest_path = args
        .pod_manifest_path
        .clone()
        .or_else(|| nonempty(kc.static_pod_path.as_ref()).map(|p| file_path(cfg, p)))
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let log_dir = args
        .log_dir
        .clone()
        .or_else(|| nonempty(kc.pod_logs_dir.as_ref()).map(|p| file_path(cfg, p)))
        .unwrap_or_else(|| PathBuf::from("/var/log/pods"));

    // kubelet's default for an empty endpoint is containerd's socket; staticlet's is its
    // embedded runtime. kubeadm writes containerd's (`unix:///var/run/containerd/containerd.sock`)
    // by default, so this file picks containerd through CRI. A later change will map
    // staticlet's own CRI socket to the embedded runtime.
    let container_runtime_endpoint = args
        .container_runtime_endpoint
        .clone()
        .or_else(|| nonempty(kc.container_runtime_endpoint.as_ref()).map(str::to_string))
        .filter(|e| !e.is_empty());
    let register_node = args.register_node.or(kc.register_node).unwrap_or(true);
    let register_with_taints = match &args.register_with_taints {
        Some(t) => t.0.clone(),
        None => config_taints(kc, cfg)?,
    };
    let pod_cidr = args
        .pod_cidr
        .clone()
        .or_else(|| nonempty(kc.pod_cidr.as_ref()).map(str::to_string))
        .filter(|c| !c.is_empty());
    let cluster_domain = args
        .cluster_domain
        .clone()
        .or_else(|| kc.cluster_domain.clone())
        .filter(|d| !d.is_empty());
    let cluster_dns = if args.cluster_dns.is_empty() {
        kc.cluster_dns
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| {
                s.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: clusterDNS[{i}]: {s:?} is not an IP address",
                        cfg.display()
                    )
                })
            })
            .collect::<Result<Vec<IpAddr>>>()?
    } else {
        args.cluster_dns.clone()
    };

    let node_shutdown = node_shutdown(cfg, kc)?;
    let image_gc = image_gc(cfg, kc)?;
    let cgroup_driver = crate::cgroupdriver::configured(
        args.cgroup_driver.as_deref(),
        file.and(kc.cgroup_driver.as_deref()).map(|v| (cfg, v)),
    )?;

    // Flags that are read but not used yet are named in the warning with the ignored ones.
    let mut ignored_flags = args.kubelet.given.clone();
    for (given, flag) in [
        // Without --kubeconfig there is no cluster side to bootstrap credentials for.
        (
            args.bootstrap_kubeconfig.is_some() && args.kubeconfig.is_none(),
            "--bootstrap-kubeconfig",
        ),
        (
            args.pod_infra_container_image.is_some(),
            "--pod-infra-container-image",
        ),
        (args.cluster_domain.is_some(), "--cluster-domain"),
        (!args.cluster_dns.is_empty(), "--cluster-dns"),
    ] {
        if given {
            ignored_flags.push(flag.to_string());
        }
    }
    ignored_flags.sort();
    let mut ignored_config_fields = file.map(|f| f.ignored_fields.clone()).unwrap_or_default();
    // Without --kubeconfig there is no cluster to issue the serving certificate.
    let server_tls_bootstrap = kc.server_tls_bootstrap.unwrap_or(false);
    if server_tls_bootstrap && args.kubeconfig.is_none() {
        ignored_config_fields.push("serverTLSBootstrap".into());
        ignored_config_fields.sort();
    }

    Ok(Settings {
        node_api,
        pod_manifest_path,
        manifest_url,
        manifest_url_headers: headers,
        file_check_frequency: file_check,
        http_check_frequency: http_check,
        sync_frequency: sync,
        node_name,
        log_dir,
        container_runtime_endpoint,
        register_node,
        register_with_taints,
        pod_cidr,
        cluster_domain,
        cluster_dns,
        sandbox_image: args
            .pod_infra_container_image
            .clone()
            .filter(|i| !i.is_empty()),
        bootstrap_kubeconfig: args.bootstrap_kubeconfig.clone(),
        rotate_certificates: args
            .rotate_certificates
            .or(kc.rotate_certificates)
            .unwrap_or(false),
        node_shutdown,
        image_gc,
        cgroup_driver,
        server_tls_bootstrap,
        ignored_config_fields,
        ignored_flags,
    })
}

/// The node API's settings: flags over the config file over kubelet's defaults (a zero
/// duration or port in the file means the default, as kubelet's defaulting does; but
/// `healthzPort: 0` turns the endpoint off, as in kubelet, where only an absent one defaults).
/// `registerWithTaints` of the config file at `cfg`, checked: (key, value, effect).
fn config_taints(kc: &KubeletConfiguration, cfg: &Path) -> Result<Vec<(String, String, String)>> {
    kc.register_with_taints
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let key = t.key.clone().filter(|k| !k.is_empty());
            let effect = t.effect.clone().unwrap_or_default();
            match (key, effect.as_str()) {
                (Some(key), "NoSchedule" | "PreferNoSchedule" | "NoExecute") => Ok((key, t.value.clone().unwrap_or_default(), effect)),
                (None, _) => bail!("{}: registerWithTaints[{i}].key: required", cfg.display()),
                (_, e) => bail!("{}: registerWithTaints[{i}].effect: {e:?} is not NoSchedule, PreferNoSchedule or NoExecute", cfg.display()),
            }
        })
        .collect()
}

fn node_api_settings(
    args: &RunArgs,
    cfg: &Path,
    kc: &KubeletConfiguration,
) -> Result<NodeApiSettings> {
    let authn = kc.authentication.as_ref();
    let authz = kc.authorization.as_ref();
    let address = args
        .address
        .or(file_ip(cfg, "address", kc.address.as_deref())?)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let default_port = if args.kubeconfig.is_some() { 10250 } else { 0 };
    let port = args
        .port
        .or(file_port(cfg, "port", kc.port)?.filter(|p| *p != 0))
        .unwrap_or(default_port);
    let mode = match args
        .authorization_mode
        .clone()
        .or(authz.and_then(|a| a.mode.clone()))
        .filter(|m| !m.is_empty())
        .as_deref()
    {
        None | Some("Webhook") => AuthzMode::Webhook,
        Some("AlwaysAllow") => AuthzMode::AlwaysAllow,
        Some(other) => bail!(
            "--authorization-mode (authorization.mode): {other:?} is not one of Webhook, AlwaysAllow"
        ),
    };
    let token_webhook = args
        .authentication_token_webhook
        .or(authn.and_then(|a| a.webhook.as_ref()?.enabled))
        .unwrap_or(true);
    let token_ttl = args
        .authentication_token_webhook_cache_ttl
        .or(file_duration(
            cfg,
            "authentication.webhook.cacheTTL",
            authn.and_then(|a| a.webhook.as_ref()?.cache_ttl),
        )?);
    let authz_webhook = authz.and_then(|a| a.webhook.as_ref());
    let authorized_ttl = args
        .authorization_webhook_cache_authorized_ttl
        .or(file_duration(
            cfg,
            "authorization.webhook.cacheAuthorizedTTL",
            authz_webhook.and_then(|w| w.cache_authorized_ttl),
        )?);
    let unauthorized_ttl = args
        .authorization_webhook_cache_unauthorized_ttl
        .or(file_duration(
            cfg,
            "authorization.webhook.cacheUnauthorizedTTL",
            authz_webhook.and_then(|w| w.cache_unauthorized_ttl),
        )?);
    let path = |flag: &Option<PathBuf>, file: Option<&String>| {
        flag.clone()
            .or_else(|| nonempty(file).map(|p| file_path(cfg, p)))
    };
    let tls_cert_file = path(&args.tls_cert_file, kc.tls_cert_file.as_ref());
    let tls_private_key_file = path(&args.tls_private_key_file, kc.tls_private_key_file.as_ref());
    if tls_cert_file.is_some() != tls_private_key_file.is_some() {
        bail!("--tls-cert-file and --tls-private-key-file (tlsCertFile, tlsPrivateKeyFile) go together");
    }
    let client_ca_file = path(
        &args.client_ca_file,
        authn.and_then(|a| a.x509.as_ref()?.client_ca_file.as_ref()),
    );
    let anonymous = args
        .anonymous_auth
        .or(authn.and_then(|a| a.anonymous.as_ref()?.enabled))
        .unwrap_or(false);
    if port != 0 && args.kubeconfig.is_none() {
        if mode == AuthzMode::Webhook {
            bail!("--port {port}: the node API's Webhook authorization asks the API server, which needs --kubeconfig; without a cluster use --authorization-mode AlwaysAllow with --client-ca-file");
        }
        if client_ca_file.is_none() && !anonymous {
            bail!("--port {port}: without --kubeconfig only client certificates can authenticate: set --client-ca-file");
        }
    }
    let healthz_ip = args
        .healthz_bind_address
        .or(file_ip(
            cfg,
            "healthzBindAddress",
            kc.healthz_bind_address.as_deref(),
        )?)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let healthz_port = args
        .healthz_port
        .or(file_port(cfg, "healthzPort", kc.healthz_port)?)
        .unwrap_or(10248);
    Ok(NodeApiSettings {
        listen: (port != 0).then(|| SocketAddr::new(address, port)),
        tls_cert_file,
        tls_private_key_file,
        cert_dir: args
            .cert_dir
            .clone()
            .unwrap_or_else(|| args.root_dir.join("pki")),
        client_ca_file,
        anonymous,
        token_webhook: token_webhook.then(|| token_ttl.unwrap_or(Duration::from_secs(120))),
        authz: mode,
        authorized_ttl: authorized_ttl.unwrap_or(Duration::from_secs(300)),
        unauthorized_ttl: unauthorized_ttl.unwrap_or(Duration::from_secs(30)),
        healthz: (healthz_port != 0).then(|| SocketAddr::new(healthz_ip, healthz_port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroupdriver::{CgroupDriver, Configured, Origin};
    use crate::options::tests::parse_args;

    /// `/var/lib/kubelet/config.yaml` as kubeadm v1.34.4 writes it (testdata/kubeadm/README.md).
    const KUBEADM: &str = include_str!("../testdata/kubeadm/config.yaml");
    const EVERY_FIELD: &str = include_str!("../testdata/kubelet-config-every-field.yaml");
    const PATH: &str = "/var/lib/kubelet/config.yaml";

    fn settings_of(yaml: &str, flags: &[&str]) -> Result<Settings> {
        let file = decode(Path::new(PATH), yaml.as_bytes())?;
        let mut argv = vec!["--hostname-override", "cp-1"];
        argv.extend_from_slice(flags);
        settings(&parse_args(&argv)?, Some(&file), || unreachable!())
    }

    #[test]
    fn kubeadm_config_as_written() {
        let s = settings_of(KUBEADM, &[]).unwrap();
        assert_eq!(
            s.pod_manifest_path,
            Some(PathBuf::from("/etc/kubernetes/manifests"))
        );
        // `0s` means kubelet's defaults.
        assert_eq!(s.file_check_frequency, Duration::from_secs(20));
        assert_eq!(s.http_check_frequency, Duration::from_secs(20));
        assert_eq!(s.sync_frequency, Duration::from_secs(60));
        assert_eq!(
            s.container_runtime_endpoint.as_deref(),
            Some("unix:///var/run/containerd/containerd.sock")
        );
        assert!(s.register_node);
        assert_eq!(s.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(s.cluster_dns, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.log_dir, PathBuf::from("/var/log/pods"));
        let api = &s.node_api;
        assert_eq!(api.listen, None, "no --kubeconfig: the node API is off");
        assert_eq!(
            api.client_ca_file,
            Some(PathBuf::from("/etc/kubernetes/pki/ca.crt"))
        );
        assert!(!api.anonymous);
        assert_eq!(api.authz, AuthzMode::Webhook);
        assert_eq!(api.token_webhook, Some(Duration::from_secs(120)));
        assert_eq!(api.authorized_ttl, Duration::from_secs(300));
        assert_eq!(api.unauthorized_ttl, Duration::from_secs(30));
        assert_eq!(api.healthz, Some("127.0.0.1:10248".parse().unwrap()));
        // Only fields set to something other than their zero value are named.
        assert_eq!(s.ignored_config_fields, ["clusterDNS", "clusterDomain"]);
        // kubeadm's default driver, checked against the runtime at start.
        assert_eq!(
            s.cgroup_driver,
            Configured {
                driver: CgroupDriver::Systemd,
                origin: Origin::File(PathBuf::from(PATH)),
            }
        );
        assert!(s.rotate_certificates);
        assert!(s.ignored_flags.is_empty());
        // The same file in JSON, and YAML in another key order without apiVersion and kind.
        let v: Value = serde_saphyr::from_str(KUBEADM).unwrap();
        assert_eq!(settings_of(&v.to_string(), &[]).unwrap(), s);
        let mut lines: Vec<&str> = KUBEADM.split_inclusive('\n').collect();
        let mut blocks: Vec<String> = Vec::new();
        for l in lines.drain(..) {
            if l.starts_with(' ') || l.starts_with('-') {
                blocks.last_mut().unwrap().push_str(l);
            } else if !l.starts_with("apiVersion:") && !l.starts_with("kind:") {
                blocks.push(l.to_string());
            }
        }
        blocks.reverse();
        assert_eq!(settings_of(&blocks.concat(), &[]).unwrap(), s);
    }

    #[test]
    fn register_with_taints_is_honoured_and_checked() {
        let s = settings_of(
            "registerWithTaints:\n- key: example.com/dedicated\n  value: cp\n  effect: NoSchedule\n- key: example.com/drain\n  effect: NoExecute\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            s.register_with_taints,
            [
                (
                    "example.com/dedicated".into(),
                    "cp".into(),
                    "NoSchedule".into()
                ),
                (
                    "example.com/drain".into(),
                    String::new(),
                    "NoExecute".into()
                )
            ]
        );
        assert!(!s
            .ignored_config_fields
            .contains(&"registerWithTaints".to_string()));
        let e = settings_of("registerWithTaints:\n- key: a\n  effect: Sometimes\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("registerWithTaints[0].effect") && e.contains("Sometimes"),
            "{e}"
        );
        let e = settings_of("registerWithTaints:\n- effect: NoSchedule\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("registerWithTaints[0].key"), "{e}");
        // The flag wins over the file, as kubelet's flags do.
        let s = settings_of(
            "registerWithTaints:\n- key: a\n  effect: NoSchedule\n",
            &["--register-with-taints=b=1:NoExecute"],
        )
        .unwrap();
        assert_eq!(
            s.register_with_taints,
            [("b".into(), "1".into(), "NoExecute".into())]
        );
    }

    #[test]
    fn every_field_of_v1_34_is_accepted() {
        let file = decode(Path::new(PATH), EVERY_FIELD.as_bytes()).unwrap();
        let all: serde_json::Map<String, Value> = serde_saphyr::from_str(EVERY_FIELD).unwrap();
        let want: Vec<&String> = all
            .keys()
            .filter(|k| !HONOURED.contains(&k.as_str()))
            .collect();
        assert_eq!(file.ignored_fields.iter().collect::<Vec<_>>(), want);
        assert!(want.len() > 90, "{}", want.len());
        let s = settings_of(EVERY_FIELD, &["--kubeconfig", "/k"]).unwrap();
        // Relative paths are relative to the file's directory, as in kubelet.
        assert_eq!(
            s.pod_manifest_path,
            Some(PathBuf::from("/var/lib/kubelet/manifests"))
        );
        assert_eq!(s.file_check_frequency, Duration::from_secs(90));
        assert_eq!(
            s.manifest_url.as_deref(),
            Some("http://127.0.0.1:8080/pods")
        );
        assert_eq!(s.manifest_url_headers.len(), 2);
        assert_eq!(s.cluster_dns.len(), 2);
        assert_eq!(s.node_api.listen, Some("127.0.0.1:10260".parse().unwrap()));
        assert_eq!(s.node_api.token_webhook, Some(Duration::from_secs(60)));
        assert_eq!(s.node_api.authorized_ttl, Duration::from_secs(240));
        assert_eq!(s.node_api.healthz, Some("127.0.0.1:10258".parse().unwrap()));
        assert_eq!(
            s.node_api.tls_cert_file,
            Some(PathBuf::from("/etc/kubernetes/pki/kubelet.crt"))
        );
    }

    #[test]
    fn strict_decoding_names_the_file_and_field() {
        for (yaml, want) in [
            ("fooBar: 1\n", "unknown field \"fooBar\""),
            (
                "authentication:\n  webhook:\n    cacheTTL: soon\n",
                "authentication.webhook.cacheTTL: invalid duration \"soon\"",
            ),
            (
                "authentication:\n  webhook:\n    cachettl: 1m\n",
                "unknown field \"authentication.webhook.cachettl\"",
            ),
            (
                "registerWithTaints:\n- key: a\n  effect: NoSchedule\n  extra: 1\n",
                "unknown field \"registerWithTaints[0].extra\"",
            ),
            (
                "port: \"10250\"\n",
                "port: invalid type: string \"10250\", expected i32",
            ),
            ("maxPods: many\n", "maxPods: invalid type: string \"many\""),
            (
                "failSwapOn: \"no\"\n",
                "failSwapOn: invalid type: string \"no\", expected a boolean",
            ),
            (
                "clusterDNS: 10.96.0.10\n",
                "clusterDNS: invalid type: string",
            ),
            (
                "syncFrequency: 60\n",
                "syncFrequency: invalid type: integer `60`",
            ),
            (
                "featureGates:\n  A: \"yes\"\n",
                "featureGates.A: invalid type: string",
            ),
            (
                "staticPodURLHeader:\n  A: b\n",
                "staticPodURLHeader.A: invalid type: string",
            ),
            (
                "podPidsLimit: 1.5\n",
                "podPidsLimit: invalid type: floating point",
            ),
            (
                "oomScoreAdj: 3000000000\n",
                "oomScoreAdj: invalid value: integer `3000000000`",
            ),
            (
                "logging:\n  options:\n    json:\n      infoBufferSize: 1KB\n",
                "logging.options.json.infoBufferSize: \"1KB\" is not a quantity",
            ),
            (
                "reservedMemory:\n- numaNode: 0\n  limits:\n    memory: lots\n",
                "reservedMemory[0].limits.memory: \"lots\" is not a quantity",
            ),
            (
                "logging:\n  verbosity: -1\n",
                "logging.verbosity: invalid value: integer `-1`",
            ),
            ("kind: Pod\n", "kind: \"Pod\" is not KubeletConfiguration"),
            (
                "apiVersion: v1\n",
                "apiVersion: \"v1\" is not kubelet.config.k8s.io/v1beta1",
            ),
            ("port: 1\nport: 2\n", "invalid YAML"),
            ("{\"port\": 1, \"bogus\": true}", "unknown field \"bogus\""),
            ("{\"port\": 1", "invalid JSON"),
            ("", "empty KubeletConfiguration"),
            ("- a\n", "must be a YAML or JSON object"),
            (
                "kind: KubeletConfiguration\n---\nkind: KubeletConfiguration\n",
                "2 YAML documents",
            ),
        ] {
            let e = decode(Path::new(PATH), yaml.as_bytes())
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{PATH}: ")) && e.contains(want),
                "{yaml:?}: {e}"
            );
        }
    }

    #[test]
    fn values_the_settings_refuse_name_the_field() {
        for (yaml, want) in [
            (
                "fileCheckFrequency: -5s\n",
                "fileCheckFrequency: must not be negative",
            ),
            ("port: 70000\n", "port: 70000 is not a port"),
            ("healthzPort: -1\n", "healthzPort: -1 is not a port"),
            (
                "address: localhost\n",
                "address: \"localhost\" is not an IP address",
            ),
            (
                "clusterDNS: [10.96.0.10, nope]\n",
                "clusterDNS[1]: \"nope\" is not an IP address",
            ),
            ("staticPodURL: ftp://x/\n", "staticPodURL"),
            ("authorization:\n  mode: RBAC\n", "authorization.mode"),
            ("tlsCertFile: /a.crt\n", "tlsPrivateKeyFile"),
            (
                "cgroupDriver: Systemd\n",
                "cgroupDriver: \"Systemd\" must be cgroupfs or systemd",
            ),
        ] {
            let e = settings_of(yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml:?}: {e}");
        }
    }

    /// Zero values mean kubelet's defaults; flags override the file.
    #[test]
    fn defaults_and_precedence() {
        type Check = fn(&Settings) -> bool;
        let cases: &[(&str, &[&str], Check)] = &[
            ("syncFrequency: 0s\nfileCheckFrequency: 0s\n", &[], |s| {
                s.sync_frequency == Duration::from_secs(60)
                    && s.file_check_frequency == Duration::from_secs(20)
            }),
            ("syncFrequency: 30s\n", &["--sync-frequency=10s"], |s| {
                s.sync_frequency == Duration::from_secs(10)
            }),
            // port 0 is the default (10250 when joining a cluster); healthzPort 0 is off, as
            // in kubelet, where only an absent healthzPort defaults.
            ("port: 0\nhealthzPort: 0\n", &["--kubeconfig=/k"], |s| {
                s.node_api.listen == Some("0.0.0.0:10250".parse().unwrap())
                    && s.node_api.healthz.is_none()
            }),
            ("healthzPort: 10248\n", &["--healthz-port=0"], |s| {
                s.node_api.healthz.is_none()
            }),
            ("containerRuntimeEndpoint: \"\"\n", &[], |s| {
                s.container_runtime_endpoint.is_none()
            }),
            (
                "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n",
                &["--container-runtime-endpoint", "simulate://"],
                |s| s.container_runtime_endpoint.as_deref() == Some("simulate://"),
            ),
            ("registerNode: false\n", &[], |s| !s.register_node),
            ("registerNode: false\n", &["--register-node"], |s| {
                s.register_node
            }),
            ("podLogsDir: logs\n", &[], |s| {
                s.log_dir == Path::new("/var/lib/kubelet/logs")
            }),
            ("podLogsDir: /l\n", &["--log-dir=/x"], |s| {
                s.log_dir == Path::new("/x")
            }),
            (
                "clusterDNS: [10.96.0.10]\nclusterDomain: a.b\n",
                &["--cluster-dns=10.0.0.10", "--cluster-domain=c.d"],
                |s| {
                    s.cluster_dns == ["10.0.0.10".parse::<IpAddr>().unwrap()]
                        && s.cluster_domain.as_deref() == Some("c.d")
                        && s.ignored_flags == ["--cluster-dns", "--cluster-domain"]
                },
            ),
            (
                "authentication:\n  x509:\n    clientCAFile: pki/ca.crt\n",
                &[],
                |s| {
                    s.node_api.client_ca_file.as_deref()
                        == Some(Path::new("/var/lib/kubelet/pki/ca.crt"))
                },
            ),
            // Pointer fields count as set even at false; plain zero values do not.
            (
                "failSwapOn: false\nrotateCertificates: false\nmaxPods: 0\nevictionHard: {}\n",
                &[],
                |s| s.ignored_config_fields == ["failSwapOn"],
            ),
            (
                "kind: KubeletConfiguration\n",
                &[
                    "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                    "--pod-infra-container-image=registry.k8s.io/pause:3.10.1",
                    "--rotate-certificates",
                    "--cgroup-driver=systemd",
                ],
                |s| {
                    s.sandbox_image.as_deref() == Some("registry.k8s.io/pause:3.10.1")
                        && s.bootstrap_kubeconfig.as_deref()
                            == Some(Path::new("/etc/kubernetes/bootstrap-kubelet.conf"))
                        && s.rotate_certificates
                        && s.cgroup_driver.origin == Origin::Flag
                        && s.ignored_flags
                            == ["--bootstrap-kubeconfig", "--pod-infra-container-image"]
                },
            ),
            // --cgroup-driver over cgroupDriver over kubelet's default.
            (
                "cgroupDriver: systemd\n",
                &["--cgroup-driver=cgroupfs"],
                |s| {
                    s.cgroup_driver
                        == Configured {
                            driver: CgroupDriver::Cgroupfs,
                            origin: Origin::Flag,
                        }
                },
            ),
            ("cgroupDriver: \"\"\n", &[], |s| {
                s.cgroup_driver == Configured::default()
                    && s.cgroup_driver.driver == CgroupDriver::Cgroupfs
            }),
            // serverTLSBootstrap needs a cluster: without --kubeconfig it is named as ignored.
            ("serverTLSBootstrap: true\n", &["--kubeconfig=/k"], |s| {
                s.server_tls_bootstrap && s.ignored_config_fields.is_empty()
            }),
            ("serverTLSBootstrap: true\n", &[], |s| {
                s.ignored_config_fields == ["serverTLSBootstrap"]
            }),
            ("serverTLSBootstrap: false\n", &["--kubeconfig=/k"], |s| {
                !s.server_tls_bootstrap && s.ignored_config_fields.is_empty()
            }),
            // The flag wins over the file.
            (
                "rotateCertificates: true\n",
                &["--rotate-certificates=false"],
                |s| !s.rotate_certificates && s.ignored_flags.is_empty(),
            ),
        ];
        for (yaml, flags, check) in cases {
            let s = settings_of(yaml, flags).unwrap_or_else(|e| panic!("{yaml:?} {flags:?}: {e}"));
            assert!(check(&s), "{yaml:?} {flags:?}: {s:#?}");
        }
    }

    #[test]
    fn graceful_node_shutdown_settings() {
        use staticlet_agent::nodeshutdown::SYSTEM_CRITICAL_PRIORITY;
        let s = |secs| Duration::from_secs(secs);
        // kubeadm writes 0s for both: off, as kubelet.
        assert_eq!(settings_of(KUBEADM, &[]).unwrap().node_shutdown, None);
        let p = settings_of(
            "shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n",
            &[],
        )
        .unwrap()
        .node_shutdown
        .unwrap();
        assert_eq!(p.requested(), s(30));
        assert_eq!(p.groups()[0].grace, s(20));
        assert_eq!(p.groups()[1].priority, SYSTEM_CRITICAL_PRIORITY);
        let p = settings_of(
            "shutdownGracePeriodByPodPriority:\n- {priority: 100000, shutdownGracePeriodSeconds: 5}\n- {priority: 0, shutdownGracePeriodSeconds: 20}\n",
            &[],
        )
        .unwrap()
        .node_shutdown
        .unwrap();
        assert_eq!(p.requested(), s(25));
        assert_eq!(p.groups()[0].priority, 0);
        for (yaml, want) in [
            (
                "shutdownGracePeriod: 10s\nshutdownGracePeriodCriticalPods: 20s\n",
                "shutdownGracePeriodCriticalPods (20s) must not be greater than shutdownGracePeriod (10s)",
            ),
            ("shutdownGracePeriod: -1s\n", "shutdownGracePeriod: must not be negative"),
            (
                "shutdownGracePeriod: 10s\nshutdownGracePeriodByPodPriority:\n- {priority: 1, shutdownGracePeriodSeconds: 5}\n",
                "shutdownGracePeriodByPodPriority: cannot be set with shutdownGracePeriod",
            ),
            (
                "shutdownGracePeriodByPodPriority:\n- {priority: 1, shutdownGracePeriodSeconds: -5}\n",
                "shutdownGracePeriodByPodPriority[0].shutdownGracePeriodSeconds: must not be negative",
            ),
        ] {
            let e = settings_of(yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(PATH), "{yaml:?}: {e}");
        }
    }
}
