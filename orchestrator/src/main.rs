//! The `orchestrator` binary: parses configuration, sets up logging, runs until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use orchestrator::config::{self, Command};

/// glibc's allocator spent about 40% of the orchestrator's CPU under command load (batches of
/// short-lived buffers); mimalloc is several times cheaper there. The library leaves the choice
/// of allocator to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use orchestrator::{lifecycle, storage, telemetry};

/// After a stop signal, in-flight work gets this long before the process exits anyway. Commands not
/// acknowledged by then are redelivered at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = config::parse();
    // The shim is a plain process: no runtime, no threads, so its signal handling stays simple.
    if let Command::Shim(args) = &cli.command {
        return orchestrator::agent::shim::run(args.parent, &args.command[0], &args.command[1..]);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(run(cli))
}

async fn run(cli: config::Cli) -> ExitCode {
    match cli.command {
        Command::Shim(_) => unreachable!("handled before the runtime starts"),
        Command::Agent(args) => {
            telemetry::init(&args.log, args.log_format);
            match agent(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(mut config) => {
            let _telemetry = match telemetry::install(
                &config.database.log,
                config.database.log_format,
                config.database.otlp_endpoint.as_deref(),
            ) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("orchestrator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if config.agent_shim.is_none() {
                config.agent_shim = orchestrator::agent::shim::default_path();
            }
            let running = match orchestrator::start(*config).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "start-up failed");
                    return ExitCode::FAILURE;
                }
            };
            wait_for_signal().await;
            if tokio::time::timeout(SHUTDOWN_GRACE, running.shutdown()).await.is_err() {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight work did not finish in time; exiting anyway");
            }
            ExitCode::SUCCESS
        }
        Command::Events(args) => match orchestrator::tail::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orchestrator events: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Graph(args) => graph(&args),
        Command::Up(args) => match lifecycle::cli::up(&args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("orchestrator up: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Down(args) => cli_result("down", lifecycle::cli::down(&args).await),
        Command::Status(args) => cli_result("status", lifecycle::cli::status(&args).await),
        Command::Profile(args) => cli_result("profile", lifecycle::cli::profile(&args).await),
        Command::Migrate(db) => {
            telemetry::init(&db.log, db.log_format);
            let result = async {
                let pool = storage::pool(&db)?;
                storage::migrate(&pool).await
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "migration failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `orchestrator agent`: the node agent alone, until SIGINT or SIGTERM.
async fn agent(args: config::AgentArgs) -> anyhow::Result<()> {
    use orchestrator::agent::{Supervisor, logs::Rotation, service};
    if !orch_protocol::registry::is_valid_name(&args.node) {
        anyhow::bail!("--node {:?}: a node name is 1-63 of lower-case letters, digits, '-' or '_'", args.node);
    }
    let subjects = orch_protocol::Subjects::new(&args.subject_prefix)?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("agent-{}", args.node))
        .retry_on_initial_connect()
        .connect(&args.nats_url)
        .await?;
    let (exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let rotation = Rotation { max_bytes: args.log_max_bytes, ..Rotation::default() };
    let shim = orchestrator::agent::shim::default_path();
    let supervisor = std::sync::Arc::new(Supervisor::new(args.log_dir.clone(), rotation, exits_tx, shim));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pressure = orchestrator::agent::pressure::run(
        client.clone(),
        subjects.clone(),
        args.node.clone(),
        args.pressure.clone(),
        stopped.clone(),
    );
    let pressure = tokio::spawn(pressure);
    let task = tokio::spawn(service::run(client, subjects, args.node, supervisor, exits, stopped));
    wait_for_signal().await;
    let _ = stop.send(true);
    task.await??;
    let _ = pressure.await;
    Ok(())
}

/// `orchestrator graph`: a manifest's problems on stderr (exit 2), or its graph on stdout.
fn graph(args: &config::GraphArgs) -> ExitCode {
    use orchestrator::lifecycle::{Graph, Manifest};
    let graph = Manifest::load(&args.file).and_then(|m| Graph::new(&m));
    match graph {
        Ok(g) if args.levels => {
            for (level, names) in g.layers().iter().enumerate() {
                println!("level {level}: {}", names.join(" "));
            }
            ExitCode::SUCCESS
        }
        Ok(g) => {
            print!("{}", g.to_dot(None));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}: {e}", args.file.display());
            ExitCode::from(2)
        }
    }
}

fn cli_result(command: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orchestrator {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
