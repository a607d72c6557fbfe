//! Port forwarding (`kubectl port-forward`): a TCP connection to a port on the loopback address
//! of a sandbox's network namespace, the pod's own `localhost`.
//!
//! A socket belongs to the network namespace it was created in, whichever thread uses it later.
//! So a short-lived thread of its own joins the sandbox's pinned namespace (`setns` on its
//! bind-mounted file; unlike the mount namespace, a thread of a multi-threaded process may
//! switch network namespaces), creates the sockets there and ends; the connection itself is
//! made on the async executor. The thread is never one of tokio's pooled threads, which would
//! stay in the pod's namespace for every later task. A hostNetwork sandbox has no namespace of
//! its own: its loopback is the host's, which is the agent's.
//!
//! As containerd does, `127.0.0.1` is tried first, then `::1` when nothing listens on IPv4
//! (a server bound to the IPv6 loopback only).

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// How long a connection may take (a listener whose backlog is full lets the SYN wait).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `port` on the loopback of the network namespace pinned at `netns` (`None`: the
/// agent's own, for hostNetwork sandboxes).
pub(crate) async fn connect(netns: Option<&Path>, port: u16) -> io::Result<TcpStream> {
    let (v4, v6) = match netns {
        None => (TcpSocket::new_v4()?, TcpSocket::new_v6().ok()),
        Some(path) => sockets_in(path.to_path_buf()).await?,
    };
    let attempt = |socket: TcpSocket, addr: SocketAddr| async move {
        match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            )),
        }
    };
    let refused = match attempt(v4, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
        Ok(s) => return Ok(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => e,
        Err(e) => return Err(e),
    };
    if let Some(v6) = v6 {
        if let Ok(s) = attempt(v6, SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            return Ok(s);
        }
    }
    Err(refused)
}

/// An IPv4 and (if the namespace has IPv6) an IPv6 TCP socket created in the network namespace
/// pinned at `netns`, by a thread that exits right after.
async fn sockets_in(netns: PathBuf) -> io::Result<(TcpSocket, Option<TcpSocket>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-socket".into())
        .spawn(move || {
            let made = (|| -> io::Result<_> {
                let ns = File::open(&netns).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", netns.display()))
                })?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::other(format!("joining {}: {e}", netns.display())))?;
                Ok((TcpSocket::new_v4()?, TcpSocket::new_v6().ok()))
            })();
            // This thread is now in the pod's network namespace: it ends here.
            let _ = tx.send(made);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))?
}
