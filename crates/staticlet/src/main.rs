//! `staticlet`: the thin binary. Parses the command line, sets up logging and the allocator,
//! and dispatches to `commands` (one module per subcommand; `run` picks the runtime and calls
//! into `staticlet-agent`). No logic of its own beyond printing.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use commands::{describe, exec, get, images, logs, run, validate, wait};

mod client;
mod commands;
mod kubeletconfig;
mod kubeletflags;
mod options;
mod runtime;

#[derive(Parser)]
#[command(
    name = "staticlet",
    version,
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
    /// Wait for a pod's condition or deletion (kubectl's syntax).
    Wait(wait::WaitArgs),
    /// Describe a pod: containers, probes, conditions, recent events.
    Describe(describe::DescribeArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STATICLET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
            ExitCode::FAILURE
        }
    }
}
