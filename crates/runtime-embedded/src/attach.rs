//! Attach (`kubectl attach`): the caller's streams joined to a running container's own stdio
//! through its shim's attach socket ([`staticlet_shim::attach`]).
//!
//! The container's output from now on comes from the shim as frames and is written to the
//! caller's stdout or stderr (one not asked for is skipped). Writing to the caller is awaited: a
//! caller that reads too slowly stops this side reading the socket, and the shim, which never
//! waits for a client, drops the connection once its queue for it is full, which ends the
//! attach. The caller's stdin and terminal sizes go to the shim as frames.
//!
//! When the attach ends, as containerd's (`internal/cri/io`, `ContainerIO.Attach`):
//! - the container exits (the shim closes the connection), or the caller's output is gone;
//! - the caller's stdin ends, for a container created with `stdin`: the shim is told (so that
//!   `stdinOnce` closes the container's stdin) and, unless the container has `stdinOnce`
//!   without a terminal, the attach ends there; with it, the output keeps coming until the
//!   container exits, as kubectl expects;
//! - for a container without `stdin`, the caller's stdin is read and dropped and its end ends
//!   nothing.
//!
//! Everything is async on the caller's task: an idle attach holds no thread, and dropping the
//! future (the client went away) closes the connection, which the shim notices.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use staticlet_runtime::{ExecIo, TerminalSize};
use staticlet_shim::attach::{Frame, ATTACH_SOCKET};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Size of one read of the caller's stdin or of the socket.
const CHUNK: usize = 16 * 1024;

/// The longest socket path `connect(2)` takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 100;

/// How the container's stdio was created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerStdio {
    /// Kubernetes `stdin`.
    pub stdin: bool,
    /// Kubernetes `stdinOnce`.
    pub stdin_once: bool,
    /// Kubernetes `tty`.
    pub tty: bool,
}

/// Connects to the attach socket in the shim's state directory `dir`.
pub(crate) async fn connect(dir: &Path) -> io::Result<UnixStream> {
    connect_to(dir, ATTACH_SOCKET).await
}

/// Connects to the socket `name` in the shim's state directory `dir`. A path too long for a
/// socket address is reached through `/proc/self/fd/<dir>/`.
pub(crate) async fn connect_to(dir: &Path, name: &str) -> io::Result<UnixStream> {
    let path = dir.join(name);
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return UnixStream::connect(&path).await;
    }
    let d = std::fs::File::open(dir)?;
    let via = format!("/proc/self/fd/{}/{name}", d.as_raw_fd());
    let s = UnixStream::connect(&via).await;
    drop(d);
    s
}

/// Runs an attach over a connected socket until it ends (see the module documentation).
pub(crate) async fn run(sock: UnixStream, stdio: ContainerStdio, io: ExecIo) -> io::Result<()> {
    let ExecIo {
        stdin,
        mut stdout,
        mut stderr,
        resize,
    } = io;
    let (mut from_shim, mut to_shim) = sock.into_split();
    let output = async {
        let mut buf = Vec::with_capacity(CHUNK);
        loop {
            while let Some((frame, used)) = Frame::decode(&buf).map_err(io::Error::other)? {
                buf.drain(..used);
                let (to, data) = match frame {
                    Frame::Stdout(d) => (stdout.as_mut(), d),
                    Frame::Stderr(d) => (stderr.as_mut(), d),
                    _ => continue,
                };
                if let Some(w) = to {
                    w.write_all(&data).await?;
                    w.flush().await?;
                }
            }
            if from_shim.read_buf(&mut buf).await? == 0 {
                // The container exited (or the shim dropped us).
                return Ok::<(), io::Error>(());
            }
        }
    };
    let input = forward_input(&mut to_shim, stdin, resize, stdio);
    tokio::pin!(output, input);
    tokio::select! {
        r = &mut output => r,
        r = &mut input => match r? {
            Leave::Now => Ok(()),
            Leave::AtExit => output.await,
        },
    }
}

/// When the attach ends once the caller's stdin has ended.
enum Leave {
    Now,
    AtExit,
}

/// Sends the caller's stdin and terminal sizes to the shim until the caller's stdin ends.
async fn forward_input(
    to_shim: &mut OwnedWriteHalf,
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    stdio: ContainerStdio,
) -> io::Result<Leave> {
    let mut stdin = stdin;
    if stdin.is_some() && stdio.stdin {
        send(to_shim, &Frame::AttachStdin).await?;
    }
    let mut chunk = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            n = read_some(stdin.as_mut(), &mut chunk) => {
                let n = n?;
                if n > 0 {
                    if stdio.stdin {
                        send(to_shim, &Frame::Stdin(chunk[..n].to_vec())).await?;
                    }
                    continue;
                }
                stdin = None;
                if !stdio.stdin {
                    // Nothing was attached to the container's stdin: its end changes nothing.
                    continue;
                }
                send(to_shim, &Frame::StdinEof).await?;
                return Ok(if stdio.stdin_once && !stdio.tty {
                    Leave::AtExit
                } else {
                    Leave::Now
                });
            }
            size = recv_some(resize.as_mut()) => match size {
                Some(s) => {
                    send(to_shim, &Frame::Resize { width: s.width, height: s.height }).await?;
                }
                None => resize = None,
            },
        }
    }
}

/// Reads from the caller's stdin; pending forever without one.
async fn read_some(
    r: Option<&mut Box<dyn AsyncRead + Send + Unpin>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The next terminal size; pending forever without a resize stream.
async fn recv_some(r: Option<&mut mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(to: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> io::Result<()> {
    let mut b = Vec::new();
    frame.encode(&mut b);
    to.write_all(&b).await
}
