//! The merger: the single owner of the desired pod set (≈ kubelet's `PodConfig` / `podStorage`).
//!
//! Sources send full snapshots; [`Merger::apply`] diffs a snapshot against that source's
//! previous one into [`PodChange`]s, stamps `kubernetes.io/config.seen` on new UIDs (kept on
//! updates), marks the source as seen, and resolves a pod name claimed by two sources (the file
//! source wins; the URL's record gets the error). Each addition of a UID is numbered
//! ([`DesiredPods::added`]), so a pod removed and added again (a manifest moved out of the
//! directory and back, as `kubeadm upgrade` does) is told apart from one that stayed even when a
//! consumer of the `watch` channel sees only the state after both. It is pure and synchronous;
//! [`run`] is its thin async shell that publishes the results on `watch` channels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use staticlet_manifest::{StaticPod, ANNOTATION_CONFIG_SEEN};
use staticlet_runtime::Clock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{rfc3339, ManifestRecord, SourceKind, SourceSnapshot, SourceUpdate};

/// What a snapshot changed, per pod UID (kubelet's ADD / UPDATE / REMOVE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodChange {
    /// A UID not seen before.
    Add { uid: String, name: String },
    /// A known UID whose content changed (only for manifests with a fixed `metadata.uid`).
    Update { uid: String, name: String },
    /// A UID that is no longer wanted.
    Remove { uid: String, name: String },
}

/// The desired state, as published to the pod manager.
#[derive(Debug, Clone, Default)]
pub struct DesiredPods {
    /// UID → pod, across all sources.
    pub pods: BTreeMap<String, Arc<StaticPod>>,
    /// True once every configured source has sent its first snapshot.
    pub all_sources_seen: bool,
    /// Grace periods (seconds) for pods no longer wanted that must not get their own: the
    /// node shutdown's (see `nodeshutdown`). Empty from the merger.
    pub grace_overrides: BTreeMap<String, i64>,
    /// Pods wanted but stopped on request (`staticlet stop pod`), by UID: not run, shown as
    /// stopped (see `control`). Empty from the merger.
    pub stopped: BTreeMap<String, Arc<StaticPod>>,
    /// Pods that must not start yet, by UID, with why (`staticlet.io/after`, see `ordering`):
    /// the pod manager starts no worker for them unless the runtime has them already.
    pub held: BTreeMap<String, String>,
    /// Events about a pod that no worker records (its rollouts, [`crate::rollout`]), by full
    /// name; shown with the events of the pod of that name.
    pub events: BTreeMap<String, crate::events::EventLog>,
    /// When each wanted UID was last added, as the merger's count of additions: it grows when
    /// a UID is removed and added again, which the pod manager answers with a restart of the
    /// pod, as kubelet restarts a static pod whose manifest was removed and put back (its
    /// REMOVE then ADD of the same UID). Filters pass it on unchanged.
    pub added: BTreeMap<String, u64>,
}

/// See the module doc.
#[derive(Debug)]
pub struct Merger {
    expected: BTreeSet<SourceKind>,
    snapshots: BTreeMap<SourceKind, SourceSnapshot>,
    /// The merged pods, stamped with `config.seen`.
    pods: BTreeMap<String, Arc<StaticPod>>,
    /// Name clashes between sources found by the last merge: (source, origin, message).
    clashes: Vec<(SourceKind, String, String)>,
    /// [`DesiredPods::added`] of the merged pods, and the count it is taken from.
    added: BTreeMap<String, u64>,
    additions: u64,
}

impl Merger {
    /// A merger waiting for the `expected` sources.
    pub fn new(expected: impl IntoIterator<Item = SourceKind>) -> Self {
        Self {
            expected: expected.into_iter().collect(),
            snapshots: BTreeMap::new(),
            pods: BTreeMap::new(),
            clashes: Vec::new(),
            added: BTreeMap::new(),
            additions: 0,
        }
    }

    /// Whether every expected source has sent a snapshot.
    pub fn all_sources_seen(&self) -> bool {
        self.expected.iter().all(|k| self.snapshots.contains_key(k))
    }

    /// Applies one snapshot at time `now`; returns what changed.
    pub fn apply(&mut self, update: SourceUpdate, now: SystemTime) -> Vec<PodChange> {
        self.snapshots.insert(update.kind, update.snapshot);

        // Merge all sources in source order: the first claim of a full name wins.
        let mut merged: BTreeMap<String, Arc<StaticPod>> = BTreeMap::new();
        let mut claims: BTreeMap<String, (SourceKind, String)> = BTreeMap::new();
        let mut clashes: Vec<(SourceKind, String, String)> = Vec::new();
        for (kind, snap) in &self.snapshots {
            for pod in &snap.pods {
                let full = pod.full_name();
                if let Some((k, origin)) = claims.get(&full) {
                    if k != kind {
                        clashes.push((
                            *kind,
                            pod.origin.to_string(),
                            format!(
                                "duplicate pod {}/{}: already defined by {} source {origin}; ignored",
                                pod.namespace,
                                pod.name,
                                k.as_str()
                            ),
                        ));
                        continue;
                    }
                }
                claims.insert(full, (*kind, pod.origin.to_string()));
                merged.insert(pod.uid.clone(), pod.clone());
            }
        }
        for (kind, origin, msg) in &clashes {
            if !self
                .clashes
                .iter()
                .any(|c| (&c.0, &c.1, &c.2) == (kind, origin, msg))
            {
                warn!(source = kind.as_str(), origin = %origin, "{msg}");
            }
        }
        self.clashes = clashes;

        let mut changes = Vec::new();
        for (uid, old) in &self.pods {
            if !merged.contains_key(uid) {
                changes.push(PodChange::Remove {
                    uid: uid.clone(),
                    name: old.name.clone(),
                });
            }
        }
        let mut next = BTreeMap::new();
        for (uid, pod) in merged {
            let stamped = match self.pods.get(&uid) {
                Some(old) => {
                    let seen = seen_of(old);
                    let mut pod = stamp(&pod, seen.as_deref().unwrap_or_default(), None);
                    Arc::make_mut(&mut pod).pod.metadata.creation_timestamp =
                        old.pod.metadata.creation_timestamp.clone();
                    if *old != pod {
                        changes.push(PodChange::Update {
                            uid: uid.clone(),
                            name: pod.name.clone(),
                        });
                        pod
                    } else {
                        old.clone()
                    }
                }
                None => {
                    changes.push(PodChange::Add {
                        uid: uid.clone(),
                        name: pod.name.clone(),
                    });
                    self.additions += 1;
                    self.added.insert(uid.clone(), self.additions);
                    stamp(&pod, &rfc3339_nanos(now), Some(now))
                }
            };
            next.insert(uid, stamped);
        }
        self.added.retain(|uid, _| next.contains_key(uid));
        self.pods = next;
        changes
    }

    /// The desired state now.
    pub fn desired(&self) -> DesiredPods {
        DesiredPods {
            pods: self.pods.clone(),
            all_sources_seen: self.all_sources_seen(),
            grace_overrides: BTreeMap::new(),
            events: BTreeMap::new(),
            stopped: BTreeMap::new(),
            held: BTreeMap::new(),
            added: self.added.clone(),
        }
    }

    /// Every manifest record of every source, sorted by source then origin.
    pub fn manifests(&self) -> Vec<ManifestRecord> {
        let mut out: Vec<ManifestRecord> = self
            .snapshots
            .values()
            .flat_map(|s| s.manifests.iter().cloned())
            .collect();
        for rec in &mut out {
            if let Some((_, _, msg)) = self
                .clashes
                .iter()
                .find(|c| c.0 == rec.source && c.1 == rec.origin)
            {
                rec.error = Some(msg.clone());
            }
        }
        out
    }
}

fn seen_of(pod: &StaticPod) -> Option<String> {
    pod.pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONFIG_SEEN)
        .cloned()
}

/// The pod with `config.seen` and, for a new UID, a creation timestamp (the time it was first
/// seen: there is no API server to set one).
fn stamp(pod: &Arc<StaticPod>, seen: &str, created: Option<SystemTime>) -> Arc<StaticPod> {
    let mut p = StaticPod::clone(pod);
    if let Some(t) = created {
        p.pod.metadata.creation_timestamp = Some(crate::status::time(t));
    }
    p.pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_CONFIG_SEEN.into(), seen.to_string());
    Arc::new(p)
}

/// `config.seen` as kubelet writes it: RFC 3339 with nanoseconds.
fn rfc3339_nanos(t: SystemTime) -> String {
    let base = rfc3339(t);
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}.{nanos:09}Z", base.trim_end_matches('Z'))
}

/// Runs the merger until `shutdown` or until every source has stopped.
pub async fn run(
    mut merger: Merger,
    mut rx: mpsc::Receiver<SourceUpdate>,
    desired: watch::Sender<Arc<DesiredPods>>,
    manifests: watch::Sender<Arc<Vec<ManifestRecord>>>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => return,
            u = rx.recv() => match u { Some(u) => u, None => return },
        };
        let kind = update.kind;
        let was_seen = merger.all_sources_seen();
        let changes = merger.apply(update, clock.now());
        for c in &changes {
            match c {
                PodChange::Add { uid, name } => {
                    info!(source = kind.as_str(), pod = %name, %uid, "pod added")
                }
                PodChange::Update { uid, name } => {
                    info!(source = kind.as_str(), pod = %name, %uid, "pod updated")
                }
                PodChange::Remove { uid, name } => {
                    info!(source = kind.as_str(), pod = %name, %uid, "pod removed")
                }
            }
        }
        if !was_seen && merger.all_sources_seen() {
            info!("all pod sources seen");
        }
        manifests.send_replace(Arc::new(merger.manifests()));
        if !changes.is_empty() || was_seen != merger.all_sources_seen() {
            desired.send_replace(Arc::new(merger.desired()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staticlet_manifest::Origin;
    use std::time::Duration;

    fn pod(name: &str, image: &str, origin: Origin) -> Arc<StaticPod> {
        let m = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n"
        );
        Arc::new(staticlet_manifest::load(m.as_bytes(), &origin, "node").unwrap())
    }

    fn file(name: &str, image: &str) -> Arc<StaticPod> {
        pod(name, image, Origin::File(format!("/m/{name}.yaml")))
    }

    fn snap(kind: SourceKind, pods: Vec<Arc<StaticPod>>) -> SourceUpdate {
        SourceUpdate {
            kind,
            snapshot: SourceSnapshot {
                pods,
                manifests: vec![],
            },
        }
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn diffs_snapshots_into_changes() {
        let mut m = Merger::new([SourceKind::File]);
        assert!(!m.all_sources_seen());
        let a = file("a", "img:1");
        let b = file("b", "img:1");
        let ch = m.apply(snap(SourceKind::File, vec![a.clone(), b.clone()]), t(0));
        assert_eq!(ch.len(), 2);
        assert!(m.all_sources_seen());
        // Same snapshot again: nothing.
        assert!(m
            .apply(snap(SourceKind::File, vec![a.clone(), b.clone()]), t(1))
            .is_empty());
        // Edited manifest = new UID: remove old + add new.
        let a2 = file("a", "img:2");
        let ch = m.apply(snap(SourceKind::File, vec![a2.clone(), b.clone()]), t(2));
        assert_eq!(
            ch,
            vec![
                PodChange::Remove {
                    uid: a.uid.clone(),
                    name: a.name.clone()
                },
                PodChange::Add {
                    uid: a2.uid.clone(),
                    name: a2.name.clone()
                },
            ]
        );
        // Empty snapshot removes everything.
        let ch = m.apply(snap(SourceKind::File, vec![]), t(3));
        assert_eq!(ch.len(), 2);
        assert!(m.desired().pods.is_empty());
    }

    #[test]
    fn each_addition_is_numbered_so_a_removal_and_readdition_shows() {
        let mut m = Merger::new([SourceKind::File]);
        let a = file("a", "img:1");
        let b = file("b", "img:1");
        let added = |m: &Merger| m.desired().added.into_iter().collect::<Vec<_>>();
        type Step = (Vec<Arc<StaticPod>>, Vec<(String, u64)>);
        let steps: Vec<Step> = vec![
            (
                vec![a.clone(), b.clone()],
                vec![(a.uid.clone(), 1), (b.uid.clone(), 2)],
            ),
            // Unchanged: same numbers.
            (
                vec![a.clone(), b.clone()],
                vec![(a.uid.clone(), 1), (b.uid.clone(), 2)],
            ),
            // a's manifest moved away: forgotten ...
            (vec![b.clone()], vec![(b.uid.clone(), 2)]),
            // ... and back: a later number, b's unchanged.
            (
                vec![a.clone(), b.clone()],
                vec![(a.uid.clone(), 3), (b.uid.clone(), 2)],
            ),
        ];
        for (i, (pods, want)) in steps.into_iter().enumerate() {
            m.apply(snap(SourceKind::File, pods), t(i as u64));
            let mut want = want;
            want.sort();
            assert_eq!(added(&m), want, "step {i}");
        }
    }

    #[test]
    fn seen_is_stamped_once_and_kept() {
        let mut m = Merger::new([SourceKind::File]);
        let a = file("a", "img:1");
        m.apply(snap(SourceKind::File, vec![a.clone()]), t(0));
        let seen = |m: &Merger| seen_of(&m.desired().pods[&a.uid]).unwrap();
        let first = seen(&m);
        assert_eq!(first, "2023-11-14T22:13:20.000000000Z");
        m.apply(snap(SourceKind::File, vec![a.clone()]), t(50));
        assert_eq!(seen(&m), first);
    }

    #[test]
    fn fixed_uid_content_change_is_an_update() {
        let mk = |image: &str| {
            let m = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  uid: fixed\nspec:\n  containers:\n  - name: c\n    image: {image}\n");
            Arc::new(
                staticlet_manifest::load(m.as_bytes(), &Origin::File("/m/a.yaml".into()), "node")
                    .unwrap(),
            )
        };
        let mut m = Merger::new([SourceKind::File]);
        m.apply(snap(SourceKind::File, vec![mk("img:1")]), t(0));
        let ch = m.apply(snap(SourceKind::File, vec![mk("img:2")]), t(1));
        assert_eq!(
            ch,
            vec![PodChange::Update {
                uid: "fixed".into(),
                name: "a-node".into()
            }]
        );
        assert_eq!(
            m.desired().pods["fixed"].spec().containers[0]
                .image
                .as_deref(),
            Some("img:2")
        );
    }

    #[test]
    fn file_source_wins_name_clash_and_url_record_says_why() {
        let mut m = Merger::new([SourceKind::File, SourceKind::Http]);
        let f = file("a", "img:1");
        let u = pod("a", "img:9", Origin::Url("http://h/pods".into()));
        m.apply(snap(SourceKind::File, vec![f.clone()]), t(0));
        assert!(!m.all_sources_seen());
        let mut up = snap(SourceKind::Http, vec![u.clone()]);
        up.snapshot.manifests.push(ManifestRecord {
            source: SourceKind::Http,
            origin: "http://h/pods".into(),
            pods: vec![],
            hashes: vec![],
            error: None,
            last_applied: None,
            stale: false,
            seen: None,
            applied: None,
            ready: None,
            running: None,
            rollout: None,
        });
        m.apply(up, t(1));
        assert!(m.all_sources_seen());
        let d = m.desired();
        assert_eq!(d.pods.len(), 1);
        assert!(d.pods.contains_key(&f.uid));
        let rec = &m.manifests()[0];
        assert!(rec
            .error
            .as_deref()
            .unwrap()
            .contains("already defined by file source /m/a.yaml"));
    }
}
