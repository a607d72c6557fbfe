//! A minimal kubelet-like endpoint for interop checks against real Kubernetes clients
//! (`interop/` drives it with client-go's SPDY executor and port forwarder).
//!
//! `cargo run -p staticlet-spdy --example interop_server -- 127.0.0.1:0` prints the address it
//! listens on. Plain HTTP/1.1, one request per connection, parsed by hand to stay free of an
//! HTTP server dependency:
//!
//! * `POST /exec?command=…&input=1&output=1&error=1[&tty=1]`: the "commands" are
//!   `upper` (stdin upper-cased to stdout, `bye` on stderr, exit 0), `exit` with an argument
//!   (exit with that code), `big` with a byte count (that many bytes on stdout), `size`
//!   (prints each terminal size received, until stdin ends);
//! * `POST /portforward`: port 1 answers by echoing the data, any other port fails with
//!   kubelet's message.

use std::time::Duration;

use staticlet_spdy::portforward::{self, PortForwardListener, PortForwardRequest};
use staticlet_spdy::remotecommand::{self, ExitError, Protocol, StreamOptions};
use staticlet_spdy::{upgrade, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(conn).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Reads the request head; returns the target and the headers.
async fn read_head(conn: &mut TcpStream) -> std::io::Result<(String, http::HeaderMap)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 || head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    Ok((target, headers))
}

async fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    let (target, headers) = read_head(&mut conn).await?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let protocols = if path.starts_with("/portforward") {
        portforward::SUPPORTED_PROTOCOLS
    } else {
        remotecommand::SUPPORTED_PROTOCOLS
    };
    let up = match upgrade::upgrade(&headers, protocols) {
        Ok(up) => up,
        Err(rejection) => {
            let body = rejection.body();
            let response = format!(
                "HTTP/1.1 {} {}\r\ncontent-length: {}\r\ncontent-type: text/plain; charset=utf-8\r\n\r\n{body}",
                rejection.status.as_u16(),
                rejection.status.canonical_reason().unwrap_or(""),
                body.len()
            );
            return conn.write_all(response.as_bytes()).await;
        }
    };
    let mut response = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for (k, v) in up.headers.iter() {
        response.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or("")));
    }
    response.push_str("\r\n");
    conn.write_all(response.as_bytes()).await?;
    let session = Session::server(conn);
    if path.starts_with("/portforward") {
        let mut listener = PortForwardListener::new(session, Duration::from_secs(30));
        while let Some(req) = listener.next().await {
            tokio::spawn(forward(req));
        }
        return Ok(());
    }
    let protocol = Protocol::from_name(&up.protocol).unwrap_or(Protocol::V1);
    let options = StreamOptions::from_query(query).map_err(std::io::Error::other)?;
    let command = remotecommand::command_from_query(query);
    let mut rc = remotecommand::accept(
        session,
        protocol,
        options,
        remotecommand::DEFAULT_STREAM_CREATION_TIMEOUT,
    )
    .await
    .map_err(std::io::Error::other)?;
    let result = match command.first().map(String::as_str) {
        Some("upper") => {
            let mut input = Vec::new();
            if let Some(stdin) = rc.stdin.as_mut() {
                stdin.read_to_end(&mut input).await?;
            }
            if let Some(mut out) = rc.stdout.take() {
                out.write_all(&input.to_ascii_uppercase()).await?;
                out.shutdown().await?;
            }
            if let Some(mut err) = rc.stderr.take() {
                err.write_all(b"bye\n").await?;
            }
            Ok(())
        }
        Some("exit") => {
            let code = command.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            Err(ExitError::exit_code(code, &command))
        }
        Some("big") => {
            let n: usize = command.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            if let Some(mut out) = rc.stdout.take() {
                let chunk: Vec<u8> = (0..8192u32).map(|i| b'a' + (i % 26) as u8).collect();
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    out.write_all(&chunk[..k]).await?;
                    left -= k;
                }
                out.shutdown().await?;
            }
            Ok(())
        }
        Some("size") => {
            let mut out = rc.stdout.take();
            if let (Some(resize), Some(out)) = (rc.resize.as_mut(), out.as_mut()) {
                while let Some(size) = resize.recv().await {
                    out.write_all(format!("{}x{}\n", size.width, size.height).as_bytes())
                        .await?;
                    if size.width == 0 {
                        break;
                    }
                }
            }
            Ok(())
        }
        other => Err(ExitError::Internal(format!("unknown command {other:?}"))),
    };
    rc.finish(result).await.map_err(std::io::Error::other)
}

async fn forward(mut req: PortForwardRequest) {
    if req.port != 1 {
        let msg = PortForwardRequest::error_message(
            req.port,
            "interop",
            "",
            &"connection refused (only port 1 answers)",
        );
        let _ = req.fail(&msg).await;
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match req.data.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if req.data.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    req.finish().await;
}
