//! `staticlet`: the thin binary. Parses the command line, sets up logging and the allocator,
//! and dispatches to `commands` (one module per subcommand; `run` picks the runtime and calls
//! into `staticlet-agent`). No logic of its own beyond printing.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use commands::{completion, control, describe, exec, get, images, logs, run, validate, wait};

mod cgroupdriver;
mod client;
mod commands;
mod kubeadm;
mod kubeletconfig;
mod kubeletflags;
mod logind;
mod options;
mod runtime;
mod systemd;

/// `--version`: the crate's version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STATICLET_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "staticlet",
    version = VERSION,
    about = "Runs Kubernetes static pods",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent.
    ///
    /// Takes kubelet's flags and KubeletConfiguration file (--config). Every other flag kubelet
    /// v1.34 has is accepted with a value of the right shape and named in a warning at start.
    #[command(args_override_self = true)]
    Run(Box<options::RunArgs>),
    /// Show pods or manifests of the running agent.
    Get(get::GetArgs),
    /// Check manifests offline, with the agent's own decoding and validation.
    Validate(validate::ValidateArgs),
    /// Manage the embedded runtime's images.
    Images(images::ImagesArgs),
    /// Print a container's logs (kubectl's flags).
    Logs(logs::LogsArgs),
    /// Run a command in a running container (embedded runtime; not interactive).
    Exec(exec::ExecArgs),
    /// Wait for a pod's condition or deletion (kubectl's syntax), or for a manifest's version
    /// to be applied, Ready or rolled back.
    Wait(wait::WaitArgs),
    /// Describe a pod: containers, probes, conditions, recent events.
    Describe(describe::DescribeArgs),
    /// Restart a pod in place: its containers are stopped (preStop, grace) and started again
    /// with the same UID; restart counts go up.
    Restart(control::ControlArgs),
    /// Stop a pod and keep it stopped, also across agent restarts, until `start` or until its
    /// manifest changes. `get pods` shows it as Stopped.
    Stop(control::ControlArgs),
    /// Start a pod stopped with `stop`.
    Start(control::ControlArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `staticlet completion bash > /etc/bash_completion.d/staticlet`.
    Completion(completion::CompletionArgs),
    /// Write the man pages (for packaging).
    #[command(hide = true)]
    Man(completion::ManArgs),
}

/// Parses this process's command line again, reading the files it names again
/// (`--kubeadm-flags-env`, `--config`): what a reload would run with, or why it cannot.
fn reload_check() -> anyhow::Result<()> {
    let argv = kubeletflags::run_argv(std::env::args_os().collect())?;
    let cli = Cli::try_parse_from(argv)?;
    match cli.command {
        Command::Run(args) => args.settings().map(|_| ()),
        _ => anyhow::bail!("not the agent"),
    }
}

/// The hidden argument that turns this binary into a container shim (see `staticlet-shim`).
const SHIM_PREFIX: &str = "__shim";

/// glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core;
/// the agent's tokio workers and blocking threads (many while pods start) each kept one with
/// its own free space: 15 arenas held ~6 MiB for a live heap of ~2.4 MiB with 50 pods (measured
/// with heaptrack and /proc/PID/smaps). Two arenas are plenty at the agent's allocation rate.
/// Set before any thread exists.
///
/// Also fixes the mmap threshold at glibc's initial 128 KiB: by default the first free of a
/// large block raises it, after which big transient buffers (a `PodList` of 50 pods served
/// while pods start) come from the heap and fragment it instead of being returned at once.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets allocator parameters; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the free pages inside the heap back to the kernel every 10 s (glibc returns only
/// the free top of a heap by itself; a start burst leaves holes: about 0.6 MiB with 50 pods,
/// measured by calling `malloc_trim` in a running agent through gdb).
async fn trim_heap_periodically() {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        trim_heap();
    }
}

#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Logs to stderr at `STATICLET_LOG` (else `default_level`): text, or JSON lines. Text on a
/// terminal has colours; text into the journal (stderr is the `JOURNAL_STREAM` systemd gave
/// the service) has neither timestamps nor colours, which the journal adds and strips.
fn init_logging(default_level: &str, format: options::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATICLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        options::LogFormat::Json => builder.json().init(),
        options::LogFormat::Text if stderr_is_journal() => {
            builder.with_ansi(false).without_time().init()
        }
        options::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM=<dev>:<inode>`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    // fstat(2) of stderr, through /proc (no unsafe, no raw descriptor).
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| m.dev().to_string() == dev && m.ino().to_string() == ino)
}

fn main() -> ExitCode {
    // Shim modes must start before any thread exists (libcontainer forks with raw clone3).
    let mut argv = std::env::args_os();
    if argv.nth(1).as_deref() == Some(std::ffi::OsStr::new(SHIM_PREFIX)) {
        return match staticlet_shim::ShimArgs::parse(argv) {
            Ok(args) => staticlet_shim::shim_main(args),
            Err(e) => {
                eprintln!("staticlet {SHIM_PREFIX}: {e}");
                ExitCode::from(2)
            }
        };
    }
    // `staticlet run`: kubelet's flag names (`--fail_swap_on`) and `--kubeadm-flags-env`.
    let argv = match kubeletflags::run_argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    // The agent logs at info; the client commands only print their results.
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "off"
    };
    let format = match &cli.command {
        Command::Run(args) => args.logging_format,
        _ => options::LogFormat::Text,
    };
    init_logging(default_level, format);
    limit_malloc_arenas();
    // Blocking threads (the embedded runtime's file and shim calls; a container's stop holds one
    // for its grace period) retire after 2 s idle instead of tokio's 10 s: a burst of pod starts
    // or a crash loop otherwise keeps about one idle thread per pod alive (measured by
    // tests/soak.rs: 135 threads with 200 pods).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .thread_name("staticlet-rt")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent = matches!(cli.command, Command::Run(_));
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Get(args) => get::get(args).await.map(|()| ExitCode::SUCCESS),
            Command::Validate(args) => validate::validate(args),
            Command::Images(args) => images::images(args).map(|()| ExitCode::SUCCESS),
            Command::Logs(args) => logs::logs(args).await.map(|()| ExitCode::SUCCESS),
            Command::Exec(args) => exec::exec(args).await,
            Command::Wait(args) => wait::wait(args).await,
            Command::Describe(args) => describe::describe(args).await.map(|()| ExitCode::SUCCESS),
            Command::Restart(args) => control::control("restart", args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Stop(args) => control::control("stop", args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Start(args) => control::control("start", args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Completion(args) => {
                completion::completion(args, Cli::command()).map(|()| ExitCode::SUCCESS)
            }
            Command::Man(args) => completion::man(args, Cli::command()).map(|()| ExitCode::SUCCESS),
        }
    });
    // A client command is done: do not wait for a blocking read of the terminal (`exec -i`
    // reading stdin) that nobody needs any more. The agent joins its own work before returning.
    if !agent {
        rt.shutdown_background();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if agent {
                // `systemctl status` shows why the agent did not start (a broken config file).
                systemd::failed(&format!("{e:#}"));
            }
            ExitCode::FAILURE
        }
    }
}
