//! The writer thread: every write of this host goes through it, as with sled. A group of
//! writes is one transaction: it takes the store's advisory lock (so that the groups of every
//! host sharing the database apply one after another, and the rules read what the groups
//! before left), fetches what the group will read in one round trip (stream heads, keys, the
//! leases of its executions and which hosts are live), stages the group into one [`Commit`] for
//! this host (so that a driver's append is checked against its lease, `leases.rs`), writes its
//! pairs and lease changes with one upsert and one delete each, and commits: one WAL flush for
//! the whole group.
//!
//! The thread has its own single-threaded runtime: the commit rules read synchronously, and a
//! read the prefetch did not foresee is a query run to completion on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use futures::TryFutureExt;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::unavailable;
use crate::domain::ExecutionId;
use crate::store::commit::{Commit, Mutation, Snapshot};
use crate::store::group::{Finish, Needs, Request, gather};
use crate::store::kv::{self, KvRead, KvSnapshot, Op, Pair, decode_u64};

use crate::store::{CommitStats, HostId, StoreError, keys, observe_commit};

/// A statement's parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

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
    owners: Statement,
    live: Statement,
    own: Statement,
    disown: Statement,
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
            owners: prepare("SELECT execution, host FROM sagahost_owners WHERE execution = ANY($1::bytea[])").await?,
            live: prepare("SELECT id FROM sagahost_hosts WHERE until > clock_timestamp()").await?,
            own: prepare(
                "INSERT INTO sagahost_owners (execution, host) SELECT * FROM unnest($1::bytea[], $2::uuid[]) \
                 ON CONFLICT (execution) DO UPDATE SET host = EXCLUDED.host",
            )
            .await?,
            disown: prepare("DELETE FROM sagahost_owners WHERE execution = ANY($1::bytea[])").await?,
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
    /// Lease holders of the group's executions (absent: none).
    owners: HashMap<ExecutionId, HostId>,
    /// Hosts whose lease is live.
    live: HashSet<HostId>,
}

/// Opens the group's transaction, takes the lock and fetches what `needs` names.
async fn begin(conn: &Conn, lock: i64, needs: &Needs) -> Result<Fetched, StoreError> {
    conn.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock})")).await.map_err(unavailable)?;
    let mut exact: Vec<Vec<u8>> = needs.keys.clone();
    exact.push(keys::state_clock());
    exact.extend(needs.heads.iter().map(|id| keys::summary(*id)));
    let lo: Vec<Vec<u8>> = needs.heads.iter().map(|id| keys::events_of(*id)).collect();
    let hi: Vec<Vec<u8>> = lo.iter().map(|p| keys::prefix_end(p)).collect();
    let ids: Vec<&[u8]> = needs.heads.iter().map(|id| &id.as_bytes()[..]).collect();
    let (p1, p2, p3): ([Param; 1], [Param; 2], [Param; 1]) = ([&exact], [&lo, &hi], [&ids]);
    let (rows, lasts, owners, live) = tokio::try_join!(
        conn.client.query(&conn.get_many, &p1),
        conn.client.query(&conn.last_many, &p2),
        conn.client.query(&conn.owners, &p3),
        conn.client.query(&conn.live, &[]),
    )
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
    for row in owners {
        fetched.owners.insert(execution_id(row.get(0))?, row.get(1));
    }
    fetched.live = live.into_iter().map(|r| r.get(0)).collect();
    Ok(fetched)
}

/// An execution id stored as its 16 bytes.
pub(super) fn execution_id(bytes: &[u8]) -> Result<ExecutionId, StoreError> {
    Ok(ExecutionId::from_bytes(bytes.try_into().map_err(|_| StoreError::Corrupt("execution id".into()))?))
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

    /// Every write names its execution in its needs, so the prefetch has its lease holder.
    fn owner(&mut self, id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        Ok(self.fetched.owners.get(&id).copied())
    }

    fn live(&mut self, host: HostId) -> Result<bool, StoreError> {
        Ok(self.fetched.live.contains(&host))
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

/// A group's changes: each key's last value and each lease's last holder (`None`: removed).
#[derive(Default)]
struct Changes {
    pairs: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    owners: BTreeMap<ExecutionId, Option<HostId>>,
}

/// Stages `group` for `host` over `kv` with the state clock at `clock`: the answers, and the
/// changes to write.
fn stage(kv: impl KvRead, host: HostId, clock: u64, group: Vec<Request>) -> (Vec<Finish>, Changes) {
    let mut heads = HashMap::new();
    let mut snapshot = KvSnapshot { kv, heads: &mut heads };
    let mut commit = Commit::new(&mut snapshot as &mut dyn Snapshot, clock).for_host(host);
    let finishers = group.into_iter().map(|r| (r.stage)(&mut commit)).collect();
    let (mutations, _) = commit.finish();
    let mut changes = Changes::default();
    let pairs = &mut changes.pairs;
    for m in &mutations {
        if let Mutation::Owner { id, host } = m {
            changes.owners.insert(*id, *host);
        }
        kv::ops(m, &mut |op| match op {
            Op::Put(k, v) => {
                pairs.insert(k, Some(v));
            }
            Op::Remove(k) => {
                pairs.insert(k, None);
            }
        });
    }
    (finishers, changes)
}

/// Writes `changes` and commits the transaction.
async fn write(conn: &Conn, changes: Changes) -> Result<(), StoreError> {
    let (mut put_keys, mut put_values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in changes.pairs {
        match v {
            Some(v) => {
                put_keys.push(k);
                put_values.push(v);
            }
            None => removed.push(k),
        }
    }
    let (mut owned, mut owners, mut disowned) = (Vec::new(), Vec::new(), Vec::new());
    for (id, host) in changes.owners {
        match host {
            Some(h) => {
                owned.push(id.as_bytes().to_vec());
                owners.push(h);
            }
            None => disowned.push(id.as_bytes().to_vec()),
        }
    }
    let (p1, p2, p3, p4): ([Param; 2], [Param; 1], [Param; 2], [Param; 1]) =
        ([&put_keys, &put_values], [&removed], [&owned, &owners], [&disowned]);
    tokio::try_join!(
        conn.client.execute(&conn.upsert, &p1),
        conn.client.execute(&conn.remove, &p2),
        conn.client.execute(&conn.own, &p3),
        conn.client.execute(&conn.disown, &p4),
    )
    .map_err(unavailable)?;
    conn.client.batch_execute("COMMIT").await.map_err(unavailable)
}

/// Commits one group on `conn` (opened first if there is none).
fn commit_group(
    rt: &tokio::runtime::Runtime,
    conn: &mut Option<Conn>,
    config: &Config,
    lock: i64,
    host: HostId,
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
            let (finishers, _) = stage(Refused(e.clone()), host, 0, group);
            return (finishers, Err(e));
        }
    };
    let c = conn.as_ref().expect("opened above");
    let (finishers, changes) = stage(PgKv { rt, conn: c, fetched }, host, clock, group);
    let committed = rt.block_on(async {
        if changes.pairs.is_empty() && changes.owners.is_empty() {
            return c.client.batch_execute("COMMIT").await.map_err(unavailable);
        }
        write(c, changes).await
    });
    (finishers, committed)
}

/// The writer thread's loop, until every sender is gone.
pub(super) fn run(config: Config, lock: i64, host: HostId, mut rx: mpsc::Receiver<Request>, stats: &CommitStats) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the writer");
    let mut conn: Option<Conn> = None;
    while let Some(first) = rx.blocking_recv() {
        let group = gather(first, &mut rx);
        let started = Instant::now();
        let (finishers, committed) = commit_group(&rt, &mut conn, &config, lock, host, group);
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
