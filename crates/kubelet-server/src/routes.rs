//! The node API's routes (kubelet's `InstallAuthNotRequiredHandlers` and
//! `InstallAuthRequiredHandlers`, the parts static pods need), behind the authentication and
//! authorization filter ([`crate::auth`]).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use staticlet_agent::kuberuntime::NodeContext;
use staticlet_agent::pod_workers::PodView;
use staticlet_agent::server::ApiState;

use crate::attributes::request_attributes;
use crate::auth::{Auth, User};
use crate::logs::LogOptions;
use crate::stats::{NodeUsage, Rates};

/// The user of the connection's verified client certificate, set by the connection's service.
#[derive(Debug, Clone)]
pub struct PeerUser(pub Option<User>);

/// What the handlers read: the agent's views and runtime, and the server's own caches.
#[derive(Clone)]
pub struct NodeApi {
    pub api: ApiState,
    pub node: NodeContext,
    pub rates: Arc<Rates>,
}

/// What the authentication and authorization filter needs.
#[derive(Clone)]
struct Gate {
    auth: Arc<Auth>,
    node_name: String,
}

/// kubelet's plain-text error (`WriteErrorString`).
pub fn text_error(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The authentication and authorization filter in front of every route.
async fn authorize(State(s): State<Gate>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerUser>().and_then(|p| p.0.clone());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let user = match s.auth.authenticate(peer.as_ref(), bearer.as_deref()).await {
        Ok(u) => u,
        Err(r) => {
            let (code, body) = r.status_and_body();
            return text_error(code, body);
        }
    };
    let attrs = request_attributes(req.method().as_str(), req.uri().path(), &s.node_name);
    if let Err(r) = s.auth.authorize(&user, &attrs).await {
        tracing::info!(user = %user.name, path = %req.uri().path(), "node API request refused");
        let (code, body) = r.status_and_body();
        return text_error(code, body);
    }
    next.run(req).await
}

async fn pods(State(s): State<NodeApi>) -> Response {
    let view = s.api.pods.borrow().clone();
    axum::Json(staticlet_agent::server::pod_list(&view)).into_response()
}

async fn metrics(State(s): State<NodeApi>) -> Response {
    staticlet_agent::server::metrics(State(s.api.clone())).await
}

async fn container_stats(s: &NodeApi) -> Vec<staticlet_runtime::ContainerStats> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.api
            .runtime
            .list_container_stats(&staticlet_runtime::LabelSelector::managed()),
    )
    .await
    {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no container stats");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

async fn stats_summary(State(s): State<NodeApi>) -> Response {
    let stats = container_stats(&s).await;
    let node = tokio::task::spawn_blocking(NodeUsage::read)
        .await
        .unwrap_or_default();
    let view = s.api.pods.borrow().clone();
    let summary = crate::stats::summary(
        &s.node.node_name,
        &node,
        &view,
        &stats,
        &s.rates,
        SystemTime::now(),
    );
    axum::Json(summary).into_response()
}

async fn resource_metrics(State(s): State<NodeApi>) -> Response {
    let stats = container_stats(&s).await;
    let node = tokio::task::spawn_blocking(NodeUsage::read)
        .await
        .unwrap_or_default();
    let view = s.api.pods.borrow().clone();
    let text = crate::stats::resource_metrics(&node, &view, &stats, SystemTime::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The running pod `ns/name` (`metadata.name` as the API server knows it).
pub fn pod_by_name(s: &NodeApi, ns: &str, name: &str) -> Option<PodView> {
    let view = s.api.pods.borrow().clone();
    staticlet_agent::server::find(&view, ns, name).cloned()
}

/// The status of `container` in the pod (app, init or sidecar).
pub(crate) fn container_status<'a>(
    pod: &'a PodView,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .container_statuses
        .iter()
        .flatten()
        .chain(pod.status.init_container_statuses.iter().flatten())
        .find(|c| c.name == container)
}

/// Whether the pod's spec has `container`.
pub fn has_container(pod: &PodView, container: &str) -> bool {
    staticlet_agent::pod_workers::kill::container_spec(pod.pod.spec(), container).is_some()
}

async fn container_logs(
    State(s): State<NodeApi>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let opts = match LogOptions::from_query(&query, SystemTime::now()) {
        Ok(o) => o,
        Err(e) => {
            return text_error(
                e.status,
                serde_json::json!({ "message": e.message }).to_string(),
            )
        }
    };
    let Some(view) = pod_by_name(&s, &ns, &pod) else {
        return text_error(404, format!("pod {pod:?} does not exist"));
    };
    if !has_container(&view, &container) {
        return text_error(
            404,
            format!("container {container:?} not found in pod {pod:?}"),
        );
    }
    let restarts = container_status(&view, &container).map_or(0, |c| c.restart_count);
    let attempt = if opts.previous {
        if restarts == 0 {
            return text_error(
                400,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            );
        }
        restarts - 1
    } else {
        restarts
    };
    let path = s
        .node
        .pod_log_dir(&view.pod)
        .join(&container)
        .join(format!("{attempt}.log"));
    if !path.is_file() {
        return text_error(
            400,
            format!(
                "container {container:?} in pod {pod:?} has no log yet (it has not started): {}",
                path.display()
            ),
        );
    }
    // The follow ends when this attempt of the container is no longer running.
    let uid = view.pod.uid.clone();
    let pods = s.api.pods.clone();
    let running = move || {
        let v = pods.borrow();
        v.get(&uid).is_some_and(|pv| {
            container_status(pv, &container).is_some_and(|c| {
                c.restart_count == attempt
                    && c.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        })
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        if let Err(e) = crate::logs::stream(
            path.clone(),
            opts,
            running,
            || crate::logs::pace(crate::filewatch::followers()),
            tx,
        )
        .await
        {
            tracing::debug!(file = %path.display(), error = %e, "log stream ended with an error");
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The node API's routes behind `auth`, exec and port-forward included
/// ([`crate::streaming`]).
pub fn router(state: NodeApi, auth: Arc<Auth>) -> Router {
    let gate = Gate {
        auth,
        node_name: state.node.node_name.clone(),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
        .route("/stats/summary", get(stats_summary))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .merge(crate::streaming::routes())
        .fallback(|| async { text_error(404, "404 page not found") })
        .layer(axum::middleware::from_fn_with_state(gate, authorize))
        .with_state(state)
}

/// Container logs, exec and port-forward for the agent's local API (the root-only unix socket,
/// no authentication there): what `staticlet logs` and `staticlet exec` ask for.
pub fn local_router(state: NodeApi) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .merge(crate::streaming::routes())
        .with_state(state)
}
