//! The orchestrator: starts executions, drives each one (load → decide → invoke → append)
//! in a task of its own, and answers the operator commands. It owns no saga rules: those
//! are in [`crate::domain::decide`](mod@crate::domain::decide).
//!
//! Where things are:
//! - `mod.rs`: the [`Orchestrator`], its settings and errors, reads, recovery and shutdown;
//! - `commands.rs`: starting executions and the operator commands (cancel, resume);
//! - `driver.rs`: one execution's driver, the plan → append → act loop;
//! - `registry.rs`: at most one driver per execution, and waking it;
//! - `definitions.rs`: storing definitions and the cache of them;
//! - `waiters.rs`: callers waiting for an execution to end;
//! - `timers.rs`: executions parked until a time, and the task that restarts them;
//! - `quarantine.rs`: executions whose stored stream cannot be read, set aside once;
//! - `dispatch.rs`: the topic log's delivery to triggers and waits;
//! - `subscriptions.rs`: subscriptions, their dead letters, and their workers' control.

mod commands;
mod definitions;
mod dispatch;
mod driver;
mod quarantine;
mod registry;
mod subscriptions;
mod timers;
mod trace;
mod waiters;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::domain::decide::CommandError;
use crate::domain::{
    DefinitionError, DefinitionLimits, EventRecord, Execution, ExecutionId, ExecutionStatus, SagaName,
};
use crate::runtime::PluginCache;
use crate::store::{Store, StoreError};

pub use commands::TriggerKeys;
pub use subscriptions::SubscriptionView;
pub use timers::PARK_AFTER_MS;

/// Orchestrator settings.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Plugin attempts running at once (each holds one instance).
    pub max_concurrent_attempts: usize,
    /// Streams loaded at once while recovering.
    pub max_concurrent_loads: usize,
    /// Whether other processes may drive executions in the same store. sled locks its
    /// directory, so a host on sled owns its store and re-runs orphaned attempts at once.
    pub shared_store: bool,
    /// Unfinished executions this host drives at once; past it, triggers are refused
    /// (`Busy`) instead of growing without bound.
    pub max_active_executions: usize,
    /// Bounds on definitions.
    pub definition_limits: DefinitionLimits,
    /// Seals secrets at rest; `None`: they are stored in clear (docs/secrets.md).
    pub secret_key: Option<crate::secrets::SealKey>,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_concurrent_attempts: 128,
            max_concurrent_loads: 32,
            max_active_executions: 100_000,
            shared_store: false,
            definition_limits: DefinitionLimits::default(),
            secret_key: None,
        }
    }
}

/// A change of one execution, broadcast to waiters and live event streams.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Notice {
    /// The execution.
    pub id: ExecutionId,
    /// Its new version (`seq` of its last event).
    pub version: u64,
    /// Its status after the change.
    pub status: ExecutionStatus,
    /// Whether the status changed (the global feed shows only these).
    pub status_changed: bool,
}

/// Why an orchestrator call failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// No definition with that name.
    #[error("saga {0} is not defined")]
    UnknownSaga(SagaName),
    /// No execution with that id.
    #[error("execution {0} not found")]
    UnknownExecution(ExecutionId),
    /// The command does not apply in the execution's state.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A definition was refused.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host already holds as many unfinished executions as it may.
    #[error("the host holds {0} unfinished executions, its limit: try again later")]
    Busy(usize),
    /// The idempotency key was used before with another request (docs/api.md).
    #[error(
        "the Idempotency-Key was already used with a different request, by execution {0}: use a new key for a new request"
    )]
    IdempotencyKeyReused(ExecutionId),
    /// A secret could not be stored or read.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// No subscription with that name.
    #[error("subscription {0} does not exist")]
    UnknownSubscription(String),
    /// A subscription was refused.
    #[error(transparent)]
    Subscription(#[from] crate::domain::subscription::SubscriptionError),
    /// The stored stream could not be folded.
    #[error(transparent)]
    Fold(#[from] crate::domain::state::FoldError),
    /// The execution's stored stream cannot be read: it is set aside (docs/operations.md).
    #[error("execution {id} is quarantined: its stored stream cannot be read ({reason})")]
    Quarantined {
        /// The execution.
        id: ExecutionId,
        /// What is wrong with its stream.
        reason: String,
    },
}

/// A started (or, by idempotency key, found) execution.
#[derive(Clone, Debug)]
pub struct Started {
    /// Its id.
    pub id: ExecutionId,
    /// Its status now.
    pub status: ExecutionStatus,
    /// `false` when the idempotency key returned an earlier execution.
    pub created: bool,
}

/// Drives executions. Cheap to share: hold it in an `Arc`.
pub struct Orchestrator {
    me: Weak<Orchestrator>,
    store: Arc<dyn Store>,
    plugins: Arc<PluginCache>,
    clock: Arc<dyn Clock>,
    config: OrchestratorConfig,
    definitions: definitions::DefinitionCache,
    drivers: registry::DriverRegistry,
    attempts: Arc<Semaphore>,
    loads: Arc<Semaphore>,
    notices: broadcast::Sender<Notice>,
    waiters: waiters::Waiters,
    stopping: watch::Sender<bool>,
    streams_loaded: AtomicU64,
    timers: timers::Timers,
    quarantine: quarantine::Quarantine,
    secrets: crate::secrets::Vault,
    dispatcher: dispatch::Dispatcher,
    deliveries: Arc<crate::delivery::Deliveries>,
    /// Every driver and the timer task: shutdown waits for these, not for a count to drop.
    tasks: TaskTracker,
}

impl Orchestrator {
    /// An orchestrator over `store`, running plugins from `plugins`.
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginCache>,
        clock: Arc<dyn Clock>,
        config: OrchestratorConfig,
    ) -> Arc<Self> {
        let secrets = crate::secrets::Vault::new(store.clone(), config.secret_key.clone());
        let stopping = watch::channel(false).0;
        let tasks = TaskTracker::new();
        let deliveries = Arc::new(crate::delivery::Deliveries::new(
            store.clone(),
            secrets.clone(),
            clock.clone(),
            plugins.runtime().tls_config(),
            stopping.subscribe(),
            tasks.clone(),
        ));
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            secrets,
            dispatcher: Default::default(),
            deliveries,
            store,
            plugins,
            clock,
            attempts: Arc::new(Semaphore::new(config.max_concurrent_attempts)),
            loads: Arc::new(Semaphore::new(config.max_concurrent_loads)),
            config,
            definitions: Default::default(),
            drivers: Default::default(),
            notices: broadcast::channel(16_384).0,
            waiters: Default::default(),
            streams_loaded: AtomicU64::new(0),
            timers: Default::default(),
            quarantine: Default::default(),
            tasks,
            stopping,
        })
    }

    /// Turns true when the host starts to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Runs `task` beside the executions (an ingress, ...): a stop waits for it, within its
    /// grace period, so it must end soon after [`Orchestrator::stopping`] turns true.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if !*self.stopping.borrow() {
            self.tasks.spawn(task);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The host's secrets.
    pub fn secrets(&self) -> &crate::secrets::Vault {
        &self.secrets
    }

    /// The plugin cache.
    pub fn plugins(&self) -> &Arc<PluginCache> {
        &self.plugins
    }

    /// Now, by the injected clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Changes of every execution, as they are recorded.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Streams read by drivers since this orchestrator started (recovery progress).
    pub fn streams_loaded(&self) -> u64 {
        self.streams_loaded.load(Ordering::Relaxed)
    }

    /// Loads and folds an execution. A stream that does not decode or fold is quarantined.
    pub async fn execution(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        let records = self.events(id, 0).await?;
        match Execution::fold(id, &records) {
            Ok(exec) => Ok(exec),
            Err(e) => Err(self.set_aside(id, e.to_string()).await),
        }
    }

    /// An execution's events with `seq > after`. A stream that does not decode is quarantined.
    pub async fn events(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, OrchestratorError> {
        match self.store.read(id, after).await {
            Ok(records) => Ok(records),
            Err(StoreError::NotFound(id)) => Err(OrchestratorError::UnknownExecution(id)),
            Err(e @ StoreError::Corrupt(_)) => Err(self.set_aside(id, e.to_string()).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Resumes every unfinished execution found in the store (after a start or a crash).
    pub async fn recover(&self) -> Result<usize, OrchestratorError> {
        self.load_quarantine().await?;
        // Events recorded but not yet delivered when the host stopped are delivered now.
        self.start_dispatcher();
        let subscriptions = self.deliveries.start_all().await?;
        if subscriptions > 0 {
            tracing::info!(count = subscriptions, "delivering to subscriptions");
        }
        let ids = match self.store.shared() {
            // A store shared by several hosts: this host drives what it adopts.
            Some(every) => {
                let ids = self.store.adopt(true).await?;
                self.share_work(every);
                ids
            }
            None => self.store.unfinished().await?,
        };
        for id in &ids {
            self.ensure_driver(*id);
        }
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "resuming unfinished executions");
        }
        Ok(ids.len())
    }

    /// With a store shared by several hosts: adopts, every `every`, the executions of hosts
    /// whose lease lapsed, and looks at the executions other hosts wake this one for.
    fn share_work(&self, every: Duration) {
        let (me, mut stopping) = (self.me.clone(), self.stopping.subscribe());
        self.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopping.changed() => return,
                }
                let Some(orch) = me.upgrade() else { return };
                match orch.store.adopt(false).await {
                    Ok(ids) => {
                        failing = false;
                        if !ids.is_empty() {
                            tracing::info!(count = ids.len(), "adopted executions of a host whose lease lapsed");
                        }
                        for id in ids {
                            orch.ensure_driver(id);
                        }
                    }
                    Err(e) if !std::mem::replace(&mut failing, true) => {
                        tracing::warn!(error = %e, "adopting executions failed; retrying")
                    }
                    Err(_) => {}
                }
            }
        });
        if let Some(mut wakeups) = self.store.wakeups() {
            let (me, mut stopping) = (self.me.clone(), self.stopping.subscribe());
            self.spawn(async move {
                loop {
                    let id = tokio::select! {
                        id = wakeups.recv() => id,
                        _ = stopping.changed() => return,
                    };
                    let (Some(id), Some(orch)) = (id, me.upgrade()) else { return };
                    orch.ensure_driver(id);
                }
            });
        }
    }

    /// Stops driving: sleeping drivers exit now, running attempts finish first. Waits up to
    /// `grace` for them. Unfinished executions resume at the next start.
    ///
    /// Every driver and the timer task run on one task tracker: once stopping is set no new
    /// driver starts, so closing the tracker and waiting for it to empty waits for exactly
    /// the tasks still running, and ends the moment the last one does.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.send_replace(true);
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                drivers = self.active_drivers(),
                grace_ms = grace.as_millis() as u64,
                "grace period over with attempts still running"
            );
        }
    }

    /// Tells subscribers that `exec` moved, and hands its final state to its waiters when it ended.
    fn publish(&self, exec: &Execution, status_changed: bool) {
        let (id, status) = (exec.id, exec.status);
        let _ = self.notices.send(Notice { id, version: exec.version, status, status_changed });
        self.waiters.hand_final_state(exec);
    }
}
