//! The node's shutdown as systemd-logind announces it (kubelet's `nodeshutdown/systemd`): a
//! *delay* inhibitor lock on `shutdown` held while the node runs, logind's
//! `PrepareForShutdown(true)` turned into [`ShutdownEvent::Shutdown`] for the agent, the lock
//! released once the agent has stopped the pods, and taken again when a shutdown is cancelled
//! (`PrepareForShutdown(false)`).
//!
//! logind lets a delay lock hold a shutdown for at most its `InhibitDelayMaxUSec` (5 s by
//! default). As kubelet does, when that is shorter than the time the pods are given, a drop-in
//! raising `InhibitDelayMaxSec` is written and logind is told to reload (systemd's `KillUnit`
//! with SIGHUP). If logind still allows less, staticlet warns and keeps the lock: the pods get
//! what logind allows (kubelet gives up on graceful shutdown altogether then).
//!
//! The system bus is `DBUS_SYSTEM_BUS_ADDRESS` when set (tests run a bus of their own). Without
//! a bus or logind the agent runs on without graceful shutdown, retrying the connection now
//! and then and saying why once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use staticlet_agent::nodeshutdown::ShutdownEvent;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where kubelet writes its override; staticlet writes its own file beside it.
pub const LOGIND_DROPIN_DIR: &str = "/etc/systemd/logind.conf.d";
pub const LOGIND_DROPIN: &str = "99-staticlet.conf";

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Logind {
    fn inhibit(
        &self,
        what: &str,
        who: &str,
        why: &str,
        mode: &str,
    ) -> zbus::Result<zbus::zvariant::OwnedFd>;

    #[zbus(signal)]
    fn prepare_for_shutdown(&self, start: bool) -> zbus::Result<()>;

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Systemd {
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
}

/// The drop-in that raises logind's limit to `delay` (whole seconds, rounded up).
pub fn dropin(delay: Duration) -> String {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    format!("# Written by staticlet: time for graceful node shutdown (shutdownGracePeriod).\n[Login]\nInhibitDelayMaxSec={secs}\n")
}

/// Watches for the node's shutdown until `stop`; see the module documentation. `requested` is
/// the whole time the pods are given (the agent's `ShutdownPolicy::requested`).
pub async fn watch(
    requested: Duration,
    events: mpsc::Sender<ShutdownEvent>,
    stop: CancellationToken,
) {
    let dropin_dir = PathBuf::from(LOGIND_DROPIN_DIR);
    let mut last_error = String::new();
    let mut retry = Duration::from_secs(1);
    loop {
        let served = tokio::select! {
            _ = stop.cancelled() => return,
            r = serve(requested, &dropin_dir, &events, &stop) => r,
        };
        match served {
            Ok(()) => return,
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last_error {
                    warn!(error = %msg, retry = ?retry, "graceful node shutdown is not armed (shutdownGracePeriod): retrying");
                    last_error = msg;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(60));
    }
}

/// One connection's life: returns `Ok` only at `stop` (or when the agent is gone).
async fn serve(
    requested: Duration,
    dropin_dir: &Path,
    events: &mpsc::Sender<ShutdownEvent>,
    stop: &CancellationToken,
) -> Result<()> {
    let conn = zbus::Connection::system()
        .await
        .context("connecting to the system D-Bus")?;
    let logind = LogindProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .context("reaching systemd-logind")?;
    let delay = current_delay(&logind).await?;
    if requested > delay {
        raise_delay(&conn, &logind, requested, delay, dropin_dir).await;
    }
    let mut signals = logind
        .receive_prepare_for_shutdown()
        .await
        .context("subscribing to logind's PrepareForShutdown")?;
    let mut lock = Some(inhibit(&logind).await?);
    info!(period = ?requested, "graceful node shutdown armed: holding a logind delay lock");
    loop {
        let signal = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            s = signals.next() => s,
        };
        let Some(signal) = signal else {
            bail!("logind's PrepareForShutdown signal stream ended");
        };
        let start = match signal.args() {
            Ok(a) => a.start,
            Err(e) => {
                warn!(error = %e, "ignoring a PrepareForShutdown signal without a boolean");
                continue;
            }
        };
        if start {
            info!("logind: the node is shutting down; stopping the pods");
            let (done_tx, done_rx) = oneshot::channel();
            if events
                .send(ShutdownEvent::Shutdown { done: done_tx })
                .await
                .is_err()
            {
                return Ok(()); // the agent is gone
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = done_rx => {}
            }
            // Closing the lock's descriptor lets the shutdown go on.
            drop(lock.take());
            info!("pods stopped: released logind's delay lock");
        } else {
            info!("logind: shutdown cancelled");
            if lock.is_none() {
                lock = Some(inhibit(&logind).await?);
            }
            if events.send(ShutdownEvent::Cancelled).await.is_err() {
                return Ok(());
            }
        }
    }
}

async fn current_delay(logind: &LogindProxy<'_>) -> Result<Duration> {
    let usec = logind
        .inhibit_delay_max_usec()
        .await
        .context("reading logind's InhibitDelayMaxUSec")?;
    Ok(Duration::from_micros(usec))
}

async fn inhibit(logind: &LogindProxy<'_>) -> Result<zbus::zvariant::OwnedFd> {
    logind
        .inhibit(
            "shutdown",
            "staticlet",
            "staticlet stops the static pods before the node shuts down",
            "delay",
        )
        .await
        .context("taking logind's delay inhibitor lock")
}

/// Raises logind's limit as kubelet does; warns when it stays short.
async fn raise_delay(
    conn: &zbus::Connection,
    logind: &LogindProxy<'_>,
    requested: Duration,
    delay: Duration,
    dropin_dir: &Path,
) {
    let path = dropin_dir.join(LOGIND_DROPIN);
    let written = std::fs::create_dir_all(dropin_dir)
        .and_then(|()| std::fs::write(&path, dropin(requested)))
        .with_context(|| format!("writing {}", path.display()));
    let reloaded = match written {
        Err(e) => Err(e),
        Ok(()) => async {
            SystemdProxy::new(conn)
                .await?
                .kill_unit("systemd-logind.service", "all", libc::SIGHUP)
                .await
        }
        .await
        .context("asking systemd to reload logind"),
    };
    let now = match reloaded {
        Ok(()) => current_delay(logind).await.unwrap_or(delay),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot raise logind's InhibitDelayMaxSec");
            delay
        }
    };
    if requested > now {
        warn!(
            allowed = ?now,
            requested = ?requested,
            "logind's InhibitDelayMaxSec is shorter than the shutdown grace period: the pods get only what logind allows"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropin_rounds_up_to_whole_seconds() {
        assert!(dropin(Duration::from_secs(30)).ends_with("[Login]\nInhibitDelayMaxSec=30\n"));
        assert!(dropin(Duration::from_millis(30_500)).ends_with("InhibitDelayMaxSec=31\n"));
    }
}
