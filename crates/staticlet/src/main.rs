//! `staticlet`: the thin binary. Parses the command line, sets up logging, picks the runtime,
//! and calls into `staticlet-agent`. No logic of its own beyond printing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use staticlet_agent::agent::{self, AgentConfig, Listeners};
use staticlet_agent::config::file::FileSource;
use staticlet_runtime::{Clock, ContainerRuntime};
use tokio_util::sync::CancellationToken;
use tracing::info;

mod client;
mod describe;
mod logs;
mod options;

#[derive(Parser)]
#[command(
    name = "staticlet",
    version,
    about = "Runs Kubernetes static pods",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent.
    Run(Box<options::RunArgs>),
    /// Show pods or manifests of the running agent.
    Get(GetArgs),
    /// Check manifests offline, with the agent's own decoding and validation.
    Validate(ValidateArgs),
    /// Manage the embedded runtime's images.
    Images(ImagesArgs),
    /// Print a container's logs (kubectl's flags).
    Logs(LogsArgs),
    /// Run a command in a running container (embedded runtime; not interactive).
    Exec(ExecArgs),
    /// Wait for a pod's condition or deletion (kubectl's syntax).
    Wait(WaitArgs),
    /// Describe a pod: containers, probes, conditions, recent events.
    Describe(DescribeArgs),
}

#[derive(clap::Args)]
struct DescribeArgs {
    /// `pod` (or `pods`).
    resource: String,
    /// The pod's name (`<name>-<node>`).
    name: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Args)]
struct WaitArgs {
    /// `pod` (or `pods`).
    resource: String,
    /// The pod's name (`<name>-<node>`).
    name: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// `condition=Ready` (any condition type, `=false` for False), `delete`, or
    /// `jsonpath={.status.phase}=Running`.
    #[arg(long = "for")]
    for_: String,
    /// Give up after this long (Go duration syntax); exit code 1 then.
    #[arg(long, default_value = "30s", value_parser = staticlet_manifest::duration::parse_go_duration)]
    timeout: Duration,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
}

/// What `staticlet wait` waits for.
#[derive(Debug, PartialEq, Eq)]
enum WaitFor {
    Condition { type_: String, status: String },
    Delete,
    Phase(String),
}

fn parse_wait_for(s: &str) -> Result<WaitFor> {
    if s == "delete" {
        return Ok(WaitFor::Delete);
    }
    if let Some(rest) = s.strip_prefix("condition=") {
        let (t, v) = rest.split_once('=').unwrap_or((rest, "true"));
        if t.is_empty() {
            bail!("--for={s}: a condition type is needed, e.g. condition=Ready");
        }
        let status = match v.to_ascii_lowercase().as_str() {
            "true" => "True",
            "false" => "False",
            "unknown" => "Unknown",
            other => bail!("--for={s}: condition value {other:?} must be true, false or unknown"),
        };
        return Ok(WaitFor::Condition {
            type_: t.to_string(),
            status: status.to_string(),
        });
    }
    if let Some(rest) = s.strip_prefix("jsonpath={.status.phase}=") {
        return Ok(WaitFor::Phase(rest.to_string()));
    }
    bail!("--for={s}: expected condition=TYPE[=true|false], delete or jsonpath={{.status.phase}}=PHASE")
}

fn wait_satisfied(pod: Option<&serde_json::Value>, want: &WaitFor) -> bool {
    match (want, pod) {
        (WaitFor::Delete, None) => true,
        (WaitFor::Delete, Some(_)) | (_, None) => false,
        (WaitFor::Phase(p), Some(pod)) => pod["status"]["phase"] == p.as_str(),
        (WaitFor::Condition { type_, status }, Some(pod)) => pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(type_))
                    && c["status"] == status.as_str()
            }),
    }
}

#[derive(clap::Args)]
struct ExecArgs {
    /// The pod's name (`<name>-<node>`).
    pod: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Container (default: the first).
    #[arg(short, long)]
    container: Option<String>,
    /// Give up after this long (Go duration syntax).
    #[arg(long, default_value = "1m", value_parser = staticlet_manifest::duration::parse_go_duration)]
    timeout: Duration,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct LogsArgs {
    /// The pod's name (`<name>-<node>`).
    pod: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Container (required when the pod has several).
    #[arg(short, long)]
    container: Option<String>,
    /// Follow the log.
    #[arg(short, long)]
    follow: bool,
    /// The previous (terminated) instance of the container.
    #[arg(short, long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Prefix lines with their timestamps.
    #[arg(long)]
    timestamps: bool,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// The agent's --log-dir.
    #[arg(long, default_value = "/var/log/pods")]
    log_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Args)]
struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
    /// Root directory of the agent (images live in `<root-dir>/images`).
    #[arg(long, default_value = "/var/lib/staticlet", global = true)]
    root_dir: PathBuf,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Import a docker-archive tarball (`docker save`), an OCI archive or an OCI layout directory.
    Import { file: PathBuf },
    /// List images (REPOSITORY TAG DIGEST SIZE).
    #[command(alias = "ls")]
    List,
    /// Remove an image (refused while a container uses it).
    Rm { reference: String },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Wide,
    Json,
    Yaml,
}

#[derive(clap::Args)]
struct GetArgs {
    /// `pods`, `pod NAME`, or `manifests`.
    #[arg(value_name = "RESOURCE", required_unless_present = "raw")]
    resource: Option<String>,
    /// Print the body of a local API path as is (kubectl's `get --raw`), e.g. /metrics.
    #[arg(long, value_name = "PATH", conflicts_with = "resource")]
    raw: Option<String>,
    /// The pod's name (with `pod`).
    name: Option<String>,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Output format.
    #[arg(short, long, value_enum)]
    output: Option<Output>,
    /// Root directory of the agent (its socket is `<root-dir>/staticlet.sock`).
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Manifest files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Node name to validate for [default: the hostname].
    #[arg(long)]
    hostname_override: Option<String>,
}

/// The hidden argument that turns this binary into a container shim (see `staticlet-shim`).
const SHIM_PREFIX: &str = "__shim";

/// glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core;
/// the agent's tokio workers and blocking threads (many while pods start) each kept one with
/// its own free space: 15 arenas held ~6 MiB for a live heap of ~2.4 MiB with 50 pods (measured
/// with heaptrack and /proc/PID/smaps). Two arenas are plenty at the agent's allocation rate.
/// Set before any thread exists.
///
/// Also fixes the mmap threshold at glibc's initial 128 KiB: by default the first free of a
/// large block raises it, after which big transient buffers (a `PodList` of 50 pods served
/// while pods start) come from the heap and fragment it instead of being returned at once.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets allocator parameters; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the free pages inside the heap back to the kernel every 10 s (glibc returns only
/// the free top of a heap by itself; a start burst leaves holes: about 0.6 MiB with 50 pods,
/// measured by calling `malloc_trim` in a running agent through gdb).
async fn trim_heap_periodically() {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        trim_heap();
    }
}

#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> ExitCode {
    // Shim modes must start before any thread exists (libcontainer forks with raw clone3).
    let mut argv = std::env::args_os();
    if argv.nth(1).as_deref() == Some(std::ffi::OsStr::new(SHIM_PREFIX)) {
        return match staticlet_shim::ShimArgs::parse(argv) {
            Ok(args) => staticlet_shim::shim_main(args),
            Err(e) => {
                eprintln!("staticlet {SHIM_PREFIX}: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cli = Cli::parse();
    // The agent logs at info; the client commands only print their results.
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "off"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STATICLET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Get(args) => get(args).await.map(|()| ExitCode::SUCCESS),
            Command::Validate(args) => validate(args),
            Command::Images(args) => images(args).map(|()| ExitCode::SUCCESS),
            Command::Logs(args) => logs_cmd(args).await.map(|()| ExitCode::SUCCESS),
            Command::Exec(args) => exec_cmd(args).await,
            Command::Wait(args) => wait_cmd(args).await,
            Command::Describe(args) => describe_cmd(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// How the embedded runtime starts shims: the small `staticlet-shim` binary installed next to
/// this one if there is one (its resident memory is smaller), else this binary in shim mode.
fn shim_reexec() -> Result<staticlet_shim::Reexec> {
    let exe = std::env::current_exe().context("locating the staticlet binary")?;
    let small = exe.with_file_name("staticlet-shim");
    Ok(if small.is_file() {
        staticlet_shim::Reexec {
            exe: small,
            prefix: vec![],
        }
    } else {
        staticlet_shim::Reexec {
            exe,
            prefix: vec![SHIM_PREFIX.into()],
        }
    })
}

async fn runtime_for(
    endpoint: Option<&str>,
    clock: Clock,
    args: &options::RunArgs,
) -> Result<(Arc<dyn ContainerRuntime>, String)> {
    match endpoint {
        Some(e) if e.starts_with("simulate://") => {
            info!("using the simulator runtime: containers are simulated, nothing is executed");
            let rt = staticlet_runtime::fake::FakeRuntime::new(clock);
            // `simulate://?ignore-stop-signal=a,b`: containers named a or b ignore their stop
            // signal and are killed when the grace period ends (demos and tests of grace).
            let query = e.trim_start_matches("simulate://").trim_start_matches('?');
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                match kv.split_once('=') {
                    Some(("ignore-stop-signal", names)) => {
                        for n in names.split(',').filter(|n| !n.is_empty()) {
                            rt.script(
                                n,
                                staticlet_runtime::fake::Script::forever().on_signal(None),
                            );
                        }
                    }
                    _ => bail!(
                        "--container-runtime-endpoint {e:?}: unknown simulator option {kv:?} \
                         (known: ignore-stop-signal=NAME[,NAME])"
                    ),
                }
            }
            Ok((Arc::new(rt), "simulate".into()))
        }
        Some(e) if e.starts_with("unix://") => {
            // The runtime may start after us (a node booting): wait for it, saying why.
            let mut delay = Duration::from_millis(500);
            let rt = loop {
                match staticlet_runtime_cri::CriRuntime::connect(e, Default::default()).await {
                    Ok(rt) => break rt,
                    Err(staticlet_runtime::RuntimeError::Unavailable(msg)) => {
                        tracing::warn!(endpoint = e, error = %msg, "container runtime not reachable yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    Err(other) => bail!("--container-runtime-endpoint {e}: {other}"),
                }
            };
            let name = rt.connected_version().runtime_name.clone();
            info!(endpoint = e, runtime = %name, "using the CRI runtime");
            Ok((Arc::new(rt), name))
        }
        Some(e) => {
            bail!("--container-runtime-endpoint {e:?}: expected unix:///path or simulate://")
        }
        None => {
            let rt = staticlet_runtime_embedded::EmbeddedRuntime::new(
                staticlet_runtime_embedded::Config {
                    root_dir: args.root_dir.clone(),
                    reexec: shim_reexec()?,
                    cni_conf_dir: args.cni_conf_dir.clone(),
                    cni_bin_dirs: args.cni_bin_dir.clone(),
                    image_credentials: match &args.image_credentials {
                        Some(f) => vec![f.clone()],
                        None => {
                            let mut v = vec![args.root_dir.join("config.json")];
                            if let Some(home) = std::env::var_os("HOME") {
                                v.push(PathBuf::from(home).join(".docker/config.json"));
                            }
                            v
                        }
                    },
                    insecure_registries: args.insecure_registry.clone(),
                },
            )
            .map_err(|e| anyhow::anyhow!("embedded runtime: {e}"))?;
            Ok((Arc::new(rt), "staticlet".into()))
        }
    }
}

async fn run(args: options::RunArgs) -> Result<()> {
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

async fn get(args: GetArgs) -> Result<()> {
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let now = std::time::SystemTime::now();
    if let Some(path) = &args.raw {
        let path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        let (code, body) = server.get(&path).await?;
        if code != 200 {
            bail!(
                "{path}: the agent answered {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        use std::io::Write;
        std::io::stdout().write_all(&body)?;
        return Ok(());
    }
    let resource = args.resource.clone().unwrap_or_default();
    match (resource.as_str(), &args.name) {
        ("pods" | "pod" | "po", None) => {
            let (code, body) = server.get("/pods").await?;
            if code != 200 {
                bail!(
                    "the agent answered {code}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let list = client::decode_pod_list(&body)?;
            match args.output {
                Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&list)?),
                Some(Output::Yaml) => print!("{}", serde_saphyr::to_string(&list)?),
                wide => {
                    if list.items.is_empty() {
                        eprintln!("No resources found");
                    } else {
                        print!(
                            "{}",
                            client::pod_table(&list.items, wide == Some(Output::Wide), now)
                        );
                    }
                }
            }
        }
        ("pods" | "pod" | "po", Some(name)) => {
            let (code, body) = server
                .get(&format!("/pods/{}/{}", args.namespace, name))
                .await?;
            if code == 404 {
                bail!("pods {name:?} not found in namespace {:?}", args.namespace);
            }
            if code != 200 {
                bail!(
                    "the agent answered {code}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_slice(&body)?;
            match args.output {
                Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&pod)?),
                Some(Output::Yaml) => print!("{}", serde_saphyr::to_string(&pod)?),
                wide => print!(
                    "{}",
                    client::pod_table(&[pod], wide == Some(Output::Wide), now)
                ),
            }
        }
        ("manifests" | "manifest", _) => {
            let (code, body) = server.get("/manifests").await?;
            if code != 200 {
                bail!(
                    "the agent answered {code}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            match args.output {
                Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&v)?),
                Some(Output::Yaml) => print!("{}", serde_saphyr::to_string(&v)?),
                _ => print!("{}", manifests_table(&v, now)),
            }
        }
        (other, _) => bail!("unknown resource {other:?}: expected pods, pod NAME or manifests"),
    }
    Ok(())
}

fn manifests_table(v: &serde_json::Value, now: std::time::SystemTime) -> String {
    let mut rows = vec![["SOURCE", "ORIGIN", "PODS", "STATUS", "APPLIED"]
        .map(String::from)
        .to_vec()];
    for m in v["items"].as_array().into_iter().flatten() {
        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
        let pods: Vec<String> = m["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        let status = match (m["error"].as_str(), m["stale"].as_bool().unwrap_or(false)) {
            (Some(e), true) => format!(
                "Error (running last good): {}",
                e.lines().next().unwrap_or("")
            ),
            (Some(e), false) => format!("Error: {}", e.lines().next().unwrap_or("")),
            (None, true) => "Cached".into(),
            (None, false) => "Applied".into(),
        };
        let applied = m["lastApplied"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| {
                let now = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                format!("{} ago", client::human_duration(now - t.as_second()))
            })
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            s("source"),
            s("origin"),
            if pods.is_empty() {
                "<none>".into()
            } else {
                pods.join(",")
            },
            status,
            applied,
        ]);
    }
    client::format_table(&rows)
}

async fn describe_cmd(args: DescribeArgs) -> Result<()> {
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        bail!(
            "unknown resource {:?}: only pods can be described",
            args.resource
        );
    }
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let pod = server.existing_pod(&args.namespace, &args.name).await?;
    let (code, body) = server
        .get(&format!("/pods/{}/{}/events", args.namespace, args.name))
        .await?;
    let events: serde_json::Value = if code == 200 {
        serde_json::from_slice(&body)?
    } else {
        serde_json::json!({"items": []})
    };
    print!(
        "{}",
        describe::render(&pod, &events, std::time::SystemTime::now())
    );
    Ok(())
}

async fn wait_cmd(args: WaitArgs) -> Result<ExitCode> {
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        bail!(
            "unknown resource {:?}: only pods can be waited for",
            args.resource
        );
    }
    let want = parse_wait_for(&args.for_)?;
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let pod = server.pod(&args.namespace, &args.name).await?;
        if wait_satisfied(pod.as_ref(), &want) {
            match want {
                WaitFor::Delete => println!("pod/{} deleted", args.name),
                _ => println!("pod/{} condition met", args.name),
            }
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "error: timed out waiting for the condition on pods/{}",
                args.name
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn exec_cmd(args: ExecArgs) -> Result<ExitCode> {
    let server = client::Server::resolve(None, &args.root_dir)?;
    let pod = server.existing_pod(&args.namespace, &args.pod).await?;
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let st = match &args.container {
        Some(c) => statuses.iter().find(|s| s["name"] == c.as_str()),
        None => statuses.first(),
    }
    .with_context(|| format!("no such container in pod {}", args.pod))?;
    if st["state"]["running"].is_null() {
        bail!("container {} is not running", st["name"]);
    }
    let id = st["containerID"]
        .as_str()
        .and_then(|c| c.strip_prefix("staticlet://"))
        .with_context(|| "exec works with the embedded runtime's containers only".to_string())?;
    let state_dir = args
        .root_dir
        .join("runtime/containers")
        .join(id)
        .join("shim");
    let reexec = shim_reexec()?;
    let out = tokio::task::spawn_blocking(move || {
        staticlet_shim::exec_in_container(
            &reexec,
            staticlet_shim::ExecTarget::StateDir(&state_dir),
            &args.command,
            &[],
            args.timeout,
        )
    })
    .await??;
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8))
}

async fn logs_cmd(args: LogsArgs) -> Result<()> {
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let pod = server.existing_pod(&args.namespace, &args.pod).await?;
    let file = logs::log_file(
        &args.log_dir,
        &pod,
        args.container.as_deref(),
        args.previous,
    )?;
    tokio::task::spawn_blocking(move || logs::print(&file, args.tail, args.timestamps, args.follow))
        .await?
}

fn images(args: ImagesArgs) -> Result<()> {
    let store = staticlet_images::ImageStore::open(&args.root_dir)
        .with_context(|| format!("opening the image store under {}", args.root_dir.display()))?;
    match args.command {
        ImagesCommand::Import { file } => {
            let recs = store
                .import(&file)
                .with_context(|| format!("importing {}", file.display()))?;
            for r in recs {
                println!("imported {} ({})", r.reference, r.id());
            }
        }
        ImagesCommand::List => {
            let mut rows = vec![["REPOSITORY", "TAG", "DIGEST", "SIZE"]
                .map(String::from)
                .to_vec()];
            for e in store.list()? {
                rows.push(vec![
                    e.repository,
                    e.tag.unwrap_or_else(|| "<none>".into()),
                    e.digest.chars().take(19).collect(),
                    human_size(e.size),
                ]);
            }
            print!("{}", client::format_table(&rows));
        }
        ImagesCommand::Rm { reference } => {
            let used = staticlet_runtime_embedded::images_in_use(&args.root_dir);
            let removed = store
                .remove(&reference, &|rec| used.iter().any(|u| u == rec.id()))
                .with_context(|| format!("removing {reference}"))?;
            for r in removed {
                println!("removed {}", r.reference);
            }
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let node = match &args.hostname_override {
        Some(n) => n.trim().to_lowercase(),
        None => options::default_hostname().unwrap_or_else(|_| "node".into()),
    };
    let mut bad = false;
    let mut checked = 0;
    for path in &args.paths {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if !abs.exists() {
            println!("{}: no such file or directory", path.display());
            bad = true;
            continue;
        }
        // The agent's own file source: same extensions, same duplicate rule, same decoding.
        let mut src = FileSource::new(&abs, &node, Duration::from_secs(20), None, Clock::new());
        let snap = src.relist();
        if snap.manifests.is_empty() {
            println!(
                "{}: no manifests (*.yaml, *.yml, *.json) found",
                path.display()
            );
        }
        for m in snap.manifests {
            checked += 1;
            match m.error {
                Some(e) => {
                    bad = true;
                    for line in e.lines() {
                        println!("{}: {line}", m.origin);
                    }
                }
                None => println!("{}: ok ({})", m.origin, m.pods.join(", ")),
            }
        }
    }
    if checked == 0 {
        bad = true;
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_syntax() {
        assert_eq!(parse_wait_for("delete").unwrap(), WaitFor::Delete);
        assert_eq!(
            parse_wait_for("condition=Ready").unwrap(),
            WaitFor::Condition {
                type_: "Ready".into(),
                status: "True".into()
            }
        );
        assert_eq!(
            parse_wait_for("condition=ContainersReady=false").unwrap(),
            WaitFor::Condition {
                type_: "ContainersReady".into(),
                status: "False".into()
            }
        );
        assert_eq!(
            parse_wait_for("jsonpath={.status.phase}=Running").unwrap(),
            WaitFor::Phase("Running".into())
        );
        assert!(parse_wait_for("condition=").is_err());
        assert!(parse_wait_for("condition=Ready=maybe").is_err());
        assert!(parse_wait_for("ready").is_err());
    }

    #[test]
    fn wait_conditions() {
        let pod = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "False"}]}});
        let ready = WaitFor::Condition {
            type_: "ready".into(),
            status: "True".into(),
        };
        assert!(wait_satisfied(Some(&pod), &ready));
        assert!(!wait_satisfied(None, &ready));
        let init = WaitFor::Condition {
            type_: "Initialized".into(),
            status: "True".into(),
        };
        assert!(!wait_satisfied(Some(&pod), &init));
        assert!(wait_satisfied(None, &WaitFor::Delete));
        assert!(!wait_satisfied(Some(&pod), &WaitFor::Delete));
        assert!(wait_satisfied(
            Some(&pod),
            &WaitFor::Phase("Running".into())
        ));
    }
}
