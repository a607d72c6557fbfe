//! The confinement of a container without any securityContext, on both runtimes: what
//! docs/security.md's table lists (capabilities, no_new_privs, seccomp, masked and read-only
//! paths, mounts, user namespace, devices, sysctls), read by the container itself
//! (`confinement.sh`) and compared with containerd + runc's defaults.

use crate::common::Env;

on_both_backends!(default_confinement);

/// What `confinement.sh` reports, as `key value` lines.
fn report(env: &mut Env, network: bool) -> Vec<String> {
    let name = if network { "netpod" } else { "hostpod" };
    if network {
        env.pod_network();
    }
    // A literal block: the script as written, one line per line.
    let script: String = include_str!("confinement.sh")
        .lines()
        .chain(["sleep 3600"])
        .map(|l| format!("      {l}\n"))
        .collect();
    env.manifest(
        name,
        &env.pod_manifest(
            name,
            &format!(
                "  hostNetwork: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command:\n    - sh\n    - -c\n    - |\n{script}",
                !network
            ),
        ),
    );
    env.start();
    env.wait("the pod listed", 120, || env.pod(name).is_some());
    let log = env.log_file(name, &env.uid(name), "app", 0);
    let mut out = String::new();
    env.wait("the container's report", 120, || {
        out = std::fs::read_to_string(&log).unwrap_or_default();
        out.contains(" done")
    });
    out.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(str::to_string)
        .collect()
}

/// The rows of docs/security.md, as the container reports them: `(key, values accepted)`.
/// A masked path or read-only mount that this kernel does not have is reported `absent`.
const EXPECTED: &[(&str, &[&str])] = &[
    // Docker's default capability set (no CAP_SYS_ADMIN, CAP_NET_ADMIN, ...).
    ("CapEff:", &["00000000a80425fb"]),
    ("CapPrm:", &["00000000a80425fb"]),
    ("CapBnd:", &["00000000a80425fb"]),
    ("CapInh:", &["0000000000000000"]),
    ("CapAmb:", &["0000000000000000"]),
    // allowPrivilegeEscalation unset: no_new_privs off, as kubelet.
    ("NoNewPrivs:", &["0"]),
    // kubelet's default without --seccomp-default: Unconfined.
    ("Seccomp:", &["0"]),
    ("masked /proc/acpi", &["yes", "absent"]),
    ("masked /proc/asound", &["yes", "absent"]),
    ("masked /proc/kcore", &["yes", "absent"]),
    ("masked /proc/keys", &["yes", "absent"]),
    ("masked /proc/latency_stats", &["yes", "absent"]),
    ("masked /proc/timer_list", &["yes", "absent"]),
    ("masked /proc/timer_stats", &["yes", "absent"]),
    ("masked /proc/sched_debug", &["yes", "absent"]),
    ("masked /proc/scsi", &["yes", "absent"]),
    ("masked /sys/firmware", &["yes", "absent"]),
    ("masked /sys/devices/virtual/powercap", &["yes", "absent"]),
    ("mount /proc/bus", &["ro", "absent"]),
    ("mount /proc/fs", &["ro", "absent"]),
    ("mount /proc/irq", &["ro", "absent"]),
    ("mount /proc/sys", &["ro", "absent"]),
    ("mount /proc/sysrq-trigger", &["ro", "absent"]),
    ("mount /sys", &["ro"]),
    // The cgroup hierarchy: read-only under containerd; not mounted by the embedded runtime
    // (youki's libcontainer mounts cgroup v1 controllers read-write: a root container could
    // raise its own limits; see docs/security.md).
    ("mount /sys/fs/cgroup/memory", &["ro", "absent"]),
    ("mount /dev", &["rw"]),
    ("mount /dev/pts", &["rw"]),
    ("mount /dev/shm", &["rw"]),
    ("mount /dev/mqueue", &["rw"]),
    ("mount /", &["rw"]),
    // No user namespace: root in the container is root on the host.
    ("uid_map", &["0 0 4294967295"]),
    // Sysctls of the pod's network namespace are the kernel's defaults (none set).
    ("ping_group_range", &["1 0"]),
    ("unprivileged_port_start", &["1024"]),
];

/// Devices a container may read and write (device cgroup, v1): the default allow-list.
const DEVICES_RWM: &[&str] = &[
    "c 1:3", "c 1:5", "c 1:7", "c 1:8", "c 1:9", "c 5:0", "c 5:1", "c 5:2", "c 10:200", "c 136:*",
];

fn default_confinement(env: &mut Env) {
    let r = report(env, true);
    let value = |key: &str| {
        r.iter()
            .find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.strip_prefix(' '))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {key:?} in the report:\n{}", r.join("\n")))
    };
    for (key, accepted) in EXPECTED {
        let v = value(key);
        assert!(
            accepted.contains(&v.as_str()),
            "{key} is {v:?}, want one of {accepted:?}; the report:\n{}",
            r.join("\n")
        );
    }
    // The device allow-list (cgroup v1 shows it to the container).
    let devices = value("devices");
    if !devices.is_empty() {
        for rule in devices.split(';').filter(|d| !d.is_empty()) {
            let allowed = rule.ends_with(" m") && rule.contains("*:*")
                || DEVICES_RWM
                    .iter()
                    .any(|d| rule == format!("{d} rwm").as_str());
            assert!(
                allowed,
                "device rule {rule:?} is not in the default list: {devices}"
            );
        }
        assert!(devices.contains("c 1:3 rwm"), "{devices}");
    }
}
