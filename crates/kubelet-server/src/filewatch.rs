//! One inotify instance for every log follower of the process.
//!
//! A follower ([`crate::logs::stream`] with `follow`) must wake when its file grows and notice
//! when the file is replaced (rotation). Giving each follower a watcher of its own costs a
//! thread, an inotify instance and one event per write per follower; here the process has one
//! watcher, shared by every follower: one watch per directory (refcounted), one event per write,
//! fanned out to the followers of that file by name.
//!
//! A [`Subscription`] is a coalescing wake-up (`tokio::sync::Notify`: changes while nobody waits
//! leave one permit) plus a "replaced" flag set when an entry of that name is created, moved
//! into place or removed. Dropping the subscription removes it, and the directory's watch with
//! the last one.
//!
//! Lock order: the watcher's mutex, then the subscribers' table; the watcher's callback (on
//! notify's thread) takes only the table, and `watch`/`unwatch` (which wait on that thread) are
//! never called with the table held.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// What one follower is told about its file.
#[derive(Default)]
pub struct Signal {
    changed: Notify,
    replaced: AtomicBool,
}

impl Signal {
    /// Waits until the file (or the directory entry of its name) changed since the last wait.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Whether an entry of the file's name was created, moved in or removed since the last
    /// call (the file may have been rotated); clears the flag.
    pub fn take_replaced(&self) -> bool {
        self.replaced.swap(false, Ordering::AcqRel)
    }

    fn notify(&self, replaced: bool) {
        if replaced {
            self.replaced.store(true, Ordering::Release);
        }
        self.changed.notify_one();
    }
}

type Subscribers = HashMap<PathBuf, HashMap<OsString, Vec<(u64, Arc<Signal>)>>>;

#[derive(Default)]
struct Table {
    dirs: Subscribers,
    next_id: u64,
}

/// The process's watcher and who listens to what.
struct Hub {
    /// `None` until the first subscription, and when inotify could not be set up (followers
    /// then fall back to their periodic check).
    watcher: Mutex<Option<RecommendedWatcher>>,
    table: Arc<Mutex<Table>>,
}

/// Live subscriptions in the process: how many followers share the machine's attention
/// ([`crate::logs::pace`]).
static FOLLOWERS: AtomicUsize = AtomicUsize::new(0);

/// How many log followers the process has now.
pub fn followers() -> usize {
    FOLLOWERS.load(Ordering::Relaxed)
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        watcher: Mutex::new(None),
        table: Arc::new(Mutex::new(Table::default())),
    })
}

/// A follower's registration for changes of one file; ends when dropped.
pub struct Subscription {
    dir: PathBuf,
    name: OsString,
    id: u64,
    signal: Arc<Signal>,
}

impl Subscription {
    pub fn signal(&self) -> &Signal {
        &self.signal
    }
}

/// Registers for changes of the file at `path` (its directory is watched). Returns `None` when
/// the path has no parent or name, or inotify is unavailable: the caller polls instead.
pub fn subscribe(path: &Path) -> Option<Subscription> {
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    let hub = hub();
    let mut watcher = hub.watcher.lock().unwrap_or_else(PoisonError::into_inner);
    if watcher.is_none() {
        *watcher = new_watcher(hub.table.clone());
    }
    let w = watcher.as_mut()?;
    let signal = Arc::new(Signal::default());
    let (id, first_in_dir) = {
        let mut t = hub.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.next_id += 1;
        let id = t.next_id;
        let first = !t.dirs.contains_key(&dir);
        t.dirs
            .entry(dir.clone())
            .or_default()
            .entry(name.clone())
            .or_default()
            .push((id, signal.clone()));
        (id, first)
    };
    FOLLOWERS.fetch_add(1, Ordering::Relaxed);
    let sub = Subscription {
        dir,
        name,
        id,
        signal,
    };
    if first_in_dir {
        if let Err(e) = w.watch(&sub.dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %sub.dir.display(), error = %e, "log follower: no inotify watch; polling");
        }
    }
    Some(sub)
}

impl Drop for Subscription {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, Ordering::Relaxed);
        let hub = hub();
        let mut watcher = hub.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        let last_in_dir = {
            let mut t = hub.table.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(names) = t.dirs.get_mut(&self.dir) else {
                return;
            };
            if let Some(subs) = names.get_mut(&self.name) {
                subs.retain(|(id, _)| *id != self.id);
                if subs.is_empty() {
                    names.remove(&self.name);
                }
            }
            let last = names.is_empty();
            if last {
                t.dirs.remove(&self.dir);
            }
            last
        };
        if last_in_dir {
            if let Some(w) = watcher.as_mut() {
                // The directory may be gone already (the pod removed): nothing to undo then.
                let _ = w.unwatch(&self.dir);
            }
        }
    }
}

fn new_watcher(table: Arc<Mutex<Table>>) -> Option<RecommendedWatcher> {
    let handler = move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let replaced = match ev.kind {
            EventKind::Modify(notify::event::ModifyKind::Data(_)) => false,
            EventKind::Modify(notify::event::ModifyKind::Name(_))
            | EventKind::Create(_)
            | EventKind::Remove(_) => true,
            // Opens, closes, attribute changes: nothing new to read.
            _ => return,
        };
        let t = table.lock().unwrap_or_else(PoisonError::into_inner);
        for p in &ev.paths {
            let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                continue;
            };
            if let Some(subs) = t.dirs.get(dir).and_then(|names| names.get(name)) {
                for (_, s) in subs {
                    s.notify(replaced);
                }
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "log followers: inotify unavailable; they poll every 500 ms");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    async fn woken(s: &Subscription) {
        tokio::time::timeout(Duration::from_secs(30), s.signal().changed())
            .await
            .expect("woken by the write");
    }

    #[tokio::test]
    async fn writes_wake_every_follower_of_the_file_and_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("0.log");
        let b = dir.path().join("1.log");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let a1 = subscribe(&a).unwrap();
        let a2 = subscribe(&a).unwrap();
        let b1 = subscribe(&b).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&a)
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        woken(&a1).await;
        woken(&a2).await;
        use futures::FutureExt;
        assert!(
            b1.signal().changed().now_or_never().is_none(),
            "a write to another file wakes nobody else"
        );
        assert!(!a1.signal().take_replaced(), "a write is not a rotation");
        // b was not written: a write to b now is what wakes it (no stale permit from a's write).
        std::fs::write(&b, "y\n").unwrap();
        woken(&b1).await;
        drop((a1, a2, b1));
        let t = hub().table.lock().unwrap();
        assert!(
            !t.dirs.contains_key(dir.path()),
            "the last subscription of a directory removes its entry"
        );
    }

    #[tokio::test]
    async fn a_rename_onto_the_name_is_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(&log, "old\n").unwrap();
        let s = subscribe(&log).unwrap();
        let tmp = dir.path().join("0.log.tmp");
        std::fs::write(&tmp, "new\n").unwrap();
        std::fs::rename(&tmp, &log).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !s.signal().take_replaced() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rename never reported"
            );
            woken(&s).await;
        }
    }
}
