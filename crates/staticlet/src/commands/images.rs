//! `staticlet images`: import, list and remove the embedded runtime's images.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::client;

#[derive(clap::Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
    /// Root directory of the agent (images live in `<root-dir>/images`).
    #[arg(long, default_value = "/var/lib/staticlet", global = true)]
    root_dir: PathBuf,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Import a docker-archive tarball (`docker save`), an OCI archive or an OCI layout directory.
    Import {
        file: PathBuf,
        #[command(flatten)]
        limits: crate::options::ImageLimitArgs,
        /// Layers of an image unpacked at a time, each into its own directory (default: one per
        /// core, up to 8; 1: one after the other).
        #[arg(long, value_name = "N")]
        unpack_threads: Option<usize>,
    },
    /// List images (REPOSITORY TAG DIGEST SIZE).
    #[command(alias = "ls")]
    List,
    /// Remove an image (refused while a container uses it).
    Rm { reference: String },
    /// Remove the images no container uses (running or exited): untagged ones, or with `--all`
    /// every one. The agent also collects images itself when the disk fills up
    /// (`imageGCHighThresholdPercent`).
    Prune {
        /// Every unused image, tagged or not.
        #[arg(long)]
        all: bool,
    },
}

pub fn images(args: ImagesArgs) -> Result<()> {
    let store = staticlet_images::ImageStore::open(&args.root_dir)
        .with_context(|| format!("opening the image store under {}", args.root_dir.display()))?;
    match args.command {
        ImagesCommand::Import {
            file,
            limits,
            unpack_threads,
        } => {
            let mut store = store.with_limits(limits.limits());
            if let Some(n) = unpack_threads {
                store = store.with_unpack_threads(n);
            }
            let recs = store
                .import(&file)
                .with_context(|| format!("importing {}", file.display()))?;
            for r in recs {
                println!("imported {} ({})", r.reference, r.id());
            }
        }
        ImagesCommand::List => {
            let mut rows = vec![["REPOSITORY", "TAG", "DIGEST", "SIZE"]
                .map(String::from)
                .to_vec()];
            for e in store.list()? {
                rows.push(vec![
                    e.repository,
                    e.tag.unwrap_or_else(|| "<none>".into()),
                    e.digest.chars().take(19).collect(),
                    human_size(e.size),
                ]);
            }
            print!("{}", client::format_table(&rows));
        }
        ImagesCommand::Rm { reference } => {
            let used = staticlet_runtime_embedded::images_in_use(&args.root_dir);
            let removed = store
                .remove(&reference, &|rec| used.iter().any(|u| u == rec.id()))
                .with_context(|| format!("removing {reference}"))?;
            for r in removed {
                println!("removed {}", r.reference);
            }
        }
        ImagesCommand::Prune { all } => {
            let used = staticlet_runtime_embedded::images_in_use(&args.root_dir);
            let in_use = |rec: &staticlet_images::ImageRecord| used.iter().any(|u| u == rec.id());
            let mut removed = store.prune(&in_use).context("pruning untagged images")?;
            if all {
                let mut ids: Vec<String> = store
                    .records()?
                    .iter()
                    .filter(|r| !in_use(r))
                    .map(|r| r.id().to_string())
                    .collect();
                ids.sort();
                ids.dedup();
                for id in ids {
                    match store.remove(&id, &in_use) {
                        Ok(r) => removed.extend(r),
                        // Used since the list: kept, as it should be.
                        Err(staticlet_images::Error::InUse { .. }) => {}
                        Err(e) => return Err(e).with_context(|| format!("removing {id}")),
                    }
                }
            }
            for r in &removed {
                println!("removed {}", r.reference);
            }
            println!("{} image references removed", removed.len());
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}
