//! staticlet's CRI endpoint: a CRI v1 gRPC server (`RuntimeService` and `ImageService`) over
//! any [`ContainerRuntime`], so that `kubeadm` and `crictl` can use the embedded runtime
//! through the socket they are given (`nodeRegistration.criSocket`, `crictl -r`) as they use
//! containerd's.
//!
//! - [`serve`] answers on a unix socket ([`bind`] makes it, mode 0660 as containerd's) until
//!   its shutdown token is cancelled, then removes the socket file.
//! - Requests are translated by the pure functions of [`convert`] (the reverse of the CRI
//!   client's conversions, which it reuses); a configuration the runtime seam cannot carry is
//!   refused with `InvalidArgument` and the reason, never run without the part it asked for.
//! - Errors keep gRPC's meaning: `NotFound` for a missing sandbox, container or image
//!   (`ImageStatus` of a missing image is an empty answer, as CRI says), `InvalidArgument` for a
//!   bad configuration or an ambiguous ID, `Unavailable` while the runtime is down,
//!   `FailedPrecondition` for an image that may not be pulled, `Unknown` for other failures
//!   (containerd's code for them), `Unimplemented` naming the method for the rest.
//! - IDs may be given as a unique prefix, as with containerd (`crictl` prints truncated IDs).
//! - `RemovePodSandbox` and `RemoveContainer` of an unknown ID succeed (CRI's idempotence);
//!   `StopPodSandbox` and `StopContainer` of one are `NotFound`, as with containerd.
//!
//! **Ownership.** Objects created through this server belong to its clients: they carry the
//! labels the client gave and nothing of staticlet's, in particular no
//! [`labels::MANAGED`](staticlet_runtime::labels::MANAGED), so the agent (which only lists and
//! acts on objects with that label) never stops, restarts or removes them. Lists show every
//! object, the agent's and the clients'. A client can stop or remove the agent's objects (as
//! `kubeadm reset` does with kubelet's through containerd); the agent then recreates what its
//! manifests still want. The pod cgroup the embedded runtime puts a client's containers under
//! (`/staticlet/pod<uid>`, empty once they are gone) is left to the client, as containerd leaves
//! a sandbox's cgroup parent to kubelet; the agent only removes those of its own pods.
//!
//! Not served (`Unimplemented`): the streaming calls `Exec`, `Attach` and `PortForward` (they
//! need a streaming server for the client to connect to; `ExecSync`, i.e. `crictl exec -s`,
//! works), `GetContainerEvents`, `UpdateContainerResources`, `ReopenContainerLog`, sandbox
//! stats and metrics, and checkpoints. `RuntimeConfig` answers the `cgroupfs` driver (a sandbox's
//! cgroup parent is a path, as the agent's `/staticlet/pod<uid>`; kubelet v1.34 follows the
//! runtime's answer over its own `cgroupDriver`). `UpdateRuntimeConfig` is accepted and
//! only logged (the pod CIDR is the CNI configuration's business). `Status` has no verbose
//! `info`; `ImageFsInfo` reports the filesystem of the runtime's image store
//! ([`ContainerRuntime::image_store_dir`]), and no filesystem for a runtime without one (an
//! error would fail kubeadm, whose CRI client checks the image service with this call).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use staticlet_runtime::{
    ContainerId, ContainerRuntime, ContainerStatus, ImageSpec, LabelSelector, RuntimeError,
    SandboxConfig, SandboxId, SandboxStatus,
};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

pub mod convert;

/// The CRI API version served.
pub const CRI_API_VERSION: &str = "v1";
/// What `Version` answers as the runtime's name.
pub const RUNTIME_NAME: &str = "staticlet";
/// The largest message accepted or sent (kubelet's and crictl's limit).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Makes the socket at `path`: removes a stale one, creates its directory (mode 0711, as
/// containerd's `/run/containerd`) if missing, binds, and restricts the socket to its owner and
/// group (0660).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves CRI v1 on `listener` until `shutdown` is cancelled (requests in flight finish), then
/// removes the socket file.
pub async fn serve(
    listener: UnixListener,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let path: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let server = CriServer::new(runtime);
    let res = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(server.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            ImageServiceServer::new(server)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await;
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
    res
}

/// The CRI services over one runtime. Cheap to clone.
#[derive(Clone)]
pub struct CriServer {
    runtime: Arc<dyn ContainerRuntime>,
}

impl std::fmt::Debug for CriServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriServer").finish_non_exhaustive()
    }
}

/// The gRPC status of a runtime error.
pub fn status_of(e: RuntimeError) -> Status {
    let msg = e.to_string();
    match e {
        RuntimeError::NotFound { .. } => Status::not_found(msg),
        RuntimeError::Unavailable(_) => Status::unavailable(msg),
        RuntimeError::InvalidConfig(_) => Status::invalid_argument(msg),
        RuntimeError::ImageNeverPull(_) => Status::failed_precondition(msg),
        RuntimeError::ImagePull { .. } | RuntimeError::Failed { .. } => Status::unknown(msg),
    }
}

fn unimplemented(method: &str, why: &str) -> Status {
    debug!(method, "CRI call not served");
    Status::unimplemented(format!(
        "{method} is not implemented by staticlet's CRI endpoint{why}"
    ))
}

fn required<'a>(what: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(v)
    }
}

fn image_of(method: &str, spec: Option<cri::ImageSpec>) -> Result<ImageSpec, Status> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{method}: an image is required"
        )));
    }
    Ok(ImageSpec { image })
}

/// The one ID among `ids` that `given` names: itself, else the only one it is a prefix of.
fn by_prefix<'a>(
    kind: &'static str,
    given: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<String, Status> {
    let mut found: Vec<&str> = ids.filter(|id| id.starts_with(given)).collect();
    if let Some(exact) = found.iter().find(|id| **id == given) {
        return Ok(exact.to_string());
    }
    match found.len() {
        0 => Err(status_of(RuntimeError::NotFound {
            kind,
            id: given.to_string(),
        })),
        1 => Ok(found.remove(0).to_string()),
        n => Err(Status::invalid_argument(format!(
            "{kind} ID prefix {given:?} is ambiguous: {n} {kind}s match"
        ))),
    }
}

impl CriServer {
    /// The services over `runtime`.
    pub fn new(runtime: Arc<dyn ContainerRuntime>) -> Self {
        Self { runtime }
    }

    /// The sandbox `id` names (the ID or a unique prefix of one).
    async fn sandbox(&self, id: &str) -> Result<SandboxStatus, Status> {
        let id = required("pod_sandbox_id", id)?;
        match self.runtime.pod_sandbox_status(&SandboxId(id.into())).await {
            Ok(s) => Ok(s),
            Err(RuntimeError::NotFound { .. }) => {
                let all = self
                    .runtime
                    .list_pod_sandboxes(&LabelSelector::default())
                    .await
                    .map_err(status_of)?;
                let full = by_prefix("sandbox", id, all.iter().map(|s| s.id.0.as_str()))?;
                self.runtime
                    .pod_sandbox_status(&SandboxId(full))
                    .await
                    .map_err(status_of)
            }
            Err(e) => Err(status_of(e)),
        }
    }

    /// The container `id` names (the ID or a unique prefix of one).
    async fn container(&self, id: &str) -> Result<ContainerStatus, Status> {
        let id = required("container_id", id)?;
        match self.runtime.container_status(&ContainerId(id.into())).await {
            Ok(s) => Ok(s),
            Err(RuntimeError::NotFound { .. }) => {
                let all = self
                    .runtime
                    .list_containers(&LabelSelector::default())
                    .await
                    .map_err(status_of)?;
                let full = by_prefix("container", id, all.iter().map(|c| c.id.0.as_str()))?;
                self.runtime
                    .container_status(&ContainerId(full))
                    .await
                    .map_err(status_of)
            }
            Err(e) => Err(status_of(e)),
        }
    }

    /// The sandbox a removal names, `None` when there is none (removals are idempotent).
    async fn sandbox_to_remove(&self, id: &str) -> Result<Option<SandboxId>, Status> {
        match self.sandbox(id).await {
            Ok(s) => Ok(Some(s.id)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

#[tonic::async_trait]
impl RuntimeService for CriServer {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            // The kubelet runtime API version CRI v1 runtimes answer.
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        _request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let s = self.runtime.status().await.map_err(status_of)?;
        Ok(Response::new(cri::StatusResponse {
            status: Some(convert::runtime_status_to_cri(&s)),
            ..Default::default()
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = request.into_inner();
        let mut config = convert::sandbox_config_from_cri(
            r.config
                .ok_or_else(|| Status::invalid_argument("RunPodSandbox: config is required"))?,
            r.runtime_handler,
        )
        .map_err(Status::invalid_argument)?;
        if config.hostname.is_empty() {
            let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            convert::default_hostname(&mut config, &node);
        }
        let id = self
            .runtime
            .run_pod_sandbox(&config)
            .await
            .map_err(status_of)?;
        info!(sandbox = %id, pod = %config.name, namespace = %config.namespace, "CRI: sandbox created");
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id.0,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let sb = self.sandbox(&request.into_inner().pod_sandbox_id).await?;
        self.runtime
            .stop_pod_sandbox(&sb.id)
            .await
            .map_err(status_of)?;
        info!(sandbox = %sb.id, pod = %sb.name, "CRI: sandbox stopped");
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        if let Some(id) = self
            .sandbox_to_remove(&request.into_inner().pod_sandbox_id)
            .await?
        {
            self.runtime
                .remove_pod_sandbox(&id)
                .await
                .map_err(status_of)?;
            info!(sandbox = %id, "CRI: sandbox removed");
        }
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let sb = self.sandbox(&request.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(convert::sandbox_status_to_cri(&sb)),
            timestamp: convert::nanos(SystemTime::now()),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = convert::SandboxFilter::from_cri(request.into_inner().filter);
        let mut all = self
            .runtime
            .list_pod_sandboxes(&filter.selector)
            .await
            .map_err(status_of)?;
        all.sort_by_key(|s| s.created_at);
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: all
                .iter()
                .filter(|s| filter.matches(s))
                .map(convert::sandbox_to_cri)
                .collect(),
        }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = request.into_inner();
        let sb = self.sandbox(&r.pod_sandbox_id).await?;
        let config = convert::container_config_from_cri(
            r.config
                .ok_or_else(|| Status::invalid_argument("CreateContainer: config is required"))?,
        )
        .map_err(Status::invalid_argument)?;
        // The sandbox's configuration as the client gave it (kubelet and crictl always send
        // it: its log directory is where the container's relative log path points).
        let sandbox_config = match r.sandbox_config {
            Some(c) => convert::sandbox_config_from_cri(c, String::new())
                .map_err(|e| Status::invalid_argument(format!("sandbox_config: {e}")))?,
            None => SandboxConfig {
                name: sb.name.clone(),
                namespace: sb.namespace.clone(),
                uid: sb.uid.clone(),
                attempt: sb.attempt,
                labels: sb.labels.clone(),
                annotations: sb.annotations.clone(),
                ..Default::default()
            },
        };
        if !config.log_path.as_os_str().is_empty()
            && config.log_path.is_relative()
            && sandbox_config.log_directory.as_os_str().is_empty()
        {
            return Err(Status::invalid_argument(format!(
                "log_path {:?} is relative to the sandbox's log directory, and the request \
                 has no sandbox_config.log_directory",
                config.log_path
            )));
        }
        let id = self
            .runtime
            .create_container(&sb.id, &config, &sandbox_config)
            .await
            .map_err(status_of)?;
        info!(container = %id, name = %config.name, sandbox = %sb.id, "CRI: container created");
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id.0,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let c = self.container(&request.into_inner().container_id).await?;
        self.runtime
            .start_container(&c.id)
            .await
            .map_err(status_of)?;
        info!(container = %c.id, name = %c.name, "CRI: container started");
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = request.into_inner();
        let c = self.container(&r.container_id).await?;
        self.runtime
            .stop_container(&c.id, convert::stop_timeout(r.timeout))
            .await
            .map_err(status_of)?;
        info!(container = %c.id, name = %c.name, "CRI: container stopped");
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let c = match self.container(&request.into_inner().container_id).await {
            Ok(c) => c,
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Ok(Response::new(cri::RemoveContainerResponse {}))
            }
            Err(s) => return Err(s),
        };
        self.runtime
            .remove_container(&c.id)
            .await
            .map_err(status_of)?;
        info!(container = %c.id, name = %c.name, "CRI: container removed");
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = convert::ContainerFilter::from_cri(request.into_inner().filter);
        let mut all = self
            .runtime
            .list_containers(&filter.selector)
            .await
            .map_err(status_of)?;
        all.sort_by_key(|c| c.created_at);
        Ok(Response::new(cri::ListContainersResponse {
            containers: all
                .iter()
                .filter(|c| filter.matches(c))
                .map(convert::container_to_cri)
                .collect(),
        }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let c = self.container(&request.into_inner().container_id).await?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(convert::container_status_to_cri(&c)),
            info: HashMap::new(),
        }))
    }

    async fn update_container_resources(
        &self,
        _request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        Err(unimplemented("UpdateContainerResources", ""))
    }

    async fn reopen_container_log(
        &self,
        _request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        Err(unimplemented("ReopenContainerLog", ""))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let r = request.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("ExecSync: cmd is required"));
        }
        let c = self.container(&r.container_id).await?;
        let out = self
            .runtime
            .exec_sync(&c.id, &r.cmd, convert::exec_sync_timeout(r.timeout))
            .await
            .map_err(status_of)?;
        debug!(container = %c.id, cmd = ?r.cmd, code = out.exit_code, "CRI: exec sync");
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(
        &self,
        _request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        Err(unimplemented(
            "Exec",
            " (it has no streaming server yet): use ExecSync (`crictl exec -s`), \
             `staticlet exec` or `kubectl exec`",
        ))
    }

    async fn attach(
        &self,
        _request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        Err(unimplemented(
            "Attach",
            " (it has no streaming server yet): read the container's log file",
        ))
    }

    async fn port_forward(
        &self,
        _request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        Err(unimplemented(
            "PortForward",
            " (it has no streaming server yet): use `kubectl port-forward` through the node API",
        ))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let c = self.container(&request.into_inner().container_id).await?;
        let stats = self
            .runtime
            .list_container_stats(&LabelSelector(c.labels.clone()))
            .await
            .map_err(status_of)?;
        // Only running containers are measured: another one gets its attributes alone.
        let s = stats
            .into_iter()
            .find(|s| s.id == c.id)
            .map(|s| convert::container_stats_to_cri(&s, Some(&c)))
            .unwrap_or_else(|| cri::ContainerStats {
                attributes: Some(cri::ContainerAttributes {
                    id: c.id.0.clone(),
                    metadata: Some(cri::ContainerMetadata {
                        name: c.name.clone(),
                        attempt: c.attempt,
                    }),
                    labels: c.labels.clone().into_iter().collect(),
                    annotations: c.annotations.clone().into_iter().collect(),
                }),
                ..Default::default()
            });
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(s),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = convert::ContainerFilter::from_cri_stats(request.into_inner().filter);
        let containers: HashMap<ContainerId, ContainerStatus> = self
            .runtime
            .list_containers(&filter.selector)
            .await
            .map_err(status_of)?
            .into_iter()
            .filter(|c| filter.matches(c))
            .map(|c| (c.id.clone(), c))
            .collect();
        let stats = self
            .runtime
            .list_container_stats(&filter.selector)
            .await
            .map_err(status_of)?;
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: stats
                .iter()
                .filter_map(|s| {
                    let c = containers.get(&s.id)?;
                    Some(convert::container_stats_to_cri(s, Some(c)))
                })
                .collect(),
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        _request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        Err(unimplemented("PodSandboxStats", ""))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        Err(unimplemented("ListPodSandboxStats", ""))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        info!(
            pod_cidr = %cidr,
            "CRI: UpdateRuntimeConfig accepted; nothing to change (the pod network is the CNI \
             configuration's)"
        );
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(unimplemented("CheckpointContainer", ""))
    }

    type GetContainerEventsStream = tonic::codegen::BoxStream<cri::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(unimplemented("GetContainerEvents", ""))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(unimplemented("ListMetricDescriptors", ""))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(unimplemented("ListPodSandboxMetrics", ""))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        // Every runtime behind this server takes a cgroup parent as a path (cgroupfs); none
        // makes systemd units.
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for CriServer {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let wanted = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let images = if wanted.is_empty() {
            self.runtime.list_images().await.map_err(status_of)?
        } else {
            // The runtime resolves the name (short names, tags, digests, ids) as for a status.
            self.runtime
                .image_status(&ImageSpec { image: wanted })
                .await
                .map_err(status_of)?
                .into_iter()
                .collect()
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(convert::image_to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let spec = image_of("ImageStatus", request.into_inner().image)?;
        let image = self.runtime.image_status(&spec).await.map_err(status_of)?;
        Ok(Response::new(cri::ImageStatusResponse {
            image: image.as_ref().map(convert::image_to_cri),
            info: HashMap::new(),
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = request.into_inner();
        let spec = image_of("PullImage", r.image)?;
        let auth = r.auth.map(convert::auth_from_cri);
        let image_ref = self
            .runtime
            .pull_image(&spec, auth.as_ref())
            .await
            .map_err(|e| {
                warn!(image = %spec.image, error = %e, "CRI: image pull failed");
                status_of(e)
            })?;
        info!(image = %spec.image, id = %image_ref, "CRI: image pulled");
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let spec = image_of("RemoveImage", request.into_inner().image)?;
        self.runtime.remove_image(&spec).await.map_err(status_of)?;
        info!(image = %spec.image, "CRI: image removed");
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        // Answered even without a store: clients call it to check that the image service is
        // there (k8s.io/cri-client, so kubeadm, does before anything else).
        let Some(dir) = self.runtime.image_store_dir() else {
            return Ok(Response::new(cri::ImageFsInfoResponse::default()));
        };
        let usage = tokio::task::spawn_blocking(move || filesystem_usage(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::unknown)?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: Vec::new(),
        }))
    }
}

/// The usage of the filesystem holding `dir` (`statvfs`): bytes and inodes in use.
// The statvfs counters are `c_ulong`/`fsblkcnt_t`, u32 on some targets.
#[allow(clippy::useless_conversion)]
pub fn filesystem_usage(dir: &Path) -> Result<cri::FilesystemUsage, String> {
    let st =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    let frag = u64::from(st.fragment_size());
    let used_blocks = u64::from(st.blocks()).saturating_sub(u64::from(st.blocks_free()));
    let used_inodes = u64::from(st.files()).saturating_sub(u64::from(st.files_free()));
    Ok(cri::FilesystemUsage {
        timestamp: convert::nanos(SystemTime::now()),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: dir.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: used_blocks.saturating_mul(frag),
        }),
        inodes_used: Some(cri::UInt64Value { value: used_inodes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        use tonic::Code;
        let table = [
            (
                RuntimeError::NotFound {
                    kind: "sandbox",
                    id: "x".into(),
                },
                Code::NotFound,
            ),
            (RuntimeError::Unavailable("down".into()), Code::Unavailable),
            (
                RuntimeError::InvalidConfig("bad".into()),
                Code::InvalidArgument,
            ),
            (
                RuntimeError::ImageNeverPull("i".into()),
                Code::FailedPrecondition,
            ),
            (
                RuntimeError::ImagePull {
                    image: "i".into(),
                    message: "m".into(),
                },
                Code::Unknown,
            ),
            (
                RuntimeError::Failed {
                    op: "start container",
                    message: "m".into(),
                },
                Code::Unknown,
            ),
        ];
        for (e, code) in table {
            let msg = e.to_string();
            let s = status_of(e);
            assert_eq!((s.code(), s.message()), (code, msg.as_str()));
        }
    }

    #[test]
    fn ids_resolve_exactly_or_by_unique_prefix() {
        let ids = ["abc123", "abd456", "abc"];
        let r = |given: &str| by_prefix("container", given, ids.iter().copied());
        assert_eq!(r("abd").unwrap(), "abd456");
        assert_eq!(
            r("abc").unwrap(),
            "abc",
            "an exact ID wins over longer ones"
        );
        assert_eq!(r("abc1").unwrap(), "abc123");
        let amb = r("ab").unwrap_err();
        assert_eq!(amb.code(), tonic::Code::InvalidArgument);
        assert!(amb.message().contains("ambiguous"), "{amb:?}");
        assert_eq!(r("x").unwrap_err().code(), tonic::Code::NotFound);
    }

    #[test]
    fn filesystem_usage_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = filesystem_usage(dir.path()).unwrap();
        assert_eq!(
            u.fs_id.unwrap().mountpoint,
            dir.path().to_string_lossy().as_ref()
        );
        assert!(u.used_bytes.unwrap().value > 0);
        assert!(u.inodes_used.is_some());
        assert!(filesystem_usage(&dir.path().join("missing"))
            .unwrap_err()
            .contains("missing"));
    }
}
