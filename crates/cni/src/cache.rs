//! The ADD result cache: `<cache_dir>/<network>/<container_id>`, one JSON file per attachment.
//!
//! Like libcni's `/var/lib/cni/results`, it keeps what DEL needs after an agent restart: the
//! result (DEL's `prevResult` and the pod IP) and the configuration the attachment was made with
//! (so a pod is torn down by the chain that set it up, even if the conf dir changed since).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The `kind` of a cache file.
const KIND: &str = "staticletCniCacheV1";

/// What is kept per attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    pub netns: String,
    /// The configuration list, in `.conflist` form.
    pub config: Value,
    /// The final ADD result.
    pub result: Value,
}

impl CacheEntry {
    pub fn new(
        container_id: &str,
        if_name: &str,
        network_name: &str,
        netns: &str,
        config: Value,
        result: Value,
    ) -> CacheEntry {
        CacheEntry {
            kind: KIND.to_string(),
            container_id: container_id.to_string(),
            if_name: if_name.to_string(),
            network_name: network_name.to_string(),
            netns: netns.to_string(),
            config,
            result,
        }
    }
}

pub(crate) fn entry_path(cache_dir: &Path, network: &str, container_id: &str) -> PathBuf {
    cache_dir.join(network).join(container_id)
}

/// Writes the entry atomically (temporary file in the same directory, fsync, rename, fsync dir).
pub(crate) fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<()> {
    let path = entry_path(cache_dir, &entry.network_name, &entry.container_id);
    let dir = path.parent().unwrap_or(cache_dir).to_path_buf();
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Cache { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
    let bytes = serde_json::to_vec_pretty(entry).map_err(|e| Error::Cache {
        path: path.clone(),
        source: e.into(),
    })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(cache_err(&dir))?;
    tmp.write_all(&bytes).map_err(cache_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(cache_err(tmp.path()))?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .map_err(cache_err(&path))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(cache_err(&dir))?;
    Ok(())
}

/// Finds the entry of `container_id`: under `preferred` (the current network) first, then under
/// any other network directory.
pub(crate) fn find(
    cache_dir: &Path,
    preferred: Option<&str>,
    container_id: &str,
) -> Result<Option<(PathBuf, CacheEntry)>> {
    if let Some(network) = preferred {
        let path = entry_path(cache_dir, network, container_id);
        if let Some(entry) = read(&path)? {
            return Ok(Some((path, entry)));
        }
    }
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Cache {
                path: cache_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join(container_id);
        if let Some(entry) = read(&path)? {
            return Ok(Some((path, entry)));
        }
    }
    Ok(None)
}

fn read(path: &Path) -> Result<Option<CacheEntry>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Cache {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidCache {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    if entry.kind != KIND {
        return Err(Error::InvalidCache {
            path: path.to_path_buf(),
            msg: format!("unknown kind {:?}", entry.kind),
        });
    }
    Ok(Some(entry))
}

/// Removes the entry; a missing file is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Cache {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_find_remove() {
        let dir = tempfile::tempdir().unwrap();
        let e = CacheEntry::new(
            "c1",
            "eth0",
            "net",
            "/run/netns/x",
            json!({}),
            json!({"ips": []}),
        );
        write(dir.path(), &e).unwrap();
        write(dir.path(), &e).unwrap();
        let (path, got) = find(dir.path(), Some("other"), "c1").unwrap().unwrap();
        assert_eq!(path, dir.path().join("net/c1"));
        assert_eq!(got.result, json!({"ips": []}));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("net")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(find(dir.path(), Some("net"), "c1").unwrap().is_none());

        std::fs::write(dir.path().join("net/bad"), "{}").unwrap();
        let err = find(dir.path(), None, "bad").unwrap_err().to_string();
        assert!(err.contains("net/bad"), "{err}");
    }
}
