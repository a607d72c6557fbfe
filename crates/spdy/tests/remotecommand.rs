//! exec/attach through the crate's client, opening streams as client-go's v4 executor does.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use staticlet_spdy::remotecommand::{
    self, command_from_query, status_json, status_text, ExitError, OptionsError, Protocol,
    RemoteCommandError, StreamOptions, TerminalSize,
};
use staticlet_spdy::{Headers, Session, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn open(client: &Session, ty: &str) -> Stream {
    within(
        ty,
        client.open_stream(Headers::new().with("streamType", ty)),
    )
    .await
    .unwrap()
}

async fn read_all(s: &mut Stream) -> Vec<u8> {
    let mut v = Vec::new();
    within("read to end", s.read_to_end(&mut v)).await.unwrap();
    v
}

/// client-go's `errorDecoderV4`, on the JSON we write: the exit code it would report.
fn decode_v4(message: &[u8]) -> Result<Option<u8>, String> {
    let status: Value = serde_json::from_slice(message).map_err(|e| e.to_string())?;
    match status["status"].as_str() {
        Some("Success") => Ok(None),
        Some("Failure") if status["reason"] == "NonZeroExitCode" => {
            let causes = status["details"]["causes"]
                .as_array()
                .ok_or("details must be set")?;
            for c in causes {
                if c["reason"] == "ExitCode" {
                    let code = c["message"].as_str().unwrap_or("");
                    return code.parse::<u8>().map(Some).map_err(|e| e.to_string());
                }
            }
            Err("no ExitCode cause given".into())
        }
        Some("Failure") => Err(status["message"].as_str().unwrap_or("").to_owned()),
        _ => Err("unknown error".into()),
    }
}

#[tokio::test]
async fn exec_delivers_output_and_a_non_zero_exit_code() {
    let (server, client) = pair();
    let opts = StreamOptions::from_query("command=sh&input=1&output=1&error=1").unwrap();
    let srv = tokio::spawn(async move {
        let mut rc = remotecommand::accept(server, Protocol::V4, opts, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(rc.resize.is_none());
        let mut stdin = rc.stdin.take().unwrap();
        let mut stdout = rc.stdout.take().unwrap();
        let mut stderr = rc.stderr.take().unwrap();
        let mut input = Vec::new();
        stdin.read_to_end(&mut input).await.unwrap();
        stdout.write_all(&input.to_ascii_uppercase()).await.unwrap();
        stdout.shutdown().await.unwrap();
        stderr.write_all(b"oops\n").await.unwrap();
        drop(stderr); // dropping finishes it too
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "exit 42".to_owned()];
        rc.finish(Err(ExitError::exit_code(42, &cmd)))
            .await
            .unwrap();
    });
    // client-go's order: error, stdin, stdout, stderr.
    let mut error = open(&client, "error").await;
    let mut stdin = open(&client, "stdin").await;
    let mut stdout = open(&client, "stdout").await;
    let mut stderr = open(&client, "stderr").await;
    stdin.write_all(b"hello exec").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(read_all(&mut stdout).await, b"HELLO EXEC");
    assert_eq!(read_all(&mut stderr).await, b"oops\n");
    let status = read_all(&mut error).await;
    assert_eq!(
        String::from_utf8(status.clone()).unwrap(),
        r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 42], exit code 42","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#
    );
    assert_eq!(decode_v4(&status), Ok(Some(42)));
    within("server", srv).await.unwrap();
    within("client end", client.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn exec_success_writes_a_success_status() {
    let (server, client) = pair();
    let opts = StreamOptions {
        stdout: true,
        ..StreamOptions::default()
    };
    let srv = tokio::spawn(async move {
        let mut rc = remotecommand::accept(server, Protocol::V4, opts, Duration::from_secs(30))
            .await
            .unwrap();
        let mut out = rc.stdout.take().unwrap();
        out.write_all(&pattern(300 * 1024, 3)).await.unwrap();
        drop(out);
        rc.finish(Ok(())).await.unwrap();
    });
    let mut error = open(&client, "error").await;
    let mut stdout = open(&client, "stdout").await;
    // As client-go: stdout is copied while the error stream is awaited; the output queued
    // before finish arrives whole.
    let out = tokio::spawn(async move { read_all(&mut stdout).await });
    let status = read_all(&mut error).await;
    assert_eq!(status, br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(decode_v4(&status), Ok(None));
    assert!(within("stdout", out).await.unwrap() == pattern(300 * 1024, 3));
    within("server", srv).await.unwrap();
}

#[tokio::test]
async fn tty_resize_events_arrive_in_order() {
    let (server, client) = pair();
    let opts = StreamOptions::from_query("input=1&output=1&error=1&tty=1").unwrap();
    assert!(!opts.stderr, "stderr is dropped with a tty");
    assert_eq!(opts.expected_streams(Protocol::V4), 4);
    assert_eq!(opts.expected_streams(Protocol::V2), 3);
    let srv = tokio::spawn(async move {
        let mut rc = remotecommand::accept(server, Protocol::V4, opts, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(rc.tty && rc.stderr.is_none());
        let mut resize = rc.resize.take().unwrap();
        let mut sizes = Vec::new();
        while let Some(size) = resize.recv().await {
            sizes.push(size);
        }
        rc.finish(Ok(())).await.unwrap();
        sizes
    });
    let mut error = open(&client, "error").await;
    let _stdin = open(&client, "stdin").await;
    let _stdout = open(&client, "stdout").await;
    let mut resize = open(&client, "resize").await;
    // As client-go's json.Encoder writes them, one value split over two DATA frames.
    resize
        .write_all(b"{\"Width\":80,\"Height\":24}\n{\"Wid")
        .await
        .unwrap();
    resize.flush().await.unwrap();
    resize
        .write_all(b"th\":132,\"Height\":43}\n{\"width\":1,\"height\":2}")
        .await
        .unwrap();
    resize.shutdown().await.unwrap();
    let sizes = within("server", srv).await.unwrap();
    assert_eq!(
        sizes,
        vec![
            TerminalSize {
                width: 80,
                height: 24
            },
            TerminalSize {
                width: 132,
                height: 43
            },
            TerminalSize {
                width: 1,
                height: 2
            },
        ]
    );
    assert_eq!(decode_v4(&read_all(&mut error).await), Ok(None));
}

#[tokio::test]
async fn older_protocols_write_plain_text_errors() {
    for (result, expect) in [
        (Ok(()), ""),
        (
            Err(ExitError::NonZero {
                code: 3,
                detail: "exit status 3".into(),
            }),
            "command terminated with non-zero exit code: exit status 3",
        ),
    ] {
        let (server, client) = pair();
        let opts = StreamOptions {
            stdout: true,
            tty: true,
            ..StreamOptions::default()
        };
        let r = result.clone();
        let srv = tokio::spawn(async move {
            // v2: no resize stream is waited for even with a tty.
            let rc = remotecommand::accept(server, Protocol::V2, opts, Duration::from_secs(30))
                .await
                .unwrap();
            assert!(rc.resize.is_none());
            rc.finish(r).await.unwrap();
        });
        let mut error = open(&client, "error").await;
        let _stdout = open(&client, "stdout").await;
        assert_eq!(read_all(&mut error).await, expect.as_bytes());
        within("server", srv).await.unwrap();
        assert_eq!(status_text(&result).unwrap_or_default(), expect);
    }
}

#[tokio::test(start_paused = true)]
async fn missing_streams_time_out() {
    let (server, client) = pair();
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        ..StreamOptions::default()
    };
    let srv = tokio::spawn(async move {
        remotecommand::accept(server, Protocol::V4, opts, Duration::from_secs(5)).await
    });
    let _error = open(&client, "error").await;
    let _stdout = open(&client, "stdout").await;
    // stdin never comes.
    let r = within("accept", srv).await.unwrap();
    assert!(matches!(r, Err(RemoteCommandError::Timeout)), "{r:?}");
    within("client end", client.wait_closed()).await.unwrap();
}

#[test]
fn query_parsing_follows_kubelet() {
    assert_eq!(
        StreamOptions::from_query("tty=1&error=1"),
        Err(OptionsError::NoStreams)
    );
    assert_eq!(
        StreamOptions::from_query("?output=true&error=1"),
        Ok(StreamOptions {
            stdin: false,
            stdout: false,
            stderr: true,
            tty: false
        })
    );
    assert_eq!(
        command_from_query("command=sh&input=1&command=-c&command=echo%20a+b%26c&command=%zz"),
        vec!["sh", "-c", "echo a b&c", "%zz"]
    );
    assert_eq!(Protocol::from_name("v4.channel.k8s.io"), Some(Protocol::V4));
    assert_eq!(Protocol::from_name(""), Some(Protocol::V1));
    assert_eq!(Protocol::from_name("v9.channel.k8s.io"), None);
    assert_eq!(
        remotecommand::SUPPORTED_PROTOCOLS,
        &[
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
}

#[test]
fn internal_errors_use_kubelets_internal_error_status() {
    let json = status_json(&Err(ExitError::Internal("no such container".into())));
    assert_eq!(
        json,
        r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: no such container","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: no such container"}]},"code":500}"#
    );
    assert_eq!(
        decode_v4(json.as_bytes()),
        Err(
            "Internal error occurred: error executing command in container: no such container"
                .into()
        )
    );
}
