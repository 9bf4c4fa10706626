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

/// The workers of every subscription.
pub struct Deliveries {
    /// Held across a subscription's store write and its worker's (re)start or stop, so that
    /// concurrent changes leave the worker in step with what is stored.
    pub changes: tokio::sync::Mutex<()>,
    shared: Arc<Shared>,
    log: watch::Sender<u64>,
    workers: Mutex<HashMap<String, Worker>>,
    tasks: TaskTracker,
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
        let shared = Arc::new(Shared { store, vault, clock, http, log: log_rx, stopping });
        Self { changes: tokio::sync::Mutex::new(()), shared, log, workers: Mutex::new(HashMap::new()), tasks }
    }

    /// Tells the workers that the log has new events.
    pub fn log_changed(&self) {
        self.log.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts a worker for every stored subscription (at the host's start).
    pub async fn start_all(&self) -> Result<usize, crate::store::StoreError> {
        let subs = self.shared.store.subscriptions().await?;
        let n = subs.len();
        for sub in subs {
            self.run(sub);
        }
        Ok(n)
    }

    /// (Re)starts the worker of `sub` with its current settings. A worker it replaces is
    /// stopped wherever it is: what it had not recorded is delivered again (at least once).
    pub fn run(&self, sub: Subscription) {
        if *self.shared.stopping.borrow() {
            return;
        }
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(old) = workers.remove(&sub.name) {
            old.task.abort();
        }
        let status = Arc::new(Status { redrive: AtomicBool::new(true), ..Status::default() });
        let wake = Arc::new(Notify::new());
        let name = sub.name.clone();
        let task = self.tasks.spawn(worker::run(self.shared.clone(), sub, status.clone(), wake.clone()));
        workers.insert(name, Worker { status, wake, task: task.abort_handle() });
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
