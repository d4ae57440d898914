//! `orch-shim`: the node agent's shim as a small program of its own, so that starting a service
//! costs one exec of a small binary instead of the whole orchestrator (see
//! `orchestrator::agent::shim` for what it does).
//!
//! ```text
//! orch-shim [shim] --parent PID -- PROGRAM [ARGS...]
//! ```

use std::process::ExitCode;

// The module's source itself, not the orchestrator library: the shim links only std and libc.
#[path = "../agent/shim.rs"]
#[allow(dead_code)]
mod shim;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // The agent runs every shim the same way, as `<shim> shim --parent ...`.
    if args.first().map(String::as_str) == Some("shim") {
        args.remove(0);
    }
    let parent = match args.as_slice() {
        [flag, pid, dashes, _program, ..] if flag == "--parent" && dashes == "--" => pid.parse::<u32>().ok(),
        _ => None,
    };
    let Some(parent) = parent else {
        eprintln!("usage: orch-shim [shim] --parent PID -- PROGRAM [ARGS...]");
        return ExitCode::from(64);
    };
    shim::run(parent, &args[3], &args[4..])
}
