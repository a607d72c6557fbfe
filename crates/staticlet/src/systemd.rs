//! `staticlet run` as a systemd service (`Type=notify`, packaging/systemd/staticlet.service):
//! the sd_notify protocol, when systemd gives the agent a `NOTIFY_SOCKET`.
//!
//! - `READY=1` once every pod source was read and every pod found is adopted or started
//!   ([`staticlet_agent::startup`]), so that units ordered after staticlet start when the static
//!   pods run, and `systemctl start` returns then; `STATUS=` shows the pod counts as they change.
//! - `WATCHDOG=1` at half of `WatchdogSec` while the pod manager's loop is alive (its heartbeat,
//!   at every relist, is younger than the watchdog interval): a stuck agent is not pinged and
//!   systemd restarts it (containers survive that, as any restart).
//! - `RELOADING=1` before a reload (SIGHUP, see `run`), `STOPPING=1` at shutdown.
//!
//! Nothing is sent without `NOTIFY_SOCKET`; a failed send is logged at debug level and never
//! stops the agent.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use staticlet_agent::config::merge::DesiredPods;
use staticlet_agent::pod_workers::PodsView;
use staticlet_agent::startup::{self, StartupProgress};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Whether systemd listens (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd a reload begins (the process then replaces itself and signals `READY=1`
/// again).
pub fn reloading() {
    if enabled() {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }
}

/// Tells systemd why a reload was refused; the agent keeps running as it was.
pub fn reload_refused(why: &str) {
    if enabled() {
        send(&[NotifyState::Status(&format!("reload refused: {why}"))]);
    }
}

/// Tells systemd the agent is up but waiting for a file (kubeadm's config, see `kubeadm.rs`):
/// `READY=1`, so that `systemctl start` returns, and the reason as `STATUS=`.
pub fn waiting(status: &str) {
    if enabled() {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
}

/// Tells systemd why the agent stops with an error (shown by `systemctl status`).
pub fn failed(why: &str) {
    if enabled() {
        send(&[NotifyState::Status(&format!("failed: {why}"))]);
    }
}

/// What to tell systemd as the start progresses: `READY=1` once, then `STATUS=` lines when
/// they change. Pure: the messages for a progress, given what was sent before.
#[derive(Debug, Default)]
pub struct Readiness {
    ready_sent: bool,
    last_status: String,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ready,
    Status(String),
}

impl Readiness {
    pub fn step(&mut self, p: &StartupProgress) -> Vec<Message> {
        let mut out = Vec::new();
        let status = p.status_line();
        if status != self.last_status {
            self.last_status = status.clone();
            out.push(Message::Status(status));
        }
        if !self.ready_sent && p.done() {
            self.ready_sent = true;
            out.push(Message::Ready);
        }
        out
    }
}

/// Whether the watchdog may be pinged: the pod manager's heartbeat is younger than the
/// watchdog interval.
pub fn alive(heartbeat: Instant, now: Instant, interval: Duration) -> bool {
    now.saturating_duration_since(heartbeat) < interval
}

/// Runs until `shutdown` when systemd listens: readiness, status and watchdog (module doc).
pub async fn notify(
    mut desired: watch::Receiver<Arc<DesiredPods>>,
    mut pods: watch::Receiver<Arc<PodsView>>,
    heartbeat: watch::Receiver<Instant>,
    shutdown: CancellationToken,
) {
    if !enabled() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(w) = watchdog {
        info!(interval = ?w, "systemd watchdog: pinging at half the interval while the pod manager runs");
    }
    let mut ping = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut readiness = Readiness::default();
    let mut stale_reported = false;
    loop {
        let progress = startup::progress(&desired.borrow_and_update(), &pods.borrow_and_update());
        for m in readiness.step(&progress) {
            match m {
                Message::Ready => {
                    info!(status = %progress.status_line(), "ready: every pod found at start is adopted or started");
                    send(&[NotifyState::Ready]);
                }
                Message::Status(s) => send(&[NotifyState::Status(&s)]),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                send(&[NotifyState::Stopping]);
                return;
            }
            r = desired.changed() => if r.is_err() { return },
            r = pods.changed() => if r.is_err() { return },
            _ = ping.tick(), if watchdog.is_some() => {
                let interval = watchdog.unwrap_or_default();
                if alive(*heartbeat.borrow(), Instant::now(), interval) {
                    send(&[NotifyState::Watchdog]);
                    stale_reported = false;
                } else if !stale_reported {
                    warn!("the pod manager has not listed the runtime within the watchdog interval; not pinging systemd's watchdog");
                    stale_reported = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(seen: bool, wanted: usize, settled: usize, running: usize) -> StartupProgress {
        StartupProgress {
            sources_seen: seen,
            wanted,
            settled,
            running,
        }
    }

    #[test]
    fn ready_once_when_settled_and_status_only_on_change() {
        let mut r = Readiness::default();
        assert_eq!(
            r.step(&progress(false, 0, 0, 0)),
            vec![Message::Status("reading pod sources".into())]
        );
        assert_eq!(r.step(&progress(false, 0, 0, 0)), vec![]);
        assert_eq!(
            r.step(&progress(true, 2, 1, 1)),
            vec![Message::Status("2 pods, 1 running, 1 starting".into())]
        );
        assert_eq!(
            r.step(&progress(true, 2, 2, 1)),
            vec![Message::Status("2 pods, 1 running".into()), Message::Ready]
        );
        assert_eq!(
            r.step(&progress(true, 2, 2, 2)),
            vec![Message::Status("2 pods, 2 running".into())],
            "READY=1 is sent once"
        );
        assert_eq!(
            r.step(&progress(true, 3, 2, 2)),
            vec![Message::Status("3 pods, 2 running, 1 starting".into())],
            "a pod added later changes the status, not the readiness"
        );
    }

    #[test]
    fn the_watchdog_is_pinged_only_while_the_heartbeat_is_fresh() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert!(alive(t0, t0 + Duration::from_secs(3), w));
        assert!(!alive(t0, t0 + Duration::from_secs(10), w));
        assert!(
            alive(t0 + Duration::from_secs(1), t0, w),
            "clock skew is no staleness"
        );
    }
}
