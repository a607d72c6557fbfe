//! Mounts of the embedded runtime: container roots (overlayfs over the image's unpacked layers)
//! and pinned namespace files. Every unmount is idempotent: a path that is not mounted (or does
//! not exist) is success, so a cleanup interrupted by a crash can simply be run again.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let path = std::fs::canonicalize(path)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(unescape)
            .is_some_and(|p| Path::new(&p) == path)
    }))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Makes `dir` a private mount (a bind mount of itself if it is not a mount point yet), so
/// namespace bind mounts below it never propagate to other mount namespaces (as `ip netns` does).
pub fn make_private_mount(dir: &Path) -> io::Result<()> {
    if !is_mountpoint(dir)? {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

/// Mounts an overlayfs at `target` with `layers` (lowest first) as lower directories.
pub fn mount_overlay(
    layers: &[PathBuf],
    target: &Path,
    upper: &Path,
    work: &Path,
) -> io::Result<()> {
    if layers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "image has no layers",
        ));
    }
    for d in [target, upper, work] {
        std::fs::create_dir_all(d)?;
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if opts.len() > 4000 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many layers for one overlay mount",
        ));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )?;
    Ok(())
}

/// Unmounts `path` (lazily) if it is mounted. Idempotent.
pub fn unmount(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue, // stacked mounts: unmount until nothing is left
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Unmounts every pinned namespace file in `dir`. Idempotent.
pub fn unmount_namespaces(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        unmount(&entry.path())?;
    }
    Ok(())
}
