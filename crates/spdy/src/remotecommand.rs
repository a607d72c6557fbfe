//! exec and attach over SPDY: the counterpart of kubelet's
//! `cri/streaming/remotecommand` (`createHTTPStreamStreams`, the v1–v4 protocol handlers,
//! `handleResizeEvents`, `v1WriteStatusFunc`/`v4WriteStatusFunc` and `ServeExec`'s status).
//!
//! The client (kube-apiserver, or kubectl through it) opens one stream per channel, named by
//! its `streamType` header: `error`, `stdin`, `stdout`, `stderr` and, with a TTY, `resize`.
//! [`accept`] takes them (every stream is accepted, as kubelet does) until the expected set is
//! there — one error stream plus one per requested channel, plus resize when `tty` is set and
//! the protocol has it (v3+) — or the stream creation timeout passes (kubelet: 30 s). It then
//! exposes stdin as a reader, stdout/stderr as writers, and resize events
//! (`{"Width":…,"Height":…}` JSON values, one after the other) as a channel. [`RemoteCommand::finish`]
//! writes the result on the error stream and closes the session:
//!
//! * v4 (and v5): a `metav1.Status` as JSON — `{"metadata":{},"status":"Success"}` on success;
//!   for a non-zero exit `status: Failure`, `reason: NonZeroExitCode`,
//!   `details.causes: [{"reason":"ExitCode","message":"<code>"}]` and
//!   `message: "command terminated with non-zero exit code: <detail>"`, which client-go's
//!   `errorDecoderV4` turns into the exit code (it parses the cause's message as 0–255); for any
//!   other failure kubelet's `InternalError` status (code 500);
//! * v1–v3: nothing on success, the status message as plain text on failure.
//!
//! Protocols: kubelet negotiates `v4.channel.k8s.io`, `v3`, `v2` and `channel.k8s.io` over SPDY
//! ([`SUPPORTED_PROTOCOLS`]). `v5.channel.k8s.io` only adds a CLOSE signal to the WebSocket
//! framing; client-go runs v5 over SPDY exactly as v4, and kubelet does not offer it over
//! SPDY — [`Protocol::V5`] is accepted here as v4 for callers that choose to list it. v1's
//! quirks (kubelet resets the v1 error stream right after the handshake and closes stdin) are
//! not reproduced: v1 behaves as v2.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::session::{Session, Stream};

pub const STREAM_PROTOCOL_V1: &str = "channel.k8s.io";
pub const STREAM_PROTOCOL_V2: &str = "v2.channel.k8s.io";
pub const STREAM_PROTOCOL_V3: &str = "v3.channel.k8s.io";
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
pub const STREAM_PROTOCOL_V5: &str = "v5.channel.k8s.io";

/// What kubelet's streaming server negotiates over SPDY, in its order.
pub const SUPPORTED_PROTOCOLS: &[&str] = &[
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
];

/// kubelet's default `streamCreationTimeout`.
pub const DEFAULT_STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RemoteCommand::finish`] waits for queued output to leave before closing.
const FINISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest pending resize input (an unterminated JSON value) before the resize stream is
/// dropped.
const MAX_RESIZE_BUFFER: usize = 64 * 1024;

/// Header naming a stream's channel.
pub const STREAM_TYPE_HEADER: &str = "streamtype";

/// A negotiated remote command protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Protocol {
    /// The protocol of a negotiated name; an empty name is v1, as kubelet falls back.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Some(match name {
            "" | STREAM_PROTOCOL_V1 => Protocol::V1,
            STREAM_PROTOCOL_V2 => Protocol::V2,
            STREAM_PROTOCOL_V3 => Protocol::V3,
            STREAM_PROTOCOL_V4 => Protocol::V4,
            STREAM_PROTOCOL_V5 => Protocol::V5,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => STREAM_PROTOCOL_V1,
            Protocol::V2 => STREAM_PROTOCOL_V2,
            Protocol::V3 => STREAM_PROTOCOL_V3,
            Protocol::V4 => STREAM_PROTOCOL_V4,
            Protocol::V5 => STREAM_PROTOCOL_V5,
        }
    }

    /// v3 added the resize stream.
    pub fn supports_resize(self) -> bool {
        self >= Protocol::V3
    }

    /// v4 added the JSON status on the error stream.
    pub fn json_status(self) -> bool {
        self >= Protocol::V4
    }
}

/// Which channels the client asked for (kubelet's `remotecommand.Options`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
}

impl StreamOptions {
    /// From the query of kubelet's exec/attach request (what kube-apiserver sends:
    /// `input=1`, `output=1`, `error=1`, `tty=1`); stderr is dropped with a TTY, and at least one
    /// of the three channels is required (answer 400 with the error's text otherwise).
    pub fn from_query(query: &str) -> Result<StreamOptions, OptionsError> {
        let pairs = parse_query(query);
        let flag = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .is_some_and(|(_, v)| v == "1")
        };
        let tty = flag("tty");
        let stdin = flag("input");
        let stdout = flag("output");
        let stderr = flag("error") && !tty;
        if !stdin && !stdout && !stderr {
            return Err(OptionsError::NoStreams);
        }
        Ok(StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        })
    }

    /// Streams [`accept`] waits for under `protocol`.
    pub fn expected_streams(&self, protocol: Protocol) -> usize {
        1 + usize::from(self.stdin)
            + usize::from(self.stdout)
            + usize::from(self.stderr)
            + usize::from(self.tty && protocol.supports_resize())
    }
}

/// The `command` query parameters of an exec request, in order.
pub fn command_from_query(query: &str) -> Vec<String> {
    parse_query(query)
        .into_iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v)
        .collect()
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
fn parse_query(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .trim_start_matches('?')
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A terminal size event from the resize stream (client-go's `TerminalSize`, JSON field names
/// as Go writes them; Go's decoder also takes them in lower case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width", alias = "width", default)]
    pub width: u16,
    #[serde(rename = "Height", alias = "height", default)]
    pub height: u16,
}

/// How the command ended, when not successfully.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    /// It exited with a non-zero code. `detail` follows kubelet's
    /// `command terminated with non-zero exit code: ` in the status message; the client only
    /// uses `code` (which it reads as 0–255).
    #[error("command terminated with non-zero exit code: {detail}")]
    NonZero { code: i32, detail: String },
    /// Anything else (the command could not run): kubelet's InternalError status.
    #[error("error executing command in container: {0}")]
    Internal(String),
}

impl ExitError {
    /// A non-zero exit worded as containerd's exec reports it
    /// (`error executing command [sh -c exit 42], exit code 42`).
    pub fn exit_code(code: i32, command: &[String]) -> ExitError {
        ExitError::NonZero {
            code,
            detail: format!(
                "error executing command [{}], exit code {code}",
                command.join(" ")
            ),
        }
    }
}

#[derive(Serialize)]
struct Metadata {}

#[derive(Serialize)]
struct StatusCause<'a> {
    #[serde(rename = "reason", skip_serializing_if = "str::is_empty")]
    cause_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

#[derive(Serialize)]
struct StatusDetails<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<StatusCause<'a>>,
}

/// `metav1.Status` with the fields kubelet sets, in Go's field order.
#[derive(Serialize)]
struct Status<'a> {
    metadata: Metadata,
    status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    code: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The v4 error-stream payload kubelet writes for `result` (what `json.Marshal` of its
/// `metav1.Status` gives).
pub fn status_json(result: &Result<(), ExitError>) -> String {
    let message;
    let code_text;
    let status = match result {
        Ok(()) => Status {
            metadata: Metadata {},
            status: "Success",
            message: "",
            reason: "",
            details: None,
            code: 0,
        },
        Err(e @ ExitError::NonZero { code, .. }) => {
            message = e.to_string();
            code_text = code.to_string();
            Status {
                metadata: Metadata {},
                status: "Failure",
                message: &message,
                reason: "NonZeroExitCode",
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        cause_type: "ExitCode",
                        message: &code_text,
                    }],
                }),
                code: 0,
            }
        }
        Err(ExitError::Internal(detail)) => {
            code_text = format!("error executing command in container: {detail}");
            message = format!("Internal error occurred: {code_text}");
            Status {
                metadata: Metadata {},
                status: "Failure",
                message: &message,
                reason: "InternalError",
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        cause_type: "",
                        message: &code_text,
                    }],
                }),
                code: 500,
            }
        }
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&status).unwrap_or_default()
}

/// What v1–v3 write on the error stream for `result`: nothing on success, the status message
/// otherwise.
pub fn status_text(result: &Result<(), ExitError>) -> Option<String> {
    match result {
        Ok(()) => None,
        Err(e @ ExitError::NonZero { .. }) => Some(e.to_string()),
        Err(ExitError::Internal(detail)) => Some(format!(
            "Internal error occurred: error executing command in container: {detail}"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteCommandError {
    #[error("timed out waiting for client to create streams")]
    Timeout,
    #[error("the SPDY session ended before the client created its streams")]
    SessionEnded,
    #[error("writing the command's status to the error stream: {0}")]
    Status(#[source] io::Error),
}

/// The streams of one exec/attach. Take the channels out of the public fields; call
/// [`RemoteCommand::finish`] once the command is over and its output has been written (shut
/// down or drop the output streams first: their FIN then follows their data).
pub struct RemoteCommand {
    pub protocol: Protocol,
    pub tty: bool,
    /// The client's stdin; EOF when the client closes it.
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    /// Terminal sizes, in order; ends with the resize stream.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    error: Option<Stream>,
    session: Session,
}

impl std::fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCommand")
            .field("protocol", &self.protocol)
            .field("tty", &self.tty)
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// Waits for the client's streams on `session` (see the module docs). On a timeout or a
/// session that ends first the session is closed.
pub async fn accept(
    session: Session,
    protocol: Protocol,
    options: StreamOptions,
    stream_creation_timeout: Duration,
) -> Result<RemoteCommand, RemoteCommandError> {
    let expected = options.expected_streams(protocol);
    let deadline = Instant::now() + stream_creation_timeout;
    let mut rc = RemoteCommand {
        protocol,
        tty: options.tty,
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        error: None,
        session: session.clone(),
    };
    let mut resize_stream = None;
    let mut received = 0;
    while received < expected {
        let incoming = tokio::select! {
            s = session.accept_stream() => s,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(received, expected, "timed out waiting for client to create streams");
                session.close();
                return Err(RemoteCommandError::Timeout);
            }
        };
        let Some(incoming) = incoming else {
            return Err(RemoteCommandError::SessionEnded);
        };
        let stream_type = incoming
            .headers()
            .get(STREAM_TYPE_HEADER)
            .unwrap_or("")
            .to_owned();
        let stream = incoming.accept();
        let slot = match stream_type.as_str() {
            "error" => &mut rc.error,
            "stdin" => &mut rc.stdin,
            "stdout" => &mut rc.stdout,
            "stderr" => &mut rc.stderr,
            "resize" if protocol.supports_resize() => &mut resize_stream,
            other => {
                tracing::warn!(stream_type = other, "unexpected stream type");
                continue;
            }
        };
        *slot = Some(stream);
        received += 1;
    }
    if let Some(stream) = resize_stream {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(resize_events(stream, tx));
        rc.resize = Some(rx);
    }
    Ok(rc)
}

/// Decodes consecutive JSON terminal sizes until the stream ends, a value does not decode (as
/// Go's `json.Decoder` loop), or the receiver is gone.
async fn resize_events(mut stream: Stream, tx: mpsc::Sender<TerminalSize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let mut sizes = Vec::new();
        let consumed = {
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            loop {
                match values.next() {
                    Some(Ok(size)) => sizes.push(size),
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "bad resize event; ignoring the resize stream");
                        for size in sizes {
                            let _ = tx.send(size).await;
                        }
                        return;
                    }
                    None => break,
                }
            }
            values.byte_offset()
        };
        for size in sizes {
            if tx.send(size).await.is_err() {
                return;
            }
        }
        buf.drain(..consumed);
        if buf.len() > MAX_RESIZE_BUFFER {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl RemoteCommand {
    /// The session the streams belong to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Reports how the command ended on the error stream (see the module docs), then closes
    /// the session as kubelet does: output streams already shut down or dropped are flushed
    /// first (for at most a few seconds), streams still open are reset.
    pub async fn finish(mut self, result: Result<(), ExitError>) -> Result<(), RemoteCommandError> {
        let payload = if self.protocol.json_status() {
            Some(status_json(&result))
        } else {
            status_text(&result)
        };
        let mut outcome = Ok(());
        if let Some(mut error) = self.error.take() {
            if let Some(payload) = payload {
                if let Err(e) = error.write_all(payload.as_bytes()).await {
                    outcome = Err(RemoteCommandError::Status(e));
                }
            }
            if outcome.is_ok() {
                if let Err(e) = error.shutdown().await {
                    outcome = Err(RemoteCommandError::Status(e));
                }
            }
        }
        // Dropping the channels we still hold finishes them (FIN after their data).
        self.stdout.take();
        self.stderr.take();
        self.session.close_gracefully(FINISH_DRAIN_TIMEOUT).await;
        outcome
    }
}
