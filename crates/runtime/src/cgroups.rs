//! Finding cgroup hierarchies and removing cgroup directories, for whoever owns a cgroup's
//! lifetime: the agent owns each pod's cgroup (it chose the pod's `cgroup_parent`), the embedded
//! runtime owns its containers' cgroups under it.
//!
//! Hierarchies come from `/proc/self/mountinfo` (every mount of type `cgroup` or `cgroup2`: one
//! per v1 controller, the v2 tree, both on a hybrid host), never from hard-coded paths. Removal is
//! `rmdir` only: a cgroup that still has processes or child cgroups refuses it (`EBUSY`), which
//! is what keeps a live cgroup safe. [`kill_and_remove_tree`] is for an owner that knows nothing
//! may run in a cgroup any more (a pod's, once all of its sandboxes are gone): it kills what is
//! left, then removes the cgroups below, deepest first, still with `rmdir` only.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the process's mount table is read from by default.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup`, ...).
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless a sub-tree is bind-mounted or a cgroup
    /// namespace hides the rest).
    pub root: PathBuf,
    /// `true` for the unified (v2) hierarchy.
    pub v2: bool,
    /// The mount's super options: a v1 hierarchy's controllers (`cpu`, `cpuacct`,
    /// `name=systemd`, ...) among flags such as `rw`.
    pub options: Vec<String>,
}

impl Hierarchy {
    /// The directory of the cgroup `path` (absolute, as in `/proc/<pid>/cgroup` and OCI's
    /// `cgroupsPath`) in this hierarchy; `None` when this mount does not show it (its root is
    /// elsewhere) or `path` is not a plain absolute path below the root (`..`, relative), and
    /// for the hierarchy's root itself, which is never ours to remove.
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = self.relative(path)?;
        (!rel.as_os_str().is_empty()).then(|| self.mount_point.join(rel))
    }

    /// Like [`dir_of`](Self::dir_of), the hierarchy's root (`/`) included.
    pub fn cgroup_dir(&self, path: &str) -> Option<PathBuf> {
        let rel = self.relative(path)?;
        Some(self.mount_point.join(rel))
    }

    /// Whether this is the v1 hierarchy of these controllers (a `/proc/<pid>/cgroup` line's
    /// second field, e.g. `cpu,cpuacct` or `name=systemd`).
    pub fn has_controllers(&self, controllers: &str) -> bool {
        !self.v2
            && !controllers.is_empty()
            && controllers
                .split(',')
                .all(|c| self.options.iter().any(|o| o == c))
    }

    fn relative<'a>(&self, path: &'a str) -> Option<&'a Path> {
        let rest = path.strip_prefix('/')?;
        if !rest.is_empty()
            && rest
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return None;
        }
        Path::new(path).strip_prefix(&self.root).ok()
    }
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup hierarchies in a mountinfo text (`/proc/<pid>/mountinfo`, proc(5)): every mount
/// of type `cgroup` or `cgroup2`, once per hierarchy and root (a hierarchy mounted twice is
/// listed once). Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out: Vec<(String, Hierarchy)> = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let options = right
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        let v2 = match fstype {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        if fields.len() < 5 {
            continue;
        }
        let dev = fields[2].to_string();
        let h = Hierarchy {
            mount_point: PathBuf::from(unescape(fields[4])),
            root: PathBuf::from(unescape(fields[3])),
            v2,
            options,
        };
        if !out.iter().any(|(d, o)| *d == dev && o.root == h.root) {
            out.push((dev, h));
        }
    }
    out.into_iter().map(|(_, h)| h).collect()
}

/// The cgroup hierarchies mounted in this process's mount namespace, from `mountinfo` (normally
/// [`MOUNTINFO`]), read once per file and process: they do not change while the agent runs, and
/// reading `/proc/self/mountinfo` costs a lot on a node with many container mounts (and holds the
/// kernel's namespace lock every mount and unmount needs). Nothing is kept while none is mounted.
pub fn hierarchies(mountinfo: &Path) -> io::Result<Vec<Hierarchy>> {
    type Cache = std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Vec<Hierarchy>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(mountinfo)
    {
        return Ok(h.clone());
    }
    let h = read_hierarchies(mountinfo)?;
    if !h.is_empty() {
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mountinfo.to_path_buf(), h.clone());
    }
    Ok(h)
}

fn read_hierarchies(mountinfo: &Path) -> io::Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", mountinfo.display())))?;
    Ok(parse_mountinfo(&text))
}

/// How often a busy cgroup's `rmdir` is tried, and the pause before the first retry (doubling):
/// a cgroup whose last process just exited stays busy for a moment (it is still being released).
const RMDIR_ATTEMPTS: u32 = 5;
const RMDIR_FIRST_PAUSE: Duration = Duration::from_millis(20);

/// Removes the cgroup `path` (absolute, e.g. `/staticlet/pod<uid>`) in every hierarchy that
/// shows it, with `rmdir` only. Idempotent: a directory already gone is success. A busy one
/// (`EBUSY`: processes or child cgroups left) is retried a few times over ~300 ms (blocking the
/// thread), then reported. Returns the directories that could not be removed, with why.
pub fn remove(hierarchies: &[Hierarchy], path: &str) -> Vec<(PathBuf, io::Error)> {
    let mut failed = Vec::new();
    for dir in hierarchies.iter().filter_map(|h| h.dir_of(path)) {
        if let Err(e) = rmdir_retrying(&dir) {
            failed.push((dir, e));
        }
    }
    failed
}

fn rmdir_retrying(dir: &Path) -> io::Result<()> {
    let mut pause = RMDIR_FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && attempt < RMDIR_ATTEMPTS => {
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pids listed in the `cgroup.procs` of cgroup `path` and of every cgroup below it, in every
/// hierarchy that shows it (sorted, each once).
pub fn pids_below(hierarchies: &[Hierarchy], path: &str) -> Vec<i32> {
    fn walk(dir: &Path, pids: &mut Vec<i32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), pids);
            }
        }
    }
    let mut pids = Vec::new();
    for dir in hierarchies.iter().filter_map(|h| h.dir_of(path)) {
        walk(&dir, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// How often [`kill_and_remove_tree`] looks for processes left (a process can fork while
/// being killed), and the pause after each round of kills.
const KILL_ROUNDS: u32 = 5;
const KILL_PAUSE: Duration = Duration::from_millis(50);

/// Kills (SIGKILL) every process in cgroup `path` and below, then removes the cgroups below it
/// (deepest first) and `path` itself in every hierarchy, `rmdir` only — as kubelet's pod
/// container manager does when a pod is gone (`Destroy`: `tryKillingCgroupProcesses`, then the
/// cgroup manager's removal of the whole sub-tree). Only for a cgroup its owner knows nothing
/// may run in any more: a pod's, once all of its sandboxes are gone, where whatever still runs
/// is a leak (a container a runtime lost track of when it crashed, a container cgroup a runtime
/// left behind). Blocking. Returns how many processes were killed and the directories that
/// could not be removed, with why.
pub fn kill_and_remove_tree(
    hierarchies: &[Hierarchy],
    path: &str,
) -> (usize, Vec<(PathBuf, io::Error)>) {
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let pids = pids_below(hierarchies, path);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    killed += 1;
                }
            }
        }
        std::thread::sleep(KILL_PAUSE);
    }
    fn remove_below(dir: &Path, failed: &mut Vec<(PathBuf, io::Error)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let child = e.path();
                remove_below(&child, failed);
                if let Err(e) = rmdir_retrying(&child) {
                    failed.push((child, e));
                }
            }
        }
    }
    let mut failed = Vec::new();
    for dir in hierarchies.iter().filter_map(|h| h.dir_of(path)) {
        remove_below(&dir, &mut failed);
        if let Err(e) = rmdir_retrying(&dir) {
            failed.push((dir, e));
        }
    }
    (killed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host (v1 controllers + v2 `unified`), as on this project's CI machine, with the
    /// noise of a real mount table around it.
    const HYBRID: &str = "\
23 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime master:7 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 23 0:32 / /mnt/again rw,relatime - cgroup cgroup rw,memory
100 23 0:29 /kubepods /mnt/sub\\040tree rw,relatime - cgroup cgroup rw,cpu
garbage line
";

    #[test]
    fn mountinfo_lists_each_cgroup_hierarchy_once() {
        let h = parse_mountinfo(HYBRID);
        let got: Vec<(&str, &str, bool)> = h
            .iter()
            .map(|h| {
                (
                    h.mount_point.to_str().unwrap(),
                    h.root.to_str().unwrap(),
                    h.v2,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/sys/fs/cgroup/cpu", "/", false),
                ("/sys/fs/cgroup/memory", "/", false),
                ("/sys/fs/cgroup/systemd", "/", false),
                ("/sys/fs/cgroup/unified", "/", true),
                // The cpu hierarchy again, but showing another root: a second view.
                ("/mnt/sub tree", "/kubepods", false),
            ]
        );
        // A pure v2 host, and a host without cgroups.
        let v2 =
            parse_mountinfo("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(
            v2,
            [Hierarchy {
                mount_point: "/sys/fs/cgroup".into(),
                root: "/".into(),
                v2: true,
                options: vec!["rw".into(), "nsdelegate".into()],
            }]
        );
        // v1 hierarchies by their controllers.
        let by = |c: &str| {
            h.iter()
                .find(|h| h.has_controllers(c))
                .map(|h| h.mount_point.clone())
        };
        assert_eq!(by("cpu"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(by("name=systemd"), Some("/sys/fs/cgroup/systemd".into()));
        assert_eq!(by("cpu,cpuacct"), None);
        assert_eq!(by(""), None);
        assert!(parse_mountinfo("23 1 0:21 / / rw - ext4 /dev/sda1 rw\n").is_empty());
    }

    #[test]
    fn escapes_are_undone() {
        for (field, want) in [
            ("/plain", "/plain"),
            ("/a\\040b", "/a b"),
            ("/tab\\011x", "/tab\tx"),
            ("/back\\134slash", "/back\\slash"),
            ("/not\\09escape", "/not\\09escape"),
            ("/end\\04", "/end\\04"),
        ] {
            assert_eq!(unescape(field), want, "{field}");
        }
    }

    #[test]
    fn a_cgroup_path_maps_into_the_hierarchies_that_show_it() {
        let root = |r: &str| Hierarchy {
            mount_point: "/sys/fs/cgroup/cpu".into(),
            root: r.into(),
            v2: false,
            options: vec![],
        };
        for (h_root, path, want) in [
            (
                "/",
                "/staticlet/podu1",
                Some("/sys/fs/cgroup/cpu/staticlet/podu1"),
            ),
            (
                "/",
                "/staticlet/podu1/c1",
                Some("/sys/fs/cgroup/cpu/staticlet/podu1/c1"),
            ),
            (
                "/staticlet",
                "/staticlet/podu1",
                Some("/sys/fs/cgroup/cpu/podu1"),
            ),
            // Not shown by a mount of another sub-tree.
            ("/kubepods", "/staticlet/podu1", None),
            ("/staticlet/podu1", "/staticlet/podu1", None),
            // Never a hierarchy's root, never a relative or `..` path.
            ("/", "/", None),
            ("/", "staticlet/podu1", None),
            ("/", "/staticlet/../podu1", None),
            ("/", "/staticlet/./podu1", None),
            ("/", "/staticlet//podu1", None),
            ("/", "/staticlet/podu1/", None),
        ] {
            assert_eq!(
                root(h_root).dir_of(path),
                want.map(PathBuf::from),
                "root {h_root}, path {path}"
            );
        }
        // cgroup_dir shows the roots too (a process may live there), nothing else more.
        for (h_root, path, want) in [
            ("/", "/", Some("/sys/fs/cgroup/cpu")),
            (
                "/staticlet/podu1",
                "/staticlet/podu1",
                Some("/sys/fs/cgroup/cpu"),
            ),
            ("/", "/a", Some("/sys/fs/cgroup/cpu/a")),
            ("/", "/a/../b", None),
            ("/kubepods", "/staticlet", None),
        ] {
            assert_eq!(
                root(h_root).cgroup_dir(path).as_deref(),
                want.map(Path::new),
                "root {h_root}, path {path}"
            );
        }
    }

    #[test]
    fn removal_is_rmdir_only_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let h = [
            Hierarchy {
                mount_point: d.join("cpu"),
                root: "/".into(),
                v2: false,
                options: vec![],
            },
            Hierarchy {
                mount_point: d.join("unified"),
                root: "/".into(),
                v2: true,
                options: vec![],
            },
        ];
        std::fs::create_dir_all(d.join("cpu/staticlet/podu1")).unwrap();
        // In the other hierarchy the pod's cgroup still holds something: left alone, reported.
        std::fs::create_dir_all(d.join("unified/staticlet/podu1/left")).unwrap();
        let failed = remove(&h, "/staticlet/podu1");
        assert!(!d.join("cpu/staticlet/podu1").exists());
        assert!(d.join("unified/staticlet/podu1/left").exists());
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, d.join("unified/staticlet/podu1"));
        // Once empty it goes; the parent stays; gone is success.
        std::fs::remove_dir(d.join("unified/staticlet/podu1/left")).unwrap();
        assert!(remove(&h, "/staticlet/podu1").is_empty());
        assert!(remove(&h, "/staticlet/podu1").is_empty());
        assert!(d.join("unified/staticlet").is_dir());
        assert!(d.join("cpu/staticlet").is_dir());
    }

    /// What is left in a gone pod's cgroup is killed and the sub-tree removed, deepest first;
    /// a directory that cannot go (here: holding a file, as a busy cgroup refuses `rmdir`) is
    /// reported with its ancestors, and another pod's cgroup is never touched.
    #[test]
    fn kill_and_remove_tree_kills_what_is_left_and_removes_the_sub_tree() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let h = [Hierarchy {
            mount_point: d.join("cpu"),
            root: "/".into(),
            v2: false,
            options: vec![],
        }];
        // A leaked process, listed in a container cgroup two levels down.
        let mut leak = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pod = d.join("cpu/staticlet/podu1");
        std::fs::create_dir_all(pod.join("c1/sub")).unwrap();
        std::fs::create_dir_all(pod.join("c2")).unwrap();
        std::fs::write(pod.join("c1/sub/cgroup.procs"), format!("{}\n", leak.id())).unwrap();
        let other_pod = d.join("cpu/staticlet/podu2");
        std::fs::create_dir_all(&other_pod).unwrap();
        std::fs::write(other_pod.join("cgroup.procs"), format!("{}\n", other.id())).unwrap();
        assert_eq!(pids_below(&h, "/staticlet/podu1"), vec![leak.id() as i32]);

        let (killed, failed) = kill_and_remove_tree(&h, "/staticlet/podu1");
        assert!(killed >= 1, "{killed}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(leak.wait().unwrap().signal(), Some(9), "the leak is killed");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another pod's process runs"
        );
        // The fake cgroup.procs file keeps c1/sub (and so c1 and the pod) from going.
        assert!(!pod.join("c2").exists(), "an empty child cgroup is removed");
        let left: Vec<_> = failed.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(left, vec![pod.join("c1/sub"), pod.join("c1"), pod.clone()]);

        std::fs::remove_file(pod.join("c1/sub/cgroup.procs")).unwrap();
        let (killed, failed) = kill_and_remove_tree(&h, "/staticlet/podu1");
        assert_eq!((killed, failed.len()), (0, 0), "{failed:?}");
        assert!(!pod.exists());
        assert!(other_pod.exists());
        assert_eq!(
            kill_and_remove_tree(&h, "/staticlet/podu1").1.len(),
            0,
            "idempotent"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
