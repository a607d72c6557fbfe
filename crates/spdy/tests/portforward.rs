//! port-forward through the crate's client, opening streams as client-go's port forwarder does:
//! error stream first (closed for writing at once), then the data stream.

mod common;

use std::time::Duration;

use common::*;
use staticlet_spdy::portforward::{PortForwardListener, PortForwardRequest};
use staticlet_spdy::session::SessionError;
use staticlet_spdy::{Headers, RstStatus, Session, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn headers(ty: &str, port: &str, request_id: Option<&str>) -> Headers {
    let mut h = Headers::new().with("streamType", ty).with("port", port);
    if let Some(id) = request_id {
        h.set("requestID", id);
    }
    h
}

/// Opens a forwarded connection's two streams; returns (error, data).
async fn connect(client: &Session, port: &str, request_id: &str) -> (Stream, Stream) {
    let mut error = within(
        "error stream",
        client.open_stream(headers("error", port, Some(request_id))),
    )
    .await
    .unwrap();
    error.shutdown().await.unwrap();
    let data = within(
        "data stream",
        client.open_stream(headers("data", port, Some(request_id))),
    )
    .await
    .unwrap();
    (error, data)
}

async fn read_all(s: &mut Stream) -> Vec<u8> {
    let mut v = Vec::new();
    within("read to end", s.read_to_end(&mut v)).await.unwrap();
    v
}

#[tokio::test]
async fn pairs_become_requests_and_carry_data() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(30));
        let mut ports = Vec::new();
        for _ in 0..2 {
            let mut req = listener.next().await.unwrap();
            ports.push((req.request_id.clone(), req.port));
            // An echo "pod".
            tokio::spawn(async move {
                let mut buf = Vec::new();
                req.data.read_to_end(&mut buf).await.unwrap();
                req.data.write_all(&buf).await.unwrap();
                req.finish().await;
            });
        }
        (listener, ports)
    });
    let (mut err0, mut data0) = connect(&client, "8080", "0").await;
    let (mut err1, mut data1) = connect(&client, "9090", "1").await;
    data1.write_all(b"second").await.unwrap();
    data1.shutdown().await.unwrap();
    data0.write_all(b"first").await.unwrap();
    data0.shutdown().await.unwrap();
    assert_eq!(read_all(&mut data0).await, b"first");
    assert_eq!(read_all(&mut data1).await, b"second");
    assert!(read_all(&mut err0).await.is_empty());
    assert!(read_all(&mut err1).await.is_empty());
    let (_listener, ports) = within("server", srv).await.unwrap();
    assert_eq!(ports, vec![("0".to_owned(), 8080), ("1".to_owned(), 9090)]);
}

#[tokio::test]
async fn a_failed_connection_is_reported_on_the_error_stream() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(30));
        let req = listener.next().await.unwrap();
        let msg = PortForwardRequest::error_message(
            req.port,
            "web_default",
            "",
            &"dial tcp 127.0.0.1:81: connect: connection refused",
        );
        req.fail(&msg).await.unwrap();
        listener
    });
    let (mut error, mut data) = connect(&client, "81", "0").await;
    assert_eq!(
        String::from_utf8(read_all(&mut error).await).unwrap(),
        "error forwarding port 81 to pod web_default, uid : dial tcp 127.0.0.1:81: connect: connection refused"
    );
    assert!(read_all(&mut data).await.is_empty());
    assert_eq!(data.reset_status(), Some(RstStatus::CANCEL));
    let _listener = within("server", srv).await.unwrap();
}

#[tokio::test]
async fn invalid_streams_are_rejected() {
    let (server, client) = pair();
    let _srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(30));
        listener.next().await
    });
    for h in [
        Headers::new().with("streamType", "data"),
        headers("data", "0", Some("1")),
        headers("data", "70000", Some("1")),
        headers("data", "http", Some("1")),
        headers("stdout", "80", Some("1")),
        Headers::new().with("port", "80"),
    ] {
        let err = within("open", client.open_stream(h.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SessionError::StreamReset {
                    status: RstStatus::CANCEL,
                    ..
                }
            ),
            "{h:?}: {err:?}"
        );
    }
}

/// Old clients send no requestID: the pair is found from consecutive stream ids.
#[tokio::test]
async fn request_ids_are_derived_from_stream_ids_when_missing() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(30));
        let req = listener.next().await.unwrap();
        (listener, req.request_id, req.port)
    });
    let _error = within("error", client.open_stream(headers("error", "80", None)))
        .await
        .unwrap();
    let _data = within("data", client.open_stream(headers("data", "80", None)))
        .await
        .unwrap();
    let (_listener, id, port) = within("server", srv).await.unwrap();
    assert_eq!((id.as_str(), port), ("1", 80));
}

#[tokio::test(start_paused = true)]
async fn an_incomplete_pair_times_out_with_a_message() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(5));
        // Only a second, complete request ends this.
        let req = listener.next().await.unwrap();
        (listener, req.request_id)
    });
    let mut lonely = within(
        "error",
        client.open_stream(headers("error", "80", Some("7"))),
    )
    .await
    .unwrap();
    lonely.shutdown().await.unwrap();
    let msg = String::from_utf8(read_all(&mut lonely).await).unwrap();
    assert!(
        msg.ends_with("request=7) timed out waiting for streams"),
        "{msg}"
    );
    let _pair = connect(&client, "80", "8").await;
    let (_listener, id) = within("server", srv).await.unwrap();
    assert_eq!(id, "8");
}

#[tokio::test]
async fn a_duplicate_stream_is_reported_on_the_pairs_error_stream() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut listener = PortForwardListener::new(server, Duration::from_secs(30));
        let req = listener.next().await.unwrap();
        (listener, req)
    });
    let mut error = within(
        "error",
        client.open_stream(headers("error", "80", Some("0"))),
    )
    .await
    .unwrap();
    let _dup = within("dup", client.open_stream(headers("error", "80", Some("0"))))
        .await
        .unwrap();
    let mut buf = vec![0u8; 200];
    let n = within("message", error.read(&mut buf)).await.unwrap();
    assert_eq!(
        &buf[..n],
        b"error processing stream for request 0: error stream already assigned"
    );
    let _data = within("data", client.open_stream(headers("data", "80", Some("0"))))
        .await
        .unwrap();
    let (_listener, req) = within("server", srv).await.unwrap();
    assert_eq!(req.request_id, "0");
}
