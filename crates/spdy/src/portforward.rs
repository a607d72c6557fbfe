//! `portforward.k8s.io` over SPDY: the counterpart of kubelet's
//! `cri/streaming/portforward/httpstream.go`.
//!
//! One session carries every connection a `kubectl port-forward` forwards. For each, the client
//! opens two streams with the same `requestID` header: an `error` stream (which it closes for
//! writing at once and reads to the end) and a `data` stream, both with a `port` header.
//! [`PortForwardListener::next`] pairs them and hands out a [`PortForwardRequest`]: the caller
//! connects to the pod's port and copies both ways over [`PortForwardRequest::data`]; if the
//! connection fails it calls [`PortForwardRequest::fail`], which writes the message on the error
//! stream and resets both streams, as kubelet does (kubectl then prints the message and closes
//! the whole port-forward session). [`PortForwardRequest::error_message`] words it as kubelet.
//!
//! Kept from kubelet: a stream without a valid `port` (1–65535) or `streamType`
//! (`error`/`data`) is rejected (RST_STREAM CANCEL, no reply); a stream without `requestID`
//! (clients older than 1.6) gets one derived from its id (error stream: its id, data stream:
//! id − 2); a second stream of the same type for a request is refused with a message on the
//! pair's error stream; a pair not complete within the stream creation timeout gets
//! `… timed out waiting for streams` on its error stream and is dropped.

use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::frame::RstStatus;
use crate::session::{IncomingStream, Session, Stream};

/// The port-forward sub-protocol (the only one).
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// What kubelet negotiates.
pub const SUPPORTED_PROTOCOLS: &[&str] = &[PROTOCOL_V1];

const PORT_HEADER: &str = "port";
const REQUEST_ID_HEADER: &str = "requestid";
const STREAM_TYPE_HEADER: &str = "streamtype";

/// One forwarded connection: both of its streams have arrived.
#[derive(Debug)]
pub struct PortForwardRequest {
    pub request_id: String,
    /// The pod port to connect to.
    pub port: u16,
    /// The connection's bytes, both ways.
    pub data: Stream,
    /// Where a failure is reported.
    pub error: Stream,
}

impl PortForwardRequest {
    /// kubelet's wording of a forwarding failure.
    pub fn error_message(port: u16, pod: &str, uid: &str, err: &dyn Display) -> String {
        format!("error forwarding port {port} to pod {pod}, uid {uid}: {err}")
    }

    /// Reports a failure: `message` on the error stream, then both streams reset (the message
    /// is handed to the connection before the resets).
    pub async fn fail(mut self, message: &str) -> io::Result<()> {
        let written = async {
            self.error.write_all(message.as_bytes()).await?;
            self.error.flush().await
        }
        .await;
        self.data.reset(RstStatus::CANCEL);
        self.error.reset(RstStatus::CANCEL);
        written
    }

    /// Ends a forwarded connection normally: FIN on both streams (kubelet closes both).
    pub async fn finish(mut self) {
        let _ = self.data.shutdown().await;
        let _ = self.error.shutdown().await;
    }
}

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    deadline: Option<Instant>,
}

/// Pairs the streams of a port-forward session.
pub struct PortForwardListener {
    session: Session,
    timeout: Duration,
    pending: HashMap<String, Pair>,
}

impl std::fmt::Debug for PortForwardListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardListener")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Why a stream was refused (kubelet's messages).
fn validate(incoming: &IncomingStream) -> Result<(&'static str, u16), String> {
    let headers = incoming.headers();
    let port = headers.get(PORT_HEADER).unwrap_or("");
    if port.is_empty() {
        return Err(format!("{PORT_HEADER:?} header is required"));
    }
    let port_num: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port_num < 1 {
        return Err(format!("port {port:?} must be > 0"));
    }
    let stream_type = headers.get(STREAM_TYPE_HEADER).unwrap_or("");
    match stream_type {
        "" => Err(format!("{STREAM_TYPE_HEADER:?} header is required")),
        "error" => Ok(("error", port_num)),
        "data" => Ok(("data", port_num)),
        other => Err(format!("invalid stream type {other:?}")),
    }
}

impl PortForwardListener {
    /// `stream_creation_timeout`: how long a pair may wait for its second stream (kubelet:
    /// 30 s).
    pub fn new(session: Session, stream_creation_timeout: Duration) -> Self {
        PortForwardListener {
            session,
            timeout: stream_creation_timeout,
            pending: HashMap::new(),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next complete pair; `None` once the session has ended.
    pub async fn next(&mut self) -> Option<PortForwardRequest> {
        loop {
            let earliest = self.pending.values().filter_map(|p| p.deadline).min();
            let incoming = tokio::select! {
                s = self.session.accept_stream() => s,
                _ = sleep_until_opt(earliest) => {
                    self.expire().await;
                    continue;
                }
            };
            let incoming = incoming?;
            if let Some(request) = self.add(incoming).await {
                return Some(request);
            }
        }
    }

    async fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let Some(pair) = self.pending.remove(&id) else {
                continue;
            };
            let msg = format!(
                "(conn={:p}, request={id}) timed out waiting for streams",
                &self.session
            );
            tracing::warn!("{msg}");
            if let Some(mut error) = pair.error {
                let _ = error.write_all(msg.as_bytes()).await;
            }
        }
    }

    async fn add(&mut self, incoming: IncomingStream) -> Option<PortForwardRequest> {
        let (stream_type, port) = match validate(&incoming) {
            Ok(v) => v,
            Err(msg) => {
                tracing::warn!(
                    stream_id = incoming.id(),
                    "port-forward stream rejected: {msg}"
                );
                incoming.reject(RstStatus::CANCEL);
                return None;
            }
        };
        let request_id = match incoming.headers().get(REQUEST_ID_HEADER) {
            Some(id) if !id.is_empty() => id.to_owned(),
            // Clients before request ids: consecutive ids per connection, error stream first.
            _ if stream_type == "error" => incoming.id().to_string(),
            _ => (i64::from(incoming.id()) - 2).to_string(),
        };
        let stream = incoming.accept();
        let timeout = self.timeout;
        let pair = self.pending.entry(request_id.clone()).or_default();
        if pair.deadline.is_none() {
            pair.deadline = Some(Instant::now() + timeout);
        }
        let slot = if stream_type == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if slot.is_some() {
            let msg = format!(
                "error processing stream for request {request_id}: {stream_type} stream already assigned"
            );
            tracing::warn!("{msg}");
            if let Some(error) = pair.error.as_mut() {
                let _ = error.write_all(msg.as_bytes()).await;
            }
            return None;
        }
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some() {
            let pair = self.pending.remove(&request_id)?;
            let (data, error) = (pair.data?, pair.error?);
            let port = data
                .headers()
                .get(PORT_HEADER)
                .and_then(|p| p.parse().ok())
                .unwrap_or(port);
            return Some(PortForwardRequest {
                request_id,
                port,
                data,
                error,
            });
        }
        None
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
