//! The command line: every setting is a flag, an `ORCH_*` environment variable and a key of the
//! optional TOML config file (`--config`), in that order of precedence. The `///` comment on each
//! field is its `--help` text. This is the only module that knows about flags: each command's
//! arguments become the plain settings of the library ([`crate::Settings`] and the settings
//! structs of its modules) here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::agent::AgentSettings;
use crate::agent::pressure::PressureSettings;
use crate::http::auth::{ApiKey, AuthSettings};
use crate::http::ws::FeedSettings;
use crate::http::{HttpSettings, Profile};
use crate::lifecycle::LifecycleSettings;
use crate::lifecycle::shedding::ShedSettings;
use crate::nats::{Credentials, NatsSettings, StreamSettings, TlsSettings};
use crate::priority::Limits;
use crate::registry::RegistrySettings;
use crate::registry::sweeper::SweepSettings;
use crate::settings::Settings;
use crate::storage::DatabaseSettings;
use crate::telemetry::LogFormat;
use crate::workers::maintenance::Retention;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Event-driven service orchestrator over NATS JetStream and PostgreSQL",
    long_about = "Event-driven service orchestrator: a service registry with leases and discovery, \
                  every change persisted in PostgreSQL and published as a CloudEvent on NATS JetStream.\n\n\
                  Settings come from flags, ORCH_* environment variables, and an optional TOML file \
                  (--config) whose keys are the long flag names, e.g. `nats-url = \"nats://host:4222\"`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the orchestrator: provision streams, apply migrations, serve NATS and HTTP until stopped.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(MigrateArgs),
    /// Print events from the events stream as they arrive, one JSON document per line.
    Events(EventsArgs),
    /// Run a node agent alone, connected only to NATS: it starts, stops and watches the processes
    /// of managed services on this machine for the orchestrator.
    Agent(Box<AgentArgs>),
    /// Run one service's process under a shim that keeps it running and its log written when the
    /// agent is gone (used by the agent itself).
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Validate a manifest of managed services and print its dependency graph (GraphViz DOT, one
    /// rank per level that can start in parallel), or its levels with `--levels`.
    Graph(GraphArgs),
    /// Apply a manifest of managed services to a running orchestrator and follow the start-up:
    /// live progress on a terminal, one line per transition otherwise, then the start-up profile.
    /// Exit code 0 when every service is ready, 1 when the start-up ended degraded or aborted,
    /// 2 when the manifest is invalid.
    Up(UpArgs),
    /// Stop every managed service in reverse dependency order (the stack stays down, also across
    /// restarts of the orchestrator, until the next `up`).
    Down(ApiArgs),
    /// Show each managed service: node, state, pid, restarts and why.
    Status(ApiArgs),
    /// Show a managed service's output, merged across its replicas and nodes in time order, one
    /// line each: `<time> <unit>@<node> <stream> <text>`. Without filters, the last lines; with
    /// `-f`, then every new line as it is written (until interrupted).
    Logs(LogsArgs),
    /// Show the last start-up: wall time, critical path, parallel efficiency, the critical chain
    /// and the bottlenecks (like `systemd-analyze critical-chain`).
    Profile(ApiArgs),
    /// Show the group of replicas (`serve --replica`): which one leads, in which term and since
    /// when, and each replica's role, address and last sign of life. Any replica answers.
    Cluster(ApiArgs),
    /// Show the nodes: each one's status (ready or down), capacity, what is reserved, allocated
    /// and free, its labels, and what runs there; with a NAME, that node in full.
    Nodes(NodesArgs),
    /// Quotas of groups of managed services (docs/resources.md): list them with what each group
    /// asks for now, set one, or remove one (setting and removing need an admin token).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Workflows (docs/workflows.md): store a definition, run it and follow it, list, show and
    /// cancel executions.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Manifest history: list the stored versions with who applied them and when, show one, diff
    /// two service by service and field by field, roll back to one.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Self-preservation of the registry (docs/protocol.md §4): end it when a large scale-down
    /// was deliberate, so the overdue instances expire (needs an operator token).
    #[command(subcommand, name = "self-preservation")]
    SelfPreservation(SelfPreservationCommand),
    /// The config store (docs/protocol.md §18): keys with JSON values, compare-and-set, history,
    /// revert, and JSON Schemas per key prefix. Changes need an operator token, schemas an admin's.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a key's value (JSON) and revision.
    Get {
        key: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set a key. VALUE is JSON (`42`, `true`, `{"a":1}`, `"text"`); anything that is not JSON is
    /// taken as text.
    Put {
        key: String,
        value: String,
        /// Only if the key's revision is still this one (0: only if it does not exist).
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a key (its history stays).
    Delete {
        key: String,
        /// Only if the key's revision is still this one.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The keys under a prefix (whole dot-separated parts), with their values.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A key's changes, newest first: revision, what, who, when, old -> new.
    History {
        key: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put the value a key had at an earlier revision again, as a new revision.
    Revert {
        key: String,
        /// The earlier revision.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set the JSON Schema of a key prefix from a file (needs an admin token).
    Schema {
        prefix: String,
        /// The schema (JSON).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// The stored versions, newest first: version, when, who, source; the current one marked.
    List {
        /// How many (1-500).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only versions older than this one (the next page).
        #[arg(long)]
        before: Option<i64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the manifest of one version as it was applied.
    Show {
        version: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// What changed from one version to another: `+` added, `-` removed, `~` changed services,
    /// each changed field with its old and new value (defaults filled in).
    Diff {
        from: i64,
        to: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Apply a stored version again, as a new version (needs an admin token), and follow its
    /// start-up like `up` (exit code 0 when everything is ready, 1 otherwise).
    Rollback {
        version: i64,
        /// Return once it is accepted instead of following the start-up.
        #[arg(long, short = 'd')]
        detach: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SelfPreservationCommand {
    /// End self-preservation now: the end is recorded with who asked and why, and every overdue
    /// instance expires at once. Fails when it is not active.
    End {
        /// Why (recorded in the `self_preservation_exited` event).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Store a workflow definition (TOML) as its next version (needs an admin token).
    Put {
        /// The definition; its `[workflow] name` names it.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Start an execution of a workflow's latest version and follow it to its end (exit code 0
    /// when it succeeded, 1 otherwise), or return at once with `--detach`.
    Run {
        /// The workflow's name.
        name: String,
        /// An input, `NAME=VALUE` (VALUE as JSON when it parses, else as text); repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Print the execution's id and return without following it.
        #[arg(long, short = 'd')]
        detach: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one execution: its status and each step's.
    Get {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the newest executions (of one workflow with `--workflow`).
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel an execution that has not ended.
    Cancel {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve an approval step that waits (the execution goes on).
    Approve {
        /// The execution's id.
        id: String,
        /// The approval step.
        step: String,
        /// Why (kept with the decision).
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reject an approval step that waits (the step fails).
    Reject {
        id: String,
        step: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Retry an ended execution as a new one: from its failed steps (what succeeded keeps its
    /// output), or every step with `--from-start`; then follow it like `run`.
    Retry {
        id: String,
        #[arg(long)]
        from_start: bool,
        /// Print the new execution's id and return without following it.
        #[arg(long, short = 'd')]
        detach: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the cron schedules with their next firings.
    Schedules {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show each queue: waiting, running, ended in the last day, wait before start (p50/p99).
    Queues {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the webhooks (`[[webhook]]` of the workflows) and whether each has its secret.
    Hooks {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set a webhook's secret, read from standard input (so it stays out of the shell's
    /// history); needs an admin token. Deliveries are refused until it is set.
    HookSecret {
        /// The webhook's name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the orchestrator's HTTP API.
    #[arg(long, env = "ORCH_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// Bearer token for the API when it requires one (`up` and `down` need an admin token).
    #[arg(long, env = "ORCH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The managed service (all its replicas).
    pub service: String,
    /// Follow: after the last lines, print new ones as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the last matching lines (1-10000).
    #[arg(short = 'n', long = "lines", default_value_t = 100)]
    pub lines: usize,
    /// Only lines written at or after this time (RFC 3339, e.g. 2026-01-01T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines written before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only lines of this stream: stdout or stderr.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only lines containing this text (case-sensitive).
    #[arg(long, conflicts_with = "regex")]
    pub grep: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long)]
    pub regex: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The manifest (TOML); see docs/manifest.md and examples/stack.toml.
    #[arg(short = 'f', long = "file", env = "ORCH_MANIFEST")]
    pub file: PathBuf,

    /// Return once the manifest is accepted instead of following the start-up.
    #[arg(long, short = 'd')]
    pub detach: bool,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// This node's name: the agent answers on `<prefix>.agent.<node>.*`.
    #[arg(long, env = "ORCH_NODE", default_value = "local")]
    pub node: String,

    /// NATS server URL(s), comma-separated. Credentials may be in the URL
    /// (`nats://agent-<node>:<password>@host:4222`, as scripts/nats-auth.sh writes it).
    #[arg(long, env = "ORCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,

    /// Subject prefix of the orchestrator this agent serves.
    #[arg(long, env = "ORCH_SUBJECT_PREFIX", default_value = "orch")]
    pub subject_prefix: String,

    /// Where the output of each service is kept (`<service>.log`, rotated).
    #[arg(long, env = "ORCH_AGENT_LOG_DIR", default_value = "agent-logs")]
    pub log_dir: PathBuf,

    #[command(flatten)]
    pub pressure: PressureArgs,

    #[command(flatten)]
    pub node_report: NodeReportArgs,

    #[command(flatten)]
    pub cgroups: CgroupArgs,

    /// A service's log is rotated past this size (bytes); three rotated files are kept.
    #[arg(long, env = "ORCH_AGENT_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub log_max_bytes: u64,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "ORCH_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "ORCH_LOG_FORMAT", default_value = "auto", value_parser = log_format())]
    pub log_format: LogFormat,

    /// Stop every service that runs for this node's agent (the one on `--log-dir`, standalone or
    /// embedded in `orchestrator serve` with `--agent-log-dir`), each with its stop signal and
    /// grace period, forget their records, and exit; needs no NATS. Services otherwise outlive
    /// their agent: a stopped or killed agent leaves them running, and the next agent on the same
    /// directory adopts them, however long that takes.
    #[arg(long)]
    pub cleanup: bool,
}

impl AgentArgs {
    /// How the standalone agent connects to NATS: the same ways as the orchestrator (a user of
    /// its own, `agent-<node>` in scripts/nats-auth.sh), named `agent-<node>`.
    pub fn nats(&self) -> Result<NatsSettings, String> {
        let (credentials, tls) = self.nats_auth.settings()?;
        Ok(NatsSettings {
            url: self.nats_url.clone(),
            name: format!("agent-{}", self.node),
            credentials,
            tls,
            streams: Default::default(),
        })
    }

    /// The standalone agent's settings; it runs its services under the running binary's shim.
    pub fn settings(&self) -> Result<AgentSettings, String> {
        if !orch_protocol::registry::is_valid_name(&self.node) {
            return Err(format!(
                "--node {:?}: a node name is 1-63 of lower-case letters, digits, '-' or '_'",
                self.node
            ));
        }
        Ok(AgentSettings {
            node: self.node.clone(),
            log_dir: self.log_dir.clone(),
            rotation: crate::agent::logs::Rotation {
                max_bytes: self.log_max_bytes,
                ..crate::agent::logs::Rotation::default()
            },
            shim: crate::agent::shim::default_path(),
            pressure: self.pressure.settings(),
            node_report: self.node_report.settings()?,
            cgroup_root: self.cgroups.cgroup_root.clone(),
            allow_unlimited: self.cgroups.allow_unlimited,
        })
    }
}

/// What a node's agent reports about the node (docs/resources.md).
#[derive(Debug, Clone, Subcommand)]
pub enum QuotaCommand {
    /// Every quota, with what the applied stack's services of its group ask for.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Sets what all the services of GROUP (manifest `group`) may ask for together.
    Set {
        group: String,
        /// Millicores (1000 = one core).
        #[arg(long)]
        cpu: u64,
        /// MiB.
        #[arg(long)]
        memory: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Removes GROUP's quota.
    Clear {
        group: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// One node, shown in full (its labels and every allocation).
    pub name: Option<String>,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct NodeReportArgs {
    /// How often the agent reports its node (capacity, labels, what runs there) to the
    /// orchestrator, which marks a node down after `--node-down-after` without a report.
    #[arg(long, env = "ORCH_NODE_HEARTBEAT", default_value = "2s", value_parser = positive_duration)]
    pub node_heartbeat: Duration,

    /// The node's CPU in millicores (1000 per core); measured (all CPUs) by default. Lower it to
    /// give services only part of a machine, or to run several simulated nodes on one machine.
    #[arg(long, env = "ORCH_NODE_CPU")]
    pub node_cpu: Option<u64>,

    /// The node's memory in MiB; measured (`MemTotal`) by default.
    #[arg(long, env = "ORCH_NODE_MEMORY")]
    pub node_memory: Option<u64>,

    /// CPU (millicores) kept for the system and the agent: never placed on.
    #[arg(long, env = "ORCH_RESERVE_CPU", default_value_t = 100)]
    pub reserve_cpu: u64,

    /// Memory (MiB) kept for the system and the agent: never placed on.
    #[arg(long, env = "ORCH_RESERVE_MEMORY", default_value_t = 256)]
    pub reserve_memory: u64,

    /// A label of this node, `KEY=VALUE` (repeatable), that placement constraints select on,
    /// e.g. `--label zone=a --label disk=ssd`.
    #[arg(long = "label", env = "ORCH_NODE_LABELS", value_delimiter = ',', value_parser = crate::agent::node::parse_label)]
    pub labels: Vec<(String, String)>,

    /// Labels from a file of `KEY = VALUE` lines (`#` comments); `--label` wins over it.
    #[arg(long, env = "ORCH_NODE_LABELS_FILE")]
    pub labels_file: Option<PathBuf>,
}

impl NodeReportArgs {
    fn settings(&self) -> Result<crate::agent::node::NodeSettings, String> {
        let mut labels = match &self.labels_file {
            Some(path) => crate::agent::node::read_labels(path).map_err(|e| format!("--labels-file: {e}"))?,
            None => Default::default(),
        };
        labels.extend(self.labels.iter().cloned());
        Ok(crate::agent::node::NodeSettings {
            interval: self.node_heartbeat,
            capacity: crate::agent::node::CapacityOverride { cpu: self.node_cpu, memory: self.node_memory },
            reserved: orch_protocol::resources::Resources::new(self.reserve_cpu, self.reserve_memory),
            labels,
        })
    }
}

/// How the agent enforces the CPU and memory limits services ask for (their `limits`).
#[derive(Debug, Clone, Args)]
pub struct CgroupArgs {
    /// Run services that ask for CPU or memory limits without them (a warning for each) when this
    /// machine has no usable cgroups: neither cgroup v2 with the cpu and memory controllers nor
    /// cgroup v1 cpu and memory hierarchies, writable by the agent. Without this flag such
    /// starts are refused. The agent says at its start what it found.
    #[arg(long, env = "ORCH_ALLOW_UNLIMITED", default_value_t = false)]
    pub allow_unlimited: bool,

    /// Where the cgroup file systems are mounted. Each service runs in a cgroup of its own,
    /// `orch/<node>/<service>-<run>` below it (in each hierarchy on cgroup v1), removed when it
    /// ends.
    #[arg(long, env = "ORCH_CGROUP_ROOT", default_value = crate::agent::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
}

/// Where the agent's pressure readings come from and how often.
#[derive(Debug, Clone, Args)]
pub struct PressureArgs {
    /// How often the agent measures and reports its node's CPU and memory pressure.
    #[arg(long, env = "ORCH_PRESSURE_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub pressure_interval: Duration,

    /// Read pressure from this JSON file (`{"cpu": 0.2, "memory": 0.95}`, shares 0-1) instead of
    /// measuring it: for drills and tests of load shedding. Re-read at every interval.
    #[arg(long, env = "ORCH_PRESSURE_FILE")]
    pub pressure_file: Option<PathBuf>,
}

impl PressureArgs {
    fn settings(&self) -> PressureSettings {
        PressureSettings { interval: self.pressure_interval, file: self.pressure_file.clone() }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ShimArgs {
    /// What the agent passes (see `orchestrator::agent::shim`), read by the shim itself.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// The manifest (TOML); see docs/manifest.md and examples/stack.toml.
    #[arg(short = 'f', long = "file", env = "ORCH_MANIFEST")]
    pub file: PathBuf,

    /// Print the levels (services that can start in parallel), one line per level, instead of DOT.
    #[arg(long)]
    pub levels: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "ORCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Subject prefix of the orchestrator to follow.
    #[arg(long, env = "ORCH_SUBJECT_PREFIX", default_value = "orch")]
    pub subject_prefix: String,

    /// Only events on subjects matching this pattern, e.g. `orch.evt.registry.web.>`; it must lie
    /// within the events subjects (`<prefix>.evt.>`). Messages that are no CloudEvent are named on
    /// stderr and skipped.
    #[arg(long)]
    pub filter: Option<String>,

    /// Start from the first stored event instead of only new ones.
    #[arg(long)]
    pub all: bool,
}

/// The values `--log-format` takes.
fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help("Human-readable on a terminal, JSON otherwise"),
        PossibleValue::new("human"),
        PossibleValue::new("json"),
    ])
    .map(|name| name.parse::<LogFormat>().expect("a listed log format"))
}

/// The values `--profile` takes.
fn profile() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new([
        PossibleValue::new("development")
            .help("Local use: without tokens the API is open (every caller is admin), with a warning"),
        PossibleValue::new("production").help(
            "Refuses to start without API tokens (--api-key, --api-keys-file, --jwt-secret or --jwt-jwks-file) \
             unless --insecure is given",
        ),
    ])
    .map(|name| name.parse::<Profile>().expect("a listed profile"))
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "ORCH_DATABASE_URL", default_value = "postgres://orch@127.0.0.1:55432/orch")]
    pub database_url: String,

    /// Maximum connections in the PostgreSQL pool.
    #[arg(long, env = "ORCH_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// How long to wait for a pooled connection before reporting PostgreSQL unavailable.
    #[arg(long, env = "ORCH_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub database_acquire_timeout: Duration,
}

impl DatabaseArgs {
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_acquire_timeout,
            fence: None,
            application_name: "orchestrator".into(),
        }
    }
}

/// Logs, span export and the config file, for the commands that run the orchestrator's core.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Optional TOML file with settings; keys are the long flag names.
    #[arg(long, env = "ORCH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `orchestrator=debug,info`.
    #[arg(long, env = "ORCH_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "ORCH_LOG_FORMAT", default_value = "auto", value_parser = log_format())]
    pub log_format: LogFormat,

    /// Export trace spans (one per HTTP request, with what runs inside it) over OTLP/HTTP to this
    /// collector, e.g. `http://127.0.0.1:4318/v1/traces`. Needs a build with `--features otlp`.
    #[arg(long, env = "ORCH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "ORCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// This process's name in a group of replicas on the same PostgreSQL and NATS (unique per
    /// process, e.g. the host's name). It then does the orchestrator's work only while it leads
    /// (holds the group's lease in PostgreSQL) and waits as a standby otherwise, taking over when
    /// the leader stops, dies or cannot renew; every write of a leader that lost the lease is
    /// refused by the database. Without it, one orchestrator runs alone.
    #[arg(long, env = "ORCH_REPLICA")]
    pub replica: Option<String>,

    /// How long a replica's lease lasts without renewal: the longest a standby waits for a
    /// leader that is paused or cut off (a stopped leader gives the lease up at once).
    #[arg(long, env = "ORCH_LEASE_TTL", default_value = "5s", value_parser = positive_duration)]
    pub lease_ttl: Duration,

    /// Workflow executions under way at once in each queue; the others wait, highest priority
    /// first.
    #[arg(long, env = "ORCH_WORKFLOW_QUEUE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub workflow_queue_concurrency: u16,

    /// Priority points a waiting workflow execution gains per minute it waits, so low priorities
    /// are never starved (0: strict priority order).
    #[arg(long, env = "ORCH_WORKFLOW_AGING", default_value_t = 1.0)]
    pub workflow_aging_per_minute: f64,

    /// At most this many managed services are stopped to make room for ones of higher priority
    /// (preemption) per `--preemption-window`, whatever the priorities say: an engine that
    /// raises priorities in a loop cannot empty the cluster. 0 turns preemption off.
    #[arg(long, env = "ORCH_PREEMPTION_BUDGET", default_value_t = 5)]
    pub preemption_budget: u32,

    /// The sliding window of `--preemption-budget`.
    #[arg(long, env = "ORCH_PREEMPTION_WINDOW", default_value = "10m", value_parser = positive_duration)]
    pub preemption_window: Duration,

    /// A node whose agent has not reported for this long is `down`: nothing new is placed there
    /// (agents report every `--node-heartbeat`, 2s by default).
    #[arg(long, env = "ORCH_NODE_DOWN_AFTER", default_value = "10s", value_parser = positive_duration)]
    pub node_down_after: Duration,

    /// The URL other replicas forward HTTP requests to when this replica leads (`--replica`):
    /// what they can reach this one's `--http-addr` at, e.g. `http://orchestrator-a:8080`.
    /// Defaults to `http://<--http-addr>` (the host's name when it listens on every address).
    #[arg(long, env = "ORCH_ADVERTISE_URL", value_parser = http_url)]
    pub advertise_url: Option<String>,

    /// Name this orchestrator gives its NATS connection (visible in server monitoring).
    #[arg(long, env = "ORCH_NATS_NAME", default_value = "orchestrator")]
    pub nats_name: String,

    /// Subject prefix; subjects are `<prefix>.cmd.…`, `<prefix>.evt.…`, streams `<PREFIX>_COMMANDS` and so on.
    #[arg(long, env = "ORCH_SUBJECT_PREFIX", default_value = "orch")]
    pub subject_prefix: String,

    /// Replicas of every stream (1 on a single server; 3 on a NATS cluster).
    #[arg(long, env = "ORCH_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// How long events are kept on the events stream.
    #[arg(long, env = "ORCH_EVENTS_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub events_max_age: Duration,

    /// How long rejected commands are kept on the dead-letter stream.
    #[arg(long, env = "ORCH_DEAD_LETTER_MAX_AGE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub dead_letter_max_age: Duration,

    /// JetStream duplicate window of every stream: a re-publish with the same Nats-Msg-Id within
    /// this window is dropped by the server.
    #[arg(long, env = "ORCH_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub duplicate_window: Duration,

    /// Most commands waiting on the commands stream; beyond it publishers get an error rather than
    /// older commands being dropped.
    #[arg(long, env = "ORCH_COMMANDS_MAX_MESSAGES", default_value_t = 1_000_000)]
    pub commands_max_messages: i64,

    /// Most bytes the commands stream holds; beyond it publishers get an error.
    #[arg(long, env = "ORCH_COMMANDS_MAX_BYTES", default_value_t = 1 << 30)]
    pub commands_max_bytes: i64,

    /// Most bytes the events stream keeps; beyond it the oldest events go (as with the age).
    #[arg(long, env = "ORCH_EVENTS_MAX_BYTES", default_value_t = 1 << 30)]
    pub events_max_bytes: i64,

    /// Most bytes the dead-letter stream keeps; beyond it the oldest dead letters go.
    #[arg(long, env = "ORCH_DEAD_LETTER_MAX_BYTES", default_value_t = 256 << 20)]
    pub dead_letter_max_bytes: i64,

    /// Largest command payload accepted, in bytes; larger ones are dead-lettered.
    #[arg(long, env = "ORCH_COMMAND_MAX_BYTES", default_value_t = 64 * 1024)]
    pub command_max_bytes: usize,

    /// Most commands applied in one PostgreSQL transaction (group commit).
    #[arg(long, env = "ORCH_BATCH_MAX", default_value_t = 512)]
    pub batch_max: usize,

    /// Parallel registry writers. Commands on one instance always go to the same writer, so they
    /// keep their order; more writers overlap transactions on more cores.
    #[arg(long, env = "ORCH_WRITER_SHARDS", default_value_t = 2)]
    pub writer_shards: usize,

    /// HTTP API listen address.
    #[arg(long, env = "ORCH_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// How long an HTTP or NATS request waits for its command to commit before answering `unavailable`.
    #[arg(long, env = "ORCH_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How often leases are checked for expiry. Detection of a dead instance takes its TTL plus
    /// up to this long.
    #[arg(long, env = "ORCH_SWEEP_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// An instance critical for this long (by its lease or its checks, whatever path registered
    /// it) is deregistered. Instances in maintenance are kept.
    #[arg(long, env = "ORCH_DEREGISTER_CRITICAL_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub deregister_critical_after: Duration,

    /// Run `exec` health checks. Off by default: an exec check runs a command, declared by whoever
    /// may register, on the orchestrator's host.
    #[arg(long, env = "ORCH_HEALTH_EXEC_ENABLED", default_value_t = false)]
    pub health_exec_enabled: bool,

    /// Host names or IP addresses any http or tcp check may reach, on any port. Without it, a
    /// check reaches only its own instance's address and port (comma-separated).
    #[arg(long, env = "ORCH_CHECK_ALLOW_HOSTS", value_delimiter = ',')]
    pub check_allow_hosts: Vec<String>,

    /// Networks (CIDR, e.g. 10.0.0.0/8) any http or tcp check may reach, on any port. Link-local
    /// and cloud metadata addresses (169.254.0.0/16, fe80::/10, ...) are refused to every check
    /// unless a network given here contains them (comma-separated).
    #[arg(long, env = "ORCH_CHECK_ALLOW_NETWORKS", value_delimiter = ',')]
    pub check_allow_networks: Vec<ipnet::IpNet>,

    /// Subjects (wildcards allowed) nats checks may request besides $SRV.> (the NATS service API)
    /// (comma-separated).
    #[arg(long, env = "ORCH_CHECK_ALLOW_NATS_SUBJECTS", value_delimiter = ',')]
    pub check_allow_nats_subjects: Vec<String>,

    /// A NATS user of its own for nats checks (with `--check-nats-password`): they are then sent
    /// over a second connection to the same servers as that user, who may publish only $SRV.>
    /// and the allowed subjects, instead of over the orchestrator's connection
    /// (scripts/nats-auth.sh makes the user `checks`). The TLS settings of the main connection apply.
    #[arg(long, env = "ORCH_CHECK_NATS_USER", requires = "check_nats_password")]
    pub check_nats_user: Option<String>,

    /// The password of `--check-nats-user`.
    #[arg(long, env = "ORCH_CHECK_NATS_PASSWORD", hide_env_values = true, requires = "check_nats_user")]
    pub check_nats_password: Option<String>,

    /// Most check runs in flight at once; runs beyond it wait, which shows as drift.
    #[arg(long, env = "ORCH_HEALTH_CONCURRENCY", default_value_t = 4096)]
    pub health_concurrency: usize,

    /// The checker reports itself lagging (event and metric) when check runs start later than
    /// this (99th percentile over 5 s) or runs are skipped.
    #[arg(long, env = "ORCH_HEALTH_MAX_DRIFT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub health_max_drift: Duration,

    /// Flap damping: an instance whose health changes more than this many times within the flap
    /// window is flapping; its health events are held back until it is stable for a whole window.
    #[arg(long, env = "ORCH_FLAP_THRESHOLD", default_value_t = 4)]
    pub flap_threshold: usize,

    /// Flap damping window.
    #[arg(long, env = "ORCH_FLAP_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub flap_window: Duration,

    /// Services marked critical, comma-separated: the system is critical while any of them is.
    #[arg(long, env = "ORCH_CRITICAL_SERVICES", value_delimiter = ',')]
    pub critical_services: Vec<String>,

    /// How long the history of health transitions is kept.
    #[arg(long, env = "ORCH_HEALTH_HISTORY_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub health_history_retention: Duration,

    /// Self-preservation: if more than this share of live instances expire in one sweep, expiry is
    /// suspended (a network problem is likelier than a mass failure) until heartbeats recover.
    #[arg(long, env = "ORCH_SELF_PRESERVATION_THRESHOLD", default_value_t = 0.15)]
    pub self_preservation_threshold: f64,

    /// Self-preservation only applies with at least this many live instances.
    #[arg(long, env = "ORCH_SELF_PRESERVATION_MIN_INSTANCES", default_value_t = 10)]
    pub self_preservation_min_instances: usize,

    /// How long the ids of processed commands are remembered for exactly-once handling.
    #[arg(long, env = "ORCH_PROCESSED_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub processed_retention: Duration,

    /// How long dead letters are kept in PostgreSQL (the dead-letter stream has its own age).
    #[arg(long, env = "ORCH_DEAD_LETTER_RETENTION", default_value = "28d", value_parser = humantime::parse_duration)]
    pub dead_letter_retention: Duration,

    /// Most dead letters kept in PostgreSQL (the newest).
    #[arg(long, env = "ORCH_DEAD_LETTER_MAX_ROWS", default_value_t = 100_000)]
    pub dead_letter_max_rows: i64,

    /// How long the history of priority changes is kept.
    #[arg(long, env = "ORCH_PRIORITY_HISTORY_RETENTION", default_value = "28d", value_parser = humantime::parse_duration)]
    pub priority_history_retention: Duration,

    /// Most priority changes kept in the history (the newest).
    #[arg(long, env = "ORCH_PRIORITY_HISTORY_MAX_ROWS", default_value_t = 1_000_000)]
    pub priority_history_max_rows: i64,

    /// Manifest versions kept (the newest; the current one always).
    #[arg(long, env = "ORCH_MANIFEST_VERSIONS_KEPT", default_value_t = 100)]
    pub manifest_versions_kept: i64,

    /// Start-up runs kept with their profiles (the newest).
    #[arg(long, env = "ORCH_STARTUP_RUNS_KEPT", default_value_t = 100)]
    pub startup_runs_kept: i64,

    /// Largest manifest `PUT /api/v1/stack` takes (bytes); other bodies are limited by
    /// `--command-max-bytes`.
    #[arg(long, env = "ORCH_MANIFEST_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub manifest_max_bytes: usize,

    /// This machine's node name: the embedded agent reports this node and runs the managed
    /// services placed on it (or pinned to it with `node`).
    #[arg(long, env = "ORCH_NODE", default_value = "local")]
    pub node: String,

    /// Run no embedded agent: managed services then run only on nodes with a standalone agent
    /// (`orchestrator agent --node NAME`).
    #[arg(long, env = "ORCH_NO_AGENT", default_value_t = false)]
    pub no_agent: bool,

    /// Where the embedded agent keeps each managed service's output (`<service>.log`, rotated).
    #[arg(long, env = "ORCH_AGENT_LOG_DIR", default_value = "agent-logs")]
    pub agent_log_dir: PathBuf,

    /// The `orchestrator` binary the embedded agent runs each service under (`orchestrator shim`);
    /// by default the running binary itself.
    #[arg(long, env = "ORCH_AGENT_SHIM", hide = true)]
    pub agent_shim: Option<PathBuf>,

    /// How often a starting service's readiness check runs until it first passes (at most the
    /// check's own interval): short, so what depends on it starts moments after it is ready. Each
    /// starting service costs one probe per interval; raise it for stacks of many slow starters.
    #[arg(long, env = "ORCH_STARTUP_PROBE_INTERVAL", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub startup_probe_interval: Duration,

    /// How often the controller compares the processes it expects with what each node's agent
    /// runs, so that a lost process-end report is noticed.
    #[arg(long, env = "ORCH_RECONCILE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    #[command(flatten)]
    pub pressure: PressureArgs,

    #[command(flatten)]
    pub node_report: NodeReportArgs,

    #[command(flatten)]
    pub cgroups: CgroupArgs,

    #[command(flatten)]
    pub shedding: ShedArgs,

    #[command(flatten)]
    pub priority: PriorityArgs,

    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub web: WebArgs,
}

/// Bearer tokens of the HTTP API. Roles: `viewer` reads, `operator` also changes state (register,
/// restart, priorities, health), `admin` also replaces or stops the whole stack.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// An API key, `ROLE:NAME:SECRET` (role viewer, engine, operator or admin; secret at least 16
    /// characters). Repeatable; in the environment, comma-separated.
    #[arg(long, env = "ORCH_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<ApiKey>,

    /// A file of API keys, one `ROLE:NAME:SECRET` per line (`#` starts a comment).
    #[arg(long, env = "ORCH_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Accept JWTs signed with this HS256 secret (at least 32 bytes). The token's `role` (or
    /// `roles`) claim gives the role, `sub` the caller's name; `exp` is required.
    #[arg(long, env = "ORCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Accept JWTs signed by the keys of this JWKS file (RS256, ES256, EdDSA...; each key needs
    /// `kid` and `alg`), as an identity provider publishes them.
    #[arg(long, env = "ORCH_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Required `iss` claim of JWTs.
    #[arg(long, env = "ORCH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of JWTs.
    #[arg(long, env = "ORCH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Serve /metrics without a token (a Prometheus on a trusted network). By default it needs a
    /// viewer token once tokens are configured, like every read.
    #[arg(long, env = "ORCH_METRICS_PUBLIC", default_value_t = false)]
    pub metrics_public: bool,
}

/// The HTTP API's profile, dashboard and live feed.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// `production` refuses to start without API tokens unless `--insecure` is given.
    #[arg(long, env = "ORCH_PROFILE", default_value = "development", value_parser = profile())]
    pub profile: Profile,

    /// Run the production profile without API tokens: every caller is admin. Say it explicitly.
    #[arg(long, env = "ORCH_INSECURE", default_value_t = false)]
    pub insecure: bool,

    /// The built dashboard (`scripts/dashboard.sh` builds it), served at `/`.
    #[arg(long, env = "ORCH_DASHBOARD_DIR", default_value = "dashboard/dist")]
    pub dashboard_dir: PathBuf,

    /// Events queued for one live-feed client (`/api/v1/ws`).
    #[arg(long, env = "ORCH_WS_BUFFER", default_value_t = 1024)]
    pub ws_buffer: usize,

    /// A live-feed client whose queue stays full this long is slow: it is sent a notice with the
    /// id to resume after, and disconnected.
    #[arg(long, env = "ORCH_WS_STALL", default_value = "5s", value_parser = positive_duration)]
    pub ws_stall: Duration,

    /// Most live-feed clients at once; more are refused with 503.
    #[arg(long, env = "ORCH_WS_MAX_CLIENTS", default_value_t = 256)]
    pub ws_max_clients: usize,

    /// Web origins (scheme://host[:port]) besides the API's own that may send changes and open
    /// the live feed from a browser; a request with any other Origin is refused (comma-separated).
    #[arg(long, env = "ORCH_HTTP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub http_allowed_origins: Vec<String>,

    /// Host names besides loopback ones the API answers when it listens on a loopback address
    /// (against DNS rebinding) (comma-separated).
    #[arg(long, env = "ORCH_HTTP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub http_allowed_hosts: Vec<String>,

    /// A client must send a request's headers within this long, or its connection is closed
    /// (slow clients, connections that send nothing, and kept-alive connections idle this long
    /// after their last answer: it is the idle timeout too).
    #[arg(long, env = "ORCH_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http_header_timeout: Duration,

    /// A request taking longer answers 503 with Retry-After (taking the stack down, which waits
    /// for the services' grace periods, is exempt).
    #[arg(long, env = "ORCH_HTTP_REQUEST_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub http_request_timeout: Duration,

    /// Most HTTP requests in flight; more answer 503 with Retry-After at once (probes exempt).
    #[arg(long, env = "ORCH_HTTP_MAX_CONCURRENT", default_value_t = 1024)]
    pub http_max_concurrent: usize,
}

/// How the orchestrator authenticates to NATS. Give at most one of user/password, token, nkey
/// seed or credentials file; TLS settings combine with any of them.
#[derive(Debug, Clone, Args)]
pub struct NatsAuthArgs {
    /// NATS user name (with `--nats-password`).
    #[arg(long, env = "ORCH_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password (with `--nats-user`).
    #[arg(long, env = "ORCH_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS authentication token.
    #[arg(long, env = "ORCH_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// File holding an NKey seed (`SU...`).
    #[arg(long, env = "ORCH_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,

    /// NATS credentials file (JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "ORCH_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// CA certificate (PEM) to verify the NATS server with.
    #[arg(long, env = "ORCH_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, with `--nats-tls-key`.
    #[arg(long, env = "ORCH_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "ORCH_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "ORCH_NATS_REQUIRE_TLS", default_value_t = false)]
    pub nats_require_tls: bool,
}

impl NatsAuthArgs {
    /// The one way to authenticate, and TLS; errors when the flags name more than one way or
    /// half of a pair.
    fn settings(&self) -> Result<(Credentials, TlsSettings), String> {
        let ways = [
            self.nats_user.is_some() || self.nats_password.is_some(),
            self.nats_token.is_some(),
            self.nats_nkey_file.is_some(),
            self.nats_creds.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(
                "give at most one of --nats-user/--nats-password, --nats-token, --nats-nkey-file and --nats-creds"
                    .into(),
            );
        }
        let credentials = match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => {
                Credentials::UserPassword { user: user.clone(), password: password.clone() }
            }
            (Some(_), None) | (None, Some(_)) => return Err("--nats-user and --nats-password go together".into()),
            (None, None) => match (&self.nats_token, &self.nats_nkey_file, &self.nats_creds) {
                (Some(token), _, _) => Credentials::Token(token.clone()),
                (_, Some(path), _) => Credentials::NKeyFile(path.clone()),
                (_, _, Some(path)) => Credentials::CredsFile(path.clone()),
                (None, None, None) => Credentials::None,
            },
        };
        let client = match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("--nats-tls-cert and --nats-tls-key go together".into()),
        };
        Ok((credentials, TlsSettings { ca: self.nats_tls_ca.clone(), client, required: self.nats_require_tls }))
    }
}

/// Guardrails against a runaway engine changing priorities.
#[derive(Debug, Clone, Args)]
pub struct PriorityArgs {
    /// Most engine changes of one service's priority within `--priority-rate-window`; more are
    /// refused (`rate_limited`) and recorded.
    #[arg(long, env = "ORCH_PRIORITY_RATE_LIMIT", default_value_t = 10)]
    pub priority_rate_limit: u32,

    #[arg(long, env = "ORCH_PRIORITY_RATE_WINDOW", default_value = "60s", value_parser = positive_duration)]
    pub priority_rate_window: Duration,

    /// Share of the known services (registered, managed or with a priority) the engine may move
    /// within `--priority-mass-window`. Past it, engine changes are held and a system event
    /// raises the alarm, until an operator releases the hold or the window passes.
    #[arg(long, env = "ORCH_PRIORITY_MASS_SHARE", default_value_t = 0.5)]
    pub priority_mass_share: f64,

    /// The mass-change guard always allows at least this many services to move per window.
    #[arg(long, env = "ORCH_PRIORITY_MASS_MIN", default_value_t = 5)]
    pub priority_mass_min: usize,

    /// Window of the mass-change guard, and how long a hold lasts without a release.
    #[arg(long, env = "ORCH_PRIORITY_MASS_WINDOW", default_value = "60s", value_parser = positive_duration)]
    pub priority_mass_window: Duration,
}

impl PriorityArgs {
    fn limits(&self) -> Limits {
        Limits {
            rate_limit: self.priority_rate_limit,
            rate_window: self.priority_rate_window,
            mass_share: self.priority_mass_share,
            mass_min: self.priority_mass_min,
            mass_window: self.priority_mass_window,
        }
    }
}

/// Load shedding: when a node's pressure crosses a threshold, its `sheddable` managed services
/// are stopped, lowest priority first, one per step; they start again, highest priority first,
/// once the pressure has stayed below the thresholds for `--shed-restore-after`.
#[derive(Debug, Clone, Args)]
pub struct ShedArgs {
    /// CPU busy share (0-1) at or above which a node sheds.
    #[arg(long, env = "ORCH_SHED_CPU", default_value_t = 0.95)]
    pub shed_cpu: f64,

    /// Memory used share (0-1) at or above which a node sheds.
    #[arg(long, env = "ORCH_SHED_MEMORY", default_value_t = 0.90)]
    pub shed_memory: f64,

    /// Time between two shedding steps on a node while the pressure persists, so each step's
    /// effect shows in the next readings.
    #[arg(long, env = "ORCH_SHED_STEP", default_value = "10s", value_parser = positive_duration)]
    pub shed_step: Duration,

    /// How long the pressure must stay below the thresholds before shed services start again
    /// (one per `--shed-step`).
    #[arg(long, env = "ORCH_SHED_RESTORE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub shed_restore_after: Duration,
}

impl ServeArgs {
    /// The orchestrator's settings, checked ([`Settings::validate`]). The embedded agent runs
    /// its services under `--agent-shim` when given; the binary defaults it to itself.
    /// The replica's name and lease, when it runs as one of a group (`--replica`).
    pub fn replica(&self) -> Result<Option<crate::cluster::replica::ReplicaSettings>, String> {
        let Some(name) = &self.replica else { return Ok(None) };
        // A subject token (its events are `orch.evt.cluster.<replica>.…`).
        if name.is_empty() || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            return Err(format!("--replica {name:?}: 1-63 letters, digits, '-' or '_'"));
        }
        let renew_every = (self.lease_ttl / 5).max(Duration::from_millis(50));
        Ok(Some(crate::cluster::replica::ReplicaSettings {
            name: name.clone(),
            lease: crate::cluster::LeaseSettings { ttl: self.lease_ttl, renew_every },
            advertise_url: self.advertise_url.clone(),
        }))
    }

    pub fn settings(&self) -> Result<Settings, String> {
        let (credentials, tls) = self.nats_auth.settings()?;
        let node_report = self.node_report.settings()?;
        let settings = Settings {
            subject_prefix: self.subject_prefix.clone(),
            database: self.database.settings(),
            nats: NatsSettings {
                url: self.nats_url.clone(),
                name: self.nats_name.clone(),
                credentials,
                tls,
                streams: StreamSettings {
                    replicas: self.stream_replicas,
                    events_max_age: self.events_max_age,
                    dead_letter_max_age: self.dead_letter_max_age,
                    duplicate_window: self.duplicate_window,
                    commands_max_messages: self.commands_max_messages,
                    commands_max_bytes: self.commands_max_bytes,
                    events_max_bytes: self.events_max_bytes,
                    dead_letter_max_bytes: self.dead_letter_max_bytes,
                },
            },
            registry: RegistrySettings {
                command_max_bytes: self.command_max_bytes,
                batch_max: self.batch_max,
                writer_shards: self.writer_shards,
                request_timeout: self.request_timeout,
                sweep: SweepSettings {
                    interval: self.sweep_interval,
                    threshold: self.self_preservation_threshold,
                    min_instances: self.self_preservation_min_instances,
                },
            },
            health: crate::health::HealthSettings {
                exec_enabled: self.health_exec_enabled,
                concurrency: self.health_concurrency,
                max_drift: self.health_max_drift,
                flap_threshold: self.flap_threshold,
                flap_window: self.flap_window,
                critical_services: self.critical_services.clone(),
                deregister_critical_after: self.deregister_critical_after,
                targets: std::sync::Arc::new(crate::registry::check_targets::CheckTargets {
                    hosts: self.check_allow_hosts.clone(),
                    networks: self.check_allow_networks.clone(),
                    nats_subjects: self.check_allow_nats_subjects.clone(),
                }),
                nats_user: self.check_nats_user.clone().zip(self.check_nats_password.clone()),
            },
            lifecycle: LifecycleSettings {
                startup_probe_interval: self.startup_probe_interval,
                reconcile_interval: self.reconcile_interval,
                shedding: ShedSettings {
                    cpu: self.shedding.shed_cpu,
                    memory: self.shedding.shed_memory,
                    step: self.shedding.shed_step,
                    restore_after: self.shedding.shed_restore_after,
                },
                preemption: crate::resources::preemption::PreemptionBudget {
                    max: self.preemption_budget,
                    window: self.preemption_window,
                },
            },
            priority: self.priority.limits(),
            agent: (!self.no_agent).then(|| AgentSettings {
                node: self.node.clone(),
                log_dir: self.agent_log_dir.clone(),
                rotation: crate::agent::logs::Rotation::default(),
                shim: self.agent_shim.clone(),
                pressure: self.pressure.settings(),
                node_report: node_report.clone(),
                cgroup_root: self.cgroups.cgroup_root.clone(),
                allow_unlimited: self.cgroups.allow_unlimited,
            }),
            http: HttpSettings {
                addr: self.http_addr,
                profile: self.web.profile,
                insecure: self.web.insecure,
                auth: AuthSettings {
                    api_keys: self.auth.api_key.clone(),
                    api_keys_file: self.auth.api_keys_file.clone(),
                    jwt_secret: self.auth.jwt_secret.clone(),
                    jwt_jwks_file: self.auth.jwt_jwks_file.clone(),
                    jwt_issuer: self.auth.jwt_issuer.clone(),
                    jwt_audience: self.auth.jwt_audience.clone(),
                    metrics_public: self.auth.metrics_public,
                },
                dashboard_dir: self.web.dashboard_dir.clone(),
                feed: FeedSettings {
                    buffer: self.web.ws_buffer,
                    stall: self.web.ws_stall,
                    max_clients: self.web.ws_max_clients,
                },
                manifest_max_bytes: self.manifest_max_bytes,
                allowed_origins: self.web.http_allowed_origins.clone(),
                allowed_hosts: self.web.http_allowed_hosts.clone(),
                limits: crate::http::server::ServerLimits {
                    header_read_timeout: self.web.http_header_timeout,
                    request_timeout: self.web.http_request_timeout,
                    max_concurrent: self.web.http_max_concurrent,
                },
            },
            retention: Retention {
                processed: self.processed_retention,
                health_history: self.health_history_retention,
                dead_letters: self.dead_letter_retention,
                dead_letters_max: self.dead_letter_max_rows,
                priority_changes: self.priority_history_retention,
                priority_changes_max: self.priority_history_max_rows,
                manifests: self.manifest_versions_kept,
                startup_runs: self.startup_runs_kept,
            },
            replica: None,
            workflow: crate::workflow::executor::ExecutorSettings {
                queue_concurrency: usize::from(self.workflow_queue_concurrency),
                aging_per_minute: self.workflow_aging_per_minute,
            },
            nodes: crate::resources::NodeSettings { down_after: self.node_down_after },
        };
        settings.validate().map_err(|e| format!("{}: {}", flag_of(e.setting), e.message))?;
        Ok(settings)
    }
}

/// An `http://` or `https://` URL without a path.
fn http_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
    {
        return Err(format!("{text:?}: expected http://HOST[:PORT] or https://HOST[:PORT], without a path"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// The flag (and config-file key) of a setting named by its place in `Settings`.
fn flag_of(setting: &str) -> &str {
    match setting {
        "subject_prefix" => "--subject-prefix",
        "registry.sweep.threshold" => "--self-preservation-threshold",
        "registry.writer_shards" => "--writer-shards",
        "registry.batch_max" => "--batch-max",
        "http.limits.max_concurrent" => "--http-max-concurrent",
        "retention.dead_letters_max" => "--dead-letter-max-rows",
        "retention.priority_changes_max" => "--priority-history-max-rows",
        "retention.manifests" => "--manifest-versions-kept",
        "retention.startup_runs" => "--startup-runs-kept",
        "registry.sweep.interval" => "--sweep-interval",
        "health.flap_threshold" => "--flap-threshold",
        "health.concurrency" => "--health-concurrency",
        "health.critical_services" => "--critical-services",
        "agent.node" => "--node",
        "priority.mass_share" => "--priority-mass-share",
        "priority.rate_limit" => "--priority-rate-limit",
        "priority.rate_window" => "--priority-rate-window",
        "priority.mass_window" => "--priority-mass-window",
        "lifecycle.shedding.cpu" => "--shed-cpu",
        "lifecycle.shedding.memory" => "--shed-memory",
        "lifecycle.shedding.step" => "--shed-step",
        "lifecycle.startup_probe_interval" => "--startup-probe-interval",
        "lifecycle.reconcile_interval" => "--reconcile-interval",
        "http.feed.buffer" => "--ws-buffer",
        "http.feed.max_clients" => "--ws-max-clients",
        "http.feed.stall" => "--ws-stall",
        other => other,
    }
}

/// A duration of at least 1 ms (`10s`, `250ms`): for intervals and windows, where zero would
/// mean a busy loop, a timer that panics, or a guardrail that never counts anything.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(1) {
        return Err(format!("must be at least 1ms (got {text:?})"));
    }
    Ok(duration)
}

/// Parses the command line, filling defaults from the config file named by `--config` or
/// `ORCH_CONFIG` when there is one. Exits with a usage message on error, like clap does.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = config_file_from(&args) {
        match file_defaults(&path) {
            Ok(defaults) => command = apply_defaults(command, &defaults),
            Err(e) => {
                clap::Error::raw(clap::error::ErrorKind::Io, format!("config file {}: {e}\n", path.display())).exit()
            }
        }
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn config_file_from(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(v) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("ORCH_CONFIG").map(PathBuf::from)
}

/// Reads `key = value` pairs of a TOML file; keys may use `-` or `_`.
fn file_defaults(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!("`{key}`: only strings, numbers and booleans are allowed, got {other}"));
                }
            };
            Ok((key.replace('_', "-"), value))
        })
        .collect()
}

/// Turns file values into the defaults of the matching arguments of every subcommand, so flags and
/// environment variables still win. An unknown key is an error, like an unknown flag.
fn apply_defaults(mut command: clap::Command, defaults: &[(String, String)]) -> clap::Command {
    for (key, value) in defaults {
        let mut known = false;
        for name in command.get_subcommands().map(|s| s.get_name().to_string()).collect::<Vec<_>>() {
            let sub = command.find_subcommand_mut(&name).expect("subcommand listed");
            if sub.get_arguments().any(|a| a.get_long() == Some(key.as_str())) {
                known = true;
                let id = sub
                    .get_arguments()
                    .find(|a| a.get_long() == Some(key.as_str()))
                    .map(|a| a.get_id().clone())
                    .expect("argument found");
                let taken = std::mem::take(sub);
                *sub = taken.mut_arg(id, |a| a.default_value(value.clone()));
            }
        }
        if !known {
            clap::Error::raw(
                clap::error::ErrorKind::UnknownArgument,
                format!("config file: unknown setting `{key}`\n"),
            )
            .exit();
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_values_are_defaults_that_flags_override() {
        let defaults = vec![("nats-url".to_string(), "nats://file:4222".to_string()), ("batch-max".into(), "7".into())];
        let command = apply_defaults(Cli::command(), &defaults);
        let m = command.try_get_matches_from(["orchestrator", "serve", "--batch-max", "9"]).unwrap();
        let Command::Serve(args) = Cli::from_arg_matches(&m).unwrap().command else { panic!("serve") };
        assert_eq!(args.nats_url, "nats://file:4222");
        assert_eq!(args.batch_max, 9);
    }

    fn serve(flags: &[&str]) -> Result<Settings, String> {
        let args = [&["orchestrator", "serve"], flags].concat();
        let Command::Serve(args) = Cli::try_parse_from(args).unwrap().command else { panic!("serve") };
        args.settings()
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        assert_eq!(serve(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn a_bad_value_is_named_by_its_flag() {
        let error = serve(&["--writer-shards", "0"]).unwrap_err();
        assert_eq!(error, "--writer-shards: must be between 1 and 64");
        let error = serve(&["--node", "Not-A-Node"]).unwrap_err();
        assert!(error.starts_with("--node: "), "{error}");
    }

    #[test]
    fn flags_become_settings() {
        let settings = serve(&[
            "--nats-user",
            "u",
            "--nats-password",
            "p",
            "--no-agent",
            "--profile",
            "production",
            "--log-format",
            "json",
            "--shed-cpu",
            "0.5",
        ])
        .unwrap();
        assert_eq!(settings.nats.credentials, Credentials::UserPassword { user: "u".into(), password: "p".into() });
        assert_eq!(settings.agent, None);
        assert_eq!(settings.http.profile, Profile::Production);
        assert_eq!(settings.lifecycle.shedding.cpu, 0.5);
        assert!(Cli::try_parse_from(["orchestrator", "serve", "--log-format", "xml"]).is_err());
    }
}
