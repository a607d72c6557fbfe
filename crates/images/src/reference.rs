//! Image references: parsing and normalisation to the fully qualified form the index is keyed by.
//!
//! Rules (docker's): `busybox` -> `docker.io/library/busybox:latest`; `quay.io/x/y` ->
//! `quay.io/x/y:latest`; `localhost:5000/x` -> `localhost:5000/x:latest`; a first path component
//! is a registry host when it contains `.` or `:` or is `localhost`. A reference with a digest
//! (`name@sha256:...`) is keyed by `repository@digest`; a tag given along with a digest is
//! dropped, as the digest alone decides the content.

use std::fmt;

use crate::digest::parse_sha256;
use crate::error::{Error, Result};

/// The registry host of references without one.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub path: String,
    /// Tag, `None` for digest references.
    pub tag: Option<String>,
    /// `sha256:<hex>` for digest references.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                parse_sha256(d).map_err(|_| bad("digest is not sha256:<64 hex>"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:_[]".contains(&b))
        {
            return Err(bad("invalid registry host"));
        }
        for comp in path.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && comp.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && comp.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                return Err(bad(
                    "repository path must be lowercase alphanumerics and separators",
                ));
            }
        }
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// This repository with another digest (`repo@sha256:...`).
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.repository(), digest)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "{}/{}@{}", self.domain, self.path, d),
            (None, Some(t)) => write!(f, "{}/{}:{}", self.domain, self.path, t),
            (None, None) => write!(f, "{}/{}", self.domain, self.path),
        }
    }
}

/// Normalises a reference string (`busybox` -> `docker.io/library/busybox:latest`).
pub fn normalize(reference: &str) -> Result<String> {
    Reference::parse(reference).map(|r| r.to_string())
}

/// If `s` names an image by id (`sha256:<hex>` or bare 64 hex), the `sha256:<hex>` id.
pub(crate) fn as_image_id(s: &str) -> Option<String> {
    if parse_sha256(s).is_ok() {
        Some(s.to_string())
    } else if crate::digest::is_sha256_hex(s) {
        Some(format!("sha256:{s}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_string()),
            (
                "library/busybox",
                "docker.io/library/busybox:latest".to_string(),
            ),
            (
                "index.docker.io/foo/bar:x",
                "docker.io/foo/bar:x".to_string(),
            ),
            ("localhost:5000/x", "localhost:5000/x:latest".to_string()),
            ("localhost/x:1", "localhost/x:1".to_string()),
            (
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10".to_string(),
            ),
            (
                &*format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                &*format!("busybox:1@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:12",
            "a//b",
            "x:-y",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(as_image_id(&d), Some(d.clone()));
        assert_eq!(as_image_id(&"a".repeat(64)), Some(d));
        assert_eq!(as_image_id("busybox"), None);
    }
}
