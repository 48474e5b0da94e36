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
//!
//! A service's pool is observed ([`Db::observed`], done once by
//! [`crate::service::ServiceContext::connect`] for every service): its connections in use and
//! idle are sampled every [`POOL_SAMPLE_INTERVAL`], and every transaction's wait for a
//! connection ([`Db::begin`], [`Db::begin_read`]) is timed, and counted when it times out
//! (see [`crate::metrics`]). Reads that run on the pool directly ([`on_db!`]) wait for a
//! connection the same way but are not timed; they show in the sampled gauges.

use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
/// The future a [`DeferredWrite`] returns (re-exported: its implementors need not depend on
/// `futures`).
pub use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Pool, Postgres, Sqlite, SqlitePool, Transaction};

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

/// How often an observed pool's connections in use and idle are sampled.
pub const POOL_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The observed pools ([`Db::observed`]), each known by its connect options: a pool keeps
/// them in one `Arc` for its whole life, and the `Weak` here keeps that allocation's address
/// from being reused, so pointer equality names the pool exactly. An entry whose pool is gone
/// (no strong reference left) is dropped at the next registration.
static OBSERVED: Mutex<Vec<(ObservedPool, &'static str)>> = Mutex::new(Vec::new());

#[derive(Debug)]
enum ObservedPool {
    Postgres(Weak<PgConnectOptions>),
    Sqlite(Weak<SqliteConnectOptions>),
}

impl ObservedPool {
    fn of(db: &Db) -> Self {
        match db {
            Db::Postgres(pool) => ObservedPool::Postgres(Arc::downgrade(&pool.connect_options())),
            Db::Sqlite(pool) => ObservedPool::Sqlite(Arc::downgrade(&pool.connect_options())),
        }
    }

    fn is(&self, db: &Db) -> bool {
        match (self, db) {
            (ObservedPool::Postgres(weak), Db::Postgres(pool)) => {
                std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&pool.connect_options()))
            }
            (ObservedPool::Sqlite(weak), Db::Sqlite(pool)) => {
                std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&pool.connect_options()))
            }
            _ => false,
        }
    }

    fn is_alive(&self) -> bool {
        match self {
            ObservedPool::Postgres(weak) => weak.strong_count() > 0,
            ObservedPool::Sqlite(weak) => weak.strong_count() > 0,
        }
    }
}

/// An open transaction. Store functions take `&mut Tx` so that a state change, its events and
/// its outbox rows commit together.
///
/// A transaction that [defers its writes](Tx::defer_writes) keeps the events it appends and
/// the outbox rows it enqueues in memory, and writes them when it is [flushed](Tx::flush) or
/// committed, in one statement on PostgreSQL and one per table on SQLite: a run of messages
/// sharing one transaction costs one or two inserts, not two per message. Loads in that transaction see its deferred events
/// ([`crate::event_store`]); a lost optimistic-concurrency race shows at the flush.
#[derive(Debug)]
pub struct Tx {
    /// The connection's transaction; reached through [`on_tx!`].
    #[doc(hidden)]
    pub conn: TxConn,
    deferred: Option<Deferred>,
    handoff: Option<crate::outbox::Handoff>,
}

/// The transaction of either backend.
#[derive(Debug)]
pub enum TxConn {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Writes a transaction holds until its flush, in the order they were made.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pub(crate) events: Vec<crate::event_store::EventRow>,
    pub(crate) outbox: Vec<crate::outbox::OutboxMessage>,
    /// Streams read ahead for the handlers ([`crate::event_store::prefetch`]), as they were
    /// before this transaction's deferred events.
    pub(crate) prefetched: std::collections::HashMap<String, crate::event_store::Prefetched>,
    /// A service's own deferred writes ([`DeferredWrite`]), at most one of each type, in the
    /// order they were first used.
    pub(crate) others: Vec<Box<dyn DeferredWrite>>,
    /// Where the hot streams read ahead start from, and go back to at the commit
    /// ([`Tx::keep_streams_in`]).
    pub(crate) cache: Option<crate::event_store::StreamCache>,
    /// What the flushes left of those streams, for the cache once the commit succeeds.
    pub(crate) to_cache: Vec<(String, crate::event_store::Prefetched)>,
}

/// Rows of a service's own tables (a projection, say) that a transaction which
/// [defers its writes](Tx::defer_writes) holds until its flush, to write them in one statement
/// after its events and outbox rows, instead of a statement per message of a run. Get one with
/// [`Tx::deferred_write`]; a transaction holds at most one of each type.
pub trait DeferredWrite: std::any::Any + Send + std::fmt::Debug {
    /// Write what is held, in `tx`.
    fn write<'a>(self: Box<Self>, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// Run `$body` with `$conn` bound to the transaction's connection, once per backend.
///
/// ```ignore
/// on_tx!(tx, |conn| sqlx::query("DELETE FROM inbox").execute(conn).await)?;
/// ```
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut ($tx).conn {
            $crate::db::TxConn::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::TxConn::Sqlite(t) => {
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
/// How long a PostgreSQL connection is used before it is replaced.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

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
            // No ping on acquire: it is a round trip per transaction (sqlx already pings every
            // connection it takes back). A connection that broke while idle (the server
            // restarted) fails its first statement, which callers retry as `Unavailable`, and
            // is closed then; `max_lifetime` retires connections before a proxy or the server
            // drops them.
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(false)
                .max_lifetime(MAX_LIFETIME)
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
                .test_before_acquire(false)
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

    /// Record this pool's metrics under `service` from now on: connections in use and idle
    /// (sampled every [`POOL_SAMPLE_INTERVAL`] until the pool is closed), and each transaction's
    /// wait for a connection. Call once, inside a Tokio runtime (the sampler is a task on it).
    pub fn observed(self, service: &'static str) -> Self {
        crate::metrics::db_pool_observed(service);
        {
            let mut observed = OBSERVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            observed.retain(|(pool, _)| pool.is_alive());
            observed.push((ObservedPool::of(&self), service));
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POOL_SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let closed = match &pool {
                    Db::Postgres(p) => sample(service, p),
                    Db::Sqlite(p) => sample(service, p),
                };
                if closed {
                    break;
                }
            }
        });
        self
    }

    /// The `service` this pool is observed for, if it is.
    fn observed_as(&self) -> Option<&'static str> {
        let observed = OBSERVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        observed.iter().find(|(pool, _)| pool.is(self)).map(|(_, service)| *service)
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
            Db::Postgres(pool) => Tx::new(TxConn::Postgres(begin_on(self.acquire(pool).await?, None).await?)),
            Db::Sqlite(pool) => {
                Tx::new(TxConn::Sqlite(begin_on(self.acquire(pool).await?, Some("BEGIN IMMEDIATE")).await?))
            }
        })
    }

    /// Begin a read-only transaction (on SQLite it takes no write lock).
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(pool) => Tx::new(TxConn::Postgres(begin_on(self.acquire(pool).await?, None).await?)),
            Db::Sqlite(pool) => Tx::new(TxConn::Sqlite(begin_on(self.acquire(pool).await?, None).await?)),
        })
    }

    /// A connection from `pool`, the wait timed (and counted when it times out) if observed.
    async fn acquire<DB: sqlx::Database>(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>, sqlx::Error> {
        let started = Instant::now();
        let acquired = pool.acquire().await;
        if let Some(service) = self.observed_as() {
            match &acquired {
                Ok(_) => crate::metrics::db_pool_acquired(service, started.elapsed()),
                Err(sqlx::Error::PoolTimedOut) => crate::metrics::db_pool_acquire_timed_out(service, started.elapsed()),
                // The pool is closed (shutting down) or failed to open a connection: not a wait.
                Err(_) => {}
            }
        }
        acquired
    }

    /// Is the database reachable?
    pub async fn ping(&self) -> bool {
        on_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }
}

/// Record `pool`'s connections in use and idle; is it closed?
fn sample<DB: sqlx::Database>(service: &'static str, pool: &Pool<DB>) -> bool {
    // `size` counts the open connections, idle ones included.
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    crate::metrics::db_pool_sample(
        service,
        pool.size().saturating_sub(idle),
        idle,
        pool.options().get_max_connections(),
    );
    pool.is_closed()
}

/// Begin a transaction on an acquired connection, with `BEGIN` or `statement`: what sqlx's
/// `Pool::begin` and `Pool::begin_with` do after their own `acquire`, so that the acquire can
/// be timed on its own. (`Transaction::begin` is public but hidden from sqlx's docs; it is
/// what both of those call, and Cargo.lock pins the sqlx release it was read from.)
async fn begin_on<DB: sqlx::Database>(
    connection: PoolConnection<DB>,
    statement: Option<&'static str>,
) -> Result<Transaction<'static, DB>, sqlx::Error> {
    Transaction::begin(connection, statement.map(std::borrow::Cow::Borrowed)).await
}

impl Tx {
    fn new(conn: TxConn) -> Self {
        Self { conn, deferred: None, handoff: None }
    }

    /// At the commit, pass the outbox rows this transaction wrote to the relay reading
    /// `signal`, which sends them without reading them back ([`crate::outbox`]). A transaction
    /// that is not handed over leaves its rows for the relay's sweep.
    pub fn hand_over_to(&mut self, signal: &crate::outbox::OutboxSignal) {
        self.handoff = Some(crate::outbox::Handoff::new(signal.clone()));
    }

    pub(crate) fn handoff_mut(&mut self) -> Option<&mut crate::outbox::Handoff> {
        self.handoff.as_mut()
    }

    /// Hold appended events and enqueued outbox rows until [`Self::flush`] (or the commit).
    pub fn defer_writes(&mut self) {
        self.deferred.get_or_insert_with(Deferred::default);
    }

    /// Hold appended events and enqueued outbox rows until the flush ([`Self::defer_writes`]),
    /// and start the read ahead of hot streams from `cache`, where the commit puts them back
    /// ([`crate::event_store::StreamCache`]).
    pub fn keep_streams_in(&mut self, cache: &crate::event_store::StreamCache) {
        let deferred = self.deferred.get_or_insert_with(Deferred::default);
        if cache.is_enabled() {
            deferred.cache = Some(cache.clone());
        }
    }

    /// The `W` this transaction holds until its flush, made on first use; `None` when the
    /// transaction does not [defer its writes](Self::defer_writes) (write at once then).
    pub fn deferred_write<W: DeferredWrite + Default>(&mut self) -> Option<&mut W> {
        let others = &mut self.deferred.as_mut()?.others;
        let at = match others.iter().position(|w| (&**w as &dyn std::any::Any).is::<W>()) {
            Some(at) => at,
            None => {
                others.push(Box::new(W::default()));
                others.len() - 1
            }
        };
        (&mut *others[at] as &mut dyn std::any::Any).downcast_mut::<W>()
    }

    pub(crate) fn deferred(&self) -> Option<&Deferred> {
        self.deferred.as_ref()
    }

    pub(crate) fn deferred_mut(&mut self) -> Option<&mut Deferred> {
        self.deferred.as_mut()
    }

    /// Write what was deferred: the events and the outbox rows (each in the order they were
    /// made; one statement for both on PostgreSQL), then the service's own [`DeferredWrite`]s. A lost optimistic-concurrency race is
    /// [`crate::event_store::StoreError::Conflict`]. Later writes are deferred again.
    pub async fn flush(&mut self) -> Result<(), crate::event_store::StoreError> {
        let Some(deferred) = self.deferred.as_mut() else {
            return Ok(());
        };
        let events = std::mem::take(&mut deferred.events);
        let outbox = std::mem::take(&mut deferred.outbox);
        let others = std::mem::take(&mut deferred.others);
        // What was read ahead lacks the events now written: later loads read them. The hot
        // streams among it, with those events, go to the cache at the commit.
        let prefetched = std::mem::take(&mut deferred.prefetched);
        let cache = deferred.cache.clone();
        let held = match &cache {
            Some(_) => crate::event_store::held_snapshots(&others),
            None => Default::default(),
        };
        let written = self.write_deferred(&events, outbox, others).await;
        // A failed write (a lost race, say) puts nothing back: the retry reads them afresh.
        written?;
        if cache.is_some() {
            let entries = crate::event_store::cache_entries(prefetched, events, held);
            if let Some(deferred) = self.deferred.as_mut() {
                deferred.to_cache.extend(entries);
            }
        }
        Ok(())
    }

    async fn write_deferred(
        &mut self,
        events: &[crate::event_store::EventRow],
        outbox: Vec<crate::outbox::OutboxMessage>,
        others: Vec<Box<dyn DeferredWrite>>,
    ) -> Result<(), crate::event_store::StoreError> {
        crate::outbox::write_with_events(self, events, outbox).await?;
        for other in others {
            other.write(self).await?;
        }
        Ok(())
    }

    /// Commit, after writing what was deferred.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if let Err(err) = self.flush().await {
            self.rollback().await.ok();
            return Err(match err {
                crate::event_store::StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            });
        }
        match self.conn {
            TxConn::Postgres(t) => t.commit().await?,
            TxConn::Sqlite(t) => t.commit().await?,
        }
        if let Some(handoff) = self.handoff {
            handoff.committed();
        }
        if let Some(Deferred { cache: Some(cache), to_cache, .. }) = self.deferred {
            cache.put(to_cache);
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Postgres(t) => t.rollback().await,
            TxConn::Sqlite(t) => t.rollback().await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Sqlite(_) => Backend::Sqlite,
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
