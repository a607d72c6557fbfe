//! Two threads of the runtime's own for its quick, frequent reads (lists, image status, stats).
//!
//! They could run on tokio's blocking pool like the slow operations (starting, stopping and
//! removing containers and sandboxes), but that pool keeps every thread it ever started alive as
//! long as tasks keep coming: an idle thread exits after 10 s without work, and waking idle
//! threads in turn means a steady trickle of reads (the relist every second, each pod's resync)
//! reaches every one of them before that. After a 50-pod start burst the agent kept 73 idle
//! threads that way (about 3.5 MiB of stacks). With the reads here, the blocking pool only sees
//! bursts and shrinks back after them.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use staticlet_runtime::{Result, RuntimeError};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running short blocking closures for async callers.
pub(crate) struct Readers {
    tx: mpsc::Sender<Job>,
}

impl Readers {
    pub(crate) fn new(threads: usize) -> Readers {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name("staticlet-read".into())
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        // A panicking read fails its caller (its answer channel is dropped),
                        // not the thread.
                        Ok(job) => drop(std::panic::catch_unwind(AssertUnwindSafe(job))),
                        Err(_) => return,
                    }
                });
            // Without a thread the jobs wait in the channel and callers get an error when
            // the runtime is dropped; the runtime still works if at least one thread started.
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a reader thread");
            }
        }
        Readers { tx }
    }

    /// Runs `f` on a reader thread and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let lost = |what: &str| RuntimeError::Failed {
            op: "runtime read",
            message: what.to_string(),
        };
        self.tx
            .send(job)
            .map_err(|_| lost("reader threads are gone"))?;
        rx.await.map_err(|_| lost("the read panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        let r = Readers::new(1);
        assert_eq!(r.run(|| Ok(41 + 1)).await.unwrap(), 42);
        let e = r
            .run::<()>(|| panic!("boom"))
            .await
            .expect_err("a panic is an error");
        assert!(e.to_string().contains("panicked"), "{e}");
        // The one thread is still there.
        assert_eq!(r.run(|| Ok("still")).await.unwrap(), "still");
        let errors = r
            .run::<()>(|| {
                Err(RuntimeError::Failed {
                    op: "x",
                    message: "y".into(),
                })
            })
            .await;
        assert!(errors.is_err());
    }
}
