//! Several hosts on one database (docs/postgres.md, "Several hosts"): each host has a lease
//! (`sagahost_hosts.until`) that it renews; each unfinished execution is held by one host
//! (`sagahost_owners`). The commit rules check, in every group's transaction, that a driver's
//! append comes from the holder and that the holder's lease is live; a host whose lease lapsed
//! has its executions adopted by the others; a host that records for an execution another host
//! holds wakes that host with `NOTIFY`.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::unavailable;
use super::writer::execution_id;
use crate::domain::ExecutionId;
use crate::store::{HostId, StoreError, keys};

/// Most executions one adoption takes: the others are left to the next round, or to other hosts.
const ADOPT_AT_ONCE: i64 = 10_000;

/// The channel wake-ups go on: one per store (schema).
fn channel(lock: i64) -> String {
    format!("sagahost_wake_{:016x}", lock as u64)
}

/// Extends `host`'s lease to `lease` from now (by the database's clock), registering the host
/// if its row is gone.
pub(super) async fn renew(client: &Client, host: HostId, lease: Duration) -> Result<(), StoreError> {
    let name = hostname();
    client
        .execute(
            "INSERT INTO sagahost_hosts (id, name, until) VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (id) DO UPDATE SET until = EXCLUDED.until",
            &[&host, &name, &lease.as_secs_f64()],
        )
        .await
        .map(drop)
        .map_err(unavailable)
}

/// How operators tell hosts apart in `sagahost_hosts.name`.
fn hostname() -> String {
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{} pid {}", node.trim(), std::process::id())
}

/// Renews `host`'s lease four times per lease period, for as long as the store is open.
pub(super) async fn keep(pool: Pool, host: HostId, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the store renewed it when it opened
    let mut failing = false;
    loop {
        tick.tick().await;
        let renewed = match pool.get().await {
            Ok(conn) => renew(&conn, host, lease).await,
            Err(e) => Err(unavailable(e)),
        };
        match renewed {
            Ok(()) if std::mem::replace(&mut failing, false) => tracing::info!(%host, "lease renewed again"),
            Ok(()) => {}
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(%host, error = %e, "renewing this host's lease failed; retrying")
            }
            Err(_) => {}
        }
    }
}

/// Takes, for `host`, the executions of hosts whose lease lapsed (and at `startup` the
/// unfinished executions no host holds, such as a migrated store's), under the store's lock so
/// that no commit runs meanwhile. Nothing when `host`'s own lease lapsed.
pub(super) async fn adopt(pool: &Pool, lock: i64, host: HostId, startup: bool) -> Result<Vec<ExecutionId>, StoreError> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    let tx = conn.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).await.map_err(unavailable)?;
    let alive: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM sagahost_hosts WHERE id = $1 AND until > clock_timestamp())", &[&host])
        .await
        .map_err(unavailable)?
        .get(0);
    if !alive {
        return Ok(Vec::new());
    }
    let lapsed: Vec<HostId> = tx
        .query("SELECT id FROM sagahost_hosts WHERE until <= clock_timestamp()", &[])
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rows = Vec::new();
    if !lapsed.is_empty() {
        rows = tx
            .query(
                "UPDATE sagahost_owners SET host = $1 WHERE execution IN \
                 (SELECT execution FROM sagahost_owners WHERE host = ANY($2) LIMIT $3) RETURNING execution",
                &[&host, &lapsed, &ADOPT_AT_ONCE],
            )
            .await
            .map_err(unavailable)?;
        // Hosts gone for a while that hold nothing any more are forgotten.
        tx.execute(
            "DELETE FROM sagahost_hosts h WHERE h.until < now() - interval '1 minute' \
             AND NOT EXISTS (SELECT 1 FROM sagahost_owners o WHERE o.host = h.id)",
            &[],
        )
        .await
        .map_err(unavailable)?;
    }
    if startup {
        for status in [crate::domain::ExecutionStatus::Running, crate::domain::ExecutionStatus::Compensating] {
            let index = keys::status_index(status);
            let end = keys::prefix_end(&index);
            let skip = index.len() as i32 + 1;
            rows.extend(
                tx.query(
                    "INSERT INTO sagahost_owners (execution, host) \
                     SELECT substring(k from $3), $4 FROM sagahost_kv WHERE k >= $1 AND k < $2 \
                     ON CONFLICT (execution) DO NOTHING RETURNING execution",
                    &[&index, &end, &skip, &host],
                )
                .await
                .map_err(unavailable)?,
            );
        }
    }
    tx.commit().await.map_err(unavailable)?;
    rows.iter().map(|r| execution_id(r.get(0))).collect()
}

/// Asks `host` to look at `id`.
pub(super) async fn wake(pool: &Pool, lock: i64, host: HostId, id: ExecutionId) -> Result<(), StoreError> {
    let conn = pool.get().await.map_err(unavailable)?;
    conn.execute("SELECT pg_notify($1, $2)", &[&channel(lock), &format!("{host} {id}")])
        .await
        .map(drop)
        .map_err(unavailable)
}

/// Listens for wake-ups addressed to `host` and hands their executions to `tx`, reconnecting
/// when the connection ends, for as long as the store is open.
pub(super) async fn listen(config: Config, lock: i64, host: HostId, tx: UnboundedSender<ExecutionId>) {
    let mut failing = false;
    loop {
        match listen_once(&config, lock, host, &tx).await {
            Ok(()) => return, // nobody takes wake-ups any more
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(error = %e, "listening for wake-ups failed; reconnecting")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    config: &Config,
    lock: i64,
    host: HostId,
    tx: &UnboundedSender<ExecutionId>,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(unavailable)?;
    let (msg_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = stream.next().await {
            if msg_tx.send(m).is_err() {
                break;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {}", channel(lock))).await.map_err(unavailable)?;
    // Wake-ups sent while this host was not listening (before the first connection, or
    // between two) are lost: look at everything it holds.
    let held =
        client.query("SELECT execution FROM sagahost_owners WHERE host = $1", &[&host]).await.map_err(unavailable)?;
    for row in held {
        if tx.send(execution_id(row.get(0))?).is_err() {
            pump.abort();
            return Ok(());
        }
    }
    let me = host.to_string();
    while let Some(message) = messages.recv().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                let Some((to, id)) = n.payload().split_once(' ') else { continue };
                if to != me {
                    continue;
                }
                if let Ok(id) = id.parse::<ExecutionId>()
                    && tx.send(id).is_err()
                {
                    pump.abort();
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                pump.abort();
                return Err(unavailable(e));
            }
        }
    }
    Err(unavailable("the wake-up connection ended"))
}

/// Offsets the session lock the delivering host holds from the store's commit lock.
const DELIVERY_LOCK: i64 = 0x0de1_1fe7;

/// Takes the delivery turn when no other host holds it: a session advisory lock on a connection
/// of its own, held until the connection ends (the host stops, dies, or is cut off: the server
/// then lets the lock go and another host takes the turn within a second or two).
pub(super) async fn take_turns(config: Config, lock: i64, turn: tokio::sync::watch::Sender<bool>) {
    let mut failing = false;
    loop {
        let held = hold_turn(&config, lock, &turn).await;
        turn.send_replace(false);
        match held {
            Ok(()) => return,
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(error = %e, "the delivery turn's connection failed; reconnecting")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn hold_turn(config: &Config, lock: i64, turn: &tokio::sync::watch::Sender<bool>) -> Result<(), StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(unavailable)?;
    let mut connection = tokio::spawn(connection);
    let key = lock ^ DELIVERY_LOCK;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            ended = &mut connection => {
                return Err(unavailable(format!("connection ended: {ended:?}")));
            }
        }
        if turn.is_closed() {
            return Ok(());
        }
        if *turn.borrow() {
            // Holding: a query now and then finds a connection that is gone.
            client.simple_query("SELECT 1").await.map_err(unavailable)?;
        } else {
            let got: bool =
                client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.map_err(unavailable)?.get(0);
            if got {
                tracing::info!("this host delivers the subscriptions");
                turn.send_replace(true);
            }
        }
    }
}
