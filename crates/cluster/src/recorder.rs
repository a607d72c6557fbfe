//! Static pods' events in the API server: what the agent records for a pod (Pulled, Created,
//! Started, Killing, BackOff, Unhealthy, RolledBack, ...) becomes a core/v1 `Event` that
//! `kubectl get events` and `kubectl describe pod` show, as kubelet's event recorder does.
//!
//! The agent's per-pod [`EventLog`](staticlet_agent::events::EventLog) is the source: it already
//! folds repeats into one entry with a count, so an entry is created once as an `Event` and its
//! later repeats patch that Event's `count` and `lastTimestamp` (client-go's event series).
//!
//! As kubelet's, the Event is about the static pod: `involvedObject.uid` is the static pod's UID
//! (its config hash), which `kubectl describe pod` looks for on a mirror pod (it reads the UID from
//! the mirror's `kubernetes.io/config.mirror` annotation). So events need no mirror: they are
//! sent as soon as the API server answers, also for a pod whose mirror is refused.
//!
//! One choice differs from kubelet, on purpose: events over the rate limit are delayed, not
//! dropped. client-go's spam filter (a bucket of 25 per object, one more every 5 minutes) drops
//! them; here the next token sends the entry with the count it has reached by then. As in
//! client-go, the filter is passed once per entry: a write that fails gives its token back.
//!
//! An entry the API server has not received when it leaves the agent's log (its pod stopped, or
//! the pod's UID started again with a fresh log, while the API server was down: the old etcd
//! stopped and the new one failing to pull during a `kubeadm upgrade apply` that kubeadm rolls
//! back) is still sent for [`LINGER`], as client-go's broadcaster keeps retrying an event it
//! holds whatever became of the pod; after that it is dropped.
//!
//! [`Recorder::plan`] is pure (snapshot in, actions out); `run` executes the actions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use staticlet_agent::pod_workers::PodsView;
use staticlet_agent::status::time;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::call;

/// Events one pod may send at once (client-go's `EventSourceObjectSpamFilter` burst).
pub const BURST: u32 = 25;
/// One more event per this period once the burst is spent (client-go: qps 1/300).
pub const REFILL: Duration = Duration::from_secs(300);
/// The longest message sent; longer ones are cut (kubelet's recorder cuts at 1 kB too).
pub const MESSAGE_LIMIT: usize = 1024;
/// The component named in `source` and `reportingComponent`.
pub const COMPONENT: &str = "staticlet";
/// How long an entry not yet in the API server is still sent after it left the agent's log
/// (client-go's broadcaster: 12 tries, 10 s apart).
pub const LINGER: Duration = Duration::from_secs(120);

/// One entry of a pod's event log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pod_uid: String,
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
    pub first: SystemTime,
}

/// What the API server holds for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    namespace: String,
    name: String,
    count: u32,
}

/// An entry that was due (not in the API server, or with a lower count) at the last pass.
#[derive(Debug, Clone)]
struct Unsent {
    namespace: String,
    name: String,
    count: u32,
    last: SystemTime,
    /// Set once the entry has left the agent's log: sent until then, dropped after.
    until: Option<Instant>,
}

/// A token bucket per pod.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            tokens: BURST,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        while self.tokens < BURST && now.duration_since(self.refilled) >= REFILL {
            self.tokens += 1;
            self.refilled += REFILL;
        }
        if self.tokens == BURST {
            self.refilled = now;
        }
    }
}

/// A write to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new Event.
    Create { key: Key, event: Box<Event> },
    /// A repeat: the Event's count and last time.
    Update {
        key: Key,
        namespace: String,
        name: String,
        count: u32,
        last: SystemTime,
    },
}

impl Action {
    pub fn key(&self) -> &Key {
        match self {
            Action::Create { key, .. } | Action::Update { key, .. } => key,
        }
    }
}

/// A pass's writes, and when a pass should run again for entries held back by the rate limit.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub retry_at: Option<Instant>,
}

/// What has been sent, and each pod's bucket. Owned by the event loop.
#[derive(Debug, Default)]
pub struct Recorder {
    sent: HashMap<Key, Sent>,
    buckets: HashMap<String, Bucket>,
    unsent: HashMap<Key, Unsent>,
}

impl Recorder {
    /// The writes that bring the API server's Events up to the agent's logs. Entries no longer
    /// in any log (the pod is gone, or the entry rotated out) are forgotten once the API server
    /// has them, or [`LINGER`] after they left. Each returned action has taken a token; report
    /// its outcome with [`Recorder::done`].
    pub fn plan(&mut self, pods: &PodsView, node: &str, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let mut live: HashMap<Key, u32> = HashMap::new();
        let mut unsent: HashMap<Key, Unsent> = HashMap::new();
        for (uid, view) in pods {
            let bucket = self
                .buckets
                .entry(uid.clone())
                .or_insert_with(|| Bucket::new(now));
            bucket.refill(now);
            for e in view.events.iter() {
                let k = key(uid, e);
                live.insert(k.clone(), e.count);
                let due = match self.sent.get(&k) {
                    None => Some(None),
                    Some(s) if s.count < e.count => Some(Some(s)),
                    Some(_) => None,
                };
                let Some(sent) = due else { continue };
                let u = Unsent {
                    namespace: view.pod.namespace.clone(),
                    name: view.pod.name.clone(),
                    count: e.count,
                    last: e.last,
                    until: None,
                };
                if let Some(a) = take(bucket, &mut plan, &k, &u, sent, node) {
                    plan.actions.push(a);
                }
                unsent.insert(k, u);
            }
        }
        // Entries that left the logs before the API server had them all.
        for (k, mut u) in std::mem::take(&mut self.unsent) {
            if live.contains_key(&k) || self.sent.get(&k).is_some_and(|s| s.count >= u.count) {
                continue;
            }
            let until = *u.until.get_or_insert(now + LINGER);
            if now >= until {
                continue;
            }
            let bucket = self
                .buckets
                .entry(k.pod_uid.clone())
                .or_insert_with(|| Bucket::new(now));
            bucket.refill(now);
            if let Some(a) = take(bucket, &mut plan, &k, &u, self.sent.get(&k), node) {
                plan.actions.push(a);
            }
            unsent.insert(k, u);
        }
        self.sent
            .retain(|k, _| live.contains_key(k) || unsent.contains_key(k));
        self.buckets
            .retain(|uid, _| pods.contains_key(uid) || unsent.keys().any(|k| &k.pod_uid == uid));
        self.unsent = unsent;
        plan
    }

    /// The outcome of an action: `Ok` records it as sent; `Err(gone)` forgets the entry when the
    /// Event no longer exists in the API (expired: the next pass creates it anew), or leaves it
    /// to be retried. A failed write gives its token back (the spam filter is passed once per
    /// entry, as in client-go, not once per try).
    pub fn done(&mut self, action: &Action, outcome: Result<(), bool>) {
        if outcome.is_err() {
            if let Some(b) = self.buckets.get_mut(&action.key().pod_uid) {
                b.tokens = (b.tokens + 1).min(BURST);
            }
        }
        match (action, outcome) {
            (Action::Create { key, event }, Ok(())) => {
                self.sent.insert(
                    key.clone(),
                    Sent {
                        namespace: event.metadata.namespace.clone().unwrap_or_default(),
                        name: event.metadata.name.clone().unwrap_or_default(),
                        count: event.count.unwrap_or(1) as u32,
                    },
                );
            }
            (Action::Update { key, count, .. }, Ok(())) => {
                if let Some(s) = self.sent.get_mut(key) {
                    s.count = *count;
                }
            }
            (Action::Update { key, .. }, Err(true)) => {
                self.sent.remove(key);
            }
            (_, Err(_)) => {}
        }
    }
}

/// The write that sends entry `k` (`u`), given what the API server has of it (`sent`), taking
/// a token; none when the bucket is empty (the plan is told when to try again).
fn take(
    bucket: &mut Bucket,
    plan: &mut Plan,
    k: &Key,
    u: &Unsent,
    sent: Option<&Sent>,
    node: &str,
) -> Option<Action> {
    if bucket.tokens == 0 {
        let at = bucket.refilled + REFILL;
        plan.retry_at = Some(plan.retry_at.map_or(at, |r| r.min(at)));
        return None;
    }
    bucket.tokens -= 1;
    Some(match sent {
        None => Action::Create {
            event: Box::new(event(k, u, node)),
            key: k.clone(),
        },
        Some(s) => Action::Update {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            count: u.count,
            last: u.last,
            key: k.clone(),
        },
    })
}

fn key(uid: &str, e: &staticlet_agent::events::Event) -> Key {
    Key {
        pod_uid: uid.to_string(),
        type_: e.type_,
        reason: e.reason.clone(),
        message: e.message.clone(),
        first: e.first,
    }
}

/// `message` cut to [`MESSAGE_LIMIT`] bytes at a character boundary.
fn cut(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut end = MESSAGE_LIMIT - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The Event's name: the pod's name and the entry's first time in nanoseconds (as client-go
/// names events), with a short hash of reason and message so that two entries of one instant
/// differ. At most 253 characters.
fn event_name(pod: &str, k: &Key) -> String {
    let nanos = k
        .first
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // FNV-1a: stable across runs and versions (the name must not change between agents).
    let mut h: u32 = 0x811c_9dc5;
    for b in k
        .type_
        .bytes()
        .chain(k.reason.bytes())
        .chain(k.message.bytes())
    {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let suffix = format!(".{nanos:x}{:04x}", h & 0xffff);
    let mut prefix = pod.to_string();
    prefix.truncate(253 - suffix.len());
    format!("{}{suffix}", prefix.trim_end_matches(['.', '-']))
}

fn event(k: &Key, u: &Unsent, node: &str) -> Event {
    let (name, namespace, count, last) = (&u.name, &u.namespace, u.count, u.last);
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(name, k)),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: Some(k.pod_uid.clone()),
            ..Default::default()
        },
        reason: Some(k.reason.clone()),
        message: Some(cut(&k.message)),
        type_: Some(k.type_.to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.to_string()),
        first_timestamp: Some(time(k.first)),
        last_timestamp: Some(time(last)),
        count: Some(count as i32),
        ..Default::default()
    }
}

/// Changes arriving within this window are sent in one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Sends the agent's pod events to the API server until `shutdown`. A failed write ends the
/// pass and is retried with back-off (1 s to 30 s); an API server that is down only delays
/// events (the agent's logs keep the newest 100 per pod, and entries that left them are kept
/// for [`LINGER`]).
pub(crate) async fn run(
    client: Client,
    node_name: String,
    mut pods: watch::Receiver<Arc<PodsView>>,
    shutdown: CancellationToken,
) {
    let mut recorder = Recorder::default();
    let mut apis: BTreeMap<String, Api<Event>> = BTreeMap::new();
    let mut next_pass: Option<Instant> = Some(Instant::now());
    let mut backoff = Duration::from_secs(1);
    loop {
        let soon = || Some(Instant::now() + DEBOUNCE);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pods.changed() => {
                if r.is_err() { return }
                next_pass = next_pass.or_else(soon);
            }
            _ = async {
                match next_pass {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let p = pods.borrow_and_update().clone();
                let plan = recorder.plan(&p, &node_name, Instant::now());
                let mut failed = false;
                for action in &plan.actions {
                    // After a failure, the rest wait for the next pass (each write would wait
                    // its own timeout on an API server that does not answer).
                    let outcome = if failed {
                        Err(false)
                    } else {
                        send(&client, &mut apis, action).await
                    };
                    if outcome.is_err() {
                        failed = true;
                    }
                    recorder.done(action, outcome);
                }
                if failed {
                    next_pass = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                } else {
                    backoff = Duration::from_secs(1);
                    next_pass = plan.retry_at;
                }
            }
        }
    }
}

/// Executes one action. `Err(true)`: the Event is gone from the API.
async fn send(
    client: &Client,
    apis: &mut BTreeMap<String, Api<Event>>,
    action: &Action,
) -> Result<(), bool> {
    let ns = match action {
        Action::Create { event, .. } => event.metadata.namespace.clone().unwrap_or_default(),
        Action::Update { namespace, .. } => namespace.clone(),
    };
    let api = apis
        .entry(ns.clone())
        .or_insert_with(|| Api::namespaced(client.clone(), &ns));
    let k = action.key();
    let what = format!("record event {} of pod {}", k.reason, k.pod_uid);
    let r = match action {
        Action::Create { event, .. } => call(what, api.create(&PostParams::default(), event))
            .await
            .map(|_| ()),
        Action::Update {
            name, count, last, ..
        } => {
            let patch = serde_json::json!({ "count": count, "lastTimestamp": time(*last) });
            call(
                what,
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            .map(|_| ())
        }
    };
    match r {
        Ok(()) => Ok(()),
        // Created by an earlier agent (same name: same entry).
        Err((_, Some(409))) if matches!(action, Action::Create { .. }) => Ok(()),
        Err((e, code)) => {
            let gone = code == Some(404) && matches!(action, Action::Update { .. });
            if gone {
                debug!(error = %e, "event expired in the API; recording it anew");
            } else {
                warn!(error = %e, "cannot record the event; retrying");
            }
            Err(gone)
        }
    }
}

#[cfg(test)]
mod tests;
