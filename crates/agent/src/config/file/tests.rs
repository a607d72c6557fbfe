//! File source tests: relists on a temporary directory, and the watch loop with real inotify.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::*;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: IMAGE\n";

fn manifest(name: &str, image: &str) -> String {
    POD.replace("NAME", name).replace("IMAGE", image)
}

fn source(dir: &Path) -> FileSource {
    FileSource::new(
        dir,
        "node",
        Duration::from_secs(20),
        Some(LastGood::new(dir.join(".lastgood"))),
        Clock::new(),
    )
}

fn names(s: &SourceSnapshot) -> Vec<String> {
    s.pods.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn reads_only_manifest_extensions_and_skips_dotfiles_and_dirs() {
    let d = tempfile::tempdir().unwrap();
    for (f, n) in [
        ("a.yaml", "a"),
        ("b.yml", "b"),
        ("c.json", "c"),
        ("d.yaml~", "d"),
        ("e.yaml.swp", "e"),
        (".f.yaml", "f"),
        ("g.bak", "g"),
        ("h.dpkg-old", "h"),
    ] {
        std::fs::write(d.path().join(f), manifest(n, "img:1")).unwrap();
    }
    std::fs::create_dir(d.path().join("sub.yaml")).unwrap();
    std::fs::write(d.path().join("sub.yaml/i.yaml"), manifest("i", "img:1")).unwrap();
    let snap = source(d.path()).relist();
    assert_eq!(names(&snap), vec!["a-node", "b-node", "c-node"]);
    assert_eq!(snap.manifests.len(), 3);
}

#[test]
fn symlinked_files_are_read() {
    let d = tempfile::tempdir().unwrap();
    let real = tempfile::tempdir().unwrap();
    std::fs::write(real.path().join("x.yaml"), manifest("x", "img:1")).unwrap();
    std::os::unix::fs::symlink(real.path().join("x.yaml"), d.path().join("x.yaml")).unwrap();
    assert_eq!(names(&source(d.path()).relist()), vec!["x-node"]);
}

#[test]
fn bad_edit_keeps_last_good_pod_and_reports_it() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("web.yaml");
    std::fs::write(&f, manifest("web", "img:1")).unwrap();
    let mut src = source(d.path());
    let good = src.relist();
    let uid = good.pods[0].uid.clone();
    // Half-written / broken content.
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n",
    )
    .unwrap();
    let snap = src.relist();
    assert_eq!(snap.pods.len(), 1, "the pod keeps running");
    assert_eq!(snap.pods[0].uid, uid, "at its last good version");
    let rec = &snap.manifests[0];
    assert!(rec.stale);
    assert_eq!(
        rec.error.as_deref(),
        Some("spec.containers[0].image: Required value")
    );
    // The next valid version is applied.
    std::fs::write(&f, manifest("web", "img:2")).unwrap();
    let snap = src.relist();
    assert_ne!(snap.pods[0].uid, uid);
    assert!(snap.manifests[0].error.is_none());
    // Deleting the file stops the pod.
    std::fs::remove_file(&f).unwrap();
    assert!(src.relist().pods.is_empty());
}

#[test]
fn last_good_survives_an_agent_restart() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("web.yaml");
    std::fs::write(&f, manifest("web", "img:1")).unwrap();
    let uid = source(d.path()).relist().pods[0].uid.clone();
    std::fs::write(&f, "not: [valid").unwrap();
    // A new source (agent restarted) still runs the last good version.
    let snap = source(d.path()).relist();
    assert_eq!(snap.pods.len(), 1);
    assert_eq!(snap.pods[0].uid, uid);
    assert!(snap.manifests[0].stale);
}

#[test]
fn new_invalid_file_starts_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("bad.yaml"),
        "kind: Deployment\napiVersion: apps/v1\n",
    )
    .unwrap();
    let snap = source(d.path()).relist();
    assert!(snap.pods.is_empty());
    assert!(snap.manifests[0]
        .error
        .as_deref()
        .unwrap()
        .contains("kind: must be \"Pod\""));
}

#[test]
fn duplicate_names_first_sorted_path_wins_and_error_names_both() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.yaml"), manifest("web", "img:1")).unwrap();
    std::fs::write(d.path().join("b.yaml"), manifest("web", "img:2")).unwrap();
    let snap = source(d.path()).relist();
    assert_eq!(snap.pods.len(), 1);
    assert_eq!(
        snap.pods[0].spec().containers[0].image.as_deref(),
        Some("img:1")
    );
    let err = snap.manifests[1].error.as_deref().unwrap();
    assert!(
        err.contains("duplicate pod default/web-node") && err.contains("a.yaml"),
        "{err}"
    );
    assert!(snap.manifests[1].origin.ends_with("b.yaml"));
}

#[test]
fn rename_changes_identity_and_missing_path_empties() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("web", "img:1")).unwrap();
    let mut src = source(&dir);
    let a = src.relist().pods[0].uid.clone();
    std::fs::rename(dir.join("a.yaml"), dir.join("b.yaml")).unwrap();
    let b = src.relist().pods[0].uid.clone();
    assert_ne!(a, b, "the path is part of the identity");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(src.relist().pods.is_empty());
}

#[test]
fn single_file_mode_accepts_any_name() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("pod.manifest");
    std::fs::write(&f, manifest("one", "img:1")).unwrap();
    let mut src = FileSource::new(&f, "node", Duration::from_secs(20), None, Clock::new());
    assert_eq!(names(&src.relist()), vec!["one-node"]);
}

async fn next_with(
    rx: &mut mpsc::Receiver<SourceUpdate>,
    pred: impl Fn(&SourceSnapshot) -> bool,
) -> SourceSnapshot {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let u = rx.recv().await.expect("source running");
            if pred(&u.snapshot) {
                return u.snapshot;
            }
        }
    })
    .await
    .expect("the expected snapshot within 30 s")
}

#[tokio::test]
async fn watch_sees_changes_long_before_the_relist_period() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    // A relist period far longer than the test: only inotify can make it pass.
    let src = FileSource::new(&dir, "node", Duration::from_secs(3600), None, Clock::new());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(src.run(tx, stop.clone()));
    next_with(&mut rx, |s| s.pods.is_empty()).await;
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:1")).unwrap();
    next_with(&mut rx, |s| s.pods.len() == 1).await;
    // Editors write a temp file and rename it over the manifest.
    std::fs::write(dir.join(".a.yaml.tmp"), manifest("a", "img:2")).unwrap();
    std::fs::rename(dir.join(".a.yaml.tmp"), dir.join("a.yaml")).unwrap();
    next_with(&mut rx, |s| {
        s.pods.len() == 1 && s.pods[0].spec().containers[0].image.as_deref() == Some("img:2")
    })
    .await;
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    next_with(&mut rx, |s| s.pods.is_empty()).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn directory_created_later_is_picked_up() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("later");
    let src = FileSource::new(&dir, "node", Duration::from_secs(3600), None, Clock::new());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(src.run(tx, stop.clone()));
    next_with(&mut rx, |s| s.pods.is_empty()).await;
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:1")).unwrap();
    // The watch is retried (1 s, doubling): the directory is found without the hourly relist.
    next_with(&mut rx, |s| s.pods.len() == 1).await;
    stop.cancel();
    task.await.unwrap();
}

/// Reading the manifests (what every relist does) must not look like a change: otherwise each
/// relist triggers the next one and the agent re-reads its directory forever.
#[test]
fn reading_manifests_does_not_trigger_a_relist_but_writing_does() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:1")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .unwrap();
    w.watch(&dir, notify::RecursiveMode::NonRecursive).unwrap();
    // What a relist does, then a marker: inotify delivers events in order, so every event of
    // the relist arrives before the marker's.
    let mut src = FileSource::new(&dir, "node", Duration::from_secs(3600), None, Clock::new());
    assert_eq!(names(&src.relist()), vec!["a-node"]);
    std::fs::write(dir.join("marker.txt"), "x").unwrap();
    let mut before_marker = Vec::new();
    loop {
        let res: notify::Result<notify::Event> = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("watch events within 30 s");
        if res
            .as_ref()
            .is_ok_and(|ev| ev.paths.iter().any(|p| p.ends_with("marker.txt")))
        {
            assert!(triggers_relist(&res), "a new file is a change: {res:?}");
            break;
        }
        before_marker.push(res);
    }
    assert!(
        !before_marker.is_empty(),
        "the relist's reads produce watch events (the case under test)"
    );
    for res in &before_marker {
        assert!(!triggers_relist(res), "a read triggered a relist: {res:?}");
    }
}

#[test]
fn watch_events_that_trigger_a_relist() {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        RenameMode,
    };
    let ev = |kind, name: &str| Ok(notify::Event::new(kind).add_path(PathBuf::from(name)));
    let cases: &[(EventKind, &str, bool)] = &[
        (EventKind::Create(CreateKind::File), "/m/a.yaml", true),
        (
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            "/m/a.yaml",
            true,
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/m/a.yaml",
            true,
        ),
        (
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/m/a.yaml",
            true,
        ),
        (EventKind::Remove(RemoveKind::File), "/m/a.yaml", true),
        (
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/m/a.yaml",
            false,
        ),
        (EventKind::Access(AccessKind::Read), "/m/a.yaml", false),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/m/a.yaml",
            false,
        ),
        (EventKind::Create(CreateKind::File), "/m/.a.yaml.swp", false),
    ];
    for (kind, path, want) in cases {
        assert_eq!(triggers_relist(&ev(*kind, path)), *want, "{kind:?} {path}");
    }
    assert!(triggers_relist(&Err(notify::Error::generic(
        "queue overflow"
    ))));
}

#[test]
fn refused_manifests_are_not_applied_until_trusted_and_the_pod_keeps_its_last_good_version() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = d.path().join("a.yaml");
    std::fs::write(&f, manifest("a", "img:1")).unwrap();
    let mode = |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o666);
    // Warn (the default): applied (no last-good record kept, so the next source starts afresh).
    let warn = FileSource::new(
        d.path(),
        "node",
        Duration::from_secs(20),
        None,
        Clock::new(),
    );
    assert_eq!(names(&{ warn }.relist()), vec!["a-node"]);
    // Refuse: not applied, the reason recorded.
    let mut src = source(d.path()).with_permissions(super::super::trust::Policy::Refuse);
    let snap = src.relist();
    assert!(snap.pods.is_empty());
    let err = snap.manifests[0].error.clone().unwrap();
    assert!(
        err.contains("refused (--manifest-permissions=refuse)")
            && err.contains("writable by everyone"),
        "{err}"
    );
    // Trusted now (the test runs as root in CI; elsewhere ownership stays a problem).
    mode(0o644);
    if std::fs::metadata(&f).unwrap().uid() != 0 {
        return;
    }
    let snap = src.relist();
    assert_eq!(names(&snap), vec!["a-node"]);
    assert_eq!(snap.manifests[0].error, None);
    // An edit while untrusted: the pod keeps its last good version, the reason is shown.
    std::fs::write(&f, manifest("a", "img:2")).unwrap();
    mode(0o666);
    let snap = src.relist();
    assert_eq!(names(&snap), vec!["a-node"]);
    assert!(snap.manifests[0].stale);
    let image = |s: &SourceSnapshot| {
        s.pods[0].pod.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
    };
    assert_eq!(image(&snap).as_deref(), Some("img:1"));
    mode(0o644);
    assert_eq!(image(&src.relist()).as_deref(), Some("img:2"));
}

#[test]
fn removal_gap_drops_the_pods_whose_file_left_and_came_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:1")).unwrap();
    std::fs::write(dir.join("b.yaml"), manifest("b", "img:1")).unwrap();
    let mut src = source(&dir);
    let snap = src.relist();
    let uid = |n: &str| {
        snap.pods
            .iter()
            .find(|p| p.name == format!("{n}-node"))
            .unwrap()
            .uid
            .clone()
    };
    let both = vec![uid("a"), uid("b")];
    let a = dir.join("a.yaml");
    let set = |ps: &[&PathBuf]| ps.iter().map(|p| p.to_path_buf()).collect::<HashSet<_>>();
    // (what, paths removed, UIDs of the previous snapshot) -> the gap's pods
    type Case = (
        &'static str,
        HashSet<PathBuf>,
        Vec<String>,
        Option<Vec<String>>,
    );
    let cases: Vec<Case> = vec![
        ("nothing removed", set(&[]), both.clone(), None),
        (
            "a left and is back: the snapshot without it first",
            set(&[&a]),
            both.clone(),
            Some(vec!["b-node".into()]),
        ),
        (
            "a is new (not in the previous snapshot): no gap to show",
            set(&[&a]),
            vec![uid("b")],
            None,
        ),
        (
            "another file left (a dotfile renamed into place, a file still gone)",
            set(&[&dir.join(".a.yaml.tmp"), &dir.join("c.yaml")]),
            both.clone(),
            None,
        ),
    ];
    for (what, removed, last, want) in cases {
        let gap = removal_gap(&snap, &removed, &last);
        assert_eq!(gap.as_ref().map(names), want, "{what}");
        if let Some(g) = gap {
            assert!(
                g.manifests.iter().all(|m| Path::new(&m.origin) != a),
                "{what}: a's record goes with its pod"
            );
            assert_eq!(g.manifests.len(), 1, "{what}");
        }
    }
}

/// `kubeadm upgrade` moves a manifest to its backup directory and moves it (or its
/// replacement) back at once: the source shows the pod gone and then back, as kubelet's
/// event-by-event source does, however quickly it happened.
#[tokio::test]
async fn a_manifest_moved_away_and_back_is_seen_going_and_coming_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("manifests");
    let backup = d.path().join("backup");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&backup).unwrap();
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:1")).unwrap();
    std::fs::write(dir.join("b.yaml"), manifest("b", "img:1")).unwrap();
    let src = FileSource::new(&dir, "node", Duration::from_secs(3600), None, Clock::new());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(src.run(tx, stop.clone()));
    next_with(&mut rx, |s| s.pods.len() == 2).await;
    for _ in 0..3 {
        std::fs::rename(dir.join("a.yaml"), backup.join("a.yaml")).unwrap();
        std::fs::rename(backup.join("a.yaml"), dir.join("a.yaml")).unwrap();
        next_with(&mut rx, |s| names(s) == vec!["b-node"]).await;
        next_with(&mut rx, |s| s.pods.len() == 2).await;
    }
    // Rewritten in place (no removal): an update, never a gap.
    std::fs::write(dir.join("a.yaml"), manifest("a", "img:2")).unwrap();
    let s = next_with(&mut rx, |s| {
        s.pods
            .iter()
            .any(|p| p.spec().containers[0].image.as_deref() == Some("img:2"))
    })
    .await;
    assert_eq!(s.pods.len(), 2);
    stop.cancel();
    task.await.unwrap();
}
