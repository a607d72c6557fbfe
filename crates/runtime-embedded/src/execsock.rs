//! `ExecSync` through the container's shim: the command runs in a child the shim forks
//! ([`staticlet_shim::exec::EXEC_SOCKET`] has the protocol), so no helper binary is exec'd per
//! command (probes run often: that exec was ~1.5–1.9 ms of CPU each on a small VM).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;
use staticlet_shim::exec::{
    exec_outcome, exec_request, send_exec_request, EXEC_SOCKET, MAX_SHIM_EXECS,
};
use staticlet_shim::ExecOutput;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;

/// Runs `cmd` in the container whose shim has its state in `dir`, killed after `timeout`.
/// `None` if the shim has no exec socket (one started by an earlier version, or a container
/// that is not running): the caller falls back to the helper, which also says which it is.
pub(crate) async fn exec_sync(
    dir: &Path,
    cmd: &[String],
    timeout: Duration,
) -> Option<io::Result<ExecOutput>> {
    let request = match exec_request(cmd, &[], timeout) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let sock = match crate::attach::connect_to(dir, EXEC_SOCKET).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return None
        }
        Err(e) => return Some(Err(e)),
    };
    Some(run(sock, &request, timeout).await)
}

async fn run(
    mut sock: tokio::net::UnixStream,
    request: &[u8],
    timeout: Duration,
) -> io::Result<ExecOutput> {
    let started = tokio::time::Instant::now();
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let sent = loop {
        sock.writable().await?;
        match sock.try_io(Interest::WRITABLE, || {
            send_exec_request(sock.as_fd(), request, out_w.as_fd(), err_w.as_fd())
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(refused(e)),
        }
    };
    // The shim's child holds the write ends now: EOF on the pipes once the command (and
    // whatever it left behind) closed them.
    drop((out_w, err_w));
    sock.write_all(&request[sent..]).await.map_err(refused)?;
    let mut out = pipe::Receiver::from_owned_fd(out_r)?;
    let mut err = pipe::Receiver::from_owned_fd(err_r)?;
    // The shim's child kills the command at `timeout`; this deadline only guards against a
    // child that hangs itself.
    let hard = timeout + Duration::from_secs(10);
    let code = async {
        let mut b = [0u8; 4];
        sock.read_exact(&mut b).await.map(|_| i32::from_be_bytes(b))
    };
    let run = crate::collect_output(Some(&mut out), Some(&mut err), code);
    let (code, stdout, stderr) = match tokio::time::timeout(hard, run).await {
        Ok((Ok(code), stdout, stderr)) => (code, stdout, stderr),
        Ok((Err(e), ..)) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(refused(e)),
        Ok((Err(e), ..)) => return Err(e),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the shim's exec child did not finish within {hard:?}"),
            ))
        }
    };
    exec_outcome(code, stdout, stderr, started.elapsed(), timeout)
}

/// The shim closed the connection without a result: it refused the command (it runs at most
/// [`MAX_SHIM_EXECS`] at a time) or the child serving it failed (the shim's log says why).
fn refused(e: io::Error) -> io::Error {
    io::Error::other(format!(
        "the container's shim ran no command ({e}): at most {MAX_SHIM_EXECS} run at a time \
         per container, or see its shim.log"
    ))
}
