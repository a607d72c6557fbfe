//! Small `/proc` and cgroup helpers shared by the shim, the exec helper and the client.
//!
//! Nothing here calls libcontainer, so the client side (inside the multi-threaded agent) may use
//! all of it. Cgroup directories are resolved from `/proc/<pid>/cgroup` and the cgroup mounts in
//! `/proc/self/mountinfo`, so legacy (v1), hybrid and unified (v2) layouts are all handled the
//! same way: a process has one directory per mounted hierarchy.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Closes every descriptor above 2 (those inherited without `O_CLOEXEC`).
///
/// Only for the start of a fresh, single-threaded process that owns no descriptor yet.
pub fn close_inherited_fds() {
    close_fds_except(&[]);
}

/// Closes every descriptor above 2 but those in `keep`. Only for a single-threaded process
/// whose open descriptors (other than `keep`) no object owns any more (a fresh process, or a
/// child forked to run something else).
pub fn close_fds_except(keep: &[i32]) {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && !keep.contains(&fd))
        .collect();
    // The directory's own descriptor is among them; it is closed already (EBADF, ignored).
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Drops this process's page-table entries for clean, read-only file mappings (the text and
/// read-only data of the binary and its shared libraries), so only the pages the process goes on
/// touching count in its resident set. Returns the number of bytes advised.
///
/// The pages stay in the page cache (shared with every other process running the same binary)
/// and fault back in on the next access, with the same contents. A long-running supervisor calls
/// this once after its start-up, which touched far more code than its steady-state loop.
pub fn trim_clean_file_mappings() -> usize {
    use std::io::BufRead;
    // Read a line at a time: the whole file is tens of KiB, which would stay in the heap.
    let Ok(smaps) = fs::File::open("/proc/self/smaps") else {
        return 0;
    };
    let mut smaps = io::BufReader::with_capacity(4096, smaps);
    let mut line = String::with_capacity(256);
    // On the stack, and the reader and line are dropped before the first `madvise`: freeing
    // them afterwards would bring the allocator's code back for nothing.
    let mut ranges = [(0usize, 0usize); 64];
    let mut count = 0;
    let mut current: Option<(usize, usize, bool)> = None;
    loop {
        line.clear();
        match smaps.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            else {
                current = None;
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            // Private, not writable, backed by a file (not [vdso], [heap], anonymous memory).
            let eligible = perms.len() == 4
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/');
            current = Some((lo, hi, eligible));
        } else if first == "Anonymous:" {
            // A page copied on write (relocated read-only data) must not be dropped: its
            // contents would revert to the file's.
            if let Some((lo, hi, true)) = current.take() {
                if fields.next() == Some("0") && count < ranges.len() {
                    ranges[count] = (lo, hi);
                    count += 1;
                }
            }
        }
    }
    drop((smaps, line));
    ranges[..count]
        .iter()
        .map(|&(lo, hi)| advise_dontneed(lo, hi - lo))
        .sum()
}

/// `madvise(MADV_DONTNEED)` on one clean, read-only, private file mapping.
#[allow(unsafe_code)]
fn advise_dontneed(addr: usize, len: usize) -> usize {
    use nix::sys::mman::{madvise, MmapAdvise};
    let Some(ptr) = std::ptr::NonNull::new(addr as *mut std::ffi::c_void) else {
        return 0;
    };
    // SAFETY: the range is exactly one mapping of this process that `/proc/self/smaps` showed as
    // private, not writable, file-backed and without any anonymous (copied-on-write) page. For
    // such a mapping MADV_DONTNEED only drops page-table entries: the next access maps the same
    // page-cache page again, with the same contents (a running executable or library cannot be
    // modified in place, ETXTBSY; replacing it on disk creates a new inode and leaves this
    // mapping's one alone). No Rust reference observes a change.
    match unsafe { madvise(ptr, len, MmapAdvise::MADV_DONTNEED) } {
        Ok(()) => len,
        Err(_) => 0,
    }
}

/// Forks this process: the child runs `child` and exits with the code it returns, without
/// returning here, running destructors or flushing anything the parent shares (`_exit`; a panic
/// exits 101). The parent gets the child's pid and drops `child` unrun, which closes the
/// descriptors it captured in the parent.
///
/// Only for a single-threaded process (the shim's supervisor): the child of a multi-threaded one
/// may only make async-signal-safe calls.
#[allow(unsafe_code)]
pub fn fork_child(child: impl FnOnce() -> i32) -> io::Result<Pid> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: the caller is single-threaded (documented above; the shim's modes run before any
    // thread exists), so the child inherits no lock held by another thread and may allocate.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
            // SAFETY: ends this (child) process at once; nothing runs after it.
            unsafe { nix::libc::_exit(code.unwrap_or(101)) }
        }
    }
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`, clock ticks after boot).
pub fn pid_start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip to the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and is the process that had `start_time`.
pub fn is_same_process(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|s| s == "Z" || s == "X");
            !zombie && parse_start_time(&stat) == Some(start_time)
        }
        Err(_) => false,
    }
}

/// Sends `signal` to `pid` if it still is the process that had `start_time`.
///
/// Returns `Ok(false)` when the process is gone (or the pid was reused).
pub fn signal_process(pid: i32, start_time: u64, signal: Signal) -> io::Result<bool> {
    if !is_same_process(pid, start_time) {
        return Ok(false);
    }
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Process group and session of a process, from its `/proc/<pid>/stat` (fields 5 and 6).
fn parse_group_and_session(stat: &str) -> Option<(i32, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // state, ppid, pgrp, session
    let pgrp = fields.nth(2)?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((pgrp, session))
}

/// SIGKILLs the session `sid` (and the process group of the same id): the session leader
/// first, so it starts nothing more, then its group, then every other process `/proc` shows
/// in the session or group (a job-control shell moves its jobs into groups of their own);
/// twice, for children forked during the first pass. Returns how many processes the passes
/// signalled. A process that left the session (`setsid` of its own) is not found.
///
/// For the interactive exec helper, whose pid names the session it made. The caller must hold
/// `sid` as its own unreaped child (alive or a zombie), so the number cannot name another
/// process: the kernel does not reuse a pid while a process, group or session has it.
pub fn kill_session(sid: i32) -> usize {
    if sid <= 1 {
        return 0;
    }
    let _ = kill(Pid::from_raw(sid), Signal::SIGKILL);
    let _ = nix::sys::signal::killpg(Pid::from_raw(sid), Signal::SIGKILL);
    let mut n = 0;
    for _ in 0..2 {
        let Ok(dir) = fs::read_dir("/proc") else {
            return n;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if parse_group_and_session(&stat).is_some_and(|(g, s)| g == sid || s == sid)
                && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

#[derive(Clone)]
struct CgroupMount {
    /// Controllers of a v1 hierarchy (`memory`, `name=systemd`, ...); `None` for cgroup2.
    controllers: Option<BTreeSet<String>>,
    root: String,
    mount_point: PathBuf,
}

/// The cgroup hierarchies mounted here, read once per process: they do not change while the
/// agent runs, and reading `mountinfo` costs a lot on a node with many container mounts (and
/// holds the kernel's namespace lock that every mount and unmount needs). Nothing is kept
/// while none is mounted.
fn cgroup_mounts() -> io::Result<Vec<CgroupMount>> {
    static MOUNTS: std::sync::OnceLock<Vec<CgroupMount>> = std::sync::OnceLock::new();
    if let Some(m) = MOUNTS.get() {
        return Ok(m.clone());
    }
    let m = read_cgroup_mounts()?;
    if !m.is_empty() {
        let _ = MOUNTS.set(m.clone());
    }
    Ok(m)
}

fn read_cgroup_mounts() -> io::Result<Vec<CgroupMount>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut mounts = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mount_point) = (pre[3], unescape_mountinfo(pre[4]));
        match post[0] {
            "cgroup2" => mounts.push(CgroupMount {
                controllers: None,
                root: root.to_owned(),
                mount_point: mount_point.into(),
            }),
            "cgroup" => {
                let known = [
                    "cpu",
                    "cpuacct",
                    "cpuset",
                    "memory",
                    "devices",
                    "freezer",
                    "net_cls",
                    "blkio",
                    "perf_event",
                    "net_prio",
                    "hugetlb",
                    "pids",
                    "rdma",
                    "misc",
                ];
                let controllers = post[2]
                    .split(',')
                    .filter(|o| known.contains(o) || o.starts_with("name="))
                    .map(str::to_owned)
                    .collect();
                mounts.push(CgroupMount {
                    controllers: Some(controllers),
                    root: root.to_owned(),
                    mount_point: mount_point.into(),
                });
            }
            _ => {}
        }
    }
    Ok(mounts)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Absolute cgroup directories of `pid`, one per mounted hierarchy that has it.
pub fn cgroup_dirs(pid: i32) -> io::Result<Vec<PathBuf>> {
    cgroup_dirs_in(pid, &cgroup_mounts()?)
}

/// [`cgroup_dirs`] with the mounted hierarchies already read (reading `mountinfo` is costly on a
/// host with many container mounts).
fn cgroup_dirs_in(pid: i32, mounts: &[CgroupMount]) -> io::Result<Vec<PathBuf>> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mount = if ctrl.is_empty() {
            mounts.iter().find(|m| m.controllers.is_none())
        } else {
            let want: BTreeSet<String> = ctrl.split(',').map(str::to_owned).collect();
            mounts
                .iter()
                .find(|m| m.controllers.as_ref() == Some(&want))
        };
        let Some(mount) = mount else { continue };
        let rel = path.strip_prefix(mount.root.as_str()).unwrap_or(path);
        let dir = mount.mount_point.join(rel.trim_start_matches('/'));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// The cgroup directories of `pid` that are its own: those it does not share with the calling
/// process. A container's init stays in its creator's cgroup in every hierarchy the runtime does
/// not manage (e.g. `name=systemd`, or the v2 mount of a hybrid host); those must never be
/// treated as the container's, or killing "the container's cgroup" would kill the agent.
pub fn own_cgroup_dirs(pid: i32) -> io::Result<Vec<PathBuf>> {
    let mounts = cgroup_mounts()?;
    let mine = cgroup_dirs_in(std::process::id() as i32, &mounts)?;
    Ok(cgroup_dirs_in(pid, &mounts)?
        .into_iter()
        .filter(|d| !mine.contains(d))
        .collect())
}

/// Pids in the `cgroup.procs` of any of `dirs` (missing directories count as empty).
pub fn cgroup_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = BTreeSet::new();
    for dir in dirs {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.into_iter().collect()
}

/// SIGKILLs every process in the cgroups `dirs`: `cgroup.kill` where the kernel has it (v2,
/// Linux 5.14+), otherwise each pid of `cgroup.procs`. Returns how many pids were signalled
/// (`cgroup.kill` counts as the pids it saw).
///
/// Only directories that are not a hierarchy's root are touched, so a bad record cannot kill the
/// host.
pub fn kill_cgroups(dirs: &[PathBuf]) -> usize {
    let mut n = 0;
    for dir in dirs {
        if !is_container_cgroup(dir) {
            continue;
        }
        let pids = cgroup_pids(std::slice::from_ref(dir));
        if pids.is_empty() {
            continue;
        }
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() && fs::write(&kill_file, "1").is_ok() {
            n += pids.len();
            continue;
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// A cgroup directory below some hierarchy's root (has at least one level under the mount).
fn is_container_cgroup(dir: &Path) -> bool {
    let Ok(mounts) = cgroup_mounts() else {
        return false;
    };
    mounts
        .iter()
        .any(|m| dir.starts_with(&m.mount_point) && dir != m.mount_point)
}

/// Number of OOM kills the kernel counted in the container's memory cgroup, best effort:
/// `oom_kill` of `memory.events` (v2) or of `memory.oom_control` (v1, Linux 4.13+). `None` when no
/// hierarchy reports it (no memory controller, or the cgroup is already gone).
pub fn oom_kill_count(dirs: &[PathBuf]) -> Option<u64> {
    let mut best = None;
    for dir in dirs {
        for file in ["memory.events", "memory.oom_control"] {
            let Ok(text) = fs::read_to_string(dir.join(file)) else {
                continue;
            };
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("oom_kill ") {
                    if let Ok(v) = v.trim().parse::<u64>() {
                        best = Some(best.map_or(v, |b: u64| b.max(v)));
                    }
                }
            }
        }
    }
    best
}

/// Moves `pid` into the cgroups `dirs` (best effort: a hierarchy that refuses is skipped).
pub fn join_cgroups(pid: i32, dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = fs::write(dir.join("cgroup.procs"), pid.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 ";
        assert_eq!(parse_start_time(stat), Some(98765));
    }

    #[test]
    fn group_and_session_skip_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 40 39 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 ";
        assert_eq!(parse_group_and_session(stat), Some((40, 39)));
        assert_eq!(parse_group_and_session("42 (x"), None);
    }

    #[test]
    fn kill_session_kills_a_sessions_processes_in_other_groups() {
        #![allow(clippy::disallowed_types)]
        use std::io::BufRead;
        use std::time::{Duration, Instant};
        // setsid(1) does not fork here (its caller leads no group): the shell is the session
        // leader, and its background job moves to a group of its own (as a job-control shell
        // does), which killpg of the session's id would miss.
        let mut leader = std::process::Command::new("setsid")
            .args([
                "sh",
                "-c",
                "perl -e 'setpgrp(0, 0); exec qw(sleep 1000)' & echo $!; wait",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let job: i32 = line.trim().parse().unwrap();
        let sid = leader.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stat = fs::read_to_string(format!("/proc/{job}/stat")).unwrap();
            if parse_group_and_session(&stat) == Some((job, sid)) {
                break;
            }
            assert!(Instant::now() < deadline, "the job never moved: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = pid_start_time(job).unwrap();
        assert!(kill_session(sid) >= 1);
        leader.wait().unwrap();
        // The job was re-parented (to init or a subreaper) when the shell died: wait until it
        // is gone or a zombie.
        while is_same_process(job, started) {
            assert!(Instant::now() < deadline, "job {job} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn own_process_is_recognised() {
        let me = std::process::id() as i32;
        let t = pid_start_time(me).unwrap();
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        assert!(!cgroup_dirs(me).unwrap().is_empty());
    }
}
