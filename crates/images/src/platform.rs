//! Platforms and the choice of one manifest from an image index (or docker manifest list).

use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex};
use serde::{Deserialize, Serialize};

/// An OS/architecture pair in Go's names (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Maps a Rust target architecture (`std::env::consts::ARCH`) to its GOARCH name.
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform this process runs on (`linux/amd64` on x86_64).
    pub fn host() -> Self {
        let arch = goarch(std::env::consts::ARCH);
        let variant = match arch {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        };
        Self::new(std::env::consts::OS, arch, variant)
    }

    /// How well a candidate platform fits this (wanted) platform: `None` if it cannot run here,
    /// higher is better.
    pub fn score(&self, candidate: &Platform) -> Option<u8> {
        if self.os != candidate.os
            || normalize_arch(&self.architecture) != normalize_arch(&candidate.architecture)
        {
            return None;
        }
        let implied = |p: &Platform| match (normalize_arch(&p.architecture), &p.variant) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.clone(),
        };
        match (implied(self), implied(candidate)) {
            (a, b) if a == b => Some(3),
            (_, None) => Some(2),
            (None, Some(_)) => Some(1),
            (Some(_), Some(_)) => None,
        }
    }

    pub(crate) fn from_oci(p: &oci_spec::image::Platform) -> Self {
        Self {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The descriptor of the manifest of `index` that best fits `platform` (the first of the best).
/// Descriptors without a platform are skipped (attestations, artifacts).
pub fn select_manifest<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(u8, &Descriptor)> = None;
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        if let Some(s) = platform.score(&Platform::from_oci(p)) {
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, d));
            }
        }
    }
    best.map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifest_list_resolves_per_platform() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [
                {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                 "digest": d('a'), "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                 "digest": d('b'), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                 "digest": d('c'), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": d('d'), "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
            ],
        });
        let index = ImageIndex::from_reader(list.to_string().as_bytes()).unwrap();
        let pick = |p: Platform| select_manifest(&index, &p).map(|m| m.digest().to_string());
        assert_eq!(pick(Platform::new("linux", "amd64", None)), Some(d('c')));
        assert_eq!(pick(Platform::new("linux", "arm64", None)), Some(d('b')));
        assert_eq!(
            pick(Platform::new("linux", "arm64", Some("v8"))),
            Some(d('b'))
        );
        assert_eq!(
            pick(Platform::new("linux", "arm", Some("v7"))),
            Some(d('a'))
        );
        assert_eq!(pick(Platform::new("linux", "arm", Some("v6"))), None);
        assert_eq!(pick(Platform::new("linux", "s390x", None)), None);
        assert_eq!(pick(Platform::new("windows", "amd64", None)), None);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(Platform::host(), Platform::new("linux", "amd64", None));
            assert_eq!(pick(Platform::host()), Some(d('c')));
        }
        assert_eq!(goarch("aarch64"), "arm64");
        assert_eq!(
            Platform::new("linux", "arm64", Some("v8")).to_string(),
            "linux/arm64/v8"
        );
    }
}
