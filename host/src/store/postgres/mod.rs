//! The PostgreSQL backend: the same key-value layout as sled in one table (`sagahost_kv`,
//! [`schema`]), shared by every host pointed at the database. Reads go through a connection
//! pool; writes go to this host's writer thread ([`writer`]), which commits whatever has
//! queued up as one transaction under the store's advisory lock (group commit across
//! executions and across hosts).
//!
//! A commit is acknowledged once PostgreSQL has committed it (with the server's
//! `synchronous_commit`, by default a flushed WAL record).

mod leases;
mod reads;
mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::group::Writer;
use super::{CommitStats, HostId, StoreError};
pub use schema::SCHEMA_VERSION;

/// How to reach the database, and the limits of this host's use of it.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?...` (libpq URL or key=value form).
    pub url: String,
    /// Connections the pool for reads may open (the writer has one more of its own).
    pub pool_size: usize,
    /// Longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// Longest a connection attempt, or a wait for a pooled connection, may take.
    pub connect_timeout: Duration,
    /// How long this host's lease lasts unless renewed: after a host stops renewing it (killed,
    /// cut off, paused), this long passes before other hosts take its executions.
    pub lease: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &crate::domain::subscription::redact_password(&self.url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("lease", &self.lease)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for `url`: 16 pooled connections, 30 s statement timeout, 5 s to connect, 10 s
    /// leases.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(10),
        }
    }

    /// The client configuration: the URL's, with the timeouts and an application name.
    fn client(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "{} is not a PostgreSQL URL: {e}",
                crate::domain::subscription::redact_password(&self.url)
            ))
        })?;
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            self.statement_timeout.as_millis()
        );
        config.options(options.trim());
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("sagahost");
        }
        Ok(config)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}

/// The shared store: one table in a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    writer: Writer,
    stats: Arc<CommitStats>,
    /// The advisory lock every commit to this store takes.
    lock: i64,
    /// This host, as the other hosts know it.
    host: HostId,
    lease: Duration,
    /// Wake-ups addressed to this host, until the orchestrator takes them.
    wakeups: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::domain::ExecutionId>>>,
    /// Whether this host delivers the subscriptions now.
    turn: tokio::sync::watch::Receiver<bool>,
    /// The lease renewal, the wake-up listener and the delivery turn: stopped with the store.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PgStore {
    /// Connects, creates or migrates the schema, and starts the writer thread.
    pub async fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let client = config.client()?;
        let manager =
            Manager::from_config(client.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(unavailable)?;
        let conn = pool.get().await.map_err(unavailable)?;
        // Commits from every host take one lock; stores in different schemas of one database
        // take different ones.
        let lock: Option<i64> =
            conn.query_one("SELECT hashtextextended(current_schema(), 0)", &[]).await.map_err(unavailable)?.get(0);
        let lock = lock.ok_or_else(|| {
            StoreError::Unavailable(
                "database: no schema of the search_path exists (create it, or point search_path at one)".into(),
            )
        })?;
        schema::migrate(&conn, lock).await?;
        let host = HostId::now_v7();
        leases::renew(&conn, host, config.lease).await?;
        drop(conn);
        let (writer, rx) = Writer::new();
        let stats = Arc::new(CommitStats::default());
        let wstats = stats.clone();
        let wclient = client.clone();
        std::thread::Builder::new()
            .name("pg-writer".into())
            .spawn(move || writer::run(wclient, lock, host, rx, &wstats))
            .map_err(unavailable)?;
        let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel();
        let (turn_tx, turn) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(leases::keep(pool.clone(), host, config.lease)).abort_handle(),
            tokio::spawn(leases::listen(client.clone(), lock, host, wake_tx)).abort_handle(),
            tokio::spawn(leases::take_turns(client, lock, turn_tx)).abort_handle(),
        ];
        tracing::info!(%host, lease_ms = config.lease.as_millis() as u64, "joined the hosts sharing the store");
        Ok(Self {
            pool,
            writer,
            stats,
            lock,
            host,
            lease: config.lease,
            wakeups: std::sync::Mutex::new(Some(wake_rx)),
            turn,
            tasks,
        })
    }

    /// This host's id among the hosts sharing the store.
    pub fn host_id(&self) -> HostId {
        self.host
    }

    /// Group-commit counters.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl PgStore {
    /// Inserts every pair `chunks` brings into an empty store, in one transaction under the
    /// store's lock (no host commits meanwhile); refuses a store that holds anything.
    pub(super) async fn import(
        &self,
        mut chunks: tokio::sync::mpsc::Receiver<Result<super::migrate::Chunk, StoreError>>,
    ) -> Result<super::migrate::Migrated, StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let tx = conn.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock]).await.map_err(unavailable)?;
        let used: bool =
            tx.query_one("SELECT EXISTS (SELECT 1 FROM sagahost_kv)", &[]).await.map_err(unavailable)?.get(0);
        if used {
            return Err(StoreError::Unavailable(
                "the database already holds a sagahost store: migrate into an empty one".into(),
            ));
        }
        let insert = tx
            .prepare("INSERT INTO sagahost_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])")
            .await
            .map_err(unavailable)?;
        let mut done = super::migrate::Migrated { pairs: 0, bytes: 0 };
        while let Some(chunk) = chunks.recv().await {
            let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = chunk?.into_iter().unzip();
            done.pairs += keys.len() as u64;
            done.bytes += keys.iter().chain(&values).map(|b| b.len() as u64).sum::<u64>();
            tx.execute(&insert, &[&keys, &values]).await.map_err(unavailable)?;
        }
        let count: i64 = tx.query_one("SELECT count(*) FROM sagahost_kv", &[]).await.map_err(unavailable)?.get(0);
        if count as u64 != done.pairs {
            return Err(StoreError::Unavailable(format!("copied {} pairs but the table holds {count}", done.pairs)));
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(done)
    }
}
