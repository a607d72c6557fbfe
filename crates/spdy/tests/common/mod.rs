//! Helpers shared by the integration tests.
//!
//! Tests that assert something *blocks* run on a paused tokio clock: the clock only moves when
//! every task is idle, so a timeout that expires proves the awaited thing cannot make progress —
//! no fixed sleeps, no races.

#![allow(dead_code)]

use std::time::Duration;

use bytes::BytesMut;
use staticlet_spdy::frame::{Frame, FrameDecoder, FrameEncoder, Limits};
use staticlet_spdy::{Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Generous bound for things that must happen.
pub const LONG: Duration = Duration::from_secs(30);

pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LONG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A server and a client session joined by an in-memory pipe.
pub fn pair() -> (Session, Session) {
    pair_with(SessionConfig::default(), SessionConfig::default())
}

pub fn pair_with(server: SessionConfig, client: SessionConfig) -> (Session, Session) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (
        Session::server_with_config(a, server),
        Session::client_with_config(b, client),
    )
}

/// A peer driven frame by frame, like spdystream: it sends only what the test tells it to (no
/// SETTINGS, no WINDOW_UPDATE).
pub struct RawPeer {
    pub io: DuplexStream,
    enc: FrameEncoder,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl RawPeer {
    /// A server session and a raw client.
    pub fn with_server(config: SessionConfig) -> (Session, RawPeer) {
        // A small pipe, so that a reader that stops reading shows quickly.
        let (a, b) = tokio::io::duplex(64 * 1024);
        (Session::server_with_config(a, config), RawPeer::new(b))
    }

    pub fn new(io: DuplexStream) -> RawPeer {
        RawPeer {
            io,
            enc: FrameEncoder::new(),
            dec: FrameDecoder::new(Limits::default()),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.enc.encode(&frame, &mut out).expect("encode");
        self.io.write_all(&out).await.expect("raw write");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("raw write");
    }

    /// The next frame; `None` at EOF.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self
                .dec
                .decode(&mut self.buf)
                .expect("peer sent a bad frame")
            {
                return Some(f);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Frames until one matches; panics at EOF.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Frame) -> bool) -> Frame {
        loop {
            match self.recv().await {
                Some(f) if pred(&f) => return f,
                Some(_) => {}
                None => panic!("EOF before the expected frame"),
            }
        }
    }
}

/// `n` bytes of a recognizable pattern.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
