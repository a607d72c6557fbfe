//! `staticlet wait`: polls the agent until a pod's condition, phase or deletion (kubectl's
//! syntax).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::client;

#[derive(clap::Args)]
pub struct WaitArgs {
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

pub async fn wait(args: WaitArgs) -> Result<ExitCode> {
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
