//! The database every service stores its state in: embedded SQLite or PostgreSQL, chosen by
//! the URL scheme.
//!
//! Queries are written once, in SQL both backends accept (`$1` placeholders, `BIGINT` and
//! `TEXT` columns, `RETURNING`), and run through sqlx's `Any` driver at run time. The
//! compile-time checked macros would need a live database of each kind at build time; runtime
//! queries instead are all exercised by the one storage test suite that CI runs against both
//! backends, which is what keeps them honest.
//!
//! SQLite has one writer at a time, so writes go through a pool of a single connection that
//! opens its transactions with `BEGIN IMMEDIATE`, and reads through a separate pool; on
//! PostgreSQL both are the same pool.

use std::{str::FromStr, time::Duration};

use anyhow::Context as _;
use sqlx::{
    Any, AnyPool, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    error::ErrorKind,
    migrate::Migrator,
};

/// Which database engine a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// The production store.
    Postgres,
}

/// A connection pool (two on SQLite: one writer, several readers).
#[derive(Debug, Clone)]
pub struct Database {
    backend: Backend,
    writer: AnyPool,
    reader: AnyPool,
}

/// How a database error should be handled, classified in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    /// A unique constraint was violated: the row exists.
    UniqueViolation,
    /// A foreign key points nowhere.
    ForeignKeyViolation,
    /// A concurrent transaction won (serialization failure, deadlock, busy database): retry.
    Conflict,
    /// The database cannot be reached.
    Unavailable,
    /// Anything else: a bug.
    Other,
}

/// Classifies a database error.
pub fn classify(error: &sqlx::Error) -> DbErrorClass {
    match error {
        sqlx::Error::Database(db) => {
            match db.kind() {
                ErrorKind::UniqueViolation => return DbErrorClass::UniqueViolation,
                ErrorKind::ForeignKeyViolation => return DbErrorClass::ForeignKeyViolation,
                _ => {}
            }
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // PostgreSQL serialization failure and deadlock; SQLite busy and locked.
                "40001" | "40P01" | "5" | "6" | "517" | "261" => DbErrorClass::Conflict,
                // PostgreSQL: the database is gone or shutting down, too many connections,
                // or the connection broke.
                "3D000" | "57P01" | "57P02" | "57P03" | "53300" => DbErrorClass::Unavailable,
                code if code.starts_with("08") => DbErrorClass::Unavailable,
                _ => DbErrorClass::Other,
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => DbErrorClass::Unavailable,
        _ => DbErrorClass::Other,
    }
}

impl Database {
    /// Connects to `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://...`). A SQLite file
    /// and its folder are created when missing.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL scheme: use sqlite://PATH or postgres://...");
        };

        match backend {
            Backend::Sqlite => {
                let url = sqlite_url(url)?;
                let options = AnyConnectOptions::from_str(&url).context("invalid SQLite URL")?;
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
                    .connect_with(options.clone())
                    .await
                    .context("cannot open the SQLite database")?;
                let reader = AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
                    .connect_with(options)
                    .await
                    .context("cannot open the SQLite database")?;
                Ok(Self {
                    backend,
                    writer,
                    reader,
                })
            }
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(options);
                Ok(Self {
                    backend,
                    writer: pool.clone(),
                    reader: pool,
                })
            }
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Opens a write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// Applies the migrations that have not run yet. Safe to run from several replicas at
    /// once: on PostgreSQL the migrator holds an advisory lock.
    pub async fn migrate(&self, migrator: &Migrator) -> anyhow::Result<()> {
        migrator
            .run(&self.writer)
            .await
            .context("cannot apply database migrations")
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    conn.execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 10000;",
    )
    .await?;
    Ok(())
}

/// Normalises a SQLite URL so the file is created when missing, creating its folder too.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    if url.contains(":memory:") {
        anyhow::bail!("in-memory SQLite cannot be shared by the reader and writer pools");
    }
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    anyhow::ensure!(!path.is_empty(), "the SQLite URL names no file");
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// Current time as microseconds since the Unix epoch, the unit every timestamp column uses.
pub fn to_micros(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_micros()
}

/// The time a timestamp column holds.
pub fn from_micros(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
