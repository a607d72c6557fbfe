//! Local control verbs (`staticlet restart|stop|start pod`), on the root-only local API.
//!
//! - **restart** asks the pod manager to stop the pod's worker's pod (the kill sequence, the
//!   pod's grace) and start it again with the same UID ([`ManagerRequest::RestartPod`]).
//! - **stop** takes a pod out of what the pod manager runs, and keeps it out — across agent
//!   restarts — until **start** or until its manifest changes (another UID). The pod stays
//!   visible as stopped (`DesiredPods::stopped`, shown with reason `Stopped`).
//!
//! This module is a filter between the rollout controller and the pod manager (it owns the set
//! of stopped pods, persisted atomically to `<root-dir>/control/stopped.json`: full name → the
//! UID stopped). Stops of pods whose manifest changed or went away are forgotten once every
//! source has been read (before that, an empty desired set means "not read yet", not "gone").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use staticlet_manifest::StaticPod;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::merge::DesiredPods;
use crate::pod_workers::ManagerRequest;

/// A verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Restart,
    Stop,
    Start,
}

/// A request from the local API; the answer is what to tell the user (`Err`: a client error,
/// e.g. an unknown pod).
#[derive(Debug)]
pub struct ControlRequest {
    pub verb: Verb,
    pub namespace: String,
    /// The pod's name as the API shows it (`<name>-<node>`) or as its manifest writes it.
    pub name: String,
    pub reply: oneshot::Sender<Result<String, ControlError>>,
}

/// Why a verb was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("pod {name:?} not found in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// The stopped pods: full name → UID, on disk.
#[derive(Debug)]
pub struct Stopped {
    path: PathBuf,
    entries: BTreeMap<String, String>,
}

impl Stopped {
    /// Reads `<dir>/stopped.json` (absent: nothing stopped; unreadable: nothing stopped, said).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("stopped.json");
        let entries = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "ignoring an unreadable record of stopped pods");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the record of stopped pods");
                BTreeMap::new()
            }
        };
        Self { path, entries }
    }

    fn save(&self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(&self.entries).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    /// Whether `pod` is stopped.
    pub fn is_stopped(&self, pod: &StaticPod) -> bool {
        self.entries.get(&pod.full_name()) == Some(&pod.uid)
    }

    /// Forgets stops of pods no longer wanted at that UID (a changed or removed manifest).
    /// Returns whether anything was forgotten.
    pub fn prune(&mut self, desired: &DesiredPods) -> bool {
        if !desired.all_sources_seen {
            return false;
        }
        let before = self.entries.len();
        self.entries.retain(|full, uid| {
            desired
                .pods
                .get(uid)
                .is_some_and(|p| p.full_name() == *full)
        });
        self.entries.len() != before
    }

    /// The desired pods without the stopped ones (which are listed in `stopped`).
    pub fn apply(&self, desired: &DesiredPods) -> DesiredPods {
        let mut out = desired.clone();
        out.pods.clear();
        out.stopped.clear();
        for (uid, p) in &desired.pods {
            if self.is_stopped(p) {
                out.stopped.insert(uid.clone(), p.clone());
            } else {
                out.pods.insert(uid.clone(), p.clone());
            }
        }
        out
    }
}

/// The desired pod `namespace`/`name` names (the API's name, or the manifest's).
fn find<'a>(desired: &'a DesiredPods, namespace: &str, name: &str) -> Option<&'a Arc<StaticPod>> {
    let by = |f: &dyn Fn(&StaticPod) -> bool| {
        desired
            .pods
            .values()
            .find(|p| p.namespace == namespace && f(p))
    };
    by(&|p| p.name == name).or_else(|| by(&|p| crate::ordering::manifest_name(p) == name))
}

/// Runs the filter until `stop`; see the module documentation.
pub async fn run(
    mut stopped: Stopped,
    mut requests: mpsc::Receiver<ControlRequest>,
    mut desired: watch::Receiver<Arc<DesiredPods>>,
    out: watch::Sender<Arc<DesiredPods>>,
    manager: mpsc::Sender<ManagerRequest>,
    stop: CancellationToken,
) {
    loop {
        let current = desired.borrow_and_update().clone();
        if stopped.prune(&current) {
            if let Err(e) = stopped.save() {
                warn!(error = %e, "cannot record the stopped pods");
            }
        }
        out.send_replace(Arc::new(stopped.apply(&current)));
        tokio::select! {
            _ = stop.cancelled() => return,
            r = desired.changed() => if r.is_err() { return },
            req = requests.recv() => {
                let Some(req) = req else { return };
                let answer = handle(&mut stopped, &current, &req, &manager).await;
                let _ = req.reply.send(answer);
            }
        }
    }
}

async fn handle(
    stopped: &mut Stopped,
    desired: &DesiredPods,
    req: &ControlRequest,
    manager: &mpsc::Sender<ManagerRequest>,
) -> Result<String, ControlError> {
    let not_found = || ControlError::NotFound {
        namespace: req.namespace.clone(),
        name: req.name.clone(),
    };
    let pod = find(desired, &req.namespace, &req.name).ok_or_else(not_found)?;
    let full = pod.full_name();
    match req.verb {
        Verb::Restart => {
            if stopped.is_stopped(pod) {
                return Err(ControlError::Conflict(format!(
                    "pod {} is stopped: `staticlet start pod {}` runs it",
                    pod.name, pod.name
                )));
            }
            let (tx, rx) = oneshot::channel();
            manager
                .send(ManagerRequest::RestartPod {
                    uid: pod.uid.clone(),
                    reply: tx,
                })
                .await
                .map_err(|_| ControlError::Failed("the pod manager is gone".into()))?;
            match rx.await {
                Ok(true) => Ok(format!("pod {} restarting", pod.name)),
                Ok(false) => Err(ControlError::Conflict(format!(
                    "pod {} is not running yet (or is stopping): try again",
                    pod.name
                ))),
                Err(_) => Err(ControlError::Failed("the pod manager is gone".into())),
            }
        }
        Verb::Stop => {
            if stopped.is_stopped(pod) {
                return Ok(format!("pod {} already stopped", pod.name));
            }
            stopped.entries.insert(full, pod.uid.clone());
            stopped.save().map_err(|e| {
                ControlError::Failed(format!(
                    "cannot record the stop in {}: {e}",
                    stopped.path.display()
                ))
            })?;
            info!(pod = %pod.name, namespace = %pod.namespace, "pod stopped on request");
            Ok(format!("pod {} stopped", pod.name))
        }
        Verb::Start => {
            if !stopped.is_stopped(pod) {
                return Ok(format!("pod {} is not stopped", pod.name));
            }
            stopped.entries.remove(&full);
            stopped.save().map_err(|e| {
                ControlError::Failed(format!(
                    "cannot record the start in {}: {e}",
                    stopped.path.display()
                ))
            })?;
            info!(pod = %pod.name, namespace = %pod.namespace, "pod started on request");
            Ok(format!("pod {} started", pod.name))
        }
    }
}
