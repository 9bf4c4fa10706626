//! The orchestrator: starts executions, drives each one (load → decide → invoke → append)
//! in a task of its own, and answers the operator commands. It owns no saga rules: those
//! are in [`crate::domain::decide`].

mod driver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore, broadcast, watch};

use crate::clock::Clock;
use crate::domain::decide::{CommandError, InFlight, cancel, resume};
use crate::domain::definition::parse_definition;
use crate::domain::{
    DefinitionError, DefinitionLimits, Event, EventRecord, Execution, ExecutionId, ExecutionStatus, Next,
    SagaDefinition, SagaName,
};
use crate::runtime::PluginCache;
use crate::store::{Created, DefinitionPut, IdempotencyKey, Store, StoreError, StoredDefinition};

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
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_concurrent_attempts: 128,
            max_concurrent_loads: 32,
            max_active_executions: 100_000,
            shared_store: false,
            definition_limits: DefinitionLimits::default(),
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
    /// The host already drives as many executions as it may.
    #[error("the host is driving {0} executions, its limit: try again later")]
    Busy(usize),
    /// The stored stream could not be folded.
    #[error(transparent)]
    Fold(#[from] crate::domain::state::FoldError),
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

struct DriverSlot {
    wake: Notify,
    /// Set when someone appended while the driver ran: it must re-read before retiring.
    dirty: AtomicBool,
}

/// Drives executions. Cheap to share: hold it in an `Arc`.
pub struct Orchestrator {
    me: Weak<Orchestrator>,
    store: Arc<dyn Store>,
    plugins: Arc<PluginCache>,
    clock: Arc<dyn Clock>,
    config: OrchestratorConfig,
    definitions: Mutex<HashMap<(SagaName, u64), Arc<SagaDefinition>>>,
    /// The latest version of each saga, so that a trigger reads nothing from the store (only
    /// this process writes definitions unless the store is shared).
    latest: Mutex<HashMap<SagaName, (u64, Arc<SagaDefinition>)>>,
    drivers: Mutex<HashMap<ExecutionId, Arc<DriverSlot>>>,
    attempts: Arc<Semaphore>,
    loads: Arc<Semaphore>,
    notices: broadcast::Sender<Notice>,
    /// Callers waiting for an execution to end, handed its final state when it does.
    waiters: Mutex<HashMap<ExecutionId, Vec<Waiter>>>,
    stopping: watch::Sender<bool>,
    streams_loaded: std::sync::atomic::AtomicU64,
    /// Executions parked until a time, `(wake_at_unix_ms, id)`: they hold no task while they
    /// wait. One timer task sleeps until the earliest and restarts its driver.
    timers: Mutex<std::collections::BTreeSet<(u64, ExecutionId)>>,
    timer_wake: Arc<Notify>,
    timers_started: AtomicBool,
}

/// Told an execution's final state when it ends (`None`: read it from the store).
type Waiter = tokio::sync::oneshot::Sender<Option<Arc<Execution>>>;

/// A wait longer than this parks the execution (its driver exits) instead of sleeping in it.
pub const PARK_AFTER_MS: u64 = 2_000;

impl Orchestrator {
    /// An orchestrator over `store`, running plugins from `plugins`.
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginCache>,
        clock: Arc<dyn Clock>,
        config: OrchestratorConfig,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            store,
            plugins,
            clock,
            attempts: Arc::new(Semaphore::new(config.max_concurrent_attempts)),
            loads: Arc::new(Semaphore::new(config.max_concurrent_loads)),
            config,
            definitions: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            drivers: Mutex::new(HashMap::new()),
            notices: broadcast::channel(16_384).0,
            waiters: Mutex::new(HashMap::new()),
            streams_loaded: std::sync::atomic::AtomicU64::new(0),
            timers: Mutex::new(std::collections::BTreeSet::new()),
            timer_wake: Arc::new(Notify::new()),
            timers_started: AtomicBool::new(false),
            stopping: watch::channel(false).0,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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

    /// Executions currently being driven by this process.
    pub fn active_drivers(&self) -> usize {
        self.drivers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Streams read by drivers since this orchestrator started (recovery progress).
    pub fn streams_loaded(&self) -> u64 {
        self.streams_loaded.load(Ordering::Relaxed)
    }

    /// Validates and stores a definition.
    pub async fn put_definition(
        &self,
        name: SagaName,
        json: &[u8],
    ) -> Result<(StoredDefinition, DefinitionPut), OrchestratorError> {
        let uploaded = self.store.plugins().await?;
        let definition = parse_definition(json, &self.config.definition_limits, |r| {
            uploaded.iter().any(|p| p.name == r.name && p.version == r.version)
        })?;
        let (stored, put) = self.store.put_definition(name, definition, self.now_ms()).await?;
        self.remember_definition(&stored);
        Ok((stored, put))
    }

    fn remember_definition(&self, stored: &StoredDefinition) -> Arc<SagaDefinition> {
        let d = Arc::new(stored.definition.clone());
        let key = (stored.name.clone(), stored.version);
        self.definitions.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert_with(|| d.clone());
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let entry = latest.entry(stored.name.clone()).or_insert_with(|| (stored.version, d.clone()));
        if entry.0 < stored.version {
            *entry = (stored.version, d.clone());
        }
        d
    }

    /// The latest version of a saga: from memory, unless another process may have changed it.
    async fn latest_definition(&self, saga: &SagaName) -> Result<(u64, Arc<SagaDefinition>), OrchestratorError> {
        if !self.config.shared_store
            && let Some(found) = self.latest.lock().unwrap_or_else(|p| p.into_inner()).get(saga)
        {
            return Ok(found.clone());
        }
        let stored =
            self.store.definition(saga, None).await?.ok_or_else(|| OrchestratorError::UnknownSaga(saga.clone()))?;
        let d = self.remember_definition(&stored);
        Ok((stored.version, d))
    }

    /// A definition version, from memory or the store.
    pub async fn definition(&self, saga: &SagaName, version: u64) -> Result<Arc<SagaDefinition>, OrchestratorError> {
        let key = (saga.clone(), version);
        if let Some(d) = self.definitions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.clone());
        }
        let stored = self
            .store
            .definition(saga, Some(version))
            .await?
            .ok_or_else(|| OrchestratorError::UnknownSaga(saga.clone()))?;
        let d = Arc::new(stored.definition);
        self.definitions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, d.clone());
        Ok(d)
    }

    /// Starts an execution of the latest version of `saga`, or returns the one an earlier
    /// trigger with the same idempotency key started.
    pub async fn start(
        &self,
        saga: &SagaName,
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<Started, OrchestratorError> {
        Ok(self.start_inner(saga, input, idempotency_key, None).await?.0)
    }

    /// Like [`start`](Self::start), then waits up to `wait` for the execution to end. Its
    /// final state comes straight from its driver: nothing is read back from the store.
    pub async fn start_and_wait(
        &self,
        saga: &SagaName,
        input: Value,
        idempotency_key: Option<String>,
        wait: Duration,
    ) -> Result<(Started, Option<Execution>), OrchestratorError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (started, registered) = self.start_inner(saga, input, idempotency_key, Some(tx)).await?;
        if !registered {
            let ended = self.wait_terminal(started.id, wait).await?;
            return Ok((started, ended));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Some(exec))) => Ok((started, Some(Arc::unwrap_or_clone(exec)))),
            Ok(_) => {
                let exec = self.execution(started.id).await?;
                Ok((started, Some(exec)))
            }
            Err(_) => {
                self.forget_closed_waiters(started.id);
                Ok((started, None))
            }
        }
    }

    /// Starts an execution; `waiter` is registered before its driver starts (`true` returned
    /// when it was: the execution is new).
    async fn start_inner(
        &self,
        saga: &SagaName,
        input: Value,
        idempotency_key: Option<String>,
        waiter: Option<Waiter>,
    ) -> Result<(Started, bool), OrchestratorError> {
        let (version, definition) = self.latest_definition(saga).await?;
        if self.active_drivers() >= self.config.max_active_executions {
            return Err(OrchestratorError::Busy(self.config.max_active_executions));
        }
        let now = self.now_ms();
        let id = ExecutionId::new();
        let first = EventRecord {
            seq: 1,
            at: now,
            event: Event::ExecutionStarted {
                saga: saga.clone(),
                definition_version: version,
                input,
                deadline_unix_ms: definition.deadline_ms.map(|d| now + d),
                idempotency_key: idempotency_key.clone(),
            },
        };
        // The first step starts in the same write as the execution: one flush fewer on every
        // execution's path. Its driver then runs that attempt without planning it again.
        let mut exec = Execution::fold(id, std::slice::from_ref(&first))?;
        let driver::Plan { batch, next, .. } = driver::plan(&mut exec, &definition, None, now, InFlight::Crashed)?;
        let first_action = matches!(next, Next::Invoke(_)).then_some(next);
        let mut records = vec![first];
        records.extend(batch);
        let idem = idempotency_key.map(|key| IdempotencyKey { saga: saga.clone(), key });
        match self.store.create_with(id, saga.clone(), records, idem).await? {
            Created::New => {
                tracing::info!(execution_id = %id, %saga, "execution started");
                crate::metrics::metrics()
                    .executions_started
                    .get_or_create(&crate::metrics::SagaLabels { saga: saga.to_string() })
                    .inc();
                self.publish(&exec, true);
                let registered = waiter.is_some();
                if let Some(w) = waiter {
                    self.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().push(w);
                }
                // The driver starts from the state just written, without reading it back.
                self.ensure_driver_from(id, Some((exec, first_action)));
                Ok((Started { id, status: ExecutionStatus::Running, created: true }, registered))
            }
            Created::Existing(existing) => {
                let status = self.store.summary(existing).await?.map_or(ExecutionStatus::Running, |s| s.status);
                Ok((Started { id: existing, status, created: false }, false))
            }
        }
    }

    /// Loads and folds an execution.
    pub async fn execution(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        let records = self.events(id, 0).await?;
        Ok(Execution::fold(id, &records)?)
    }

    /// An execution's events with `seq > after`.
    pub async fn events(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, OrchestratorError> {
        self.store.read(id, after).await.map_err(|e| match e {
            StoreError::NotFound(id) => OrchestratorError::UnknownExecution(id),
            e => e.into(),
        })
    }

    /// Stop going forward and compensate what completed.
    pub async fn cancel(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        self.command(id, cancel).await
    }

    /// Retry the stuck compensation of a failed execution.
    pub async fn resume(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        self.command(id, resume).await
    }

    /// Appends what `decide_command` answers, re-reading and deciding again on a version
    /// conflict (the driver may append between our read and our write).
    async fn command(
        &self,
        id: ExecutionId,
        decide_command: fn(&Execution) -> Result<Vec<Event>, CommandError>,
    ) -> Result<Execution, OrchestratorError> {
        loop {
            let mut exec = self.execution(id).await?;
            let events = decide_command(&exec)?;
            let before = exec.status;
            if events.is_empty() {
                return Ok(exec);
            }
            let records = exec.next_records(events, self.now_ms());
            match self.store.append(id, exec.version, records.clone()).await {
                Ok(()) => {
                    for r in &records {
                        exec.apply(r)?;
                    }
                    self.publish(&exec, exec.status != before);
                    self.ensure_driver(id);
                    return Ok(exec);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the execution is terminal, at most `wait`. `None` if it is not by then.
    pub async fn wait_terminal(&self, id: ExecutionId, wait: Duration) -> Result<Option<Execution>, OrchestratorError> {
        // Register before reading, so that an end recorded in between is not missed.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().push(tx);
        let exec = self.execution(id).await?;
        if exec.status.is_terminal() {
            return Ok(Some(exec));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Some(exec))) => Ok(Some(Arc::unwrap_or_clone(exec))),
            Ok(_) => Ok(Some(self.execution(id).await?)),
            Err(_) => {
                self.forget_closed_waiters(id);
                Ok(None)
            }
        }
    }

    /// Drops waiters of `id` that gave up (their receiver is gone).
    fn forget_closed_waiters(&self, id: ExecutionId) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = waiters.get_mut(&id) {
            list.retain(|w| !w.is_closed());
            if list.is_empty() {
                waiters.remove(&id);
            }
        }
    }

    /// Resumes every unfinished execution found in the store (after a start or a crash).
    pub async fn recover(&self) -> Result<usize, OrchestratorError> {
        let ids = self.store.unfinished().await?;
        for id in &ids {
            self.ensure_driver(*id);
        }
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "resuming unfinished executions");
        }
        Ok(ids.len())
    }

    /// Stops driving: sleeping drivers exit now, running attempts finish first. Waits up to
    /// `grace` for them. Unfinished executions resume at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.send_replace(true);
        let until = tokio::time::Instant::now() + grace;
        while self.active_drivers() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells subscribers that `exec` moved, and hands its final state to its waiters when it ended.
    fn publish(&self, exec: &Execution, status_changed: bool) {
        let (id, status) = (exec.id, exec.status);
        let _ = self.notices.send(Notice { id, version: exec.version, status, status_changed });
        if status.is_terminal() {
            let woken = self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            if let Some(woken) = woken {
                let exec = Arc::new(exec.clone());
                for w in woken {
                    let _ = w.send(Some(exec.clone()));
                }
            }
        }
    }

    /// Makes sure a driver runs for `id`, waking it if it exists: exactly one driver per
    /// execution in this process.
    pub(crate) fn ensure_driver(&self, id: ExecutionId) {
        self.ensure_driver_from(id, None);
    }

    /// [`ensure_driver`](Self::ensure_driver); a new driver starts from `known` (the stream's
    /// current fold, and what to do first if that is already decided and recorded) instead of
    /// reading the stream.
    fn ensure_driver_from(&self, id: ExecutionId, known: Option<(Execution, Option<Next>)>) {
        if *self.stopping.borrow() {
            return;
        }
        self.start_timers();
        let mut drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = drivers.get(&id) {
            slot.dirty.store(true, Ordering::SeqCst);
            slot.wake.notify_one();
            return;
        }
        let slot = Arc::new(DriverSlot { wake: Notify::new(), dirty: AtomicBool::new(false) });
        drivers.insert(id, slot.clone());
        drop(drivers);
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(driver::drive(me, id, slot, known));
        }
    }

    /// Parks `id` until `at`: the timer task restarts its driver then.
    fn park(&self, id: ExecutionId, at: u64) {
        let earliest = {
            let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            timers.insert((at, id));
            timers.first().is_some_and(|first| first.1 == id && first.0 == at)
        };
        if earliest {
            self.timer_wake.notify_one();
        }
    }

    /// Executions parked on a timer.
    pub fn parked(&self) -> usize {
        self.timers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Removes the driver of `id` unless someone appended meanwhile. `false`: keep driving.
    fn retire(&self, id: ExecutionId, slot: &DriverSlot) -> bool {
        let mut drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
        if slot.dirty.swap(false, Ordering::SeqCst) {
            return false;
        }
        drivers.remove(&id);
        true
    }
}

impl Orchestrator {
    /// Starts the timer task once (on the first driver, so that it runs inside the runtime).
    fn start_timers(&self) {
        run_once(&self.timers_started, || {
            tokio::spawn(run_timers(self.me.clone(), self.timer_wake.clone()));
        });
    }
}

fn run_once(flag: &AtomicBool, f: impl FnOnce()) {
    if !flag.swap(true, Ordering::SeqCst) {
        f();
    }
}

/// Restarts parked executions when their time comes.
async fn run_timers(me: Weak<Orchestrator>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        let sleep_for = {
            let Some(orch) = me.upgrade() else { return };
            if *orch.stopping.borrow() {
                return;
            }
            let now = orch.now_ms();
            let due: Vec<ExecutionId> = {
                let mut timers = orch.timers.lock().unwrap_or_else(|p| p.into_inner());
                let mut due = Vec::new();
                while let Some(&(at, id)) = timers.first() {
                    if at > now {
                        break;
                    }
                    timers.pop_first();
                    due.push(id);
                }
                due
            };
            for id in due {
                orch.ensure_driver(id);
            }
            let next = orch.timers.lock().unwrap_or_else(|p| p.into_inner()).first().map(|t| t.0);
            next.map(|at| Duration::from_millis(at.saturating_sub(orch.now_ms())))
        };
        match sleep_for {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}
