//! SPDY/3.1 frames: pure encoding and decoding, no I/O.
//!
//! This is the counterpart of the `spdy` framer that `github.com/moby/spdystream` (and through it
//! kubelet's `k8s.io/apimachinery/pkg/util/httpstream/spdy`) uses, written from the SPDY
//! protocol drafts 3 and 3.1:
//!
//! * control frames: `|1|version=3|type|` `|flags|length(24)|` payload — SYN_STREAM, SYN_REPLY,
//!   RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS and WINDOW_UPDATE; control frames of other
//!   types are returned as [`Frame::Unknown`] (the specification says to ignore them);
//! * DATA frames: `|0|stream-id(31)|` `|flags|length(24)|` payload, with FLAG_FIN;
//! * name/value header blocks with 32-bit lengths, compressed with one zlib stream per direction
//!   and session, primed with the SPDY/3 dictionary; each block ends with a zlib sync flush, so
//!   the state carries over from frame to frame and a [`FrameEncoder`]/[`FrameDecoder`] must see
//!   every header-carrying frame of its direction, in order.
//!
//! Decoding is strict and bounded: a frame longer than [`Limits::max_frame_len`], a header block
//! that inflates past [`Limits::max_header_block`], inconsistent lengths, a control frame of
//! another protocol version, or a stream id 0 where one is required give a [`FrameError`] — never
//! a panic and never an allocation the limits do not bound. Errors are session errors: the
//! compression state cannot be trusted after one.
//!
//! Limits: no CREDENTIAL frames (removed from SPDY/3.1), no server push semantics (the
//! associated-stream id and the slot are decoded and left to the caller), priorities are carried
//! but not acted on.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::header_dictionary;

/// The protocol version carried by every control frame.
pub const SPDY_VERSION: u16 = 3;

/// Largest payload the 24-bit length field can describe.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

/// Flag of SYN_STREAM, SYN_REPLY, HEADERS and DATA frames: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// Flag of SYN_STREAM: the sender will not receive on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Flag of SETTINGS: clear the previously persisted settings.
pub const FLAG_SETTINGS_CLEAR_SETTINGS: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Bounds on what [`FrameDecoder`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted (the 24-bit length field allows up to 16 MiB − 1).
    /// Kubernetes' Go peers write DATA frames of at most 32 KiB (their copy buffers).
    pub max_frame_len: usize,
    /// Largest decompressed name/value header block accepted.
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: 1 << 20,
            max_header_block: 1 << 20,
        }
    }
}

/// Status code of a RST_STREAM frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: RstStatus = RstStatus(1);
    pub const INVALID_STREAM: RstStatus = RstStatus(2);
    pub const REFUSED_STREAM: RstStatus = RstStatus(3);
    pub const UNSUPPORTED_VERSION: RstStatus = RstStatus(4);
    pub const CANCEL: RstStatus = RstStatus(5);
    pub const INTERNAL_ERROR: RstStatus = RstStatus(6);
    pub const FLOW_CONTROL_ERROR: RstStatus = RstStatus(7);
    pub const STREAM_IN_USE: RstStatus = RstStatus(8);
    pub const STREAM_ALREADY_CLOSED: RstStatus = RstStatus(9);
    pub const INVALID_CREDENTIALS: RstStatus = RstStatus(10);
    pub const FRAME_TOO_LARGE: RstStatus = RstStatus(11);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            10 => "INVALID_CREDENTIALS",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// Status code of a GOAWAY frame.
///
/// The SPDY/3 draft lists 0 OK, 1 PROTOCOL_ERROR and 11 INTERNAL_ERROR; Chromium and spdystream
/// use 2 for an internal error. Both are named here; spdystream ignores the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: GoAwayStatus = GoAwayStatus(0);
    pub const PROTOCOL_ERROR: GoAwayStatus = GoAwayStatus(1);
    pub const INTERNAL_ERROR: GoAwayStatus = GoAwayStatus(11);
}

impl fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 | 11 => f.write_str("INTERNAL_ERROR"),
            n => write!(f, "status {n}"),
        }
    }
}

/// Ids of SETTINGS entries.
pub mod settings {
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    pub const ROUND_TRIP_TIME: u32 = 3;
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const CURRENT_CWND: u32 = 5;
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;
}

/// One entry of a SETTINGS frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit id, one of [`settings`].
    pub id: u32,
    pub value: u32,
}

/// Name/value pairs of a SYN_STREAM, SYN_REPLY or HEADERS frame.
///
/// Names are lower case (SPDY requires it; names given in another case are lowered), a name
/// appears once, and a name with several values is sent as the values joined by NUL bytes, as
/// spdystream does for Go's `http.Header`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: BTreeMap<String, Vec<String>>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value to `name` (lowered).
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.entries
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into());
    }

    /// Replaces the values of `name` (lowered) with `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.entries
            .insert(name.to_ascii_lowercase(), vec![value.into()]);
    }

    /// Builder form of [`Headers::set`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    /// The first value of `name`, compared without regard to case (as Go's `Header.Get`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// Every value of `name`.
    pub fn get_all(&self, name: &str) -> &[String] {
        let lowered;
        let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        self.entries.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Names (lower case) and their values, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.append(k.as_ref(), v);
        }
        h
    }
}

/// One SPDY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        /// [`FLAG_FIN`] and/or [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        /// [`FLAG_SETTINGS_CLEAR_SETTINGS`].
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        /// 0 for the session window (SPDY/3.1).
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this crate does not know; its payload has been skipped.
    Unknown {
        frame_type: u16,
        flags: u8,
        len: usize,
    },
}

impl Frame {
    /// The frame's name in the specification.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::SynStream { .. } => "SYN_STREAM",
            Frame::SynReply { .. } => "SYN_REPLY",
            Frame::RstStream { .. } => "RST_STREAM",
            Frame::Settings { .. } => "SETTINGS",
            Frame::Ping { .. } => "PING",
            Frame::GoAway { .. } => "GOAWAY",
            Frame::Headers { .. } => "HEADERS",
            Frame::WindowUpdate { .. } => "WINDOW_UPDATE",
            Frame::Data { .. } => "DATA",
            Frame::Unknown { .. } => "unknown control frame",
        }
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("control frame of SPDY version {0} (only version 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("{frame} frame with invalid payload length {len}")]
    InvalidLength { frame: &'static str, len: usize },
    #[error("{frame} frame for stream 0")]
    ZeroStreamId { frame: &'static str },
    #[error("RST_STREAM frame for stream {stream_id} with status 0")]
    ZeroRstStatus { stream_id: u32 },
    #[error("header block inflates to more than {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    #[error("header block decompression failed: {0}")]
    Decompress(String),
    #[error("malformed header block: {0}")]
    MalformedHeaderBlock(String),
    #[error("header block compression failed: {0}")]
    Compress(String),
    #[error("cannot encode {frame}: {reason}")]
    Unencodable {
        frame: &'static str,
        reason: &'static str,
    },
}

/// Decodes the frames of one direction of a session (owns its header decompressor).
pub struct FrameDecoder {
    limits: Limits,
    inflate: Decompress,
}

impl FrameDecoder {
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            inflate: Decompress::new(true),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Length of the frame at the front of `buf`, once its 8-byte header is there: lets a reader
    /// reject an oversized frame before buffering it.
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if len > self.limits.max_frame_len {
            return Err(FrameError::FrameTooLarge {
                len,
                max: self.limits.max_frame_len,
            });
        }
        Ok(Some(len))
    }

    /// Decodes the frame at the front of `buf` and removes it from `buf`; `Ok(None)` while the
    /// frame is not complete (nothing is consumed then).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.peek_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(8);
        let payload = buf.split_to(len).freeze();
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        if word & 0x8000_0000 == 0 {
            let stream_id = word & STREAM_ID_MASK;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId { frame: "DATA" });
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let frame_type = (word & 0xffff) as u16;
        if version != SPDY_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        self.control(frame_type, flags, payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let len = p.len();
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                // stream id, associated-to id, priority/unused, slot, then at least the zlib
                // stream's bytes.
                if len < 10 {
                    return Err(invalid_length("SYN_STREAM", len));
                }
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let associated_to = p.get_u32() & STREAM_ID_MASK;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.header_block(&p)?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId {
                        frame: "SYN_STREAM",
                    });
                }
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let name = if frame_type == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                if len < 4 {
                    return Err(invalid_length(name, len));
                }
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let headers = self.header_block(&p)?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId { frame: name });
                }
                let fin = flags & FLAG_FIN != 0;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                if len != 8 {
                    return Err(invalid_length("RST_STREAM", len));
                }
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let status = p.get_u32();
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId {
                        frame: "RST_STREAM",
                    });
                }
                if status == 0 {
                    return Err(FrameError::ZeroRstStatus { stream_id });
                }
                Frame::RstStream {
                    stream_id,
                    status: RstStatus(status),
                }
            }
            TYPE_SETTINGS => {
                if len < 4 {
                    return Err(invalid_length("SETTINGS", len));
                }
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(len - 4) {
                    return Err(invalid_length("SETTINGS", len));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let word = p.get_u32();
                    let value = p.get_u32();
                    entries.push(Setting {
                        flags: (word >> 24) as u8,
                        id: word & 0x00ff_ffff,
                        value,
                    });
                }
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                if len != 4 {
                    return Err(invalid_length("PING", len));
                }
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                if len != 8 {
                    return Err(invalid_length("GOAWAY", len));
                }
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & STREAM_ID_MASK,
                    status: GoAwayStatus(p.get_u32()),
                }
            }
            TYPE_WINDOW_UPDATE => {
                if len != 8 {
                    return Err(invalid_length("WINDOW_UPDATE", len));
                }
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown {
                frame_type: other,
                flags,
                len,
            },
        };
        Ok(frame)
    }

    /// Inflates one compressed header block (the rest of a frame's payload) and parses it.
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let max = self.limits.max_header_block;
        let mut out: Vec<u8> =
            Vec::with_capacity(input.len().saturating_mul(4).clamp(256, max + 1));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(FrameError::HeaderBlockTooLarge { max });
                }
                let grow = out.len().max(256).min(max + 1 - out.len());
                out.reserve_exact(grow);
            }
            let in_before = self.inflate.total_in();
            let out_before = out.len();
            let result =
                self.inflate
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - in_before) as usize;
            pos += consumed;
            let produced = out.len() - out_before;
            match result {
                Ok(Status::Ok) | Ok(Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Decompress(
                        "the peer ended its header compression stream".into(),
                    ));
                }
                Err(e) => {
                    if e.needs_dictionary().is_some() {
                        self.inflate
                            .set_dictionary(header_dictionary())
                            .map_err(|e| FrameError::Decompress(e.to_string()))?;
                        continue;
                    }
                    return Err(FrameError::Decompress(e.to_string()));
                }
            }
            if out.len() > max {
                return Err(FrameError::HeaderBlockTooLarge { max });
            }
            if pos == input.len() && out.len() < out.capacity() {
                // All input taken and the inflater stopped before filling the buffer: the
                // block's sync flush has been reached (or the block is truncated, which the
                // parser reports).
                return Ok(out);
            }
            if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                return Err(FrameError::Decompress("inflate made no progress".into()));
            }
        }
    }
}

fn invalid_length(frame: &'static str, len: usize) -> FrameError {
    FrameError::InvalidLength { frame, len }
}

fn malformed(msg: impl Into<String>) -> FrameError {
    FrameError::MalformedHeaderBlock(msg.into())
}

/// Parses an uncompressed name/value block.
fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if b.len() < n {
            return Err(malformed(format!("truncated {what}")));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn take_u32(b: &mut &[u8], what: &str) -> Result<usize, FrameError> {
        let bytes = take(b, 4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    }

    let count = take_u32(&mut b, "pair count")?;
    // Each pair needs at least its two length fields: refuse counts the block cannot hold
    // before allocating anything for them.
    if count > b.len() / 8 {
        return Err(malformed(format!(
            "{count} pairs announced in {} bytes",
            b.len()
        )));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let name_len = take_u32(&mut b, "name length")?;
        let name = take(&mut b, name_len, "name")?;
        if name.is_empty() {
            return Err(malformed("empty header name"));
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| malformed("header name is not UTF-8"))?
            .to_ascii_lowercase();
        let value_len = take_u32(&mut b, "value length")?;
        let value = take(&mut b, value_len, "value")?;
        let value =
            std::str::from_utf8(value).map_err(|_| malformed("header value is not UTF-8"))?;
        if headers.entries.contains_key(&name) {
            return Err(malformed(format!("duplicate header name {name:?}")));
        }
        let values = value.split('\0').map(str::to_owned).collect();
        headers.entries.insert(name, values);
    }
    if !b.is_empty() {
        return Err(malformed(format!("{} bytes after the last pair", b.len())));
    }
    Ok(headers)
}

/// Encodes the frames of one direction of a session (owns its header compressor).
pub struct FrameEncoder {
    deflate: Compress,
    primed: bool,
    scratch: Vec<u8>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        FrameEncoder {
            deflate: Compress::new(Compression::best(), true),
            primed: false,
            scratch: Vec::new(),
        }
    }

    /// Appends `frame` to `out`; on error nothing is appended. An error on a header-carrying
    /// frame may leave the compression stream advanced past what the peer will see, so the
    /// session must end (as it must on any encoding error: they are programming errors).
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                check_stream_id("DATA", *stream_id)?;
                if data.len() > MAX_FRAME_PAYLOAD {
                    return Err(FrameError::Unencodable {
                        frame: "DATA",
                        reason: "payload longer than 16 MiB - 1",
                    });
                }
                out.reserve(8 + data.len());
                out.put_u32(*stream_id);
                out.put_u8(if *fin { FLAG_FIN } else { 0 });
                put_u24(out, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            } => {
                check_stream_id("SYN_STREAM", *stream_id)?;
                let block = self.compress_headers(headers)?;
                control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
                out.put_u32(*stream_id);
                out.put_u32(associated_to & STREAM_ID_MASK);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let (name, ty) = if matches!(frame, Frame::SynReply { .. }) {
                    ("SYN_REPLY", TYPE_SYN_REPLY)
                } else {
                    ("HEADERS", TYPE_HEADERS)
                };
                check_stream_id(name, *stream_id)?;
                let block = self.compress_headers(headers)?;
                control_header(out, ty, if *fin { FLAG_FIN } else { 0 }, 4 + block.len())?;
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                check_stream_id("RST_STREAM", *stream_id)?;
                if status.0 == 0 {
                    return Err(FrameError::Unencodable {
                        frame: "RST_STREAM",
                        reason: "status 0",
                    });
                }
                control_header(out, TYPE_RST_STREAM, 0, 8)?;
                out.put_u32(*stream_id);
                out.put_u32(status.0);
            }
            Frame::Settings { flags, entries } => {
                let len = entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .filter(|n| *n <= MAX_FRAME_PAYLOAD)
                    .ok_or(FrameError::Unencodable {
                        frame: "SETTINGS",
                        reason: "too many entries",
                    })?;
                if entries.iter().any(|e| e.id > 0x00ff_ffff) {
                    return Err(FrameError::Unencodable {
                        frame: "SETTINGS",
                        reason: "setting id wider than 24 bits",
                    });
                }
                control_header(out, TYPE_SETTINGS, *flags, len)?;
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32((u32::from(e.flags) << 24) | e.id);
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(status.0);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                if *delta == 0 || *delta > 0x7fff_ffff {
                    return Err(FrameError::Unencodable {
                        frame: "WINDOW_UPDATE",
                        reason: "delta outside 1..=2^31-1",
                    });
                }
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*delta);
            }
            Frame::Unknown { .. } => {
                return Err(FrameError::Unencodable {
                    frame: "unknown control frame",
                    reason: "its payload is not kept",
                });
            }
        }
        Ok(())
    }

    /// Serializes and compresses a header block, ending with a sync flush.
    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut raw = std::mem::take(&mut self.scratch);
        raw.clear();
        let result =
            serialize_header_block(headers, &mut raw).and_then(|()| self.deflate_block(&raw));
        self.scratch = raw;
        result
    }

    /// Compresses an already serialized block on this direction's zlib stream.
    fn deflate_block(&mut self, raw: &[u8]) -> Result<Vec<u8>, FrameError> {
        if !self.primed {
            self.deflate
                .set_dictionary(header_dictionary())
                .map_err(|e| FrameError::Compress(e.to_string()))?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len().max(256));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compress(e.to_string()))?;
            pos += (self.deflate.total_in() - before) as usize;
            // Done once every byte is in and the flush left room to spare (nothing pending).
            if pos == raw.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

fn serialize_header_block(headers: &Headers, raw: &mut Vec<u8>) -> Result<(), FrameError> {
    let too_long = || FrameError::Unencodable {
        frame: "header block",
        reason: "a length does not fit 32 bits",
    };
    let count = u32::try_from(headers.len()).map_err(|_| too_long())?;
    raw.extend_from_slice(&count.to_be_bytes());
    for (name, values) in headers.iter() {
        let name_len = u32::try_from(name.len()).map_err(|_| too_long())?;
        raw.extend_from_slice(&name_len.to_be_bytes());
        raw.extend_from_slice(name.as_bytes());
        let value = values.join("\0");
        let value_len = u32::try_from(value.len()).map_err(|_| too_long())?;
        raw.extend_from_slice(&value_len.to_be_bytes());
        raw.extend_from_slice(value.as_bytes());
    }
    Ok(())
}

fn check_stream_id(frame: &'static str, id: u32) -> Result<(), FrameError> {
    if id == 0 {
        return Err(FrameError::ZeroStreamId { frame });
    }
    if id > STREAM_ID_MASK {
        return Err(FrameError::Unencodable {
            frame,
            reason: "stream id wider than 31 bits",
        });
    }
    Ok(())
}

fn control_header(
    out: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    len: usize,
) -> Result<(), FrameError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::Unencodable {
            frame: "control frame",
            reason: "payload longer than 16 MiB - 1",
        });
    }
    out.reserve(8 + len);
    out.put_u16(0x8000 | SPDY_VERSION);
    out.put_u16(frame_type);
    out.put_u8(flags);
    put_u24(out, len);
    Ok(())
}

fn put_u24(out: &mut BytesMut, len: usize) {
    let b = (len as u32).to_be_bytes();
    out.put_slice(&b[1..]);
}

#[cfg(test)]
mod tests;
