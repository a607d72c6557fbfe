//! `/metrics`: the agent's state and its containers' resource usage in the Prometheus text
//! format (`prometheus-client`), rendered per scrape from the views the agent already publishes
//! plus one `ListContainerStats` call. [`render`] is pure.
//!
//! Metrics:
//! - `staticlet_build_info{version}` 1;
//! - `staticlet_sources_seen`, `staticlet_runtime_ready`: 0/1 (what `/readyz` checks);
//! - `staticlet_pods{phase}`, `staticlet_pods_terminating`, `staticlet_pod_ready{namespace,pod}`;
//! - `staticlet_containers{state}` (running, waiting, terminated) and
//!   `staticlet_container_restarts{namespace,pod,container}`;
//! - `staticlet_manifests`, `staticlet_manifest_errors` (manifests whose current content is
//!   not applied), `staticlet_manifests_stale` (running a previous good version);
//! - with `--kubeconfig`: `staticlet_cluster_reachable` 0/1, `staticlet_mirror_pods`,
//!   `staticlet_mirror_errors`;
//! - `staticlet_relist_found_exits_total`: container exits the pod workers found only through
//!   the periodic relist, for which the runtime sent no event in time (0 when the runtime's
//!   events work: each such exit waited up to a relist period, 1 s, to be restarted);
//! - the agent process: `process_resident_memory_bytes`, `process_open_fds`, `process_threads`,
//!   `process_cpu_seconds_total` (Prometheus' standard names) and `staticlet_tasks` (live tokio
//!   tasks), which `bench/soak.sh` and the soak test follow for leaks;
//! - `container_cpu_usage_seconds_total{namespace,pod,container}` and
//!   `container_memory_working_set_bytes{...}`: kubelet's resource metrics names, from the
//!   runtime's container stats.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use staticlet_runtime::{labels, ContainerStats};

use crate::cluster::ClusterView;
use crate::config::ManifestRecord;
use crate::pod_workers::PodsView;
use crate::server::Readiness;

type L = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> L {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

/// Everything a scrape shows.
pub struct Input<'a> {
    pub pods: &'a PodsView,
    pub manifests: &'a [ManifestRecord],
    pub readiness: &'a Readiness,
    pub cluster: &'a ClusterView,
    /// The runtime's stats of staticlet's containers (empty if it could not be asked).
    pub stats: &'a [ContainerStats],
    pub counters: &'a crate::pod_workers::WorkerCounters,
    /// The agent process itself (None where /proc cannot be read).
    pub process: Option<ProcessStats>,
}

/// The agent process's own resources, read at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
    pub cpu_seconds: f64,
    /// Live tokio tasks.
    pub tasks: u64,
}

impl ProcessStats {
    /// This process's figures from /proc/self and the current tokio runtime.
    pub fn read() -> Option<ProcessStats> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): utime and stime are the 12th
        // and 13th of them, in clock ticks (USER_HZ, 100 on Linux).
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ProcessStats {
            resident_bytes: field("VmRSS:")? * 1024,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            threads: field("Threads:")?,
            cpu_seconds: ticks as f64 / 100.0,
            tasks: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks() as u64)
                .unwrap_or(0),
        })
    }
}

/// The Prometheus text exposition of `input`.
pub fn render(input: &Input<'_>) -> String {
    let mut reg = Registry::default();
    let info: Family<L, Gauge> = Family::default();
    info.get_or_create(&l(&[("version", env!("CARGO_PKG_VERSION"))]))
        .set(1);
    reg.register(
        "staticlet_build_info",
        "The running staticlet's version",
        info,
    );
    gauge(
        &mut reg,
        "staticlet_sources_seen",
        "1 once every pod source has been read",
        input.readiness.sources_seen as i64,
    );
    gauge(
        &mut reg,
        "staticlet_runtime_ready",
        "1 while the container runtime answers and is ready",
        input.readiness.runtime_ready as i64,
    );

    let phases: Family<L, Gauge> = Family::default();
    for p in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        phases.get_or_create(&l(&[("phase", p)])).set(0);
    }
    let ready: Family<L, Gauge> = Family::default();
    let containers: Family<L, Gauge> = Family::default();
    for s in ["running", "waiting", "terminated"] {
        containers.get_or_create(&l(&[("state", s)])).set(0);
    }
    let restarts: Family<L, Gauge> = Family::default();
    let mut terminating = 0;
    // pod UID → (namespace, pod name), for the resource metrics.
    let mut names: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for v in input.pods.values() {
        let (ns, name) = (v.pod.namespace.as_str(), v.pod.name.as_str());
        names.insert(v.pod.uid.as_str(), (ns, name));
        if v.terminating_since.is_some() {
            terminating += 1;
        }
        let st = &v.status;
        phases
            .get_or_create(&l(&[("phase", st.phase.as_deref().unwrap_or("Unknown"))]))
            .inc();
        let is_ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready
            .get_or_create(&l(&[("namespace", ns), ("pod", name)]))
            .set(is_ready as i64);
        let all = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        for c in all {
            let state = match &c.state {
                Some(s) if s.running.is_some() => "running",
                Some(s) if s.terminated.is_some() => "terminated",
                _ => "waiting",
            };
            containers.get_or_create(&l(&[("state", state)])).inc();
            restarts
                .get_or_create(&l(&[
                    ("namespace", ns),
                    ("pod", name),
                    ("container", &c.name),
                ]))
                .set(c.restart_count as i64);
        }
    }
    reg.register("staticlet_pods", "Static pods by phase", phases);
    gauge(
        &mut reg,
        "staticlet_pods_terminating",
        "Static pods being stopped",
        terminating,
    );
    reg.register(
        "staticlet_pod_ready",
        "1 when the pod's Ready condition is True",
        ready,
    );
    reg.register(
        "staticlet_containers",
        "Containers of static pods by state",
        containers,
    );
    reg.register(
        "staticlet_container_restarts",
        "restartCount of each container",
        restarts,
    );

    gauge(
        &mut reg,
        "staticlet_manifests",
        "Manifest files or URLs known",
        input.manifests.len() as i64,
    );
    gauge(
        &mut reg,
        "staticlet_manifest_errors",
        "Manifests whose current content is not applied (see `staticlet get manifests`)",
        input.manifests.iter().filter(|m| m.error.is_some()).count() as i64,
    );
    gauge(
        &mut reg,
        "staticlet_manifests_stale",
        "Manifests whose pods run a previous good version",
        input.manifests.iter().filter(|m| m.stale).count() as i64,
    );

    let found: Counter = Counter::default();
    found.inc_by(
        input
            .counters
            .relist_found_exits
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    reg.register(
        "staticlet_relist_found_exits",
        "Container exits found by the periodic relist because the runtime sent no event in time",
        found,
    );

    if let Some(p) = input.process {
        gauge(
            &mut reg,
            "process_resident_memory_bytes",
            "Resident memory of the agent process",
            p.resident_bytes as i64,
        );
        gauge(
            &mut reg,
            "process_open_fds",
            "Open file descriptors of the agent process",
            p.open_fds as i64,
        );
        gauge(
            &mut reg,
            "process_threads",
            "Threads of the agent process",
            p.threads as i64,
        );
        let cpu: Counter<f64, AtomicU64> = Counter::default();
        cpu.inc_by(p.cpu_seconds);
        reg.register(
            "process_cpu_seconds",
            "CPU time of the agent process (user and system), in seconds",
            cpu,
        );
        gauge(
            &mut reg,
            "staticlet_tasks",
            "Live tasks of the agent's async runtime",
            p.tasks as i64,
        );
    }

    let c = input.cluster;
    if c.enabled {
        gauge(
            &mut reg,
            "staticlet_cluster_reachable",
            "1 while the Node and its Lease are in sync with the API server",
            (c.error.is_none() && c.node_uid.is_some()) as i64,
        );
        gauge(
            &mut reg,
            "staticlet_mirror_pods",
            "Static pods with a mirror pod in the API server",
            c.mirrors
                .values()
                .filter(|m| m.mirror_uid.is_some())
                .count() as i64,
        );
        gauge(
            &mut reg,
            "staticlet_mirror_errors",
            "Static pods whose mirror pod the API server refused",
            c.mirrors.values().filter(|m| m.error.is_some()).count() as i64,
        );
    }

    let cpu: Family<L, Counter<f64, AtomicU64>> = Family::default();
    let mem: Family<L, Gauge> = Family::default();
    for s in input.stats {
        let uid = s.labels.get(labels::POD_UID).map(String::as_str);
        let container = s.labels.get(labels::CONTAINER_NAME).map(String::as_str);
        let (Some((ns, pod)), Some(container)) = (uid.and_then(|u| names.get(u)), container) else {
            continue;
        };
        let key = l(&[("namespace", ns), ("pod", pod), ("container", container)]);
        if let Some(n) = s.cpu_usage_core_nanos {
            cpu.get_or_create(&key).inc_by(n as f64 / 1e9);
        }
        if let Some(b) = s.memory_working_set_bytes {
            mem.get_or_create(&key).set(b as i64);
        }
    }
    reg.register(
        "container_cpu_usage_seconds",
        "Cumulative CPU time of the container, in seconds of one core",
        cpu,
    );
    reg.register(
        "container_memory_working_set_bytes",
        "Memory working set of the container (usage minus inactive file pages)",
        mem,
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests;
