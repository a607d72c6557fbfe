//! `staticlet run` options: its flags (kubelet's, where kubelet has them) and the effective
//! [`Settings`] they and the KubeletConfiguration file (`kubeletconfig.rs`) make; flags
//! override the file, as in kubelet. Every other kubelet flag is accepted and ignored
//! (`kubeletflags.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use staticlet_manifest::duration::parse_go_duration;

use crate::kubeletconfig;
use crate::kubeletflags::{go_bool, IgnoredKubeletFlags};

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

/// A byte count: an integer with an optional binary suffix (`Ki`, `Mi`, `Gi`, `Ti`).
pub fn byte_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.len().checked_sub(2).map(|i| s.split_at(i)) {
        Some((n, "Ki")) => (n, 10),
        Some((n, "Mi")) => (n, 20),
        Some((n, "Gi")) => (n, 30),
        Some((n, "Ti")) => (n, 40),
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 512Mi, 64Gi, 1048576)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Bounds on unpacking one image layer, and all the layers of one image (`staticlet run` and
/// `staticlet images import`).
#[derive(Debug, Args, Clone)]
pub struct ImageLimitArgs {
    /// Most uncompressed bytes one image layer may hold (decompression bombs fail the pull).
    #[arg(long, value_parser = byte_size, value_name = "BYTES", default_value = "64Gi")]
    pub max_layer_size: u64,
    /// Most tar entries one image layer may hold.
    #[arg(long, value_name = "N", default_value_t = staticlet_images::UnpackLimits::DEFAULT_MAX_ENTRIES)]
    pub max_layer_entries: u64,
    /// Most bytes of headers (PAX records, long names) before one entry of a layer.
    #[arg(long, value_parser = byte_size, value_name = "BYTES", default_value = "1Mi")]
    pub max_layer_header_size: u64,
    /// Most uncompressed bytes all the layers of one image may hold together.
    #[arg(long, value_parser = byte_size, value_name = "BYTES", default_value = "128Gi")]
    pub max_image_size: u64,
    /// Most tar entries all the layers of one image may hold together.
    #[arg(long, value_name = "N", default_value_t = staticlet_images::UnpackLimits::DEFAULT_MAX_IMAGE_ENTRIES)]
    pub max_image_entries: u64,
}

impl ImageLimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> staticlet_images::UnpackLimits {
        staticlet_images::UnpackLimits {
            max_layer_size: self.max_layer_size,
            max_entries: self.max_layer_entries,
            max_header_size: self.max_layer_header_size,
            max_image_size: self.max_image_size,
            max_image_entries: self.max_image_entries,
        }
    }
}

/// Flags of `staticlet run`. Its command must be built with `args_override_self` (a flag given
/// twice takes its last value, as kubelet's pflag does); boolean flags are pflag's too
/// (`--flag`, `--flag=false`).
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Directory of static pod manifests, or one manifest file. Files starting with '.' are ignored.
    #[arg(long, value_name = "PATH")]
    pub pod_manifest_path: Option<PathBuf>,
    /// URL to fetch static pods from (a Pod or a PodList).
    #[arg(long, value_name = "URL")]
    pub manifest_url: Option<String>,
    /// HTTP headers for --manifest-url, 'Name:Value,Name2:Value2' (repeatable).
    #[arg(long, value_name = "HEADERS")]
    pub manifest_url_header: Vec<String>,
    /// How often the manifest path is relisted (besides inotify) [default: 20s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub file_check_frequency: Option<Duration>,
    /// How often the manifest URL is polled [default: 20s].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub http_check_frequency: Option<Duration>,
    /// Resync period of pod workers (accepted for kubelet compatibility) [default: 1m].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub sync_frequency: Option<Duration>,
    /// Node name [default: the lower-cased hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// The node's IP, shown as hostIP (and podIP under hostNetwork) [default: detected].
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<std::net::IpAddr>,
    /// Directory holding all of staticlet's state.
    #[arg(long, default_value = "/var/lib/staticlet", value_name = "DIR")]
    pub root_dir: PathBuf,
    /// Directory of container logs (kubelet's podLogsDir) [default: /var/log/pods].
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Container runtime: absent for the embedded runtime; `unix:///path` for a CRI runtime;
    /// `simulate://` for the built-in simulator (containers are simulated, nothing is executed).
    #[arg(long, value_name = "URI")]
    pub container_runtime_endpoint: Option<String>,
    /// Directory of CNI network configurations (embedded runtime).
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub cni_conf_dir: PathBuf,
    /// Directories of CNI plugin binaries, searched in order (repeatable).
    #[arg(long, value_name = "DIR", default_values = ["/opt/cni/bin", "/usr/lib/cni"])]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Docker config.json with registry credentials [default: <root-dir>/config.json, then
    /// ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub image_credentials: Option<PathBuf>,
    /// A registry (HOST:PORT) to pull from over plain HTTP (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    #[command(flatten)]
    pub image_limits: ImageLimitArgs,
    /// A registry response that sends nothing for this long fails the pull (e.g. 2m, 30s).
    #[arg(long, value_parser = duration, value_name = "DURATION", default_value = "2m")]
    pub image_pull_stall_timeout: Duration,
    /// kubeconfig of a cluster to join: register the Node, renew its Lease and publish a
    /// read-only mirror pod per static pod (absent: standalone).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Labels to add when registering the Node: key=value[,key=value...] (with --kubeconfig).
    #[arg(long, value_name = "LABELS", value_parser = parse_node_labels, default_value = "")]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Register the Node with the API server (false: wait for someone else to create it)
    /// [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = go_bool, value_name = "BOOL")]
    pub register_node: Option<bool>,
    /// A KubeletConfiguration file (YAML or JSON, as kubeadm writes it); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read the kubelet flags of a kubeadm-flags.env file (KUBELET_KUBEADM_ARGS, then
    /// KUBELET_EXTRA_ARGS) before those of the command line, as kubeadm's systemd drop-in does.
    #[arg(long, value_name = "FILE")]
    pub kubeadm_flags_env: Option<PathBuf>,
    /// Bootstrap kubeconfig (a bootstrap token) to get the node's client certificate through a
    /// CSR when --kubeconfig is missing or its certificate expired; the certificate is kept in
    /// --cert-dir and --kubeconfig written for it (kubelet's TLS bootstrap).
    #[arg(long, value_name = "FILE")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Renew the node's client certificate at 70-90 % of its lifetime through a CSR
    /// (rotateCertificates) [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = go_bool, value_name = "BOOL")]
    pub rotate_certificates: Option<bool>,
    /// Pod sandbox (pause) image for a CRI runtime (read, not used yet).
    #[arg(long, value_name = "IMAGE")]
    pub pod_infra_container_image: Option<String>,
    /// The subnet of the built-in pod network (used when --cni-conf-dir holds no network
    /// configuration; kubelet's standalone --pod-cidr) [default: 10.87.0.0/16].
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,
    /// kubelet's cgroup driver, cgroupfs or systemd (cgroupDriver): pod cgroups are
    /// /staticlet/pod<uid> (kubelet's cgroupfs layout) with either; a CRI runtime on the
    /// systemd driver is refused [default: cgroupfs].
    #[arg(long, value_name = "DRIVER")]
    pub cgroup_driver: Option<String>,
    /// Cluster DNS servers, comma-separated (read, not used yet).
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// Cluster DNS domain (read, not used yet).
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Also serve the local API on TCP, e.g. tcp://127.0.0.1:10255.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// The node API (kubelet's: kubectl logs/exec/port-forward/top) listens on this address
    /// [default: 0.0.0.0].
    #[arg(long, value_name = "IP", help_heading = "Node API")]
    pub address: Option<std::net::IpAddr>,
    /// Port of the node API; 0 turns it off [default: 10250 with --kubeconfig, else 0].
    #[arg(long, value_name = "PORT", help_heading = "Node API")]
    pub port: Option<u16>,
    /// The node API's serving certificate (PEM) [default: a self-signed one in --cert-dir].
    #[arg(long, value_name = "FILE", help_heading = "Node API")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(long, value_name = "FILE", help_heading = "Node API")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed serving certificate and the node's client certificates
    /// (kubelet-client-*.pem, with --bootstrap-kubeconfig or rotateCertificates) are kept
    /// [default: <root-dir>/pki].
    #[arg(long, value_name = "DIR", help_heading = "Node API")]
    pub cert_dir: Option<PathBuf>,
    /// CA bundle that client certificates of the node API must chain to.
    #[arg(long, value_name = "FILE", help_heading = "Node API")]
    pub client_ca_file: Option<PathBuf>,
    /// Let unauthenticated requests in as system:anonymous [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = go_bool, value_name = "BOOL", help_heading = "Node API")]
    pub anonymous_auth: Option<bool>,
    /// Authenticate bearer tokens with the API server's TokenReview [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = go_bool, value_name = "BOOL", help_heading = "Node API")]
    pub authentication_token_webhook: Option<bool>,
    /// How long TokenReview answers are kept [default: 2m].
    #[arg(long, value_parser = duration, value_name = "DURATION", help_heading = "Node API")]
    pub authentication_token_webhook_cache_ttl: Option<Duration>,
    /// Webhook (SubjectAccessReview, as kubelet) or AlwaysAllow [default: Webhook].
    #[arg(long, value_name = "MODE", help_heading = "Node API")]
    pub authorization_mode: Option<String>,
    /// How long allowing SubjectAccessReview answers are kept [default: 5m].
    #[arg(long, value_parser = duration, value_name = "DURATION", help_heading = "Node API")]
    pub authorization_webhook_cache_authorized_ttl: Option<Duration>,
    /// How long denying SubjectAccessReview answers are kept [default: 30s].
    #[arg(long, value_parser = duration, value_name = "DURATION", help_heading = "Node API")]
    pub authorization_webhook_cache_unauthorized_ttl: Option<Duration>,
    /// Address of the plain-HTTP /healthz endpoint kubeadm waits on [default: 127.0.0.1].
    #[arg(long, value_name = "IP", help_heading = "Node API")]
    pub healthz_bind_address: Option<std::net::IpAddr>,
    /// Port of the /healthz endpoint; 0 turns it off [default: 10248].
    #[arg(long, value_name = "PORT", help_heading = "Node API")]
    pub healthz_port: Option<u16>,

    /// Every other kubelet flag: accepted, and named in a warning at start.
    #[command(flatten)]
    pub kubelet: IgnoredKubeletFlags,

    /// Also serve CRI v1 (runtime and image services) for kubeadm and crictl on this socket,
    /// e.g. unix:///run/staticlet/cri.sock (the embedded runtime only).
    #[arg(long, value_name = "URI")]
    pub cri_listen: Option<String>,

    /// A manifest (or its directory) writable by someone other than root, or a symlink out of
    /// the directory: warn (log it once, apply it) or refuse (not applied; the error is shown
    /// by `get manifests`, and a pod it ran keeps its last good version).
    #[arg(long, value_name = "warn|refuse", default_value = "warn")]
    pub manifest_permissions: staticlet_agent::config::trust::Policy,

    /// Taints the Node is registered with (kubelet's flag): `key[=value]:effect` items
    /// separated by commas; wins over registerWithTaints in the --config file. Applied only when
    /// staticlet creates the Node, as kubelet does.
    #[arg(long, value_parser = crate::kubeletflags::parse_taints, value_name = "TAINTS")]
    pub register_with_taints: Option<crate::kubeletflags::Taints>,

    /// How long an updated pod has to become Ready (all containers ready, readiness probes
    /// counted) before staticlet stops it and starts its last Ready version again, e.g. 5m.
    /// Counted from when the new version is applied, so it includes the old version's
    /// termination and the image pull. Off by default; a pod's staticlet.io/ready-deadline
    /// annotation wins (0 turns the check off for that pod).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub rollout_ready_deadline: Option<Duration>,

    /// How often the pod workers list the runtime to catch what its events missed (kubelet's
    /// PLEG period, 1 s; kubelet has no flag for it). For tests and benchmarks that prove a
    /// restart came from a runtime event: with a long period, only an event can make it fast.
    #[arg(long, value_parser = duration, value_name = "DURATION", default_value = "1s", hide = true)]
    pub relist_period: Duration,

    /// The agent's log format (kubelet's --logging-format): text, or json (one object per line,
    /// for log shippers). Under systemd (JOURNAL_STREAM), text has no timestamps or colours:
    /// the journal adds its own.
    #[arg(long = "logging-format", alias = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub logging_format: LogFormat,
}

/// `--logging-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--node-labels`: `key=value` pairs separated by commas (kubelet's syntax).
pub fn parse_node_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("{pair:?}: empty label key"));
        }
        let errs = staticlet_manifest::validate::qualified_name_errors(k);
        if !errs.is_empty() {
            return Err(format!("label key {k:?}: {}", errs.join("; ")));
        }
        let errs = staticlet_manifest::validate::label_value_errors(v);
        if !errs.is_empty() {
            return Err(format!("label value {v:?} of {k:?}: {}", errs.join("; ")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// How the node API authorizes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzMode {
    Webhook,
    AlwaysAllow,
}

/// The node API's settings (kubelet's server flags and fields).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeApiSettings {
    /// `address:port`, `None` when off (`--port 0`).
    pub listen: Option<std::net::SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub anonymous: bool,
    /// TokenReview answers are cached this long; `None`: tokens are not accepted.
    pub token_webhook: Option<Duration>,
    pub authz: AuthzMode,
    pub authorized_ttl: Duration,
    pub unauthorized_ttl: Duration,
    /// The plain-HTTP healthz endpoint, `None` when off.
    pub healthz: Option<std::net::SocketAddr>,
}

/// The effective settings after merging the config file and the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub pod_manifest_path: Option<PathBuf>,
    pub manifest_url: Option<String>,
    pub manifest_url_headers: Vec<(String, String)>,
    pub file_check_frequency: Duration,
    pub http_check_frequency: Duration,
    pub sync_frequency: Duration,
    pub node_name: String,
    pub node_api: NodeApiSettings,
    /// Container log files (`--log-dir`, `podLogsDir`).
    pub log_dir: PathBuf,
    /// `--container-runtime-endpoint`, `containerRuntimeEndpoint`; `None`: the embedded runtime.
    pub container_runtime_endpoint: Option<String>,
    /// `--register-node`, `registerNode`.
    pub register_node: bool,
    /// `registerWithTaints`: (key, value, effect) of the taints the Node is created with.
    pub register_with_taints: Vec<(String, String, String)>,
    /// `--pod-cidr`, `podCIDR`: the built-in pod network's subnet.
    pub pod_cidr: Option<String>,
    /// `--cluster-domain`, `clusterDomain` (carried for a later change, not used yet).
    pub cluster_domain: Option<String>,
    /// `--cluster-dns`, `clusterDNS` (carried for a later change, not used yet).
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The CRI sandbox image, `--pod-infra-container-image` (carried, not used yet).
    pub sandbox_image: Option<String>,
    /// `--bootstrap-kubeconfig`: with `--kubeconfig`, TLS bootstrap of the node's client
    /// certificate when the kubeconfig is missing or its certificate unusable.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `rotateCertificates`: renew the node's client certificate at 70-90 % of its lifetime.
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap`: with `--kubeconfig`, the node API's serving certificate is requested
    /// from the cluster with a CSR (signer `kubernetes.io/kubelet-serving`) and renewed, instead
    /// of `tlsCertFile` or a self-signed one.
    pub server_tls_bootstrap: bool,
    /// Graceful node shutdown (`shutdownGracePeriod`, `shutdownGracePeriodCriticalPods`,
    /// `shutdownGracePeriodByPodPriority`); `None`: off, kubelet's default.
    pub node_shutdown: Option<staticlet_agent::nodeshutdown::ShutdownPolicy>,
    /// Image garbage collection (`imageGC*`, `imageMinimumGCAge`, `imageMaximumGCAge`).
    pub image_gc: staticlet_agent::image_gc::ImageGcPolicy,
    /// `--cgroup-driver`, `cgroupDriver`: checked against the runtime at start
    /// (`cgroupdriver::decide`).
    pub cgroup_driver: crate::cgroupdriver::Configured,
    /// Fields of the config file that have no effect, for the warning at start.
    pub ignored_config_fields: Vec<String>,
    /// Flags given that have no effect (`--name`), for the warning at start.
    pub ignored_flags: Vec<String>,
}

/// The OS hostname, lower-cased and trimmed (kubelet's `GetHostname`).
pub fn default_hostname() -> Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname from /proc/sys/kernel/hostname")?;
    Ok(raw.trim().to_lowercase())
}

impl RunArgs {
    /// Reads `--config` (if any) and merges it with the flags (`kubeletconfig::settings`);
    /// every bad value is an error naming its file or flag.
    pub fn settings(&self) -> Result<Settings> {
        let file = self
            .config
            .as_deref()
            .map(kubeletconfig::read)
            .transpose()?;
        kubeletconfig::settings(self, file.as_ref(), default_hostname)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn byte_sizes() {
        for (input, want) in [
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("512Ki", Ok(512 << 10)),
            ("1Mi", Ok(1 << 20)),
            ("64Gi", Ok(64 << 30)),
            ("2Ti", Ok(2 << 40)),
            ("1Ei", Err(())),
            ("Mi", Err(())),
            ("-1", Err(())),
            ("99999999999Ti", Err(())),
        ] {
            assert_eq!(byte_size(input).map_err(|_| ()), want, "{input}");
        }
        let args = parse_args(&[
            "--max-layer-size",
            "8Mi",
            "--image-pull-stall-timeout",
            "30s",
        ])
        .unwrap();
        assert_eq!(args.image_limits.limits().max_layer_size, 8 << 20);
        assert_eq!(args.image_limits.limits().max_entries, 1_000_000);
        assert_eq!(
            args.image_limits.limits(),
            staticlet_images::UnpackLimits {
                max_layer_size: 8 << 20,
                ..Default::default()
            },
            "the flags' defaults are the library's"
        );
        assert_eq!(args.image_pull_stall_timeout, Duration::from_secs(30));
        let args = parse_args(&["--max-image-size", "2Gi", "--max-image-entries", "500"]).unwrap();
        assert_eq!(args.image_limits.limits().max_image_size, 2 << 30);
        assert_eq!(args.image_limits.limits().max_image_entries, 500);
    }

    /// `staticlet run`'s command, as main.rs builds it.
    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    /// Parses `staticlet run` flags.
    pub(crate) fn parse_args(args: &[&str]) -> Result<RunArgs> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        Ok(T::try_parse_from(v)
            .map_err(|e| anyhow::anyhow!(e.to_string()))?
            .run)
    }

    fn parse(args: &[&str]) -> Result<Settings> {
        let mut v = vec!["--hostname-override", "Node-1"];
        v.extend_from_slice(args);
        parse_args(&v)?.settings()
    }

    #[test]
    fn defaults_and_flags() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.node_name, "node-1");
        assert_eq!(s.file_check_frequency, Duration::from_secs(20));
        assert_eq!(s.sync_frequency, Duration::from_secs(60));
        let s = parse(&[
            "--file-check-frequency",
            "1m30s",
            "--manifest-url",
            "http://x/p",
            "--manifest-url-header",
            "a:hello,b:again",
            "--manifest-url-header",
            "a:world",
        ])
        .unwrap();
        assert_eq!(s.file_check_frequency, Duration::from_secs(90));
        assert_eq!(
            s.manifest_url_headers,
            vec![
                ("a".into(), "hello".into()),
                ("b".into(), "again".into()),
                ("a".into(), "world".into())
            ]
        );
    }

    #[test]
    fn bad_values_fail_clearly() {
        let e = parse(&["--file-check-frequency", "20"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing unit"), "{e}");
        assert!(parse(&["--no-such-flag"]).is_err());
        let e = parse(&["--manifest-url", "ftp://x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an http"), "{e}");
        let e = parse(&["--manifest-url-header", "novalue"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected Name:Value"), "{e}");
    }

    #[test]
    fn node_api_settings_as_kubelet() {
        let d = tempfile::tempdir().unwrap();
        let kc = d.path().join("kubeconfig");
        let kcs = kc.to_str().unwrap();
        // Standalone: off; the healthz port on.
        let s = parse(&[]).unwrap().node_api;
        assert_eq!(s.listen, None);
        assert_eq!(s.healthz, Some("127.0.0.1:10248".parse().unwrap()));
        assert!(!s.anonymous);
        assert_eq!(s.authz, AuthzMode::Webhook);
        // Joining a cluster: on at 10250 with kubelet's secure defaults.
        let s = parse(&["--kubeconfig", kcs]).unwrap().node_api;
        assert_eq!(s.listen, Some("0.0.0.0:10250".parse().unwrap()));
        assert_eq!(s.token_webhook, Some(Duration::from_secs(120)));
        assert_eq!(s.authorized_ttl, Duration::from_secs(300));
        assert_eq!(s.unauthorized_ttl, Duration::from_secs(30));
        let s = parse(&["--kubeconfig", kcs, "--port", "0", "--healthz-port", "0"])
            .unwrap()
            .node_api;
        assert_eq!((s.listen, s.healthz), (None, None));
        // A config file as kubeadm writes it: zero durations mean the defaults.
        let f = d.path().join("kubelet.yaml");
        std::fs::write(&f, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\naddress: 127.0.0.1\nport: 10260\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n    cacheTTL: 0s\n    enabled: true\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\nauthorization:\n  mode: Webhook\n  webhook:\n    cacheAuthorizedTTL: 0s\n    cacheUnauthorizedTTL: 10s\nhealthzBindAddress: 127.0.0.1\nhealthzPort: 10258\n").unwrap();
        let fs = f.to_str().unwrap();
        let s = parse(&["--config", fs, "--kubeconfig", kcs])
            .unwrap()
            .node_api;
        assert_eq!(s.listen, Some("127.0.0.1:10260".parse().unwrap()));
        assert_eq!(
            s.client_ca_file,
            Some(PathBuf::from("/etc/kubernetes/pki/ca.crt"))
        );
        assert_eq!(s.token_webhook, Some(Duration::from_secs(120)));
        assert_eq!(s.authorized_ttl, Duration::from_secs(300));
        assert_eq!(s.unauthorized_ttl, Duration::from_secs(10));
        assert_eq!(s.healthz, Some("127.0.0.1:10258".parse().unwrap()));
        // Bad values and combinations are named.
        let e = parse(&["--kubeconfig", kcs, "--authorization-mode", "RBAC"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("authorization-mode") && e.contains("RBAC"),
            "{e}"
        );
        let e = parse(&["--port", "10250"]).unwrap_err().to_string();
        assert!(e.contains("--kubeconfig"), "{e}");
        let e = parse(&["--port", "10250", "--authorization-mode", "AlwaysAllow"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--client-ca-file"), "{e}");
        let e = parse(&["--kubeconfig", kcs, "--tls-cert-file", "/x.pem"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-private-key-file"), "{e}");
        std::fs::write(&f, "kind: KubeletConfiguration\nport: 70000\n").unwrap();
        let e = parse(&["--config", fs]).unwrap_err().to_string();
        assert!(e.contains("port") && e.contains("70000"), "{e}");
    }

    #[test]
    fn config_file_is_read_and_flags_override_it() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("kubelet.yaml");
        std::fs::write(&f, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/manifests\nfileCheckFrequency: 5s\nhttpCheckFrequency: 7s\nstaticPodURL: http://h/pods\nstaticPodURLHeader:\n  X-A: [\"1\", \"2\"]\nclusterDNS: [10.96.0.10]\n").unwrap();
        let fs = f.to_str().unwrap();
        let s = parse(&["--config", fs]).unwrap();
        assert_eq!(
            s.pod_manifest_path,
            Some(PathBuf::from("/etc/kubernetes/manifests"))
        );
        assert_eq!(s.file_check_frequency, Duration::from_secs(5));
        assert_eq!(s.manifest_url.as_deref(), Some("http://h/pods"));
        assert_eq!(s.manifest_url_headers.len(), 2);
        let s = parse(&["--config", fs, "--file-check-frequency", "1s"]).unwrap();
        assert_eq!(s.file_check_frequency, Duration::from_secs(1));
        std::fs::write(&f, "kind: KubeletConfiguration\nfileCheckFrequency: soon\n").unwrap();
        let e = parse(&["--config", fs]).unwrap_err().to_string();
        assert!(
            e.contains("fileCheckFrequency") && e.contains("kubelet.yaml"),
            "{e}"
        );
    }
}
