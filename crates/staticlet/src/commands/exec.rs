//! `staticlet exec`: runs a command in a running container of the embedded runtime, through
//! the shim's exec helper (not interactive).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::client;
use crate::runtime::shim_reexec;

#[derive(clap::Args)]
pub struct ExecArgs {
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

pub async fn exec(args: ExecArgs) -> Result<ExitCode> {
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
