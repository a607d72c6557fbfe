//! `staticlet get`: pods and manifests of the running agent, through its local API.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::client;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Wide,
    Json,
    Yaml,
}

#[derive(clap::Args)]
pub struct GetArgs {
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

pub async fn get(args: GetArgs) -> Result<()> {
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
        // A rollout in progress or rolled back says more than "Applied".
        let status = match m["rollout"]["state"].as_str() {
            Some("rolledBack") if m["error"].is_null() => format!(
                "RolledBack: {}",
                m["rollout"]["message"].as_str().unwrap_or_default()
            ),
            Some("progressing") if m["error"].is_null() => "Progressing".into(),
            _ => status,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_table_shows_rollouts() {
        let v = serde_json::json!({"items": [
            {"source": "file", "origin": "/m/a.yaml", "pods": ["default/a-n"], "stale": false,
             "rollout": {"state": "rolledBack", "message": "rolled back from b to a: not Ready within 5m0s: container app exited with code 1 (Error)"}},
            {"source": "file", "origin": "/m/b.yaml", "pods": ["default/b-n"], "stale": false,
             "rollout": {"state": "progressing"}},
            {"source": "file", "origin": "/m/c.yaml", "pods": ["default/c-n"], "stale": false,
             "rollout": {"state": "steady"}},
        ]});
        let t = manifests_table(&v, std::time::SystemTime::UNIX_EPOCH);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].contains("RolledBack: rolled back from b to a: not Ready within 5m0s"),
            "{t}"
        );
        assert!(lines[2].contains("Progressing"), "{t}");
        assert!(lines[3].contains("Applied"), "{t}");
    }
}
