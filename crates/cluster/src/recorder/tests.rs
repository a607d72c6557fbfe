//! Table tests of the event recorder's planner.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use staticlet_agent::events::EventLog;
use staticlet_agent::pod_workers::{PodView, PodsView};
use staticlet_manifest::Origin;
use tokio::time::Instant;

use super::*;

const NODE: &str = "n1";

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// A pod `name` whose log holds `events` (reason, message, times recorded).
fn pod(name: &str, events: &[(&str, &str, u32)]) -> (String, Arc<PodView>) {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
    );
    let sp = staticlet_manifest::load(
        yaml.as_bytes(),
        &Origin::File(format!("/m/{name}.yaml")),
        NODE,
    )
    .unwrap();
    let mut log = EventLog::default();
    for (i, (reason, message, n)) in events.iter().enumerate() {
        for _ in 0..*n {
            log.normal(reason, message, t(i as u64));
        }
    }
    (
        sp.uid.clone(),
        Arc::new(PodView {
            pod: Arc::new(sp),
            status: Default::default(),
            terminating_since: None,
            grace: None,
            events: log,
        }),
    )
}

/// The actions as `create REASON xN uid=U` / `update REASON xN`.
fn show(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            Action::Create { key, event } => format!(
                "create {} x{} uid={}",
                key.reason,
                event.count.unwrap(),
                event.involved_object.uid.as_deref().unwrap()
            ),
            Action::Update { key, count, .. } => format!("update {} x{count}", key.reason),
        })
        .collect()
}

fn ok_all(r: &mut Recorder, plan: &Plan) {
    for a in &plan.actions {
        r.done(a, Ok(()));
    }
}

#[test]
fn each_entry_is_sent_once_about_the_static_pod() {
    let (uid, view) = pod(
        "etcd",
        &[("Pulled", "image present", 1), ("Started", "started", 1)],
    );
    let pods = PodsView::from([(uid.clone(), view)]);
    let now = Instant::now();
    let mut r = Recorder::default();
    let plan = r.plan(&pods, NODE, now);
    assert_eq!(
        show(&plan),
        [
            format!("create Pulled x1 uid={uid}"),
            format!("create Started x1 uid={uid}")
        ]
    );
    let Action::Create { event, .. } = &plan.actions[0] else {
        unreachable!()
    };
    // What `kubectl describe pod` of the mirror looks for: name, namespace, the static UID.
    assert_eq!(event.involved_object.name.as_deref(), Some("etcd-n1"));
    assert_eq!(
        event.involved_object.namespace.as_deref(),
        Some("kube-system")
    );
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(event.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.source.as_ref().unwrap().host.as_deref(), Some(NODE));
    assert_eq!(event.reporting_component.as_deref(), Some(COMPONENT));
    ok_all(&mut r, &plan);
    assert!(show(&r.plan(&pods, NODE, now)).is_empty());
}

#[test]
fn repeats_update_the_count_and_failures_are_retried() {
    let now = Instant::now();
    let mut r = Recorder::default();
    let (uid, view) = pod("web", &[("BackOff", "back-off 10s", 1)]);
    let plan = r.plan(&PodsView::from([(uid.clone(), view)]), NODE, now);
    ok_all(&mut r, &plan);

    // Two more repeats: one update with the count reached.
    let (_, view) = pod("web", &[("BackOff", "back-off 10s", 3)]);
    let pods = PodsView::from([(uid.clone(), view)]);
    let plan = r.plan(&pods, NODE, now);
    assert_eq!(show(&plan), ["update BackOff x3"]);
    let Action::Update { name, .. } = &plan.actions[0] else {
        unreachable!()
    };
    assert!(name.starts_with("web-n1."), "{name}");

    // It failed: the next pass tries again.
    r.done(&plan.actions[0], Err(false));
    let plan = r.plan(&pods, NODE, now);
    assert_eq!(show(&plan), ["update BackOff x3"]);

    // The Event expired in the API: created anew, with the whole count.
    r.done(&plan.actions[0], Err(true));
    let plan = r.plan(&pods, NODE, now);
    assert_eq!(show(&plan), [format!("create BackOff x3 uid={uid}")]);
    ok_all(&mut r, &plan);
    assert!(show(&r.plan(&pods, NODE, now)).is_empty());
}

#[test]
fn the_rate_limit_delays_and_never_drops() {
    let now = Instant::now();
    let mut r = Recorder::default();
    let reasons: Vec<String> = (0..30).map(|i| format!("R{i}")).collect();
    let events: Vec<(&str, &str, u32)> = reasons.iter().map(|s| (s.as_str(), "m", 1)).collect();
    let (uid, view) = pod("web", &events);
    let pods = PodsView::from([(uid.clone(), view)]);

    let plan = r.plan(&pods, NODE, now);
    assert_eq!(plan.actions.len(), BURST as usize);
    assert_eq!(plan.retry_at, Some(now + REFILL));
    ok_all(&mut r, &plan);
    // Nothing more before a token comes back.
    let plan = r.plan(&pods, NODE, now + REFILL - Duration::from_secs(1));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.retry_at, Some(now + REFILL));
    // One per period after.
    let plan = r.plan(&pods, NODE, now + REFILL);
    assert_eq!(show(&plan), [format!("create R25 x1 uid={uid}")]);
    ok_all(&mut r, &plan);
    let plan = r.plan(&pods, NODE, now + REFILL * 3);
    assert_eq!(
        show(&plan),
        [
            format!("create R26 x1 uid={uid}"),
            format!("create R27 x1 uid={uid}")
        ]
    );
    ok_all(&mut r, &plan);

    // Another pod has a bucket of its own.
    let (uid2, view2) = pod("other", &[("Started", "s", 1)]);
    let mut pods2 = pods.clone();
    pods2.insert(uid2.clone(), view2);
    let plan = r.plan(&pods2, NODE, now + REFILL * 3);
    assert_eq!(show(&plan), [format!("create Started x1 uid={uid2}")]);
}

#[test]
fn gone_pods_and_rotated_entries_are_forgotten() {
    let now = Instant::now();
    let mut r = Recorder::default();
    let (uid, view) = pod("web", &[("Started", "s", 1)]);
    let plan = r.plan(&PodsView::from([(uid.clone(), view)]), NODE, now);
    ok_all(&mut r, &plan);
    assert_eq!(r.sent.len(), 1);
    assert_eq!(r.buckets.len(), 1);
    let plan = r.plan(&PodsView::new(), NODE, now);
    assert!(plan.actions.is_empty());
    assert!(r.sent.is_empty());
    assert!(r.buckets.is_empty());
}

#[test]
fn names_are_distinct_bounded_and_messages_cut() {
    let k = |reason: &str, message: &str| Key {
        pod_uid: "u".into(),
        type_: "Normal",
        reason: reason.into(),
        message: message.into(),
        first: t(0),
    };
    let a = event_name("etcd-n1", &k("Created", "x"));
    let b = event_name("etcd-n1", &k("Started", "x"));
    assert_ne!(a, b, "two entries of one instant");
    assert_eq!(a, event_name("etcd-n1", &k("Created", "x")), "stable");
    assert!(a.starts_with("etcd-n1."));
    let long = "p".repeat(253);
    let n = event_name(&long, &k("Created", "x"));
    assert!(n.len() <= 253, "{}", n.len());

    assert_eq!(cut("short"), "short");
    let m = "é".repeat(1000);
    let c = cut(&m);
    assert!(
        c.len() <= MESSAGE_LIMIT && c.ends_with("..."),
        "{}",
        c.len()
    );
}

#[test]
fn entries_not_yet_sent_are_sent_for_a_while_after_their_pod_stopped() {
    // The API server is down while a pod fails and stops (a `kubeadm upgrade apply` that
    // kubeadm rolls back): its entries still reach the API server once it answers again.
    let now = Instant::now();
    let mut r = Recorder::default();
    let (uid, view) = pod("etcd", &[("Failed", "pull failed", 2)]);
    let plan = r.plan(&PodsView::from([(uid.clone(), view)]), NODE, now);
    assert_eq!(show(&plan), [format!("create Failed x2 uid={uid}")]);
    r.done(&plan.actions[0], Err(false));
    // The pod is gone from the view: the entry is still sent, while the API server fails...
    for after in [0, 30, 119] {
        let plan = r.plan(&PodsView::new(), NODE, now + Duration::from_secs(after));
        assert_eq!(
            show(&plan),
            [format!("create Failed x2 uid={uid}")],
            "{after} s"
        );
        let Action::Create { event, .. } = &plan.actions[0] else {
            unreachable!()
        };
        assert_eq!(event.involved_object.name.as_deref(), Some("etcd-n1"));
        r.done(&plan.actions[0], Err(false));
    }
    // ...and once it has it, forgotten.
    let plan = r.plan(&PodsView::new(), NODE, now + Duration::from_secs(119));
    ok_all(&mut r, &plan);
    assert!(show(&r.plan(&PodsView::new(), NODE, now + Duration::from_secs(119))).is_empty());
    assert!(r.sent.is_empty() && r.unsent.is_empty() && r.buckets.is_empty());

    // Not received within LINGER of leaving the log: dropped.
    let mut r = Recorder::default();
    let (uid, view) = pod("etcd", &[("Failed", "pull failed", 1)]);
    let plan = r.plan(&PodsView::from([(uid.clone(), view)]), NODE, now);
    r.done(&plan.actions[0], Err(false));
    let plan = r.plan(&PodsView::new(), NODE, now + Duration::from_secs(1));
    r.done(&plan.actions[0], Err(false));
    let plan = r.plan(
        &PodsView::new(),
        NODE,
        now + Duration::from_secs(1) + LINGER,
    );
    assert!(plan.actions.is_empty());
    assert!(r.unsent.is_empty() && r.buckets.is_empty());
}

#[test]
fn a_uid_started_again_keeps_the_entries_of_its_previous_run() {
    // Same UID, a fresh log (the old etcd restarted after a rollback): the previous run's
    // entries not yet sent are still sent, about that UID, beside the new ones; the update of
    // a repeat the API server already had is sent too.
    let now = Instant::now();
    let mut r = Recorder::default();
    let (uid, view) = pod("etcd", &[("Started", "s", 1), ("Killing", "stopping", 1)]);
    let plan = r.plan(&PodsView::from([(uid.clone(), view)]), NODE, now);
    assert_eq!(plan.actions.len(), 2);
    r.done(&plan.actions[0], Ok(()));
    r.done(&plan.actions[1], Err(false));
    let (_, view) = pod("etcd", &[("Pulled", "present", 1)]);
    let pods = PodsView::from([(uid.clone(), view)]);
    let plan = r.plan(&pods, NODE, now);
    let mut got = show(&plan);
    got.sort();
    assert_eq!(
        got,
        [
            format!("create Killing x1 uid={uid}"),
            format!("create Pulled x1 uid={uid}")
        ]
    );
    ok_all(&mut r, &plan);
    assert!(show(&r.plan(&pods, NODE, now)).is_empty());
}

#[test]
fn failed_writes_give_their_token_back() {
    let now = Instant::now();
    let mut r = Recorder::default();
    let reasons: Vec<String> = (0..30).map(|i| format!("R{i}")).collect();
    let events: Vec<(&str, &str, u32)> = reasons.iter().map(|s| (s.as_str(), "m", 1)).collect();
    let (uid, view) = pod("web", &events);
    let pods = PodsView::from([(uid.clone(), view)]);
    // An API server down for many passes does not use the burst up.
    for _ in 0..5 {
        let plan = r.plan(&pods, NODE, now);
        assert_eq!(plan.actions.len(), BURST as usize);
        for a in &plan.actions {
            r.done(a, Err(false));
        }
    }
    let plan = r.plan(&pods, NODE, now);
    assert_eq!(plan.actions.len(), BURST as usize);
    ok_all(&mut r, &plan);
    assert!(r.plan(&pods, NODE, now).actions.is_empty());
}
