//! The `orchestrator` binary: parses configuration, sets up logging, runs until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use orchestrator::config::{self, Command};

/// glibc's allocator spent about 40% of the orchestrator's CPU under command load (batches of
/// short-lived buffers); mimalloc is several times cheaper there. The library leaves the choice
/// of allocator to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use orchestrator::{storage, telemetry};

/// After a stop signal, in-flight work gets this long before the process exits anyway. Commands not
/// acknowledged by then are redelivered at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = config::parse();
    // The shim is a plain process: no runtime, no threads, so its signal handling stays simple.
    if let Command::Shim(args) = &cli.command {
        return orchestrator::agent::shim::main(&args.args);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(run(cli))
}

async fn run(cli: config::Cli) -> ExitCode {
    match cli.command {
        Command::Shim(_) => unreachable!("handled before the runtime starts"),
        Command::Agent(args) => {
            telemetry::init(&args.log, args.log_format);
            match agent(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let _telemetry =
                match telemetry::install(&args.log.log, args.log.log_format, args.log.otlp_endpoint.as_deref()) {
                    Ok(guard) => guard,
                    Err(e) => {
                        eprintln!("orchestrator: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            let mut settings = match args.settings() {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("orchestrator: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(agent) = &mut settings.agent
                && agent.shim.is_none()
            {
                agent.shim = orchestrator::agent::shim::default_path();
            }
            match args.replica() {
                Ok(None) => {}
                Ok(Some(replica)) => {
                    return match orchestrator::cluster::replica::run(settings, replica, wait_for_signal()).await {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            tracing::error!(error = format!("{e:#}"), "replica failed");
                            ExitCode::FAILURE
                        }
                    };
                }
                Err(e) => {
                    eprintln!("orchestrator: {e}");
                    return ExitCode::from(2);
                }
            }
            let running = match orchestrator::start(settings).await {
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
        Command::Events(args) => match orchestrator::cli::events::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orchestrator events: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Graph(args) => graph(&args),
        Command::Up(args) => cli_outcome("up", orchestrator::cli::stack::up(&args).await),
        Command::Down(args) => cli_result("down", orchestrator::cli::stack::down(&args).await),
        Command::Status(args) => cli_result("status", orchestrator::cli::stack::status(&args).await),
        Command::Logs(args) => cli_result("logs", orchestrator::cli::logs::run(&args).await),
        Command::Profile(args) => cli_result("profile", orchestrator::cli::stack::profile(&args).await),
        Command::Cluster(args) => cli_result("cluster", orchestrator::cli::stack::cluster(&args).await),
        Command::Nodes(args) => cli_result("nodes", orchestrator::cli::nodes::run(&args).await),
        Command::Quota(command) => cli_result("quota", orchestrator::cli::nodes::quota(command).await),
        Command::History(command) => cli_outcome("history", orchestrator::cli::stack::history(command).await),
        Command::Config(command) => cli_result("config", orchestrator::cli::config::run(command).await),
        Command::SelfPreservation(orchestrator::config::SelfPreservationCommand::End { reason, api }) => {
            cli_result("self-preservation", orchestrator::cli::stack::end_self_preservation(reason, &api).await)
        }
        Command::Workflow(command) => cli_outcome("workflow", orchestrator::cli::workflow::run(command).await),
        Command::Migrate(args) => {
            telemetry::init(&args.log.log, args.log.log_format);
            let result = async {
                let pool = storage::pool(&args.database.settings())?;
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
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    if args.cleanup {
        let stopped = orchestrator::agent::cleanup(&settings).await?;
        tracing::info!(node = %settings.node, count = stopped.len(), services = ?stopped, "stopped every service of this agent");
        return Ok(());
    }
    let nats = args.nats().map_err(anyhow::Error::msg)?;
    let subjects = orch_protocol::Subjects::new(&args.subject_prefix)?;
    let signal = stop_signals();
    tracing::info!(node = %settings.node, url = %orch_client::redacted_url(&nats.url), "agent connecting to NATS");
    let client = orchestrator::nats::connect(&nats).await?;
    let (stop, stopped) = orchestrator::shutdown::Stopper::new();
    let task = tokio::spawn(orchestrator::agent::run(client, subjects, settings, stopped));
    signal.await;
    stop.stop();
    task.await?
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

/// The exit code of a command that follows something to its end: 0 when it succeeded, 1 when it
/// ended badly (a degraded start-up, a failed execution), 2 when the command itself failed.
fn cli_outcome(command: &str, result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("orchestrator {command}: {e:#}");
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
    stop_signals().await
}

/// SIGINT or SIGTERM, heard from the moment this is called (the handlers are installed at once,
/// not when the future is first polled).
fn stop_signals() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
