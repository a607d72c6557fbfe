//! `staticlet logs`: reads a container's CRI-format log file
//! (`<log-dir>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`, lines
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>`) the way `kubectl logs` shows it.

use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

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

pub async fn logs(args: LogsArgs) -> Result<()> {
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let pod = server.existing_pod(&args.namespace, &args.pod).await?;
    let file = log_file(
        &args.log_dir,
        &pod,
        args.container.as_deref(),
        args.previous,
    )?;
    tokio::task::spawn_blocking(move || print(&file, args.tail, args.timestamps, args.follow))
        .await?
}

/// One decoded log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `false` for a partial (`P`) chunk of a longer line.
    pub full: bool,
    pub text: &'a str,
}

/// Decodes one CRI log line; `None` for a malformed one.
pub fn parse(line: &str) -> Option<Entry<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some(Entry {
        time,
        stream,
        full: tag.split(':').next() == Some("F"),
        text,
    })
}

/// Renders entries as the container wrote them (partial chunks joined).
pub fn render(lines: &[String], timestamps: bool, out: &mut impl Write) -> std::io::Result<()> {
    let mut at_start = true;
    for l in lines {
        let Some(e) = parse(l) else { continue };
        if timestamps && at_start {
            write!(out, "{} ", e.time)?;
        }
        out.write_all(e.text.as_bytes())?;
        if e.full {
            out.write_all(b"\n")?;
        }
        at_start = e.full;
    }
    Ok(())
}

/// The log file of `container` in `pod` (a `v1` Pod from the agent's API).
pub fn log_file(
    log_dir: &std::path::Path,
    pod: &serde_json::Value,
    container: Option<&str>,
    previous: bool,
) -> Result<PathBuf> {
    let meta = &pod["metadata"];
    let (ns, name, uid) = (
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default(),
        meta["uid"].as_str().unwrap_or_default(),
    );
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
    let c = match container {
        Some(c) => {
            if !names.contains(&c) {
                bail!("container {c:?} is not valid for pod {name}: choose one of {names:?}");
            }
            c
        }
        None if pod["spec"]["containers"].as_array().map_or(0, Vec::len) == 1 => names[0],
        None => {
            bail!("a container name must be specified for pod {name}, choose one of: {names:?}")
        }
    };
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            pod["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .flatten(),
        );
    let restarts = statuses
        .filter(|s| s["name"] == c)
        .find_map(|s| s["restartCount"].as_i64())
        .unwrap_or(0);
    let attempt = if previous {
        if restarts == 0 {
            bail!("previous terminated container {c:?} in pod {name:?} not found");
        }
        restarts - 1
    } else {
        restarts
    };
    Ok(log_dir
        .join(format!("{ns}_{name}_{uid}"))
        .join(c)
        .join(format!("{attempt}.log")))
}

/// Prints the file (its last `tail` lines if given) and, with `follow`, what is appended.
pub fn print(
    path: &std::path::Path,
    tail: Option<usize>,
    timestamps: bool,
    follow: bool,
) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = std::io::BufReader::new(f);
    let mut lines: Vec<String> = Vec::new();
    for l in (&mut reader).lines() {
        lines.push(l?);
    }
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    render(&lines, timestamps, &mut out)?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = reader.stream_position()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // rotated or truncated
        }
        if len == pos {
            continue;
        }
        let mut f = std::fs::File::open(path)?;
        f.seek(std::io::SeekFrom::Start(pos))?;
        let mut r = std::io::BufReader::new(f);
        let mut new = Vec::new();
        let mut buf = String::new();
        while r.read_line(&mut buf)? > 0 {
            if !buf.ends_with('\n') {
                break; // an incomplete line: read it next time
            }
            pos += buf.len() as u64;
            new.push(buf.trim_end_matches('\n').to_string());
            buf.clear();
        }
        render(&new, timestamps, &mut out)?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_full_and_partial_lines() {
        let lines: Vec<String> = [
            "2026-01-01T00:00:00.1Z stdout F hello",
            "2026-01-01T00:00:00.2Z stderr P abc",
            "2026-01-01T00:00:00.3Z stderr F def",
            "garbage",
            "2026-01-01T00:00:00.4Z stdout F ",
        ]
        .map(String::from)
        .to_vec();
        let mut out = Vec::new();
        render(&lines, false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "hello\nabcdef\n\n");
        let mut out = Vec::new();
        render(&lines[..1], true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:00:00.1Z hello\n"
        );
    }

    #[test]
    fn picks_the_file_of_the_attempt() {
        let pod = serde_json::json!({
            "metadata": {"namespace": "default", "name": "web-n", "uid": "u1"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"containerStatuses": [{"name": "a", "restartCount": 2}, {"name": "b", "restartCount": 0}]}
        });
        let d = std::path::Path::new("/logs");
        assert_eq!(
            log_file(d, &pod, Some("a"), false).unwrap(),
            PathBuf::from("/logs/default_web-n_u1/a/2.log")
        );
        assert_eq!(
            log_file(d, &pod, Some("a"), true).unwrap(),
            PathBuf::from("/logs/default_web-n_u1/a/1.log")
        );
        assert!(log_file(d, &pod, Some("b"), true).is_err());
        assert!(log_file(d, &pod, None, false)
            .unwrap_err()
            .to_string()
            .contains("must be specified"));
        assert!(log_file(d, &pod, Some("zz"), false).is_err());
    }
}
