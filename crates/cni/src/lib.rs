//! A CNI plugin invoker for staticlet, compatible with what kubelet/containerd get from libcni.
//!
//! The embedded runtime pins each pod's network namespace at a path (`/run/netns/<name>`);
//! [`Cni::add`] runs the configured plugin chain to attach it to the node's network and
//! [`Cni::del`] runs it in reverse to detach it. No Go code is involved: plugins are executed
//! directly, with the environment and stdin of the CNI specification (1.0, and the 0.3/0.4
//! result format):
//!
//! * configuration: the lexically first `.conflist`/`.conf`/`.json` file of the conf dir
//!   ([`NetworkConfig::load`]); `.conf`/`.json` single-plugin configurations are wrapped in a list;
//! * environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH` (the bin
//!   dirs joined by `:`), and kubelet's `CNI_ARGS`
//!   (`IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…`);
//! * stdin: the plugin's configuration with the network's `name` and `cniVersion` injected,
//!   `prevResult` (the previous plugin's result on ADD; the cached ADD result on DEL, for
//!   0.4.0+) and `runtimeConfig.portMappings` for plugins declaring
//!   `capabilities.portMappings`;
//! * ADD runs the chain in order, and on failure runs DEL over the whole chain (best effort, as
//!   containerd's sandbox teardown would) before returning the error; DEL runs in reverse order,
//!   goes on past errors and returns the first. DEL is idempotent: a missing netns is passed as
//!   an empty `CNI_NETNS` (plugins then only release IPAM state), a missing cache entry means no
//!   `prevResult`;
//! * the final ADD result is cached atomically at `<cache_dir>/<network>/<container_id>`
//!   together with the configuration it was made with; DEL uses that configuration when there is
//!   an entry, and [`Cni::cached_result`] gives the pod IP back after an agent restart;
//! * a plugin's failure is reported with the `msg`/`details` of its CNI error JSON; each plugin
//!   runs with a timeout ([`DEFAULT_TIMEOUT`]) and is killed when it passes.
//!
//! ```no_run
//! # async fn example() -> staticlet_cni::Result<()> {
//! use staticlet_cni::{AttachRequest, Cni};
//!
//! let cni = Cni::new("/etc/cni/net.d", vec!["/opt/cni/bin".into()], "/var/lib/staticlet/cni");
//! if let Err(reason) = cni.status().await {
//!     eprintln!("NetworkNotReady: {reason}");
//! }
//! let req = AttachRequest {
//!     container_id: "4f1c2b".into(),
//!     netns_path: "/run/netns/staticlet-4f1c2b".into(),
//!     ifname: "eth0".into(),
//!     pod_name: "web-node1".into(),
//!     pod_namespace: "default".into(),
//!     pod_uid: "0d7e".into(),
//!     port_mappings: Vec::new(),
//! };
//! let attached = cni.add(&req).await?;
//! println!("pod IP {:?}", attached.pod_ip());
//! cni.del(&req).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Not implemented: CHECK, GC and STATUS plugin verbs, `VERSION` negotiation (results are
//! passed through as the plugins print them), and capabilities other than `portMappings`. On
//! timeout only the plugin process itself is killed, not processes it started.

pub mod builtin;
mod cache;
mod config;
mod error;
mod result;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt as _;

pub use config::{NetworkConfig, PluginConfig, CONFIG_EXTENSIONS, SUPPORTED_VERSIONS};
pub use error::{Error, Result};
pub use result::AttachResult;

/// How long one plugin invocation may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One `hostPort` of a pod's container, passed to `portMappings`-capable plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The port on the node.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// `TCP`, `UDP` or `SCTP` (any case; passed lower-case, as kubelet does).
    pub protocol: String,
    /// The node address to bind; empty for all.
    pub host_ip: String,
}

/// What ADD and DEL need to know about the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The sandbox's ID (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`, the cache file name).
    pub container_id: String,
    /// The pinned network namespace (`CNI_NETNS`).
    pub netns_path: PathBuf,
    /// The interface to create in it (`CNI_IFNAME`), normally `eth0`.
    pub ifname: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The pod's host ports.
    pub port_mappings: Vec<PortMapping>,
}

/// The CNI invoker: a conf dir, the plugin bin dirs and the result cache.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
    /// Used when the configuration directory holds none ([`builtin`]).
    fallback: Option<NetworkConfig>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

impl Cni {
    /// An invoker reading configuration from `conf_dir` (e.g. `/etc/cni/net.d`), plugins from the
    /// first of `bin_dirs` that has them (e.g. `/opt/cni/bin`), caching results in `cache_dir`.
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Cni {
        Cni {
            conf_dir: conf_dir.into(),
            bin_dirs,
            cache_dir: cache_dir.into(),
            timeout: DEFAULT_TIMEOUT,
            fallback: None,
        }
    }

    /// Uses `network` (e.g. [`builtin::network`]) whenever the configuration directory holds
    /// no configuration; one there always wins.
    pub fn with_fallback(mut self, network: NetworkConfig) -> Cni {
        self.fallback = Some(network);
        self
    }

    /// Sets the per-plugin timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Cni {
        self.timeout = timeout;
        self
    }

    /// The configuration directory.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// Loads the current configuration: the directory's, else the fallback;
    /// [`Error::NoConfig`] when there is neither.
    pub fn load_config(&self) -> Result<NetworkConfig> {
        match (NetworkConfig::load(&self.conf_dir)?, &self.fallback) {
            (Some(c), _) => Ok(c),
            (None, Some(f)) => Ok(f.clone()),
            (None, None) => Err(Error::NoConfig {
                dir: self.conf_dir.clone(),
            }),
        }
    }

    /// Whether the network is ready: a configuration is present and every plugin binary of it
    /// is found. The error is the reason, for the node's `NetworkReady` condition; for the
    /// built-in network, it names the package with the plugins.
    pub async fn status(&self) -> Result<(), String> {
        let config = self.load_config().map_err(|e| e.to_string())?;
        for plugin in &config.plugins {
            self.find_plugin(&plugin.plugin_type).map_err(|e| {
                if self.fallback.as_ref() == Some(&config) {
                    format!(
                        "{e} (the built-in pod network runs the standard CNI plugins: install \
                         Debian's containernetworking-plugins, or name their directory with \
                         --cni-bin-dir)"
                    )
                } else {
                    e.to_string()
                }
            })?;
        }
        Ok(())
    }

    /// The binary of a plugin: `<dir>/<type>` in the first bin dir that has it.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        let valid = !plugin_type.is_empty()
            && !plugin_type.contains('/')
            && plugin_type != "."
            && plugin_type != "..";
        valid
            .then(|| {
                self.bin_dirs
                    .iter()
                    .map(|d| d.join(plugin_type))
                    .find(|p| p.is_file())
            })
            .flatten()
            .ok_or_else(|| Error::PluginNotFound {
                plugin: plugin_type.to_string(),
                bin_dirs: self.bin_dirs.clone(),
            })
    }

    /// Attaches the pod's network namespace: runs the chain's ADD in order and caches the result.
    pub async fn add(&self, req: &AttachRequest) -> Result<AttachResult> {
        validate(req)?;
        let config = self.load_config()?;
        if !req.netns_path.exists() {
            return Err(Error::InvalidRequest(format!(
                "network namespace {} does not exist",
                req.netns_path.display()
            )));
        }
        let netns = req.netns_path.to_string_lossy().into_owned();
        let mut prev: Option<Value> = None;
        for plugin in &config.plugins {
            let out = self
                .invoke(&config, plugin, Command::Add, req, &netns, prev.as_ref())
                .await;
            match out {
                Ok(result) => prev = Some(result),
                Err(err) => {
                    tracing::warn!(
                        container_id = %req.container_id, network = %config.name, error = %err,
                        "CNI ADD failed; tearing down what the chain set up"
                    );
                    let prev = if config.del_gets_prev_result() {
                        prev.as_ref()
                    } else {
                        None
                    };
                    if let Err(del_err) = self.del_chain(&config, req, &netns, prev).await {
                        tracing::warn!(
                            container_id = %req.container_id, error = %del_err,
                            "CNI DEL after a failed ADD failed"
                        );
                    }
                    return Err(err);
                }
            }
        }
        let raw = prev.unwrap_or_else(|| json!({ "cniVersion": config.cni_version }));
        let entry = cache::CacheEntry::new(
            &req.container_id,
            &req.ifname,
            &config.name,
            &netns,
            config.to_conflist_json(),
            raw.clone(),
        );
        let cache_dir = self.cache_dir.clone();
        tokio::task::spawn_blocking(move || cache::write(&cache_dir, &entry))
            .await
            .map_err(|e| Error::Cache {
                path: self.cache_dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let result = AttachResult::from_raw(raw);
        tracing::info!(
            container_id = %req.container_id, network = %config.name,
            pod_ip = ?result.pod_ip(), "CNI ADD done"
        );
        Ok(result)
    }

    /// Detaches the pod: runs the chain's DEL in reverse order, going on past errors, then drops
    /// the cache entry. Safe to repeat, and after the netns or the cache entry is gone.
    pub async fn del(&self, req: &AttachRequest) -> Result<()> {
        validate(req)?;
        let current = NetworkConfig::load(&self.conf_dir);
        let preferred = current
            .as_ref()
            .ok()
            .and_then(|c| c.as_ref())
            .map(|c| c.name.clone());
        let cached = cache::find(&self.cache_dir, preferred.as_deref(), &req.container_id)?;
        // The chain that set the pod up tears it down; without a cache entry, the current one.
        let config = match &cached {
            Some((path, entry)) => {
                let bytes = serde_json::to_vec(&entry.config).unwrap_or_default();
                NetworkConfig::from_conflist_bytes(&bytes, path)?
            }
            None => match current? {
                Some(config) => config,
                None => {
                    tracing::debug!(
                        container_id = %req.container_id,
                        "CNI DEL: no configuration and no cached attachment; nothing to do"
                    );
                    return Ok(());
                }
            },
        };
        // A pin file that holds no namespace (its runtime died between creating the file and
        // pinning the namespace onto it, or after unpinning it) is as good as missing: plugins
        // refuse it ("unknown FS magic"), and with an empty CNI_NETNS they release IPAM state.
        let netns = if req.netns_path.as_os_str().is_empty() || !is_namespace(&req.netns_path) {
            String::new()
        } else {
            req.netns_path.to_string_lossy().into_owned()
        };
        let prev = cached
            .as_ref()
            .filter(|_| config.del_gets_prev_result())
            .map(|(_, entry)| &entry.result);
        self.del_chain(&config, req, &netns, prev).await?;
        if let Some((path, _)) = cached {
            cache::remove(&path)?;
        }
        Ok(())
    }

    /// The cached ADD result of a sandbox (e.g. its IP after an agent restart), if any.
    pub async fn cached_result(&self, container_id: &str) -> Result<Option<AttachResult>> {
        validate_id(container_id)?;
        let preferred = NetworkConfig::load(&self.conf_dir)
            .ok()
            .flatten()
            .map(|c| c.name);
        Ok(
            cache::find(&self.cache_dir, preferred.as_deref(), container_id)?
                .map(|(_, entry)| AttachResult::from_raw(entry.result)),
        )
    }

    async fn del_chain(
        &self,
        config: &NetworkConfig,
        req: &AttachRequest,
        netns: &str,
        prev: Option<&Value>,
    ) -> Result<()> {
        let mut first_err = None;
        for plugin in config.plugins.iter().rev() {
            if let Err(err) = self
                .invoke(config, plugin, Command::Del, req, netns, prev)
                .await
            {
                tracing::warn!(container_id = %req.container_id, error = %err, "CNI DEL failed");
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs one plugin; returns its parsed stdout for ADD (`Null` for DEL).
    async fn invoke(
        &self,
        config: &NetworkConfig,
        plugin: &PluginConfig,
        command: Command,
        req: &AttachRequest,
        netns: &str,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let name = plugin.plugin_type.clone();
        let path = self.find_plugin(&name)?;
        let stdin = plugin_stdin(config, plugin, req, prev);
        let stdin = serde_json::to_vec(&stdin).expect("a JSON value serializes");
        let cni_path = self
            .bin_dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            req.pod_namespace, req.pod_name, req.container_id, req.pod_uid
        );
        tracing::debug!(plugin = %name, command = command.as_str(), container_id = %req.container_id, "invoking CNI plugin");
        let exec_err = |source| Error::Exec {
            plugin: name.clone(),
            command: command.as_str(),
            path: path.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&path)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &req.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &req.ifname)
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", cni_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        let mut pipe = child.stdin.take();
        let write = async move {
            if let Some(pipe) = pipe.as_mut() {
                // A plugin may exit without reading its stdin; its exit status tells then.
                let _ = pipe.write_all(&stdin).await;
                let _ = pipe.shutdown().await;
            }
            drop(pipe);
        };
        let run = async { tokio::join!(write, child.wait_with_output()).1 };
        // On timeout the future, and with it the child, is dropped: kill_on_drop kills it.
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| Error::Timeout {
                plugin: name.clone(),
                command: command.as_str(),
                timeout: self.timeout,
            })?
            .map_err(exec_err)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            tracing::debug!(plugin = %name, command = command.as_str(), stderr = %stderr.trim(), "CNI plugin stderr");
        }
        if !output.status.success() {
            return Err(plugin_failure(&name, command, &output));
        }
        if command == Command::Del {
            return Ok(Value::Null);
        }
        match serde_json::from_slice::<Value>(&output.stdout) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Error::InvalidResult {
                plugin: name,
                command: command.as_str(),
                msg: "not a JSON object".into(),
            }),
            Err(e) => Err(Error::InvalidResult {
                plugin: name,
                command: command.as_str(),
                msg: format!(
                    "{e}: {:?}",
                    truncate(&String::from_utf8_lossy(&output.stdout))
                ),
            }),
        }
    }
}

/// The plugin's stdin: its configuration with the network's name and version, `prevResult` and
/// the runtime config of the capabilities it declares.
fn plugin_stdin(
    config: &NetworkConfig,
    plugin: &PluginConfig,
    req: &AttachRequest,
    prev: Option<&Value>,
) -> Value {
    let mut conf: Map<String, Value> = plugin.raw.clone();
    conf.insert("name".into(), Value::String(config.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(config.cni_version.clone()),
    );
    conf.remove("prevResult");
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    // Runtime config is the runtime's to give: only the capabilities the plugin declares.
    conf.remove("runtimeConfig");
    let mut runtime = Map::new();
    if plugin.has_capability("portMappings") {
        let mappings = req
            .port_mappings
            .iter()
            .map(|m| {
                let mut o = Map::new();
                o.insert("hostPort".into(), m.host_port.into());
                o.insert("containerPort".into(), m.container_port.into());
                o.insert("protocol".into(), m.protocol.to_ascii_lowercase().into());
                if !m.host_ip.is_empty() {
                    o.insert("hostIP".into(), m.host_ip.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        runtime.insert("portMappings".into(), Value::Array(mappings));
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

fn plugin_failure(plugin: &str, command: Command, output: &std::process::Output) -> Error {
    // CNI plugins print {"code", "msg", "details"} on stdout; fall back to whatever they said.
    let parsed = serde_json::from_slice::<Value>(&output.stdout).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64);
    let (mut msg, details) = (field("msg"), field("details"));
    if msg.is_empty() && details.is_empty() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        msg = truncate(if stdout.trim().is_empty() {
            stderr.trim()
        } else {
            stdout.trim()
        });
        if msg.is_empty() {
            msg = "no output".into();
        }
    }
    Error::PluginFailed {
        plugin: plugin.to_string(),
        command: command.as_str(),
        code,
        exit: output.status.code(),
        msg,
        details,
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 2048;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn validate_id(container_id: &str) -> Result<()> {
    let ok = !container_id.is_empty()
        && container_id != "."
        && container_id != ".."
        && container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "container ID {container_id:?} must be non-empty and made of [A-Za-z0-9_.-]"
        )))
    }
}

fn validate(req: &AttachRequest) -> Result<()> {
    validate_id(&req.container_id)?;
    if req.ifname.is_empty() || req.ifname.len() > 15 || req.ifname.contains(['/', ' ']) {
        return Err(Error::InvalidRequest(format!(
            "interface name {:?} is not a valid Linux interface name",
            req.ifname
        )));
    }
    for (what, value) in [
        ("pod name", &req.pod_name),
        ("pod namespace", &req.pod_namespace),
        ("pod UID", &req.pod_uid),
    ] {
        if value.contains([';', '=']) {
            return Err(Error::InvalidRequest(format!(
                "{what} {value:?} cannot be passed in CNI_ARGS (contains ';' or '=')"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AttachRequest {
        AttachRequest {
            container_id: "abc123".into(),
            netns_path: "/run/netns/x".into(),
            ifname: "eth0".into(),
            pod_name: "web-node1".into(),
            pod_namespace: "default".into(),
            pod_uid: "uid-1".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: String::new(),
            }],
        }
    }

    #[tokio::test]
    async fn the_fallback_is_used_only_without_a_configuration_and_names_the_plugins_package() {
        let conf = tempfile::tempdir().unwrap();
        let bins = tempfile::tempdir().unwrap();
        let builtin = builtin::network(&builtin::Subnet::parse("10.87.0.0/16").unwrap());
        let cni = Cni::new(
            conf.path(),
            vec![bins.path().into()],
            conf.path().join("cache"),
        )
        .with_fallback(builtin.clone());
        assert_eq!(cni.load_config().unwrap(), builtin);
        let e = cni.status().await.unwrap_err();
        assert!(
            e.contains("\"bridge\" not found") && e.contains("containernetworking-plugins"),
            "{e}"
        );
        for p in ["bridge", "portmap"] {
            std::fs::write(bins.path().join(p), "").unwrap();
        }
        cni.status().await.unwrap();
        // A configuration in the directory wins, and its errors carry no hint.
        std::fs::write(
            conf.path().join("10-mine.conflist"),
            r#"{"name":"mine","cniVersion":"1.0.0","plugins":[{"type":"macvlan"}]}"#,
        )
        .unwrap();
        assert_eq!(cni.load_config().unwrap().name, "mine");
        let e = cni.status().await.unwrap_err();
        assert!(!e.contains("containernetworking-plugins"), "{e}");
    }

    #[test]
    fn stdin_injects_name_version_prev_and_capabilities() {
        let config = NetworkConfig::from_conflist_bytes(
            br#"{"name":"net","cniVersion":"1.0.0","plugins":[
                {"type":"bridge","runtimeConfig":{"x":1}},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("x.conflist"),
        )
        .unwrap();
        let prev = json!({"ips": []});
        let s = plugin_stdin(&config, &config.plugins[0], &req(), None);
        assert_eq!(s["name"], "net");
        assert_eq!(s["cniVersion"], "1.0.0");
        assert!(s.get("prevResult").is_none());
        assert!(s.get("runtimeConfig").is_none());
        let s = plugin_stdin(&config, &config.plugins[1], &req(), Some(&prev));
        assert_eq!(s["prevResult"], prev);
        assert_eq!(
            s["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
    }

    #[test]
    fn requests_are_validated() {
        assert!(validate(&req()).is_ok());
        for bad in ["", "..", "a/b", "a;b"] {
            let mut r = req();
            r.container_id = bad.into();
            assert!(validate(&r).is_err(), "{bad:?}");
        }
        let mut r = req();
        r.pod_name = "a;b".into();
        assert!(validate(&r).is_err());
    }

    #[test]
    fn missing_plugin_names_plugin_and_dirs() {
        let cni = Cni::new(
            "/nonexistent",
            vec!["/no/a".into(), "/no/b".into()],
            "/tmp/x",
        );
        let err = cni.find_plugin("bridge").unwrap_err().to_string();
        assert!(
            err.contains("\"bridge\"") && err.contains("/no/a, /no/b"),
            "{err}"
        );
        assert!(cni.find_plugin("../bridge").is_err());
    }
}

/// Whether `path` is a namespace file (a `/proc/<pid>/ns/*` file or a bind mount of one: the
/// `nsfs` filesystem).
pub fn is_namespace(path: &std::path::Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

#[cfg(test)]
mod namespace_tests {
    #[test]
    fn only_namespace_files_are_namespaces() {
        assert!(super::is_namespace(std::path::Path::new(
            "/proc/self/ns/net"
        )));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!super::is_namespace(f.path()));
        assert!(!super::is_namespace(std::path::Path::new(
            "/nonexistent/ns/net"
        )));
    }
}
