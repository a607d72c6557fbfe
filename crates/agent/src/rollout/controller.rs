//! The async shell of the rollout machines: the one owner of every pod's [`Rollout`].
//!
//! It sits between the merger and the pod manager. From the merger's desired pods (what the
//! sources want) and the published pod statuses it feeds each pod's machine ([`Input::Wanted`],
//! [`Input::Ready`], [`Input::Expired`] when a deadline passes), stores every change
//! ([`super::store`]), and publishes the pods to run: the wanted version, or after a rollback the
//! last Ready one (parsed again from its stored content; nothing if it no longer validates). It
//! also adds what it knows to the manifest records (`applied`, `ready`, `running`, `rollout`)
//! and publishes the rollout events by pod full name.
//!
//! The pod manager's invariant (a new UID of a full name starts only once the previous one has
//! stopped) makes a rollback safe for hostNetwork and hostPort pods: the failing version stops,
//! then the old one starts again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
use staticlet_manifest::{Origin, StaticPod, ANNOTATION_CONFIG_SEEN};
use staticlet_runtime::Clock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::store::{Store, Writer};
use super::{Input, Phase, Rollout, Run};
use crate::config::merge::DesiredPods;
use crate::config::{HashTime, ManifestRecord, RolloutStatus, SourceKind};
use crate::events::EventLog;
use crate::pod_workers::{PodView, PodsView};

/// See the module doc.
pub struct Controller {
    /// Writes the state off the path that starts pods.
    writer: Writer,
    /// `--rollout-ready-deadline` (the annotation wins).
    node_deadline: Option<Duration>,
    node: String,
    clock: Clock,
    rollouts: BTreeMap<String, Rollout>,
    /// The last Ready version's pod, parsed from its content, by full name (same `Arc` while
    /// its hash is the same, so the pod manager sees no change).
    good_pods: HashMap<String, (String, Result<Arc<StaticPod>, String>)>,
    events: BTreeMap<String, EventLog>,
    /// Since when the live pod of each full name (by content hash) has been Ready without a
    /// break.
    ready_since: HashMap<String, (String, SystemTime)>,
}

impl Controller {
    /// A controller storing its state in `store`, loading what an earlier run left there.
    /// Call it on a tokio runtime: its writer task starts here.
    pub fn new(store: Store, node_deadline: Option<Duration>, node: &str, clock: Clock) -> Self {
        let rollouts = store
            .load_all()
            .into_iter()
            .map(|r| (r.full_name.clone(), r))
            .collect();
        Self {
            writer: Writer::start(store),
            node_deadline: node_deadline.filter(|d| !d.is_zero()),
            node: node.to_string(),
            clock,
            rollouts,
            good_pods: HashMap::new(),
            events: BTreeMap::new(),
            ready_since: HashMap::new(),
        }
    }

    fn save(&self, r: &Rollout) {
        self.writer.save(r);
    }

    fn note(&mut self, full_name: &str, notes: Vec<super::Note>, now: SystemTime) {
        for n in notes {
            match n.type_ {
                "Warning" => {
                    warn!(pod = %full_name, reason = n.reason, "{}", n.message)
                }
                _ => info!(pod = %full_name, reason = n.reason, "{}", n.message),
            }
            self.events
                .entry(full_name.to_string())
                .or_default()
                .record(n.type_, n.reason, &n.message, now);
        }
    }

    /// The last Ready version of `r` as a pod (cached by hash).
    fn good_pod(&mut self, r: &Rollout) -> Option<Result<Arc<StaticPod>, String>> {
        let good = r.good.as_ref()?;
        if let Some((hash, pod)) = self.good_pods.get(&r.full_name) {
            if *hash == good.hash {
                return Some(pod.clone());
            }
        }
        let origin = if r.url {
            Origin::Url(r.origin.clone())
        } else {
            Origin::File(r.origin.clone())
        };
        let parsed = staticlet_manifest::load(good.content.as_bytes(), &origin, &self.node)
            .map_err(|e| e.lines().join("; "))
            .map(|mut p| {
                // As the merger stamps a pod it sees: this version is seen again now.
                let seen = crate::config::rfc3339(self.clock.now());
                p.pod
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ANNOTATION_CONFIG_SEEN.into(), seen);
                p.pod.metadata.creation_timestamp = Some(crate::status::time(self.clock.now()));
                Arc::new(p)
            });
        self.good_pods
            .insert(r.full_name.clone(), (good.hash.clone(), parsed.clone()));
        Some(parsed)
    }

    /// Feeds every machine from what the sources want and what the pods show at `now`;
    /// returns the pods to run.
    pub fn sync(&mut self, desired: &DesiredPods, view: &PodsView, now: SystemTime) -> DesiredPods {
        let mut out = DesiredPods {
            pods: BTreeMap::new(),
            all_sources_seen: desired.all_sources_seen,
            events: BTreeMap::new(),
            grace_overrides: desired.grace_overrides.clone(),
            stopped: desired.stopped.clone(),
            held: desired.held.clone(),
            added: desired.added.clone(),
        };
        let mut wanted_names = std::collections::HashSet::new();
        let live = live_by_name(view);
        for pod in desired.pods.values() {
            let full = pod.full_name();
            wanted_names.insert(full.clone());
            let (origin, url) = match &pod.origin {
                Origin::File(f) => (f.clone(), false),
                Origin::Url(u) => (u.clone(), true),
            };
            let mut r = self
                .rollouts
                .remove(&full)
                .unwrap_or_else(|| Rollout::new(full.clone(), origin.clone(), url));
            let before = r.clone();
            r.origin = origin;
            r.url = url;
            let deadline = match pod.ready_deadline() {
                Some(d) => Some(d),
                None => self.node_deadline,
            };
            let mut notes = r.step(Input::Wanted {
                hash: &pod.content_hash,
                uid: &pod.uid,
                deadline,
                now,
            });
            match live.get(&full).copied().filter(|v| is_ready(&v.status)) {
                Some(v) => {
                    let since = match self.ready_since.get(&full) {
                        Some((hash, since)) if *hash == v.pod.content_hash => *since,
                        _ => {
                            self.ready_since
                                .insert(full.clone(), (v.pod.content_hash.clone(), now));
                            now
                        }
                    };
                    notes.extend(r.step(Input::Ready {
                        hash: &v.pod.content_hash,
                        uid: &v.pod.uid,
                        content: &v.pod.content,
                        since,
                        now,
                    }));
                }
                None => {
                    self.ready_since.remove(&full);
                }
            }
            if r.due(now) {
                let failure = describe(live.get(&full).copied().filter(|v| v.pod.uid == pod.uid));
                let target = self.good_pod(&r);
                let target = match &target {
                    Some(Ok(_)) | None => Ok(()),
                    Some(Err(e)) => Err(e.as_str()),
                };
                notes.extend(r.step(Input::Expired {
                    now,
                    failure: &failure,
                    target,
                }));
            }
            self.note(&full, notes, now);
            match r.running() {
                Run::Wanted => {
                    out.pods.insert(pod.uid.clone(), pod.clone());
                }
                Run::Good => match self.good_pod(&r) {
                    Some(Ok(g)) => {
                        out.pods.insert(g.uid.clone(), g);
                    }
                    // Checked when rolling back; a stored version that stopped parsing since
                    // (an agent upgrade) runs nothing rather than the failed version.
                    Some(Err(e)) => {
                        warn!(pod = %full, error = %e, "the last Ready version does not validate; running nothing")
                    }
                    None => {}
                },
                Run::Nothing => {}
            }
            if r != before {
                self.save(&r);
            }
            self.rollouts.insert(full, r);
        }
        // Pods no source wants any more are forgotten, once every source has spoken.
        if desired.all_sources_seen {
            let gone: Vec<String> = self
                .rollouts
                .keys()
                .filter(|n| !wanted_names.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                self.rollouts.remove(&name);
                self.good_pods.remove(&name);
                self.events.remove(&name);
                self.ready_since.remove(&name);
                self.writer.remove(&name);
            }
        }
        out.events = self.events.clone();
        out
    }

    /// When to look again without a change: the earliest deadline of a rollout in progress,
    /// or when a Ready pod will have been Ready for [`super::SETTLE`].
    pub fn next_wake(&self) -> Option<SystemTime> {
        let settles = self.ready_since.iter().filter_map(|(name, (hash, since))| {
            let r = self.rollouts.get(name)?;
            // Only a version not yet recorded as Ready needs the wake-up.
            let recorded = r.good.as_ref().is_some_and(|g| g.hash == *hash);
            (!recorded).then_some(*since + super::SETTLE)
        });
        self.rollouts
            .values()
            .filter_map(Rollout::deadline)
            .chain(settles)
            .min()
    }

    /// The manifest records with what the rollouts know (file records only: a URL holds many
    /// pods).
    pub fn annotate(&self, records: &[ManifestRecord]) -> Vec<ManifestRecord> {
        let mut out = records.to_vec();
        for rec in &mut out {
            if rec.source != SourceKind::File {
                continue;
            }
            let Some(r) = self
                .rollouts
                .values()
                .find(|r| !r.url && r.origin == rec.origin)
            else {
                continue;
            };
            rec.applied = r.wanted.as_ref().map(|w| HashTime {
                hash: w.hash.clone(),
                time: w.at,
            });
            rec.ready = r.good.as_ref().map(|g| HashTime {
                hash: g.hash.clone(),
                time: g.ready_at,
            });
            rec.running = r.running_hash().map(str::to_string);
            rec.rollout = Some(match &r.phase {
                Phase::Steady => RolloutStatus {
                    state: "steady",
                    deadline: None,
                    rolled_back_from: None,
                    rolled_back_to: None,
                    message: None,
                },
                Phase::Progressing { deadline, .. } => RolloutStatus {
                    state: "progressing",
                    deadline: Some(*deadline),
                    rolled_back_from: None,
                    rolled_back_to: None,
                    message: None,
                },
                Phase::RolledBack { from, to, .. } => RolloutStatus {
                    state: "rolledBack",
                    deadline: None,
                    rolled_back_from: Some(from.clone()),
                    rolled_back_to: to.clone(),
                    message: r.message(),
                },
            });
        }
        out
    }

    /// Runs until `shutdown`: reads the merger's desired pods and manifest records and the
    /// pods' statuses; publishes the pods to run and the annotated records.
    pub async fn run(
        mut self,
        desired_in: watch::Receiver<Arc<DesiredPods>>,
        manifests_in: watch::Receiver<Arc<Vec<ManifestRecord>>>,
        pods: watch::Receiver<Arc<PodsView>>,
        desired_out: watch::Sender<Arc<DesiredPods>>,
        manifests_out: watch::Sender<Arc<Vec<ManifestRecord>>>,
        shutdown: CancellationToken,
    ) {
        self.run_loop(
            desired_in,
            manifests_in,
            pods,
            desired_out,
            manifests_out,
            shutdown,
        )
        .await;
        // What was decided is stored before the agent goes.
        self.writer.flush().await;
    }

    async fn run_loop(
        &mut self,
        mut desired_in: watch::Receiver<Arc<DesiredPods>>,
        mut manifests_in: watch::Receiver<Arc<Vec<ManifestRecord>>>,
        mut pods: watch::Receiver<Arc<PodsView>>,
        desired_out: watch::Sender<Arc<DesiredPods>>,
        manifests_out: watch::Sender<Arc<Vec<ManifestRecord>>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let desired = desired_in.borrow_and_update().clone();
            let view = pods.borrow_and_update().clone();
            let records = manifests_in.borrow_and_update().clone();
            let now = self.clock.now();
            let next = self.sync(&desired, &view, now);
            desired_out.send_if_modified(|old| {
                let same = old.all_sources_seen == next.all_sources_seen
                    && old.events == next.events
                    && old.pods.len() == next.pods.len()
                    && old
                        .pods
                        .iter()
                        .zip(next.pods.iter())
                        .all(|((ua, a), (ub, b))| ua == ub && Arc::ptr_eq(a, b));
                if !same {
                    *old = Arc::new(next);
                }
                !same
            });
            let annotated = self.annotate(&records);
            // What the records say of a rollout is on disk before anyone can read it (the
            // pods to run went out above without waiting for the disk).
            if **manifests_out.borrow() != annotated {
                self.writer.flush().await;
            }
            manifests_out.send_if_modified(|old| {
                let changed = **old != annotated;
                if changed {
                    *old = Arc::new(annotated);
                }
                changed
            });
            let wake = self.next_wake().map(|d| self.clock.instant_at(d));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = desired_in.changed() => if r.is_err() { return },
                r = manifests_in.changed() => if r.is_err() { return },
                r = pods.changed() => if r.is_err() { return },
                _ = sleep_until(wake) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The pods that are not terminating, by full name (the first by UID where two share one),
/// built once per pass: a lookup per wanted pod in the whole view would make a pass cost the
/// square of the number of pods.
fn live_by_name(view: &PodsView) -> std::collections::HashMap<String, &PodView> {
    let mut out = std::collections::HashMap::new();
    for v in view.values().filter(|v| v.terminating_since.is_none()) {
        out.entry(v.pod.full_name()).or_insert(&**v);
    }
    out
}

/// Whether the pod's `Ready` condition is true (all containers ready; readiness probes count).
pub fn is_ready(status: &PodStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Why a pod is not Ready, for the `RolledBack` event: each container that is not ready with
/// its exit reason, waiting reason, or last readiness probe output.
pub fn describe(view: Option<&PodView>) -> String {
    let Some(v) = view else {
        return "the new version was not started yet (the previous version was still stopping)"
            .into();
    };
    let st = &v.status;
    let probe = v
        .events
        .iter()
        .filter(|e| e.reason == "Unhealthy" && e.message.starts_with("Readiness probe"))
        .last()
        .map(|e| e.message.clone());
    let mut parts = Vec::new();
    let all = st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten());
    for c in all {
        if c.ready {
            continue;
        }
        if let Some(p) = container_problem(c, probe.as_deref()) {
            parts.push(p);
        }
    }
    if parts.is_empty() {
        let cond = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready" && c.status != "True");
        return match cond {
            Some(c) => format!(
                "pod is {} and not Ready: {}",
                st.phase.as_deref().unwrap_or("Pending"),
                c.message
                    .as_deref()
                    .or(c.reason.as_deref())
                    .unwrap_or("no reason given")
            ),
            None => format!(
                "pod is {} and not Ready",
                st.phase.as_deref().unwrap_or("Pending")
            ),
        };
    }
    parts.join("; ")
}

fn container_problem(c: &ContainerStatus, probe: Option<&str>) -> Option<String> {
    let name = &c.name;
    let last_exit = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            format!(
                "exited with code {} ({})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("Error")
            )
        });
    let state = c.state.as_ref()?;
    if let Some(t) = &state.terminated {
        let mut s = format!(
            "container {name} exited with code {} ({})",
            t.exit_code,
            t.reason.as_deref().unwrap_or("Error")
        );
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        return Some(s);
    }
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or("Waiting");
        let mut s = format!("container {name} is waiting ({reason})");
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        if let Some(e) = last_exit {
            s.push_str(&format!("; it last {e}"));
        }
        return Some(s);
    }
    if state.running.is_some() {
        let mut s = format!("container {name} is running but not ready");
        if let Some(p) = probe {
            s.push_str(&format!(": {p}"));
        }
        if let Some(e) = last_exit {
            s.push_str(&format!("; it last {e}"));
        }
        return Some(s);
    }
    None
}
