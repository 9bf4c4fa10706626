//! A scratch schema in the test database: `SAGAHOST_TEST_POSTGRES_URL`, which `.ci/run` sets
//! when PostgreSQL answers. Unset: the test prints why it skips. Set but unreachable: it fails.
#![allow(dead_code)] // each test binary uses a part of it
#![allow(clippy::print_stdout)] // a skipped test says why

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::RwLock;

/// Tests of a binary share the database; a test that restarts it takes it alone.
static TURNS: LazyLock<Arc<RwLock<()>>> = LazyLock::new(Arc::default);

/// A test's turn on the database: shared, or alone.
enum Turn {
    Shared(tokio::sync::OwnedRwLockReadGuard<()>),
    Alone(tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// The configured test database, or `None` (with the reason printed) when there is none.
pub fn postgres_url() -> Option<String> {
    match std::env::var("SAGAHOST_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            println!("SKIPPED: SAGAHOST_TEST_POSTGRES_URL is not set (no PostgreSQL configured for the tests)");
            None
        }
    }
}

/// A schema of its own in the test database, dropped with this value: `url` points a store at it.
pub struct Scratch {
    /// The test database's URL with `search_path` set to the schema.
    pub url: String,
    base: String,
    schema: String,
    _turn: Turn,
}

async fn admin(base: &str) -> tokio_postgres::Client {
    let connect = tokio_postgres::connect(base, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .unwrap_or_else(|_| panic!("PostgreSQL at {base} (SAGAHOST_TEST_POSTGRES_URL) did not answer"))
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} (SAGAHOST_TEST_POSTGRES_URL) is unreachable: {e}"));
    tokio::spawn(connection);
    client
}

impl Scratch {
    /// A new empty schema, or `None` when no test database is configured.
    pub async fn new() -> Option<Self> {
        let base = postgres_url()?;
        let turn = Turn::Shared(TURNS.clone().read_owned().await);
        Some(Self::create(base, turn).await)
    }

    /// [`new`](Self::new), once no other test of this binary uses the database, and keeping
    /// them out until dropped: for a test that restarts the server.
    pub async fn alone() -> Option<Self> {
        let base = postgres_url()?;
        let turn = Turn::Alone(TURNS.clone().write_owned().await);
        Some(Self::create(base, turn).await)
    }

    async fn create(base: String, turn: Turn) -> Self {
        let schema = format!("sagahost_test_{}", uuid::Uuid::now_v7().simple());
        admin(&base).await.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("creating a test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        // The application name lets the clean-up end connections a test left open.
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}&application_name={schema}");
        Self { url, base, schema, _turn: turn }
    }

    /// A client on the schema, for a test's own looks at the tables.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        // Drop runs inside a test's runtime: clean up on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = admin(&base).await;
                let end = format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{schema}'; \
                     DROP SCHEMA {schema} CASCADE"
                );
                if let Err(e) = client.batch_execute(&end).await {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
            });
        })
        .join();
    }
}

/// A PostgreSQL store in a scratch schema, as a test's store (`None`: no database configured).
pub async fn store() -> Option<(std::sync::Arc<dyn sagahost::store::Store>, Scratch)> {
    use sagahost::store::{PgStore, PostgresConfig};
    let scratch = Scratch::new().await?;
    let store = PgStore::open(&PostgresConfig::new(&scratch.url)).await.expect("opening the PostgreSQL store");
    Some((std::sync::Arc::new(store), scratch))
}
