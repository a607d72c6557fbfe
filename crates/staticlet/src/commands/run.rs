//! `staticlet run`: the agent, with the runtime `--container-runtime-endpoint` picks (its flags
//! and config file: `options.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use staticlet_agent::agent::{self, AgentConfig, Listeners};
use staticlet_runtime::Clock;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::runtime::runtime_for;
use crate::{kubeadm, options, trim_heap_periodically};

pub async fn run(args: options::RunArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::spawn(trim_heap_periodically());
    // Under kubeadm's layout, before `kubeadm init` wrote the config file: wait for it.
    if let Some(config) = kubeadm::awaited_config(args.config.as_deref()) {
        return match kubeadm::wait_for_config(&args, config).await? {
            kubeadm::Waited::Start => Err(exec_self()),
            kubeadm::Waited::Stopped => Ok(()),
        };
    }
    let settings = args.settings()?;
    if let (Some(file), false) = (&args.config, settings.ignored_config_fields.is_empty()) {
        tracing::warn!(
            file = %file.display(),
            "ignoring KubeletConfiguration fields staticlet does not use: {}",
            settings.ignored_config_fields.join(", ")
        );
    }
    if !settings.ignored_flags.is_empty() {
        tracing::warn!(
            "ignoring kubelet flags staticlet does not use: {}",
            settings.ignored_flags.join(", ")
        );
    }
    // The node's client certificate is bootstrapped and/or rotated (kubelet's
    // --bootstrap-kubeconfig, rotateCertificates) by the cluster side, in the background.
    let cert_config = managed_identity(&args, &settings);
    // A bad kubeconfig is refused before anything starts (containers keep running meanwhile);
    // one that TLS bootstrap may replace is not.
    let cluster_client = match &args.kubeconfig {
        Some(_) if cert_config.is_some() => None,
        Some(path) => Some(
            staticlet_cluster::client_from_kubeconfig(path)
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig: {e}"))?,
        ),
        None => None,
    };
    let (reviewer_tx, reviewer_rx) = tokio::sync::watch::channel(None);
    let cri_listen = kubeadm::cri_listen(
        args.cri_listen.as_deref(),
        args.config.as_deref(),
        settings.container_runtime_endpoint.as_deref(),
    );
    let endpoint = effective_endpoint(
        settings.container_runtime_endpoint.as_deref(),
        cri_listen.as_deref(),
    );
    let cri_socket = cri_listen_path(cri_listen.as_deref(), endpoint)?;
    let clock = Clock::new();
    let (runtime, runtime_name) = runtime_for(
        endpoint,
        clock,
        &args,
        settings.pod_cidr.as_deref(),
        &settings.cgroup_driver,
    )
    .await?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;
    std::fs::create_dir_all(&settings.log_dir)
        .with_context(|| format!("creating --log-dir {}", settings.log_dir.display()))?;
    let sock = args.root_dir.join("staticlet.sock");
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding the local API socket {}", sock.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", sock.display()))?;
    }
    let tcp = match &args.listen {
        None => None,
        Some(addr) => {
            let a = addr.strip_prefix("tcp://").unwrap_or(addr);
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("--listen {addr}"))?;
            // The local API has no authentication: only this machine may reach it (the node
            // API on --port is the authenticated one).
            let bound = l.local_addr()?;
            if !bound.ip().is_loopback() {
                anyhow::bail!(
                    "--listen {addr}: the local API has no authentication, so it listens on a \
                     loopback address only (e.g. tcp://127.0.0.1:10255); use the node API \
                     (--port, with TLS and client authentication) for remote access"
                );
            }
            Some(l)
        }
    };
    let host_ip = args
        .node_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(detect_host_ip);
    info!(
        node = %settings.node_name,
        manifests = ?settings.pod_manifest_path,
        url = ?settings.manifest_url,
        socket = %sock.display(),
        "staticlet {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let runtime_version = match runtime.version().await {
        Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the container runtime's version");
            format!("{runtime_name}://unknown")
        }
    };
    let cluster_cfg = staticlet_cluster::ClusterConfig {
        node_name: settings.node_name.clone(),
        host_ip: host_ip.clone(),
        node_labels: args.node_labels.clone(),
        register_node: settings.register_node,
        register_with_taints: settings.register_with_taints.clone(),
        facts: staticlet_cluster::node::HostFacts::read(runtime_version),
        kubelet_port: settings.node_api.listen.map_or(0, |a| a.port()),
    };
    // The node API is bound before anything starts: a port in use is an error at start.
    let node_api_listener = match settings.node_api.listen {
        Some(addr) => Some(
            staticlet_kubelet_server::bind(addr, "node API (--address/--port)")
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    // serverTLSBootstrap (with a cluster): the node API's serving certificate is the one the
    // cluster issues (a valid one in the cert dir is used at once); tlsCertFile and
    // tlsPrivateKeyFile are not used then, as in kubelet.
    let serving = match (&node_api_listener, &args.kubeconfig) {
        (Some(_), Some(_)) if settings.server_tls_bootstrap => {
            let cfg = staticlet_cluster::serving::ServingConfig {
                cert_dir: settings.node_api.cert_dir.clone(),
                node_name: settings.node_name.clone(),
                host_ip: host_ip.clone(),
            };
            let initial =
                staticlet_cluster::serving::load(&cfg.store(), std::time::SystemTime::now());
            let resolver = staticlet_cluster::certificate::SwappableIdentity::empty();
            if let Some(id) = &initial {
                resolver.set_until(id.key.clone(), id.not_after);
            }
            if settings.node_api.tls_cert_file.is_some() {
                tracing::warn!("serverTLSBootstrap: the node API serves the certificate the cluster issues; tlsCertFile and tlsPrivateKeyFile are not used");
            }
            Some((cfg, resolver, initial))
        }
        _ => None,
    };
    // The CRI endpoint is bound before anything starts too.
    let cri_listener = match &cri_socket {
        Some(path) => Some(
            staticlet_cri_server::bind(path)
                .with_context(|| format!("--cri-listen: binding {}", path.display()))?,
        ),
        None => None,
    };
    let node = staticlet_agent::kuberuntime::NodeContext {
        node_name: settings.node_name.clone(),
        root_dir: args.root_dir.clone(),
        log_dir: settings.log_dir.clone(),
        host_ip: host_ip.clone(),
    };
    let cfg = AgentConfig {
        node_name: settings.node_name,
        root_dir: args.root_dir.clone(),
        log_dir: settings.log_dir.clone(),
        host_ip,
        pod_manifest_path: settings.pod_manifest_path,
        manifest_url: settings.manifest_url,
        manifest_url_headers: settings.manifest_url_headers,
        file_check_frequency: settings.file_check_frequency,
        http_check_frequency: settings.http_check_frequency,
        // The simulator makes no cgroups: nothing of the host's to clean up after its pods.
        cgroup_mountinfo: (runtime_name != "simulate")
            .then(|| PathBuf::from(staticlet_runtime::cgroups::MOUNTINFO)),
        runtime_name,
        relist_period: args.relist_period.max(Duration::from_millis(100)),
        manifest_permissions: args.manifest_permissions,
        node_shutdown: settings.node_shutdown.clone(),
        image_gc: settings.image_gc,
        rollout_ready_deadline: args.rollout_ready_deadline.filter(|d| !d.is_zero()),
    };
    let shutdown = CancellationToken::new();
    let agent_runtime = runtime.clone();
    let running = agent::start(
        cfg,
        agent_runtime,
        // The unix socket is served below, with the node API's logs/exec/port-forward routes.
        Listeners { unix: None, tcp },
        clock,
        shutdown.clone(),
    );
    if let (Some(policy), Some(events)) = (&settings.node_shutdown, running.node_shutdown.clone()) {
        tokio::spawn(crate::logind::watch(
            policy.requested(),
            events,
            shutdown.clone(),
        ));
    }
    let api = staticlet_agent::server::ApiState {
        pods: running.pods.clone(),
        manifests: running.manifests.clone(),
        readiness: running.readiness.clone(),
        cluster: running.cluster.subscribe(),
        runtime: runtime.clone(),
        counters: running.counters.clone(),
    };
    let node_api = staticlet_kubelet_server::NodeApi {
        api: api.clone(),
        node: node.clone(),
        rates: Default::default(),
    };
    // The local API (root only) with the node API's logs, exec and port-forward: `staticlet
    // logs` and `staticlet exec` need no --log-dir and no runtime of their own.
    let local = tokio::spawn(staticlet_agent::server::serve(
        unix,
        staticlet_agent::server::router(api)
            .merge(staticlet_kubelet_server::routes::local_router(
                node_api.clone(),
            ))
            .merge(staticlet_agent::server::control_router(
                running.control.clone(),
            )),
        shutdown.clone(),
    ));
    if let (Some(listener), Some(path)) = (cri_listener, &cri_socket) {
        info!(socket = %path.display(), "serving CRI v1 for kubeadm and crictl");
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = staticlet_cri_server::serve(listener, runtime, shutdown).await {
                tracing::error!(error = %e, "the CRI endpoint (--cri-listen) stopped");
            }
        });
    }
    if let Some(healthz) = settings.node_api.healthz {
        tokio::spawn(serve_healthz(healthz, shutdown.clone()));
    }
    // The current cluster client (renewed with the client certificate), for the serving
    // certificate's CSRs.
    let (_fixed_client, fixed) =
        tokio::sync::watch::channel(cluster_client.as_ref().map(|(c, _)| c.clone()));
    let clients = match (&cluster_client, &cert_config) {
        (None, Some(_)) => reviewer_rx.clone(),
        _ => fixed,
    };
    if let Some(listener) = node_api_listener {
        let reviewer = match (&cluster_client, &cert_config) {
            (Some((client, _)), _) => Some(staticlet_kubelet_server::auth::KubeReviewer::new(
                client.clone(),
            )),
            (None, Some(_)) => Some(staticlet_kubelet_server::auth::KubeReviewer::following(
                reviewer_rx.clone(),
            )),
            (None, None) => None,
        }
        .map(|r| {
            std::sync::Arc::new(r) as std::sync::Arc<dyn staticlet_kubelet_server::auth::Reviewer>
        });
        let client_ca = settings
            .node_api
            .client_ca_file
            .as_deref()
            .map(staticlet_kubelet_server::tls::ClientCa::load)
            .transpose()
            .map_err(|e| anyhow::anyhow!("node API (--client-ca-file): {e}"))?;
        let tls = match &serving {
            Some((_, resolver, _)) => staticlet_kubelet_server::tls::server_config_with_resolver(
                resolver.clone(),
                client_ca.as_ref(),
            )
            .map_err(|e| anyhow::anyhow!("node API: {e}"))?,
            None => node_api_tls(&settings.node_api, &node, client_ca.as_ref())?,
        };
        let auth = node_api_auth(&settings.node_api, reviewer)?;
        info!(address = %listener.local_addr()?, "serving the node API (kubectl logs, exec, port-forward, top)");
        tokio::spawn(staticlet_kubelet_server::serve(
            listener,
            tls,
            client_ca,
            node_api,
            std::sync::Arc::new(auth),
            shutdown.clone(),
        ));
    }
    let mut cluster_tasks = None;
    let link = staticlet_cluster::AgentLink {
        pods: running.pods.clone(),
        readiness: running.readiness.clone(),
        view: running.cluster.clone(),
    };
    if let Some(cert) = cert_config {
        info!(kubeconfig = %cert.kubeconfig.display(), bootstrap = ?cert.bootstrap_kubeconfig, cert_dir = %cert.cert_dir.display(), rotate = cert.rotate, node = %cluster_cfg.node_name, "joining the cluster with a managed client certificate (TLS bootstrap, rotation)");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(staticlet_cluster::identity::run(
            cert,
            cluster_cfg.clone(),
            link.clone(),
            reviewer_tx,
            clock,
            shutdown.clone(),
        ));
        cluster_tasks = Some(tasks);
    } else if let Some((client, server)) = cluster_client {
        info!(%server, node = %cluster_cfg.node_name, "joining the cluster: Node, Lease and mirror pods");
        cluster_tasks = Some(staticlet_cluster::start(
            cluster_cfg,
            client,
            server,
            link,
            clock,
            shutdown.clone(),
        ));
    }
    let serving_task = serving.map(|(cfg, resolver, initial)| {
        info!(cert_dir = %cfg.cert_dir.display(), "serverTLSBootstrap: the node API's serving certificate is requested from the cluster (kubernetes.io/kubelet-serving) and renewed");
        tokio::spawn(staticlet_cluster::serving::run(
            cfg,
            resolver,
            initial,
            clients,
            running.cluster.clone(),
            shutdown.clone(),
        ))
    });
    tokio::spawn(crate::systemd::notify(
        running.desired.clone(),
        running.pods.clone(),
        running.heartbeat.clone(),
        shutdown.clone(),
    ));
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reload = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break false,
            _ = term.recv() => break false,
            _ = hup.recv() => match crate::reload_check() {
                Ok(()) => break true,
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::error!(error = %why, "SIGHUP: the new configuration is refused; running on with the current one");
                    crate::systemd::reload_refused(&why);
                }
            },
        }
    };
    if reload {
        info!("SIGHUP: reloading (the agent restarts itself with the new configuration; containers keep running and are adopted)");
        crate::systemd::reloading();
    } else {
        info!("shutting down; containers keep running and are adopted by the next start");
    }
    shutdown.cancel();
    if let Some(mut t) = cluster_tasks {
        while t.join_next().await.is_some() {}
    }
    if let Some(t) = serving_task {
        let _ = t.await;
    }
    running.wait().await;
    let _ = local.await;
    let _ = std::fs::remove_file(&sock);
    if let Some(p) = &cri_socket {
        let _ = std::fs::remove_file(p);
    }
    if reload {
        return Err(exec_self());
    }
    Ok(())
}

/// Replaces this process with the same binary and command line (a reload: the configuration
/// files are read again). `/proc/self/exe` is the running binary even if its file was replaced
/// since (a package upgrade restarts the unit instead). Also how the agent starts with the
/// files kubeadm wrote (`kubeadm.rs`). Returns only on failure.
pub(crate) fn exec_self() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut argv = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = argv.next() {
        cmd.arg0(arg0);
    }
    let e = cmd.args(argv).exec();
    anyhow::anyhow!("cannot execute /proc/self/exe again: {e}")
}

/// The socket of `--cri-listen unix:///path`. CRI is served for the embedded runtime (and the
/// simulator); a CRI runtime has its own endpoint, which kubeadm and crictl should use.
fn cri_listen_path(cri_listen: Option<&str>, endpoint: Option<&str>) -> Result<Option<PathBuf>> {
    let Some(uri) = cri_listen else {
        return Ok(None);
    };
    if let Some(e) = endpoint.filter(|e| !e.starts_with("simulate://")) {
        anyhow::bail!(
            "--cri-listen serves staticlet's embedded runtime; with --container-runtime-endpoint \
             {e} point kubeadm and crictl at that runtime's own socket instead"
        );
    }
    match uri.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(Some(PathBuf::from(p))),
        _ => anyhow::bail!("--cri-listen {uri:?}: expected unix:///absolute/path"),
    }
}

/// The runtime to use: a `containerRuntimeEndpoint` naming staticlet's own CRI socket
/// (`--cri-listen`, as kubeadm writes its `criSocket` into the KubeletConfiguration) means the
/// embedded runtime behind it; any other names that runtime.
fn effective_endpoint<'a>(endpoint: Option<&'a str>, cri_listen: Option<&str>) -> Option<&'a str> {
    match (endpoint, cri_listen) {
        (Some(e), Some(own)) if kubeadm::socket_path(e) == kubeadm::socket_path(own) => None,
        (e, _) => e,
    }
}

/// kubelet's plain-HTTP healthz endpoint. A port in use is retried every 5 s, as kubelet
/// does, without stopping the agent.
async fn serve_healthz(addr: std::net::SocketAddr, shutdown: CancellationToken) {
    let mut warned = false;
    loop {
        match staticlet_kubelet_server::bind(addr, "healthz endpoint (--healthz-port)").await {
            Ok(l) => {
                info!(%addr, "serving /healthz");
                return staticlet_kubelet_server::serve_healthz(l, shutdown).await;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("{e}; retrying every 5 s");
                    warned = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

/// The node API's TLS: its serving certificate (the given files, else a self-signed one for
/// the node's name and addresses) and the client CA.
fn node_api_tls(
    s: &options::NodeApiSettings,
    node: &staticlet_agent::kuberuntime::NodeContext,
    client_ca: Option<&staticlet_kubelet_server::tls::ClientCa>,
) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    use staticlet_kubelet_server::tls;
    let src = match (&s.tls_cert_file, &s.tls_private_key_file) {
        (Some(cert), Some(key)) => tls::ServingCert::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let mut names = vec![node.node_name.clone()];
            if let Ok(h) = options::default_hostname() {
                if !names.contains(&h) && !h.is_empty() {
                    names.push(h);
                }
            }
            let mut ips: Vec<std::net::IpAddr> = node.host_ip.parse().into_iter().collect();
            if let Some(a) = s.listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
                if !ips.contains(&a) {
                    ips.push(a);
                }
            }
            tls::ServingCert::SelfSigned {
                dir: s.cert_dir.clone(),
                names,
                ips,
            }
        }
    };
    let (cert, key) =
        tls::serving_cert_files(&src).map_err(|e| anyhow::anyhow!("node API: {e}"))?;
    tls::server_config(&cert, &key, client_ca).map_err(|e| anyhow::anyhow!("node API: {e}"))
}

/// The node API's authentication and authorization, kubelet's way.
fn node_api_auth(
    s: &options::NodeApiSettings,
    reviewer: Option<std::sync::Arc<dyn staticlet_kubelet_server::auth::Reviewer>>,
) -> Result<staticlet_kubelet_server::auth::Auth> {
    use staticlet_kubelet_server::auth::{Auth, AuthnConfig, AuthzConfig};
    let webhook = match (s.token_webhook, &reviewer) {
        (Some(ttl), Some(r)) => Some((r.clone(), ttl)),
        _ => None,
    };
    let authz = match (s.authz, reviewer) {
        (options::AuthzMode::AlwaysAllow, _) => AuthzConfig::AlwaysAllow,
        (options::AuthzMode::Webhook, Some(reviewer)) => AuthzConfig::Webhook {
            reviewer,
            authorized_ttl: s.authorized_ttl,
            unauthorized_ttl: s.unauthorized_ttl,
        },
        (options::AuthzMode::Webhook, None) => {
            anyhow::bail!("--authorization-mode Webhook needs --kubeconfig")
        }
    };
    Ok(Auth::new(
        AuthnConfig {
            anonymous: s.anonymous,
            webhook,
        },
        authz,
    ))
}

fn detect_host_ip() -> String {
    use std::net::ToSocketAddrs;
    let host = options::default_hostname().unwrap_or_default();
    (host.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.find(|a| a.is_ipv4() && !a.ip().is_loopback()))
        .map(|a| a.ip().to_string())
        .or_else(default_route_ip)
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// The source address of the default route (as kubelet's `ChooseHostInterface`): a UDP socket
/// "connected" to a global address picks the route; no packet is sent.
fn default_route_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.254:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// Whether the cluster side manages the node's client certificate: with --kubeconfig and
/// --bootstrap-kubeconfig (TLS bootstrap, and rotation if on), or with rotateCertificates and a
/// kubeconfig whose user has a client certificate (a token or exec kubeconfig is used as is).
fn managed_identity(
    args: &options::RunArgs,
    settings: &options::Settings,
) -> Option<staticlet_cluster::identity::CertConfig> {
    let kubeconfig = args.kubeconfig.clone()?;
    if args.bootstrap_kubeconfig.is_none() {
        if !settings.rotate_certificates {
            return None;
        }
        if let Err(e) = staticlet_cluster::identity::kubeconfig_identity(&kubeconfig) {
            tracing::warn!(error = %e, "rotateCertificates: the kubeconfig has no usable client certificate to rotate; using it as is");
            return None;
        }
    }
    Some(staticlet_cluster::identity::CertConfig {
        kubeconfig,
        bootstrap_kubeconfig: settings.bootstrap_kubeconfig.clone(),
        cert_dir: settings.node_api.cert_dir.clone(),
        rotate: settings.rotate_certificates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staticlets_own_cri_socket_means_the_embedded_runtime() {
        let own = Some("unix:///run/staticlet/cri.sock");
        assert_eq!(
            effective_endpoint(Some("unix:///run/staticlet/cri.sock"), own),
            None
        );
        assert_eq!(
            effective_endpoint(Some("/run/staticlet/cri.sock"), own),
            None
        );
        let containerd = Some("unix:///run/containerd/containerd.sock");
        assert_eq!(effective_endpoint(containerd, own), containerd);
        assert_eq!(effective_endpoint(containerd, None), containerd);
        assert_eq!(effective_endpoint(None, own), None);
        assert!(cri_listen_path(own, containerd).is_err());
        assert!(cri_listen_path(Some("tcp://x"), None).is_err());
        assert_eq!(
            cri_listen_path(own, None).unwrap(),
            Some(PathBuf::from("/run/staticlet/cri.sock"))
        );
    }
}
