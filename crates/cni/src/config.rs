//! Network configuration: libcni's conf-dir lookup and the `.conflist` / `.conf` formats.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// File-name extensions libcni (and so kubelet and containerd) reads from the conf dir.
pub const CONFIG_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// The `cniVersion`s whose results this crate understands (the 0.3.0+ result format).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network configuration list: the network's name and version and its plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The network's `name` (becomes every plugin's `name`, and the cache sub-directory).
    pub name: String,
    /// The `cniVersion` (injected into every plugin's configuration).
    pub cni_version: String,
    /// The plugin chain, in ADD order.
    pub plugins: Vec<PluginConfig>,
    /// The file it was read from (empty when built from bytes).
    pub source: PathBuf,
}

/// One plugin of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin's `type`: the binary's file name.
    pub plugin_type: String,
    /// The plugin's configuration object as written (without `name`/`cniVersion` injected).
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// Whether the plugin declares `capabilities.<name>: true`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.raw
            .get("capabilities")
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl NetworkConfig {
    /// Loads the lexically first `.conflist`, `.conf` or `.json` file of `conf_dir`.
    ///
    /// Returns `Ok(None)` when the directory does not exist or holds no such file (the caller
    /// reports `NetworkNotReady`). A `.conf`/`.json` file holds a single plugin's configuration,
    /// which is wrapped into a one-plugin list (as libcni's `ConfListFromConf` does).
    pub fn load(conf_dir: &Path) -> Result<Option<NetworkConfig>> {
        let Some(file) = first_config_file(conf_dir)? else {
            return Ok(None);
        };
        let bytes = std::fs::read(&file).map_err(|source| Error::ReadConfig {
            file: file.clone(),
            source,
        })?;
        let is_list = file.extension().is_some_and(|e| e == "conflist");
        let config = if is_list {
            Self::from_conflist_bytes(&bytes, &file)?
        } else {
            Self::from_conf_bytes(&bytes, &file)?
        };
        Ok(Some(config))
    }

    /// Parses a configuration list (`.conflist`); `file` is only used in errors.
    pub fn from_conflist_bytes(bytes: &[u8], file: &Path) -> Result<NetworkConfig> {
        let invalid = |msg: String| Error::InvalidConfig {
            file: file.to_path_buf(),
            msg,
        };
        let top = parse_object(bytes).map_err(invalid)?;
        let name = name_field(&top).map_err(invalid)?;
        let cni_version = version_field(&top, "").map_err(invalid)?;
        let plugins = match top.get("plugins") {
            None => return Err(invalid("missing field `plugins`".into())),
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(invalid("field `plugins`: the list is empty".into()))
            }
            Some(Value::Array(list)) => list,
            Some(_) => return Err(invalid("field `plugins`: not a list".into())),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let prefix = format!("plugins[{i}].");
                match v {
                    Value::Object(raw) => plugin_config(raw.clone(), &prefix),
                    _ => Err(format!("field `plugins[{i}]`: not an object")),
                }
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(invalid)?;
        Ok(NetworkConfig {
            name,
            cni_version,
            plugins,
            source: file.to_path_buf(),
        })
    }

    /// Parses a single plugin's configuration (`.conf`/`.json`) and wraps it into a list.
    pub fn from_conf_bytes(bytes: &[u8], file: &Path) -> Result<NetworkConfig> {
        let invalid = |msg: String| Error::InvalidConfig {
            file: file.to_path_buf(),
            msg,
        };
        let top = parse_object(bytes).map_err(invalid)?;
        if top.contains_key("plugins") {
            return Err(invalid(
                "field `plugins`: a configuration list must be in a .conflist file".into(),
            ));
        }
        let name = name_field(&top).map_err(invalid)?;
        let cni_version = version_field(&top, "").map_err(invalid)?;
        let plugin = plugin_config(top, "").map_err(invalid)?;
        Ok(NetworkConfig {
            name,
            cni_version,
            plugins: vec![plugin],
            source: file.to_path_buf(),
        })
    }

    /// The list as JSON, in `.conflist` form (what the result cache keeps for DEL).
    pub fn to_conflist_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("name".into(), Value::String(self.name.clone()));
        top.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        top.insert(
            "plugins".into(),
            Value::Array(
                self.plugins
                    .iter()
                    .map(|p| Value::Object(p.raw.clone()))
                    .collect(),
            ),
        );
        Value::Object(top)
    }

    /// Whether `prevResult` is passed to DEL (CNI 0.4.0 and later).
    pub(crate) fn del_gets_prev_result(&self) -> bool {
        version_at_least(&self.cni_version, (0, 4, 0))
    }
}

fn first_config_file(conf_dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadConfDir {
                dir: conf_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadConfDir {
            dir: conf_dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e));
        // Follows symlinks, as libcni does; directories named `x.conf` are not configs.
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files.into_iter().next())
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, prefix: &str) -> Result<String, String> {
    match obj.get(key) {
        None => Err(format!("missing field `{prefix}{key}`")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("field `{prefix}{key}`: empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{prefix}{key}`: not a string")),
    }
}

/// The network name: also the result cache's sub-directory, so a plain file name.
fn name_field(obj: &Map<String, Value>) -> Result<String, String> {
    let name = string_field(obj, "name", "")?;
    if name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "field `name`: {name:?} must not contain '/' or be . or .."
        ));
    }
    Ok(name)
}

fn version_field(obj: &Map<String, Value>, prefix: &str) -> Result<String, String> {
    let version = string_field(obj, "cniVersion", prefix)?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(format!(
            "field `{prefix}cniVersion`: unsupported version {version:?} (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    Ok(version)
}

fn plugin_config(raw: Map<String, Value>, prefix: &str) -> Result<PluginConfig, String> {
    let plugin_type = string_field(&raw, "type", prefix)?;
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(format!(
            "field `{prefix}type`: {plugin_type:?} is not a plugin binary name"
        ));
    }
    if let Some(caps) = raw.get("capabilities") {
        if !caps.is_object() {
            return Err(format!("field `{prefix}capabilities`: not an object"));
        }
    }
    Ok(PluginConfig { plugin_type, raw })
}

fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_fields_and_errors() {
        let f = Path::new("/etc/cni/net.d/10-x.conflist");
        let ok = br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        let c = NetworkConfig::from_conflist_bytes(ok, f).unwrap();
        assert_eq!(c.name, "n");
        assert_eq!(c.plugins.len(), 2);
        assert!(c.plugins[1].has_capability("portMappings"));
        assert!(!c.plugins[0].has_capability("portMappings"));
        assert!(c.del_gets_prev_result());

        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"name":"../x","cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "field `name`",
            ),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "missing field `name`",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"a"}]}"#,
                "missing field `cniVersion`",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0"}"#,
                "missing field `plugins`",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"a"},{}]}"#,
                "`plugins[1].type`",
            ),
            (
                br#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"a"}]}"#,
                "unsupported version",
            ),
            (b"{not json", "invalid JSON"),
        ];
        for (bytes, want) in cases {
            let err = NetworkConfig::from_conflist_bytes(bytes, f)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(err.contains("10-x.conflist"), "{err:?} lacks the file");
        }
    }

    #[test]
    fn single_conf_is_wrapped() {
        let f = Path::new("x.conf");
        let c = NetworkConfig::from_conf_bytes(
            br#"{"name":"n","cniVersion":"0.3.1","type":"bridge","bridge":"b0"}"#,
            f,
        )
        .unwrap();
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugins[0].plugin_type, "bridge");
        assert!(!c.del_gets_prev_result());
        let list = c.to_conflist_json();
        assert_eq!(list["plugins"][0]["bridge"], "b0");
    }

    #[test]
    fn lexically_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            NetworkConfig::load(&dir.path().join("missing")).unwrap(),
            None
        );
        assert_eq!(NetworkConfig::load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("00-readme.txt"), "not a config").unwrap();
        std::fs::create_dir(dir.path().join("01-dir.conf")).unwrap();
        assert_eq!(NetworkConfig::load(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.json"),
            r#"{"name":"a","cniVersion":"1.0.0","type":"ptp"}"#,
        )
        .unwrap();
        let c = NetworkConfig::load(dir.path()).unwrap().unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.source, dir.path().join("10-a.json"));
    }
}
