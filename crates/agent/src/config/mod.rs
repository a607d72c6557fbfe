//! Pod sources and their merge (≈ kubelet's `pkg/kubelet/config`).
//!
//! Each source (a manifest directory or file, a manifest URL) runs as its own task and sends
//! **full snapshots** ([`SourceSnapshot`]) of what it wants running, never deltas. The
//! [`merge::Merger`] is the single owner of the desired pod set: it diffs each snapshot against
//! the previous one into add / update / remove changes, resolves names claimed by two sources,
//! stamps `kubernetes.io/config.seen`, and publishes the result on a `watch` channel.
//!
//! What sources own: reading, last-known-good (a manifest that stops parsing keeps its pod at the
//! last good version, beyond kubelet), and the per-manifest records served at `/manifests`.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use staticlet_manifest::StaticPod;

pub mod file;
pub mod http;
pub mod lastgood;
pub mod merge;
pub mod trust;

/// Which source a snapshot comes from. Ordered: on a name clash the earlier source wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Http,
}

impl SourceKind {
    /// The kubelet name of the source (`file`, `http`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Http => "http",
        }
    }
}

/// The state of one manifest (a file, or the URL), as served at `/manifests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    pub source: SourceKind,
    /// The file path or the URL.
    pub origin: String,
    /// `namespace/name` of the pods this manifest currently runs (at its last good version).
    pub pods: Vec<String>,
    /// UIDs (config hashes) of those pods.
    pub hashes: Vec<String>,
    /// Why the current content is not applied, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the version now applied was first read.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub last_applied: Option<SystemTime>,
    /// True when the pods run from a previous good version (the current content is bad, or the
    /// URL is unreachable and the pods come from the on-disk cache).
    pub stale: bool,
    /// The SHA-256 of the file's current content and when it was first read (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<HashTime>,
    /// The last version of the file handed to the pod manager, and when (files only; set by
    /// [`crate::rollout::controller`], as are the fields below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<HashTime>,
    /// The last version of the file whose pod was Ready, and when it first was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<HashTime>,
    /// The content hash of the version running now (after a rollback: the last Ready one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// The state of the pod's health-gated rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// A manifest content hash and a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HashTime {
    pub hash: String,
    #[serde(with = "rfc3339_ser")]
    pub time: SystemTime,
}

/// A rollout as `/manifests` shows it (see [`crate::rollout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `steady`, `progressing` or `rolledBack`.
    pub state: &'static str,
    /// While progressing: when the version must be Ready.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub deadline: Option<SystemTime>,
    /// While rolled back: the version that failed (not retried until the file changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    /// While rolled back: the version running instead (none when it no longer validates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    /// While rolled back: `rolled back from X to Y: reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One full snapshot of a source.
#[derive(Debug, Clone, Default)]
pub struct SourceSnapshot {
    /// Every pod the source wants running now.
    pub pods: Vec<Arc<StaticPod>>,
    /// Every manifest the source knows about, valid or not.
    pub manifests: Vec<ManifestRecord>,
}

/// A snapshot tagged with its source.
#[derive(Debug, Clone)]
pub struct SourceUpdate {
    pub kind: SourceKind,
    pub snapshot: SourceSnapshot,
}

/// RFC 3339 timestamps with second precision, as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

mod rfc3339_ser {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }
}

mod opt_rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
