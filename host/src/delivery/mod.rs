//! Delivery out (docs/subscriptions.md): every subscription has a worker that reads the topic
//! log after the subscription's durable cursor, in order, and hands each matching event to its
//! target — a webhook or a Redis stream — retrying with backoff and jitter, dead-lettering what
//! it gives up on, and moving the cursor only past what is delivered or dead-lettered. So
//! delivery is at least once (a crash between a delivery and the cursor's move delivers again)
//! and in log order, hence in order per key.
//!
//! - `mod.rs`: [`Deliveries`], the workers of every subscription and their status;
//! - `worker.rs`: one subscription's loop;
//! - `webhook.rs`, `redis.rs`: the targets.

mod redis;
mod webhook;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::domain::TopicEvent;
use crate::domain::subscription::Subscription;
use crate::secrets::Vault;
use crate::store::Store;

pub use webhook::signature;

/// What a target receives for one event: the event as `GET /v1/events` shows it.
#[derive(Serialize)]
pub(crate) struct Delivered<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a TopicEvent,
}

/// How one subscription's worker is doing (kept in memory, since the host started).
#[derive(Debug, Default)]
pub struct Status {
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    redrive: AtomicBool,
}

/// [`Status`] as the API shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StatusView {
    /// Events delivered since the host started.
    pub delivered: u64,
    /// Events dead-lettered since the host started.
    pub dead_lettered: u64,
    /// Whether the last try failed (the worker is retrying).
    pub failing: bool,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

impl Status {
    fn view(&self) -> StatusView {
        StatusView {
            delivered: self.delivered.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("status lock").clone(),
        }
    }
}

struct Worker {
    sub: Subscription,
    status: Arc<Status>,
    wake: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

/// What every worker shares.
pub(crate) struct Shared {
    store: Arc<dyn Store>,
    vault: Vault,
    clock: Arc<dyn Clock>,
    http: webhook::HttpsClient,
    log: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
}

/// How often the delivering host of a shared store looks for subscriptions changed through other
/// hosts (and dead letters marked for redrive there).
const RECONCILE: std::time::Duration = std::time::Duration::from_secs(2);

/// The workers of every subscription.
pub struct Deliveries {
    /// Held across a subscription's store write and its worker's (re)start or stop, so that
    /// concurrent changes leave the worker in step with what is stored.
    pub changes: tokio::sync::Mutex<()>,
    shared: Arc<Shared>,
    log: watch::Sender<u64>,
    workers: Mutex<HashMap<String, Worker>>,
    tasks: TaskTracker,
    /// A shared store: whether this host is the one delivering (`None`: always).
    turn: Option<watch::Receiver<bool>>,
}

impl Deliveries {
    /// Workers over `store`, signing with secrets from `vault`, connecting with `tls`; they
    /// stop when `stopping` turns true.
    pub fn new(
        store: Arc<dyn Store>,
        vault: Vault,
        clock: Arc<dyn Clock>,
        tls: rustls::ClientConfig,
        stopping: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) -> Self {
        let http = webhook::client(tls);
        let (log, log_rx) = watch::channel(0);
        let turn = store.delivery_turn();
        let shared = Arc::new(Shared { store, vault, clock, http, log: log_rx, stopping });
        Self { changes: tokio::sync::Mutex::new(()), shared, log, workers: Mutex::new(HashMap::new()), tasks, turn }
    }

    /// Whether this host delivers: always, unless several hosts share the store and another
    /// one does.
    fn leading(&self) -> bool {
        self.turn.as_ref().is_none_or(|t| *t.borrow())
    }

    /// Tells the workers that the log has new events.
    pub fn log_changed(&self) {
        self.log.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts a worker for every stored subscription (at the host's start); with a store
    /// shared by several hosts, starts following whose turn it is to deliver instead (0).
    pub async fn start_all(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        if let Some(turn) = self.turn.clone() {
            self.tasks.spawn(follow_turn(self.clone(), turn));
            return Ok(0);
        }
        let subs = self.shared.store.subscriptions().await?;
        let n = subs.len();
        for sub in subs {
            self.run(sub);
        }
        Ok(n)
    }

    /// Brings the workers in step with the stored subscriptions: new and changed ones (re)start,
    /// removed ones stop, and each looks for dead letters marked for redrive.
    async fn reconcile(&self) -> Result<(), crate::store::StoreError> {
        let _changing = self.changes.lock().await;
        let stored = self.shared.store.subscriptions().await?;
        let stale: Vec<String> = {
            let workers = self.workers.lock().expect("workers lock");
            workers.keys().filter(|name| !stored.iter().any(|s| &s.name == *name)).cloned().collect()
        };
        for name in stale {
            self.stop(&name);
        }
        for sub in stored {
            let same = self.workers.lock().expect("workers lock").get(&sub.name).is_some_and(|w| w.sub == sub);
            if same {
                self.redrive(&sub.name);
            } else {
                self.run(sub);
            }
        }
        Ok(())
    }

    fn stop_all(&self) {
        for (_, w) in self.workers.lock().expect("workers lock").drain() {
            w.task.abort();
        }
    }

    /// (Re)starts the worker of `sub` with its current settings. A worker it replaces is
    /// stopped wherever it is: what it had not recorded is delivered again (at least once).
    pub fn run(&self, sub: Subscription) {
        if *self.shared.stopping.borrow() || !self.leading() {
            return;
        }
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(old) = workers.remove(&sub.name) {
            old.task.abort();
        }
        let status = Arc::new(Status { redrive: AtomicBool::new(true), ..Status::default() });
        let wake = Arc::new(Notify::new());
        let name = sub.name.clone();
        let task = self.tasks.spawn(worker::run(self.shared.clone(), sub.clone(), status.clone(), wake.clone()));
        workers.insert(name, Worker { sub, status, wake, task: task.abort_handle() });
    }

    /// Stops the worker of subscription `name`, if it runs.
    pub fn stop(&self, name: &str) {
        if let Some(old) = self.workers.lock().expect("workers lock").remove(name) {
            old.task.abort();
        }
    }

    /// Has the worker of `name` redeliver its dead letters marked for redrive.
    pub fn redrive(&self, name: &str) {
        if let Some(w) = self.workers.lock().expect("workers lock").get(name) {
            w.status.redrive.store(true, Ordering::SeqCst);
            w.wake.notify_one();
        }
    }

    /// The worker of `name`'s status, if it runs.
    pub fn status(&self, name: &str) -> Option<StatusView> {
        self.workers.lock().expect("workers lock").get(name).map(|w| w.status.view())
    }
}

/// With a store shared by several hosts, one delivers at a time: while it is this host's turn,
/// keep its workers in step with the stored subscriptions; when the turn goes, stop them.
async fn follow_turn(deliveries: Arc<Deliveries>, mut turn: watch::Receiver<bool>) {
    let mut stopping = deliveries.shared.stopping.clone();
    let mut failing = false;
    loop {
        if *turn.borrow_and_update() {
            match deliveries.reconcile().await {
                Ok(()) => failing = false,
                Err(e) if !std::mem::replace(&mut failing, true) => {
                    tracing::warn!(error = %e, "reading the subscriptions failed; retrying")
                }
                Err(_) => {}
            }
        } else {
            deliveries.stop_all();
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE) => {}
            changed = turn.changed() => {
                if changed.is_err() {
                    return;
                }
                let leading = *turn.borrow();
                tracing::info!(leading, "this host's turn to deliver subscriptions changed");
            }
            _ = stopping.changed() => return,
        }
    }
}
