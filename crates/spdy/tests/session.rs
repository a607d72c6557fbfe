//! Session behaviour through the crate's own client, and against a raw frame-level peer that
//! behaves like spdystream (no flow control).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use staticlet_spdy::frame::{settings, Frame, GoAwayStatus, Headers, Setting, FLAG_FIN};
use staticlet_spdy::session::{FlowControl, SessionConfig, SessionError};
use staticlet_spdy::RstStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn streams_carry_headers_and_data_both_ways() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let incoming = server.accept_stream().await.expect("a stream");
        assert_eq!(incoming.headers().get("streamtype"), Some("stdout"));
        assert_eq!(incoming.headers().get("X-Mixed-Case"), Some("v"));
        let mut s = incoming.accept();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.write_all(b" back").await.unwrap();
        s.shutdown().await.unwrap();
        (server, got)
    });
    let headers = Headers::new()
        .with("streamType", "stdout")
        .with("X-Mixed-Case", "v");
    let mut s = within("open", client.open_stream(headers)).await.unwrap();
    assert_eq!(s.id(), 1);
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("read", s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"hello back");
    let (_server, got) = within("server", srv).await.unwrap();
    assert_eq!(got, b"hello");
}

#[tokio::test]
async fn many_streams_share_the_header_compression_state() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let incoming = server.accept_stream().await.expect("stream");
            seen.push(incoming.headers().get("requestid").unwrap().to_owned());
            drop(incoming.accept());
        }
        seen
    });
    for i in 0..100 {
        let h = Headers::new()
            .with("streamtype", "data")
            .with("requestid", i.to_string());
        let s = within("open", client.open_stream(h)).await.unwrap();
        assert_eq!(s.id(), 2 * i + 1);
    }
    let seen = within("server", srv).await.unwrap();
    assert_eq!(seen, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn ping_is_echoed_both_ways() {
    let (server, client) = pair();
    within("client ping", client.ping()).await.unwrap();
    within("server ping", server.ping()).await.unwrap();
    // And for a raw peer: its PING comes back with the same id.
    let (_server, mut raw) = RawPeer::with_server(SessionConfig::default());
    raw.send(Frame::Ping { id: 41 }).await;
    let echo = within("echo", raw.recv_until(|f| matches!(f, Frame::Ping { .. }))).await;
    assert_eq!(echo, Frame::Ping { id: 41 });
}

/// Asserts `fut` cannot complete: on a paused clock the timeout only fires once every task is
/// idle.
async fn assert_stuck<F: std::future::Future + Unpin>(what: &str, fut: &mut F) {
    if tokio::time::timeout(Duration::from_secs(600), fut)
        .await
        .is_ok()
    {
        panic!("{what} completed but should be blocked");
    }
}

/// With both sides doing flow control, a writer larger than the window blocks until the peer
/// reads, and then completes.
#[tokio::test(start_paused = true)]
async fn writer_larger_than_the_window_blocks_until_the_peer_reads() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let s = server.accept_stream().await.unwrap().accept();
        (server, s)
    });
    let mut c = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let (_server, mut s) = srv.await.unwrap();
    let data = pattern(300 * 1024, 7);
    let expect = data.clone();
    let mut writer = tokio::spawn(async move {
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
    });
    // Nobody reads: once everything is idle the writer is still stuck.
    assert_stuck("server write of 300 KiB with nobody reading", &mut writer).await;
    let mut got = Vec::new();
    within("read all", c.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect);
    within("writer", writer).await.unwrap();
}

/// Two streams of one session: one is never read, the other still flows both ways; reading
/// the first releases its writers.
#[tokio::test(start_paused = true)]
async fn an_unread_stream_does_not_block_the_others() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let a = server.accept_stream().await.unwrap().accept();
        let b = server.accept_stream().await.unwrap().accept();
        (server, a, b)
    });
    let ca = within("open a", client.open_stream(Headers::new().with("n", "a")))
        .await
        .unwrap();
    let mut cb = within("open b", client.open_stream(Headers::new().with("n", "b")))
        .await
        .unwrap();
    let (_server, sa, mut sb) = within("accept", srv).await.unwrap();
    let (mut ca_r, mut ca_w) = ca.into_split();
    let (mut sa_r, mut sa_w) = sa.into_split();

    // Server -> client: A fills its window and stops, B goes through.
    let a_down = pattern(256 * 1024, 1);
    let a_down_expect = a_down.clone();
    let mut stuck_out = tokio::spawn(async move {
        sa_w.write_all(&a_down).await.unwrap();
        sa_w.shutdown().await.unwrap();
    });
    let big = pattern(512 * 1024, 2);
    let expect = big.clone();
    let flowing = tokio::spawn(async move {
        sb.write_all(&big).await.unwrap();
        sb.shutdown().await.unwrap();
        sb
    });
    let mut got = Vec::new();
    within("stream b", cb.read_to_end(&mut got)).await.unwrap();
    assert!(got == expect);
    let mut sb = within("b writer", flowing).await.unwrap();
    assert_stuck("stream a's server writer", &mut stuck_out).await;

    // Client -> server: the same, the server reads only B.
    let a_up = pattern(256 * 1024, 3);
    let a_up_expect = a_up.clone();
    let mut stuck_in = tokio::spawn(async move {
        ca_w.write_all(&a_up).await.unwrap();
        ca_w.shutdown().await.unwrap();
    });
    let up = pattern(400 * 1024, 4);
    let expect_up = up.clone();
    let up_writer = tokio::spawn(async move {
        cb.write_all(&up).await.unwrap();
        cb.shutdown().await.unwrap();
    });
    let mut got_up = Vec::new();
    within("server reads b", sb.read_to_end(&mut got_up))
        .await
        .unwrap();
    assert!(got_up == expect_up);
    within("client b writer", up_writer).await.unwrap();
    assert_stuck("stream a's client writer", &mut stuck_in).await;

    // Reading A on both ends releases both of its writers.
    let mut down = Vec::new();
    within("client reads a", ca_r.read_to_end(&mut down))
        .await
        .unwrap();
    assert!(down == a_down_expect);
    let mut up = Vec::new();
    within("server reads a", sa_r.read_to_end(&mut up))
        .await
        .unwrap();
    assert!(up == a_up_expect);
    within("a writers", async {
        stuck_out.await.unwrap();
        stuck_in.await.unwrap();
    })
    .await;
}

/// A peer like spdystream never sends WINDOW_UPDATE: the server must not wait for one (it
/// would hang on the first 64 KiB of output), and must still bound what it buffers of the
/// peer's data when the application is slow.
#[tokio::test(start_paused = true)]
async fn peer_without_flow_control_is_not_waited_for() {
    let (server, mut raw) = RawPeer::with_server(SessionConfig::default());
    raw.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: Headers::new().with("streamtype", "stdout"),
    })
    .await;
    let mut s = within("accept", server.accept_stream())
        .await
        .unwrap()
        .accept();
    let out = pattern(1024 * 1024, 9);
    let expect = out.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&out).await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    let mut got = Vec::new();
    let mut saw_reply = false;
    loop {
        match within("frames", raw.recv()).await.expect("frame") {
            Frame::SynReply { stream_id: 1, .. } => saw_reply = true,
            Frame::Data {
                stream_id: 1,
                fin,
                data,
            } => {
                assert!(saw_reply, "DATA before SYN_REPLY");
                assert!(data.len() <= 32 * 1024);
                got.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got == expect);
    let mut s = within("writer", writer).await.unwrap();

    // The peer pushes 1 MiB while the application reads nothing: the server buffers one window
    // and stops reading the connection (the raw peer's writes then block), and everything
    // arrives once the application reads.
    let up = pattern(1024 * 1024, 5);
    let expect_up = up.clone();
    let mut pusher = tokio::spawn(async move {
        for chunk in up.chunks(32 * 1024) {
            raw.send(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            })
            .await;
        }
        raw.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        raw
    });
    assert_stuck("peer writing 1 MiB into an unread stream", &mut pusher).await;
    let mut got_up = Vec::new();
    within("read", s.read_to_end(&mut got_up)).await.unwrap();
    assert!(got_up == expect_up);
    within("pusher", pusher).await.unwrap();
}

/// SETTINGS INITIAL_WINDOW_SIZE from the peer is honoured: with a 4 KiB window the server
/// sends 4 KiB and waits for a WINDOW_UPDATE.
#[tokio::test(start_paused = true)]
async fn initial_window_setting_is_honoured() {
    let (server, mut raw) = RawPeer::with_server(SessionConfig::default());
    raw.send(Frame::Settings {
        flags: 0,
        entries: vec![Setting {
            flags: 0,
            id: settings::INITIAL_WINDOW_SIZE,
            value: 4096,
        }],
    })
    .await;
    raw.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: Headers::new(),
    })
    .await;
    let mut s = within("accept", server.accept_stream())
        .await
        .unwrap()
        .accept();
    let writer = tokio::spawn(async move {
        s.write_all(&pattern(10_000, 1)).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let mut received = 0;
    let mut updates = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(600), raw.recv()).await;
        match frame {
            Ok(Some(Frame::Data { data, fin, .. })) => {
                received += data.len();
                if fin {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("EOF"),
            Err(_) => {
                // Idle: the server has used its window.
                assert_eq!(received, 4096 * (updates + 1).min(3));
                updates += 1;
                raw.send(Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 4096,
                })
                .await;
            }
        }
    }
    assert_eq!(received, 10_000);
    assert_eq!(updates, 2);
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn reset_ends_a_stream_on_both_sides() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let s = server.accept_stream().await.unwrap().accept();
        (server, s)
    });
    let c = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let (_server, mut s) = within("accept", srv).await.unwrap();
    c.reset(RstStatus::CANCEL);
    let mut buf = Vec::new();
    assert_eq!(within("read", s.read_to_end(&mut buf)).await.unwrap(), 0);
    let err = s.write_all(b"x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(s.reset_status(), Some(RstStatus::CANCEL));
    assert_eq!(c.reset_status(), Some(RstStatus::CANCEL));
}

#[tokio::test]
async fn rejected_stream_fails_open_stream() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let incoming = server.accept_stream().await.unwrap();
        incoming.reject(RstStatus::REFUSED_STREAM);
        let dropped = server.accept_stream().await.unwrap();
        drop(dropped); // dropping rejects with CANCEL, as kubelet's Reset
        server
    });
    let err = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::StreamReset {
            stream_id: 1,
            status: RstStatus::REFUSED_STREAM
        }
    );
    let err = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::StreamReset {
            status: RstStatus::CANCEL,
            ..
        }
    ));
    within("server", srv).await.unwrap();
}

/// The server closes (as kubelet does at the end of an exec): unfinished streams are reset,
/// GOAWAY is sent, the client's streams end and both sessions finish.
#[tokio::test]
async fn close_sends_goaway_and_ends_everything() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let mut finished = server.accept_stream().await.unwrap().accept();
        let open = server.accept_stream().await.unwrap().accept();
        finished.write_all(b"last words").await.unwrap();
        finished.shutdown().await.unwrap();
        server.close();
        (server, open)
    });
    let mut c1 = within("open 1", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let mut c2 = within("open 2", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let (server, mut s_open) = within("server", srv).await.unwrap();
    let mut got = Vec::new();
    within("read 1", c1.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"last words");
    let mut rest = Vec::new();
    within("read 2", c2.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(c2.reset_status(), Some(RstStatus::CANCEL));
    assert!(within("accept after close", server.accept_stream())
        .await
        .is_none());
    let err = s_open.write_all(b"x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    let err = within("open after goaway", client.open_stream(Headers::new()))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::GoingAway { .. } | SessionError::Closed
    ));
    drop(c1);
    drop(c2);
    within("client closed", client.wait_closed()).await.unwrap();
    within("server closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn goaway_from_a_raw_peer_ends_the_session_once_streams_are_done() {
    // The raw peer keeps the connection open: a short linger ends the drain.
    let (server, mut raw) = RawPeer::with_server(SessionConfig {
        linger: Duration::from_millis(50),
        ..SessionConfig::default()
    });
    raw.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: FLAG_FIN,
        headers: Headers::new(),
    })
    .await;
    let mut s = within("accept", server.accept_stream())
        .await
        .unwrap()
        .accept();
    raw.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::OK,
    })
    .await;
    // The stream is still usable until we finish it.
    s.write_all(b"bye").await.unwrap();
    assert!(!server.is_closed());
    s.shutdown().await.unwrap();
    within("closed", server.wait_closed()).await.unwrap();
    assert!(server.accept_stream().await.is_none());
}

#[tokio::test]
async fn garbage_from_the_peer_ends_the_session_with_goaway() {
    let (server, mut raw) = RawPeer::with_server(SessionConfig::default());
    raw.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: Headers::new(),
    })
    .await;
    let mut s = within("accept", server.accept_stream())
        .await
        .unwrap()
        .accept();
    // A control frame of SPDY version 2.
    raw.send_bytes(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    let goaway = within(
        "goaway",
        raw.recv_until(|f| matches!(f, Frame::GoAway { .. })),
    )
    .await;
    assert_eq!(
        goaway,
        Frame::GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::PROTOCOL_ERROR
        }
    );
    drop(raw); // the peer hangs up
    let err = within("closed", server.wait_closed()).await.unwrap_err();
    assert!(matches!(err, SessionError::Frame(_)), "{err:?}");
    let mut buf = Vec::new();
    assert_eq!(s.read_to_end(&mut buf).await.unwrap(), 0);
    assert!(s.write_all(b"x").await.is_err());
    assert!(server.accept_stream().await.is_none());
}

#[tokio::test]
async fn protocol_violations_end_the_session() {
    // Wrong parity (a client opening an even stream), then a non-increasing id.
    for ids in [vec![2u32], vec![3, 1]] {
        let (server, mut raw) = RawPeer::with_server(SessionConfig::default());
        for id in &ids {
            raw.send(Frame::SynStream {
                stream_id: *id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new(),
            })
            .await;
        }
        let goaway = within(
            "goaway",
            raw.recv_until(|f| matches!(f, Frame::GoAway { .. })),
        )
        .await;
        assert!(matches!(
            goaway,
            Frame::GoAway {
                status: GoAwayStatus::PROTOCOL_ERROR,
                ..
            }
        ));
        drop(raw);
        let err = within("closed", server.wait_closed()).await.unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)), "{ids:?}: {err:?}");
    }
}

/// Random bytes after a valid start never panic a session, and it always ends.
#[tokio::test]
async fn random_garbage_never_panics_or_hangs() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..50 {
        let (server, mut raw) = RawPeer::with_server(SessionConfig {
            linger: Duration::from_millis(10),
            ..SessionConfig::default()
        });
        if round % 2 == 0 {
            raw.send(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new().with("a", "b"),
            })
            .await;
        }
        let mut junk = Vec::new();
        for _ in 0..(64 + round * 37) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        raw.send_bytes(&junk).await;
        drop(raw);
        // Ends with an error or (if the junk was a plausible partial frame) at EOF.
        let _ = within("session end", server.wait_closed()).await;
        assert!(server.is_closed());
    }
}

/// When the connection goes away, every stream reads EOF and every write fails.
#[tokio::test]
async fn streams_end_with_the_connection() {
    let (server, client) = pair();
    let srv = tokio::spawn(async move {
        let s = server.accept_stream().await.unwrap().accept();
        (server, s)
    });
    let c = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap();
    let (server, mut s) = within("accept", srv).await.unwrap();
    drop(c);
    drop(client); // last handle: the client closes, the connection ends
    let mut buf = Vec::new();
    within("eof", s.read_to_end(&mut buf)).await.unwrap();
    within("server end", server.wait_closed()).await.unwrap();
    assert!(s.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn flow_control_off_sends_past_the_window() {
    // Both announce windows, both are told to ignore them.
    let off = SessionConfig {
        flow_control: FlowControl::Off,
        ..SessionConfig::default()
    };
    let (server, client) = pair_with(off.clone(), off);
    let srv = tokio::spawn(async move {
        let mut s = server.accept_stream().await.unwrap().accept();
        s.write_all(&pattern(200 * 1024, 1)).await.unwrap();
        s.shutdown().await.unwrap();
        server
    });
    let c = within("open", client.open_stream(Headers::new()))
        .await
        .unwrap();
    // The whole 200 KiB is handed over without the client reading (a 64 KiB window would
    // block the server).
    let _server = within("server writes past the window", srv).await.unwrap();
    drop(c);
}
