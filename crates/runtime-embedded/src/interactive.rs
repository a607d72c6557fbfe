//! Interactive exec (`kubectl exec [-i] [-t]`): a command in a running container whose stdin,
//! stdout and stderr are streamed to and from the caller while it runs.
//!
//! The command runs under the shim's exec helper, as `exec_sync`'s do
//! ([`staticlet_shim::interactive_helper_command`]: it joins the container's namespaces and
//! cgroups and chroots), but with no timeout and with the caller's streams:
//! - without a terminal, the helper's (and so the command's) stdin, stdout and stderr are pipes
//!   to the agent, or `/dev/null` for a stream the caller did not ask for;
//! - with a terminal (`tty`), they are the slave of a pseudo-terminal taken from the container's
//!   own devpts; the agent keeps the master, copies it to the caller's stdout (stderr is merged
//!   into it by the terminal), copies the caller's stdin into it, and applies the caller's
//!   terminal sizes to it (one already queued when the exec starts is applied before the helper
//!   is spawned, so the command starts with it).
//!
//! Data is copied as it flows, one chunk at a time, with no buffering beyond one chunk per
//! stream: a caller that reads slowly slows the command down (its pipe or terminal fills up).
//! The caller's stdin reaching EOF closes the command's stdin (with a terminal, which has no
//! such thing, the terminal's EOF character is sent when it is in canonical mode, as pressing
//! ^D would). The exec ends when the command exits: what it wrote is then read until EOF, or
//! until the streams stay silent for [`DRAIN_IDLE`] (a background process it left behind holds
//! them open), and the exit code is returned (128 + signal when killed).
//!
//! Everything is async: the pipes and the terminal master are registered with tokio, and the
//! helper is awaited through tokio's child handling, so an idle session holds no thread.
//! Dropping the returned future (the client went away), or a failure to write to the client,
//! kills the helper, the command and every process of the session the helper made
//! ([`staticlet_shim::sys::kill_session`]); once the command has exited by itself, processes it
//! left in the background are left alone, as runc leaves them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use staticlet_runtime::{ExecIo, TerminalSize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// Once the command has exited, how long its output may stay silent before the exec ends
/// without the output's EOF (a process it started in the background holds it open).
pub const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Size of the one buffer of each copied stream.
const CHUNK: usize = 16 * 1024;

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Runs a prepared helper with the caller's streams; returns the command's exit code.
/// Errors are I/O errors saying what failed (the caller names the container).
pub(crate) async fn run(helper: staticlet_shim::InteractiveHelper, io: ExecIo) -> io::Result<i32> {
    let ExecIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    match helper.pty_master {
        Some(master) => run_on_terminal(helper.command, master, stdin, stdout, resize).await,
        None => run_on_pipes(helper.command, stdin, stdout, stderr, resize).await,
    }
}

async fn run_on_pipes(
    mut command: std::process::Command,
    stdin: Option<Reader>,
    stdout: Option<Writer>,
    stderr: Option<Writer>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
) -> io::Result<i32> {
    let pipe_if = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    command
        .stdin(pipe_if(stdin.is_some()))
        .stdout(pipe_if(stdout.is_some()))
        .stderr(pipe_if(stderr.is_some()));
    let mut helper = Helper::spawn(command)?;
    let (child_in, child_out, child_err) = (
        helper.child.stdin.take(),
        helper.child.stdout.take(),
        helper.child.stderr.take(),
    );
    let (exited_tx, exited) = watch::channel(false);
    let outputs = async {
        tokio::try_join!(
            copy_output(child_out, stdout, exited.clone(), "stdout"),
            copy_output(child_err, stderr, exited.clone(), "stderr"),
        )
        .map(drop)
    };
    let inputs = async {
        tokio::join!(
            async {
                if let (Some(from), Some(to)) = (stdin, child_in) {
                    copy_input(from, to).await;
                }
            },
            // Sizes mean nothing without a terminal: taken and dropped, so a sender never waits.
            apply_sizes(resize, None),
        );
    };
    helper.drive(outputs, inputs, exited_tx).await
}

async fn run_on_terminal(
    command: std::process::Command,
    master: OwnedFd,
    stdin: Option<Reader>,
    stdout: Option<Writer>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
) -> io::Result<i32> {
    let master = PtyMaster::new(master)?;
    // The size the caller already sent: set before the command starts, so it starts with it.
    if let Some(rx) = resize.as_mut() {
        let mut first = None;
        while let Ok(size) = rx.try_recv() {
            first = Some(size);
        }
        if let Some(size) = first {
            master.resize(size)?;
        }
    }
    // Spawned with the slave as its stdio; our copies of the slave go with the command, right
    // after the spawn, so the master reads EOF once the session has closed the terminal.
    let mut helper = Helper::spawn(command)?;
    let (exited_tx, exited) = watch::channel(false);
    let to_client = stdout.unwrap_or_else(|| Box::new(tokio::io::sink()));
    let outputs = copy_output(Some(&master), Some(to_client), exited, "terminal");
    let inputs = async {
        tokio::join!(
            async {
                if let Some(from) = stdin {
                    copy_input_to_terminal(from, &master).await;
                }
            },
            apply_sizes(resize, Some(&master)),
        );
    };
    helper.drive(outputs, inputs, exited_tx).await
}

/// The running helper. Dropped before it was reaped (the exec's future was dropped, or failed),
/// it kills the helper's whole session.
struct Helper {
    child: tokio::process::Child,
    /// The helper's pid, which names its session (and process group).
    pid: i32,
    /// Set in the same poll that reaps the helper: from then on its pid may name another
    /// process, so its session is not killed by number.
    reaped: AtomicBool,
}

impl Helper {
    fn spawn(command: std::process::Command) -> io::Result<Self> {
        // The tokio command, and the descriptors it was given for the helper's stdio, are
        // dropped at the end of this statement.
        let child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting the exec helper: {e}")))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| io::Error::other("the exec helper has no pid"))?;
        Ok(Self {
            child,
            pid,
            reaped: AtomicBool::new(false),
        })
    }

    /// Runs the copies until the helper has exited and the output is drained; returns the
    /// command's exit code. `inputs` is abandoned once the helper has exited.
    async fn drive(
        &mut self,
        outputs: impl std::future::Future<Output = io::Result<()>>,
        inputs: impl std::future::Future<Output = ()>,
        exited_tx: watch::Sender<bool>,
    ) -> io::Result<i32> {
        let (child, reaped) = (&mut self.child, &self.reaped);
        let wait = async move {
            let status = child.wait().await;
            reaped.store(true, Ordering::SeqCst);
            status
        };
        let (mut wait, mut outputs, mut inputs) = (
            std::pin::pin!(wait),
            std::pin::pin!(outputs),
            std::pin::pin!(inputs),
        );
        let (mut status, mut drained, mut inputs_done) = (None, false, false);
        while status.is_none() || !drained {
            tokio::select! {
                s = &mut wait, if status.is_none() => {
                    status = Some(s.map_err(|e| {
                        io::Error::new(e.kind(), format!("waiting for the exec helper: {e}"))
                    })?);
                    let _ = exited_tx.send(true);
                }
                r = &mut outputs, if !drained => {
                    r?;
                    drained = true;
                }
                () = &mut inputs, if !inputs_done && status.is_none() => inputs_done = true,
            }
        }
        Ok(exit_code(status.expect("set by the loop")))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::SeqCst) {
            // Not reaped: the pid (alive or a zombie) still names the helper's session.
            let n = staticlet_shim::sys::kill_session(self.pid);
            debug!(
                helper = self.pid,
                killed = n,
                "interactive exec ended early: its session was killed"
            );
        }
        // `child` is dropped next: kill_on_drop, and tokio reaps it.
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Copies the command's output `from` to the caller's `to` as it comes, flushing each chunk.
/// Ends at EOF, or once `exited` is true and nothing came for [`DRAIN_IDLE`]. Nothing to do
/// when either side is absent (a stream the caller did not ask for is `/dev/null`).
async fn copy_output<R: AsyncRead + Unpin>(
    from: Option<R>,
    to: Option<Writer>,
    mut exited: watch::Receiver<bool>,
    what: &str,
) -> io::Result<()> {
    let (Some(mut from), Some(mut to)) = (from, to) else {
        return Ok(());
    };
    let mut buf = vec![0u8; CHUNK];
    let mut after_exit = false;
    loop {
        let read = from.read(&mut buf);
        let n = if after_exit {
            match tokio::time::timeout(DRAIN_IDLE, read).await {
                Ok(r) => r,
                Err(_) => return Ok(()),
            }
        } else {
            tokio::select! {
                r = read => r,
                // Err: the sender is gone, which only happens once the exec is over anyway.
                _ = exited.wait_for(|e| *e) => {
                    after_exit = true;
                    continue;
                }
            }
        };
        let n = n.map_err(|e| io::Error::new(e.kind(), format!("reading the {what}: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        let written = async {
            to.write_all(&buf[..n]).await?;
            to.flush().await
        };
        written.await.map_err(|e| {
            io::Error::new(e.kind(), format!("writing the {what} to the client: {e}"))
        })?;
    }
}

/// Copies the caller's stdin to the command's until either ends; dropping `to` then closes the
/// command's stdin.
async fn copy_input(mut from: Reader, mut to: tokio::process::ChildStdin) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                // An error: the command closed its stdin or exited.
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "reading the client's stdin: taken as its end");
                return;
            }
        }
    }
}

/// Copies the caller's stdin into the terminal; at its end sends the terminal's EOF character
/// if the terminal is in canonical mode (twice after a partial line, as ^D must be pressed).
async fn copy_input_to_terminal(mut from: Reader, mut to: &PtyMaster) {
    let mut buf = vec![0u8; CHUNK];
    let mut last = b'\n';
    loop {
        match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                last = buf[n - 1];
            }
            Err(e) => {
                debug!(error = %e, "reading the client's stdin: taken as its end");
                break;
            }
        }
    }
    if let Some(eof) = to.canonical_eof() {
        let times = if last == b'\n' || last == eof { 1 } else { 2 };
        for _ in 0..times {
            if to.write_all(&[eof]).await.is_err() {
                return;
            }
        }
    }
}

/// Applies each size the caller sends to the terminal (if there is one) until the caller
/// stops sending.
async fn apply_sizes(sizes: Option<mpsc::Receiver<TerminalSize>>, terminal: Option<&PtyMaster>) {
    let Some(mut sizes) = sizes else {
        return;
    };
    while let Some(size) = sizes.recv().await {
        if let Some(t) = terminal {
            if let Err(e) = t.resize(size) {
                debug!(error = %e, ?size, "resizing the exec's terminal");
            }
        }
    }
}

/// The master side of a pseudo-terminal, non-blocking and registered with tokio. Reading it
/// gives EOF once no process has the slave open any more (the kernel's `EIO`).
struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self { fd: register(fd)? })
    }

    fn resize(&self, size: TerminalSize) -> io::Result<()> {
        rustix::termios::tcsetwinsize(
            self.fd.get_ref(),
            rustix::termios::Winsize {
                ws_row: size.height,
                ws_col: size.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        Ok(())
    }

    /// The terminal's EOF character if it is in canonical mode (where that character ends
    /// the reader's input), else `None`.
    fn canonical_eof(&self) -> Option<u8> {
        use rustix::termios::{LocalModes, SpecialCodeIndex};
        let t = rustix::termios::tcgetattr(self.fd.get_ref()).ok()?;
        t.local_modes
            .contains(LocalModes::ICANON)
            .then(|| t.special_codes[SpecialCodeIndex::VEOF])
    }
}

/// Registers an owned descriptor with tokio's reactor (tokio's safe `AsyncFd::new` is deprecated
/// as unsound for descriptors that are not owned; the unsafe `register` states the contract).
#[allow(unsafe_code)]
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register` needs the descriptor to stay open and the same for the AsyncFd's whole
    // life. The AsyncFd owns the OwnedFd, which closes it only when dropped with the AsyncFd,
    // and nothing here replaces it (`get_mut` is never called).
    Ok(unsafe { AsyncFd::register(fd) }?)
}

impl AsyncRead for &PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref().as_fd(), &mut *unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every descriptor of the slave is closed: the session is over.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for &PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(rustix::io::write(fd.get_ref().as_fd(), buf)?)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
