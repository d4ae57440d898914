//! The storage boundary's error: either PostgreSQL is unavailable (retry later, nothing is lost)
//! or it refused the statement (retrying the same thing would fail again).

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("PostgreSQL error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Shown as the migrator's own message (the caller adds "applying database migrations").
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another writer committed the same command id first; the batch must be run again.
    #[error("a command of the batch was processed concurrently; retrying the batch")]
    ConcurrentCommand,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// True when waiting and retrying can succeed: connection loss, pool exhaustion, server shutting
    /// down or starting, serialization failures, lack of resources.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Sqlx(e) => is_transient(e),
            StorageError::Migrate(_) => false,
            StorageError::ConcurrentCommand => true,
        }
    }

    /// True when another replica leads now: the write was refused by the fence (SQLSTATE OR001)
    /// and will be refused again.
    pub fn is_fenced(&self) -> bool {
        match self {
            StorageError::Sqlx(e) => fenced(e),
            _ => false,
        }
    }
}

fn fenced(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("OR001"))
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P0x: shutdown / cannot
            // connect now; 40001 serialization failure; 40P01 deadlock; 55P03 lock not available;
            // 25006 read-only transaction (a standby, or a primary during a failover).
            code.starts_with("08")
                || code == "25006"
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "40001"
                || code == "40P01"
                || code == "55P03"
        }),
        _ => false,
    }
}
