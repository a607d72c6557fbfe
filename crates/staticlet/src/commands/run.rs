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
use crate::{options, trim_heap_periodically};

pub async fn run(args: options::RunArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::spawn(trim_heap_periodically());
    let settings = args.settings()?;
    // A bad kubeconfig is refused before anything starts (containers keep running meanwhile).
    let cluster_client = match &args.kubeconfig {
        Some(path) => Some(
            staticlet_cluster::client_from_kubeconfig(path)
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig: {e}"))?,
        ),
        None => None,
    };
    let clock = Clock::new();
    let (runtime, runtime_name) =
        runtime_for(args.container_runtime_endpoint.as_deref(), clock, &args).await?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating --log-dir {}", args.log_dir.display()))?;
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
            Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("--listen {addr}"))?,
            )
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
        register_node: args.register_node,
        facts: staticlet_cluster::node::HostFacts::read(runtime_version),
    };
    let cfg = AgentConfig {
        node_name: settings.node_name,
        root_dir: args.root_dir.clone(),
        log_dir: args.log_dir.clone(),
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
        relist_period: Duration::from_secs(1),
    };
    let shutdown = CancellationToken::new();
    let running = agent::start(
        cfg,
        runtime,
        Listeners {
            unix: Some(unix),
            tcp,
        },
        clock,
        shutdown.clone(),
    );
    let mut cluster_tasks = None;
    if let Some((client, server)) = cluster_client {
        info!(%server, node = %cluster_cfg.node_name, "joining the cluster: Node, Lease and mirror pods");
        cluster_tasks = Some(staticlet_cluster::start(
            cluster_cfg,
            client,
            server,
            staticlet_cluster::AgentLink {
                pods: running.pods.clone(),
                readiness: running.readiness.clone(),
                view: running.cluster.clone(),
            },
            clock,
            shutdown.clone(),
        ));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down; containers keep running and are adopted by the next start");
    shutdown.cancel();
    if let Some(mut t) = cluster_tasks {
        while t.join_next().await.is_some() {}
    }
    running.wait().await;
    let _ = std::fs::remove_file(&sock);
    Ok(())
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
