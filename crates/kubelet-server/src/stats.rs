//! Resource usage in kubelet's shapes: `/stats/summary` (the Summary API, `stats/v1alpha1`)
//! and `/metrics/resource` (the Prometheus text metrics-server scrapes, which `kubectl top`
//! shows): CPU time and memory working set of the node, and of each static pod and container.
//!
//! Container figures come from the runtime (`ListContainerStats`: cgroups with the embedded
//! runtime, containerd's with CRI); a pod's are the sum of its containers'. The node's come from
//! `/proc`: CPU time is the sum of the non-idle times in `/proc/stat`, memory in use is
//! `MemTotal − MemFree`, the working set that less `Inactive(file)` (what cAdvisor reports for
//! the root cgroup, up to the kernel's own accounting). `usageNanoCores` is the rate since the
//! previous request of the same container (absent on the first).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use staticlet_agent::pod_workers::PodsView;
use staticlet_runtime::{labels, ContainerStats};

/// A usage sample of one cumulative CPU counter.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    nanos: u64,
    at: SystemTime,
}

/// Remembers the previous CPU samples, to report rates.
#[derive(Debug, Default)]
pub struct Rates {
    prev: Mutex<HashMap<String, Sample>>,
}

impl Rates {
    /// Nano-cores since the previous sample of `key` (and remembers this one).
    fn nano_cores(&self, key: &str, nanos: u64, at: SystemTime) -> Option<u64> {
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        let old = prev.insert(key.to_string(), Sample { nanos, at });
        let old = old?;
        let dt = at.duration_since(old.at).ok()?.as_nanos();
        if dt == 0 || nanos < old.nanos {
            return None;
        }
        Some(((nanos - old.nanos) as u128 * 1_000_000_000 / dt) as u64)
    }

    /// Forgets samples of keys not in `live`.
    fn retain(&self, live: &std::collections::HashSet<String>) {
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        prev.retain(|k, _| live.contains(k) || k == NODE_KEY);
    }
}

const NODE_KEY: &str = "\0node";

/// The node's own usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub cpu_core_nanos: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
}

impl NodeUsage {
    /// From the text of `/proc/stat` and `/proc/meminfo`.
    pub fn parse(stat: &str, meminfo: &str) -> NodeUsage {
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice (USER_HZ)
        let cpu_core_nanos = stat.lines().find(|l| l.starts_with("cpu ")).and_then(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 4 {
                return None;
            }
            // Everything but idle and iowait; guest time is already in user.
            let busy: u64 = v.iter().take(8).sum::<u64>() - v[3] - v.get(4).copied().unwrap_or(0);
            // USER_HZ is 100 on Linux.
            Some(busy * 10_000_000)
        });
        let kib = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        let (total, free, inactive_file, available) = (
            kib("MemTotal:"),
            kib("MemFree:"),
            kib("Inactive(file):"),
            kib("MemAvailable:"),
        );
        let usage = total.zip(free).map(|(t, f)| t.saturating_sub(f));
        NodeUsage {
            cpu_core_nanos,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.map(|u| u.saturating_sub(inactive_file.unwrap_or(0))),
            memory_available_bytes: available,
        }
    }

    /// Reads `/proc`.
    pub fn read() -> NodeUsage {
        NodeUsage::parse(
            &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
            &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        )
    }
}

/// `stats/v1alpha1` `CPUStats`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// `stats/v1alpha1` `MemoryStats`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    pub pod_ref: PodReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub containers: Vec<ContainerSummary>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub node_name: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

/// `stats/v1alpha1` `Summary`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub node: NodeSummary,
    pub pods: Vec<PodSummary>,
}

fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// One running container of a static pod, with its figures.
#[derive(Debug, Clone)]
struct Row<'a> {
    namespace: &'a str,
    /// The pod's `metadata.name`.
    pod: &'a str,
    uid: &'a str,
    container: &'a str,
    stats: &'a ContainerStats,
}

/// Matches the runtime's stats to the pods the agent runs (by the pod UID label); containers of
/// pods it does not know are left out.
fn rows<'a>(pods: &'a PodsView, stats: &'a [ContainerStats]) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = stats
        .iter()
        .filter_map(|s| {
            let uid = s.labels.get(labels::POD_UID)?;
            let view = pods.get(uid)?;
            Some(Row {
                namespace: &view.pod.namespace,
                pod: &view.pod.name,
                uid: &view.pod.uid,
                container: s.labels.get(labels::CONTAINER_NAME)?,
                stats: s,
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.namespace, a.pod, a.container).cmp(&(b.namespace, b.pod, b.container)));
    rows
}

/// The Summary API's answer.
pub fn summary(
    node_name: &str,
    node: &NodeUsage,
    pods: &PodsView,
    stats: &[ContainerStats],
    rates: &Rates,
    now: SystemTime,
) -> Summary {
    let t = rfc3339(now);
    let node_summary = NodeSummary {
        node_name: node_name.to_string(),
        cpu: CpuStats {
            time: t.clone(),
            usage_nano_cores: node
                .cpu_core_nanos
                .and_then(|n| rates.nano_cores(NODE_KEY, n, now)),
            usage_core_nano_seconds: node.cpu_core_nanos,
        },
        memory: MemoryStats {
            time: t.clone(),
            available_bytes: node.memory_available_bytes,
            usage_bytes: node.memory_usage_bytes,
            working_set_bytes: node.memory_working_set_bytes,
        },
    };
    let mut by_pod: BTreeMap<(&str, &str, &str), Vec<&Row<'_>>> = BTreeMap::new();
    let all = rows(pods, stats);
    for r in &all {
        by_pod
            .entry((r.namespace, r.pod, r.uid))
            .or_default()
            .push(r);
    }
    let live: std::collections::HashSet<String> =
        all.iter().map(|r| r.stats.id.0.clone()).collect();
    let mut out = Vec::new();
    for ((namespace, name, uid), rows) in by_pod {
        let containers: Vec<ContainerSummary> =
            rows.iter()
                .map(|r| {
                    let ts = rfc3339(r.stats.timestamp);
                    ContainerSummary {
                        name: r.container.to_string(),
                        start_time: None,
                        cpu: CpuStats {
                            time: ts.clone(),
                            usage_nano_cores: r.stats.cpu_usage_core_nanos.and_then(|n| {
                                rates.nano_cores(&r.stats.id.0, n, r.stats.timestamp)
                            }),
                            usage_core_nano_seconds: r.stats.cpu_usage_core_nanos,
                        },
                        memory: MemoryStats {
                            time: ts,
                            available_bytes: None,
                            usage_bytes: None,
                            working_set_bytes: r.stats.memory_working_set_bytes,
                        },
                    }
                })
                .collect();
        let sum = |f: &dyn Fn(&ContainerSummary) -> Option<u64>| {
            containers.iter().filter_map(f).reduce(|a, b| a + b)
        };
        let start_time = pods
            .get(uid)
            .and_then(|v| v.status.start_time.as_ref())
            .map(|t| t.0.to_string());
        out.push(PodSummary {
            pod_ref: PodReference {
                name: name.to_string(),
                namespace: namespace.to_string(),
                uid: uid.to_string(),
            },
            start_time,
            cpu: CpuStats {
                time: t.clone(),
                usage_nano_cores: sum(&|c| c.cpu.usage_nano_cores),
                usage_core_nano_seconds: sum(&|c| c.cpu.usage_core_nano_seconds),
            },
            memory: MemoryStats {
                time: t.clone(),
                available_bytes: None,
                usage_bytes: None,
                working_set_bytes: sum(&|c| c.memory.working_set_bytes),
            },
            containers,
        });
    }
    rates.retain(&live);
    Summary {
        node: node_summary,
        pods: out,
    }
}

/// `/metrics/resource` in the Prometheus text format kubelet's resource collector writes.
pub fn resource_metrics(
    node: &NodeUsage,
    pods: &PodsView,
    stats: &[ContainerStats],
    now: SystemTime,
) -> String {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis()
    };
    let secs = |n: u64| n as f64 / 1e9;
    let mut s = String::new();
    let family = |s: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(s, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
    };
    let all = rows(pods, stats);
    family(
        &mut s,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for r in &all {
        if let Some(n) = r.stats.cpu_usage_core_nanos {
            let _ = writeln!(
                s,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                r.container, r.namespace, r.pod, secs(n), ms(r.stats.timestamp)
            );
        }
    }
    family(
        &mut s,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for r in &all {
        if let Some(b) = r.stats.memory_working_set_bytes {
            let _ = writeln!(
                s,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                r.container, r.namespace, r.pod, b, ms(r.stats.timestamp)
            );
        }
    }
    family(
        &mut s,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    if let Some(n) = node.cpu_core_nanos {
        let _ = writeln!(s, "node_cpu_usage_seconds_total {} {}", secs(n), ms(now));
    }
    family(
        &mut s,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    if let Some(b) = node.memory_working_set_bytes {
        let _ = writeln!(s, "node_memory_working_set_bytes {} {}", b, ms(now));
    }
    let mut pod_cpu: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut pod_mem: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for r in &all {
        if let Some(n) = r.stats.cpu_usage_core_nanos {
            *pod_cpu.entry((r.namespace, r.pod)).or_default() += n;
        }
        if let Some(b) = r.stats.memory_working_set_bytes {
            *pod_mem.entry((r.namespace, r.pod)).or_default() += b;
        }
    }
    family(
        &mut s,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for ((ns, pod), n) in &pod_cpu {
        let _ = writeln!(
            s,
            "pod_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{pod}\"}} {} {}",
            secs(*n),
            ms(now)
        );
    }
    family(
        &mut s,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for ((ns, pod), b) in &pod_mem {
        let _ = writeln!(
            s,
            "pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{pod}\"}} {b} {}",
            ms(now)
        );
    }
    family(
        &mut s,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(s, "resource_scrape_error 0");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_usage_from_proc() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let meminfo = "MemTotal:  1000 kB\nMemFree:  400 kB\nMemAvailable:  700 kB\nInactive(file):  100 kB\n";
        let u = NodeUsage::parse(stat, meminfo);
        // 100 + 5 + 50 + 3 + 2 (+ steal 0) busy ticks of 10 ms.
        assert_eq!(u.cpu_core_nanos, Some(160 * 10_000_000));
        assert_eq!(u.memory_usage_bytes, Some(600 * 1024));
        assert_eq!(u.memory_working_set_bytes, Some(500 * 1024));
        assert_eq!(u.memory_available_bytes, Some(700 * 1024));
        assert_eq!(NodeUsage::parse("", ""), NodeUsage::default());
    }

    #[test]
    fn rates_need_two_samples() {
        let r = Rates::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(r.nano_cores("c", 1_000_000_000, t0), None);
        // Half a core over 2 s.
        assert_eq!(
            r.nano_cores("c", 2_000_000_000, t0 + Duration::from_secs(2)),
            Some(500_000_000)
        );
        // A counter that went back (a new container) gives no rate.
        assert_eq!(r.nano_cores("c", 5, t0 + Duration::from_secs(3)), None);
    }
}
