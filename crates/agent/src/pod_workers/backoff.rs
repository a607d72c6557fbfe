//! kubelet's exponential back-off (`k8s.io/client-go/util/flowcontrol.Backoff`), without jitter.
//!
//! Used for container restarts (10 s doubling to 300 s) and image pulls (same numbers). An entry
//! expires when the event it is asked about is more than twice the maximum after its last update
//! (600 s), which is how a container that ran for 10 minutes gets its back-off reset. A pod may
//! choose its own three numbers ([`staticlet_manifest::extensions::BackoffPolicy`]).
//! Pure: every method takes the time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// kubelet's `containerBackOffPeriod` / `imageBackOffPeriod`.
pub const INITIAL: Duration = Duration::from_secs(10);
/// kubelet's `MaxContainerBackOff` / `MaxImageBackOff`.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Back-off state per key.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// An entry expires this long after its last update.
    reset_after: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// A back-off starting at `initial`, doubling up to `max`, reset twice `max` after its last
    /// update (kubelet's).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_reset(initial, max, max * 2)
    }

    /// A back-off starting at `initial`, doubling up to `max`, reset `reset_after` after its
    /// last update.
    pub fn with_reset(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial: initial.min(max),
            max,
            reset_after,
            entries: HashMap::new(),
        }
    }

    /// A pod's container restart back-off.
    pub fn from_policy(p: &staticlet_manifest::extensions::BackoffPolicy) -> Self {
        Self::with_reset(p.initial, p.max, p.reset_after)
    }

    fn expired(&self, event: SystemTime, e: &Entry) -> bool {
        event.duration_since(e.last_update).unwrap_or_default() > self.reset_after
    }

    /// Records one more retry of `key` at `now` for an event at `event`: starts at the initial
    /// delay (or restarts there if the entry expired), else doubles up to the maximum.
    pub fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let fresh = Entry {
            backoff: self.initial,
            last_update: now,
        };
        let entry = match self.entries.get(key) {
            Some(e) if !self.expired(event, e) => Entry {
                backoff: (e.backoff * 2).min(self.max),
                last_update: now,
            },
            _ => fresh,
        };
        self.entries.insert(key.to_string(), entry);
    }

    /// If `key` is in back-off for an event at `event` (e.g. the container's finish time), the
    /// time the back-off ends.
    pub fn in_backoff_since(
        &self,
        key: &str,
        event: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let e = self.entries.get(key)?;
        if self.expired(event, e) {
            return None;
        }
        let until = event + e.backoff;
        (now < until).then_some(until)
    }

    /// The current delay of `key` (for messages such as "back-off 20s restarting ...").
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.backoff).unwrap_or_default()
    }

    /// Forgets entries that have expired (see [`Backoff::with_reset`]).
    pub fn gc(&mut self, now: SystemTime) {
        let reset = self.reset_after;
        self.entries
            .retain(|_, e| now.duration_since(e.last_update).unwrap_or_default() <= reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn crash_loop_sequence_matches_kubelet() {
        // A container that dies 1 s after each start: restart delays are 0, 10, 20, 40, ... 300.
        let mut b = Backoff::default();
        let mut now = t(1000);
        let mut delays = Vec::new();
        for _ in 0..9 {
            let finished = now + Duration::from_secs(1);
            now = finished;
            let wait = match b.in_backoff_since("c", finished, now) {
                Some(until) => until.duration_since(now).unwrap(),
                None => Duration::ZERO,
            };
            now += wait;
            assert_eq!(b.in_backoff_since("c", finished, now), None);
            b.next("c", finished, now);
            delays.push(wait.as_secs());
        }
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let mut b = Backoff::default();
        b.next("c", t(0), t(0));
        b.next("c", t(10), t(20));
        assert_eq!(b.get("c"), Duration::from_secs(20));
        // Crashes 601 s after the last restart: no back-off, and the next one starts over.
        let finished = t(20 + 601);
        assert_eq!(b.in_backoff_since("c", finished, finished), None);
        b.next("c", finished, finished);
        assert_eq!(b.get("c"), INITIAL);
        // 599 s is not enough.
        let finished = finished + Duration::from_secs(599);
        assert!(b.in_backoff_since("c", finished, finished).is_some());
    }

    #[test]
    fn gc_forgets_old_entries() {
        let mut b = Backoff::default();
        b.next("c", t(0), t(0));
        b.gc(t(600));
        assert_eq!(b.get("c"), INITIAL);
        b.gc(t(601));
        assert_eq!(b.get("c"), Duration::ZERO);
    }

    #[test]
    fn a_pod_chosen_policy_sets_all_three_numbers() {
        use staticlet_manifest::extensions::BackoffPolicy;
        let s = Duration::from_secs;
        let mut b = Backoff::from_policy(&BackoffPolicy {
            initial: s(1),
            max: s(4),
            reset_after: s(30),
        });
        // Crash 1 s after each start: 0, 1, 2, 4, 4.
        let mut now = t(1000);
        let mut delays = Vec::new();
        for _ in 0..5 {
            let finished = now + s(1);
            now = finished;
            let wait = b
                .in_backoff_since("c", finished, now)
                .map(|until| until.duration_since(now).unwrap())
                .unwrap_or_default();
            now += wait;
            b.next("c", finished, now);
            delays.push(wait.as_secs());
        }
        assert_eq!(delays, vec![0, 1, 2, 4, 4]);
        // Running 31 s (not twice the maximum, 8 s) resets it; 29 s does not.
        assert!(b.in_backoff_since("c", now + s(29), now + s(29)).is_some());
        assert_eq!(b.in_backoff_since("c", now + s(31), now + s(31)), None);
        b.gc(now + s(30));
        assert_eq!(b.get("c"), s(4));
        b.gc(now + s(31));
        assert_eq!(b.get("c"), Duration::ZERO);
    }
}
