//! The mirror loop: watches the pods bound to this node (a reflector over a field-selected
//! watch, as kubelet's API source), and on every change of either side — the agent's pods, the
//! API's pods, the Node — runs [`mirror::plan`] and executes its actions. Passes are coalesced
//! (a short debounce batches bursts of status changes), failed passes are retried with back-off,
//! and a periodic resync catches anything missed.
//!
//! Between a write and the watch reflecting it, an overlay remembers what was just created,
//! deleted or patched so the next pass does not repeat it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::Value;
use staticlet_agent::cluster::{ClusterView, MirrorState};
use staticlet_agent::pod_workers::PodsView;
use staticlet_runtime::Clock;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::mirror::{self, Action, Key, Observed};
use crate::scheduled;
use crate::{call, NodeRef};

/// Changes arriving within this window are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Full pass even without changes (kubelet's status manager syncs every 10 s).
const RESYNC: Duration = Duration::from_secs(10);
/// How long an overlay entry may wait for the watch to catch up.
const OVERLAY_TTL: Duration = Duration::from_secs(30);

/// What was just written and not yet seen through the watch.
#[derive(Default)]
struct Overlay {
    /// Created mirrors: key → (observed as created, when).
    created: HashMap<Key, (Observed, Instant)>,
    /// Deleted mirror UIDs.
    deleted: HashMap<String, Instant>,
    /// Status sent: mirror UID → (status, resourceVersion of the copy it was computed against).
    patched: HashMap<String, (Value, Option<String>)>,
}

impl Overlay {
    /// The watch's pods with our recent writes applied.
    fn apply(&mut self, mut observed: BTreeMap<Key, Observed>) -> BTreeMap<Key, Observed> {
        let now = Instant::now();
        self.deleted.retain(|uid, at| {
            now.duration_since(*at) < OVERLAY_TTL && observed.values().any(|o| &o.uid == uid)
        });
        observed.retain(|_, o| !self.deleted.contains_key(&o.uid));
        self.created.retain(|key, (o, at)| {
            now.duration_since(*at) < OVERLAY_TTL
                && observed.get(key).is_none_or(|seen| seen.uid != o.uid)
        });
        for (key, (o, _)) in &self.created {
            observed.entry(key.clone()).or_insert_with(|| o.clone());
        }
        self.patched
            .retain(|uid, _| observed.values().any(|o| &o.uid == uid));
        for o in observed.values_mut() {
            if let Some((sent, rv)) = self.patched.get(&o.uid) {
                if *rv == o.resource_version {
                    // Our patch is not reflected yet: compare against what we sent.
                    o.status = sent.clone();
                }
            }
        }
        observed
    }
}

pub(crate) async fn run(
    client: Client,
    node_name: String,
    mut node: watch::Receiver<Option<NodeRef>>,
    mut pods: watch::Receiver<Arc<PodsView>>,
    view: watch::Sender<Arc<ClusterView>>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let (store, writer) = reflector::store::<Pod>();
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let stream = reflector(writer, watcher(api.clone(), cfg)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = false;
    let mut overlay = Overlay::default();
    let mut next_pass: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    let mut watch_error: Option<String> = None;
    let mut tracker = scheduled::Tracker::default();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let soon = || Some(Instant::now() + DEBOUNCE);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pods.changed() => {
                if r.is_err() { return }
                next_pass = next_pass.or_else(soon);
            }
            r = node.changed() => {
                if r.is_err() { return }
                next_pass = next_pass.or_else(soon);
            }
            ev = stream.next() => match ev {
                None => return,
                Some(Ok(ev)) => {
                    if watch_error.take().is_some() {
                        info!("watching pods bound to this node again");
                    }
                    if matches!(ev, watcher::Event::InitDone) {
                        synced = true;
                    }
                    next_pass = next_pass.or_else(soon);
                }
                Some(Err(e)) => {
                    let msg = format!("watch pods bound to node {node_name}: {e}");
                    if watch_error.as_ref() != Some(&msg) {
                        warn!(error = %msg, "cannot watch mirror pods; retrying");
                    }
                    watch_error = Some(msg);
                }
            },
            _ = resync.tick() => next_pass = next_pass.or(Some(Instant::now())),
            _ = sleep_until(next_pass) => {
                next_pass = None;
                if !synced {
                    continue;
                }
                let observed: BTreeMap<Key, Observed> = store
                    .state()
                    .iter()
                    .filter_map(|p| Observed::from_pod(p))
                    .collect();
                let observed = overlay.apply(observed);
                let wanted = mirror::wanted(&pods.borrow());
                let node_uid = node.borrow().as_ref().map(|n| n.uid.clone());
                let actions = mirror::plan(&wanted, &observed, &node_name, node_uid.as_deref());
                let mut ok = execute(&api, actions, &observed, &mut overlay, &view, clock).await;
                publish_mirrors(&view, &wanted, &observed);
                let seen = scheduled::bound(&store.state());
                ok &= report_scheduled(&api, &node_name, &seen, &mut tracker, &view, clock).await;
                if ok {
                    backoff = Duration::from_millis(200);
                } else {
                    next_pass = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(RESYNC);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records an outcome in the static pod's mirror state (error and events).
fn record(
    view: &watch::Sender<Arc<ClusterView>>,
    static_uid: &str,
    clock: Clock,
    f: impl FnOnce(&mut MirrorState, std::time::SystemTime),
) {
    let now = clock.now();
    view.send_modify(|v| {
        let m = Arc::make_mut(v)
            .mirrors
            .entry(static_uid.to_string())
            .or_default();
        f(m, now);
    });
}

/// Executes the actions in order (a delete before its re-create). Returns whether all
/// succeeded.
async fn execute(
    api: &Api<Pod>,
    actions: Vec<Action>,
    observed: &BTreeMap<Key, Observed>,
    overlay: &mut Overlay,
    view: &watch::Sender<Arc<ClusterView>>,
    clock: Clock,
) -> bool {
    let mut ok = true;
    for a in actions {
        match a {
            Action::Delete {
                key,
                uid,
                static_uid,
                why,
            } => {
                let (ns, name) = &key;
                info!(namespace = %ns, pod = %name, mirror_uid = %uid, reason = why, "deleting mirror pod");
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let api = Api::<Pod>::namespaced(api.clone().into_client(), ns);
                let r = call(
                    format!("delete mirror pod {ns}/{name}"),
                    api.delete(name, &dp),
                )
                .await;
                match r {
                    // NotFound or Conflict (another UID now): already gone, as kubelet treats it.
                    Ok(_) | Err((_, Some(404 | 409))) => {
                        overlay.deleted.insert(uid.clone(), Instant::now());
                        if let Some(s) = static_uid {
                            record(view, &s, clock, |m, now| {
                                m.mirror_uid = None;
                                m.events.normal(
                                    "MirrorDeleted",
                                    &format!("Deleted mirror pod {uid}: {why}"),
                                    now,
                                );
                            });
                        }
                    }
                    Err((e, _)) => {
                        ok = false;
                        warn!(error = %e, "cannot delete mirror pod");
                        if let Some(s) = static_uid {
                            record(view, &s, clock, |m, now| {
                                m.error = Some(e.to_string());
                                m.events.warning("FailedMirror", &e.to_string(), now);
                            });
                        }
                    }
                }
            }
            Action::Create { static_uid, pod } => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                info!(namespace = %ns, pod = %name, "creating mirror pod");
                let api = Api::<Pod>::namespaced(api.clone().into_client(), &ns);
                let r = call(
                    format!("create mirror pod {ns}/{name}"),
                    api.create(&PostParams::default(), &pod),
                )
                .await;
                match r {
                    Ok(created) => {
                        if let Some((key, o)) = Observed::from_pod(&created) {
                            let uid = o.uid.clone();
                            overlay.created.insert(key, (o, Instant::now()));
                            record(view, &static_uid, clock, |m, now| {
                                m.mirror_uid = Some(uid.clone());
                                m.error = None;
                                m.events.normal(
                                    "MirrorCreated",
                                    &format!("Created mirror pod {uid}"),
                                    now,
                                );
                            });
                        }
                    }
                    Err((e, code)) => {
                        // AlreadyExists with our hash is success (kubelet): the watch will show it.
                        if code == Some(409)
                            && observed
                                .get(&(ns.clone(), name.clone()))
                                .is_none_or(|o| o.mirror_hash.is_some())
                        {
                            debug!(namespace = %ns, pod = %name, "mirror pod already exists");
                            ok = false;
                            continue;
                        }
                        ok = false;
                        warn!(error = %e, "cannot create mirror pod");
                        record(view, &static_uid, clock, |m, now| {
                            m.error = Some(e.to_string());
                            m.events.warning("FailedMirror", &e.to_string(), now);
                        });
                    }
                }
            }
            Action::PatchStatus {
                key,
                uid,
                static_uid,
                patch,
            } => {
                let (ns, name) = &key;
                let api = Api::<Pod>::namespaced(api.clone().into_client(), ns);
                let r = call(
                    format!("update status of mirror pod {ns}/{name}"),
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await;
                match r {
                    Ok(p) => {
                        let rv = observed.get(&key).and_then(|o| o.resource_version.clone());
                        let sent = serde_json::to_value(p.status.unwrap_or_default())
                            .unwrap_or(Value::Null);
                        // If the watch still shows the copy we patched, compare against the
                        // answer (the API's copy after the patch) instead.
                        overlay.patched.insert(uid.clone(), (sent, rv));
                        record(view, &static_uid, clock, |m, _| m.error = None);
                    }
                    // The mirror was deleted or recreated meanwhile: the next pass sees it.
                    Err((_, Some(404 | 409))) => ok = false,
                    Err((e, _)) => {
                        ok = false;
                        warn!(error = %e, "cannot update mirror pod status");
                        record(view, &static_uid, clock, |m, now| {
                            m.error = Some(e.to_string());
                            m.events.warning("FailedMirrorStatus", &e.to_string(), now);
                        });
                    }
                }
            }
            Action::Blocked {
                static_uid,
                message,
            } => {
                record(view, &static_uid, clock, |m, now| {
                    if m.error.as_deref() != Some(message.as_str()) {
                        warn!(error = %message, "no mirror pod");
                        m.events.warning("FailedMirror", &message, now);
                    }
                    m.error = Some(message.clone());
                });
            }
        }
    }
    ok
}

/// Records the `StaticPodsOnly` Event of each scheduled pod seen for the first time and
/// publishes the list. Returns whether every Event due was recorded.
async fn report_scheduled(
    api: &Api<Pod>,
    node_name: &str,
    seen: &BTreeMap<String, staticlet_agent::cluster::ScheduledPod>,
    tracker: &mut scheduled::Tracker,
    view: &watch::Sender<Arc<ClusterView>>,
    clock: Clock,
) -> bool {
    let mut ok = true;
    for (uid, p) in tracker.due(seen) {
        info!(namespace = %p.namespace, pod = %p.name, "a pod bound to this node by the scheduler: not run (static pods only)");
        let events: Api<Event> = Api::namespaced(api.clone().into_client(), &p.namespace);
        let ev = scheduled::event(&uid, &p, node_name, clock.now());
        match call(
            format!(
                "record event {} for pod {}/{}",
                scheduled::REASON,
                p.namespace,
                p.name
            ),
            events.create(&PostParams::default(), &ev),
        )
        .await
        {
            // AlreadyExists: an earlier agent recorded it.
            Ok(_) | Err((_, Some(409))) => tracker.sent(&uid),
            Err((e, _)) => {
                ok = false;
                warn!(error = %e, "cannot record the event; retrying");
            }
        }
    }
    let list = tracker.view(seen);
    view.send_if_modified(|v| {
        if v.scheduled == list {
            return false;
        }
        Arc::make_mut(v).scheduled = list;
        true
    });
    ok
}

/// Mirror UIDs as the API holds them; forgets static pods that are gone.
fn publish_mirrors(
    view: &watch::Sender<Arc<ClusterView>>,
    wanted: &BTreeMap<Key, mirror::Wanted>,
    observed: &BTreeMap<Key, Observed>,
) {
    view.send_if_modified(|v| {
        let before = v.mirrors.clone();
        let v = Arc::make_mut(v);
        v.mirrors
            .retain(|uid, _| wanted.values().any(|w| &w.static_uid == uid));
        for (key, w) in wanted {
            let m = v.mirrors.entry(w.static_uid.clone()).or_default();
            let uid = observed
                .get(key)
                .filter(|o| o.mirror_hash.as_deref() == Some(w.hash.as_str()) && !o.deleting)
                .map(|o| o.uid.clone());
            if uid.is_some() {
                m.mirror_uid = uid;
            }
        }
        v.mirrors != before
    });
}
