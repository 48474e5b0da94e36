//! One database interface over two backends: PostgreSQL (production) and SQLite (embedded).
//!
//! SQL is written once, in the dialect both understand (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`), and run through [`on_tx!`], which expands the same body once per backend so
//! each expansion is type-checked against that backend's driver. The column types differ only
//! in the migrations: PostgreSQL gets `uuid`, `timestamptz`, `jsonb` and identity columns;
//! SQLite stores the same Rust types as blobs and text.
//!
//! Write transactions on SQLite start with `BEGIN IMMEDIATE`, so concurrent writers queue on
//! the busy timeout instead of failing when a read lock must be upgraded.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// Which database a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool to one service's database.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// An open transaction. Store functions take `&mut Tx` so that a state change, its events and
/// its outbox rows commit together.
#[derive(Debug)]
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Run `$body` with `$conn` bound to the transaction's connection, once per backend.
///
/// ```ignore
/// on_tx!(tx, |conn| sqlx::query("DELETE FROM inbox").execute(conn).await)?;
/// ```
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

/// Like [`on_tx!`] for a pool (reads that need no transaction).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// A crate's embedded migrations for both backends.
#[derive(Debug)]
pub struct Migrations {
    postgres: Migrator,
    sqlite: Migrator,
}

impl Migrations {
    /// Several crates migrate one database (the backbone's tables and the service's own), so
    /// each set ignores versions applied by the others. Versions: shared 1xxx, services 2xxx.
    pub fn new(mut postgres: Migrator, mut sqlite: Migrator) -> Self {
        postgres.set_ignore_missing(true);
        sqlite.set_ignore_missing(true);
        Self { postgres, sqlite }
    }
}

/// The backbone's own tables: events, snapshots, outbox, outbox lease, inbox.
pub fn shared_migrations() -> Migrations {
    Migrations::new(sqlx::migrate!("./migrations/postgres"), sqlx::migrate!("./migrations/sqlite"))
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { max_connections: 8, acquire_timeout: Duration::from_secs(5) }
    }
}

impl Db {
    /// Connect to `postgres://…` or `sqlite://…` (SQLite files are created when missing).
    pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url).context("invalid postgres url")?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .context("failed to connect to postgres")?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .context("invalid sqlite url")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.min(4))
                .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(30)))
                .connect_with(connect)
                .await
                .context("failed to open sqlite database")?;
            Ok(Db::Sqlite(pool))
        } else {
            anyhow::bail!("unsupported database url scheme (expected postgres:// or sqlite:)")
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Apply migrations (PostgreSQL takes an advisory lock, so replicas may start together).
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        match self {
            Db::Postgres(pool) => migrations.postgres.run(pool).await.context("failed to run postgres migrations"),
            Db::Sqlite(pool) => migrations.sqlite.run(pool).await.context("failed to run sqlite migrations"),
        }
    }

    /// Begin a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Begin a read-only transaction (on SQLite it takes no write lock).
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// Is the database reachable?
    pub async fn ping(&self) -> bool {
        on_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t) => t.rollback().await,
            Tx::Sqlite(t) => t.rollback().await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Postgres(_) => Backend::Postgres,
            Tx::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Does this error mean the database is unreachable (as opposed to a statement failing)?
/// The consumer loop pauses on these instead of counting them against a message.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| is_unavailable_code(&c)))
}

/// PostgreSQL SQLSTATEs that blame the server, not the statement: class 08 (connection
/// exception), 57P01–57P03 (admin shutdown, crash shutdown, cannot connect now: shutting down,
/// starting up or in recovery), class 53 (insufficient resources: disk full, out of memory, too
/// many connections), 58030 (I/O error) and 25006 (a read-only transaction: connected to a
/// standby during a failover). Dead-lettering on these would drop valid messages.
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03" | "58030" | "25006")
}

/// Did this statement lose to a concurrent transaction (PostgreSQL: a deadlock or a
/// serialization failure; SQLite: the database stayed locked past the busy timeout)? Nothing
/// is wrong with the statement: the transaction is retried against the state that won.
/// Consumer batches that share a transaction lock several streams (one order's SKUs in a
/// fixed order, but several orders per batch), so two replicas can deadlock.
pub fn is_lost_race(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
        c == "40P01" || c == "40001" || c == "5" || c == "6" || c == "517"
    }))
}

/// `count` numbered placeholders from `$first`, comma-separated: `$2, $3, $4`.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A multi-row `VALUES` list of `rows` rows of `columns` placeholders from `$1`:
/// `($1, $2), ($3, $4)`.
pub fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows).map(|r| format!("({})", placeholders(1 + r * columns, columns))).collect::<Vec<_>>().join(", ")
}

/// Is this a unique-constraint violation (an optimistic concurrency conflict)?
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error with only a SQLSTATE, as the drivers report one.
    #[derive(Debug, thiserror::Error)]
    #[error("SQLSTATE {0}")]
    struct Sqlstate(&'static str);

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn database(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    #[test]
    fn errors_are_classified_as_the_server_being_away_a_lost_race_or_the_statement() {
        let away = ["08000", "08003", "08006", "08001", "57P01", "57P02", "57P03", "53300", "53100", "58030", "25006"];
        for code in away {
            assert!(is_unavailable(&database(code)), "{code}: the server is away");
            assert!(!is_lost_race(&database(code)), "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        // PostgreSQL deadlock and serialization failure; SQLite BUSY, LOCKED, BUSY_SNAPSHOT.
        for code in ["40P01", "40001", "5", "6", "517"] {
            assert!(is_lost_race(&database(code)), "{code}: lost a race");
            assert!(!is_unavailable(&database(code)), "{code}");
        }
        // Unique violation, syntax error, undefined table, not-null violation:
        // the statement or the schema is at fault.
        for code in ["23505", "42601", "42P01", "23502"] {
            assert!(!is_unavailable(&database(code)), "{code}");
            assert!(!is_lost_race(&database(code)), "{code}");
        }
    }

    #[test]
    fn placeholders_and_value_rows_number_parameters_in_order() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
    }
}
