//! PostgreSQL, the system of record. Every write of the registry happens in one transaction per
//! batch (see `registry::writer`); this module holds the pool, migrations and the SQL.

pub mod batch;
pub mod config;
mod error;
pub mod health;
pub mod instances;
pub mod leadership;
pub mod ledger;
pub mod lifecycle;
pub mod nodes;
pub mod outbox;
pub mod priorities;
pub mod quotas;
pub mod retention;
pub mod system;
pub mod workflows;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use error::{Result, StorageError};

/// Where PostgreSQL is and how the pool uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSettings {
    /// Connection URL.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before reporting PostgreSQL unavailable.
    pub acquire_timeout: Duration,
    /// The lease this process writes under, as a replica's leader (`<holder>:<term>`): every
    /// change is then refused once another replica leads (migration `fence`). `None`: one
    /// orchestrator, not fenced.
    pub fence: Option<String>,
    /// The name its connections show in `pg_stat_activity` (`orchestrator`, or
    /// `orchestrator:<replica>` for a replica, whose standbys look for its sessions).
    pub application_name: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "postgres://orch@127.0.0.1:55432/orch".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            fence: None,
            application_name: "orchestrator".into(),
        }
    }
}

/// Embedded migrations from the workspace's `migrations/` folder.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the pool without connecting: the first use connects, and a pool recovers by itself
/// after PostgreSQL comes back.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool> {
    let options: PgConnectOptions = settings
        .url
        .parse::<PgConnectOptions>()
        .map_err(StorageError::from)?
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
        .application_name(&settings.application_name)
        // Every statement takes arrays whose size changes with the batch; a cached generic plan
        // made for one size (or for an empty table) can turn an index lookup into a table scan.
        .options([("plan_cache_mode", "force_custom_plan")]);
    let options = match &settings.fence {
        // A paused leader's open transaction must not hold the lease's row for long.
        Some(fence) => options.options([("orch.fence", fence.as_str()), ("idle_in_transaction_session_timeout", "5s")]),
        None => options,
    };
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // Detect connections broken by a PostgreSQL restart before handing them out.
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// Applies pending migrations, waiting for PostgreSQL when it is not reachable yet.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    retry("applying migrations", || async {
        MIGRATOR.run(pool).await.map_err(|e| match e {
            // A statement failed: transient (connection lost) or not, as for any query.
            sqlx::migrate::MigrateError::Execute(e) => StorageError::Sqlx(e),
            other => StorageError::Migrate(other),
        })
    })
    .await
}

/// Runs `f` again, with back-off, while PostgreSQL is unavailable; any other outcome is returned.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what}: PostgreSQL unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// True when PostgreSQL answers.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
