//! The database schema and its migrations: numbered SQL, applied in order, each recorded in
//! `sagahost_schema`. Several hosts starting at once take turns (an advisory lock); a host
//! refuses a database whose schema is newer than it knows.

use tokio_postgres::Client;

use super::unavailable;
use crate::store::StoreError;

/// The migrations, in order: `(version, SQL)`. Never edit one that has shipped; add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        // The host's data, in the key-value layout sled keeps (`store/keys.rs`): byte-ordered
        // keys, so prefix scans are index range scans.
        "CREATE TABLE sagahost_kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
    ),
    (
        2,
        // Hosts and their leases (renewed while they run), and which host drives each
        // unfinished execution (docs/postgres.md, "Several hosts").
        "CREATE TABLE sagahost_hosts (id uuid PRIMARY KEY, name text NOT NULL, \
           started_at timestamptz NOT NULL DEFAULT now(), until timestamptz NOT NULL); \
         CREATE TABLE sagahost_owners (execution bytea PRIMARY KEY, host uuid NOT NULL); \
         CREATE INDEX sagahost_owners_by_host ON sagahost_owners (host)",
    ),
];

/// The schema version this host writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Offsets the advisory lock that serializes migrations from the one that serializes commits.
const MIGRATION_LOCK: i64 = 0x5a5a_5a5a;

/// Brings the schema up to [`SCHEMA_VERSION`]; returns the version it found. On failure
/// nothing is changed and no transaction is left open.
pub(super) async fn migrate(client: &Client, lock: i64) -> Result<i32, StoreError> {
    client.batch_execute("BEGIN").await.map_err(unavailable)?;
    let outcome = apply(client, lock).await;
    let end = if outcome.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await.map_err(unavailable)?;
    outcome
}

async fn apply(tx: &Client, lock: i64) -> Result<i32, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(lock ^ MIGRATION_LOCK)]).await.map_err(unavailable)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sagahost_schema \
         (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(unavailable)?;
    let found: Option<i32> =
        tx.query_one("SELECT max(version) FROM sagahost_schema", &[]).await.map_err(unavailable)?.get(0);
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database's schema is at version {found}, newer than this host knows ({SCHEMA_VERSION}): \
             run a sagahost at least as new as the one that migrated it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(|e| unavailable(format!("migration {version}: {e}")))?;
        tx.execute("INSERT INTO sagahost_schema (version) VALUES ($1)", &[version]).await.map_err(unavailable)?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(found)
}
