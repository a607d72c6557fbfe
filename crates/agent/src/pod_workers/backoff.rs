//! kubelet's exponential back-off (`k8s.io/client-go/util/flowcontrol.Backoff`), without jitter.
//!
//! Used for container restarts (10 s doubling to 300 s) and image pulls (same numbers). An entry
//! expires when the event it is asked about is more than twice the maximum after its last update
//! (600 s), which is how a container that ran for 10 minutes gets its back-off reset.
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
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// A back-off starting at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial: initial.min(max),
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, event: SystemTime, e: &Entry) -> bool {
        event.duration_since(e.last_update).unwrap_or_default() > self.max * 2
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

    /// Forgets entries whose last update is older than twice the maximum.
    pub fn gc(&mut self, now: SystemTime) {
        let max2 = self.max * 2;
        self.entries
            .retain(|_, e| now.duration_since(e.last_update).unwrap_or_default() <= max2);
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
}
