//! Creating a pod's namespaces and pinning them to files, without a helper binary.
//!
//! A forked child of the agent unshares the namespaces, sets the pod's hostname in the new UTS
//! namespace, brings the loopback interface of the new network namespace up, bind-mounts
//! `/proc/self/ns/<kind>` onto each pin file and exits. The mounts keep the namespaces alive
//! with no process in them (no pause process).
//!
//! The agent is multi-threaded, so the child may only make async-signal-safe calls: everything
//! it needs (paths, hostname) is prepared as C strings before the fork, the child uses raw
//! system calls only (no allocation, no locks), and it reports a failure as the failing step and
//! `errno` through a pipe. This replaced `unshare(1)` + `/bin/sh`, whose two execs cost about
//! 5 ms of every pod start.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Namespaces of one sandbox to create and where to pin them.
#[derive(Debug, Default)]
pub struct Pins<'a> {
    pub ipc: Option<&'a Path>,
    pub uts: Option<&'a Path>,
    pub net: Option<&'a Path>,
    /// Set in the new UTS namespace (ignored without `uts`).
    pub hostname: &'a str,
}

/// The child's steps, as reported on failure.
const STEPS: &[&str] = &[
    "unshare",
    "sethostname",
    "bring up loopback (socket)",
    "bring up loopback (get flags)",
    "bring up loopback (set flags)",
    "bind-mount the IPC namespace",
    "bind-mount the UTS namespace",
    "bind-mount the network namespace",
];

fn cstring(s: &[u8], what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Whether `pin` holds a namespace (a namespace file is mounted on it), not the empty file it
/// is without its mount (after a reboot).
pub fn is_pinned(pin: &Path) -> bool {
    use nix::sys::statfs::{statfs, NSFS_MAGIC};
    statfs(pin).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates the namespaces in `pins` and bind-mounts each onto its (existing, empty) file.
/// Blocks for the child (well under a millisecond of work); call it off the async executor.
pub fn create_and_pin(pins: &Pins) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = |p: Option<&Path>| -> io::Result<Option<CString>> {
        p.map(|p| cstring(p.as_os_str().as_bytes(), "namespace path"))
            .transpose()
    };
    let (ipc, uts, net) = (path(pins.ipc)?, path(pins.uts)?, path(pins.net)?);
    let hostname = cstring(pins.hostname.as_bytes(), "hostname")?;
    let mut flags = 0;
    if ipc.is_some() {
        flags |= libc::CLONE_NEWIPC;
    }
    if uts.is_some() {
        flags |= libc::CLONE_NEWUTS;
    }
    if net.is_some() {
        flags |= libc::CLONE_NEWNET;
    }
    if flags == 0 {
        return Ok(());
    }
    let sources = [
        (c"/proc/self/ns/ipc", ipc.as_ref(), 5u8),
        (c"/proc/self/ns/uts", uts.as_ref(), 6),
        (c"/proc/self/ns/net", net.as_ref(), 7),
    ];
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child only makes raw system calls on memory prepared before the fork and
    // leaves with `_exit`; it never returns into Rust code of the parent's threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only (see above).
        unsafe {
            child(
                flags,
                uts.is_some().then_some(&hostname),
                net.is_some(),
                &sources,
                wr.as_raw_fd(),
            )
        }
    }
    drop(wr);
    let mut report = [0u8; 5];
    let n = nix::unistd::read(rd.as_raw_fd(), &mut report).unwrap_or(0);
    let status =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).map_err(io::Error::from)?;
    if n == report.len() {
        let step = STEPS.get(usize::from(report[0])).unwrap_or(&"?");
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        return Err(io::Error::new(
            io::Error::from_raw_os_error(errno).kind(),
            format!("{step}: {}", io::Error::from_raw_os_error(errno)),
        ));
    }
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        other => Err(io::Error::other(format!(
            "namespace helper ended with {other:?}"
        ))),
    }
}

/// The forked child. Never returns.
unsafe fn child(
    flags: libc::c_int,
    hostname: Option<&CString>,
    loopback: bool,
    sources: &[(&std::ffi::CStr, Option<&CString>, u8)],
    report: libc::c_int,
) -> ! {
    let fail = |step: u8| -> ! {
        let errno = *libc::__errno_location();
        let e = errno.to_ne_bytes();
        let msg = [step, e[0], e[1], e[2], e[3]];
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(1)
    };
    if libc::unshare(flags) != 0 {
        fail(0);
    }
    if let Some(h) = hostname {
        if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
            fail(1);
        }
    }
    if loopback {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            fail(2);
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
            fail(3);
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) != 0 {
            fail(4);
        }
        libc::close(sock);
    }
    for (source, target, step) in sources {
        if let Some(target) = target {
            let r = libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            );
            if r != 0 {
                fail(*step);
            }
        }
    }
    libc::_exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inode of a namespace (what `/proc/<pid>/ns/<kind>` and its bind mounts point to).
    fn ns_inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn pins_new_namespaces_with_hostname_and_loopback_up() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let files: Vec<_> = ["ipc", "uts", "net"].map(|k| d.path().join(k)).into();
        for f in &files {
            std::fs::write(f, b"").unwrap();
        }
        create_and_pin(&Pins {
            ipc: Some(&files[0]),
            uts: Some(&files[1]),
            net: Some(&files[2]),
            hostname: "pinned-pod",
        })
        .unwrap();
        for (f, kind) in files.iter().zip(["ipc", "uts", "net"]) {
            let own = ns_inode(&Path::new("/proc/self/ns").join(kind));
            assert_ne!(ns_inode(f), own, "{kind}: a new namespace is pinned");
        }
        // Look inside with nsenter: the hostname and an up loopback.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--uts={}", files[1].display()))
            .arg(format!("--net={}", files[2].display()))
            .args(["sh", "-c", "hostname; ip -o link show lo"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("pinned-pod"), "{out:?}");
        assert!(
            lines.next().is_some_and(|l| l.contains(",UP")),
            "lo is up: {out:?}"
        );
        for f in &files {
            nix::mount::umount2(f.as_path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
    }

    #[test]
    fn a_failing_step_is_named() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("no-such-file");
        let err = create_and_pin(&Pins {
            ipc: Some(&missing),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bind-mount the IPC namespace: No such file"),
            "{err}"
        );
    }
}
