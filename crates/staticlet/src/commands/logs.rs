//! `staticlet logs`: a container's log as `kubectl logs` shows it. Asked of the running agent
//! (`/containerLogs` on its local API, which knows its `--log-dir`); when the agent is down, read
//! from the CRI-format files under `--log-dir`
//! (`<namespace>_<pod>_<uid>/<container>/<restartCount>.log`) with the same reader.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use staticlet_kubelet_server::logs::LogOptions;
use tokio::io::AsyncWriteExt;

use crate::client;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The pod's name (`<name>-<node>`).
    pod: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Container (required when the pod has several).
    #[arg(short, long)]
    container: Option<String>,
    /// Follow the log (until the container exits).
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
    /// The agent's --log-dir, read only when the agent cannot be reached.
    #[arg(long, default_value = "/var/log/pods")]
    log_dir: PathBuf,
    /// Address of the agent: unix:///path, http://host:port.
    #[arg(long)]
    server: Option<String>,
}

pub async fn logs(args: LogsArgs) -> Result<()> {
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    match server.pod(&args.namespace, &args.pod).await {
        Ok(Some(pod)) => from_agent(&server, &pod, &args).await,
        Ok(None) => bail!(
            "pods {:?} not found in namespace {:?}",
            args.pod,
            args.namespace
        ),
        Err(e) if client::unreachable(&e) => {
            eprintln!(
                "staticlet logs: the agent is not running ({e:#}); reading {}",
                args.log_dir.display()
            );
            from_files(&args).await
        }
        Err(e) => Err(e),
    }
}

/// The container `container` names in `pod`, or its only container (kubectl's rule).
pub fn pick_container(pod: &serde_json::Value, container: Option<&str>) -> Result<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c["name"].as_str())
        .collect();
    Ok(match container {
        Some(c) if names.contains(&c) => c.to_string(),
        Some(c) => bail!("container {c:?} is not valid for pod {name}: choose one of {names:?}"),
        None if pod["spec"]["containers"].as_array().map_or(0, Vec::len) == 1 => {
            names[0].to_string()
        }
        None => {
            bail!("a container name must be specified for pod {name}, choose one of: {names:?}")
        }
    })
}

/// kubelet's query parameters for these options.
fn query(args: &LogsArgs) -> String {
    let mut q = vec![
        format!("follow={}", args.follow),
        format!("previous={}", args.previous),
        format!("timestamps={}", args.timestamps),
    ];
    if let Some(n) = args.tail {
        q.push(format!("tailLines={n}"));
    }
    q.join("&")
}

async fn from_agent(
    server: &client::Server,
    pod: &serde_json::Value,
    args: &LogsArgs,
) -> Result<()> {
    let c = pick_container(pod, args.container.as_deref())?;
    let path = format!(
        "/containerLogs/{}/{}/{c}?{}",
        args.namespace,
        args.pod,
        query(args)
    );
    let resp = server.request(&path).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = http_body_util::BodyExt::collect(body).await?.to_bytes();
        bail!("{}", String::from_utf8_lossy(&text).trim());
    }
    let mut out = tokio::io::stdout();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(chunk) = frame?.into_data() {
            // A closed stdout (`| head`) ends the command.
            if write_out(&mut out, chunk).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}

async fn write_out(out: &mut tokio::io::Stdout, chunk: hyper::body::Bytes) -> std::io::Result<()> {
    out.write_all(&chunk).await?;
    out.flush().await
}

/// The newest log of the pod's container under `--log-dir` (the pod UID is the newest
/// directory `<namespace>_<pod>_*`; the attempt the highest `N.log`, or the one before it with
/// `--previous`).
pub fn newest_log_file(
    log_dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    previous: bool,
) -> Result<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(log_dir)
        .with_context(|| format!("reading --log-dir {}", log_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort();
    let Some((_, dir)) = dirs.pop() else {
        bail!(
            "no logs of pod {pod:?} in namespace {namespace:?} under {}",
            log_dir.display()
        );
    };
    let containers: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let c = match container {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => bail!(
            "no logs of container {c:?} in {}: it has {containers:?}",
            dir.display()
        ),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            bail!("a container name must be specified for pod {pod}, choose one of: {containers:?}")
        }
    };
    let mut attempts: Vec<u32> = std::fs::read_dir(dir.join(&c))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    attempts.sort_unstable();
    let pick = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    let Some(n) = pick else {
        bail!(
            "no {}log of container {c:?} in {}",
            if previous { "previous " } else { "" },
            dir.display()
        );
    };
    Ok(dir.join(&c).join(format!("{n}.log")))
}

async fn from_files(args: &LogsArgs) -> Result<()> {
    let file = newest_log_file(
        &args.log_dir,
        &args.namespace,
        &args.pod,
        args.container.as_deref(),
        args.previous,
    )?;
    let opts = LogOptions {
        follow: args.follow,
        previous: args.previous,
        timestamps: args.timestamps,
        tail_lines: args.tail.map(|n| n as u64),
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    // Nobody tells whether the container still runs: follow until interrupted.
    let reader = tokio::spawn(staticlet_kubelet_server::logs::stream(
        file.clone(),
        opts,
        || true,
        // The only follower of this process: no pacing.
        || std::time::Duration::ZERO,
        tx,
    ));
    let mut out = tokio::io::stdout();
    while let Some(chunk) = rx.recv().await {
        if write_out(&mut out, chunk).await.is_err() {
            break;
        }
    }
    drop(rx);
    reader
        .await?
        .with_context(|| format!("reading {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_container() {
        let pod = serde_json::json!({
            "metadata": {"namespace": "default", "name": "web-n", "uid": "u1"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
        });
        assert_eq!(pick_container(&pod, Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&pod, Some("i")).unwrap(), "i");
        assert!(pick_container(&pod, Some("z")).is_err());
        assert!(pick_container(&pod, None).is_err());
        let one = serde_json::json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
    }

    #[test]
    fn finds_the_newest_file_without_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("default_web-n_u1/app");
        std::fs::create_dir_all(&c).unwrap();
        for n in [0, 1, 2] {
            std::fs::write(c.join(format!("{n}.log")), "").unwrap();
        }
        let f = |prev| newest_log_file(d.path(), "default", "web-n", None, prev).unwrap();
        assert_eq!(f(false), c.join("2.log"));
        assert_eq!(f(true), c.join("1.log"));
        assert!(newest_log_file(d.path(), "default", "other", None, false).is_err());
        assert!(newest_log_file(d.path(), "default", "web-n", Some("nope"), false).is_err());
    }
}
