//! `staticlet exec`: runs a command in a running container, asked of the agent's local API
//! (the node API's `/exec`, over SPDY as kubectl's exec goes through the API server), on any
//! runtime: `-i` passes stdin, `-t` gives the command a terminal (the local one in raw mode,
//! window size changes passed on). The exit code is the command's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use staticlet_spdy::remotecommand::{STREAM_TYPE_HEADER, SUPPORTED_PROTOCOLS};
use staticlet_spdy::{Headers, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The pod's name (`<name>-<node>`).
    pod: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Container (default: the first).
    #[arg(short, long)]
    container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Give the command a terminal (stderr goes to it too).
    #[arg(short = 't', long)]
    tty: bool,
    /// Give up after this long when neither -i nor -t is given (Go duration syntax; 0s: never).
    #[arg(long, default_value = "1m", value_parser = staticlet_manifest::duration::parse_go_duration)]
    timeout: Duration,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The `/exec` path kubelet serves, with its query (`command` repeated, `input`, `output`,
/// `error`, `tty` as `1`).
pub fn exec_path(
    ns: &str,
    pod: &str,
    container: &str,
    cmd: &[String],
    stdin: bool,
    tty: bool,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in cmd {
        q.append_pair("command", c);
    }
    q.append_pair("output", "1");
    if !tty {
        q.append_pair("error", "1");
    }
    if stdin {
        q.append_pair("input", "1");
    }
    if tty {
        q.append_pair("tty", "1");
    }
    format!("/exec/{ns}/{pod}/{container}?{}", q.finish())
}

/// The exit code in a v4 error-stream `Status` (empty: success).
pub fn exit_code(status: &[u8]) -> Result<i32> {
    if status.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    let v: serde_json::Value =
        serde_json::from_slice(status).with_context(|| "the agent's exec status is not JSON")?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        if let Some(code) = v["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse().ok())
        {
            return Ok(code);
        }
    }
    bail!("{}", v["message"].as_str().unwrap_or("exec failed"))
}

pub async fn exec(args: ExecArgs) -> Result<ExitCode> {
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let pod = server.existing_pod(&args.namespace, &args.pod).await?;
    let container = match &args.container {
        Some(c) => crate::commands::logs::pick_container(&pod, Some(c))?,
        None => pod["spec"]["containers"][0]["name"]
            .as_str()
            .with_context(|| format!("pod {} has no containers", args.pod))?
            .to_string(),
    };
    let path = exec_path(
        &args.namespace,
        &args.pod,
        &container,
        &args.command,
        args.stdin,
        args.tty,
    );
    let interactive = args.stdin || args.tty;
    let run = run(&server, &path, args.stdin, args.tty);
    let code = if interactive || args.timeout.is_zero() {
        run.await?
    } else {
        tokio::time::timeout(args.timeout, run)
            .await
            .with_context(|| format!("the command did not finish within {:?}", args.timeout))??
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn run(server: &client::Server, path: &str, stdin: bool, tty: bool) -> Result<i32> {
    let (mut sender, host) = server.connect().await?;
    let mut req = hyper::Request::get(path).header("host", host);
    for (k, v) in &staticlet_spdy::upgrade::client_request_headers(SUPPORTED_PROTOCOLS) {
        req = req.header(k, v);
    }
    let resp = sender
        .send_request(req.body(http_body_util::Empty::new())?)
        .await?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        bail!(
            "exec refused ({status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let io = hyper::upgrade::on(resp).await?;
    let session = Session::client(TokioIo::new(io));
    let open = |t: &str| {
        let h = Headers::new().with(STREAM_TYPE_HEADER, t);
        session.open_stream(h)
    };
    let mut error = open("error").await?;
    let stdin_stream = if stdin {
        Some(open("stdin").await?)
    } else {
        None
    };
    let mut stdout_stream = open("stdout").await?;
    let stderr_stream = if tty {
        None
    } else {
        Some(open("stderr").await?)
    };
    let resize_stream = if tty {
        Some(open("resize").await?)
    } else {
        None
    };

    let _raw = if tty { terminal::Raw::enter() } else { None };
    if let Some(mut r) = resize_stream {
        tokio::spawn(async move {
            let mut winch =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
            loop {
                if let Some((w, h)) = terminal::size() {
                    let msg = serde_json::json!({"Width": w, "Height": h}).to_string();
                    if r.write_all(msg.as_bytes()).await.is_err() {
                        return;
                    }
                }
                match winch.as_mut() {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            return;
                        }
                    }
                    None => return,
                }
            }
        });
    }
    if let Some(mut s) = stdin_stream {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown().await;
        });
    }
    let out = async {
        let _ = tokio::io::copy(&mut stdout_stream, &mut tokio::io::stdout()).await;
        let _ = tokio::io::stdout().flush().await;
    };
    let err = async {
        if let Some(mut s) = stderr_stream {
            let _ = tokio::io::copy(&mut s, &mut tokio::io::stderr()).await;
        }
    };
    let mut status = Vec::new();
    let status_read = error.read_to_end(&mut status);
    let (_, _, r) = tokio::join!(out, err, status_read);
    r.context("reading the exec status")?;
    session.close();
    exit_code(&status)
}

/// The local terminal: raw mode while a `-t` exec runs, and its size.
mod terminal {
    use rustix::termios;

    /// Restores the terminal's settings when dropped.
    pub struct Raw {
        saved: termios::Termios,
    }

    impl Raw {
        /// Puts stdin's terminal in raw mode; `None` when stdin is not a terminal.
        pub fn enter() -> Option<Raw> {
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(&stdin).ok()?;
            let mut raw = saved.clone();
            raw.make_raw();
            termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw).ok()?;
            Some(Raw { saved })
        }
    }

    impl Drop for Raw {
        fn drop(&mut self) {
            let _ =
                termios::tcsetattr(std::io::stdin(), termios::OptionalActions::Now, &self.saved);
        }
    }

    /// The terminal's (columns, rows), from stdout.
    pub fn size() -> Option<(u16, u16)> {
        let ws = termios::tcgetwinsize(std::io::stdout()).ok()?;
        (ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_as_kubelet_reads_them() {
        let cmd: Vec<String> = vec!["sh".into(), "-c".into(), "echo a&b".into()];
        assert_eq!(
            exec_path("default", "web-n", "app", &cmd, false, false),
            "/exec/default/web-n/app?command=sh&command=-c&command=echo+a%26b&output=1&error=1"
        );
        assert_eq!(
            exec_path("default", "web-n", "app", &cmd[..1], true, true),
            "/exec/default/web-n/app?command=sh&output=1&input=1&tty=1"
        );
    }

    #[test]
    fn exit_codes_from_the_status() {
        assert_eq!(exit_code(b"").unwrap(), 0);
        assert_eq!(
            exit_code(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        assert_eq!(
            exit_code(br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#).unwrap(),
            42
        );
        let e = exit_code(br#"{"status":"Failure","message":"executable file not found"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found"), "{e}");
    }
}
