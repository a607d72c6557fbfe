//! Trust of the manifest directory and its files: a static pod runs as the node agent decides,
//! often privileged, so whoever can write a manifest owns the node. kubelet reads whatever is
//! there; staticlet warns (default) or refuses (`--manifest-permissions=refuse`) a manifest
//! that someone other than root could have written: the file or its directory owned by a
//! non-root user, writable by a non-root group or by everyone, or a symlink leading out of the
//! directory.
//!
//! The checks are pure functions of owner, group and mode ([`writable_by_others`]) plus the
//! file system reads in [`problems`]. A refused manifest is handled like an invalid one: the
//! error is reported, and a pod it ran keeps running at its last good version.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `--manifest-permissions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Log each problem once; apply the manifest.
    #[default]
    Warn,
    /// Do not apply the manifest; report why.
    Refuse,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "warn" => Ok(Policy::Warn),
            "refuse" => Ok(Policy::Refuse),
            _ => Err(format!("{s:?}: expected warn or refuse")),
        }
    }
}

/// Who besides root may write an object with this owner, group and mode (a non-root owner can
/// always make it writable, whatever its mode).
pub fn writable_by_others(uid: u32, gid: u32, mode: u32) -> Vec<String> {
    let mut out = Vec::new();
    if uid != 0 {
        out.push(format!("owned by uid {uid}, not root"));
    }
    if gid != 0 && mode & 0o020 != 0 {
        out.push(format!(
            "writable by group {gid} (mode {:04o})",
            mode & 0o7777
        ));
    }
    if mode & 0o002 != 0 {
        out.push(format!("writable by everyone (mode {:04o})", mode & 0o7777));
    }
    out
}

/// What is wrong with trusting `file`, read from `dir` (the manifest directory, or the
/// file's own directory when the manifest path is one file): each problem names the object.
pub fn problems(dir: &Path, file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(dir) {
        for p in writable_by_others(m.uid(), m.gid(), m.mode()) {
            out.push(format!("directory {}: {p}", dir.display()));
        }
    }
    if let Ok(m) = std::fs::metadata(file) {
        for p in writable_by_others(m.uid(), m.gid(), m.mode()) {
            out.push(format!("{}: {p}", file.display()));
        }
    }
    let is_link = std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        if let (Ok(target), Ok(base)) = (std::fs::canonicalize(file), std::fs::canonicalize(dir)) {
            if !target.starts_with(&base) {
                out.push(format!(
                    "{}: a symlink to {}, outside {}",
                    file.display(),
                    target.display(),
                    dir.display()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_may_write() {
        let cases: &[(u32, u32, u32, &[&str])] = &[
            (0, 0, 0o100644, &[]),
            (0, 0, 0o100664, &[]),
            (0, 0, 0o040755, &[]),
            (1000, 0, 0o100644, &["owned by uid 1000, not root"]),
            (0, 1000, 0o100664, &["writable by group 1000 (mode 0664)"]),
            (0, 1000, 0o100644, &[]),
            (0, 0, 0o100666, &["writable by everyone (mode 0666)"]),
            (0, 0, 0o041777, &["writable by everyone (mode 1777)"]),
        ];
        for (uid, gid, mode, want) in cases {
            assert_eq!(
                writable_by_others(*uid, *gid, *mode),
                want.to_vec(),
                "uid {uid} gid {gid} mode {mode:o}"
            );
        }
    }

    #[test]
    fn files_directories_and_symlinks_out() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("manifests");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = dir.join("ok.yaml");
        std::fs::write(&ok, "x").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The test runs as root in CI; as another user, ownership is reported too.
        let as_root = std::fs::metadata(&ok).unwrap().uid() == 0;
        if as_root {
            assert_eq!(problems(&dir, &ok), Vec::<String>::new());
        }
        let open = dir.join("open.yaml");
        std::fs::write(&open, "x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(problems(&dir, &open)
            .iter()
            .any(|p| p.contains("open.yaml: writable by everyone")));
        let outside = root.path().join("elsewhere.yaml");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("link.yaml");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(
            problems(&dir, &link)
                .iter()
                .any(|p| p.contains("a symlink to") && p.contains("elsewhere.yaml")),
            "{:?}",
            problems(&dir, &link)
        );
        let inside = dir.join("inside.yaml");
        std::os::unix::fs::symlink(&ok, &inside).unwrap();
        if as_root {
            assert_eq!(problems(&dir, &inside), Vec::<String>::new());
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(problems(&dir, &ok)
            .iter()
            .any(|p| p.starts_with("directory ") && p.contains("writable by everyone")));
    }
}
