//! Attach: clients of a running container's own stdio (`kubectl attach`), served by its shim.
//!
//! The shim listens on `attach.sock` in its state directory (created before the container
//! starts, so a running container always has it; removed when the shim ends). A client connects
//! and exchanges frames, `[kind: u8][length: u32, big endian][payload]`:
//!
//! - shim → client: [`Frame::Stdout`], [`Frame::Stderr`]: a copy of the container's output from
//!   the moment the client connected (on a terminal all output is stdout). The connection ends
//!   (EOF) when the container exits.
//! - client → shim: [`Frame::AttachStdin`] (first, from a client that attaches stdin),
//!   [`Frame::Stdin`] data, [`Frame::StdinEof`] when the client's stdin ends, and
//!   [`Frame::Resize`] for the terminal.
//!
//! Semantics are containerd's (`internal/cri/io`): stdin data goes to the container's stdin when
//! it was created with `stdin` and is dropped otherwise; when a client that attached stdin ends
//! its stdin (or goes away) and the container has `stdinOnce` without a terminal, the
//! container's stdin is closed (after what was already written reaches it). Leaving the attach
//! after the stdin ends otherwise is the client's business.
//!
//! **Nothing a client does can block the container or its log.** The shim's loop never waits on
//! a client: output is queued per client up to [`CLIENT_QUEUE_LIMIT`] and a client whose queue
//! would grow past it is dropped; stdin is read from clients only while the container's pending
//! stdin is below [`STDIN_PENDING_LIMIT`] (so a container that does not read its stdin slows
//! the writers, not the shim); at most [`MAX_CLIENTS`] clients at a time (more are refused).
//! Memory is only allocated while clients are attached.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::crilog::Stream;

/// The attach socket's file name in the shim's state directory.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Clients attached at a time; the next ones are refused (connection closed at once).
pub const MAX_CLIENTS: usize = 16;

/// Output queued for one client before it is dropped as too slow.
pub const CLIENT_QUEUE_LIMIT: usize = 1024 * 1024;

/// Stdin accepted from clients and not yet taken by the container before clients are no longer
/// read.
pub const STDIN_PENDING_LIMIT: usize = 64 * 1024;

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const HEADER: usize = 5;

const KIND_STDOUT: u8 = 1;
const KIND_STDERR: u8 = 2;
const KIND_ATTACH_STDIN: u8 = 3;
const KIND_STDIN: u8 = 4;
const KIND_STDIN_EOF: u8 = 5;
const KIND_RESIZE: u8 = 6;

/// One message of the attach protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Container output on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Container output on stderr.
    Stderr(Vec<u8>),
    /// The client attaches stdin (so its end counts for `stdinOnce`).
    AttachStdin,
    /// Data for the container's stdin.
    Stdin(Vec<u8>),
    /// The client's stdin ended.
    StdinEof,
    /// The client's terminal size (columns, rows).
    Resize { width: u16, height: u16 },
}

/// A frame that is not one of the protocol's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    #[error("attach frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("attach frame of kind {kind} has a bad length {len}")]
    BadLength { kind: u8, len: usize },
}

impl Frame {
    /// Appends the frame's encoding to `out`. Payloads longer than [`MAX_PAYLOAD`] are split.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Stdout(d) => encode_data(KIND_STDOUT, d, out),
            Frame::Stderr(d) => encode_data(KIND_STDERR, d, out),
            Frame::Stdin(d) => encode_data(KIND_STDIN, d, out),
            Frame::AttachStdin => header(KIND_ATTACH_STDIN, 0, out),
            Frame::StdinEof => header(KIND_STDIN_EOF, 0, out),
            Frame::Resize { width, height } => {
                header(KIND_RESIZE, 4, out);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
            }
        }
    }

    /// Decodes the first frame of `buf`: the frame and the bytes it took, or `None` when `buf`
    /// does not hold a whole frame yet.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let fixed = match kind {
            KIND_STDOUT | KIND_STDERR | KIND_STDIN => None,
            KIND_ATTACH_STDIN | KIND_STDIN_EOF => Some(0),
            KIND_RESIZE => Some(4),
            other => return Err(FrameError::UnknownKind(other)),
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(FrameError::BadLength { kind, len });
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        let p = &buf[HEADER..HEADER + len];
        let frame = match kind {
            KIND_STDOUT => Frame::Stdout(p.to_vec()),
            KIND_STDERR => Frame::Stderr(p.to_vec()),
            KIND_STDIN => Frame::Stdin(p.to_vec()),
            KIND_ATTACH_STDIN => Frame::AttachStdin,
            KIND_STDIN_EOF => Frame::StdinEof,
            _ => Frame::Resize {
                width: u16::from_be_bytes([p[0], p[1]]),
                height: u16::from_be_bytes([p[2], p[3]]),
            },
        };
        Ok(Some((frame, HEADER + len)))
    }
}

fn header(kind: u8, len: usize, out: &mut Vec<u8>) {
    out.push(kind);
    // `len` is at most MAX_PAYLOAD here.
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn encode_data(kind: u8, data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        header(kind, 0, out);
    }
    for chunk in data.chunks(MAX_PAYLOAD) {
        header(kind, chunk.len(), out);
        out.extend_from_slice(chunk);
    }
}

/// Binds a unix socket at `dir/name` (through `dir` as the working directory, so a long `dir`
/// does not hit `sun_path`'s 108 bytes), mode 0600, non-blocking. The shim is single-threaded,
/// so changing its working directory for a moment is safe; it goes back to `/`.
pub(crate) fn bind(dir: &Path, name: &str) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(dir.join(name));
    std::env::set_current_dir(dir)?;
    let bound = UnixListener::bind(name);
    std::env::set_current_dir("/")?;
    let l = bound?;
    std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// One attached client.
struct Client {
    sock: UnixStream,
    /// Encoded output not yet sent.
    out: Vec<u8>,
    /// Received bytes not yet decoded into a whole frame.
    inbuf: Vec<u8>,
    /// It attached stdin (its end counts for `stdinOnce`).
    stdin: bool,
    /// Its stdin ended (no more stdin from it is taken).
    stdin_done: bool,
    /// To be dropped at the end of the current step.
    dead: bool,
}

impl Client {
    /// Sends what is queued, as far as the socket takes it now.
    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(16 * 1024);
        }
    }
}

/// What the poll loop should watch for one descriptor of the attach server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// The listening socket (new clients).
    Listener,
    /// The container's stdin is writable (pending stdin).
    Stdin,
    /// Client `i`: `read` (it may send), `write` (output queued).
    Client { i: usize, read: bool, write: bool },
}

/// The attach side of the shim's loop: the listener, the clients and the container's stdin.
pub(crate) struct AttachServer {
    listener: UnixListener,
    clients: Vec<Client>,
    /// The container's stdin (pipe write end, or the terminal's master), while open.
    stdin: Option<File>,
    /// Stdin accepted from clients and not yet written.
    pending: Vec<u8>,
    /// Close the container's stdin once `pending` is written.
    close_stdin: bool,
    stdin_once: bool,
    /// The terminal's master (resize), with `tty`.
    terminal: Option<OwnedFd>,
    /// A scratch buffer for one client read.
    buf: Vec<u8>,
}

impl AttachServer {
    /// `stdin`: the container's stdin to write to (none: stdin data is dropped); `terminal`:
    /// the master of its terminal, for resizes.
    pub(crate) fn new(
        listener: UnixListener,
        stdin: Option<OwnedFd>,
        stdin_once: bool,
        terminal: Option<OwnedFd>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let stdin = match stdin {
            Some(fd) => {
                set_nonblocking(&fd)?;
                Some(File::from(fd))
            }
            None => None,
        };
        Ok(Self {
            listener,
            clients: Vec::new(),
            stdin,
            pending: Vec::new(),
            close_stdin: false,
            // containerd closes stdin for stdinOnce only without a terminal.
            stdin_once: stdin_once && terminal.is_none(),
            terminal,
            buf: Vec::new(),
        })
    }

    /// The descriptors to poll and what for, in a fixed order (at most `2 + MAX_CLIENTS`).
    pub(crate) fn interests<'a>(&'a self, mut each: impl FnMut(BorrowedFd<'a>, Interest)) {
        each(self.listener.as_fd(), Interest::Listener);
        if let Some(s) = self.stdin.as_ref().filter(|_| !self.pending.is_empty()) {
            each(s.as_fd(), Interest::Stdin);
        }
        let read = self.pending.len() < STDIN_PENDING_LIMIT;
        for (i, c) in self.clients.iter().enumerate() {
            each(
                c.sock.as_fd(),
                Interest::Client {
                    i,
                    read,
                    write: !c.out.is_empty(),
                },
            );
        }
    }

    /// Handles readiness of one descriptor reported by poll (`hup`: error or hang-up).
    pub(crate) fn ready(&mut self, what: Interest, hup: bool) {
        match what {
            Interest::Listener => self.accept(),
            Interest::Stdin => self.write_stdin(),
            Interest::Client { i, read, write } => {
                if let Some(c) = self.clients.get_mut(i) {
                    if write {
                        c.flush();
                    }
                }
                // The read is tried when reading was asked for (it stops at `WouldBlock`)
                // or the peer hung up (it reads EOF).
                if read || hup {
                    self.read_client(i);
                }
            }
        }
    }

    /// Drops the clients marked dead (after a step of the loop, so indices stay valid during it).
    pub(crate) fn sweep(&mut self) {
        let mut i = 0;
        while i < self.clients.len() {
            if self.clients[i].dead {
                let c = self.clients.swap_remove(i);
                self.client_gone(&c);
            } else {
                i += 1;
            }
        }
        if self.clients.is_empty() && self.clients.capacity() > 0 {
            self.clients = Vec::new();
            self.buf = Vec::new();
        }
    }

    /// Copies container output to every client (queued; a client whose queue would pass the
    /// limit is marked to be dropped), and sends what it can at once.
    pub(crate) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() || self.clients.is_empty() {
            return;
        }
        for c in &mut self.clients {
            if c.dead {
                continue;
            }
            if c.out.len() + data.len() + HEADER * data.len().div_ceil(MAX_PAYLOAD)
                > CLIENT_QUEUE_LIMIT
            {
                eprintln!("staticlet-shim: attach client too slow, dropped");
                c.dead = true;
                continue;
            }
            match stream {
                Stream::Stdout => encode_data(KIND_STDOUT, data, &mut c.out),
                Stream::Stderr => encode_data(KIND_STDERR, data, &mut c.out),
            }
            c.flush();
        }
    }

    /// The container exited: a last try to send what is queued, then every client is closed
    /// (EOF) and the socket file removed.
    pub(crate) fn shutdown(mut self, dir: &Path) {
        for c in &mut self.clients {
            c.flush();
        }
        self.clients.clear();
        let _ = std::fs::remove_file(dir.join(ATTACH_SOCKET));
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        eprintln!("staticlet-shim: attach client refused (too many)");
                        continue;
                    }
                    self.clients.push(Client {
                        sock,
                        out: Vec::new(),
                        inbuf: Vec::new(),
                        stdin: false,
                        stdin_done: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        if self.buf.len() < 16 * 1024 {
            self.buf.resize(16 * 1024, 0);
        }
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match c.sock.read(&mut self.buf) {
            Ok(0) => {
                c.dead = true;
                return;
            }
            Ok(n) => c.inbuf.extend_from_slice(&self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => {
                c.dead = true;
                return;
            }
        }
        loop {
            let c = &mut self.clients[i];
            let (frame, used) = match Frame::decode(&c.inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("staticlet-shim: attach client dropped: {e}");
                    c.dead = true;
                    break;
                }
            };
            c.inbuf.drain(..used);
            self.handle(i, frame);
        }
        let c = &mut self.clients[i];
        if c.inbuf.is_empty() && c.inbuf.capacity() > 64 * 1024 {
            c.inbuf = Vec::new();
        }
        self.write_stdin();
    }

    fn handle(&mut self, i: usize, frame: Frame) {
        match frame {
            Frame::AttachStdin => self.clients[i].stdin = true,
            Frame::Stdin(d) => {
                if self.stdin.is_some() && !self.close_stdin && !self.clients[i].stdin_done {
                    self.pending.extend_from_slice(&d);
                }
            }
            Frame::StdinEof => {
                let c = &mut self.clients[i];
                if c.stdin && !c.stdin_done {
                    c.stdin_done = true;
                    self.stdin_ended();
                }
            }
            Frame::Resize { width, height } => {
                if let Some(t) = &self.terminal {
                    let size = rustix::termios::Winsize {
                        ws_row: height,
                        ws_col: width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(t, size);
                }
            }
            // Output frames are the shim's to send: a client sending them is confused.
            Frame::Stdout(_) | Frame::Stderr(_) => self.clients[i].dead = true,
        }
    }

    fn client_gone(&mut self, c: &Client) {
        if c.stdin && !c.stdin_done {
            self.stdin_ended();
        }
    }

    /// A client's stdin ended: with `stdinOnce` the container's stdin is closed once what is
    /// pending is written.
    fn stdin_ended(&mut self) {
        if self.stdin_once && self.stdin.is_some() {
            self.close_stdin = true;
            self.write_stdin();
        }
    }

    fn write_stdin(&mut self) {
        let Some(s) = self.stdin.as_mut() else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match s.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // The container closed its stdin: nothing will read it any more.
                    self.pending = Vec::new();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.pending.capacity() > 64 * 1024 {
            self.pending = Vec::new();
        }
        if self.close_stdin {
            self.stdin = None;
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(vec![]),
            Frame::AttachStdin,
            Frame::Stdin(b"in\n".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                width: 120,
                height: 40,
            },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((f, n)) = Frame::decode(&buf[at..]).unwrap() {
            got.push(f);
            at += n;
        }
        assert_eq!(got, frames);
        assert_eq!(at, buf.len());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut buf = Vec::new();
        Frame::Stdin(b"hello".to_vec()).encode(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(Frame::decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn long_data_is_split_into_frames() {
        let data = vec![7u8; MAX_PAYLOAD * 2 + 3];
        let mut buf = Vec::new();
        Frame::Stdout(data.clone()).encode(&mut buf);
        let mut joined = Vec::new();
        let mut at = 0;
        while let Some((f, n)) = Frame::decode(&buf[at..]).unwrap() {
            let Frame::Stdout(d) = f else { panic!("{f:?}") };
            assert!(d.len() <= MAX_PAYLOAD);
            joined.extend(d);
            at += n;
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(
            Frame::decode(&[9, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            Frame::decode(&[KIND_RESIZE, 0, 0, 0, 3, 1, 2, 3]),
            Err(FrameError::BadLength {
                kind: KIND_RESIZE,
                len: 3
            })
        );
        assert_eq!(
            Frame::decode(&[KIND_STDIN, 0, 1, 0, 1]),
            Err(FrameError::TooLarge(65537))
        );
    }
}
