//! The writer thread: every write of this host goes through it, as with sled. A group of
//! writes is one transaction: it takes the store's advisory lock (so that the groups of every
//! host sharing the database apply one after another, and the rules read what the groups
//! before left), fetches what the group will read in two queries, stages the group into one
//! [`Commit`], writes its pairs with one upsert and one delete, and commits: one WAL flush
//! for the whole group.
//!
//! The thread has its own single-threaded runtime: the commit rules read synchronously, and a
//! read the prefetch did not foresee is a query run to completion on it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use futures::TryFutureExt;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::unavailable;
use crate::store::commit::{Commit, Snapshot};
use crate::store::group::{Finish, Needs, Request, gather};
use crate::store::kv::{self, KvRead, KvSnapshot, Op, Pair, decode_u64};

/// A group's changes: each key's last value (`None`: removed).
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
use crate::store::{CommitStats, StoreError, keys, observe_commit};

/// The statements a writer connection runs, prepared once.
struct Conn {
    client: Client,
    get: Statement,
    get_many: Statement,
    last: Statement,
    last_many: Statement,
    keys: Statement,
    upsert: Statement,
    remove: Statement,
}

impl Conn {
    async fn open(config: &Config) -> Result<Self, StoreError> {
        let (client, connection) = config.connect(NoTls).await.map_err(unavailable)?;
        tokio::spawn(connection.map_err(|e| tracing::warn!(error = %e, "store writer connection ended")));
        let prepare = |sql: &'static str| client.prepare(sql).map_err(unavailable);
        Ok(Self {
            get: prepare("SELECT v FROM sagahost_kv WHERE k = $1").await?,
            get_many: prepare("SELECT k, v FROM sagahost_kv WHERE k = ANY($1::bytea[])").await?,
            last: prepare("SELECT k, v FROM sagahost_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT 1").await?,
            last_many: prepare(
                "SELECT p.lo, l.k, l.v FROM unnest($1::bytea[], $2::bytea[]) AS p(lo, hi) \
                 CROSS JOIN LATERAL (SELECT k, v FROM sagahost_kv WHERE k >= p.lo AND k < p.hi \
                 ORDER BY k DESC LIMIT 1) AS l",
            )
            .await?,
            keys: prepare("SELECT k FROM sagahost_kv WHERE k >= $1 AND k < $2 ORDER BY k").await?,
            upsert: prepare(
                "INSERT INTO sagahost_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            )
            .await?,
            remove: prepare("DELETE FROM sagahost_kv WHERE k = ANY($1::bytea[])").await?,
            client,
        })
    }
}

/// What a group's prefetch found: exact keys (`None`: absent) and the last pair under
/// prefixes (stream events).
#[derive(Default)]
struct Fetched {
    known: HashMap<Vec<u8>, Option<Vec<u8>>>,
    last: HashMap<Vec<u8>, Option<Pair>>,
}

/// Opens the group's transaction, takes the lock and fetches what `needs` names.
async fn begin(conn: &Conn, lock: i64, needs: &Needs) -> Result<Fetched, StoreError> {
    conn.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock})")).await.map_err(unavailable)?;
    let mut exact: Vec<Vec<u8>> = needs.keys.clone();
    exact.push(keys::state_clock());
    exact.extend(needs.heads.iter().map(|id| keys::summary(*id)));
    let lo: Vec<Vec<u8>> = needs.heads.iter().map(|id| keys::events_of(*id)).collect();
    let hi: Vec<Vec<u8>> = lo.iter().map(|p| keys::prefix_end(p)).collect();
    let (p1, p2): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 2]) = ([&exact], [&lo, &hi]);
    let (rows, lasts) =
        tokio::try_join!(conn.client.query(&conn.get_many, &p1), conn.client.query(&conn.last_many, &p2))
            .map_err(unavailable)?;
    let mut fetched = Fetched::default();
    for k in exact {
        fetched.known.insert(k, None);
    }
    for row in rows {
        fetched.known.insert(row.get(0), Some(row.get(1)));
    }
    for p in lo {
        fetched.last.insert(p, None);
    }
    for row in lasts {
        fetched.last.insert(row.get(0), Some((row.get(1), row.get(2))));
    }
    Ok(fetched)
}

/// The database inside the group's transaction, as the commit rules read it.
struct PgKv<'a> {
    rt: &'a tokio::runtime::Runtime,
    conn: &'a Conn,
    fetched: Fetched,
}

impl KvRead for PgKv<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.fetched.known.get(key) {
            return Ok(v.clone());
        }
        let row = self.rt.block_on(self.conn.client.query_opt(&self.conn.get, &[&key])).map_err(unavailable)?;
        let v: Option<Vec<u8>> = row.map(|r| r.get(0));
        self.fetched.known.insert(key.to_vec(), v.clone());
        Ok(v)
    }

    fn last(&mut self, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        if let Some(found) = self.fetched.last.get(prefix) {
            return Ok(found.clone());
        }
        let end = keys::prefix_end(prefix);
        let row =
            self.rt.block_on(self.conn.client.query_opt(&self.conn.last, &[&prefix, &end])).map_err(unavailable)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn keys(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = keys::prefix_end(prefix);
        let rows = self.rt.block_on(self.conn.client.query(&self.conn.keys, &[&prefix, &end])).map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}

/// Answers every read with the error that stopped the group from starting.
struct Refused(StoreError);

impl KvRead for Refused {
    fn get(&mut self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(self.0.clone())
    }
    fn last(&mut self, _: &[u8]) -> Result<Option<Pair>, StoreError> {
        Err(self.0.clone())
    }
    fn keys(&mut self, _: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Err(self.0.clone())
    }
}

/// Stages `group` over `kv` with the state clock at `clock`: the answers, and the pairs to write
/// (the last change of each key).
fn stage(kv: impl KvRead, clock: u64, group: Vec<Request>) -> (Vec<Finish>, Changes) {
    let mut heads = HashMap::new();
    let mut snapshot = KvSnapshot { kv, heads: &mut heads };
    let mut commit = Commit::new(&mut snapshot as &mut dyn Snapshot, clock);
    let finishers = group.into_iter().map(|r| (r.stage)(&mut commit)).collect();
    let (mutations, _) = commit.finish();
    let mut pairs = BTreeMap::new();
    for m in &mutations {
        kv::ops(m, &mut |op| match op {
            Op::Put(k, v) => {
                pairs.insert(k, Some(v));
            }
            Op::Remove(k) => {
                pairs.insert(k, None);
            }
        });
    }
    (finishers, pairs)
}

/// Writes `pairs` and commits the transaction.
async fn write(conn: &Conn, pairs: Changes) -> Result<(), StoreError> {
    let (mut put_keys, mut put_values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in pairs {
        match v {
            Some(v) => {
                put_keys.push(k);
                put_values.push(v);
            }
            None => removed.push(k),
        }
    }
    let (p1, p2): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 1]) = ([&put_keys, &put_values], [&removed]);
    tokio::try_join!(conn.client.execute(&conn.upsert, &p1), conn.client.execute(&conn.remove, &p2))
        .map_err(unavailable)?;
    conn.client.batch_execute("COMMIT").await.map_err(unavailable)
}

/// Commits one group on `conn` (opened first if there is none).
fn commit_group(
    rt: &tokio::runtime::Runtime,
    conn: &mut Option<Conn>,
    config: &Config,
    lock: i64,
    group: Vec<Request>,
) -> (Vec<Finish>, Result<(), StoreError>) {
    let mut needs = Needs::default();
    for r in &group {
        needs.heads.extend_from_slice(&r.needs.heads);
        needs.keys.extend(r.needs.keys.iter().cloned());
    }
    let begun = rt.block_on(async {
        // A connection the server closed while the writer was idle (a restart, an idle
        // timeout) is only found out by using it: nothing of the group was sent yet, so open
        // a new one and begin again, once.
        for retry in [true, false] {
            if conn.is_none() {
                *conn = Some(Conn::open(config).await?);
            }
            let c = conn.as_ref().expect("opened above");
            match begin(c, lock, &needs).await {
                Ok(fetched) => {
                    let clock = match fetched.known.get(&keys::state_clock()) {
                        Some(Some(v)) => decode_u64(v, "state clock")?,
                        _ => 0,
                    };
                    return Ok((fetched, clock));
                }
                Err(e) if retry && c.client.is_closed() => {
                    tracing::info!(error = %e, "store writer connection was closed; reconnecting");
                    *conn = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second try returns")
    });
    let (fetched, clock) = match begun {
        Ok(found) => found,
        Err(e) => {
            let (finishers, _) = stage(Refused(e.clone()), 0, group);
            return (finishers, Err(e));
        }
    };
    let c = conn.as_ref().expect("opened above");
    let (finishers, pairs) = stage(PgKv { rt, conn: c, fetched }, clock, group);
    let committed = rt.block_on(async {
        if pairs.is_empty() {
            return c.client.batch_execute("COMMIT").await.map_err(unavailable);
        }
        write(c, pairs).await
    });
    (finishers, committed)
}

/// The writer thread's loop, until every sender is gone.
pub(super) fn run(config: Config, lock: i64, mut rx: mpsc::Receiver<Request>, stats: &CommitStats) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the writer");
    let mut conn: Option<Conn> = None;
    while let Some(first) = rx.blocking_recv() {
        let group = gather(first, &mut rx);
        let started = Instant::now();
        let (finishers, committed) = commit_group(&rt, &mut conn, &config, lock, group);
        if let Err(e) = &committed {
            tracing::warn!(error = %e, writes = finishers.len(), "store refused a group of writes");
            // Leave no transaction open; a connection that failed is opened again next time.
            let alive = conn.as_ref().is_some_and(|c| !c.client.is_closed());
            if !alive || rt.block_on(conn.as_ref().expect("alive").client.batch_execute("ROLLBACK")).is_err() {
                conn = None;
            }
        }
        observe_commit(stats, finishers.len(), started.elapsed());
        for f in finishers {
            f(committed.clone());
        }
    }
}
