//! The local API: HTTP over a unix socket (`<root-dir>/staticlet.sock`, mode 0600) and
//! optionally TCP. Read-only views of what the agent owns elsewhere:
//! - `/healthz`, `/readyz` (ready once every source was seen and the runtime answers);
//! - `/pods`: a `v1` `PodList` with live statuses (as kubelet's `/pods`); with `?watch=true`,
//!   a stream of watch events as the Kubernetes API sends them (`application/json;stream=watch`,
//!   one `{"type","object"}` per line): `ADDED` for every pod there is, a `BOOKMARK` marking the
//!   end of those initial events (`k8s.io/initial-events-end`), then `ADDED`, `MODIFIED` and
//!   `DELETED` as the pods view changes (see [`watch_events`]);
//! - `/pods/{namespace}/{name}`: one `Pod`, or a `v1` `Status` 404;
//! - `/pods/{namespace}/{name}/events`: the pod's recent events as a `v1` `EventList`;
//! - `/manifests`: every manifest file or URL with its pods, hash, last error, last applied time;
//! - `/cluster`: the cluster side's state (API server, Node UID, Lease, mirrors) as JSON;
//! - `/metrics`: Prometheus/OpenMetrics text (see [`crate::metrics`]).
//!
//! With `--kubeconfig`, pods carry the annotations [`ANNOTATION_MIRROR_UID`] and
//! [`ANNOTATION_MIRROR_ERROR`], and their events include the mirror pod's.
//!
//! **Architecture invariant:** the server owns no state; it only borrows `watch` receivers.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use k8s_openapi::List;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterView, ANNOTATION_MIRROR_ERROR, ANNOTATION_MIRROR_UID};
use crate::config::ManifestRecord;
use crate::pod_workers::{PodView, PodsView};

/// Readiness of the agent as `/readyz` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub sources_seen: bool,
    pub runtime_ready: bool,
    /// Why not ready.
    pub message: String,
}

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub pods: watch::Receiver<Arc<PodsView>>,
    pub manifests: watch::Receiver<Arc<Vec<ManifestRecord>>>,
    pub readiness: watch::Receiver<Readiness>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    /// Asked for container stats when `/metrics` is scraped.
    pub runtime: Arc<dyn staticlet_runtime::ContainerRuntime>,
    /// The pod workers' counters (`/metrics`).
    pub counters: Arc<crate::pod_workers::WorkerCounters>,
}

/// The API object of a pod: its manifest-derived object with the live status.
pub fn pod_object(view: &PodView) -> Pod {
    let mut pod = view.pod.pod.clone();
    pod.status = Some(view.status.clone());
    if let Some(since) = view.terminating_since {
        pod.metadata.deletion_timestamp = Some(crate::status::time(since));
        pod.metadata.deletion_grace_period_seconds = view.grace;
    }
    pod
}

/// All pods as a `PodList`, sorted by namespace then name.
pub fn pod_list(view: &PodsView) -> List<Pod> {
    let mut items: Vec<Pod> = view.values().map(|v| pod_object(v)).collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    List {
        items,
        metadata: ListMeta::default(),
    }
}

fn status_404(what: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{what} not found"),
        "reason": "NotFound",
        "code": 404
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Adds the mirror annotations to a pod served locally (never to what is sent to the cluster).
fn annotate_mirror(pod: &mut Pod, cluster: &ClusterView) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    let Some(m) = cluster.mirrors.get(uid) else {
        return;
    };
    let ann = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if let Some(u) = &m.mirror_uid {
        ann.insert(ANNOTATION_MIRROR_UID.into(), u.clone());
    }
    if let Some(e) = &m.error {
        ann.insert(ANNOTATION_MIRROR_ERROR.into(), e.clone());
    }
}

async fn pods(State(s): State<ApiState>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut watch = false;
    for (k, v) in &query {
        if k == "watch" {
            match parse_go_bool(v) {
                Some(b) => watch = b,
                None => {
                    return status_400(format!(
                        "invalid value for watch: {v:?} (a boolean: true or false)"
                    ))
                }
            }
        }
    }
    if watch {
        return watch_pods(s);
    }
    let view = s.pods.borrow().clone();
    let cluster = s.cluster.borrow().clone();
    let mut list = pod_list(&view);
    for p in &mut list.items {
        annotate_mirror(p, &cluster);
    }
    Json(list).into_response()
}

/// A boolean query parameter as the Kubernetes API reads it (Go's `strconv.ParseBool`).
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn status_400(message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "BadRequest",
        "code": 400
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The watch events that take a client from the view `prev` to `cur` (`None`: the client has
/// seen nothing yet, so every pod is `ADDED`), as the objects `/pods` would serve. An entry
/// that is the same `Arc` did not change; one rebuilt into an equal object (only its event log
/// changed) is not an event either. Ordered as the list is: namespace, then name.
pub fn watch_events(
    prev: Option<&PodsView>,
    cur: &PodsView,
    cluster: &ClusterView,
) -> Vec<(&'static str, Pod)> {
    let object = |v: &PodView| {
        let mut pod = pod_object(v);
        annotate_mirror(&mut pod, cluster);
        pod
    };
    let mut out = Vec::new();
    for (uid, v) in cur {
        match prev.and_then(|p| p.get(uid)) {
            None => out.push(("ADDED", object(v))),
            Some(old) if Arc::ptr_eq(old, v) => {}
            Some(old) => {
                let new = object(v);
                if object(old) != new {
                    out.push(("MODIFIED", new));
                }
            }
        }
    }
    for (uid, old) in prev.into_iter().flatten() {
        if !cur.contains_key(uid) {
            out.push(("DELETED", object(old)));
        }
    }
    out.sort_by(|a, b| {
        (&a.1.metadata.namespace, &a.1.metadata.name)
            .cmp(&(&b.1.metadata.namespace, &b.1.metadata.name))
    });
    out
}

/// One line of a watch stream.
fn watch_line(type_: &str, object: &impl serde::Serialize) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&json!({ "type": type_, "object": object })).expect("a pod serializes");
    line.push(b'\n');
    line
}

/// `/pods?watch=true`: the stream of [`watch_events`], until the client leaves. A client that
/// reads slowly sees fewer, later states (the view is a `watch`: it keeps only the newest), never
/// a stale one, and never slows the agent.
fn watch_pods(s: ApiState) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let mut pods = s.pods.clone();
    let cluster = s.cluster.clone();
    tokio::spawn(async move {
        let mut prev: Option<Arc<PodsView>> = None;
        loop {
            let cur = pods.borrow_and_update().clone();
            let mut out = Vec::new();
            for (t, pod) in watch_events(prev.as_deref(), &cur, &cluster.borrow()) {
                out.extend(watch_line(t, &pod));
            }
            if prev.is_none() {
                let mark = json!({
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "metadata": {"annotations": {"k8s.io/initial-events-end": "true"}}
                });
                out.extend(watch_line("BOOKMARK", &mark));
            }
            prev = Some(cur);
            if !out.is_empty() && tx.send(out.into()).await.is_err() {
                return;
            }
            tokio::select! {
                changed = pods.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;stream=watch",
        )],
        body,
    )
        .into_response()
}

/// The pod `ns/name`. A terminating old version and its replacement can share a name: the live
/// one is preferred.
pub fn find<'a>(view: &'a PodsView, ns: &str, name: &str) -> Option<&'a PodView> {
    let mut found: Vec<&PodView> = view
        .values()
        .filter(|v| v.pod.namespace == ns && v.pod.name == name)
        .map(|v| &**v)
        .collect();
    found.sort_by_key(|v| v.terminating_since.is_some());
    found.first().copied()
}

async fn pod(State(s): State<ApiState>, Path((ns, name)): Path<(String, String)>) -> Response {
    let view = s.pods.borrow().clone();
    match find(&view, &ns, &name) {
        Some(v) => {
            let mut pod = pod_object(v);
            annotate_mirror(&mut pod, &s.cluster.borrow());
            Json(pod).into_response()
        }
        None => status_404(format!("pods {name:?} in namespace {ns:?}")),
    }
}

/// The pod's events (its own, then its mirror's, by time) as a `v1` `EventList`, oldest first.
pub fn event_list(
    view: &PodView,
    mirror: Option<&crate::events::EventLog>,
) -> List<k8s_openapi::api::core::v1::Event> {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let pod = &view.pod;
    let node = pod.spec().node_name.clone();
    let mut all: Vec<&crate::events::Event> = view.events.iter().collect();
    all.extend(mirror.into_iter().flat_map(|m| m.iter()));
    all.sort_by_key(|e| e.last);
    let items = all
        .into_iter()
        .enumerate()
        .map(|(i, e)| Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{i}", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(e.reason.clone()),
            message: Some(e.message.clone()),
            type_: Some(e.type_.to_string()),
            count: Some(e.count as i32),
            first_timestamp: Some(crate::status::time(e.first)),
            last_timestamp: Some(crate::status::time(e.last)),
            source: Some(EventSource {
                component: Some("staticlet".into()),
                host: node.clone(),
            }),
            ..Default::default()
        })
        .collect();
    List {
        items,
        metadata: ListMeta::default(),
    }
}

async fn pod_events(
    State(s): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let view = s.pods.borrow().clone();
    match find(&view, &ns, &name) {
        Some(v) => {
            let cluster = s.cluster.borrow().clone();
            let mirror = cluster.mirrors.get(&v.pod.uid).map(|m| &m.events);
            Json(event_list(v, mirror)).into_response()
        }
        None => status_404(format!("pods {name:?} in namespace {ns:?}")),
    }
}

async fn manifests(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let m = s.manifests.borrow().clone();
    Json(json!({ "items": *m }))
}

async fn cluster(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let c = s.cluster.borrow().clone();
    let mirrors: serde_json::Map<String, serde_json::Value> = c
        .mirrors
        .iter()
        .map(|(uid, m)| {
            (
                uid.clone(),
                json!({ "mirrorUID": m.mirror_uid, "error": m.error }),
            )
        })
        .collect();
    Json(json!({
        "enabled": c.enabled,
        "server": c.server,
        "nodeUID": c.node_uid,
        "error": c.error,
        "leaseRenewed": c.lease_renewed.map(crate::status::time),
        "clientCertificate": c.client_certificate.as_ref().map(managed_certificate),
        "servingCertificate": c.serving_certificate.as_ref().map(managed_certificate),
        "mirrors": mirrors,
        "scheduledPods": c.scheduled.iter().map(|(uid, p)| json!({
            "namespace": p.namespace,
            "name": p.name,
            "uid": uid,
            "eventSent": p.event_sent,
        })).collect::<Vec<_>>(),
    }))
}

/// A managed certificate in `/cluster` (`sans` only for the serving one).
fn managed_certificate(cc: &crate::cluster::ManagedCertificate) -> serde_json::Value {
    let mut v = json!({
        "file": cc.file,
        "subject": cc.subject,
        "notAfter": cc.not_after.map(crate::status::time),
        "renewAt": cc.renew_at.map(crate::status::time),
        "status": cc.status,
    });
    if !cc.sans.is_empty() {
        v["sans"] = json!(cc.sans);
    }
    v
}

/// `/metrics`: the agent's metrics (also served by the node API).
pub async fn metrics(State(s): State<ApiState>) -> Response {
    let stats = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.runtime
            .list_container_stats(&staticlet_runtime::LabelSelector::managed()),
    )
    .await
    {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no container stats for /metrics");
            Vec::new()
        }
        Err(_) => Vec::new(),
    };
    let text = crate::metrics::render(&crate::metrics::Input {
        pods: &s.pods.borrow().clone(),
        manifests: &s.manifests.borrow().clone(),
        readiness: &s.readiness.borrow().clone(),
        cluster: &s.cluster.borrow().clone(),
        stats: &stats,
        counters: &s.counters,
        process: crate::metrics::ProcessStats::read(),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let r = s.readiness.borrow().clone();
    if r.sources_seen && r.runtime_ready {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", r.message),
        )
            .into_response()
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/pods", get(pods))
        .route("/pods/{namespace}/{name}", get(pod))
        .route("/pods/{namespace}/{name}/events", get(pod_events))
        .route("/manifests", get(manifests))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The control verbs (`POST /pods/{ns}/{name}/restart|stop|start`): only for the root-only
/// unix socket, never a TCP listener (see [`crate::control`]).
pub fn control_router(
    control: tokio::sync::mpsc::Sender<crate::control::ControlRequest>,
) -> Router {
    use crate::control::Verb;
    let route = |verb: Verb| {
        let control = control.clone();
        axum::routing::post(move |Path((namespace, name)): Path<(String, String)>| {
            let control = control.clone();
            async move { control_verb(control, verb, namespace, name).await }
        })
    };
    Router::new()
        .route("/pods/{namespace}/{name}/restart", route(Verb::Restart))
        .route("/pods/{namespace}/{name}/stop", route(Verb::Stop))
        .route("/pods/{namespace}/{name}/start", route(Verb::Start))
}

async fn control_verb(
    control: tokio::sync::mpsc::Sender<crate::control::ControlRequest>,
    verb: crate::control::Verb,
    namespace: String,
    name: String,
) -> Response {
    use crate::control::{ControlError, ControlRequest};
    let (reply, rx) = tokio::sync::oneshot::channel();
    let req = ControlRequest {
        verb,
        namespace,
        name,
        reply,
    };
    let gone = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down\n",
        )
            .into_response()
    };
    if control.send(req).await.is_err() {
        return gone();
    }
    match rx.await {
        Err(_) => gone(),
        Ok(Ok(msg)) => (StatusCode::OK, format!("{msg}\n")).into_response(),
        Ok(Err(e)) => {
            let code = match e {
                ControlError::NotFound { .. } => StatusCode::NOT_FOUND,
                ControlError::Conflict(_) => StatusCode::CONFLICT,
                ControlError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}

/// Serves `router` on `listener` (a unix or TCP listener) until `shutdown`.
pub async fn serve<L>(listener: L, router: Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "local API stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use staticlet_manifest::Origin;

    fn entry(name: &str, phase: &str) -> (String, Arc<PodView>) {
        let pod = staticlet_manifest::load(
            format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: app\n    image: busybox\n").as_bytes(),
            &Origin::File(format!("/m/{name}.yaml")),
            "n1",
        )
        .unwrap();
        (
            pod.uid.clone(),
            Arc::new(PodView {
                pod: Arc::new(pod),
                status: PodStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                },
                terminating_since: None,
                grace: None,
                events: Default::default(),
            }),
        )
    }

    /// `(type, name, phase)` of each event.
    fn events(prev: Option<&PodsView>, cur: &PodsView) -> Vec<(&'static str, String, String)> {
        watch_events(prev, cur, &ClusterView::default())
            .into_iter()
            .map(|(t, p)| {
                (
                    t,
                    p.metadata.name.unwrap(),
                    p.status.unwrap().phase.unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn watch_events_from_one_view_to_the_next() {
        let (a_uid, a) = entry("a", "Pending");
        let (b_uid, b) = entry("b", "Running");
        let (_, a_running) = entry("a", "Running");
        let first: PodsView = [(a_uid.clone(), a.clone()), (b_uid.clone(), b.clone())].into();
        let ev = |t: &'static str, n: &str, p: &str| (t, format!("{n}-n1"), p.to_string());

        // A new client: every pod is ADDED, in the list's order.
        assert_eq!(
            events(None, &first),
            vec![ev("ADDED", "a", "Pending"), ev("ADDED", "b", "Running")]
        );
        // Nothing changed: no event.
        assert_eq!(events(Some(&first), &first.clone()), vec![]);
        // An entry rebuilt into an equal object (only its event log changed): no event.
        let mut rebuilt = first.clone();
        rebuilt.insert(a_uid.clone(), Arc::new(PodView::clone(&a)));
        assert_eq!(events(Some(&first), &rebuilt), vec![]);
        // A status change, a removal and an addition.
        let (c_uid, c) = entry("c", "Pending");
        let next: PodsView = [(a_uid.clone(), a_running), (c_uid, c)].into();
        assert_eq!(
            events(Some(&first), &next),
            vec![
                ev("MODIFIED", "a", "Running"),
                ev("DELETED", "b", "Running"),
                ev("ADDED", "c", "Pending"),
            ]
        );
    }

    #[test]
    fn watch_is_a_go_boolean() {
        for (v, want) in [
            ("true", Some(true)),
            ("1", Some(true)),
            ("T", Some(true)),
            ("False", Some(false)),
            ("0", Some(false)),
            ("yes", None),
            ("", None),
        ] {
            assert_eq!(parse_go_bool(v), want, "{v:?}");
        }
    }
}
