//! kubelet's node API for staticlet (≈ kubelet's `pkg/kubelet/server`): what the API server and
//! an operator's tools (`kubectl logs`, `exec`, `port-forward`, `top`, metrics-server, kubeadm)
//! ask of the agent on a node.
//!
//! - [`serve`] runs HTTPS on `address:port` (10250), with kubelet's authentication and
//!   authorization ([`auth`], [`attributes`]) in front of every route ([`routes`]), over
//!   rustls ([`tls`]); connections are upgraded for the streaming protocols.
//! - [`serve_healthz`] runs the plain-HTTP health endpoint kubeadm waits on
//!   (`healthzBindAddress:healthzPort`, 127.0.0.1:10248).
//!
//! **Invariant (as the local API's):** the server owns no pod state; it reads the agent's
//! `watch` views and asks the runtime.

pub mod attributes;
pub mod auth;
pub mod filewatch;
pub mod logs;
pub mod routes;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, info, warn};

pub use routes::NodeApi;

/// How long a client has for its TLS handshake and for its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the node API on `listener` until `shutdown`: TLS with `tls`, one hyper connection
/// per client with upgrades, each request tagged with the user of the connection's client
/// certificate when it chains to `client_ca` (see [`tls`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    client_ca: Option<tls::ClientCa>,
    api: NodeApi,
    auth: Arc<auth::Auth>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = routes::router(api, auth);
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "node API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        let client_ca = client_ca.clone();
        conns.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "node API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "node API: TLS handshake timed out");
                    return;
                }
            };
            let user = match (tls.get_ref().1.peer_certificates(), &client_ca) {
                (Some(chain), Some(ca)) if ca.verify(chain) => {
                    chain.first().and_then(|c| auth::user_of_certificate(c))
                }
                (Some(_), _) => {
                    debug!(%peer, "node API: client certificate not signed by the client CA");
                    None
                }
                (None, _) => None,
            };
            let peer_user = routes::PeerUser(user);
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer_user.clone());
                    let mut router = router.clone();
                    async move { router.call(req).await }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "node API connection ended");
                    }
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
    conns.close();
    // Upgraded streams are detached from their connections; let plain requests finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
    info!("node API stopped");
}

/// Serves kubelet's plain-HTTP health endpoint (`/healthz`: `ok`) on `listener` until
/// `shutdown`. kubeadm waits on it after (re)starting the node agent.
pub async fn serve_healthz(listener: TcpListener, shutdown: CancellationToken) {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        warn!(error = %e, "healthz endpoint failed");
    }
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the {what}: {e}"))
}
