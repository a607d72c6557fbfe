//! Container resource usage from cgroups (what CRI's `ContainerStats` carries): cumulative CPU
//! time and the memory working set (usage minus inactive file pages, as kubelet/cAdvisor compute
//! it), from cgroup v2 files when the host is on the unified hierarchy, else from v1's
//! `cpuacct` and `memory` controllers. Parsing is pure; [`read`] does the I/O.

use std::path::Path;

/// `usage_usec` of a v2 `cpu.stat`, in nanoseconds.
pub fn cpu_nanos_v2(cpu_stat: &str) -> Option<u64> {
    stat_field(cpu_stat, "usage_usec").map(|u| u.saturating_mul(1000))
}

/// A `key value` line of a `*.stat` file.
pub fn stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Working set: usage minus inactive file pages (never below zero).
pub fn working_set(usage: u64, memory_stat: &str, inactive_key: &str) -> u64 {
    usage.saturating_sub(stat_field(memory_stat, inactive_key).unwrap_or(0))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `(cpu nanoseconds, working set bytes)` of the cgroup at `path` (e.g.
/// `/staticlet/pod<uid>/<id>`) under the cgroup mount `root` (normally `/sys/fs/cgroup`).
pub fn read(root: &Path, path: &str) -> (Option<u64>, Option<u64>) {
    let rel = path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        let d = root.join(rel);
        let cpu = std::fs::read_to_string(d.join("cpu.stat"))
            .ok()
            .and_then(|s| cpu_nanos_v2(&s));
        let mem = read_u64(&d.join("memory.current")).map(|u| {
            let stat = std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
            working_set(u, &stat, "inactive_file")
        });
        return (cpu, mem);
    }
    let cpu = read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage"));
    let mem_dir = root.join("memory").join(rel);
    let mem = read_u64(&mem_dir.join("memory.usage_in_bytes")).map(|u| {
        let stat = std::fs::read_to_string(mem_dir.join("memory.stat")).unwrap_or_default();
        working_set(u, &stat, "total_inactive_file")
    });
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_files() {
        let cpu_stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(cpu_nanos_v2(cpu_stat), Some(1_500_000));
        assert_eq!(cpu_nanos_v2("user_usec 1\n"), None);
        let v1 = "cache 100\ntotal_inactive_file 4096\ninactive_file 1\n";
        assert_eq!(working_set(10_000, v1, "total_inactive_file"), 5904);
        assert_eq!(working_set(1_000, v1, "total_inactive_file"), 0);
        assert_eq!(working_set(1_000, "", "inactive_file"), 1_000);
    }

    #[test]
    fn reads_a_v1_and_a_v2_tree() {
        let v1 = tempfile::tempdir().unwrap();
        let cg = "/staticlet/podU/c1";
        std::fs::create_dir_all(v1.path().join("cpuacct/staticlet/podU/c1")).unwrap();
        std::fs::create_dir_all(v1.path().join("memory/staticlet/podU/c1")).unwrap();
        std::fs::write(
            v1.path().join("cpuacct/staticlet/podU/c1/cpuacct.usage"),
            "123\n",
        )
        .unwrap();
        std::fs::write(
            v1.path()
                .join("memory/staticlet/podU/c1/memory.usage_in_bytes"),
            "9000\n",
        )
        .unwrap();
        std::fs::write(
            v1.path().join("memory/staticlet/podU/c1/memory.stat"),
            "total_inactive_file 1000\n",
        )
        .unwrap();
        assert_eq!(read(v1.path(), cg), (Some(123), Some(8000)));

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let d = v2.path().join("staticlet/podU/c1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 7\n").unwrap();
        std::fs::write(d.join("memory.current"), "500\n").unwrap();
        std::fs::write(d.join("memory.stat"), "inactive_file 100\n").unwrap();
        assert_eq!(read(v2.path(), cg), (Some(7000), Some(400)));
        // A cgroup that is gone: nothing measured.
        assert_eq!(read(v2.path(), "/staticlet/podX/c9"), (None, None));
    }
}
