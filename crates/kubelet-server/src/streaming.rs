//! `kubectl exec`, `kubectl attach` and `kubectl port-forward` on the node API (kubelet's
//! `getExec`, `getAttach` and `getPortForward`): the API server upgrades its request to SPDY/3.1 and relays the client's
//! streams.
//!
//! Two ways to serve it, chosen by the runtime:
//! - the runtime has a streaming server of its own (CRI: containerd's `Exec` / `Attach` /
//!   `PortForward` answer a URL): the request is proxied to that URL, upgrade and all, as kubelet does;
//! - the runtime runs commands and connects to pods itself (the embedded runtime): the SPDY
//!   session is served here ([`staticlet_spdy`]) and its streams are handed to
//!   `ContainerRuntime::exec` / `attach` / `port_forward`.
//!
//! Errors before the upgrade get kubelet's status codes: 400 for bad options, 404 for a pod or
//! container that does not exist (`pod does not exist`, `container not found ("c")` for exec,
//! `container c not found in pod <name>_<namespace>` for attach), 500 when the runtime fails.
//! An attach that ends (the client detaches, the container exits) reports success on the error
//! stream; a runtime failure reports `error attaching to container: ...` (kubelet's
//! `ServeAttach`).

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use staticlet_runtime::{
    AttachRequest, ContainerId, ExecIo, ExecRequest, LabelSelector, SandboxState,
};
use staticlet_spdy::portforward::{PortForwardListener, PortForwardRequest};
use staticlet_spdy::remotecommand::{self, ExitError, Protocol, StreamOptions};
use staticlet_spdy::{upgrade, Session};
use tracing::{debug, info, warn};

use crate::routes::{has_container, pod_by_name, text_error, NodeApi};

/// How long the client has to open the streams it announced (kubelet's
/// `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = remotecommand::DEFAULT_STREAM_CREATION_TIMEOUT;

/// The exec, attach and port-forward routes (GET and POST, with or without the pod UID).
pub fn routes() -> Router<NodeApi> {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route(
            "/exec/{namespace}/{pod}/{uid}/{container}",
            get(exec_with_uid).post(exec_with_uid),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach).post(attach),
        )
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            get(attach_with_uid).post(attach_with_uid),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward).post(port_forward),
        )
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            get(port_forward_with_uid).post(port_forward_with_uid),
        )
}

async fn exec(
    State(s): State<NodeApi>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    serve_exec(s, ns, pod, None, container, req).await
}

async fn exec_with_uid(
    State(s): State<NodeApi>,
    Path((ns, pod, uid, container)): Path<(String, String, String, String)>,
    req: Request,
) -> Response {
    serve_exec(s, ns, pod, Some(uid), container, req).await
}

async fn attach(
    State(s): State<NodeApi>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    serve_attach(s, ns, pod, None, container, req).await
}

async fn attach_with_uid(
    State(s): State<NodeApi>,
    Path((ns, pod, uid, container)): Path<(String, String, String, String)>,
    req: Request,
) -> Response {
    serve_attach(s, ns, pod, Some(uid), container, req).await
}

async fn port_forward(
    State(s): State<NodeApi>,
    Path((ns, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    serve_port_forward(s, ns, pod, None, req).await
}

async fn port_forward_with_uid(
    State(s): State<NodeApi>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    serve_port_forward(s, ns, pod, Some(uid), req).await
}

/// The runtime's id of the running container `name` of the pod, from its status
/// (`<runtime>://<id>`).
fn running_container_id(
    pod: &staticlet_agent::pod_workers::PodView,
    name: &str,
) -> Option<ContainerId> {
    crate::routes::container_status(pod, name)
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| {
            id.split_once("://")
                .map(|(_, id)| ContainerId(id.to_string()))
        })
}

async fn serve_exec(
    s: NodeApi,
    ns: String,
    pod: String,
    uid: Option<String>,
    container: String,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let opts = match StreamOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return text_error(400, e.to_string()),
    };
    let cmd = remotecommand::command_from_query(&query);
    let Some(view) = pod_by_name(&s, &ns, &pod) else {
        return text_error(404, "pod does not exist");
    };
    if uid.as_ref().is_some_and(|u| *u != view.pod.uid) {
        return text_error(404, "pod not found");
    }
    if !has_container(&view, &container) {
        return text_error(404, format!("container not found ({container:?})"));
    }
    let Some(id) = running_container_id(&view, &container) else {
        return text_error(
            500,
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    };
    if cmd.is_empty() {
        return text_error(400, "you must specify a command");
    }
    let exec_req = ExecRequest {
        cmd: cmd.clone(),
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    match s.api.runtime.exec_url(&id, &exec_req).await {
        Ok(Some(url)) => return proxy(&url, req).await,
        Ok(None) => {}
        Err(e) => return text_error(500, e.to_string()),
    }
    info!(%ns, %pod, %container, ?cmd, tty = opts.tty, "exec");
    let runtime = s.api.runtime.clone();
    serve_remote_command(req, opts, "exec", move |io| async move {
        match runtime.exec(&id, &exec_req, io).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(ExitError::exit_code(code, &cmd)),
            Err(e) => Err(ExitError::Internal(e.to_string())),
        }
    })
}

async fn serve_attach(
    s: NodeApi,
    ns: String,
    pod: String,
    uid: Option<String>,
    container: String,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let opts = match StreamOptions::from_query(&query) {
        Ok(o) => o,
        Err(e) => return text_error(400, e.to_string()),
    };
    let Some(view) = pod_by_name(&s, &ns, &pod) else {
        return text_error(404, "pod does not exist");
    };
    // kubelet names the pod by its full name (`<name>_<namespace>`) here.
    let full_name = format!("{pod}_{ns}");
    if uid.as_ref().is_some_and(|u| *u != view.pod.uid) {
        return text_error(404, format!("pod {full_name} not found"));
    }
    let Some(spec) =
        staticlet_agent::pod_workers::kill::container_spec(view.pod.spec(), &container)
    else {
        return text_error(
            404,
            format!("container {container} not found in pod {full_name}"),
        );
    };
    let Some(id) = running_container_id(&view, &container) else {
        return text_error(
            500,
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    };
    // Whether the container runs on a terminal is its spec's, not the client's (kubelet's
    // GetAttach): a running process cannot change it.
    let tty = spec.tty.unwrap_or(false);
    let attach_req = AttachRequest {
        tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr && !tty,
    };
    match s.api.runtime.attach_url(&id, &attach_req).await {
        Ok(Some(url)) => return proxy(&url, req).await,
        Ok(None) => {}
        Err(e) => return text_error(500, e.to_string()),
    }
    info!(%ns, %pod, %container, stdin = opts.stdin, tty, "attach");
    let runtime = s.api.runtime.clone();
    serve_remote_command(req, opts, "attach", move |io| async move {
        runtime
            .attach(&id, &attach_req, io)
            .await
            .map_err(|e| ExitError::Internal(format!("error attaching to container: {e}")))
    })
}

/// Upgrades the request to a remote command session (SPDY, kubelet's protocols), accepts the
/// client's streams and runs `run` with them in a task of its own; its result goes to the
/// client on the error stream. Answers `101`, or the upgrade's refusal.
fn serve_remote_command<F, Fut>(
    req: Request,
    opts: StreamOptions,
    what: &'static str,
    run: F,
) -> Response
where
    F: FnOnce(ExecIo) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ExitError>> + Send + 'static,
{
    let up = match upgrade::upgrade(req.headers(), remotecommand::SUPPORTED_PROTOCOLS) {
        Ok(u) => u,
        Err(r) => return (r.status, r.headers(), r.body()).into_response(),
    };
    let protocol = Protocol::from_name(&up.protocol).unwrap_or(Protocol::V4);
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                debug!(error = %e, "{what}: upgrade failed");
                return;
            }
        };
        let mut rc = match remotecommand::accept(
            Session::server(io),
            protocol,
            opts,
            STREAM_CREATION_TIMEOUT,
        )
        .await
        {
            Ok(rc) => rc,
            Err(e) => {
                debug!(error = %e, "{what}: the client's streams did not come");
                return;
            }
        };
        let resize = rc.resize.take().map(|mut from| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(sz) = from.recv().await {
                    let size = staticlet_runtime::TerminalSize {
                        width: sz.width,
                        height: sz.height,
                    };
                    if tx.send(size).await.is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let io = ExecIo {
            stdin: rc
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stdout: rc
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
            stderr: rc
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
            resize,
        };
        let result = run(io).await;
        if let Err(e) = rc.finish(result).await {
            debug!(error = %e, "{what}: finishing the session failed");
        }
    });
    (StatusCode::SWITCHING_PROTOCOLS, up.headers).into_response()
}

async fn serve_port_forward(
    s: NodeApi,
    ns: String,
    pod: String,
    uid: Option<String>,
    req: Request,
) -> Response {
    let Some(view) = pod_by_name(&s, &ns, &pod) else {
        return text_error(404, "pod does not exist");
    };
    if uid.as_ref().is_some_and(|u| *u != view.pod.uid) {
        return text_error(404, "pod not found");
    }
    let sandboxes = match s
        .api
        .runtime
        .list_pod_sandboxes(&LabelSelector::pod(&view.pod.uid))
        .await
    {
        Ok(v) => v,
        Err(e) => return text_error(500, e.to_string()),
    };
    let Some(sandbox) = sandboxes
        .into_iter()
        .filter(|sb| sb.state == SandboxState::Ready)
        .max_by_key(|sb| sb.attempt)
    else {
        return text_error(500, format!("pod {pod:?} has no running sandbox"));
    };
    match s.api.runtime.port_forward_url(&sandbox.id, &[]).await {
        Ok(Some(url)) => return proxy(&url, req).await,
        Ok(None) => {}
        Err(e) => return text_error(500, e.to_string()),
    }
    let up = match upgrade::upgrade(
        req.headers(),
        staticlet_spdy::portforward::SUPPORTED_PROTOCOLS,
    ) {
        Ok(u) => u,
        Err(r) => return (r.status, r.headers(), r.body()).into_response(),
    };
    let runtime = s.api.runtime.clone();
    let (pod_name, pod_uid) = (pod.clone(), view.pod.uid.clone());
    info!(%ns, %pod, "port-forward");
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                debug!(error = %e, "port-forward: upgrade failed");
                return;
            }
        };
        let mut listener = PortForwardListener::new(Session::server(io), STREAM_CREATION_TIMEOUT);
        while let Some(r) = listener.next().await {
            let runtime = runtime.clone();
            let sandbox = sandbox.id.clone();
            let (pod_name, pod_uid) = (pod_name.clone(), pod_uid.clone());
            tokio::spawn(async move {
                forward_one(runtime, sandbox, r, &pod_name, &pod_uid).await;
            });
        }
    });
    (StatusCode::SWITCHING_PROTOCOLS, up.headers).into_response()
}

/// One forwarded connection: to the port in the pod's network namespace, bytes both ways.
async fn forward_one(
    runtime: std::sync::Arc<dyn staticlet_runtime::ContainerRuntime>,
    sandbox: staticlet_runtime::SandboxId,
    mut r: PortForwardRequest,
    pod: &str,
    uid: &str,
) {
    match runtime.port_forward(&sandbox, r.port).await {
        Ok(mut conn) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut r.data).await {
                debug!(port = r.port, error = %e, "port-forward connection ended");
            }
            r.finish().await;
        }
        Err(e) => {
            let m = PortForwardRequest::error_message(r.port, pod, uid, &e);
            warn!("{m}");
            let _ = r.fail(&m).await;
        }
    }
}

/// Proxies an upgrade request to the runtime's streaming server at `url` (kubelet's
/// `UpgradeAwareHandler`): the same method, the URL's path and query, the client's headers; on
/// `101` the two upgraded connections are joined, else the server's answer is returned.
async fn proxy(url: &str, mut req: Request) -> Response {
    let fail = |m: String| {
        warn!("streaming proxy: {m}");
        text_error(500, m)
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return fail(format!("unsupported streaming URL {url:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return fail(format!("connecting to {authority}: {e}")),
        Err(_) => return fail(format!("connecting to {authority}: timed out")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => return fail(format!("streaming server {authority}: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "streaming proxy: backend connection ended");
        }
    });
    let mut out = hyper::Request::builder()
        .method(req.method().clone())
        .uri(path);
    for (k, v) in req.headers() {
        if k == header::HOST || k == header::AUTHORIZATION {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(
        header::HOST,
        HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost")),
    );
    let out = match out.body(http_body_util::Empty::<bytes::Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return fail(format!("streaming server {authority}: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return (status, body).into_response();
    }
    let headers = resp.headers().clone();
    let backend = hyper::upgrade::on(&mut resp);
    let client = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (backend, client) = match tokio::join!(backend, client) {
            (Ok(b), Ok(c)) => (b, c),
            (b, c) => {
                debug!(
                    backend = b.is_ok(),
                    client = c.is_ok(),
                    "streaming proxy: upgrade failed"
                );
                return;
            }
        };
        let (mut b, mut c) = (TokioIo::new(backend), TokioIo::new(client));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
            debug!(error = %e, "streaming proxy: stream ended");
        }
    });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    *r.headers_mut() = headers;
    r
}
