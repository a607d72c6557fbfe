//! `staticlet run` options: kubelet-compatible flags, a KubeletConfiguration file, and their
//! merge (flags override the file, as kubelet).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use staticlet_manifest::duration::parse_go_duration;

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

/// Flags of `staticlet run`.
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
    /// Directory of container logs.
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pub log_dir: PathBuf,
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
    /// kubeconfig of a cluster to join: register the Node, renew its Lease and publish a
    /// read-only mirror pod per static pod (absent: standalone).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Labels to add when registering the Node: key=value[,key=value...] (with --kubeconfig).
    #[arg(long, value_name = "LABELS", value_parser = parse_node_labels, default_value = "")]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Register the Node with the API server (false: wait for someone else to create it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub register_node: bool,
    /// A KubeletConfiguration YAML file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Where the self-signed serving certificate is kept [default: <root-dir>/pki].
    #[arg(long, value_name = "DIR", help_heading = "Node API")]
    pub cert_dir: Option<PathBuf>,
    /// CA bundle that client certificates of the node API must chain to.
    #[arg(long, value_name = "FILE", help_heading = "Node API")]
    pub client_ca_file: Option<PathBuf>,
    /// Let unauthenticated requests in as system:anonymous [default: false].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, help_heading = "Node API")]
    pub anonymous_auth: Option<bool>,
    /// Authenticate bearer tokens with the API server's TokenReview [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, help_heading = "Node API")]
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
    /// Also serve CRI v1 (runtime and image services) for kubeadm and crictl on this socket,
    /// e.g. unix:///run/staticlet/cri.sock (the embedded runtime only).
    #[arg(long, value_name = "URI")]
    pub cri_listen: Option<String>,
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

/// The fields of a KubeletConfiguration that staticlet reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    static_pod_path: Option<String>,
    #[serde(rename = "staticPodURL")]
    static_pod_url: Option<String>,
    #[serde(rename = "staticPodURLHeader")]
    static_pod_url_header: Option<std::collections::BTreeMap<String, Vec<String>>>,
    file_check_frequency: Option<String>,
    http_check_frequency: Option<String>,
    sync_frequency: Option<String>,
    address: Option<String>,
    port: Option<i64>,
    tls_cert_file: Option<String>,
    tls_private_key_file: Option<String>,
    authentication: Option<KcAuthentication>,
    authorization: Option<KcAuthorization>,
    healthz_bind_address: Option<String>,
    healthz_port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcAuthentication {
    anonymous: Option<KcEnabled>,
    webhook: Option<KcAuthnWebhook>,
    x509: Option<KcX509>,
}

#[derive(Debug, Default, Deserialize)]
struct KcEnabled {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcAuthnWebhook {
    enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcX509 {
    client_c_a_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcAuthorization {
    mode: Option<String>,
    webhook: Option<KcAuthzWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcAuthzWebhook {
    #[serde(rename = "cacheAuthorizedTTL")]
    cache_authorized_ttl: Option<String>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    cache_unauthorized_ttl: Option<String>,
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
}

fn file_duration(
    path: &std::path::Path,
    field: &str,
    v: &Option<String>,
) -> Result<Option<Duration>> {
    v.as_deref()
        .map(|s| {
            parse_go_duration(s).map_err(|e| anyhow::anyhow!("{}: {field}: {e}", path.display()))
        })
        .transpose()
}

/// The OS hostname, lower-cased and trimmed (kubelet's `GetHostname`).
pub fn default_hostname() -> Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname from /proc/sys/kernel/hostname")?;
    Ok(raw.trim().to_lowercase())
}

impl RunArgs {
    /// Merges the config file (if any) and the flags; every bad value is an error naming its
    /// file or flag.
    pub fn settings(&self) -> Result<Settings> {
        let mut kc = KubeletConfiguration::default();
        if let Some(path) = &self.config {
            let data = std::fs::read_to_string(path)
                .with_context(|| format!("reading --config {}", path.display()))?;
            kc = serde_saphyr::from_str(&data).map_err(|e| {
                anyhow::anyhow!("{}: not a valid KubeletConfiguration: {e}", path.display())
            })?;
            if kc
                .kind
                .as_deref()
                .is_some_and(|k| k != "KubeletConfiguration")
            {
                bail!("{}: kind: must be KubeletConfiguration", path.display());
            }
            if kc
                .api_version
                .as_deref()
                .is_some_and(|v| v != "kubelet.config.k8s.io/v1beta1")
            {
                bail!(
                    "{}: apiVersion: must be kubelet.config.k8s.io/v1beta1",
                    path.display()
                );
            }
        }
        let cfg = self.config.clone().unwrap_or_default();
        let node_api = self.node_api_settings(&cfg, &kc)?;
        let mut headers = Vec::new();
        for (k, vs) in kc.static_pod_url_header.iter().flatten() {
            for v in vs {
                headers.push((k.clone(), v.clone()));
            }
        }
        if !self.manifest_url_header.is_empty() {
            headers = staticlet_agent::config::http::parse_headers(&self.manifest_url_header)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        let node_name = match &self.hostname_override {
            Some(n) => n.trim().to_lowercase(),
            None => default_hostname()?,
        };
        if node_name.is_empty() {
            bail!("empty hostname is invalid (set --hostname-override)");
        }
        if !staticlet_manifest::validate::is_dns1123_subdomain(&node_name) {
            bail!("node name {node_name:?} is not a valid DNS-1123 subdomain (set --hostname-override)");
        }
        let manifest_url = self
            .manifest_url
            .clone()
            .or(kc.static_pod_url)
            .filter(|u| !u.is_empty());
        if let Some(u) = &manifest_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("--manifest-url {u:?}: must be an http:// or https:// URL");
            }
        }
        let pick = |flag: Option<Duration>, file: Option<Duration>, default: u64| {
            flag.or(file).unwrap_or(Duration::from_secs(default))
        };
        let file_check = pick(
            self.file_check_frequency,
            file_duration(&cfg, "fileCheckFrequency", &kc.file_check_frequency)?,
            20,
        );
        let http_check = pick(
            self.http_check_frequency,
            file_duration(&cfg, "httpCheckFrequency", &kc.http_check_frequency)?,
            20,
        );
        let sync = pick(
            self.sync_frequency,
            file_duration(&cfg, "syncFrequency", &kc.sync_frequency)?,
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
        let pod_manifest_path = self
            .pod_manifest_path
            .clone()
            .or(kc
                .static_pod_path
                .filter(|p| !p.is_empty())
                .map(PathBuf::from))
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Settings {
            node_api,
            pod_manifest_path,
            manifest_url,
            manifest_url_headers: headers,
            file_check_frequency: file_check,
            http_check_frequency: http_check,
            sync_frequency: sync,
            node_name,
        })
    }
}

/// A port from a config file's integer field.
fn file_port(path: &std::path::Path, field: &str, v: Option<i64>) -> Result<Option<u16>> {
    v.map(|p| {
        u16::try_from(p).map_err(|_| {
            anyhow::anyhow!("{}: {field}: {p} is not a port (0-65535)", path.display())
        })
    })
    .transpose()
}

/// An IP address from a config file's field.
fn file_ip(
    path: &std::path::Path,
    field: &str,
    v: &Option<String>,
) -> Result<Option<std::net::IpAddr>> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                anyhow::anyhow!("{}: {field}: {s:?} is not an IP address", path.display())
            })
        })
        .transpose()
}

impl RunArgs {
    /// The node API's settings: flags over the config file over kubelet's defaults (a zero
    /// duration or port in the file means the default, as kubelet's defaulting does).
    fn node_api_settings(
        &self,
        cfg: &std::path::Path,
        kc: &KubeletConfiguration,
    ) -> Result<NodeApiSettings> {
        let authn = kc.authentication.as_ref();
        let authz = kc.authorization.as_ref();
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let address = self
            .address
            .or(file_ip(cfg, "address", &kc.address)?)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let default_port = if self.kubeconfig.is_some() { 10250 } else { 0 };
        let port = self
            .port
            .or(file_port(cfg, "port", kc.port)?.filter(|p| *p != 0))
            .unwrap_or(default_port);
        let mode = match self
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
        let token_webhook = self
            .authentication_token_webhook
            .or(authn.and_then(|a| a.webhook.as_ref()?.enabled))
            .unwrap_or(true);
        let token_ttl = self
            .authentication_token_webhook_cache_ttl
            .or(nonzero(file_duration(
                cfg,
                "authentication.webhook.cacheTTL",
                &authn.and_then(|a| a.webhook.as_ref()?.cache_ttl.clone()),
            )?));
        let authz_webhook = authz.and_then(|a| a.webhook.as_ref());
        let authorized_ttl =
            self.authorization_webhook_cache_authorized_ttl
                .or(nonzero(file_duration(
                    cfg,
                    "authorization.webhook.cacheAuthorizedTTL",
                    &authz_webhook.and_then(|w| w.cache_authorized_ttl.clone()),
                )?));
        let unauthorized_ttl = self
            .authorization_webhook_cache_unauthorized_ttl
            .or(nonzero(file_duration(
                cfg,
                "authorization.webhook.cacheUnauthorizedTTL",
                &authz_webhook.and_then(|w| w.cache_unauthorized_ttl.clone()),
            )?));
        let path = |flag: &Option<PathBuf>, file: Option<&String>| {
            flag.clone()
                .or(file.filter(|f| !f.is_empty()).map(PathBuf::from))
        };
        let tls_cert_file = path(&self.tls_cert_file, kc.tls_cert_file.as_ref());
        let tls_private_key_file =
            path(&self.tls_private_key_file, kc.tls_private_key_file.as_ref());
        if tls_cert_file.is_some() != tls_private_key_file.is_some() {
            bail!("--tls-cert-file and --tls-private-key-file (tlsCertFile, tlsPrivateKeyFile) go together");
        }
        let client_ca_file = path(
            &self.client_ca_file,
            authn.and_then(|a| a.x509.as_ref()?.client_c_a_file.as_ref()),
        );
        let anonymous = self
            .anonymous_auth
            .or(authn.and_then(|a| a.anonymous.as_ref()?.enabled))
            .unwrap_or(false);
        if port != 0 && self.kubeconfig.is_none() {
            if mode == AuthzMode::Webhook {
                bail!("--port {port}: the node API's Webhook authorization asks the API server, which needs --kubeconfig; without a cluster use --authorization-mode AlwaysAllow with --client-ca-file");
            }
            if client_ca_file.is_none() && !anonymous {
                bail!("--port {port}: without --kubeconfig only client certificates can authenticate: set --client-ca-file");
            }
        }
        let healthz_ip = self
            .healthz_bind_address
            .or(file_ip(
                cfg,
                "healthzBindAddress",
                &kc.healthz_bind_address,
            )?)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let healthz_port = self
            .healthz_port
            .or(file_port(cfg, "healthzPort", kc.healthz_port)?.filter(|p| *p != 0))
            .unwrap_or(10248);
        Ok(NodeApiSettings {
            listen: (port != 0).then(|| std::net::SocketAddr::new(address, port)),
            tls_cert_file,
            tls_private_key_file,
            cert_dir: self
                .cert_dir
                .clone()
                .unwrap_or_else(|| self.root_dir.join("pki")),
            client_ca_file,
            anonymous,
            token_webhook: token_webhook.then(|| token_ttl.unwrap_or(Duration::from_secs(120))),
            authz: mode,
            authorized_ttl: authorized_ttl.unwrap_or(Duration::from_secs(300)),
            unauthorized_ttl: unauthorized_ttl.unwrap_or(Duration::from_secs(30)),
            healthz: (healthz_port != 0)
                .then(|| std::net::SocketAddr::new(healthz_ip, healthz_port)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings> {
        let mut v = vec!["t", "--hostname-override", "Node-1"];
        v.extend_from_slice(args);
        T::try_parse_from(v)
            .map_err(|e| anyhow::anyhow!(e.to_string()))?
            .run
            .settings()
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
