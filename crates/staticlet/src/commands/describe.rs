//! `staticlet describe pod`: kubectl-like description of a pod and its recent events.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::client::{self, human_duration};

#[derive(clap::Args)]
pub struct DescribeArgs {
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

pub async fn describe(args: DescribeArgs) -> Result<()> {
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
    print!("{}", render(&pod, &events, std::time::SystemTime::now()));
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn age(t: &Value, now: SystemTime) -> String {
    let Some(ts) = t
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    human_duration(now - ts.as_second())
}

fn probe_line(p: &Value) -> String {
    let handler = if !p["exec"].is_null() {
        format!("exec {}", p["exec"]["command"])
    } else if !p["httpGet"].is_null() {
        let h = &p["httpGet"];
        format!(
            "http-get {}://{}:{}{}",
            s(&h["scheme"]).to_lowercase(),
            h["host"].as_str().unwrap_or(""),
            h["port"].to_string().trim_matches('"'),
            s(&h["path"])
        )
    } else if !p["tcpSocket"].is_null() {
        format!(
            "tcp-socket :{}",
            p["tcpSocket"]["port"].to_string().trim_matches('"')
        )
    } else if !p["grpc"].is_null() {
        format!(
            "grpc <pod>:{} {}",
            p["grpc"]["port"],
            s(&p["grpc"]["service"])
        )
    } else {
        "<unknown>".into()
    };
    format!(
        "{handler} delay={}s timeout={}s period={}s #success={} #failure={}",
        p["initialDelaySeconds"].as_i64().unwrap_or(0),
        p["timeoutSeconds"].as_i64().unwrap_or(1),
        p["periodSeconds"].as_i64().unwrap_or(10),
        p["successThreshold"].as_i64().unwrap_or(1),
        p["failureThreshold"].as_i64().unwrap_or(3)
    )
}

fn state_lines(out: &mut String, label: &str, st: &Value) {
    if let Some((kind, v)) = st.as_object().and_then(|o| o.iter().next()) {
        let kind = match kind.as_str() {
            "running" => "Running",
            "waiting" => "Waiting",
            "terminated" => "Terminated",
            other => other,
        };
        let _ = writeln!(out, "    {label:<15}{kind}");
        for (k, name) in [
            ("reason", "Reason"),
            ("message", "Message"),
            ("exitCode", "Exit Code"),
            ("startedAt", "Started"),
            ("finishedAt", "Finished"),
        ] {
            if !v[k].is_null() {
                let val = v[k]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v[k].to_string());
                let _ = writeln!(out, "      {:<13}{}", format!("{name}:"), val);
            }
        }
    }
}

/// Renders the description.
pub fn render(pod: &Value, events: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    let meta = &pod["metadata"];
    let spec = &pod["spec"];
    let st = &pod["status"];
    let kv = |m: &Value| -> String {
        let items: Vec<String> = m
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "<none>".into()
        } else {
            items.join("\n              ")
        }
    };
    let _ = writeln!(out, "Name:         {}", s(&meta["name"]));
    let _ = writeln!(out, "Namespace:    {}", s(&meta["namespace"]));
    let _ = writeln!(
        out,
        "Node:         {}/{}",
        s(&spec["nodeName"]),
        s(&st["hostIP"])
    );
    let _ = writeln!(out, "Start Time:   {}", s(&st["startTime"]));
    let _ = writeln!(out, "Labels:       {}", kv(&meta["labels"]));
    let _ = writeln!(out, "Annotations:  {}", kv(&meta["annotations"]));
    let status = if meta["deletionTimestamp"].is_null() {
        s(&st["phase"])
    } else {
        "Terminating"
    };
    let _ = writeln!(out, "Status:       {status}");
    if !st["reason"].is_null() {
        let _ = writeln!(out, "Reason:       {}", s(&st["reason"]));
        let _ = writeln!(out, "Message:      {}", s(&st["message"]));
    }
    let _ = writeln!(
        out,
        "IP:           {}",
        st["podIP"].as_str().unwrap_or("<none>")
    );
    let _ = writeln!(out, "UID:          {}", s(&meta["uid"]));
    for (title, specs, statuses) in [
        (
            "Init Containers",
            &spec["initContainers"],
            &st["initContainerStatuses"],
        ),
        ("Containers", &spec["containers"], &st["containerStatuses"]),
    ] {
        let Some(specs) = specs.as_array().filter(|a| !a.is_empty()) else {
            continue;
        };
        let _ = writeln!(out, "{title}:");
        for c in specs {
            let name = s(&c["name"]);
            let cs = statuses
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .cloned()
                .unwrap_or(Value::Null);
            let _ = writeln!(out, "  {name}:");
            let _ = writeln!(out, "    Container ID:  {}", s(&cs["containerID"]));
            let _ = writeln!(out, "    Image:         {}", s(&c["image"]));
            let _ = writeln!(out, "    Image ID:      {}", s(&cs["imageID"]));
            if let Some(cmd) = c["command"].as_array() {
                let _ = writeln!(
                    out,
                    "    Command:       {}",
                    cmd.iter().map(s).collect::<Vec<_>>().join(" ")
                );
            }
            state_lines(&mut out, "State:", &cs["state"]);
            if cs["lastState"].as_object().is_some_and(|o| !o.is_empty()) {
                state_lines(&mut out, "Last State:", &cs["lastState"]);
            }
            let _ = writeln!(
                out,
                "    Ready:         {}",
                if cs["ready"] == true { "True" } else { "False" }
            );
            let _ = writeln!(
                out,
                "    Restart Count: {}",
                cs["restartCount"].as_i64().unwrap_or(0)
            );
            for (k, label) in [
                ("livenessProbe", "Liveness"),
                ("readinessProbe", "Readiness"),
                ("startupProbe", "Startup"),
            ] {
                if !c[k].is_null() {
                    let _ = writeln!(out, "    {:<15}{}", format!("{label}:"), probe_line(&c[k]));
                }
            }
        }
    }
    let _ = writeln!(out, "Conditions:");
    let _ = writeln!(out, "  Type                        Status");
    for c in st["conditions"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {:<28}{}", s(&c["type"]), s(&c["status"]));
    }
    let _ = writeln!(out, "QoS Class:    {}", s(&st["qosClass"]));
    let items = events["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        let _ = writeln!(out, "Events:       <none>");
        return out;
    }
    let mut rows = vec![["Type", "Reason", "Age", "From", "Message"]
        .map(String::from)
        .to_vec()];
    for e in &items {
        let count = e["count"].as_i64().unwrap_or(1);
        let age = if count > 1 {
            format!(
                "{} (x{count} over {})",
                age(&e["lastTimestamp"], now),
                age(&e["firstTimestamp"], now)
            )
        } else {
            age(&e["lastTimestamp"], now)
        };
        rows.push(vec![
            s(&e["type"]).into(),
            s(&e["reason"]).into(),
            age,
            "staticlet".into(),
            s(&e["message"]).into(),
        ]);
    }
    let _ = writeln!(out, "Events:");
    for line in crate::client::format_table(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_containers_conditions_and_events() {
        let pod = serde_json::json!({
            "metadata": {"name": "web-n", "namespace": "default", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "busybox",
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 5}}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "qosClass": "BestEffort",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        });
        let events = serde_json::json!({"items": [{"type": "Warning", "reason": "BackOff", "message": "Back-off restarting",
            "count": 3, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z"}]});
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_720); // 2026-01-01T00:02:00Z
        let out = render(&pod, &events, now);
        for want in [
            "Name:         web-n",
            "Labels:       app=web",
            "    State:         Running",
            "    Last State:    Terminated",
            "      Exit Code:   1",
            "    Restart Count: 2",
            "    Liveness:      http-get http://:8080/healthz delay=0s timeout=1s period=5s #success=1 #failure=3",
            "  Ready                       True",
            "Warning   BackOff   60s (x3 over 2m)   staticlet   Back-off restarting",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }
}
