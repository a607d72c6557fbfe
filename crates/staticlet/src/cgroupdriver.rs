//! kubelet's `cgroupDriver` (`--cgroup-driver`): where pod cgroups go, decided once at start.
//!
//! staticlet lays pod cgroups out as kubelet does with the `cgroupfs` driver: each pod's cgroup
//! is `/staticlet/pod<uid>` from the root of every hierarchy
//! (`staticlet_agent::kuberuntime::pod_cgroup_parent`), made and removed by staticlet and its
//! runtime. There are no systemd slices. What each combination of the configured driver and
//! the runtime means ([`decide`], a pure function with table tests):
//!
//! - embedded runtime: `cgroupfs` as configured; `systemd` (kubeadm's default) is accepted and
//!   said once at start, since staticlet and its embedded runtime are the only writers of their
//!   pods' cgroups and need no systemd for them;
//! - CRI runtime: its own driver comes first, as in kubelet v1.34 (`getCgroupDriverFromCRI`:
//!   the runtime's answer to `RuntimeConfig` replaces the configured one). A runtime on the
//!   systemd driver (containerd's `SystemdCgroup = true`) would need systemd slices as cgroup
//!   parents: refused at start, before any pod is touched. A runtime that does not say
//!   (containerd 1.6 has no `RuntimeConfig`) gets the configured driver, as in kubelet; then a
//!   configured `systemd` is refused, since staticlet would hand the runtime cgroupfs paths
//!   while the node says systemd (kubelet would hand it slice names);
//! - the simulator makes no cgroups: the setting is only checked for its value there.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use staticlet_runtime_cri::convert::ReportedCgroupDriver;

/// A cgroup driver name as kubelet spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupDriver {
    /// kubelet's default (`SetDefaults_KubeletConfiguration`).
    #[default]
    Cgroupfs,
    /// kubeadm's default since v1.22.
    Systemd,
}

impl CgroupDriver {
    /// kubelet's two values, exactly (kubelet itself treats every value but `systemd` as
    /// cgroupfs; a misspelt `Systemd` silently changing the layout is what this refuses).
    pub fn parse(s: &str) -> Option<CgroupDriver> {
        match s {
            "cgroupfs" => Some(CgroupDriver::Cgroupfs),
            "systemd" => Some(CgroupDriver::Systemd),
            _ => None,
        }
    }
}

impl fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        })
    }
}

/// Where the configured driver came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Neither the flag nor the file: kubelet's default.
    #[default]
    Default,
    Flag,
    /// `cgroupDriver` of this `--config` file.
    File(PathBuf),
}

/// The configured driver (`--cgroup-driver` over `cgroupDriver` over `cgroupfs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configured {
    pub driver: CgroupDriver,
    pub origin: Origin,
}

impl Configured {
    /// The setting as the user wrote it: `--cgroup-driver=systemd`,
    /// `cgroupDriver: systemd (config.yaml)`, or `the default cgroup driver cgroupfs`.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Default => format!("the default cgroup driver {}", self.driver),
            Origin::Flag => format!("--cgroup-driver={}", self.driver),
            Origin::File(f) => format!("cgroupDriver: {} ({})", self.driver, f.display()),
        }
    }
}

/// Reads the flag's and the file's values: the flag wins; an empty value is unset (Go's zero
/// value, kubelet's default); anything but `cgroupfs` or `systemd` is an error naming where it
/// was written.
pub fn configured(
    flag: Option<&str>,
    file: Option<(&std::path::Path, &str)>,
) -> Result<Configured> {
    if let Some(v) = flag.filter(|v| !v.is_empty()) {
        let Some(driver) = CgroupDriver::parse(v) else {
            bail!("--cgroup-driver {v:?}: must be cgroupfs or systemd");
        };
        return Ok(Configured {
            driver,
            origin: Origin::Flag,
        });
    }
    if let Some((path, v)) = file.filter(|(_, v)| !v.is_empty()) {
        let Some(driver) = CgroupDriver::parse(v) else {
            bail!(
                "{}: cgroupDriver: {v:?} must be cgroupfs or systemd",
                path.display()
            );
        };
        return Ok(Configured {
            driver,
            origin: Origin::File(path.to_path_buf()),
        });
    }
    Ok(Configured::default())
}

/// The runtime `staticlet run` uses, as far as cgroups are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Embedded,
    /// A CRI runtime and what it answered to `RuntimeConfig`.
    Cri(ReportedCgroupDriver),
}

/// How to make the runtime and staticlet agree, for refusals.
const FIX: &str = "make the runtime use cgroupfs (containerd: SystemdCgroup = false in \
                   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]; \
                   CRI-O: cgroup_manager = \"cgroupfs\") and set cgroupDriver: cgroupfs \
                   (--cgroup-driver=cgroupfs)";

/// The pod cgroups' layout, for messages.
const LAYOUT: &str = "/staticlet/pod<uid> at the root of each cgroup hierarchy, kubelet's \
                      cgroupfs layout (as its /kubepods/...)";

/// What to do with the configured driver on this runtime: `Ok(Some(line))` to log once at start
/// (info), `Ok(None)` for nothing to say, `Err` to refuse to start. `endpoint` names the CRI
/// runtime in messages.
pub fn decide(
    configured: &Configured,
    runtime: RuntimeKind,
    endpoint: &str,
) -> Result<Option<String>> {
    let set = configured.describe();
    match (runtime, configured.driver) {
        (RuntimeKind::Embedded, CgroupDriver::Cgroupfs) => Ok(None),
        (RuntimeKind::Embedded, CgroupDriver::Systemd) => Ok(Some(format!(
            "{set}: pod cgroups are {LAYOUT}, not systemd slices: staticlet and its \
             embedded runtime create and remove them without systemd, outside the staticlet \
             unit's cgroup, so restarting the unit leaves the pods running"
        ))),
        (RuntimeKind::Cri(ReportedCgroupDriver::Systemd), _) => bail!(
            "the container runtime at {endpoint} reports the systemd cgroup driver (CRI \
             RuntimeConfig; containerd: SystemdCgroup = true), which staticlet does not support \
             with a CRI runtime: the runtime would expect systemd slice names, and staticlet's \
             pod cgroups are {LAYOUT}. Fix: {FIX}"
        ),
        (RuntimeKind::Cri(ReportedCgroupDriver::Cgroupfs), CgroupDriver::Cgroupfs) => Ok(Some(
            format!("the container runtime at {endpoint} reports the cgroupfs cgroup driver: pod cgroups are {LAYOUT}"),
        )),
        (RuntimeKind::Cri(ReportedCgroupDriver::Cgroupfs), CgroupDriver::Systemd) => Ok(Some(
            format!(
                "the container runtime at {endpoint} reports the cgroupfs cgroup driver, which \
                 replaces {set} as in kubelet: pod cgroups are {LAYOUT}"
            ),
        )),
        (RuntimeKind::Cri(ReportedCgroupDriver::NotReported), CgroupDriver::Cgroupfs) => Ok(None),
        (RuntimeKind::Cri(ReportedCgroupDriver::NotReported), CgroupDriver::Systemd) => bail!(
            "{set}: staticlet supports only the cgroupfs driver with a CRI runtime, and the \
             runtime at {endpoint} does not report its own driver (no CRI RuntimeConfig, as \
             containerd 1.6); staticlet's pod cgroups are {LAYOUT}. Fix: {FIX}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn configured_driver_flag_over_file_over_default() {
        let file = Path::new("/var/lib/kubelet/config.yaml");
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (None, None, Ok("the default cgroup driver cgroupfs")),
            (None, Some(""), Ok("the default cgroup driver cgroupfs")),
            (None, Some("systemd"), Ok("cgroupDriver: systemd (/var/lib/kubelet/config.yaml)")),
            (Some("cgroupfs"), Some("systemd"), Ok("--cgroup-driver=cgroupfs")),
            (Some(""), Some("systemd"), Ok("cgroupDriver: systemd (/var/lib/kubelet/config.yaml)")),
            (Some("systemd"), None, Ok("--cgroup-driver=systemd")),
            (Some("Systemd"), None, Err("--cgroup-driver \"Systemd\": must be cgroupfs or systemd")),
            (
                None,
                Some("cgroup"),
                Err("/var/lib/kubelet/config.yaml: cgroupDriver: \"cgroup\" must be cgroupfs or systemd"),
            ),
        ];
        for (flag, in_file, want) in cases {
            let got = configured(*flag, in_file.map(|v| (file, v)));
            match (got, want) {
                (Ok(c), Ok(want)) => assert_eq!(c.describe(), *want, "{flag:?} {in_file:?}"),
                (Err(e), Err(want)) => assert_eq!(e.to_string(), *want),
                (got, want) => panic!("{flag:?} {in_file:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Every (runtime, configured driver) pair: what is said at start, or why it refuses.
    #[test]
    fn decision_table() {
        use CgroupDriver::{Cgroupfs, Systemd};
        use ReportedCgroupDriver as R;
        enum Want {
            Silent,
            Says(&'static [&'static str]),
            Refuses(&'static [&'static str]),
        }
        let cases: &[(RuntimeKind, CgroupDriver, Want)] = &[
            (RuntimeKind::Embedded, Cgroupfs, Want::Silent),
            (
                RuntimeKind::Embedded,
                Systemd,
                Want::Says(&[
                    "--cgroup-driver=systemd",
                    "/staticlet/pod<uid>",
                    "not systemd slices",
                    "outside the staticlet unit",
                ]),
            ),
            (RuntimeKind::Cri(R::NotReported), Cgroupfs, Want::Silent),
            (
                RuntimeKind::Cri(R::NotReported),
                Systemd,
                Want::Refuses(&[
                    "--cgroup-driver=systemd",
                    "does not report",
                    "Fix: make the runtime use cgroupfs",
                    "SystemdCgroup = false",
                    "set cgroupDriver: cgroupfs",
                ]),
            ),
            (
                RuntimeKind::Cri(R::Cgroupfs),
                Cgroupfs,
                Want::Says(&["reports the cgroupfs cgroup driver", "/staticlet/pod<uid>"]),
            ),
            // kubelet v1.34 takes the runtime's answer over the configuration.
            (
                RuntimeKind::Cri(R::Cgroupfs),
                Systemd,
                Want::Says(&[
                    "reports the cgroupfs cgroup driver",
                    "replaces --cgroup-driver=systemd",
                ]),
            ),
            (
                RuntimeKind::Cri(R::Systemd),
                Cgroupfs,
                Want::Refuses(&[
                    "unix:///run/c.sock reports the systemd cgroup driver",
                    "SystemdCgroup = true",
                    "SystemdCgroup = false",
                ]),
            ),
            (
                RuntimeKind::Cri(R::Systemd),
                Systemd,
                Want::Refuses(&["reports the systemd cgroup driver", "does not support"]),
            ),
        ];
        for (runtime, driver, want) in cases {
            let c = Configured {
                driver: *driver,
                origin: Origin::Flag,
            };
            let got = decide(&c, *runtime, "unix:///run/c.sock");
            let ctx = format!("{runtime:?} {driver}: {got:?}");
            match (got, want) {
                (Ok(None), Want::Silent) => {}
                (Ok(Some(line)), Want::Says(parts)) => {
                    for p in *parts {
                        assert!(line.contains(p), "{ctx}: missing {p:?}");
                    }
                }
                (Err(e), Want::Refuses(parts)) => {
                    let e = e.to_string();
                    for p in *parts {
                        assert!(e.contains(p), "{ctx}: missing {p:?}");
                    }
                }
                _ => panic!("{ctx}: not the expected outcome"),
            }
        }
    }
}
