//! `staticlet restart|stop|start pod NAME`: the local control verbs (root only: they go over
//! the agent's unix socket, which only root can open; the agent refuses them on TCP).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::client;

#[derive(clap::Args)]
pub struct ControlArgs {
    /// `pod` (or `pods`, `po`).
    resource: String,
    /// The pod's name (`<name>-<node>` as `get pods` shows it, or its manifest's name).
    name: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Root directory of the agent.
    #[arg(long, default_value = "/var/lib/staticlet")]
    root_dir: PathBuf,
    /// The agent's unix socket (unix:///path); the verbs are not served over TCP.
    #[arg(long)]
    server: Option<String>,
}

/// Sends `verb` (`restart`, `stop`, `start`) for the pod; prints the agent's answer.
pub async fn control(verb: &str, args: ControlArgs) -> Result<()> {
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        bail!(
            "unknown resource {:?}: only pods can be {verb}ed",
            args.resource
        );
    }
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let path = format!("/pods/{}/{}/{verb}", args.namespace, args.name);
    let (code, body) = server.post(&path).await?;
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    match code {
        200 => {
            println!("{msg}");
            Ok(())
        }
        404 if msg.is_empty() => bail!(
            "the agent at this address does not serve `{verb}` (it is only on its unix socket)"
        ),
        _ => bail!("{msg}"),
    }
}
