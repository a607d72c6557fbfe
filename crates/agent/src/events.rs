//! A bounded, in-memory event log per pod (≈ the events kubelet records for a pod: Pulling,
//! Pulled, Created, Started, Killing, Unhealthy, BackOff, Failed, ...). Repeats of the same
//! reason and message fold into one entry with a count, as the API server's event series do.
//! Served at `/pods/{namespace}/{name}/events` and shown by `staticlet describe`.

use std::collections::VecDeque;
use std::time::SystemTime;

/// How many distinct events a pod keeps.
pub const CAPACITY: usize = 100;

/// One (possibly repeated) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// The log. Cheap to clone (it is published with the pod's status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    events: VecDeque<Event>,
}

impl EventLog {
    /// Records an event at `now`; a repeat of one of the last few events bumps its count.
    pub fn record(&mut self, type_: &'static str, reason: &str, message: &str, now: SystemTime) {
        if let Some(e) = self
            .events
            .iter_mut()
            .rev()
            .take(8)
            .find(|e| e.reason == reason && e.message == message && e.type_ == type_)
        {
            e.count += 1;
            e.last = now;
            return;
        }
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
            count: 1,
            first: now,
            last: now,
        });
    }

    /// Records a `Normal` event.
    pub fn normal(&mut self, reason: &str, message: &str, now: SystemTime) {
        self.record("Normal", reason, message, now);
    }

    /// Records a `Warning` event.
    pub fn warning(&mut self, reason: &str, message: &str, now: SystemTime) {
        self.record("Warning", reason, message, now);
    }

    /// The events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// This log with `other`'s events, by time (the newest [`CAPACITY`] kept).
    pub fn merged(&self, other: &EventLog) -> EventLog {
        let mut all: Vec<Event> = self.events.iter().chain(&other.events).cloned().collect();
        all.sort_by_key(|e| e.last);
        let skip = all.len().saturating_sub(CAPACITY);
        EventLog {
            events: all.into_iter().skip(skip).collect(),
        }
    }

    /// Number of distinct entries.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn repeats_fold_and_capacity_bounds() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut log = EventLog::default();
        log.normal("Pulling", "Pulling image \"a\"", t(1));
        log.warning("BackOff", "Back-off restarting", t(2));
        log.warning("BackOff", "Back-off restarting", t(5));
        assert_eq!(log.len(), 2);
        let b = log.iter().nth(1).unwrap();
        assert_eq!((b.count, b.first, b.last), (2, t(2), t(5)));
        for i in 0..200 {
            log.normal("Started", &format!("Started container c{i}"), t(10 + i));
        }
        assert_eq!(log.len(), CAPACITY);
        assert_eq!(log.iter().last().unwrap().message, "Started container c199");
    }
}
