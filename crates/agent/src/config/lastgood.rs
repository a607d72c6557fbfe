//! The on-disk record of each manifest's last good content, under `<root-dir>/lastgood`.
//!
//! Beyond kubelet: with it, an agent that restarts while a manifest file is broken, or that boots
//! while its manifest URL is unreachable, still runs the pods of the last version it accepted,
//! instead of killing them as orphans. Entries are written atomically (temp file + rename) and
//! only when the accepted version changes, so this is off the hot path.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One remembered manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The file path or URL this content came from.
    pub origin: String,
    /// The manifest bytes (they parsed, so they are UTF-8).
    pub content: String,
    /// The URL's `ETag`, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The URL's `Last-Modified`, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A directory of [`Entry`] files, one per origin.
#[derive(Debug, Clone)]
pub struct LastGood {
    dir: PathBuf,
}

impl LastGood {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path_for(&self, origin: &str) -> PathBuf {
        let digest = Sha256::digest(origin.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The entry remembered for `origin`, if any (a corrupt entry counts as none).
    pub fn load(&self, origin: &str) -> Option<Entry> {
        let data = std::fs::read(self.path_for(origin)).ok()?;
        let entry: Entry = serde_json::from_slice(&data).ok()?;
        (entry.origin == origin).then_some(entry)
    }

    /// Remembers `entry` (atomically replacing the previous one).
    pub fn store(&self, entry: &Entry) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path_for(&entry.origin);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(entry).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets `origin`. Missing entries are fine.
    pub fn remove(&self, origin: &str) {
        let _ = std::fs::remove_file(self.path_for(origin));
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let lg = LastGood::new(dir.path().join("lg"));
        assert_eq!(lg.load("/m/a.yaml"), None);
        let e = Entry {
            origin: "/m/a.yaml".into(),
            content: "x".into(),
            etag: Some("\"1\"".into()),
            last_modified: None,
        };
        lg.store(&e).unwrap();
        assert_eq!(lg.load("/m/a.yaml"), Some(e));
        assert_eq!(lg.load("/m/b.yaml"), None);
        lg.remove("/m/a.yaml");
        assert_eq!(lg.load("/m/a.yaml"), None);
    }
}
