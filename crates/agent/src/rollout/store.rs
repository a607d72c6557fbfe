//! The on-disk rollout state, under `<root-dir>/rollout`: one JSON file per pod (by full name,
//! `<name>_<namespace>.json`), written atomically (temp file, fsync, rename) whenever the pod's
//! [`Rollout`] changes, so a rollout in progress (its deadline) and a rollback (which version
//! failed, and the content of the last Ready version) survive an agent restart.
//!
//! The controller writes through a [`Writer`]: a task of its own does the writes, in the order
//! they were asked for, so the path that starts a pod never waits for a disk flush (50
//! pods written at once cost 50 fsyncs: 15 ms on a quiet disk, far more beside a busy etcd).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::Rollout;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, full_name: &str) -> PathBuf {
        // Full names are DNS names joined by `_`: safe as file names. Anything else is
        // escaped so that no name can leave the directory.
        let safe: String = full_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '%'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    /// Every stored rollout. Unreadable or corrupt files are reported and skipped.
    pub fn load_all(&self) -> Vec<Rollout> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return vec![],
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot list rollout state");
                return vec![];
            }
        };
        let mut out = Vec::new();
        for de in rd.flatten() {
            let p = de.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<Rollout>(&d).map_err(|e| e.to_string()))
            {
                Ok(r) if self.path_for(&r.full_name) == p => out.push(r),
                Ok(_) => {
                    warn!(file = %p.display(), "ignoring rollout state stored under another name")
                }
                Err(e) => {
                    warn!(file = %p.display(), error = %e, "ignoring unreadable rollout state")
                }
            }
        }
        out.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        out
    }

    /// Stores `r`, atomically replacing its previous state.
    pub fn save(&self, r: &Rollout) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path_for(&r.full_name);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets the pod `full_name`. A missing file is fine.
    pub fn remove(&self, full_name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path_for(full_name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Writes to a [`Store`] off the caller's path, in order (see the module doc): a task that
/// does each batch of queued writes on a blocking thread. [`Writer::flush`] waits until every
/// write asked for before it is done.
pub struct Writer {
    tx: tokio::sync::mpsc::UnboundedSender<Op>,
}

enum Op {
    Save(Box<Rollout>),
    Remove(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Writer {
    /// Starts the writer's task (on the current tokio runtime). It ends when the writer is
    /// dropped and its queue is done.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Op>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 64).await > 0 {
                let mut flushed = Vec::new();
                let mut writes = Vec::new();
                for op in batch.drain(..) {
                    match op {
                        Op::Flush(done) => flushed.push(done),
                        op => writes.push(op),
                    }
                }
                if !writes.is_empty() {
                    let store = store.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for op in writes {
                            match op {
                                Op::Save(r) => save_logged(&store, &r),
                                Op::Remove(name) => remove_logged(&store, &name),
                                Op::Flush(_) => {}
                            }
                        }
                    })
                    .await;
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Writer { tx }
    }

    /// Stores `r` (queued).
    pub fn save(&self, r: &Rollout) {
        let _ = self.tx.send(Op::Save(Box::new(r.clone())));
    }

    /// Forgets the pod `full_name` (queued).
    pub fn remove(&self, full_name: &str) {
        let _ = self.tx.send(Op::Remove(full_name.to_string()));
    }

    /// Returns once every write asked for before is done.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Op::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn save_logged(store: &Store, r: &Rollout) {
    if let Err(e) = store.save(r) {
        warn!(pod = %r.full_name, dir = %store.dir().display(), error = %e, "cannot store rollout state");
    }
}

fn remove_logged(store: &Store, name: &str) {
    if let Err(e) = store.remove(name) {
        warn!(pod = %name, error = %e, "cannot remove rollout state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Input;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn the_writer_applies_writes_in_order_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("rollout"));
        let writer = Writer::start(store.clone());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = Rollout::new("a_default", "/m/a.yaml", false);
        let b = Rollout::new("b_default", "/m/b.yaml", false);
        writer.save(&a);
        writer.save(&b);
        a.step(Input::Wanted {
            hash: "h2",
            uid: "u2",
            deadline: None,
            now,
        });
        writer.save(&a);
        writer.remove("b_default");
        writer.flush().await;
        assert_eq!(
            store.load_all(),
            vec![a.clone()],
            "the last save wins, b is gone"
        );
        let c = Rollout::new("c_default", "/m/c.yaml", false);
        writer.save(&c);
        writer.flush().await;
        assert_eq!(store.load_all(), vec![a, c]);
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("rollout"));
        assert!(store.load_all().is_empty());
        let mut r = Rollout::new("web-node_default", "/m/web.yaml", false);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        r.step(Input::Wanted {
            hash: "a",
            uid: "u",
            deadline: None,
            now,
        });
        store.save(&r).unwrap();
        // A corrupt file and a leftover temp file are skipped.
        std::fs::write(store.dir().join("bad_default.json"), "{").unwrap();
        std::fs::write(store.dir().join("x.json.tmp"), "{").unwrap();
        assert_eq!(store.load_all(), vec![r.clone()]);
        store.remove("web-node_default").unwrap();
        store.remove("web-node_default").unwrap();
        assert!(store.load_all().is_empty());
        // A name cannot leave the directory.
        assert_eq!(store.path_for("../x").parent().unwrap(), store.dir());
    }
}
