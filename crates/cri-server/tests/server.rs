//! The CRI server over the fake runtime, through a real tonic client on a unix socket: what
//! `crictl` and `kubeadm` send, and the codes they get back.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use staticlet_runtime::fake::{Call, ExecReply, FakeRuntime};
use staticlet_runtime::{labels, Clock, ContainerRuntime, LabelSelector, SandboxConfig};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

struct Harness {
    rt: FakeRuntime,
    run: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    sock: PathBuf,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/staticlet/cri.sock");
    let rt = FakeRuntime::new(Clock::new());
    let listener = staticlet_cri_server::bind(&sock).unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(staticlet_cri_server::serve(
        listener,
        Arc::new(rt.clone()),
        stop.clone(),
    ));
    let path = sock.clone();
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap();
    Harness {
        rt,
        run: RuntimeServiceClient::new(channel.clone()),
        img: ImageServiceClient::new(channel),
        sock,
        stop,
        server,
        dir,
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pod config as `crictl runp` reads it from JSON.
fn pod_config(
    name: &str,
    uid: &str,
    labels: &[(&str, &str)],
    log_dir: &str,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        labels: map(labels),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        labels: map(&[("role", name)]),
        ..Default::default()
    }
}

impl Harness {
    async fn run_pod(&mut self, config: cri::PodSandboxConfig) -> String {
        self.run
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    async fn sandboxes(&mut self, filter: cri::PodSandboxFilter) -> Vec<String> {
        self.run
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    async fn containers(&mut self, filter: cri::ContainerFilter) -> Vec<(String, i32)> {
        self.run
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect()
    }

    async fn pull(&mut self, image: &str) -> String {
        self.img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .unwrap()
            .into_inner()
            .image_ref
    }

    async fn create(
        &mut self,
        sandbox: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let sandbox_config = pod_config("p", "u", &[], "/var/log/pods/p");
        self.run
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn image_status(&mut self, image: &str) -> Option<cri::Image> {
        self.img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn version_status_and_a_runtime_that_is_down() {
    let mut h = start().await;
    let v = h
        .run
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            v.runtime_name.as_str(),
            v.runtime_api_version.as_str(),
            v.runtime_version.as_str()
        ),
        ("staticlet", "v1", env!("CARGO_PKG_VERSION"))
    );

    let cond = |s: &cri::StatusResponse, t: &str| {
        let c = s
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.r#type == t)
            .unwrap()
            .clone();
        (c.status, c.reason, c.message)
    };
    let s = h
        .run
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cond(&s, "RuntimeReady"),
        (true, String::new(), String::new())
    );
    assert_eq!(
        cond(&s, "NetworkReady"),
        (true, String::new(), String::new())
    );

    h.rt.set_network_ready(false);
    let s = h
        .run
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(cond(&s, "RuntimeReady").0);
    assert_eq!(
        cond(&s, "NetworkReady"),
        (
            false,
            "NetworkPluginNotReady".to_string(),
            "fake network not ready".to_string()
        )
    );

    // A runtime that is down is Unavailable, for kubeadm's preflight as for lists; Version
    // is answered by the server itself.
    h.rt.set_down(true);
    let (c, m) = code(h.run.status(cri::StatusRequest { verbose: false }).await);
    assert_eq!(c, Code::Unavailable, "{m}");
    assert!(m.contains("fake runtime is down"), "{m}");
    let (c, _) = code(
        h.run
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await,
    );
    assert_eq!(c, Code::Unavailable);
    assert!(h.run.version(cri::VersionRequest::default()).await.is_ok());
}

#[tokio::test]
async fn sandboxes_run_list_with_filters_stop_and_remove() {
    let mut h = start().await;
    let a = h
        .run_pod(pod_config("a", "uid-a", &[("app", "a")], "/var/log/pods/a"))
        .await;
    let b = h
        .run_pod(pod_config("b", "uid-b", &[("app", "b")], "/var/log/pods/b"))
        .await;
    // One of the agent's own, made beside them.
    let mut agent_labels = LabelSelector::pod("uid-static").0;
    agent_labels.insert(labels::POD_NAME.into(), "etcd-n".into());
    agent_labels.insert(labels::POD_NAMESPACE.into(), "kube-system".into());
    let ours =
        h.rt.run_pod_sandbox(&SandboxConfig {
            name: "etcd-n".into(),
            namespace: "kube-system".into(),
            uid: "uid-static".into(),
            labels: agent_labels,
            ..Default::default()
        })
        .await
        .unwrap();

    // Lists show both kinds, in creation order; the clients' carry only their own labels.
    assert_eq!(
        h.sandboxes(Default::default()).await,
        [a.clone(), b.clone(), ours.0.clone()]
    );
    let listed = h
        .run
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed[0].labels, map(&[("app", "a")]));
    assert_eq!(listed[0].metadata.as_ref().unwrap().uid, "uid-a");
    let managed =
        h.rt.list_pod_sandboxes(&LabelSelector::managed())
            .await
            .unwrap();
    assert_eq!(
        managed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&ours),
        "what clients create is not the agent's"
    );

    // Filters: labels, ID (exact or prefix), state.
    let by_label = h
        .sandboxes(cri::PodSandboxFilter {
            label_selector: map(&[("app", "b")]),
            ..Default::default()
        })
        .await;
    assert_eq!(by_label, std::slice::from_ref(&b));
    let managed_only = h
        .sandboxes(cri::PodSandboxFilter {
            label_selector: map(&[(labels::MANAGED, "true")]),
            ..Default::default()
        })
        .await;
    assert_eq!(managed_only, std::slice::from_ref(&ours.0));
    assert_eq!(
        h.sandboxes(cri::PodSandboxFilter {
            id: a.clone(),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&a)
    );

    let st = h
        .run
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: a.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(!st.network.unwrap().ip.is_empty(), "the pod IP is reported");

    h.run
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    // Stopping again is fine (idempotent).
    h.run
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    let not_ready = h
        .sandboxes(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(not_ready, std::slice::from_ref(&a));
    let ready = h
        .sandboxes(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(ready, [b.clone(), ours.0.clone()]);

    h.run
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    // Removing what is gone succeeds (CRI's idempotence); stopping or asking for it does not.
    h.run
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    let (c, m) = code(
        h.run
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: a.clone(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.contains(&a), "{m}");
    let (c, _) = code(
        h.run
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: "nope".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert_eq!(h.sandboxes(Default::default()).await, [b, ours.0]);
    let calls = h.rt.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::RemoveSandbox { uid } if uid == "uid-a"))
            .count(),
        1
    );
}

#[tokio::test]
async fn sandbox_configs_are_checked_and_ids_resolve_by_prefix() {
    let mut h = start().await;
    let (c, m) = code(
        h.run
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config("bad", "../../etc", &[], "/logs")),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("metadata.uid"), "{m}");
    let (c, _) = code(
        h.run
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: None,
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(h.rt.sandboxes().is_empty());

    // The fake's IDs are sandbox-1, sandbox-2, ...: "sandbox-1" is exact, "sandbox-" is
    // ambiguous once there are two.
    let one = h.run_pod(pod_config("one", "u1", &[], "/logs")).await;
    assert_eq!(one, "sandbox-1");
    let st = h
        .run
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "sandbox-".into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status.unwrap().id, one, "a unique prefix names it");
    h.run_pod(pod_config("two", "u2", &[], "/logs")).await;
    let (c, m) = code(
        h.run
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "sandbox-".into(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("ambiguous"), "{m}");
    let (c, _) = code(
        h.run
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: String::new(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
}

#[tokio::test]
async fn containers_create_start_exec_stop_remove() {
    let mut h = start().await;
    let sb = h
        .run_pod(pod_config("p", "u", &[], "/var/log/pods/p"))
        .await;
    let other = h
        .run_pod(pod_config("q", "v", &[], "/var/log/pods/q"))
        .await;

    // The image must be present (CRI runtimes do not pull on create).
    let (c, m) = code(h.create(&sb, container_config("app", "busybox:1.36")).await);
    assert_eq!(c, Code::Unknown, "{m}");
    assert!(m.contains("not present"), "{m}");
    h.pull("busybox:1.36").await;

    let app = h
        .create(&sb, container_config("app", "busybox:1.36"))
        .await
        .unwrap();
    let side = h
        .create(&other, container_config("side", "busybox:1.36"))
        .await
        .unwrap();
    let st = h
        .run
        .container_status(cri::ContainerStatusRequest {
            container_id: app.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(st.metadata.unwrap().name, "app");
    assert_eq!(st.log_path, "/var/log/pods/p/app.log");
    assert_eq!(st.labels, map(&[("role", "app")]));
    assert!(st.image_ref.starts_with("sha256:"), "{}", st.image_ref);

    h.run
        .start_container(cri::StartContainerRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap();
    let running = h
        .containers(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(
        running,
        [(app.clone(), cri::ContainerState::ContainerRunning as i32)]
    );
    assert_eq!(
        h.containers(cri::ContainerFilter {
            pod_sandbox_id: other.clone(),
            ..Default::default()
        })
        .await,
        [(side.clone(), cri::ContainerState::ContainerCreated as i32)]
    );
    assert_eq!(
        h.containers(cri::ContainerFilter {
            label_selector: map(&[("role", "side")]),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(h.containers(Default::default()).await.len(), 2);

    // ExecSync: output and exit code as the command gave them.
    h.rt.exec_script(
        "app",
        [ExecReply::Exit {
            code: 3,
            stdout: "hello\n".into(),
        }],
        ExecReply::code(0),
    );
    let out = h
        .run
        .exec_sync(cri::ExecSyncRequest {
            container_id: app.clone(),
            cmd: vec!["echo".into(), "hello".into()],
            timeout: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"hello\n"[..], 3));
    let (c, _) = code(
        h.run
            .exec_sync(cri::ExecSyncRequest {
                container_id: app.clone(),
                cmd: vec![],
                timeout: 0,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    let (c, _) = code(
        h.run
            .exec_sync(cri::ExecSyncRequest {
                container_id: "nope".into(),
                cmd: vec!["true".into()],
                timeout: 1,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);

    h.run
        .stop_container(cri::StopContainerRequest {
            container_id: app.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let st = h
        .run
        .container_status(cri::ContainerStatusRequest {
            container_id: app.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert!(st.finished_at > 0 && st.started_at > 0);
    assert!(h.rt.calls().iter().any(|(_, c)| matches!(
        c,
        Call::Stop { name, timeout, .. } if name == "app" && timeout.as_secs() == 10
    )));

    h.run
        .remove_container(cri::RemoveContainerRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap();
    h.run
        .remove_container(cri::RemoveContainerRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap();
    for r in [
        h.run
            .container_status(cri::ContainerStatusRequest {
                container_id: app.clone(),
                verbose: false,
            })
            .await
            .map(|_| ()),
        h.run
            .start_container(cri::StartContainerRequest {
                container_id: app.clone(),
            })
            .await
            .map(|_| ()),
        h.run
            .stop_container(cri::StopContainerRequest {
                container_id: app.clone(),
                timeout: 0,
            })
            .await
            .map(|_| ()),
    ] {
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
    }
    assert_eq!(
        h.containers(Default::default()).await,
        [(side, cri::ContainerState::ContainerCreated as i32)]
    );
}

#[tokio::test]
async fn container_configs_are_checked() {
    let mut h = start().await;
    let sb = h.run_pod(pod_config("p", "u", &[], "/logs")).await;
    h.pull("busybox").await;
    let (c, _) = code(h.create("nope", container_config("app", "busybox")).await);
    assert_eq!(c, Code::NotFound);
    let mut cfg = container_config("app", "busybox");
    cfg.devices = vec![cri::Device {
        container_path: "/dev/fuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "rwm".into(),
    }];
    let (c, m) = code(h.create(&sb, cfg).await);
    assert_eq!(
        (c, m.as_str()),
        (Code::InvalidArgument, "devices are not supported")
    );
    // A relative log path needs the sandbox's log directory.
    let (c, m) = code(
        h.run
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(container_config("app", "busybox")),
                sandbox_config: None,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("log directory"), "{m}");
    // Without a log path it needs nothing.
    let mut cfg = container_config("app", "busybox");
    cfg.log_path = String::new();
    let id = h
        .run
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(cfg),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    assert!(h.rt.containers().iter().any(|c| c.id.0 == id));
    assert!(
        h.rt.calls().iter().any(
            |(_, c)| matches!(c, Call::Create { uid, name, .. } if uid == "u" && name == "app")
        ),
        "the sandbox's UID comes from its status"
    );
}

#[tokio::test]
async fn stats_of_running_containers() {
    let mut h = start().await;
    let sb = h.run_pod(pod_config("p", "u", &[], "/logs")).await;
    h.pull("busybox").await;
    h.rt.usage("app", 0.5, 4096);
    let app = h
        .create(&sb, container_config("app", "busybox"))
        .await
        .unwrap();
    let idle = h
        .create(&sb, container_config("idle", "busybox"))
        .await
        .unwrap();
    h.run
        .start_container(cri::StartContainerRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap();
    let all = h
        .run
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1, "only running containers are measured");
    let s = &all[0];
    let a = s.attributes.as_ref().unwrap();
    assert_eq!(
        (a.id.as_str(), a.metadata.as_ref().unwrap().name.as_str()),
        (app.as_str(), "app")
    );
    assert_eq!(
        s.memory
            .as_ref()
            .unwrap()
            .working_set_bytes
            .as_ref()
            .unwrap()
            .value,
        4096
    );
    assert!(s.cpu.as_ref().unwrap().usage_core_nano_seconds.is_some());
    let none = h
        .run
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: "other".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());

    let one = h
        .run
        .container_stats(cri::ContainerStatsRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(one.attributes.unwrap().id, app);
    assert!(one.memory.is_some());
    let bare = h
        .run
        .container_stats(cri::ContainerStatsRequest {
            container_id: idle.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(bare.attributes.unwrap().id, idle);
    assert!(bare.cpu.is_none() && bare.memory.is_none());
    let (c, _) = code(
        h.run
            .container_stats(cri::ContainerStatsRequest {
                container_id: "nope".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
}

#[tokio::test]
async fn images_pull_status_list_remove_and_filesystem() {
    let mut h = start().await;
    assert_eq!(h.image_status("registry.k8s.io/pause:3.10").await, None);
    let id = h.pull("registry.k8s.io/pause:3.10").await;
    h.pull("registry.k8s.io/etcd:3.6.4-0").await;
    let st = h.image_status("registry.k8s.io/pause:3.10").await.unwrap();
    assert_eq!(st.id, id);
    assert_eq!(st.repo_tags, ["registry.k8s.io/pause:3.10"]);

    let list = h
        .img
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 2);
    let filtered = h
        .img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: "registry.k8s.io/etcd:3.6.4-0".into(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].repo_tags, ["registry.k8s.io/etcd:3.6.4-0"]);

    // Removed by id (as `crictl rmi` does after resolving the name); again is fine.
    for _ in 0..2 {
        h.img
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    assert_eq!(h.image_status("registry.k8s.io/pause:3.10").await, None);
    assert!(h
        .image_status("registry.k8s.io/etcd:3.6.4-0")
        .await
        .is_some());

    h.rt.pull_error("registry.invalid/x:1", Some("manifest unknown"));
    let (c, m) = code(
        h.img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: "registry.invalid/x:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::Unknown);
    assert!(m.contains("manifest unknown"), "{m}");
    let (c, _) = code(
        h.img
            .image_status(cri::ImageStatusRequest {
                image: None,
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);

    // The image filesystem: none without a store directory (still an answer: kubeadm's CRI
    // client calls it to check the image service), measured with one.
    let none = h
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(none.image_filesystems.is_empty() && none.container_filesystems.is_empty());
    let store = h.dir.path().join("images");
    std::fs::create_dir_all(&store).unwrap();
    h.rt.set_image_store_dir(Some(store.clone()));
    let fs = h
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        store.to_string_lossy().as_ref()
    );
    assert!(u.used_bytes.as_ref().unwrap().value > 0);
    assert!(u.timestamp > 0);
}

#[tokio::test]
async fn unserved_methods_are_unimplemented_and_say_which() {
    let mut h = start().await;
    let mut got = Vec::new();
    got.push(code(h.run.exec(cri::ExecRequest::default()).await));
    got.push(code(h.run.attach(cri::AttachRequest::default()).await));
    got.push(code(
        h.run.port_forward(cri::PortForwardRequest::default()).await,
    ));
    got.push(code(
        h.run
            .update_container_resources(cri::UpdateContainerResourcesRequest::default())
            .await,
    ));
    got.push(code(
        h.run
            .reopen_container_log(cri::ReopenContainerLogRequest::default())
            .await,
    ));
    got.push(code(
        h.run
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
            .await,
    ));
    got.push(code(
        h.run
            .get_container_events(cri::GetEventsRequest::default())
            .await
            .map(|_| ()),
    ));
    let names = [
        "Exec",
        "Attach",
        "PortForward",
        "UpdateContainerResources",
        "ReopenContainerLog",
        "ListPodSandboxStats",
        "GetContainerEvents",
    ];
    for ((c, m), name) in got.into_iter().zip(names) {
        assert_eq!(c, Code::Unimplemented, "{name}: {m}");
        assert!(m.starts_with(&format!("{name} is not implemented")), "{m}");
    }
    // RuntimeConfig says cgroupfs: a cgroup parent is a path (the pod cgroups are
    // `/staticlet/pod<uid>`), so a client on the systemd driver would hand slice names a
    // cgroupfs runtime takes for directory names. kubelet reads this and follows it.
    let rc = h
        .run
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.map(|l| l.cgroup_driver),
        Some(cri::CgroupDriver::Cgroupfs as i32)
    );
    // UpdateRuntimeConfig (kubelet's pod CIDR) is accepted.
    h.run
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.244.0.0/24".into(),
                }),
            }),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn socket_is_0660_and_goes_at_shutdown() {
    let h = start().await;
    let mode = std::fs::metadata(&h.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let dir_mode = std::fs::metadata(h.sock.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o711);
    // A second bind replaces a stale socket.
    drop(h.run);
    drop(h.img);
    h.stop.cancel();
    h.server.await.unwrap().unwrap();
    assert!(!h.sock.exists(), "the socket is removed at shutdown");
    std::fs::write(&h.sock, b"stale").unwrap();
    let l = staticlet_cri_server::bind(&h.sock).unwrap();
    assert!(std::fs::symlink_metadata(&h.sock)
        .unwrap()
        .file_type()
        .is_socket());
    drop(l);
}
