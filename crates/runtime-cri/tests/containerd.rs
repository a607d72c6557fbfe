//! End-to-end tests of `CriRuntime` against a real containerd (Debian's `containerd`, `runc`,
//! `containernetworking-plugins`, `busybox-static`, `gcc`).
//!
//! Each test starts its own containerd as a child process on a private socket with private
//! root/state directories, a private CNI bridge (unique name, a 10.235.x.0/24 subnet, no
//! masquerading, no gateway) and locally built pause and busybox images (scripts/pause-image.sh,
//! scripts/busybox-image.sh) imported with `ctr`. The tests skip (with a message) only when not
//! root or when containerd is not installed. Everything is torn down in `Drop`: sandboxes stopped
//! and removed, leftover shims of this containerd killed by pid, containerd killed, mounts under
//! the private root unmounted, the bridge deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use staticlet_runtime::{
    labels, AttachRequest, ContainerConfig, ContainerId, ContainerRuntime, ContainerState,
    ExecRequest, ImageSpec, LabelSelector, Labels, RuntimeError, SandboxConfig, SandboxId,
    SandboxState,
};
use staticlet_runtime_cri::{CriOptions, CriRuntime};

use staticlet_runtime_cri::testutil::*;

fn pod(name: &str, host_network: bool, logs: &Path) -> SandboxConfig {
    let uid = format!("uid-{name}-{}", std::process::id());
    SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: uid.clone(),
        attempt: 0,
        hostname: name.into(),
        log_directory: logs.join(format!("default_{name}_{uid}")),
        labels: Labels::from([
            (labels::MANAGED.into(), "true".into()),
            (labels::POD_UID.into(), uid.clone()),
            (labels::POD_NAME.into(), name.into()),
            (labels::POD_NAMESPACE.into(), "default".into()),
        ]),
        annotations: Labels::from([("staticlet.test/pod".into(), name.into())]),
        host_network,
        ..Default::default()
    }
}

fn container(sb: &SandboxConfig, name: &str, cmd: &[&str]) -> ContainerConfig {
    let mut labels = sb.labels.clone();
    labels.insert(labels::CONTAINER_NAME.into(), name.into());
    ContainerConfig {
        name: name.into(),
        attempt: 0,
        image: ImageSpec {
            image: BUSYBOX.into(),
        },
        command: cmd.iter().map(|s| s.to_string()).collect(),
        envs: vec![("GREETING".into(), "hello".into())],
        labels,
        annotations: BTreeMap::from([("staticlet.test/container".into(), name.into())]),
        log_path: format!("{name}/0.log").into(),
        ..Default::default()
    }
}

/// Polls `f` until it returns `Some`, failing after `within`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(cri: &CriRuntime, id: &ContainerId, want: ContainerState) {
    wait_for(
        &format!("{id} to be {want:?}"),
        Duration::from_secs(30),
        || async {
            let s = cri.container_status(id).await.unwrap();
            (s.state == want).then_some(())
        },
    )
    .await
}

async fn connect(cd: &Containerd) -> CriRuntime {
    CriRuntime::connect(&cd.endpoint(), CriOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", cd.log_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod_lifecycle() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping host_network_pod_lifecycle: {why}");
        return;
    }
    let cd = Containerd::start().await;
    let cri = connect(&cd).await;

    let v = cri.version().await.unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.api_version, "v1");
    let st = cri.status().await.unwrap();
    assert!(st.runtime_ready, "{st:?}");
    if cri.subscribe_events().is_none() {
        eprintln!("runtime has no GetContainerEvents ({})", v.runtime_version);
    }

    // Images.
    let img = cri
        .image_status(&ImageSpec {
            image: BUSYBOX.into(),
        })
        .await
        .unwrap()
        .expect("busybox imported");
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    let missing = ImageSpec {
        image: "docker.io/library/not-there:1".into(),
    };
    assert_eq!(cri.image_status(&missing).await.unwrap(), None);
    let listed = cri.list_images().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|i| i.id == img.id && i.repo_tags.iter().any(|t| t == BUSYBOX)),
        "{listed:?}"
    );
    // Removing an image that is not there is success (CRI's RemoveImage is idempotent).
    cri.remove_image(&missing).await.unwrap();
    let err = cri
        .pull_image(
            &ImageSpec {
                image: "127.0.0.1:1/nothing:1".into(),
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::ImagePull { image, message } if image == "127.0.0.1:1/nothing:1" && !message.is_empty()),
        "{err:?}"
    );
    // Pulling an image that is present resolves locally? No: PullImage always asks the
    // registry, so only the failure path is tested offline.

    // A hostNetwork sandbox with a sleeping container.
    let sb_cfg = pod("hostnet", true, &cd.logs_dir());
    let sb = cri.run_pod_sandbox(&sb_cfg).await.unwrap();
    let sbs = cri.pod_sandbox_status(&sb).await.unwrap();
    assert_eq!(sbs.state, SandboxState::Ready);
    assert_eq!(
        (sbs.name.as_str(), sbs.uid.as_str()),
        ("hostnet", sb_cfg.uid.as_str())
    );
    assert_eq!(sbs.labels, sb_cfg.labels);

    let sleeper_cfg = container(&sb_cfg, "sleeper", &["sleep", "1000"]);
    let sleeper = cri
        .create_container(&sb, &sleeper_cfg, &sb_cfg)
        .await
        .unwrap();
    let s = cri.container_status(&sleeper).await.unwrap();
    assert_eq!(s.state, ContainerState::Created);
    assert_eq!(s.sandbox_id, sb);
    cri.start_container(&sleeper).await.unwrap();
    wait_state(&cri, &sleeper, ContainerState::Running).await;
    let s = cri.container_status(&sleeper).await.unwrap();
    assert!(s.started_at.is_some() && s.finished_at.is_none() && s.exit_code.is_none());
    assert_eq!(s.name, "sleeper");
    assert_eq!(s.labels, sleeper_cfg.labels);
    assert_eq!(
        s.annotations.get("staticlet.test/container").unwrap(),
        "sleeper"
    );
    assert_eq!(s.image.image, BUSYBOX);
    assert!(s.image_ref.contains("sha256:"), "{s:?}");
    assert_eq!(s.log_path, sb_cfg.log_directory.join("sleeper/0.log"));

    // runAsNonRoot is checked against the image's user (busybox names none: root).
    let mut non_root = container(&sb_cfg, "nonroot", &["true"]);
    non_root.security.run_as_non_root = true;
    let err = cri
        .create_container(&sb, &non_root, &sb_cfg)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::InvalidConfig(m) if m.contains("root")),
        "{err:?}"
    );
    non_root.security.run_as_user = Some(1000);
    let nr = cri.create_container(&sb, &non_root, &sb_cfg).await.unwrap();
    cri.remove_container(&nr).await.unwrap();

    // Exec.
    let r = cri
        .exec_sync(
            &sleeper,
            &["echo".into(), "hi".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hi\n"[..], 0));
    let r = cri
        .exec_sync(
            &sleeper,
            &[
                "sh".into(),
                "-c".into(),
                "echo $GREETING >&2; exit 7".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((r.stderr.as_slice(), r.exit_code), (&b"hello\n"[..], 7));
    let err = cri
        .exec_sync(
            &sleeper,
            &["sleep".into(), "30".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    eprintln!("exec past its timeout: {err}");
    assert!(
        matches!(&err, RuntimeError::Failed { op: "ExecSync", .. }),
        "{err:?}"
    );

    // A container that writes to both streams and exits 3.
    let failing_cfg = container(
        &sb_cfg,
        "failing",
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    let failing = cri
        .create_container(&sb, &failing_cfg, &sb_cfg)
        .await
        .unwrap();
    cri.start_container(&failing).await.unwrap();
    wait_state(&cri, &failing, ContainerState::Exited).await;
    let s = cri.container_status(&failing).await.unwrap();
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.reason, "Error");
    assert!(s.finished_at.is_some() && s.started_at.is_some());
    // CRI log format: "<RFC3339Nano> <stream> <P|F> <line>".
    let log_file = sb_cfg.log_directory.join("failing/0.log");
    let log = wait_for("the log file", Duration::from_secs(10), || async {
        let s = std::fs::read_to_string(&log_file).ok()?;
        (s.lines().count() >= 2).then_some(s)
    })
    .await;
    let mut streams: Vec<(String, String)> = log
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert!(f[0].starts_with("20") && f[0].contains('T'), "{l}");
            assert_eq!(f[2], "F", "{l}");
            (f[1].to_string(), f[3].to_string())
        })
        .collect();
    streams.sort();
    assert_eq!(
        streams,
        [
            ("stderr".to_string(), "to-stderr".to_string()),
            ("stdout".to_string(), "to-stdout".to_string())
        ]
    );

    // Lists by labels.
    let pod_sel = LabelSelector::pod(&sb_cfg.uid);
    let listed = cri.list_containers(&pod_sel).await.unwrap();
    let ids: Vec<&ContainerId> = listed.iter().map(|c| &c.id).collect();
    assert_eq!(ids, [&sleeper, &failing]);
    assert_eq!(listed[1].exit_code, Some(3));
    assert!(listed.iter().all(|c| c.sandbox_id == sb));
    let mut by_name = pod_sel.clone();
    by_name
        .0
        .insert(labels::CONTAINER_NAME.into(), "failing".into());
    let listed = cri.list_containers(&by_name).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, failing);
    assert!(cri
        .list_containers(&LabelSelector::pod("nobody"))
        .await
        .unwrap()
        .is_empty());
    let sandboxes = cri.list_pod_sandboxes(&pod_sel).await.unwrap();
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].id, sb);
    assert!(cri
        .list_pod_sandboxes(&LabelSelector::pod("nobody"))
        .await
        .unwrap()
        .is_empty());

    // Stop and remove, twice each; then statuses are NotFound.
    cri.stop_container(&sleeper, Duration::from_secs(0))
        .await
        .unwrap();
    let s = cri.container_status(&sleeper).await.unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.exit_code, Some(137), "{s:?}");
    cri.stop_container(&sleeper, Duration::from_secs(0))
        .await
        .unwrap();
    for c in [&sleeper, &failing] {
        cri.remove_container(c).await.unwrap();
        cri.remove_container(c).await.unwrap();
        cri.stop_container(c, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            cri.container_status(c).await,
            Err(RuntimeError::NotFound { .. })
        ));
    }
    cri.stop_pod_sandbox(&sb).await.unwrap();
    cri.stop_pod_sandbox(&sb).await.unwrap();
    assert_eq!(
        cri.pod_sandbox_status(&sb).await.unwrap().state,
        SandboxState::NotReady
    );
    cri.remove_pod_sandbox(&sb).await.unwrap();
    cri.remove_pod_sandbox(&sb).await.unwrap();
    cri.stop_pod_sandbox(&sb).await.unwrap();
    assert!(matches!(
        cri.pod_sandbox_status(&sb).await,
        Err(RuntimeError::NotFound { .. })
    ));
    let gone = SandboxId("0123456789abcdef".into());
    cri.stop_pod_sandbox(&gone).await.unwrap();
    cri.remove_pod_sandbox(&gone).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_sandbox_and_reconnect() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping pod_network_sandbox_and_reconnect: {why}");
        return;
    }
    let mut cd = Containerd::start().await;
    let cri = connect(&cd).await;
    let st = cri.status().await.unwrap();
    assert!(st.runtime_ready && st.network_ready, "{st:?}");

    let sb_cfg = SandboxConfig {
        share_process_namespace: true,
        ..pod("podnet", false, &cd.logs_dir())
    };
    let sb = cri.run_pod_sandbox(&sb_cfg).await.unwrap();
    let s = cri.pod_sandbox_status(&sb).await.unwrap();
    assert!(s.ip.starts_with(&cd.subnet_prefix), "{s:?}");
    let c_cfg = container(&sb_cfg, "app", &["sleep", "1000"]);
    let c = cri.create_container(&sb, &c_cfg, &sb_cfg).await.unwrap();
    cri.start_container(&c).await.unwrap();
    wait_state(&cri, &c, ContainerState::Running).await;
    // The pod's own hostname and IP inside, and the pause process visible (shared pid ns).
    let r = cri
        .exec_sync(
            &c,
            &[
                "sh".into(),
                "-c".into(),
                "hostname; ip -4 addr show eth0; ps".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.starts_with("podnet\n"), "{out}");
    assert!(out.contains(&s.ip), "{out}");
    assert!(out.contains("/pause"), "{out}");

    // containerd goes away: calls fail fast with Unavailable, then recover once it is back.
    cd.kill();
    let err = wait_for("an Unavailable error", Duration::from_secs(10), || async {
        match cri.container_status(&c).await {
            Err(e @ RuntimeError::Unavailable(_)) => Some(e),
            _ => None,
        }
    })
    .await;
    eprintln!("while down: {err}");
    assert!(matches!(
        cri.stop_container(&c, Duration::ZERO).await,
        Err(RuntimeError::Unavailable(_))
    ));
    cd.restart();
    let s = wait_for(
        "the runtime to come back",
        Duration::from_secs(30),
        || async { cri.container_status(&c).await.ok() },
    )
    .await;
    assert_eq!(s.state, ContainerState::Running);

    cri.stop_pod_sandbox(&sb).await.unwrap();
    assert_eq!(
        cri.container_status(&c).await.unwrap().state,
        ContainerState::Exited
    );
    cri.remove_pod_sandbox(&sb).await.unwrap();
    assert!(matches!(
        cri.container_status(&c).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

/// How many calls of `op` went out between two `rpc_counts` readings.
fn calls(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
    op: &str,
) -> u64 {
    after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0)
}

/// The status cache: a steady pod listed again costs its two list calls and no status call;
/// every state change (created → running → exited, by our stop or by the container itself) is
/// fetched, so exit codes are fresh; removed objects leave the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cache_spares_steady_lists_and_follows_state_changes() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping status_cache_spares_steady_lists_and_follows_state_changes: {why}");
        return;
    }
    let cd = Containerd::start().await;
    let cri = connect(&cd).await;
    let sb_cfg = pod("cached", true, &cd.logs_dir());
    let sel = LabelSelector::pod(&sb_cfg.uid);
    let sb = cri.run_pod_sandbox(&sb_cfg).await.unwrap();
    // Exits 7 on SIGTERM (`wait` is interrupted by the signal, so the trap runs at once).
    let app_cfg = container(
        &sb_cfg,
        "app",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; touch /tmp/trapped; sleep 3600 & wait",
        ],
    );
    let app = cri.create_container(&sb, &app_cfg, &sb_cfg).await.unwrap();
    let list = || async {
        let sandboxes = cri.list_pod_sandboxes(&sel).await.unwrap();
        let containers = cri.list_containers(&sel).await.unwrap();
        (sandboxes, containers)
    };

    // First list: one status call per object.
    let c0 = cri.rpc_counts();
    let (sbs, cs) = list().await;
    let c1 = cri.rpc_counts();
    assert_eq!(sbs.len(), 1, "{sbs:?}");
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0].state, ContainerState::Created);
    assert_eq!(calls(&c0, &c1, "PodSandboxStatus"), 1, "{c1:?}");
    assert_eq!(calls(&c0, &c1, "ContainerStatus"), 1, "{c1:?}");

    // Created → running: the CREATED record is not served; the sandbox's is.
    cri.start_container(&app).await.unwrap();
    let c2 = cri.rpc_counts();
    let (_, cs) = list().await;
    let c3 = cri.rpc_counts();
    assert_eq!(cs[0].state, ContainerState::Running, "{cs:?}");
    assert!(cs[0].started_at.is_some(), "{cs:?}");
    assert_eq!(calls(&c2, &c3, "ContainerStatus"), 1, "{c3:?}");
    assert_eq!(calls(&c2, &c3, "PodSandboxStatus"), 0, "{c3:?}");

    // Steady: listed twice more, only the two list calls each time, and the same answer.
    let (sbs_a, cs_a) = list().await;
    let (sbs_b, cs_b) = list().await;
    let c4 = cri.rpc_counts();
    assert_eq!(calls(&c3, &c4, "ContainerStatus"), 0, "{c4:?}");
    assert_eq!(calls(&c3, &c4, "PodSandboxStatus"), 0, "{c4:?}");
    assert_eq!(calls(&c3, &c4, "ListContainers"), 2, "{c4:?}");
    assert_eq!(calls(&c3, &c4, "ListPodSandbox"), 2, "{c4:?}");
    assert_eq!((&sbs_a, &cs_a), (&sbs_b, &cs_b));
    assert_eq!(cs_a, cs, "a cached record is what the runtime answered");
    // ... and what a fresh status call answers now.
    assert_eq!(cri.container_status(&app).await.unwrap(), cs_a[0]);
    assert_eq!(cri.pod_sandbox_status(&sb).await.unwrap(), sbs_a[0]);

    // Our stop, once the trap is set (the shell is its PID namespace's init: a SIGTERM before the
    // trap would be ignored, and SIGKILLed at the end of the grace): the next list fetches the
    // exited record, with its exit code.
    wait_for("the trap set", Duration::from_secs(60), || async {
        let r = cri
            .exec_sync(
                &app,
                &["test".into(), "-e".into(), "/tmp/trapped".into()],
                Duration::from_secs(10),
            )
            .await;
        r.is_ok_and(|r| r.exit_code == 0).then_some(())
    })
    .await;
    cri.stop_container(&app, Duration::from_secs(10))
        .await
        .unwrap();
    let c5 = cri.rpc_counts();
    let (_, cs) = list().await;
    let c6 = cri.rpc_counts();
    assert_eq!(cs[0].state, ContainerState::Exited, "{cs:?}");
    assert_eq!(cs[0].exit_code, Some(7), "{cs:?}");
    assert!(cs[0].finished_at.is_some(), "{cs:?}");
    assert_eq!(calls(&c5, &c6, "ContainerStatus"), 1, "{c6:?}");
    let (_, again) = list().await;
    assert_eq!(again, cs);
    assert_eq!(calls(&c6, &cri.rpc_counts(), "ContainerStatus"), 0);

    // A container that exits by itself: seen exited with its own code, through lists alone.
    let quick_cfg = container(&sb_cfg, "quick", &["sh", "-c", "sleep 0.3; exit 3"]);
    let quick = cri
        .create_container(&sb, &quick_cfg, &sb_cfg)
        .await
        .unwrap();
    cri.start_container(&quick).await.unwrap();
    // Read back by id after the start (the agent does so instead of listing its pod): one call.
    let c7 = cri.rpc_counts();
    let started = cri.container_status(&quick).await.unwrap();
    let c8 = cri.rpc_counts();
    assert_eq!(started.sandbox_id, sb, "{started:?}");
    assert_ne!(started.state, ContainerState::Created, "{started:?}");
    assert_eq!(calls(&c7, &c8, "ContainerStatus"), 1, "{c8:?}");
    assert_eq!(calls(&c7, &c8, "ListContainers"), 0, "{c8:?}");
    let exited = wait_for("quick to exit", Duration::from_secs(30), || async {
        let (_, cs) = list().await;
        cs.into_iter()
            .find(|c| c.id == quick && c.state == ContainerState::Exited)
    })
    .await;
    assert_eq!(exited.exit_code, Some(3), "{exited:?}");
    let c7 = cri.rpc_counts();
    let (_, cs) = list().await;
    assert_eq!(calls(&c7, &cri.rpc_counts(), "ContainerStatus"), 0);
    assert_eq!(cs.iter().find(|c| c.id == quick), Some(&exited));

    // Removed by us: gone from the cache. Removed by another client: the next list covering it
    // drops it.
    assert_eq!(cri.cached_statuses(), (2, 1));
    cri.remove_container(&app).await.unwrap();
    assert_eq!(cri.cached_statuses(), (1, 1));
    let other = connect(&cd).await;
    other.remove_container(&quick).await.unwrap();
    let (_, cs) = list().await;
    assert!(cs.is_empty(), "{cs:?}");
    assert_eq!(cri.cached_statuses(), (0, 1));
    other.stop_pod_sandbox(&sb).await.unwrap();
    let (sbs, _) = list().await;
    assert_eq!(sbs[0].state, SandboxState::NotReady, "{sbs:?}");
    cri.remove_pod_sandbox(&sb).await.unwrap();
    assert_eq!(cri.cached_statuses(), (0, 0));
    let (sbs, cs) = list().await;
    assert!(sbs.is_empty() && cs.is_empty(), "{sbs:?} {cs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_socket_that_is_not_cri() {
    // A plain HTTP/2-less unix socket server: the Version call fails and connect says so.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-cri.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    });
    let opts = CriOptions {
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let err = CriRuntime::connect(&format!("unix://{}", path.display()), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    server.abort();
}

/// A plain `GET` of an `http://host:port/path` URL (no upgrade); returns the status code and
/// the body.
async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut resp))
        .await
        .expect("the streaming server answers")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward_urls_lead_to_the_streaming_server() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping exec_attach_and_port_forward_urls_lead_to_the_streaming_server: {why}");
        return;
    }
    let cd = Containerd::start().await;
    let cri = connect(&cd).await;
    let sb_cfg = pod("streams", true, &cd.logs_dir());
    let sb = cri.run_pod_sandbox(&sb_cfg).await.unwrap();
    let cfg = container(&sb_cfg, "sleeper", &["sleep", "1000"]);
    let id = cri.create_container(&sb, &cfg, &sb_cfg).await.unwrap();
    cri.start_container(&id).await.unwrap();
    wait_state(&cri, &id, ContainerState::Running).await;

    let req = ExecRequest {
        cmd: vec!["sh".into()],
        tty: false,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let url = cri
        .exec_url(&id, &req)
        .await
        .unwrap()
        .expect("containerd serves execs from its streaming server");
    eprintln!("exec URL: {url}");
    // Absolute, on the loopback address the harness configures (stream_server_address), with
    // the port containerd's server took (stream_server_port 0).
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.starts_with("http://127.0.0.1:0/"), "{url}");
    assert!(url.contains("/exec/"), "{url}");
    // The streaming server knows the token: a request without an upgrade is refused as such
    // (400). The token is good for one request (404 after), as is one it never issued.
    let (status, body) = http_get(&url).await;
    assert_eq!(status, 400, "{url}: {body}");
    assert!(body.contains("upgrade"), "{body}");
    assert_eq!(http_get(&url).await.0, 404);
    let (prefix, _) = url.rsplit_once('/').unwrap();
    assert_eq!(http_get(&format!("{prefix}/not-a-token")).await.0, 404);

    // With a terminal, stderr is merged into stdout: CRI would refuse both, so it is not asked.
    let tty = ExecRequest {
        tty: true,
        stderr: true,
        ..req.clone()
    };
    let url = cri.exec_url(&id, &tty).await.unwrap().unwrap();
    assert!(url.contains("/exec/"), "{url}");

    // Attach: a URL of the same server, single-use as well.
    let attach = AttachRequest {
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let url = cri
        .attach_url(&id, &attach)
        .await
        .unwrap()
        .expect("containerd serves attaches from its streaming server");
    eprintln!("attach URL: {url}");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/attach/"),
        "{url}"
    );
    assert_eq!(http_get(&url).await.0, 400, "{url}");
    assert_eq!(http_get(&url).await.0, 404, "{url}");
    let err = cri
        .attach_url(&ContainerId("no-such-container".into()), &attach)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");

    let url = cri
        .port_forward_url(&sb, &[8080, 9090])
        .await
        .unwrap()
        .expect("containerd serves port forwarding from its streaming server");
    eprintln!("port-forward URL: {url}");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/portforward/"),
        "{url}"
    );
    // Known (containerd 1.6 answers a request without an upgrade with an empty 200 here),
    // then used up.
    let (status, body) = http_get(&url).await;
    assert_ne!(status, 404, "{url}: {body}");
    assert_eq!(http_get(&url).await.0, 404);

    let err = cri
        .exec_url(&ContainerId("no-such-container".into()), &req)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
    let err = cri
        .port_forward_url(&SandboxId("no-such-sandbox".into()), &[80])
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");

    cri.stop_pod_sandbox(&sb).await.unwrap();
    cri.remove_pod_sandbox(&sb).await.unwrap();
}
