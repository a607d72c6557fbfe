//! One probe (or lifecycle hook) attempt: exec, httpGet, tcpSocket, grpc and sleep (≈ kubelet
//! `pkg/probe/{exec,http,tcp,grpc}` and `pkg/kubelet/prober/prober.go` `runProbe`).
//!
//! [`ProbeHandler`] is the already-resolved form of a `Probe`'s or `LifecycleHandler`'s action
//! (named ports looked up, defaults applied); [`run`] performs one attempt against a
//! [`Target`] within a timeout and never panics or hangs past `timeout` (plus one second of
//! slack for an exec whose runtime ignores its own timeout).
//!
//! Outcomes follow kubelet: `Failure` carries the user-facing message kubelet would record in
//! its `Unhealthy` event (`<Kind> probe failed: <message>`); `Error` is what kubelet calls a
//! prober error, whose result it throws away (no threshold counting at all).

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPHeader, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use staticlet_manifest::duration::format_go_duration;
use staticlet_runtime::{ContainerId, ContainerRuntime};
use tracing::{debug, warn};

/// kubelet's `User-Agent` for probes (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.34";

/// The most output kept from an exec probe, and the most of an HTTP response body read
/// (kubelet: `maxReadLength` / `maxRespBodyLength`, 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// kubelet stops following redirects after this many requests.
const MAX_REDIRECTS: usize = 10;

/// Slack added to an exec's timeout before it is abandoned, for runtimes that do not enforce it.
const EXEC_SLACK: Duration = Duration::from_secs(1);

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// The probe ran and failed; the message is kubelet's.
    Failure(String),
    /// The probe could not be run (runtime error, unresolvable port): kubelet discards such a
    /// result, so it neither counts towards a threshold nor resets one.
    Error(String),
}

impl ProbeOutcome {
    /// The state machine's view.
    pub fn attempt(&self) -> super::state::Attempt {
        match self {
            ProbeOutcome::Success => super::state::Attempt::Success,
            ProbeOutcome::Failure(_) => super::state::Attempt::Failure,
            ProbeOutcome::Error(_) => super::state::Attempt::Error,
        }
    }
}

/// `HTTP` or `HTTPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A probe's or hook's action, resolved against its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeHandler {
    /// Run a command in the container; exit code 0 is success.
    Exec { command: Vec<String> },
    /// `GET` a URL; 200–399 is success.
    HttpGet {
        scheme: Scheme,
        /// `None`: the pod IP.
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// Open a TCP connection.
    TcpSocket {
        /// `None`: the pod IP.
        host: Option<String>,
        port: u16,
    },
    /// `grpc.health.v1.Health/Check` on the pod IP; `SERVING` is success.
    Grpc { port: u16, service: String },
    /// Sleep (lifecycle hooks only); fails if the timeout is shorter.
    Sleep { duration: Duration },
}

/// What a handler runs against.
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The container exec runs in.
    pub container_id: ContainerId,
    /// The pod's IP: the sandbox IP, or the host IP under hostNetwork.
    pub pod_ip: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("container_id", &self.container_id)
            .field("pod_ip", &self.pod_ip)
            .finish_non_exhaustive()
    }
}

/// kubelet's `probe.ResolveContainerPort`: a number, or a named container port; 1–65535.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = staticlet_manifest::defaults::resolve_port(port, container).ok_or_else(|| {
        let name = match port {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        };
        format!(
            "couldn't find port: {name} in container {:?}",
            container.name
        )
    })?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn http_get(
    get: &k8s_openapi::api::core::v1::HTTPGetAction,
    container: &Container,
) -> Result<ProbeHandler, String> {
    let scheme = match get
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme: {other:?}")),
    };
    Ok(ProbeHandler::HttpGet {
        scheme,
        host: get.host.clone().filter(|h| !h.is_empty()),
        port: resolve_port(&get.port, container)?,
        path: get.path.clone().unwrap_or_default(),
        headers: get
            .http_headers
            .iter()
            .flatten()
            .map(|HTTPHeader { name, value }| (name.clone(), value.clone()))
            .collect(),
    })
}

impl ProbeHandler {
    /// The handler of a liveness/readiness/startup probe of `container`. Errors when the probe
    /// has no action, more than one, or names a port the container does not have.
    pub fn from_probe(probe: &Probe, container: &Container) -> Result<Self, String> {
        let set = [
            probe.exec.is_some(),
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.grpc.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(format!(
                "a probe must have exactly one handler (exec, httpGet, tcpSocket, grpc), found {set}"
            ));
        }
        if let Some(e) = &probe.exec {
            return Ok(ProbeHandler::Exec {
                command: e.command.clone().unwrap_or_default(),
            });
        }
        if let Some(get) = &probe.http_get {
            return http_get(get, container);
        }
        if let Some(tcp) = &probe.tcp_socket {
            return Ok(ProbeHandler::TcpSocket {
                host: tcp.host.clone().filter(|h| !h.is_empty()),
                port: resolve_port(&tcp.port, container)?,
            });
        }
        let grpc = probe.grpc.as_ref().expect("counted above");
        let port = u16::try_from(grpc.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {}", grpc.port))?;
        Ok(ProbeHandler::Grpc {
            port,
            service: grpc.service.clone().unwrap_or_default(),
        })
    }

    /// The handler of a `postStart`/`preStop` hook. kubelet runs exec, httpGet and sleep hooks;
    /// a `tcpSocket` hook is accepted by the API but fails at run time ("invalid handler").
    pub fn from_lifecycle(h: &LifecycleHandler, container: &Container) -> Result<Self, String> {
        if let Some(e) = &h.exec {
            return Ok(ProbeHandler::Exec {
                command: e.command.clone().unwrap_or_default(),
            });
        }
        if let Some(get) = &h.http_get {
            return http_get(get, container);
        }
        if let Some(s) = &h.sleep {
            return Ok(ProbeHandler::Sleep {
                duration: Duration::from_secs(s.seconds.max(0) as u64),
            });
        }
        Err("invalid handler: only exec, httpGet and sleep hooks are supported".into())
    }
}

/// Runs one attempt of `handler` against `target`, giving up after `timeout`.
pub async fn run(handler: &ProbeHandler, target: &Target, timeout: Duration) -> ProbeOutcome {
    match handler {
        ProbeHandler::Exec { command } => exec(command, target, timeout).await,
        ProbeHandler::HttpGet {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            let host = host.as_deref().unwrap_or(&target.pod_ip);
            http(*scheme, host, *port, path, headers, timeout).await
        }
        ProbeHandler::TcpSocket { host, port } => {
            let host = host.as_deref().unwrap_or(&target.pod_ip);
            tcp(host, *port, timeout).await
        }
        ProbeHandler::Grpc { port, service } => grpc(&target.pod_ip, *port, service, timeout).await,
        ProbeHandler::Sleep { duration } => {
            if *duration <= timeout {
                tokio::time::sleep(*duration).await;
                ProbeOutcome::Success
            } else {
                tokio::time::sleep(timeout).await;
                ProbeOutcome::Failure("container terminated before sleep hook finished".into())
            }
        }
    }
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An error and its sources, `: `-separated (Go's wrapped error text).
fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// At most [`MAX_OUTPUT`] bytes of `bytes`, as (lossy) text.
fn truncated(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned()
}

async fn exec(command: &[String], target: &Target, timeout: Duration) -> ProbeOutcome {
    let joined = command.join(" ");
    let timed_out = || ProbeOutcome::Failure(format!("command {joined:?} timed out"));
    let call = target
        .runtime
        .exec_sync(&target.container_id, command, timeout);
    let res = match tokio::time::timeout(timeout + EXEC_SLACK, call).await {
        Err(_) => return timed_out(),
        Ok(r) => r,
    };
    match res {
        Ok(r) => {
            let mut out = r.stdout;
            out.extend_from_slice(&r.stderr);
            let output = truncated(&out);
            debug!(command = %joined, exit_code = r.exit_code, output = %output, "exec probe");
            if r.exit_code == 0 {
                ProbeOutcome::Success
            } else if output.is_empty() {
                ProbeOutcome::Failure(format!(
                    "command {joined:?} exited with code {}",
                    r.exit_code
                ))
            } else {
                ProbeOutcome::Failure(output)
            }
        }
        // The runtimes report their exec timeout as a failed exec whose message says so.
        Err(e) if e.to_string().contains("timed out") => timed_out(),
        Err(e) => ProbeOutcome::Error(e.to_string()),
    }
}

/// The probe HTTP client: no proxy, no connection reuse (kubelet disables keep-alives), no
/// certificate verification, kubelet's redirect rule. Built once.
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    // reqwest is built without a default crypto provider; the binary installs ring, and this
    // makes the library usable on its own (a no-op when one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let first_host = attempt
            .previous()
            .first()
            .and_then(|u| u.host_str().map(str::to_owned));
        if attempt.url().host_str().map(str::to_owned) != first_host {
            // kubelet (`followNonLocalRedirects=false`): use the redirect response itself.
            attempt.stop()
        } else if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("stopped after 10 redirects")
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tls_danger_accept_invalid_certs(true)
        .redirect(redirects)
        .build()
        .map_err(|e| error_chain(&e))?;
    Ok(CLIENT.get_or_init(|| client))
}

async fn http(
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let scheme = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let sep = if path.starts_with('/') { "" } else { "/" };
    let url = format!("{scheme}://{}{sep}{path}", join_host_port(host, port));
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Error(format!("building the probe HTTP client: {e}")),
    };
    let parsed = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => return ProbeOutcome::Error(format!("parse {url:?}: {e}")),
    };
    let mut req = client.get(parsed).timeout(timeout);
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("user-agent") {
        req = req.header(reqwest::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(reqwest::header::ACCEPT, "*/*");
    }
    for (name, value) in headers {
        // An empty Accept means "no Accept header" to kubelet; reqwest's default stays then.
        if name.eq_ignore_ascii_case("accept") && value.is_empty() {
            continue;
        }
        req = req.header(name.as_str(), value.as_str());
    }
    let attempt = async {
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::Failure(format!("Get {url:?}: {}", error_chain(&e))),
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_OUTPUT {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return ProbeOutcome::Error(format!("reading response body: {e}")),
            }
        }
        let body = truncated(&body);
        if (200..400).contains(&status) {
            if status >= 300 {
                warn!(%url, status, "probe terminated redirects");
                debug!(%body, "probe redirect response body");
            }
            ProbeOutcome::Success
        } else {
            debug!(%url, status, %body, "HTTP probe failed");
            ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(o) => o,
        Err(_) => ProbeOutcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(conn)) => {
            drop(conn);
            ProbeOutcome::Success
        }
        Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {addr}: connect: {e}")),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let addr = join_host_port(host, port);
    let deadline = tokio::time::Instant::now() + timeout;
    let within = format_go_duration(timeout);
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| error_chain(&e))
        .and_then(|e| e.user_agent(USER_AGENT).map_err(|e| error_chain(&e)))
    {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return ProbeOutcome::Failure(format!("error: invalid address {addr:?}: {e}")),
    };
    let channel = match tokio::time::timeout_at(deadline, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let e = error_chain(&e);
            return ProbeOutcome::Failure(if e.contains("timed out") {
                format!("timeout: failed to connect service {addr:?} within {within}: {e}")
            } else {
                format!("error: failed to connect service at {addr:?}: {e}")
            });
        }
        Err(_) => {
            return ProbeOutcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {within}: context deadline exceeded"
            ))
        }
    };
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    let deadline_exceeded = || {
        ProbeOutcome::Failure(format!(
            "timeout: health rpc did not complete within {within}"
        ))
    };
    let resp = match tokio::time::timeout_at(deadline, HealthClient::new(channel).check(req)).await
    {
        Err(_) => return deadline_exceeded(),
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            return match status.code() {
                tonic::Code::Unimplemented => ProbeOutcome::Failure(format!(
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                )),
                tonic::Code::DeadlineExceeded => deadline_exceeded(),
                code => ProbeOutcome::Failure(format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    status.message()
                )),
            }
        }
    };
    match resp.status() {
        ServingStatus::Serving => ProbeOutcome::Success,
        other => ProbeOutcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
    }
}

#[cfg(test)]
mod tests;
