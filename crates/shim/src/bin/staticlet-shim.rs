//! `staticlet-shim`: a small binary that is nothing but the shim's modes.
//!
//! Usage: `staticlet-shim launch|run|exec <options>` (see [`staticlet_shim::ShimArgs`]). The
//! agent's own binary offers the same modes behind a hidden subcommand; this one exists so that
//! tests (and a lean deployment) can run the shim without the agent's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match staticlet_shim::ShimArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => staticlet_shim::shim_main(args),
        Err(e) => {
            eprintln!("staticlet-shim: {e}\nusage: staticlet-shim launch|run|exec <options>");
            ExitCode::from(2)
        }
    }
}
