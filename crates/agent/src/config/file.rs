//! The manifest directory (or single file) source (≈ kubelet's `config/file.go`).
//!
//! Two triggers, one action: an inotify watch (the `notify` crate) and a periodic timer
//! (`--file-check-frequency`) both cause a full [`FileSource::relist`], whose result is sent as
//! one snapshot. Relisting on every event (at once when a file was closed after writing, renamed
//! or removed; otherwise after a short debounce) instead of applying per-event
//! deltas makes renames, symlinked files, editors that replace files and partial writes all
//! converge to what is on disk.
//!
//! One thing a relist alone cannot see is a file removed (or renamed away) and put back between
//! two relists, as `kubeadm upgrade` does with a manifest it backs up and restores: kubelet,
//! which applies each inotify event, removes the pod and adds it again, and so restarts it. The
//! watch therefore notes the paths that left the directory; a relist that finds such a file
//! back, with the pod of the previous snapshot, first sends the snapshot without that pod
//! ([`removal_gap`]), so the merger sees the removal and the return (and numbers the return,
//! see [`super::merge::DesiredPods::added`]) as kubelet would.
//!
//! Differences from kubelet, on purpose: only `*.yaml`, `*.yml` and `*.json` are read (editor
//! backups never become pods; every skipped file is logged once); a manifest that stops parsing
//! keeps its pod at the last good version instead of killing it; two files defining the same pod
//! are reported with both names (the first in sorted path order wins).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::Watcher;
use sha2::{Digest, Sha256};
use staticlet_manifest::{Origin, StaticPod, MAX_MANIFEST_BYTES};
use staticlet_runtime::Clock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lastgood::{self, LastGood};
use super::{ManifestRecord, SourceKind, SourceSnapshot, SourceUpdate};

/// File extensions read from a manifest directory.
pub const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Set by the watcher when a change is complete (see [`is_complete`]).
#[derive(Default)]
struct Complete {
    seen: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    /// Paths that left the directory (removed, renamed away) since the last relist.
    removed: std::sync::Mutex<HashSet<PathBuf>>,
}

/// The paths a watch event says left the directory: removed, or renamed away (inotify's
/// `IN_MOVED_FROM`; a rename within the directory is also reported as both names, the first
/// being the old one).
fn removed_paths(ev: &notify::Event) -> &[PathBuf] {
    use notify::event::{ModifyKind, RenameMode};
    use notify::EventKind;
    match ev.kind {
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => &ev.paths,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => &ev.paths[..ev.paths.len().min(1)],
        _ => &[],
    }
}

/// The snapshot to send before `snap`, if a pod of the previous snapshot (`last`, its UIDs)
/// comes from a file that was removed or renamed away (`removed`) and is back: `snap` without
/// those pods and their manifests' records, so that the merger sees the pod go and come back,
/// as kubelet's event-by-event file source does. `None` if there is no such pod.
fn removal_gap(
    snap: &SourceSnapshot,
    removed: &HashSet<PathBuf>,
    last: &[String],
) -> Option<SourceSnapshot> {
    let back = |origin: &Origin| match origin {
        Origin::File(f) => removed.contains(Path::new(f)),
        Origin::Url(_) => false,
    };
    let gone: HashSet<&str> = snap
        .pods
        .iter()
        .filter(|p| back(&p.origin) && last.contains(&p.uid))
        .map(|p| p.uid.as_str())
        .collect();
    if gone.is_empty() {
        return None;
    }
    Some(SourceSnapshot {
        pods: snap
            .pods
            .iter()
            .filter(|p| !gone.contains(p.uid.as_str()))
            .cloned()
            .collect(),
        manifests: snap
            .manifests
            .iter()
            .filter(|m| !removed.contains(Path::new(&m.origin)))
            .cloned()
            .collect(),
    })
}

/// Events after which a file is whole: written and closed, renamed into place, removed. Other
/// events (creation, writes in progress) wait for one of these or for [`DEBOUNCE`].
fn is_complete(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

/// Whether a watch event may mean the manifests changed. Reads are not changes: the relist
/// itself opens and reads every manifest, and counting those events would relist forever.
/// Dotfiles (temporary files of editors and atomic writers) are ignored until renamed.
fn triggers_relist(res: &notify::Result<notify::Event>) -> bool {
    use notify::event::{AccessKind, AccessMode};
    use notify::EventKind;
    let Ok(ev) = res else {
        // A watch error (queue overflow, ...) may hide any change.
        return true;
    };
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    ev.paths.iter().any(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    })
}

/// How long to wait after a watch event for more events before relisting (when no event says
/// the change is complete).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Retry period of a watch that cannot be set up (the path does not exist yet), as kubelet.
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    /// When `digest` was first read.
    seen_at: SystemTime,
    parsed: Result<Arc<StaticPod>, String>,
    good: Option<Arc<StaticPod>>,
    applied_at: Option<SystemTime>,
    error: Option<String>,
}

/// The file source. Owns the per-file state; see the module doc.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    node: String,
    check_frequency: Duration,
    lastgood: Option<LastGood>,
    clock: Clock,
    entries: BTreeMap<PathBuf, Entry>,
    logged: HashSet<(PathBuf, &'static str)>,
    missing_logged: bool,
    /// `--manifest-permissions` ([`super::trust`]).
    policy: super::trust::Policy,
    /// Trust problems already warned about, per file.
    trust_warned: HashSet<(PathBuf, String)>,
}

impl FileSource {
    /// A source reading `path` (a directory or one file) for node `node`. `path` should be
    /// absolute: it is part of every pod's identity. With `lastgood`, accepted manifests are
    /// remembered on disk.
    pub fn new(
        path: impl Into<PathBuf>,
        node: &str,
        check_frequency: Duration,
        lastgood: Option<LastGood>,
        clock: Clock,
    ) -> Self {
        let path: PathBuf = path.into();
        let s = path.to_string_lossy();
        let path = PathBuf::from(if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            &s
        });
        Self {
            path,
            node: node.to_string(),
            check_frequency,
            lastgood,
            clock,
            entries: BTreeMap::new(),
            logged: HashSet::new(),
            missing_logged: false,
            policy: super::trust::Policy::default(),
            trust_warned: HashSet::new(),
        }
    }

    /// What to do with a manifest someone other than root could have written.
    pub fn with_permissions(mut self, policy: super::trust::Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The trust problems of `file` (module [`super::trust`]): under `Warn` each is logged
    /// once and `None` is returned; under `Refuse` the reason not to apply it.
    fn distrust(&mut self, file: &Path) -> Option<String> {
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            file.parent().unwrap_or(Path::new("/")).to_path_buf()
        };
        let problems = super::trust::problems(&dir, file);
        if problems.is_empty() {
            return None;
        }
        match self.policy {
            super::trust::Policy::Warn => {
                for p in problems {
                    if self.trust_warned.insert((file.to_path_buf(), p.clone())) {
                        warn!(file = %file.display(), problem = %p, "manifest could be written by someone other than root (applied; --manifest-permissions=refuse would refuse it)");
                    }
                }
                None
            }
            super::trust::Policy::Refuse => Some(format!(
                "refused (--manifest-permissions=refuse): {}",
                problems.join("; ")
            )),
        }
    }

    fn log_once(&mut self, path: &Path, what: &'static str, msg: &str) {
        if self.logged.insert((path.to_path_buf(), what)) {
            info!(file = %path.display(), "{msg}");
        }
    }

    /// The files to read now, sorted.
    fn candidates(&mut self) -> Vec<PathBuf> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                if !self.missing_logged {
                    warn!(path = %self.path.display(), error = %e, "manifest path unreadable, running no file pods from it");
                    self.missing_logged = true;
                }
                return Vec::new();
            }
        };
        self.missing_logged = false;
        if !meta.is_dir() {
            return vec![self.path.clone()];
        }
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot list manifest directory");
                return self.entries.keys().cloned().collect();
            }
        };
        let mut out = Vec::new();
        for de in rd.flatten() {
            let name = de.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let p = de.path();
            let meta = match std::fs::metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    self.log_once(&p, "stat", &format!("skipping manifest: {e}"));
                    continue;
                }
            };
            if meta.is_dir() {
                self.log_once(
                    &p,
                    "dir",
                    "skipping directory: manifest directories are not read recursively",
                );
                continue;
            }
            if !meta.is_file() {
                self.log_once(&p, "special", "skipping: not a regular file");
                continue;
            }
            let ext_ok = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
            if !ext_ok {
                self.log_once(
                    &p,
                    "ext",
                    "skipping file: only .yaml, .yml and .json files are read",
                );
                continue;
            }
            out.push(p);
        }
        out.sort();
        out
    }

    fn read(path: &Path) -> Result<Vec<u8>, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        let mut buf = Vec::new();
        f.take(MAX_MANIFEST_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read: {e}"))?;
        Ok(buf)
    }

    fn parse(&self, origin: &str, data: &[u8]) -> Result<Arc<StaticPod>, String> {
        // One line per problem, so `staticlet validate` can print them as they are.
        staticlet_manifest::load(data, &Origin::File(origin.to_string()), &self.node)
            .map(Arc::new)
            .map_err(|e| e.lines().join("\n"))
    }

    /// Reads the path now and returns the full snapshot.
    pub fn relist(&mut self) -> SourceSnapshot {
        let files = self.candidates();
        let now = self.clock.now();
        let present: HashSet<&PathBuf> = files.iter().collect();
        let gone: Vec<PathBuf> = self
            .entries
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(e) = self.entries.remove(&p) {
                if let Some(good) = &e.good {
                    info!(file = %p.display(), pod = %good.name, "manifest removed");
                }
            }
            if let Some(lg) = &self.lastgood {
                lg.remove(&p.to_string_lossy());
            }
        }

        // First pass: (re)parse changed files.
        for p in &files {
            let origin = p.to_string_lossy().to_string();
            // A refused file is an invalid one; its digest is cleared so that it is parsed
            // again once trusted.
            let refused = self.distrust(p);
            let (digest, parsed) = match refused {
                Some(why) => ([0; 32], Err(why)),
                None => match Self::read(p) {
                    Ok(data) => {
                        let digest: [u8; 32] = Sha256::digest(&data).into();
                        if self.entries.get(p).is_some_and(|e| e.digest == digest) {
                            continue;
                        }
                        (digest, self.parse(&origin, &data))
                    }
                    Err(e) => ([0; 32], Err(e)),
                },
            };
            if let Some(e) = self.entries.get_mut(p) {
                e.digest = digest;
                e.seen_at = now;
                e.parsed = parsed;
                continue;
            }
            // First sight of this file: a remembered good version backs a bad one.
            let good = match (&parsed, &self.lastgood) {
                (Err(_), Some(lg)) => lg.load(&origin).and_then(|entry| {
                    let pod = self.parse(&origin, entry.content.as_bytes()).ok()?;
                    info!(file = %p.display(), pod = %pod.name, "manifest is invalid; running its last good version from the previous agent run");
                    Some(pod)
                }),
                _ => None,
            };
            let applied_at = good.as_ref().map(|_| now);
            self.entries.insert(
                p.clone(),
                Entry {
                    digest,
                    seen_at: now,
                    parsed,
                    good,
                    applied_at,
                    error: None,
                },
            );
        }

        // Second pass, in sorted path order: claims, last-known-good, records.
        let mut claimed: HashMap<String, PathBuf> = HashMap::new();
        let mut pods = Vec::new();
        let mut manifests = Vec::new();
        for p in &files {
            let Some(entry) = self.entries.get_mut(p) else {
                continue;
            };
            let origin = p.to_string_lossy().to_string();
            let error = match &entry.parsed {
                Ok(pod) => match claimed.get(&pod.full_name()) {
                    Some(other) => Some(format!(
                        "duplicate pod {}/{}: already defined by {}; this file is ignored",
                        pod.namespace,
                        pod.name,
                        other.display()
                    )),
                    None => {
                        if entry.good.as_ref().map(|g| &g.uid) != Some(&pod.uid) {
                            entry.applied_at = Some(now);
                            if let Some(lg) = &self.lastgood {
                                if let Ok(content) = std::fs::read_to_string(p) {
                                    let e = lastgood::Entry {
                                        origin: origin.clone(),
                                        content,
                                        etag: None,
                                        last_modified: None,
                                    };
                                    if let Err(err) = lg.store(&e) {
                                        warn!(file = %p.display(), error = %err, "cannot remember last good manifest");
                                    }
                                }
                            }
                        }
                        entry.good = Some(pod.clone());
                        None
                    }
                },
                Err(e) => Some(e.clone()),
            };
            if error != entry.error {
                match (&error, &entry.good) {
                    (Some(err), Some(good)) => {
                        warn!(file = %p.display(), pod = %good.name, error = %err, "manifest not applied; the pod keeps running at its last good version")
                    }
                    (Some(err), None) => {
                        warn!(file = %p.display(), error = %err, "manifest not applied")
                    }
                    (None, _) => info!(file = %p.display(), "manifest applied"),
                }
                entry.error = error.clone();
            }
            let mut record = ManifestRecord {
                source: SourceKind::File,
                origin,
                pods: vec![],
                hashes: vec![],
                error,
                last_applied: None,
                stale: false,
                seen: (entry.digest != [0; 32]).then(|| super::HashTime {
                    hash: entry.digest.iter().map(|b| format!("{b:02x}")).collect(),
                    time: entry.seen_at,
                }),
                applied: None,
                ready: None,
                running: None,
                rollout: None,
            };
            if let Some(good) = &entry.good {
                if let std::collections::hash_map::Entry::Vacant(v) =
                    claimed.entry(good.full_name())
                {
                    v.insert(p.clone());
                    record
                        .pods
                        .push(format!("{}/{}", good.namespace, good.name));
                    record.hashes.push(good.uid.clone());
                    record.last_applied = entry.applied_at;
                    record.stale = record.error.is_some();
                    pods.push(good.clone());
                }
            }
            manifests.push(record);
        }
        debug!(path = %self.path.display(), pods = pods.len(), "file source relisted");
        SourceSnapshot { pods, manifests }
    }

    fn watch(
        &self,
        tx: mpsc::Sender<()>,
        complete: Arc<Complete>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        let target = std::fs::metadata(&self.path)
            .map_err(|e| notify::Error::io(e).add_path(self.path.clone()))
            .map(|m| {
                if m.is_dir() {
                    self.path.clone()
                } else {
                    // Watch the directory of a single file, so a file replaced by rename
                    // (as editors and `kubectl` do) is still seen.
                    self.path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| "/".into())
                }
            })?;
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = &res {
                let gone = removed_paths(ev);
                if !gone.is_empty() {
                    complete
                        .removed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend(gone.iter().cloned());
                }
            }
            if triggers_relist(&res) {
                if res.as_ref().is_ok_and(|ev| is_complete(&ev.kind)) {
                    complete
                        .seen
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    complete.notify.notify_one();
                }
                // A full channel means a relist is already pending.
                let _ = tx.try_send(());
            }
        })?;
        w.watch(&target, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    }

    /// Runs the source until `shutdown`, sending a snapshot at start and after every change.
    pub async fn run(mut self, tx: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
        let (ev_tx, mut ev_rx) = mpsc::channel::<()>(1);
        let complete = Arc::new(Complete::default());
        let mut watcher = None;
        let mut retry = WATCH_RETRY_MIN;
        let mut retry_at = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.check_frequency);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(Vec<String>, Vec<ManifestRecord>)> = None;
        loop {
            if watcher.is_none() && tokio::time::Instant::now() >= retry_at {
                match self.watch(ev_tx.clone(), complete.clone()) {
                    Ok(w) => {
                        debug!(path = %self.path.display(), "watching manifest path");
                        watcher = Some(w);
                        retry = WATCH_RETRY_MIN;
                    }
                    Err(e) => {
                        debug!(path = %self.path.display(), error = %e, "cannot watch manifest path yet");
                        retry_at = tokio::time::Instant::now() + retry;
                        retry = (retry * 2).min(WATCH_RETRY_MAX);
                    }
                }
            }
            let removed = std::mem::take(
                &mut *complete
                    .removed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            let snap = self.relist();
            let last_uids = last
                .as_ref()
                .map(|(uids, _)| uids.as_slice())
                .unwrap_or(&[]);
            if let Some(gap) = removal_gap(&snap, &removed, last_uids) {
                debug!(path = %self.path.display(), "manifests removed and put back: sending their removal first");
                if tx
                    .send(SourceUpdate {
                        kind: SourceKind::File,
                        snapshot: gap,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                last = None;
            }
            let key = (
                snap.pods.iter().map(|p| p.uid.clone()).collect::<Vec<_>>(),
                snap.manifests.clone(),
            );
            if last.as_ref() != Some(&key) {
                last = Some(key);
                let update = SourceUpdate {
                    kind: SourceKind::File,
                    snapshot: snap,
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(()) = ev_rx.recv() => {
                    // A file written and closed, renamed or removed is complete: relist now.
                    // Anything else (a write in progress) waits for its close or the debounce.
                    use std::sync::atomic::Ordering::SeqCst;
                    if !complete.seen.swap(false, SeqCst) {
                        tokio::select! {
                            _ = tokio::time::sleep(DEBOUNCE) => {}
                            _ = complete.notify.notified() => {}
                        }
                        complete.seen.store(false, SeqCst);
                    }
                    while ev_rx.try_recv().is_ok() {}
                    // An event may mean the watched directory itself was replaced: re-arm.
                    if std::fs::metadata(&self.path).is_err() {
                        watcher = None;
                    }
                }
                _ = tokio::time::sleep_until(retry_at), if watcher.is_none() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
