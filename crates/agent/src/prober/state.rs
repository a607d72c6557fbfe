//! The pure per-container, per-kind probe state machine (≈ kubelet `pkg/kubelet/prober/worker.go`
//! `doProbe`, minus its I/O).
//!
//! No I/O and no clock reads: every method that needs the time takes it. One [`ProbeState`]
//! lives as long as one container *instance* (one runtime container id); a new instance gets a
//! new state, which is how kubelet's worker resets when it sees a new container id.
//!
//! kubelet semantics kept here:
//! - initial results: readiness `Failure` (not ready until a first success), liveness `Success`,
//!   startup `Unknown`;
//! - the first attempt is due `initialDelaySeconds` after the container started, then one every
//!   `periodSeconds` (measured from the start of the previous attempt, like kubelet's ticker);
//! - `successThreshold` / `failureThreshold` consecutive equal outcomes change the result; an
//!   outcome below its threshold leaves the result as it was;
//! - a prober *error* (not a failure: e.g. the runtime could not run the exec at all) is thrown
//!   away: no result change, the run counters are untouched;
//! - liveness and startup go on hold after reaching `Failure` (the container is about to be
//!   killed; probing resumes only for a new container instance, i.e. a new `ProbeState`);
//! - startup is never run again once it succeeded for this instance.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Probe;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// kubelet's spelling in events and logs (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The result a new container instance starts with.
    pub fn initial_result(self) -> ProbeResult {
        match self {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settled result of a probe (kubelet `results.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Success,
    Failure,
    Unknown,
}

/// What one attempt gave, as the state machine sees it (see [`super::handler::ProbeOutcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Success,
    Failure,
    /// The probe could not be run; the attempt is thrown away.
    Error,
}

/// A change of [`ProbeState::result`] caused by [`ProbeState::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: ProbeResult,
    pub to: ProbeResult,
}

/// The timing and thresholds of a probe, with the API defaults (`SetDefaults_Probe`) applied
/// to unset or zero fields, so a spec that skipped defaulting still behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Probe-level `terminationGracePeriodSeconds` (liveness and startup only).
    pub termination_grace_period_seconds: Option<i64>,
}

impl ProbeTiming {
    /// The timing of `probe`, defaults applied.
    pub fn of(probe: &Probe) -> Self {
        fn secs(v: Option<i32>, default: u64) -> Duration {
            match v {
                Some(n) if n > 0 => Duration::from_secs(n as u64),
                _ => Duration::from_secs(default),
            }
        }
        fn count(v: Option<i32>, default: u32) -> u32 {
            match v {
                Some(n) if n > 0 => n as u32,
                _ => default,
            }
        }
        Self {
            initial_delay: Duration::from_secs(
                probe.initial_delay_seconds.unwrap_or(0).max(0) as u64
            ),
            period: secs(probe.period_seconds, 10),
            timeout: secs(probe.timeout_seconds, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
            termination_grace_period_seconds: probe.termination_grace_period_seconds,
        }
    }
}

/// The state of one probe of one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    timing: ProbeTiming,
    started_at: SystemTime,
    result: ProbeResult,
    /// The last non-error attempt and how many times in a row it came.
    last: Option<Attempt>,
    run: u32,
    /// When the last attempt began.
    last_attempt: Option<SystemTime>,
    /// Liveness/startup reached Failure: no more attempts for this instance.
    on_hold: bool,
    /// Stopped for good (startup succeeded, or stopped on termination).
    stopped: bool,
}

impl ProbeState {
    /// A fresh state for a container instance that started (`state.running.startedAt`) at
    /// `container_started_at`.
    pub fn new(probe: &Probe, kind: ProbeKind, container_started_at: SystemTime) -> Self {
        Self::with_timing(ProbeTiming::of(probe), kind, container_started_at)
    }

    /// Like [`new`](Self::new), from an already-extracted timing.
    pub fn with_timing(timing: ProbeTiming, kind: ProbeKind, started_at: SystemTime) -> Self {
        Self {
            kind,
            timing,
            started_at,
            result: kind.initial_result(),
            last: None,
            run: 0,
            last_attempt: None,
            on_hold: false,
            stopped: false,
        }
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    pub fn timing(&self) -> &ProbeTiming {
        &self.timing
    }

    /// The current settled result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Whether this probe will run again for this instance.
    pub fn active(&self) -> bool {
        !self.on_hold && !self.stopped
    }

    /// When the next attempt should begin: `None` if never again for this instance, otherwise a
    /// time that is never before `now` (`== now` means "run now").
    pub fn due(&self, now: SystemTime) -> Option<SystemTime> {
        if !self.active() {
            return None;
        }
        let first = self.started_at + self.timing.initial_delay;
        let at = match self.last_attempt {
            None => first,
            Some(last) => (last + self.timing.period).max(first),
        };
        Some(at.max(now))
    }

    /// Records an attempt that began at `at`; returns the result change it caused, if any.
    pub fn record(&mut self, attempt: Attempt, at: SystemTime) -> Option<Transition> {
        if !self.active() {
            return None;
        }
        self.last_attempt = Some(at);
        let outcome = match attempt {
            Attempt::Error => return None,
            Attempt::Success => ProbeResult::Success,
            Attempt::Failure => ProbeResult::Failure,
        };
        if self.last == Some(attempt) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(attempt);
            self.run = 1;
        }
        let threshold = match attempt {
            Attempt::Success => self.timing.success_threshold,
            _ => self.timing.failure_threshold,
        };
        if self.run < threshold {
            return None;
        }
        let from = self.result;
        self.result = outcome;
        match (self.kind, outcome) {
            (ProbeKind::Liveness | ProbeKind::Startup, ProbeResult::Failure) => {
                self.on_hold = true;
                self.run = 0;
            }
            (ProbeKind::Startup, ProbeResult::Success) => self.stopped = true,
            _ => {}
        }
        (from != outcome).then_some(Transition { from, to: outcome })
    }

    /// Stops the probe for good, leaving `result` as given (kubelet sets liveness and startup
    /// to `Success` when the pod is being deleted, "to ensure quiet shutdown").
    pub fn stop_with(&mut self, result: ProbeResult) -> Option<Transition> {
        self.stopped = true;
        let from = std::mem::replace(&mut self.result, result);
        (from != result).then_some(Transition { from, to: result })
    }

    /// Forces the result (kubelet sets readiness to `Failure` for a container that is not
    /// running). Does not change the run counters.
    pub fn force(&mut self, result: ProbeResult) -> Option<Transition> {
        let from = std::mem::replace(&mut self.result, result);
        (from != result).then_some(Transition { from, to: result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Attempt = Attempt::Success;
    const F: Attempt = Attempt::Failure;
    const E: Attempt = Attempt::Error;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn at(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            timeout_seconds: Some(1),
            ..Default::default()
        }
    }

    use ProbeResult::{Failure as RF, Success as RS, Unknown as RU};

    #[test]
    fn defaults_apply_to_unset_and_zero_fields() {
        let t = ProbeTiming::of(&Probe {
            period_seconds: Some(0),
            ..Default::default()
        });
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(t.termination_grace_period_seconds, None);
    }

    #[test]
    fn initial_results_per_kind() {
        let p = probe(0, 10, 1, 3);
        assert_eq!(ProbeState::new(&p, ProbeKind::Liveness, t0()).result(), RS);
        assert_eq!(ProbeState::new(&p, ProbeKind::Readiness, t0()).result(), RF);
        assert_eq!(ProbeState::new(&p, ProbeKind::Startup, t0()).result(), RU);
    }

    #[test]
    fn due_follows_initial_delay_then_period() {
        let mut s = ProbeState::new(&probe(5, 10, 1, 3), ProbeKind::Readiness, t0());
        assert_eq!(s.due(at(0)), Some(at(5)));
        // Overdue: "now".
        assert_eq!(s.due(at(7)), Some(at(7)));
        s.record(S, at(7));
        assert_eq!(s.due(at(8)), Some(at(17)));
        // A slow attempt does not shift the schedule beyond "now".
        s.record(F, at(17));
        assert_eq!(s.due(at(30)), Some(at(30)));
    }

    struct Case {
        name: &'static str,
        kind: ProbeKind,
        success: i32,
        failure: i32,
        /// (attempt, expected result after it, expected transition target)
        steps: &'static [(Attempt, ProbeResult, Option<ProbeResult>)],
        /// Whether the probe is still active at the end.
        active: bool,
    }

    #[test]
    fn threshold_table() {
        let cases = [
            Case {
                name: "readiness: not ready until first success",
                kind: ProbeKind::Readiness,
                success: 1,
                failure: 3,
                steps: &[(F, RF, None), (S, RS, Some(RS))],
                active: true,
            },
            Case {
                name: "readiness: success threshold 2",
                kind: ProbeKind::Readiness,
                success: 2,
                failure: 3,
                steps: &[
                    (S, RF, None),
                    (F, RF, None),
                    (S, RF, None),
                    (S, RS, Some(RS)),
                ],
                active: true,
            },
            Case {
                name: "readiness: failure threshold 3 then recovery",
                kind: ProbeKind::Readiness,
                success: 1,
                failure: 3,
                steps: &[
                    (S, RS, Some(RS)),
                    (F, RS, None),
                    (F, RS, None),
                    (S, RS, None),
                    (F, RS, None),
                    (F, RS, None),
                    (F, RF, Some(RF)),
                    (F, RF, None),
                    (S, RS, Some(RS)),
                ],
                active: true,
            },
            Case {
                name: "readiness: errors are thrown away and do not break a run",
                kind: ProbeKind::Readiness,
                success: 1,
                failure: 2,
                steps: &[
                    (S, RS, Some(RS)),
                    (F, RS, None),
                    (E, RS, None),
                    (F, RF, Some(RF)),
                ],
                active: true,
            },
            Case {
                name: "liveness: starts healthy, holds after failure threshold",
                kind: ProbeKind::Liveness,
                success: 1,
                failure: 2,
                steps: &[
                    (F, RS, None),
                    (S, RS, None),
                    (F, RS, None),
                    (F, RF, Some(RF)),
                ],
                active: false,
            },
            Case {
                name: "liveness: nothing recorded once on hold",
                kind: ProbeKind::Liveness,
                success: 1,
                failure: 1,
                steps: &[(F, RF, Some(RF)), (S, RF, None)],
                active: false,
            },
            Case {
                name: "startup: unknown until success, then stops",
                kind: ProbeKind::Startup,
                success: 1,
                failure: 3,
                steps: &[
                    (F, RU, None),
                    (F, RU, None),
                    (S, RS, Some(RS)),
                    (F, RS, None),
                ],
                active: false,
            },
            Case {
                name: "startup: failure threshold fails the container",
                kind: ProbeKind::Startup,
                success: 1,
                failure: 2,
                steps: &[(F, RU, None), (F, RF, Some(RF))],
                active: false,
            },
        ];
        for c in cases {
            let mut s = ProbeState::new(&probe(0, 1, c.success, c.failure), c.kind, t0());
            for (i, (attempt, result, transition)) in c.steps.iter().enumerate() {
                let tr = s.record(*attempt, at(i as u64));
                assert_eq!(
                    tr.map(|t| t.to),
                    *transition,
                    "{}: transition at step {i}",
                    c.name
                );
                assert_eq!(s.result(), *result, "{}: result at step {i}", c.name);
            }
            assert_eq!(s.active(), c.active, "{}: active", c.name);
            if !c.active {
                assert_eq!(s.due(at(100)), None, "{}: due", c.name);
            }
        }
    }

    #[test]
    fn stop_with_sets_result_and_stops() {
        let mut s = ProbeState::new(&probe(0, 1, 1, 3), ProbeKind::Startup, t0());
        assert_eq!(s.stop_with(RS), Some(Transition { from: RU, to: RS }));
        assert_eq!(s.due(at(5)), None);
        assert_eq!(s.record(F, at(5)), None);
        assert_eq!(s.result(), RS);
    }

    #[test]
    fn force_keeps_counters() {
        let mut s = ProbeState::new(&probe(0, 1, 1, 2), ProbeKind::Readiness, t0());
        s.record(S, at(0));
        assert_eq!(s.force(RF).map(|t| t.to), Some(RF));
        assert!(s.active());
    }
}
