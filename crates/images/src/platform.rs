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
