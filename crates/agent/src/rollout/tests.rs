use super::*;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

const MIN: Option<Duration> = Some(Duration::from_secs(60));

fn wanted(h: &'static str, deadline: Option<Duration>, s: u64) -> Input<'static> {
    Input::Wanted {
        hash: h,
        uid: h,
        deadline,
        now: t(s),
    }
}

/// Ready since `s - 10` (settled) at `s`.
fn ready(h: &'static str, s: u64) -> Input<'static> {
    Input::Ready {
        hash: h,
        uid: h,
        content: h,
        since: t(s) - SETTLE,
        now: t(s),
    }
}

/// Ready since `s - 9` at `s`: not long enough.
fn flicker(h: &'static str, s: u64) -> Input<'static> {
    Input::Ready {
        hash: h,
        uid: h,
        content: h,
        since: t(s) - SETTLE + Duration::from_secs(1),
        now: t(s),
    }
}

fn expired(s: u64, target: Result<(), &'static str>) -> Input<'static> {
    Input::Expired {
        now: t(s),
        failure: "container app exited with code 1 (Error)",
        target,
    }
}

/// What a step is checked against: the phase's name, what runs, the running hash, the last
/// Ready hash, and the reasons of the events it returned.
#[derive(Debug, PartialEq)]
struct Seen {
    phase: &'static str,
    run: Run,
    running: Option<String>,
    good: Option<String>,
    notes: Vec<&'static str>,
}

fn seen(r: &Rollout, notes: &[Note]) -> Seen {
    Seen {
        phase: match r.phase {
            Phase::Steady => "steady",
            Phase::Progressing { .. } => "progressing",
            Phase::RolledBack { .. } => "rolledBack",
        },
        run: r.running(),
        running: r.running_hash().map(str::to_string),
        good: r.good.as_ref().map(|g| g.hash.clone()),
        notes: notes.iter().map(|n| n.reason).collect(),
    }
}

fn s(
    phase: &'static str,
    run: Run,
    running: Option<&str>,
    good: Option<&str>,
    notes: &[&'static str],
) -> Seen {
    Seen {
        phase,
        run,
        running: running.map(str::to_string),
        good: good.map(str::to_string),
        notes: notes.to_vec(),
    }
}

/// Runs each case's inputs from a fresh machine; checks the state after every step.
fn check(cases: Vec<(&str, Vec<(Input<'static>, Seen)>)>) {
    for (name, steps) in cases {
        let mut r = Rollout::new("web-node_default", "/m/web.yaml", false);
        for (i, (input, want)) in steps.into_iter().enumerate() {
            let notes = r.step(input.clone());
            assert_eq!(seen(&r, &notes), want, "{name}: step {i} ({input:?})");
        }
    }
}

#[test]
fn transitions() {
    use Run::*;
    check(vec![
        (
            "first version: nothing to go back to, no check",
            vec![
                (
                    wanted("a", MIN, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 5),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                // Ready again: idempotent.
                (
                    ready("a", 9),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
            ],
        ),
        (
            "update that becomes Ready in time",
            vec![
                (
                    wanted("a", MIN, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 1),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", MIN, 10),
                    s("progressing", Wanted, Some("b"), Some("a"), &["Updating"]),
                ),
                // Ready for less than SETTLE (a container that runs a moment, then crashes).
                (
                    flicker("b", 12),
                    s("progressing", Wanted, Some("b"), Some("a"), &[]),
                ),
                // The old version reported Ready while on its way out: ignored.
                (
                    ready("a", 11),
                    s("progressing", Wanted, Some("b"), Some("a"), &[]),
                ),
                (
                    expired(30, Ok(())),
                    s("progressing", Wanted, Some("b"), Some("a"), &[]),
                ),
                (
                    ready("b", 40),
                    s("steady", Wanted, Some("b"), Some("b"), &["Updated"]),
                ),
                (
                    expired(100, Ok(())),
                    s("steady", Wanted, Some("b"), Some("b"), &[]),
                ),
            ],
        ),
        (
            "update not Ready in time: rolled back, not retried, a new edit is tried",
            vec![
                (
                    wanted("a", MIN, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 1),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", MIN, 10),
                    s("progressing", Wanted, Some("b"), Some("a"), &["Updating"]),
                ),
                (
                    expired(70, Ok(())),
                    s("rolledBack", Good, Some("a"), Some("a"), &["RolledBack"]),
                ),
                // The same content again (relist, restart): still rolled back.
                (
                    wanted("b", MIN, 80),
                    s("rolledBack", Good, Some("a"), Some("a"), &[]),
                ),
                // The good version is Ready again: nothing changes.
                (
                    ready("a", 85),
                    s("rolledBack", Good, Some("a"), Some("a"), &[]),
                ),
                // Ready of the failed version can no longer arrive, and would not count.
                (
                    ready("b", 86),
                    s("rolledBack", Good, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("c", MIN, 90),
                    s("progressing", Wanted, Some("c"), Some("a"), &["Updating"]),
                ),
                (
                    ready("c", 95),
                    s("steady", Wanted, Some("c"), Some("c"), &["Updated"]),
                ),
            ],
        ),
        (
            "the file is reverted to the good version while rolled back or progressing",
            vec![
                (
                    wanted("a", MIN, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 1),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", MIN, 10),
                    s("progressing", Wanted, Some("b"), Some("a"), &["Updating"]),
                ),
                (
                    wanted("a", MIN, 20),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", MIN, 30),
                    s("progressing", Wanted, Some("b"), Some("a"), &["Updating"]),
                ),
                (
                    expired(90, Ok(())),
                    s("rolledBack", Good, Some("a"), Some("a"), &["RolledBack"]),
                ),
                (
                    wanted("a", MIN, 95),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
            ],
        ),
        (
            "no deadline: updates are applied unchecked",
            vec![
                (
                    wanted("a", None, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 1),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", None, 10),
                    s("steady", Wanted, Some("b"), Some("a"), &[]),
                ),
                (
                    expired(1000, Ok(())),
                    s("steady", Wanted, Some("b"), Some("a"), &[]),
                ),
                (
                    wanted("c", Some(Duration::ZERO), 20),
                    s("steady", Wanted, Some("c"), Some("a"), &[]),
                ),
            ],
        ),
        (
            "the rollback target no longer validates: nothing runs",
            vec![
                (
                    wanted("a", MIN, 0),
                    s("steady", Wanted, Some("a"), None, &[]),
                ),
                (
                    ready("a", 1),
                    s("steady", Wanted, Some("a"), Some("a"), &[]),
                ),
                (
                    wanted("b", MIN, 10),
                    s("progressing", Wanted, Some("b"), Some("a"), &["Updating"]),
                ),
                (
                    expired(70, Err("hostPath /gone does not exist")),
                    s("rolledBack", Nothing, None, Some("a"), &["RolledBack"]),
                ),
                (
                    wanted("c", MIN, 90),
                    s("progressing", Wanted, Some("c"), Some("a"), &["Updating"]),
                ),
            ],
        ),
    ]);
}

#[test]
fn messages_name_versions_deadline_and_reason() {
    let mut r = Rollout::new("web-node_default", "/m/web.yaml", false);
    r.step(wanted("aaaaaaaaaaaaaaaa", MIN, 0));
    r.step(ready("aaaaaaaaaaaaaaaa", 1));
    let notes = r.step(wanted("bbbbbbbbbbbbbbbb", MIN, 10));
    assert_eq!(
        notes[0].message,
        "applying version bbbbbbbbbbbb (the last Ready version is aaaaaaaaaaaa): it must be Ready within 1m0s"
    );
    assert_eq!(r.deadline(), Some(t(70)));
    assert!(!r.due(t(69)));
    assert!(r.due(t(70)));
    let notes = r.step(expired(70, Ok(())));
    assert_eq!(
        (notes[0].type_, notes[0].message.as_str()),
        (
            "Warning",
            "rolled back from bbbbbbbbbbbb to aaaaaaaaaaaa: not Ready within 1m0s: container app exited with code 1 (Error)"
        )
    );
    assert_eq!(r.message(), Some(notes[0].message.clone()));

    let mut r = Rollout::new("web-node_default", "/m/web.yaml", false);
    r.step(wanted("aaaaaaaaaaaaaaaa", MIN, 0));
    r.step(ready("aaaaaaaaaaaaaaaa", 1));
    r.step(wanted("bbbbbbbbbbbbbbbb", MIN, 10));
    let notes = r.step(expired(75, Err("volumes[0].hostPath: not found")));
    assert_eq!(
        notes[0].message,
        "stopped bbbbbbbbbbbb: not Ready within 1m0s: container app exited with code 1 (Error); the last Ready version aaaaaaaaaaaa no longer validates (volumes[0].hostPath: not found): nothing runs"
    );
}

#[test]
fn a_restored_machine_keeps_its_deadline() {
    let mut r = Rollout::new("web-node_default", "/m/web.yaml", false);
    r.step(wanted("a", MIN, 0));
    r.step(ready("a", 1));
    r.step(wanted("b", MIN, 10));
    let json = serde_json::to_string(&r).unwrap();
    let mut back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    // After a restart the source wants the same version: the deadline is the old one.
    assert!(back.step(wanted("b", MIN, 500)).is_empty());
    assert_eq!(back.deadline(), Some(t(70)));
    assert!(back.due(t(500)));
}

#[test]
fn durations_show_as_go_does() {
    assert_eq!(show(Duration::from_secs(300)), "5m0s");
    assert_eq!(show(Duration::from_secs(30)), "30s");
    assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    assert_eq!(show(Duration::from_secs(3725)), "1h2m5s");
}
