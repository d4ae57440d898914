//! `orch-shim`: the node agent's shim as a small program of its own, so that starting a service
//! costs one exec of a small binary instead of the whole orchestrator (see
//! `orchestrator::agent::shim` for what it does).
//!
//! ```text
//! orch-shim [shim] --run-dir DIR --log-dir DIR --service NAME ... -- PROGRAM [ARGS...]
//! ```

use std::process::ExitCode;

// The modules' sources themselves, not the orchestrator library: the shim links little.
#[path = "../agent/cgroup.rs"]
#[allow(dead_code)]
mod cgroup;
#[path = "../agent/logs.rs"]
#[allow(dead_code)]
mod logs;
#[path = "../agent/shim.rs"]
#[allow(dead_code)]
mod shim;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // The agent runs every shim the same way, as `<shim> shim --run-dir ...`.
    if args.first().map(String::as_str) == Some("shim") {
        args.remove(0);
    }
    shim::main(&args)
}
