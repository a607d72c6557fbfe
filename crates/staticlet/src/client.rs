//! The client side of the local API, and kubectl-like printing (`staticlet get`).

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::List;

/// Where the agent's API is.
#[derive(Debug, Clone)]
pub enum Server {
    Unix(PathBuf),
    Tcp(String),
}

impl Server {
    /// `--server` (`unix:///path`, `/path`, `http://host:port`, `tcp://host:port`), else the
    /// socket under `--root-dir`.
    pub fn resolve(server: Option<&str>, root_dir: &std::path::Path) -> Result<Self> {
        Ok(match server {
            None => Server::Unix(root_dir.join("staticlet.sock")),
            Some(s) if s.starts_with("unix://") => {
                Server::Unix(PathBuf::from(&s["unix://".len()..]))
            }
            Some(s) if s.starts_with('/') => Server::Unix(PathBuf::from(s)),
            Some(s) if s.starts_with("http://") => {
                Server::Tcp(s["http://".len()..].trim_end_matches('/').into())
            }
            Some(s) if s.starts_with("tcp://") => {
                Server::Tcp(s["tcp://".len()..].trim_end_matches('/').into())
            }
            Some(s) => {
                bail!("--server {s:?}: expected unix:///path, http://host:port or tcp://host:port")
            }
        })
    }

    /// GETs `path`; returns the status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let resp = self.request(path).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((code, body))
    }

    /// POSTs to `path` with no body; returns the status code and body.
    pub async fn post(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let (mut sender, host) = self.connect().await?;
        let req = hyper::Request::post(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((code, body))
    }

    /// GETs `path`; returns the response with its body still to read (streamed logs).
    pub async fn request(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        let (mut sender, host) = self.connect().await?;
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())?;
        Ok(sender.send_request(req).await?)
    }

    /// An HTTP/1.1 connection to the agent (with upgrades, for exec), and the Host header.
    pub async fn connect(
        &self,
    ) -> Result<(
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        String,
    )> {
        let (host, io): (String, Box<dyn IoStream>) = match self {
            Server::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                    format!("cannot reach the staticlet agent at {} (is `staticlet run` running with this --root-dir?)", p.display())
                })?;
                ("localhost".into(), Box::new(s))
            }
            Server::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("cannot reach the staticlet agent at {addr}"))?;
                (addr.clone(), Box::new(s))
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok((sender, host))
    }
}

/// Whether `e` says the agent could not be reached at all (not running, no socket).
pub fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        })
    })
}

impl Server {
    /// The pod `namespace/name` as the agent serves it, `None` if there is no such pod.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Option<serde_json::Value>> {
        let (code, body) = self.get(&format!("/pods/{namespace}/{name}")).await?;
        match code {
            200 => Ok(Some(serde_json::from_slice(&body)?)),
            404 => Ok(None),
            other => bail!(
                "the agent answered {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Like [`Server::pod`], but a missing pod is an error in kubectl's words.
    pub async fn existing_pod(&self, namespace: &str, name: &str) -> Result<serde_json::Value> {
        self.pod(namespace, name)
            .await?
            .with_context(|| format!("pods {name:?} not found in namespace {namespace:?}"))
    }
}

/// A `/pods?watch=true` stream: the agent's watch events, one at a time.
pub struct PodWatch {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Server {
    /// Opens `/pods?watch=true`; `None` when the agent does not stream watch events (an older
    /// agent answers with a plain `PodList`).
    pub async fn watch_pods(&self) -> Result<Option<PodWatch>> {
        let resp = self.request("/pods?watch=true").await?;
        let streams = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("stream=watch"));
        if resp.status() != hyper::StatusCode::OK || !streams {
            return Ok(None);
        }
        Ok(Some(PodWatch {
            body: resp.into_body(),
            buf: Vec::new(),
        }))
    }
}

impl PodWatch {
    /// The next event's type (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`) and object; `None`
    /// when the agent ended the stream (it stopped or restarted).
    pub async fn next(&mut self) -> Result<Option<(String, serde_json::Value)>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let mut ev: serde_json::Value = serde_json::from_slice(&line)
                    .context("the agent sent a watch event that is not JSON")?;
                let type_ = ev["type"].as_str().unwrap_or_default().to_string();
                return Ok(Some((type_, ev["object"].take())));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

fn secs_since(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time, now: SystemTime) -> i64 {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now - t.0.as_second()
}

/// kubectl's STATUS column of a pod.
pub fn pod_status_column(pod: &Pod) -> String {
    let st = pod.status.clone().unwrap_or_default();
    let mut reason = st.reason.clone().or(st.phase.clone()).unwrap_or_default();
    let inits = st.init_container_statuses.clone().unwrap_or_default();
    let init_specs = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let sidecar = init_specs.get(i).and_then(|s| s.restart_policy.as_deref()) == Some("Always");
        let state = c.state.clone().unwrap_or_default();
        if let Some(t) = &state.terminated {
            if t.exit_code == 0 {
                continue;
            }
            reason = match &t.reason {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", t.exit_code),
            };
            initializing = true;
        } else if sidecar && c.started == Some(true) {
            continue;
        } else if let Some(w) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .filter(|r| r != "PodInitializing")
        {
            reason = format!("Init:{w}");
            initializing = true;
        } else {
            reason = format!("Init:{i}/{}", inits.len());
            initializing = true;
        }
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in st.container_statuses.iter().flatten().rev() {
            let state = c.state.clone().unwrap_or_default();
            if let Some(r) = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(t) = &state.terminated {
                reason = match &t.reason {
                    Some(r) if !r.is_empty() => r.clone(),
                    _ => match t.signal {
                        Some(s) if s != 0 => format!("Signal:{s}"),
                        _ => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if state.running.is_some() && c.ready {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".into();
    }
    reason
}

fn restarts_column(statuses: &[ContainerStatus], now: SystemTime) -> String {
    let total: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let last = statuses
        .iter()
        .filter_map(|c| {
            c.last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
        })
        .map(|t| secs_since(t, now))
        .min();
    match last {
        Some(ago) if total > 0 => format!("{total} ({} ago)", human_duration(ago)),
        _ => total.to_string(),
    }
}

/// Prints pods as kubectl's table (`wide` adds IP, NODE, UID).
pub fn pod_table(pods: &[Pod], wide: bool, now: SystemTime) -> String {
    let mut rows = vec![{
        let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
        if wide {
            h.extend(["IP", "NODE", "UID"]);
        }
        h.into_iter().map(String::from).collect::<Vec<_>>()
    }];
    for p in pods {
        let st = p.status.clone().unwrap_or_default();
        let cs = st.container_statuses.clone().unwrap_or_default();
        let sidecars: Vec<&ContainerStatus> = st
            .init_container_statuses
            .iter()
            .flatten()
            .zip(
                p.spec
                    .iter()
                    .flat_map(|s| s.init_containers.iter().flatten()),
            )
            .filter(|(_, s)| s.restart_policy.as_deref() == Some("Always"))
            .map(|(c, _)| c)
            .collect();
        let total = cs.len() + sidecars.len();
        let ready = cs
            .iter()
            .chain(sidecars.iter().copied())
            .filter(|c| c.ready)
            .count();
        let mut all: Vec<ContainerStatus> = cs.clone();
        all.extend(st.init_container_statuses.clone().unwrap_or_default());
        let age = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| human_duration(secs_since(t, now)))
            .unwrap_or_else(|| "<unknown>".into());
        let mut row = vec![
            p.metadata.name.clone().unwrap_or_default(),
            format!("{ready}/{total}"),
            pod_status_column(p),
            restarts_column(&all, now),
            age,
        ];
        if wide {
            row.push(st.pod_ip.clone().unwrap_or_else(|| "<none>".into()));
            row.push(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "<none>".into()),
            );
            row.push(p.metadata.uid.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    format_table(&rows)
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
pub fn format_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Decodes a PodList body.
pub fn decode_pod_list(body: &[u8]) -> Result<List<Pod>> {
    serde_json::from_slice(body).context("the agent answered with something that is not a PodList")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_kubectl() {
        for (s, want) in [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (10799, "179m"),
            (10800, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (2 * 365 * 86400, "2y"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["NAME".into(), "READY".into()],
            vec!["a-long-name".into(), "1/1".into()],
        ];
        assert_eq!(
            format_table(&rows),
            "NAME          READY\na-long-name   1/1\n"
        );
    }
}
