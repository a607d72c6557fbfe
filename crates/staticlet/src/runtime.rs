//! The container runtime `staticlet run` uses (embedded, CRI or the simulator), and how the
//! embedded runtime and `staticlet exec` start shims.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use staticlet_runtime::{Clock, ContainerRuntime};
use tracing::info;

use crate::cgroupdriver::{self, RuntimeKind};
use crate::{options, SHIM_PREFIX};

/// How the embedded runtime starts shims: the small `staticlet-shim` binary installed next to
/// this one if there is one (its resident memory is smaller), else this binary in shim mode.
pub fn shim_reexec() -> Result<staticlet_shim::Reexec> {
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

/// The built-in pod network on `pod_cidr` (else the default subnet), used by the embedded
/// runtime when the configuration directory holds no network configuration. A subnet that
/// overlaps a host route is refused when it was asked for, and left out with a warning when
/// it is the default (pods without hostNetwork then wait for a configuration, as kubelet's).
pub fn default_network(
    pod_cidr: Option<&str>,
    cni_conf_dir: &std::path::Path,
) -> Result<Option<staticlet_cni::NetworkConfig>> {
    use staticlet_cni::builtin;
    let given = pod_cidr.is_some();
    let subnet = builtin::Subnet::parse(pod_cidr.unwrap_or(builtin::DEFAULT_SUBNET))
        .map_err(|e| anyhow::anyhow!("--pod-cidr (podCIDR): {e}"))?;
    let routes = std::fs::read_to_string("/proc/net/route")
        .map(|t| builtin::parse_routes(&t))
        .unwrap_or_default();
    if let Some(r) = builtin::colliding_route(&subnet, &routes) {
        let why = format!(
            "the built-in pod network's subnet {subnet} overlaps the host's route to {} on {}",
            r.dest, r.iface
        );
        if given {
            bail!("--pod-cidr (podCIDR): {why}; choose a free subnet");
        }
        tracing::warn!("{why}: the built-in network is off; set --pod-cidr (or podCIDR) to a free subnet, or put a network configuration in {}", cni_conf_dir.display());
        return Ok(None);
    }
    if staticlet_cni::NetworkConfig::load(cni_conf_dir)
        .ok()
        .flatten()
        .is_none()
    {
        info!(
            "no CNI configuration in {}: pods without hostNetwork use the built-in network ({subnet} on bridge {}, host-local, portmap, masquerade); a configuration there takes over",
            cni_conf_dir.display(),
            builtin::BRIDGE
        );
    }
    Ok(Some(builtin::network(&subnet)))
}

/// The runtime at `endpoint` (`None`: the embedded one), once its cgroup driver and the
/// configured one agree (`cgroupdriver::decide`; a refusal is an error before any pod is
/// touched).
pub async fn runtime_for(
    endpoint: Option<&str>,
    clock: Clock,
    args: &options::RunArgs,
    pod_cidr: Option<&str>,
    cgroup_driver: &cgroupdriver::Configured,
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
                    // `exit-1=a,b`: containers named a or b exit 1 a second after every
                    // start (demos and tests of crash loops and rollbacks).
                    Some(("exit-1", names)) => {
                        for n in names.split(',').filter(|n| !n.is_empty()) {
                            rt.script(
                                n,
                                staticlet_runtime::fake::Script::exits(
                                    std::time::Duration::from_secs(1),
                                    1,
                                ),
                            );
                        }
                    }
                    _ => bail!(
                        "--container-runtime-endpoint {e:?}: unknown simulator option {kv:?} \
                         (known: ignore-stop-signal=NAME[,NAME], exit-1=NAME[,NAME])"
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
            let reported = rt
                .cgroup_driver()
                .await
                .map_err(|err| anyhow::anyhow!("--container-runtime-endpoint {e}: {err}"))?;
            if let Some(line) = cgroupdriver::decide(cgroup_driver, RuntimeKind::Cri(reported), e)?
            {
                info!("{line}");
            }
            info!(endpoint = e, runtime = %name, "using the CRI runtime");
            Ok((Arc::new(rt), name))
        }
        Some(e) => {
            bail!("--container-runtime-endpoint {e:?}: expected unix:///path or simulate://")
        }
        None => {
            if let Some(line) = cgroupdriver::decide(cgroup_driver, RuntimeKind::Embedded, "")? {
                info!("{line}");
            }
            let rt = staticlet_runtime_embedded::EmbeddedRuntime::new(
                staticlet_runtime_embedded::Config {
                    root_dir: args.root_dir.clone(),
                    reexec: shim_reexec()?,
                    cni_conf_dir: args.cni_conf_dir.clone(),
                    cni_bin_dirs: args.cni_bin_dir.clone(),
                    default_network: default_network(pod_cidr, &args.cni_conf_dir)?,
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
                    image_limits: args.image_limits.limits(),
                    pull_stall_timeout: args.image_pull_stall_timeout,
                },
            )
            .map_err(|e| anyhow::anyhow!("embedded runtime: {e}"))?;
            Ok((Arc::new(rt), "staticlet".into()))
        }
    }
}
