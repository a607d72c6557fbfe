//! Health-gated updates with automatic rollback (beyond kubelet; issue 17).
//!
//! When a pod's manifest changes and a ready deadline applies (the pod's
//! `staticlet.io/ready-deadline` annotation, else `--rollout-ready-deadline`; off by default),
//! the new version must become Ready (all containers ready, readiness probes counted, and
//! continuously so for [`SETTLE`], as a Deployment's `minReadySeconds`, so that a container that
//! runs a moment before it crashes does not count) within the deadline, counted from when the new version is applied: it includes the old version's
//! termination and the new version's image pulls. Otherwise the new version is stopped, the last
//! version that was Ready is started again, a `RolledBack` event says why, and the failed
//! content is not tried again until the manifest changes.
//!
//! [`Rollout`] is the pure state machine of one pod (by full name): [`Rollout::step`] takes an
//! [`Input`] and returns the events to record; [`Rollout::running`] says which version runs.
//! [`controller`] is its async shell, between the merger and the pod manager: it feeds the
//! machine from the desired pods and the pods' statuses, publishes the pods to run, and keeps
//! each machine on disk ([`store`]), so a rollout in progress survives an agent restart (a
//! deadline that passed while the agent was down rolls back at once).
//!
//! ```text
//!            Wanted(h == good)                      Ready(h)
//!   Steady <───────────────────── Progressing ─────────────────> Steady (good = h)
//!                                                 (Ready for SETTLE)
//!     │ Wanted(h != good, deadline)   ▲  │ Tick(now >= deadline)
//!     └───────────────────────────────┘  └──> RolledBack { from: h, to: good or nothing }
//!                                              │ Wanted(h' != h): as from Steady
//! ```

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub mod controller;
pub mod store;

/// How long a version must stay Ready to count as Ready.
pub const SETTLE: Duration = Duration::from_secs(10);

/// A version of a pod: its manifest content hash, its UID, and when something happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    /// The SHA-256 of the manifest content.
    pub hash: String,
    pub uid: String,
    pub at: SystemTime,
}

/// The last version that was Ready, with its content, to start it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Good {
    pub hash: String,
    pub uid: String,
    /// The manifest content (for a URL's pod: its item as JSON).
    pub content: String,
    pub ready_at: SystemTime,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Phase {
    /// The wanted version runs; nothing is being checked.
    Steady,
    /// The wanted version was applied at `since` and must be Ready before `deadline`.
    Progressing {
        since: SystemTime,
        deadline: SystemTime,
    },
    /// The wanted version `from` was not Ready in time and is not run again until the manifest
    /// changes; the last Ready version `to` runs instead (nothing when it no longer validates).
    #[serde(rename_all = "camelCase")]
    RolledBack {
        from: String,
        to: Option<String>,
        reason: String,
        at: SystemTime,
    },
}

/// What runs for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The version the source wants.
    Wanted,
    /// The last Ready version ([`Rollout::good`]).
    Good,
    /// Nothing (the rollback target no longer validates).
    Nothing,
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// The source wants the version `hash` (UID `uid`); `deadline` is the one that applies to
    /// it (`None`: no check).
    Wanted {
        hash: &'a str,
        uid: &'a str,
        deadline: Option<Duration>,
        now: SystemTime,
    },
    /// The version `hash` runs and has been Ready since `since` (it counts once that is
    /// [`SETTLE`] ago); `content` is its manifest.
    Ready {
        hash: &'a str,
        uid: &'a str,
        content: &'a str,
        since: SystemTime,
        now: SystemTime,
    },
    /// The deadline passed ([`Rollout::due`]): `failure` is what the pod shows (the failing
    /// container and its probe output or exit reason), `target` whether the last Ready version
    /// still validates.
    Expired {
        now: SystemTime,
        failure: &'a str,
        target: Result<(), &'a str>,
    },
}

/// An event to record on the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The rollout state of one pod (by full name). Persisted as JSON by [`store`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `<name>_<namespace>`.
    pub full_name: String,
    /// The manifest file or URL.
    pub origin: String,
    /// Whether `origin` is a URL.
    #[serde(default)]
    pub url: bool,
    /// The version the source wants and when it was applied.
    pub wanted: Option<Stamp>,
    /// The last version that was Ready.
    pub good: Option<Good>,
    pub phase: Phase,
}

/// The first 12 hex digits of a content hash, as messages show it.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A duration as messages show it (`5m0s`, `90s`, `1.5s`): Go's style, whole units.
pub fn show(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 && s < 60 {
        return format!("{}s", d.as_secs_f64());
    }
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

impl Rollout {
    /// A new machine for the pod `full_name` from `origin`.
    pub fn new(full_name: impl Into<String>, origin: impl Into<String>, url: bool) -> Self {
        Self {
            full_name: full_name.into(),
            origin: origin.into(),
            url,
            wanted: None,
            good: None,
            phase: Phase::Steady,
        }
    }

    /// Which version runs.
    pub fn running(&self) -> Run {
        match &self.phase {
            Phase::RolledBack { to: Some(_), .. } => Run::Good,
            Phase::RolledBack { to: None, .. } => Run::Nothing,
            _ => Run::Wanted,
        }
    }

    /// The content hash of the version that runs.
    pub fn running_hash(&self) -> Option<&str> {
        match self.running() {
            Run::Wanted => self.wanted.as_ref().map(|w| w.hash.as_str()),
            Run::Good => self.good.as_ref().map(|g| g.hash.as_str()),
            Run::Nothing => None,
        }
    }

    /// When the deadline of a rollout in progress passes.
    pub fn deadline(&self) -> Option<SystemTime> {
        match self.phase {
            Phase::Progressing { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Whether the deadline has passed at `now` (feed [`Input::Expired`]).
    pub fn due(&self, now: SystemTime) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// The `rolled back from X to Y: reason` message, while rolled back.
    pub fn message(&self) -> Option<String> {
        match &self.phase {
            Phase::RolledBack {
                from, to, reason, ..
            } => Some(match to {
                Some(to) => format!(
                    "rolled back from {} to {}: {reason}",
                    short(from),
                    short(to)
                ),
                None => format!("stopped {}: {reason}", short(from)),
            }),
            _ => None,
        }
    }

    /// Applies one input; returns the events to record.
    pub fn step(&mut self, input: Input<'_>) -> Vec<Note> {
        match input {
            Input::Wanted {
                hash,
                uid,
                deadline,
                now,
            } => self.wanted(hash, uid, deadline, now),
            Input::Ready {
                hash,
                uid,
                content,
                since,
                now,
            } => {
                if now.duration_since(since).unwrap_or_default() < SETTLE {
                    return vec![];
                }
                self.ready(hash, uid, content, now)
            }
            Input::Expired {
                now,
                failure,
                target,
            } => self.expired(now, failure, target),
        }
    }

    fn wanted(
        &mut self,
        hash: &str,
        uid: &str,
        deadline: Option<Duration>,
        now: SystemTime,
    ) -> Vec<Note> {
        // The same version again (a relist, an agent restart): nothing changes, so a rolled
        // back version is not retried and a rollout's deadline keeps counting.
        if self.wanted.as_ref().is_some_and(|w| w.hash == hash) {
            return vec![];
        }
        self.wanted = Some(Stamp {
            hash: hash.to_string(),
            uid: uid.to_string(),
            at: now,
        });
        let good = self.good.as_ref().map(|g| g.hash.clone());
        match (good, deadline.filter(|d| !d.is_zero())) {
            // Back to the last Ready version (e.g. the edit was reverted), or no check.
            (Some(g), _) if g == hash => {
                self.phase = Phase::Steady;
                vec![]
            }
            (Some(g), Some(d)) => {
                self.phase = Phase::Progressing {
                    since: now,
                    deadline: now + d,
                };
                vec![Note {
                    type_: "Normal",
                    reason: "Updating",
                    message: format!(
                        "applying version {} (the last Ready version is {}): it must be Ready within {}",
                        short(hash),
                        short(&g),
                        show(d)
                    ),
                }]
            }
            // No deadline, or no version was ever Ready (nothing to go back to).
            _ => {
                self.phase = Phase::Steady;
                vec![]
            }
        }
    }

    fn ready(&mut self, hash: &str, uid: &str, content: &str, now: SystemTime) -> Vec<Note> {
        let is_wanted = self.wanted.as_ref().is_some_and(|w| w.hash == hash);
        if !is_wanted || self.running() != Run::Wanted {
            // The good version running after a rollback, or a version on its way out.
            return vec![];
        }
        if self.good.as_ref().is_none_or(|g| g.hash != hash) {
            self.good = Some(Good {
                hash: hash.to_string(),
                uid: uid.to_string(),
                content: content.to_string(),
                ready_at: now,
            });
        }
        match std::mem::replace(&mut self.phase, Phase::Steady) {
            Phase::Progressing { since, .. } => vec![Note {
                type_: "Normal",
                reason: "Updated",
                message: format!(
                    "version {} is Ready after {}",
                    short(hash),
                    show(Duration::from_secs(
                        now.duration_since(since).unwrap_or_default().as_secs()
                    ))
                ),
            }],
            _ => vec![],
        }
    }

    fn expired(&mut self, now: SystemTime, failure: &str, target: Result<(), &str>) -> Vec<Note> {
        let Phase::Progressing { since, deadline } = self.phase else {
            return vec![];
        };
        if now < deadline {
            return vec![];
        }
        let (Some(wanted), Some(good)) = (&self.wanted, &self.good) else {
            return vec![];
        };
        let within = show(deadline.duration_since(since).unwrap_or_default());
        let reason = format!("not Ready within {within}: {failure}");
        let (to, reason) = match target {
            Ok(()) => (Some(good.hash.clone()), reason),
            Err(e) => (
                None,
                format!(
                    "{reason}; the last Ready version {} no longer validates ({e}): nothing runs",
                    short(&good.hash)
                ),
            ),
        };
        self.phase = Phase::RolledBack {
            from: wanted.hash.clone(),
            to,
            reason,
            at: now,
        };
        vec![Note {
            type_: "Warning",
            reason: "RolledBack",
            message: self.message().unwrap_or_default(),
        }]
    }
}

#[cfg(test)]
mod tests;
