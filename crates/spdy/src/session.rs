//! A SPDY/3.1 session over one connection: the counterpart of spdystream's `Connection` that
//! kubelet's `httpstream/spdy` wraps, server side first, with a small client side for tests
//! and in-process use.
//!
//! [`Session::server`] takes the upgraded connection and spawns two tasks: a reader that decodes
//! frames and feeds the streams, and a writer that owns the connection's write half and sends
//! control frames and stream data. The client opens streams (SYN_STREAM);
//! [`Session::accept_stream`] hands each one over as an [`IncomingStream`], which the server
//! accepts (SYN_REPLY) or rejects (RST_STREAM) — kubelet accepts unless the headers are unusable.
//! A [`Stream`] is `AsyncRead + AsyncWrite`: DATA in, DATA out, `shutdown` sends FIN.
//!
//! Session rules kept:
//!
//! * PING from the peer is echoed; [`Session::ping`] measures a round trip.
//! * RST_STREAM ends a stream: reads drain what was already received and then see EOF (as with
//!   spdystream), writes fail. GOAWAY stops new streams; streams we opened above the peer's
//!   last good id are refused, and once no stream is left open the session closes.
//! * Stream ids: a peer's new stream must have the peer's parity and be above every id it used
//!   before, or the session ends with GOAWAY(PROTOCOL_ERROR); after we sent GOAWAY new streams
//!   are ignored, as the specification says.
//! * Undecodable input ([`crate::frame::FrameError`]) or a protocol violation ends the session
//!   with GOAWAY(PROTOCOL_ERROR); an I/O error ends it at once. Whenever the session ends, every
//!   stream reads EOF and every write fails, and both tasks finish: after a local close or an
//!   error the reader drains (and discards) what the peer still sends for at most
//!   [`SessionConfig::linger`], so the peer is not answered with a TCP reset while our last
//!   frames may still be unread, and a write blocked on a peer that stopped reading is given
//!   the same time.
//!
//! Flow control (SPDY/3.1): each stream and the session have windows, 64 KiB initially. We
//! advertise [`SessionConfig::initial_window`] in a SETTINGS frame at the start, return credit
//! with WINDOW_UPDATE as the application reads a stream, and credit the session window as data
//! is buffered (each stream's window already bounds what it can buffer, so one stream that is
//! not read never stalls the others). SETTINGS INITIAL_WINDOW_SIZE and WINDOW_UPDATE from the
//! peer move our send windows. Kubernetes' peers (spdystream) implement no flow control at all:
//! they never send WINDOW_UPDATE, would never unblock us, and do not respect our windows either.
//! So with [`FlowControl::Auto`] (the default) windows are tracked from the start but only
//! enforced once the peer has shown it does flow control (a SETTINGS frame with
//! INITIAL_WINDOW_SIZE, or any WINDOW_UPDATE — this crate's client sends the former). Toward a
//! peer that does not, a stream's receive buffer is still bounded: when it holds more than one
//! window the reader stops reading the connection until the application reads that stream,
//! which is what spdystream does to its own peer (TCP backpressure).
//!
//! Limits: no idle timeout (kubelet sets spdystream's to `streaming-connection-idle-timeout`,
//! 4 h by default: the caller can wrap the connection), no priorities, no server push, no
//! trailing HEADERS content (a HEADERS frame's FIN is honoured, its headers are dropped).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use crate::frame::{
    settings, Frame, FrameDecoder, FrameEncoder, FrameError, GoAwayStatus, Headers, Limits,
    RstStatus, Setting, FLAG_FIN, FLAG_UNIDIRECTIONAL,
};

/// The window every stream and the session start with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;
/// Largest DATA frame we send (what Go's `io.Copy` would write through spdystream).
const MAX_DATA_FRAME: usize = 32 * 1024;
/// Data bytes the writer takes per batch before it looks at control frames again.
const BATCH_BUDGET: usize = 256 * 1024;
/// Control frames the reader may queue (PING echoes, resets…) before it waits for the writer.
const MAX_QUEUED_CONTROL: usize = 1024;

/// When to hold back what we send to the peer's flow-control windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowControl {
    /// Enforce windows once the peer has shown it does flow control (see the module docs).
    #[default]
    Auto,
    /// Always enforce windows, in both directions (strict SPDY/3.1).
    Strict,
    /// Never enforce windows (a SPDY/3 peer such as spdystream); WINDOW_UPDATE is still sent.
    Off,
}

/// Settings of a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Bounds on frames and header blocks accepted from the peer.
    pub limits: Limits,
    /// Receive window advertised per stream (SETTINGS INITIAL_WINDOW_SIZE); also how much a
    /// stream buffers from a peer that does no flow control before the reader pauses.
    pub initial_window: u32,
    pub flow_control: FlowControl,
    /// Bytes a stream's writer may queue before `poll_write` waits for the session's writer.
    pub write_buffer: usize,
    /// New streams not yet taken by [`Session::accept_stream`]; more are refused
    /// (RST_STREAM REFUSED_STREAM).
    pub max_pending_streams: usize,
    /// How long, once the session is closing, the reader keeps draining the peer and a blocked
    /// write keeps trying.
    pub linger: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            initial_window: DEFAULT_WINDOW,
            flow_control: FlowControl::Auto,
            write_buffer: 64 * 1024,
            max_pending_streams: 1024,
            linger: Duration::from_secs(5),
        }
    }
}

/// Why a session ended, or why an operation on it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("peer sent an undecodable frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer violated the SPDY protocol: {0}")]
    Protocol(String),
    #[error("I/O error on the SPDY connection: {0}")]
    Io(String),
    #[error("cannot encode a frame (a bug): {0}")]
    Encode(FrameError),
    #[error("the SPDY session is closed")]
    Closed,
    #[error("the peer is going away (GOAWAY {status}, last good stream {last_good_stream_id})")]
    GoingAway {
        status: GoAwayStatus,
        last_good_stream_id: u32,
    },
    #[error("stream {stream_id} was reset: {status}")]
    StreamReset { stream_id: u32, status: RstStatus },
    #[error("no stream ids left on this session")]
    StreamIdsExhausted,
}

#[derive(Clone, Debug)]
enum CloseReason {
    Local,
    PeerEof,
    PeerGoAway,
    Error(SessionError),
}

struct StreamState {
    headers: Headers,
    /// Opened by us (SYN_STREAM sent) rather than by the peer.
    local: bool,
    /// Local stream: SYN_REPLY received. Peer's stream: SYN_REPLY queued.
    replied: bool,
    /// RST_STREAM sent or received, and whether the peer sent it.
    reset: Option<(RstStatus, bool)>,
    /// Handles alive: an [`IncomingStream`] not yet decided, the receiving and sending halves.
    pending_accept: bool,
    recv_half: bool,
    send_half: bool,

    recv_buf: VecDeque<Bytes>,
    recv_len: usize,
    recv_fin: bool,
    /// How much more the peer may send before exceeding our window.
    recv_window: i64,
    /// Read by the application but not yet returned to the peer.
    recv_unacked: i64,
    read_waker: Option<Waker>,

    send_buf: VecDeque<Bytes>,
    send_len: usize,
    fin_queued: bool,
    fin_sent: bool,
    send_window: i64,
    write_waker: Option<Waker>,
}

impl StreamState {
    fn new(headers: Headers, local: bool, recv_window: i64, send_window: i64) -> Self {
        StreamState {
            headers,
            local,
            replied: false,
            reset: None,
            pending_accept: false,
            recv_half: false,
            send_half: false,
            recv_buf: VecDeque::new(),
            recv_len: 0,
            recv_fin: false,
            recv_window,
            recv_unacked: 0,
            read_waker: None,
            send_buf: VecDeque::new(),
            send_len: 0,
            fin_queued: false,
            fin_sent: false,
            send_window,
            write_waker: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    fn has_handles(&self) -> bool {
        self.pending_accept || self.recv_half || self.send_half
    }

    /// Neither side will send anything more on it.
    fn is_done(&self) -> bool {
        self.reset.is_some() || (self.fin_sent && self.recv_fin)
    }

    /// Resets it from our side: unsent data is dropped.
    fn reset_locally(&mut self, status: RstStatus) {
        self.reset = Some((status, false));
        self.send_buf.clear();
        self.send_len = 0;
        self.wake();
    }
}

struct State {
    streams: HashMap<u32, StreamState>,
    control: VecDeque<Frame>,
    incoming: VecDeque<u32>,
    close: Option<CloseReason>,
    goaway_sent: bool,
    goaway_received: Option<u32>,
    last_peer_stream: u32,
    next_stream_id: u32,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    /// The peer's INITIAL_WINDOW_SIZE (our send windows start there).
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    recv_unacked: i64,
    peer_flow_control: bool,
    /// The stream the reader waits on (a peer without flow control filled its buffer).
    reader_blocked_on: Option<u32>,
    rr_cursor: u32,
}

struct Shared {
    config: SessionConfig,
    is_client: bool,
    state: Mutex<State>,
    /// Something to send (notify_one: the writer is the only waiter).
    writer_wake: Notify,
    /// Room in a stream buffer or in the control queue (notify_one: the reader is the only
    /// waiter).
    reader_wake: Notify,
    /// Accept queue, replies, drained writes (notify_waiters, waiters use `enable`).
    events: Notify,
    closed_tx: watch::Sender<bool>,
    /// Reader and writer tasks still running.
    tasks: watch::Sender<usize>,
    /// [`Session`] handles alive; the last one closes the session when dropped.
    handles: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way worse than
        // losing the session: recover the guard rather than propagating the poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enforce(&self, st: &State) -> bool {
        match self.config.flow_control {
            FlowControl::Auto => st.peer_flow_control,
            FlowControl::Strict => true,
            FlowControl::Off => false,
        }
    }

    /// Ends the session (idempotent). `goaway` is queued for the writer to send first.
    fn close_with(&self, st: &mut State, reason: CloseReason, goaway: Option<GoAwayStatus>) {
        if st.close.is_some() {
            return;
        }
        match &reason {
            CloseReason::Error(e) => tracing::debug!(error = %e, "SPDY session failed"),
            other => tracing::trace!(reason = ?other, "SPDY session closing"),
        }
        let reset_unfinished = matches!(reason, CloseReason::Local);
        if let Some(status) = goaway {
            if !st.goaway_sent {
                st.goaway_sent = true;
                st.control.push_back(Frame::GoAway {
                    last_good_stream_id: st.last_peer_stream,
                    status,
                });
            }
        }
        let mut resets = Vec::new();
        for (id, s) in st.streams.iter_mut() {
            // As kubelet's Close: streams we have not finished writing are reset; streams whose
            // FIN is queued keep their data for the writer.
            if reset_unfinished && s.reset.is_none() && !s.fin_queued && !s.fin_sent {
                resets.push(*id);
                s.reset_locally(RstStatus::CANCEL);
            }
            s.wake();
        }
        // RST_STREAM after GOAWAY, in stream order.
        resets.sort_unstable();
        for id in resets {
            st.control.push_back(Frame::RstStream {
                stream_id: id,
                status: RstStatus::CANCEL,
            });
        }
        st.incoming.clear();
        st.pings.clear();
        st.close = Some(reason);
        self.closed_tx.send_replace(true);
        self.events.notify_waiters();
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }

    fn fail(&self, err: SessionError) {
        let mut st = self.lock();
        let goaway = match err {
            SessionError::Frame(_) | SessionError::Protocol(_) => {
                Some(GoAwayStatus::PROTOCOL_ERROR)
            }
            SessionError::Encode(_) => Some(GoAwayStatus::INTERNAL_ERROR),
            _ => None,
        };
        self.close_with(&mut st, CloseReason::Error(err), goaway);
    }

    /// Removes streams nobody will use again, and closes the session after a GOAWAY once no
    /// stream is left open.
    fn gc(&self, st: &mut State) {
        st.streams
            .retain(|_, s| s.has_handles() || !(s.reset.is_some() || s.fin_sent));
        if st.goaway_received.is_some()
            && st.close.is_none()
            && st.incoming.is_empty()
            && st.streams.values().all(StreamState::is_done)
        {
            self.close_with(st, CloseReason::PeerGoAway, None);
        }
    }

    fn queue_control(&self, st: &mut State, frame: Frame) {
        st.control.push_back(frame);
        self.writer_wake.notify_one();
    }

    /// Returns `n` bytes the application consumed (or we discarded) on stream `id` to the peer.
    fn credit_stream(&self, st: &mut State, id: u32, n: usize) {
        let threshold = i64::from(self.config.initial_window / 2).max(1);
        let Some(s) = st.streams.get_mut(&id) else {
            return;
        };
        s.recv_unacked += n as i64;
        if s.recv_unacked >= threshold && !s.recv_fin && s.reset.is_none() {
            let delta = s.recv_unacked;
            s.recv_window += delta;
            s.recv_unacked = 0;
            self.queue_control(
                st,
                Frame::WindowUpdate {
                    stream_id: id,
                    delta: delta as u32,
                },
            );
        }
    }

    /// Returns `n` received bytes to the session window (done on receipt, see module docs).
    fn credit_session(&self, st: &mut State, n: usize) {
        st.recv_unacked += n as i64;
        if st.recv_unacked >= i64::from(DEFAULT_WINDOW / 2) {
            let delta = st.recv_unacked;
            st.recv_window += delta;
            st.recv_unacked = 0;
            self.queue_control(
                st,
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta: delta as u32,
                },
            );
        }
    }

    fn peer_parity(&self) -> u32 {
        // Clients open odd streams, servers even ones.
        if self.is_client {
            0
        } else {
            1
        }
    }
}

/// What the reader must wait for after handling a frame.
enum Wait {
    Nothing,
    /// The stream's buffer went past a window and the peer does no flow control.
    Room(u32),
    /// Too many control frames queued.
    Control,
}

fn protocol(msg: impl Into<String>) -> SessionError {
    SessionError::Protocol(msg.into())
}

impl Shared {
    fn on_frame(&self, frame: Frame) -> Result<Wait, SessionError> {
        let mut guard = self.lock();
        let st: &mut State = &mut guard;
        if st.close.is_some() {
            return Ok(Wait::Nothing);
        }
        tracing::trace!(kind = frame.kind(), "SPDY frame received");
        let wait = match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                self.on_syn_stream(st, stream_id, flags, headers)?;
                Wait::Nothing
            }
            Frame::SynReply { stream_id, fin, .. } => {
                if let Some(s) = st.streams.get_mut(&stream_id) {
                    if s.local && !s.replied {
                        s.replied = true;
                        if fin {
                            s.recv_fin = true;
                        }
                        s.wake();
                        self.events.notify_waiters();
                    }
                }
                Wait::Nothing
            }
            Frame::Headers { stream_id, fin, .. } => {
                if let Some(s) = st.streams.get_mut(&stream_id) {
                    if fin && !s.recv_fin {
                        s.recv_fin = true;
                        s.wake();
                    }
                }
                self.gc(st);
                Wait::Nothing
            }
            Frame::RstStream { stream_id, status } => {
                if let Some(s) = st.streams.get_mut(&stream_id) {
                    if s.reset.is_none() {
                        tracing::debug!(stream_id, %status, "SPDY stream reset by peer");
                        s.reset = Some((status, true));
                        s.send_buf.clear();
                        s.send_len = 0;
                        s.wake();
                        self.events.notify_waiters();
                    }
                }
                if st.reader_blocked_on == Some(stream_id) {
                    self.reader_wake.notify_one();
                }
                self.gc(st);
                Wait::Nothing
            }
            Frame::Settings { entries, .. } => {
                for e in entries {
                    if e.id == settings::INITIAL_WINDOW_SIZE {
                        let value = i64::from(e.value);
                        if value > MAX_WINDOW {
                            return Err(protocol(format!(
                                "INITIAL_WINDOW_SIZE {value} above 2^31-1"
                            )));
                        }
                        let diff = value - st.peer_initial_window;
                        st.peer_initial_window = value;
                        st.peer_flow_control = true;
                        for s in st.streams.values_mut() {
                            s.send_window += diff;
                        }
                        self.writer_wake.notify_one();
                    }
                }
                Wait::Nothing
            }
            Frame::Ping { id } => {
                if id % 2 == self.peer_parity() {
                    self.queue_control(st, Frame::Ping { id });
                } else if let Some(tx) = st.pings.remove(&id) {
                    let _ = tx.send(());
                }
                if st.control.len() > MAX_QUEUED_CONTROL {
                    Wait::Control
                } else {
                    Wait::Nothing
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                tracing::debug!(last_good_stream_id, %status, "SPDY GOAWAY received");
                st.goaway_received = Some(last_good_stream_id);
                for (id, s) in st.streams.iter_mut() {
                    if s.local && *id > last_good_stream_id && s.reset.is_none() {
                        s.reset = Some((RstStatus::REFUSED_STREAM, true));
                        s.send_buf.clear();
                        s.send_len = 0;
                        s.wake();
                    }
                }
                self.events.notify_waiters();
                self.gc(st);
                Wait::Nothing
            }
            Frame::WindowUpdate { stream_id, delta } => {
                st.peer_flow_control = true;
                let delta = i64::from(delta);
                if stream_id == 0 {
                    if delta == 0 {
                        return Err(protocol("session WINDOW_UPDATE with delta 0"));
                    }
                    st.send_window += delta;
                    if st.send_window > MAX_WINDOW {
                        return Err(protocol("session send window above 2^31-1"));
                    }
                } else if let Some(s) = st.streams.get_mut(&stream_id) {
                    s.send_window += delta;
                    let bad = if delta == 0 {
                        Some(RstStatus::PROTOCOL_ERROR)
                    } else if s.send_window > MAX_WINDOW {
                        Some(RstStatus::FLOW_CONTROL_ERROR)
                    } else {
                        None
                    };
                    if let (Some(status), None) = (bad, s.reset) {
                        s.reset_locally(status);
                        self.queue_control(st, Frame::RstStream { stream_id, status });
                    }
                }
                self.writer_wake.notify_one();
                Wait::Nothing
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.on_data(st, stream_id, fin, data)?,
            Frame::Unknown { frame_type, .. } => {
                tracing::debug!(frame_type, "ignoring unknown SPDY control frame");
                Wait::Nothing
            }
        };
        Ok(wait)
    }

    fn on_syn_stream(
        &self,
        st: &mut State,
        id: u32,
        flags: u8,
        headers: Headers,
    ) -> Result<(), SessionError> {
        if st.goaway_sent {
            // After GOAWAY the sender ignores new streams.
            return Ok(());
        }
        if id % 2 != self.peer_parity() {
            return Err(protocol(format!(
                "SYN_STREAM {id} has the wrong parity for the peer"
            )));
        }
        if id <= st.last_peer_stream {
            return Err(protocol(format!(
                "SYN_STREAM {id} does not increase on {}",
                st.last_peer_stream
            )));
        }
        st.last_peer_stream = id;
        if st.incoming.len() >= self.config.max_pending_streams {
            tracing::debug!(stream_id = id, "refusing SPDY stream: accept queue full");
            self.queue_control(
                st,
                Frame::RstStream {
                    stream_id: id,
                    status: RstStatus::REFUSED_STREAM,
                },
            );
            return Ok(());
        }
        let mut s = StreamState::new(
            headers,
            false,
            i64::from(self.config.initial_window),
            st.peer_initial_window,
        );
        s.pending_accept = true;
        s.recv_fin = flags & FLAG_FIN != 0;
        if flags & FLAG_UNIDIRECTIONAL != 0 {
            // The peer will not receive: our side is finished from the start.
            s.fin_queued = true;
            s.fin_sent = true;
        }
        st.streams.insert(id, s);
        st.incoming.push_back(id);
        self.events.notify_waiters();
        Ok(())
    }

    fn on_data(
        &self,
        st: &mut State,
        id: u32,
        fin: bool,
        data: Bytes,
    ) -> Result<Wait, SessionError> {
        let len = data.len();
        let enforce = self.enforce(st);
        st.recv_window -= len as i64;
        if enforce && st.recv_window < 0 {
            return Err(protocol("peer overran the session flow-control window"));
        }
        self.credit_session(st, len);
        let high_water = self.config.initial_window as usize;
        let Some(s) = st.streams.get_mut(&id) else {
            // A stream we never saw or already forgot: drop the data.
            return Ok(Wait::Nothing);
        };
        if s.recv_fin {
            if s.reset.is_none() {
                s.reset_locally(RstStatus::STREAM_ALREADY_CLOSED);
                self.queue_control(
                    st,
                    Frame::RstStream {
                        stream_id: id,
                        status: RstStatus::STREAM_ALREADY_CLOSED,
                    },
                );
            }
            return Ok(Wait::Nothing);
        }
        if fin {
            s.recv_fin = true;
        }
        s.recv_window -= len as i64;
        let discard = s.reset.is_some() || !(s.recv_half || s.pending_accept);
        if !discard && enforce && s.recv_window < 0 {
            s.reset_locally(RstStatus::FLOW_CONTROL_ERROR);
            s.recv_buf.clear();
            s.recv_len = 0;
            self.queue_control(
                st,
                Frame::RstStream {
                    stream_id: id,
                    status: RstStatus::FLOW_CONTROL_ERROR,
                },
            );
            self.gc(st);
            return Ok(Wait::Nothing);
        }
        if discard {
            // Reset by us or nobody reads it: give the window back at once.
            self.credit_stream(st, id, len);
            self.gc(st);
            return Ok(Wait::Nothing);
        }
        if len > 0 {
            s.recv_buf.push_back(data);
            s.recv_len += len;
        }
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
        let over = s.recv_len > high_water;
        if fin {
            self.gc(st);
        }
        Ok(if over && !enforce {
            Wait::Room(id)
        } else {
            Wait::Nothing
        })
    }

    /// Collects the next batch for the writer; `true` once the session is closed and nothing
    /// more can be sent.
    fn collect(&self, frames: &mut Vec<Frame>) -> bool {
        let mut st = self.lock();
        frames.extend(st.control.drain(..));
        let enforce = self.enforce(&st);
        let mut ids: Vec<u32> = st
            .streams
            .iter()
            .filter(|(_, s)| s.reset.is_none() && (s.send_len > 0 || (s.fin_queued && !s.fin_sent)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        // Round robin: start after the stream served first last time.
        let start = ids.partition_point(|id| *id <= st.rr_cursor);
        ids.rotate_left(start);
        if let Some(first) = ids.first() {
            st.rr_cursor = *first;
        }
        let mut budget = BATCH_BUDGET;
        let mut progress = true;
        let mut any_done = false;
        while progress && budget > 0 {
            progress = false;
            for id in &ids {
                let State {
                    streams,
                    send_window,
                    ..
                } = &mut *st;
                let Some(s) = streams.get_mut(id) else {
                    continue;
                };
                if s.reset.is_some() || s.fin_sent {
                    continue;
                }
                let mut n = s.send_len.min(MAX_DATA_FRAME).min(budget);
                if enforce {
                    n = n
                        .min(s.send_window.max(0) as usize)
                        .min((*send_window).max(0) as usize);
                }
                let mut data = BytesMut::new();
                let mut left = n;
                while left > 0 {
                    let Some(front) = s.send_buf.front_mut() else {
                        break;
                    };
                    let take = left.min(front.len());
                    data.extend_from_slice(&front.split_to(take));
                    if front.is_empty() {
                        s.send_buf.pop_front();
                    }
                    left -= take;
                }
                s.send_len -= n;
                s.send_window -= n as i64;
                *send_window -= n as i64;
                budget -= n;
                let fin = s.fin_queued && s.send_len == 0;
                if n == 0 && !fin {
                    continue;
                }
                if fin {
                    s.fin_sent = true;
                    any_done = true;
                }
                frames.push(Frame::Data {
                    stream_id: *id,
                    fin,
                    data: data.freeze(),
                });
                if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
                if n > 0 && s.send_len > 0 {
                    progress = true;
                }
                if budget == 0 {
                    break;
                }
            }
        }
        if any_done {
            self.gc(&mut st);
        }
        st.close.is_some() && frames.is_empty()
    }
}

/// A multiplexed SPDY/3.1 session (see the module docs). Cloning gives another handle to the
/// same session; when the last handle is dropped the session is closed as by
/// [`Session::close`].
pub struct Session {
    shared: Arc<Shared>,
}

impl Clone for Session {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Session {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.shared.is_client)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Session {
    /// Starts the server side of a session on an upgraded connection, with the default
    /// configuration. Must be called within a tokio runtime (it spawns the session's tasks).
    pub fn server<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, SessionConfig::default(), false)
    }

    pub fn server_with_config<T>(io: T, config: SessionConfig) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, config, false)
    }

    /// Starts the client side (the role kube-apiserver plays toward kubelet).
    pub fn client<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, SessionConfig::default(), true)
    }

    pub fn client_with_config<T>(io: T, config: SessionConfig) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, config, true)
    }

    fn start<T>(io: T, config: SessionConfig, is_client: bool) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut control = VecDeque::new();
        control.push_back(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: settings::INITIAL_WINDOW_SIZE,
                value: config.initial_window,
            }],
        });
        let state = State {
            streams: HashMap::new(),
            control,
            incoming: VecDeque::new(),
            close: None,
            goaway_sent: false,
            goaway_received: None,
            last_peer_stream: 0,
            next_stream_id: if is_client { 1 } else { 2 },
            next_ping_id: if is_client { 1 } else { 2 },
            pings: HashMap::new(),
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(DEFAULT_WINDOW),
            recv_unacked: 0,
            peer_flow_control: false,
            reader_blocked_on: None,
            rr_cursor: 0,
        };
        let shared = Arc::new(Shared {
            config,
            is_client,
            state: Mutex::new(state),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            events: Notify::new(),
            closed_tx: watch::channel(false).0,
            tasks: watch::channel(2).0,
            handles: AtomicUsize::new(1),
        });
        let (rd, wr) = tokio::io::split(io);
        tokio::spawn(reader_task(shared.clone(), rd));
        tokio::spawn(writer_task(shared.clone(), wr));
        Session { shared }
    }

    /// The next stream the peer opened, to accept or reject; `None` once the session is closed
    /// or the peer said GOAWAY and every stream it opened before has been handed out.
    pub async fn accept_stream(&self) -> Option<IncomingStream> {
        let shared = &self.shared;
        loop {
            let notified = shared.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = shared.lock();
                if st.close.is_some() {
                    return None;
                }
                if let Some(id) = st.incoming.pop_front() {
                    let headers = st
                        .streams
                        .get(&id)
                        .map(|s| s.headers.clone())
                        .unwrap_or_default();
                    return Some(IncomingStream {
                        core: Some(Core {
                            shared: shared.clone(),
                            id,
                        }),
                        headers,
                    });
                }
                if st.goaway_received.is_some() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Opens a stream (SYN_STREAM) and waits for the peer's SYN_REPLY, as kubelet's client side
    /// (`httpstream/spdy` `CreateStream`) does.
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, SessionError> {
        let shared = &self.shared;
        let id = {
            let mut st = shared.lock();
            if st.close.is_some() {
                return Err(SessionError::Closed);
            }
            if let Some(last) = st.goaway_received {
                return Err(SessionError::GoingAway {
                    status: GoAwayStatus::OK,
                    last_good_stream_id: last,
                });
            }
            let id = st.next_stream_id;
            if id > 0x7fff_ffff {
                return Err(SessionError::StreamIdsExhausted);
            }
            st.next_stream_id += 2;
            let mut s = StreamState::new(
                headers.clone(),
                true,
                i64::from(shared.config.initial_window),
                st.peer_initial_window,
            );
            s.recv_half = true;
            s.send_half = true;
            st.streams.insert(id, s);
            shared.queue_control(
                &mut st,
                Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: 0,
                    slot: 0,
                    flags: 0,
                    headers: headers.clone(),
                },
            );
            id
        };
        // Until the reply comes, the stream belongs to this future: dropping it (or failing)
        // resets the stream.
        let mut pending = PendingOpen(Some(Stream {
            core: Core {
                shared: shared.clone(),
                id,
            },
            headers,
            recv: true,
            send: true,
        }));
        loop {
            let notified = shared.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.lock();
                match st.streams.get(&id) {
                    // Replied, even if reset since: the stream existed, its reads end.
                    Some(s) if s.replied => {
                        if let Some(stream) = pending.0.take() {
                            return Ok(stream);
                        }
                    }
                    Some(s) if s.reset.is_some() => {
                        let status = s.reset.map(|r| r.0).unwrap_or(RstStatus::CANCEL);
                        return Err(SessionError::StreamReset {
                            stream_id: id,
                            status,
                        });
                    }
                    _ if st.close.is_some() => return Err(SessionError::Closed),
                    Some(_) => {}
                    None => return Err(SessionError::Closed),
                }
            }
            notified.await;
        }
    }

    /// Sends a PING and waits for the peer's echo.
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if st.close.is_some() {
                return Err(SessionError::Closed);
            }
            let id = st.next_ping_id;
            st.next_ping_id = if id >= 0x7fff_fffd {
                id % 2 + 1
            } else {
                id + 2
            };
            st.pings.insert(id, tx);
            self.shared.queue_control(&mut st, Frame::Ping { id });
        }
        let start = Instant::now();
        rx.await.map_err(|_| SessionError::Closed)?;
        Ok(start.elapsed())
    }

    /// Closes the session as kubelet's `connection.Close` does: streams we have not finished
    /// writing are reset (RST_STREAM CANCEL, their unsent data dropped), a GOAWAY(OK) is sent,
    /// and the connection is shut down once the writer has sent what it can. Idempotent.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        self.shared
            .close_with(&mut st, CloseReason::Local, Some(GoAwayStatus::OK));
    }

    /// Waits (at most `timeout`) until every stream's queued data and FIN have been handed to
    /// the connection, then [`Session::close`]s.
    pub async fn close_gracefully(&self, timeout: Duration) {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.lock();
                let drained = st.streams.values().all(|s| {
                    s.reset.is_some() || (s.send_len == 0 && (s.fin_sent || !s.fin_queued))
                });
                if drained || st.close.is_some() {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.close();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().close.is_some()
    }

    /// Waits until the session has ended and both of its tasks have finished; the error that
    /// ended it, if one did (a local close, the peer's EOF or GOAWAY are not errors).
    pub async fn wait_closed(&self) -> Result<(), SessionError> {
        let mut rx = self.shared.tasks.subscribe();
        // The sender lives in `shared`, which this handle keeps alive.
        let _ = rx.wait_for(|n| *n == 0).await;
        match &self.shared.lock().close {
            Some(CloseReason::Error(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}

struct PendingOpen(Option<Stream>);

impl Drop for PendingOpen {
    fn drop(&mut self) {
        if let Some(stream) = &self.0 {
            stream.reset(RstStatus::CANCEL);
        }
    }
}

async fn reader_task<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut rd: R) {
    let mut decoder = FrameDecoder::new(shared.config.limits);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut closed = shared.closed_tx.subscribe();
    'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => match shared.on_frame(frame) {
                    Ok(Wait::Nothing) => {}
                    Ok(wait) => wait_for_room(&shared, wait, &mut closed).await,
                    Err(e) => {
                        shared.fail(e);
                        break 'read;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    shared.fail(SessionError::Frame(e));
                    break 'read;
                }
            }
            if *closed.borrow() {
                break 'read;
            }
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => {
                    let mut st = shared.lock();
                    shared.close_with(&mut st, CloseReason::PeerEof, None);
                    break 'read;
                }
                Ok(_) => {}
                Err(e) => {
                    shared.fail(SessionError::Io(e.to_string()));
                    break 'read;
                }
            },
            _ = closed.wait_for(|c| *c) => break 'read,
        }
    }
    // Drain what the peer still sends, for a while, unless it is gone already.
    let peer_gone = matches!(
        shared.lock().close,
        Some(CloseReason::PeerEof) | Some(CloseReason::Error(SessionError::Io(_)))
    );
    if !peer_gone {
        let deadline = Instant::now() + shared.config.linger;
        buf.clear();
        loop {
            match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => buf.clear(),
                _ => break,
            }
        }
    }
    task_done(&shared);
}

/// The reader waits here while a stream from a peer without flow control is over its window,
/// or the writer is behind on control frames.
async fn wait_for_room(shared: &Shared, wait: Wait, closed: &mut watch::Receiver<bool>) {
    loop {
        {
            let mut st = shared.lock();
            let room = st.close.is_some()
                || match wait {
                    Wait::Nothing => true,
                    Wait::Control => st.control.len() <= MAX_QUEUED_CONTROL / 2,
                    Wait::Room(id) => st.streams.get(&id).is_none_or(|s| {
                        s.recv_len <= shared.config.initial_window as usize
                            || s.reset.is_some()
                            || !(s.recv_half || s.pending_accept)
                    }),
                };
            if room {
                st.reader_blocked_on = None;
                return;
            }
            if let Wait::Room(id) = wait {
                st.reader_blocked_on = Some(id);
            }
        }
        tokio::select! {
            _ = shared.reader_wake.notified() => {}
            _ = closed.wait_for(|c| *c) => {}
        }
    }
}

async fn writer_task<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut wr: W) {
    let mut encoder = FrameEncoder::new();
    let mut frames = Vec::new();
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut closed = shared.closed_tx.subscribe();
    loop {
        frames.clear();
        let finished = shared.collect(&mut frames);
        if frames.is_empty() {
            if finished {
                break;
            }
            shared.writer_wake.notified().await;
            continue;
        }
        out.clear();
        let mut encode_error = None;
        for f in &frames {
            tracing::trace!(kind = f.kind(), "SPDY frame sent");
            if let Err(e) = encoder.encode(f, &mut out) {
                encode_error = Some(e);
                break;
            }
        }
        if let Some(e) = encode_error {
            // Our own bug; the compression state is no longer shared with the peer.
            shared.fail(SessionError::Encode(e));
            break;
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        let result = with_close_deadline(&shared, &mut closed, write).await;
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                shared.fail(SessionError::Io(e.to_string()));
                break;
            }
            None => break,
        }
        shared.events.notify_waiters();
        shared.reader_wake.notify_one();
    }
    let _ = with_close_deadline(&shared, &mut closed, wr.shutdown()).await;
    {
        // Nothing will be sent any more: wake writers so they see the session closed.
        let mut st = shared.lock();
        if st.close.is_none() {
            shared.close_with(&mut st, CloseReason::Local, None);
        }
        for s in st.streams.values_mut() {
            s.wake();
        }
    }
    shared.events.notify_waiters();
    task_done(&shared);
}

/// Runs `fut`, giving it at most `linger` once the session is closed; `None` if that ran out.
async fn with_close_deadline<F: Future>(
    shared: &Shared,
    closed: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => return Some(r),
        _ = closed.wait_for(|c| *c) => {}
    }
    tokio::time::timeout(shared.config.linger, fut).await.ok()
}

fn task_done(shared: &Shared) {
    shared.tasks.send_modify(|n| *n = n.saturating_sub(1));
}

/// A stream the peer opened, not yet answered. Dropping it rejects it (RST_STREAM CANCEL, as
/// kubelet's `stream.Reset()` for a stream its handler refused).
pub struct IncomingStream {
    core: Option<Core>,
    headers: Headers,
}

impl fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingStream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish()
    }
}

impl IncomingStream {
    pub fn id(&self) -> u32 {
        self.core.as_ref().map(|c| c.id).unwrap_or(0)
    }

    /// The peer's headers (names lower case).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Accepts the stream: SYN_REPLY (no headers, as kubelet) is queued before any data we send
    /// on it.
    pub fn accept(mut self) -> Stream {
        let core = self.core.take().expect("undecided stream has its core");
        {
            let shared = &core.shared;
            let mut st = shared.lock();
            let closed = st.close.is_some();
            if let Some(s) = st.streams.get_mut(&core.id) {
                s.pending_accept = false;
                s.recv_half = true;
                s.send_half = true;
                if s.reset.is_none() && !closed {
                    s.replied = true;
                    let fin = s.fin_sent;
                    shared.queue_control(
                        &mut st,
                        Frame::SynReply {
                            stream_id: core.id,
                            fin,
                            headers: Headers::new(),
                        },
                    );
                }
            }
        }
        Stream {
            core,
            headers: std::mem::take(&mut self.headers),
            recv: true,
            send: true,
        }
    }

    /// Rejects the stream with RST_STREAM `status`.
    pub fn reject(mut self, status: RstStatus) {
        if let Some(core) = self.core.take() {
            core.reject(status);
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.reject(RstStatus::CANCEL);
        }
    }
}

struct Core {
    shared: Arc<Shared>,
    id: u32,
}

impl Core {
    fn reject(&self, status: RstStatus) {
        let shared = &self.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        s.pending_accept = false;
        if s.reset.is_none() {
            s.reset_locally(status);
            if st.close.is_none() {
                shared.queue_control(
                    &mut st,
                    Frame::RstStream {
                        stream_id: self.id,
                        status,
                    },
                );
            }
        }
        shared.gc(&mut st);
    }

    fn reset(&self, status: RstStatus) {
        let shared = &self.shared;
        let mut st = shared.lock();
        let closed = st.close.is_some();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        if s.reset.is_some() || closed {
            return;
        }
        s.reset_locally(status);
        shared.queue_control(
            &mut st,
            Frame::RstStream {
                stream_id: self.id,
                status,
            },
        );
        if st.reader_blocked_on == Some(self.id) {
            shared.reader_wake.notify_one();
        }
        shared.gc(&mut st);
    }

    fn reset_status(&self) -> Option<RstStatus> {
        let st = self.shared.lock();
        st.streams.get(&self.id).and_then(|s| s.reset.map(|r| r.0))
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut guard = shared.lock();
        let st: &mut State = &mut guard;
        let closed = st.close.is_some();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.recv_len > 0 {
            let mut n = 0;
            while buf.remaining() > 0 {
                let Some(front) = s.recv_buf.front_mut() else {
                    break;
                };
                let take = buf.remaining().min(front.len());
                buf.put_slice(&front[..take]);
                front.advance(take);
                if front.is_empty() {
                    s.recv_buf.pop_front();
                }
                n += take;
            }
            s.recv_len -= n;
            let unblock = st.reader_blocked_on == Some(self.id)
                && s.recv_len <= shared.config.initial_window as usize;
            shared.credit_stream(st, self.id, n);
            if unblock {
                shared.reader_wake.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.recv_fin || s.reset.is_some() || closed {
            return Poll::Ready(Ok(()));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn write_error(&self, st: &State) -> Option<io::Error> {
        if st.close.is_some() {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY session closed",
            ));
        }
        let s = st.streams.get(&self.id)?;
        if let Some((status, by_peer)) = s.reset {
            let who = if by_peer { "by the peer" } else { "locally" };
            return Some(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("SPDY stream {} reset {who}: {status}", self.id),
            ));
        }
        None
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let shared = &self.shared;
        let mut st = shared.lock();
        if let Some(e) = self.write_error(&st) {
            return Poll::Ready(Err(e));
        }
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream is gone",
            )));
        };
        if s.fin_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("SPDY stream {} is closed for writing", self.id),
            )));
        }
        let room = shared.config.write_buffer.saturating_sub(s.send_len);
        if room == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        s.send_buf.push_back(Bytes::copy_from_slice(&data[..n]));
        s.send_len += n;
        shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let error = self.write_error(&st);
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.send_len == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = error {
            return Poll::Ready(Err(e));
        }
        s.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut st = shared.lock();
        let closed = st.close.is_some();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.fin_sent || s.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        if closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY session closed before the stream's FIN was sent",
            )));
        }
        if !s.fin_queued {
            s.fin_queued = true;
            shared.writer_wake.notify_one();
        }
        s.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The receiving half is gone: drop what is buffered and whatever comes later.
    fn drop_recv(&self) {
        let shared = &self.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        s.recv_half = false;
        s.read_waker = None;
        let n = s.recv_len;
        s.recv_buf.clear();
        s.recv_len = 0;
        if st.reader_blocked_on == Some(self.id) {
            shared.reader_wake.notify_one();
        }
        shared.credit_stream(&mut st, self.id, n);
        shared.gc(&mut st);
    }

    /// The sending half is gone: finish the stream (FIN after what is queued), like closing a
    /// socket.
    fn drop_send(&self) {
        let shared = &self.shared;
        let mut st = shared.lock();
        let Some(s) = st.streams.get_mut(&self.id) else {
            return;
        };
        s.send_half = false;
        s.write_waker = None;
        if !s.fin_queued && s.reset.is_none() {
            s.fin_queued = true;
            shared.writer_wake.notify_one();
        }
        shared.gc(&mut st);
    }
}

/// One SPDY stream: `AsyncRead` yields the peer's DATA until its FIN (or a reset, or the end
/// of the session); `AsyncWrite` sends DATA, `shutdown` sends FIN and waits until it is handed
/// to the connection, `flush` waits until queued data is. Dropping it sends FIN after queued
/// data (unless reset) and discards whatever the peer still sends.
pub struct Stream {
    core: Core,
    headers: Headers,
    recv: bool,
    send: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.core.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.core.id
    }

    /// The headers of the SYN_STREAM that opened it.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Resets the stream (RST_STREAM `status`): queued data is dropped, reads see EOF.
    pub fn reset(&self, status: RstStatus) {
        self.core.reset(status);
    }

    /// The status of the RST_STREAM that ended it, sent or received.
    pub fn reset_status(&self) -> Option<RstStatus> {
        self.core.reset_status()
    }

    /// Splits into independently owned halves (for a reading task and a writing task).
    pub fn into_split(mut self) -> (RecvStream, SendStream) {
        self.recv = false;
        self.send = false;
        let recv = RecvStream {
            core: Core {
                shared: self.core.shared.clone(),
                id: self.core.id,
            },
        };
        let send = SendStream {
            core: Core {
                shared: self.core.shared.clone(),
                id: self.core.id,
            },
        };
        (recv, send)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.recv {
            self.core.drop_recv();
        }
        if self.send {
            self.core.drop_send();
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.core.poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.core.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core.poll_shutdown(cx)
    }
}

/// The receiving half of a [`Stream`]; dropping it discards what the peer still sends.
pub struct RecvStream {
    core: Core,
}

impl RecvStream {
    pub fn id(&self) -> u32 {
        self.core.id
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        self.core.drop_recv();
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.core.poll_read(cx, buf)
    }
}

/// The sending half of a [`Stream`]; dropping it sends FIN after queued data.
pub struct SendStream {
    core: Core,
}

impl SendStream {
    pub fn id(&self) -> u32 {
        self.core.id
    }

    /// Resets the whole stream (both halves).
    pub fn reset(&self, status: RstStatus) {
        self.core.reset(status);
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        self.core.drop_send();
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.core.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core.poll_shutdown(cx)
    }
}
