//! `staticlet validate`: offline lint through the agent's own file source and validation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use staticlet_agent::config::file::FileSource;
use staticlet_runtime::Clock;

use crate::options;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Manifest files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Node name to validate for [default: the hostname].
    #[arg(long)]
    hostname_override: Option<String>,
}

pub fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let node = match &args.hostname_override {
        Some(n) => n.trim().to_lowercase(),
        None => options::default_hostname().unwrap_or_else(|_| "node".into()),
    };
    let mut bad = false;
    let mut checked = 0;
    let mut snapshots = Vec::new();
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
        snapshots.push(snap);
    }
    // Across every file given: `staticlet.io/after` naming unknown pods, or cycles.
    let all_pods: Vec<_> = snapshots
        .iter()
        .flat_map(|s| s.pods.iter().cloned())
        .collect();
    let ordering = staticlet_agent::ordering::problems(all_pods.iter().map(|p| &**p));
    for m in snapshots.into_iter().flat_map(|s| s.manifests) {
        checked += 1;
        let after = all_pods
            .iter()
            .filter(|p| p.origin.to_string() == m.origin)
            .find_map(|p| ordering.get(&p.uid));
        match (m.error, after) {
            (Some(e), _) => {
                bad = true;
                for line in e.lines() {
                    println!("{}: {line}", m.origin);
                }
            }
            (None, Some(why)) => {
                bad = true;
                println!("{}: metadata.annotations: {why}", m.origin);
            }
            (None, None) => println!("{}: ok ({})", m.origin, m.pods.join(", ")),
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
