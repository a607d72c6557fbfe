//! Container exits as events ([`staticlet_runtime::ContainerRuntime::subscribe_events`]), so an
//! agent sees a crash when it happens instead of at its next relist.
//!
//! A container's shim exits right after it has recorded the container's exit in `state.json`,
//! so "the shim exited" is the event. Two ways to learn it, one per container:
//! - a shim this process started is its own child: the task that reaps it reports the exit;
//! - a shim found running (after an agent restart: re-parented to init) is watched through a
//!   pidfd, checked against the start time in its record so that a reused pid is never taken
//!   for it; a pidfd becomes readable when the process exits.
//!
//! [`Exits::claim`] makes sure each container has at most one watcher; the watcher releases the
//! claim when it has reported. Events are hints: a receiver that lags or misses one still sees
//! the exit at its next relist.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use staticlet_runtime::ContainerEvent;
use tokio::sync::broadcast;

/// Enough for a burst of exits of many pods; a receiver that falls further behind is told it
/// lagged (and relists).
const CAPACITY: usize = 1024;

pub(crate) struct Exits {
    tx: broadcast::Sender<ContainerEvent>,
    /// Containers with a watcher (a reaping task or a pidfd task).
    watched: Mutex<HashSet<String>>,
}

impl Exits {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            watched: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.tx.subscribe()
    }

    /// Whether anyone listens (no need to read records for nobody).
    pub(crate) fn has_receivers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Claims the watch of container `id`: true if nobody watched it yet.
    pub(crate) fn claim(&self, id: &str) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        // Every relist asks for every running container: no allocation for the watched ones.
        !watched.contains(id) && watched.insert(id.to_string())
    }

    /// Ends the watch of `id` (its exit was reported, or it cannot be watched).
    pub(crate) fn release(&self, id: &str) {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Reports an exit (nobody listening is fine).
    pub(crate) fn send(&self, ev: ContainerEvent) {
        let _ = self.tx.send(ev);
    }
}

/// A pidfd for the shim of record `st` if it still runs. `None` if it is gone (or its pid is
/// another process's now).
pub(crate) fn open_shim(st: &staticlet_shim::ShimState) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(st.shim_pid)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()?;
    // Checked after opening: if the start time still matches, the pidfd refers to the shim (a
    // pid is reused only after its process is gone, and a new process starts later).
    staticlet_shim::client::shim_alive(st).then_some(fd)
}

/// Waits until the process of `fd` (from [`open_process`]) has exited.
pub(crate) async fn exited(fd: OwnedFd) -> std::io::Result<()> {
    let fd = crate::interactive::register(fd)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// The exit of a shim being stopped, waited for in steps: through its pidfd (`None`: it could
/// not be watched, and only the steps' deadlines wake the waiter).
pub(crate) struct ShimExit {
    exit: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    gone: bool,
}

impl ShimExit {
    pub(crate) fn new(fd: Option<OwnedFd>) -> ShimExit {
        ShimExit {
            exit: fd.map(|fd| {
                Box::pin(async move {
                    if exited(fd).await.is_err() {
                        // Cannot be watched after all: the steps' deadlines only.
                        std::future::pending::<()>().await;
                    }
                }) as _
            }),
            gone: false,
        }
    }

    /// Waits until the shim has exited or `until` passes; whether it has exited (at once when
    /// it had already).
    pub(crate) async fn wait_until(&mut self, until: tokio::time::Instant) -> bool {
        if self.gone {
            return true;
        }
        match &mut self.exit {
            Some(exit) => {
                if tokio::time::timeout_at(until, exit.as_mut()).await.is_ok() {
                    self.gone = true;
                    self.exit = None;
                }
            }
            None => tokio::time::sleep_until(until).await,
        }
        self.gone
    }
}
