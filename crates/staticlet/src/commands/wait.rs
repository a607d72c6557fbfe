//! `staticlet wait`: follows the agent's pod watch (`/pods?watch=true`; an older agent is
//! polled) until a pod's condition, phase or deletion (kubectl's
//! syntax), or until a manifest's version (by content hash) is applied, Ready or rolled back.
//!
//! Exit codes: 0 when the wait is over, 1 on a timeout (naming what was last seen), 2 when what
//! is waited for can no longer happen (the version was rolled back while waiting for it to be
//! Ready, it does not validate, or it became Ready while waiting for a rollback).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::client;

#[derive(clap::Args)]
pub struct WaitArgs {
    /// `pod` (or `pods`), or `manifest`.
    resource: String,
    /// The pod's name (`<name>-<node>`), or the manifest file.
    name: String,
    /// Namespace of the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Pods: `condition=Ready` (any condition type, `=false` for False), `delete`, or
    /// `jsonpath={.status.phase}=Running`. Manifests: `applied` (handed to the pod manager),
    /// `ready` (its pod Ready), or `rolledback`.
    #[arg(long = "for")]
    for_: String,
    /// Manifests: the SHA-256 of the version to wait for (`sha256sum FILE`); by default the
    /// file's content now.
    #[arg(long, value_name = "SHA256")]
    hash: Option<String>,
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

/// What `staticlet wait manifest` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestWait {
    Applied,
    Ready,
    RolledBack,
}

impl ManifestWait {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "applied" => Self::Applied,
            "ready" => Self::Ready,
            "rolledback" | "rolled-back" => Self::RolledBack,
            _ => bail!("--for={s}: expected applied, ready or rolledback for a manifest"),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Ready => "ready",
            Self::RolledBack => "rolled back",
        }
    }
}

/// Where a manifest wait stands.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Done; the line to print.
    Done(String),
    /// It can no longer happen; why.
    Failed(String),
    /// Not yet; what the record shows now.
    Pending(String),
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// What a manifest record (`/manifests` item, `None`: the agent has none for the file) says
/// about the version `hash`.
fn manifest_verdict(rec: Option<&serde_json::Value>, want: ManifestWait, hash: &str) -> Verdict {
    let Some(r) = rec else {
        return Verdict::Pending("the agent has no record of the file".into());
    };
    let h = |k: &str| r[k]["hash"].as_str();
    let rollout = &r["rollout"];
    let rolled_back = rollout["state"] == "rolledBack" && rollout["rolledBackFrom"] == hash;
    let reason = rollout["message"].as_str().unwrap_or("rolled back");
    let v = short(hash);
    if rolled_back {
        return match want {
            ManifestWait::RolledBack => Verdict::Done(format!("version {v} rolled back: {reason}")),
            ManifestWait::Applied => Verdict::Done(format!("version {v} applied (since {reason})")),
            ManifestWait::Ready => {
                Verdict::Failed(format!("version {v} will not be Ready: {reason}"))
            }
        };
    }
    if h("ready") == Some(hash) {
        return match want {
            ManifestWait::RolledBack => {
                Verdict::Failed(format!("version {v} is Ready: it is not rolled back"))
            }
            _ => Verdict::Done(format!("version {v} {}", want.as_str())),
        };
    }
    if h("applied") == Some(hash) && want == ManifestWait::Applied {
        return Verdict::Done(format!("version {v} applied"));
    }
    if h("seen") == Some(hash) && h("applied") != Some(hash) {
        if let Some(e) = r["error"].as_str() {
            return Verdict::Failed(format!("version {v} is not applied: {e}"));
        }
    }
    let mut seen = Vec::new();
    for k in ["seen", "applied", "ready"] {
        if let Some(x) = h(k) {
            seen.push(format!("{k} {}", short(x)));
        }
    }
    if let Some(s) = rollout["state"].as_str() {
        seen.push(format!("rollout {s}"));
    }
    if let Some(e) = r["error"].as_str() {
        seen.push(format!("error: {}", e.lines().next().unwrap_or_default()));
    }
    Verdict::Pending(if seen.is_empty() {
        "nothing yet".into()
    } else {
        seen.join(", ")
    })
}

/// The `/manifests` item of `file` (its path as the agent names it: absolute, symlinks not
/// resolved; else the same file).
fn find_record<'a>(
    items: &'a serde_json::Value,
    file: &std::path::Path,
) -> Option<&'a serde_json::Value> {
    let items = items["items"].as_array()?;
    let abs = std::path::absolute(file).ok()?;
    items
        .iter()
        .find(|r| r["source"] == "file" && r["origin"].as_str() == abs.to_str())
        .or_else(|| {
            let canon = std::fs::canonicalize(file).ok()?;
            items.iter().find(|r| {
                r["source"] == "file"
                    && r["origin"]
                        .as_str()
                        .and_then(|o| std::fs::canonicalize(o).ok())
                        .is_some_and(|c| c == canon)
            })
        })
}

async fn wait_manifest(args: WaitArgs) -> Result<ExitCode> {
    let want = ManifestWait::parse(&args.for_)?;
    let file = PathBuf::from(&args.name);
    let hash = match &args.hash {
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("--hash {h:?}: expected a SHA-256 in hex (64 digits, as sha256sum prints)");
            }
            h
        }
        None => {
            let data = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            staticlet_manifest::content_hash(&data)
        }
    };
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let what = format!("manifest {} version {}", file.display(), short(&hash));
    loop {
        let (code, body) = server.get("/manifests").await?;
        if code != 200 {
            bail!(
                "the agent answered {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let items: serde_json::Value = serde_json::from_slice(&body)?;
        match manifest_verdict(find_record(&items, &file), want, &hash) {
            Verdict::Done(msg) => {
                println!("manifest {}: {msg}", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            Verdict::Failed(msg) => {
                eprintln!("error: manifest {}: {msg}", file.display());
                return Ok(ExitCode::from(2));
            }
            Verdict::Pending(last) => {
                if tokio::time::Instant::now() >= deadline {
                    eprintln!(
                        "error: timed out waiting for {what} to be {}; last seen: {last}",
                        want.as_str()
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait(args: WaitArgs) -> Result<ExitCode> {
    if matches!(args.resource.as_str(), "manifest" | "manifests") {
        return wait_manifest(args).await;
    }
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        bail!(
            "unknown resource {:?}: only pods and manifests can be waited for",
            args.resource
        );
    }
    if args.hash.is_some() {
        bail!("--hash is for manifests");
    }
    let want = parse_wait_for(&args.for_)?;
    let server = client::Server::resolve(args.server.as_deref(), &args.root_dir)?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let met = |args: &WaitArgs| {
        match want {
            WaitFor::Delete => println!("pod/{} deleted", args.name),
            _ => println!("pod/{} condition met", args.name),
        }
        Ok(ExitCode::SUCCESS)
    };
    let timed_out = |args: &WaitArgs| {
        eprintln!(
            "error: timed out waiting for the condition on pods/{}",
            args.name
        );
        Ok(ExitCode::from(1))
    };
    // Woken by the agent's watch events: the wait ends as soon as the status changes.
    let mut reconnect = false;
    loop {
        let watch = match server.watch_pods().await {
            Ok(w) => w,
            // The agent restarts (SIGHUP re-executes it): try again until the deadline.
            Err(e) if reconnect && client::unreachable(&e) => {
                if tokio::time::Instant::now() >= deadline {
                    return timed_out(&args);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(mut watch) = watch else {
            break;
        };
        let mut state = WatchedPod::default();
        loop {
            let next = match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return timed_out(&args),
                Ok(next) => next?,
            };
            let Some((type_, object)) = next else {
                reconnect = true;
                break;
            };
            state.apply(&type_, object, &args.namespace, &args.name);
            if state.synced && wait_satisfied(state.current(), &want) {
                return met(&args);
            }
        }
    }
    // An agent without watch events: poll.
    loop {
        let pod = server.pod(&args.namespace, &args.name).await?;
        if wait_satisfied(pod.as_ref(), &want) {
            return met(&args);
        }
        if tokio::time::Instant::now() >= deadline {
            return timed_out(&args);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pods of one name as a watch shows them (a terminating old version and its replacement
/// can share a name for a while).
#[derive(Debug, Default)]
struct WatchedPod {
    /// By UID.
    pods: std::collections::BTreeMap<String, serde_json::Value>,
    /// The initial events are over (the agent's `BOOKMARK`): absence now means absence.
    synced: bool,
}

impl WatchedPod {
    fn apply(&mut self, type_: &str, object: serde_json::Value, namespace: &str, name: &str) {
        if type_ == "BOOKMARK" {
            self.synced = true;
            return;
        }
        let meta = &object["metadata"];
        if meta["namespace"] != namespace || meta["name"] != name {
            return;
        }
        let uid = meta["uid"].as_str().unwrap_or_default().to_string();
        if type_ == "DELETED" {
            self.pods.remove(&uid);
        } else {
            self.pods.insert(uid, object);
        }
    }

    /// The pod `/pods/{namespace}/{name}` would serve: the live one before a terminating one.
    fn current(&self) -> Option<&serde_json::Value> {
        self.pods
            .values()
            .find(|p| p["metadata"]["deletionTimestamp"].is_null())
            .or_else(|| self.pods.values().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_verdicts() {
        use serde_json::json;
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let steady_ready_a = json!({"seen": {"hash": a}, "applied": {"hash": a}, "ready": {"hash": a},
            "running": a, "rollout": {"state": "steady"}});
        let progressing_b = json!({"seen": {"hash": b}, "applied": {"hash": b}, "ready": {"hash": a},
            "running": b, "rollout": {"state": "progressing"}});
        let rolled_back_b = json!({"seen": {"hash": b}, "applied": {"hash": b}, "ready": {"hash": a},
            "running": a, "rollout": {"state": "rolledBack", "rolledBackFrom": b, "rolledBackTo": a,
            "message": "rolled back from bbbbbbbbbbbb to aaaaaaaaaaaa: not Ready within 1m0s: container app exited with code 1 (Error)"}});
        let invalid_b = json!({"seen": {"hash": b}, "applied": {"hash": a}, "ready": {"hash": a},
            "running": a, "error": "spec.containers[0].image: Required value", "stale": true,
            "rollout": {"state": "steady"}});
        use ManifestWait::*;
        use Verdict::*;
        let cases: Vec<(&str, Option<&serde_json::Value>, ManifestWait, &str, Verdict)> = vec![
            ("no record", None, Ready, &a, Pending("the agent has no record of the file".into())),
            ("ready", Some(&steady_ready_a), Ready, &a, Done("version aaaaaaaaaaaa ready".into())),
            ("ready is applied", Some(&steady_ready_a), Applied, &a, Done("version aaaaaaaaaaaa applied".into())),
            ("ready is not rolled back", Some(&steady_ready_a), RolledBack, &a,
                Failed("version aaaaaaaaaaaa is Ready: it is not rolled back".into())),
            ("progressing: applied", Some(&progressing_b), Applied, &b, Done("version bbbbbbbbbbbb applied".into())),
            ("progressing: not ready yet", Some(&progressing_b), Ready, &b,
                Pending("seen bbbbbbbbbbbb, applied bbbbbbbbbbbb, ready aaaaaaaaaaaa, rollout progressing".into())),
            ("rolled back while waiting for ready", Some(&rolled_back_b), Ready, &b,
                Failed("version bbbbbbbbbbbb will not be Ready: rolled back from bbbbbbbbbbbb to aaaaaaaaaaaa: not Ready within 1m0s: container app exited with code 1 (Error)".into())),
            ("rolled back", Some(&rolled_back_b), RolledBack, &b,
                Done("version bbbbbbbbbbbb rolled back: rolled back from bbbbbbbbbbbb to aaaaaaaaaaaa: not Ready within 1m0s: container app exited with code 1 (Error)".into())),
            ("the good version after a rollback is still Ready", Some(&rolled_back_b), Ready, &a,
                Done("version aaaaaaaaaaaa ready".into())),
            ("invalid content", Some(&invalid_b), Applied, &b,
                Failed("version bbbbbbbbbbbb is not applied: spec.containers[0].image: Required value".into())),
            ("another version", Some(&steady_ready_a), Applied, &b,
                Pending("seen aaaaaaaaaaaa, applied aaaaaaaaaaaa, ready aaaaaaaaaaaa, rollout steady".into())),
        ];
        for (name, rec, want, hash, verdict) in cases {
            assert_eq!(manifest_verdict(rec, want, hash), verdict, "{name}");
        }
        assert!(ManifestWait::parse("Ready").is_ok());
        assert!(ManifestWait::parse("rolled-back").is_ok());
        assert!(ManifestWait::parse("condition=Ready").is_err());
    }

    #[test]
    fn records_are_found_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, "x").unwrap();
        let items = serde_json::json!({"items": [
            {"source": "http", "origin": "http://h/pods"},
            {"source": "file", "origin": file.to_str().unwrap(), "seen": {"hash": "h"}},
        ]});
        assert_eq!(find_record(&items, &file).unwrap()["seen"]["hash"], "h");
        // Through a symlinked directory.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(find_record(&items, &link.join("web.yaml")).is_some());
        assert!(find_record(&items, &dir.path().join("other.yaml")).is_none());
    }

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
    fn a_watched_pod_follows_its_events() {
        use serde_json::json;
        let pod = |uid: &str, name: &str, phase: &str, terminating: bool| {
            let mut p = json!({"metadata": {"namespace": "default", "name": name, "uid": uid},
                "status": {"phase": phase}});
            if terminating {
                p["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
            }
            p
        };
        let running = WaitFor::Phase("Running".into());
        let mut w = WatchedPod::default();
        w.apply(
            "ADDED",
            pod("u1", "web-n1", "Pending", false),
            "default",
            "web-n1",
        );
        w.apply(
            "ADDED",
            pod("u9", "db-n1", "Running", false),
            "default",
            "web-n1",
        );
        assert!(!w.synced, "not before the bookmark");
        w.apply("BOOKMARK", json!({}), "default", "web-n1");
        assert!(w.synced);
        assert!(
            !wait_satisfied(w.current(), &running),
            "another pod's status is not ours"
        );
        w.apply(
            "MODIFIED",
            pod("u1", "web-n1", "Running", false),
            "default",
            "web-n1",
        );
        assert!(wait_satisfied(w.current(), &running));
        // An edit: the old version terminates while the new one starts; the new one counts.
        w.apply(
            "MODIFIED",
            pod("u1", "web-n1", "Running", true),
            "default",
            "web-n1",
        );
        w.apply(
            "ADDED",
            pod("u2", "web-n1", "Pending", false),
            "default",
            "web-n1",
        );
        assert_eq!(w.current().unwrap()["metadata"]["uid"], "u2");
        assert!(!wait_satisfied(w.current(), &running));
        w.apply(
            "DELETED",
            pod("u1", "web-n1", "Succeeded", true),
            "default",
            "web-n1",
        );
        w.apply(
            "DELETED",
            pod("u2", "web-n1", "Pending", false),
            "default",
            "web-n1",
        );
        assert!(wait_satisfied(w.current(), &WaitFor::Delete));
        // The same name in another namespace is another pod.
        let mut other = pod("u3", "web-n1", "Running", false);
        other["metadata"]["namespace"] = json!("kube-system");
        w.apply("ADDED", other, "default", "web-n1");
        assert!(w.current().is_none());
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
