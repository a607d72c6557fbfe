//! `staticlet completion SHELL` (as `kubectl completion`) and the hidden `staticlet man DIR`:
//! shell completions and man pages generated from the command line's own definition, so they
//! never disagree with it. The Debian package ships both (scripts/package-deb.sh).

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory to write staticlet.1 and staticlet-SUBCOMMAND.1 into.
    out_dir: PathBuf,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completion(args: CompletionArgs, mut cmd: clap::Command) -> Result<()> {
    use std::io::Write;
    let name = cmd.get_name().to_string();
    // Rendered first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Writes one man page per command and subcommand (hidden ones left out).
pub fn man(args: ManArgs, cmd: clap::Command) -> Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let cmd = cmd.disable_help_subcommand(true);
    let mut written = Vec::new();
    write_page(&args.out_dir, &cmd, &mut written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        write_page(&args.out_dir, &sub.clone().name(name), &mut written)?;
    }
    for w in written {
        println!("{}", w.display());
    }
    Ok(())
}

fn write_page(
    dir: &std::path::Path,
    cmd: &clap::Command,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering {}", path.display()))?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}
