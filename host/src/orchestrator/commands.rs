//! What clients and operators ask of executions: start one (and wait for its end), cancel
//! it, resume its compensation. A start writes a new stream; a command writes with the
//! version it read and decides again on a conflict, since the driver may append at any time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::waiters::Waiter;
use super::{Orchestrator, OrchestratorError, Started, driver};
use crate::domain::decide::{CommandError, InFlight, cancel, resume};
use crate::domain::{Event, EventRecord, Execution, ExecutionId, ExecutionStatus, Next, SagaName};
use crate::store::{Created, IdempotencyKey, StoreError};

/// What a trigger may carry besides its input (docs/api.md).
#[derive(Clone, Debug, Default)]
pub struct TriggerKeys {
    /// `Idempotency-Key`: the same key with the same request for the same saga returns the
    /// execution the first trigger started.
    pub idempotency_key: Option<String>,
    /// `Execution-Key`: the business key the execution carries, to find it by.
    pub key: Option<String>,
}

impl Orchestrator {
    /// Starts an execution of the latest version of `saga`, or returns the one an earlier
    /// trigger with the same idempotency key started.
    pub async fn start(
        &self,
        saga: &SagaName,
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<Started, OrchestratorError> {
        self.start_keyed(saga, input, TriggerKeys { idempotency_key, key: None }).await
    }

    /// [`start`](Self::start) with a business key too.
    pub async fn start_keyed(
        &self,
        saga: &SagaName,
        input: Value,
        keys: TriggerKeys,
    ) -> Result<Started, OrchestratorError> {
        Ok(self.start_inner(saga, input, keys, None).await?.0)
    }

    /// Like [`start`](Self::start), then waits up to `wait` for the execution to end. Its
    /// final state comes straight from its driver: nothing is read back from the store.
    pub async fn start_and_wait(
        &self,
        saga: &SagaName,
        input: Value,
        keys: TriggerKeys,
        wait: Duration,
    ) -> Result<(Started, Option<Execution>), OrchestratorError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (started, registered) = self.start_inner(saga, input, keys, Some(tx)).await?;
        let ended = if registered {
            self.await_end(started.id, rx, wait).await?
        } else {
            self.wait_terminal(started.id, wait).await?
        };
        Ok((started, ended))
    }

    /// Starts an execution; `waiter` is registered before its driver starts (`true` returned
    /// when it was: the execution is new).
    async fn start_inner(
        &self,
        saga: &SagaName,
        input: Value,
        keys: TriggerKeys,
        waiter: Option<Waiter>,
    ) -> Result<(Started, bool), OrchestratorError> {
        let (version, definition) = self.latest_definition(saga).await?;
        let TriggerKeys { idempotency_key, key } = keys;
        // The key remembers which request it came with: its input (keys sorted), and its
        // business key when it has one.
        let idem = idempotency_key.clone().map(|k| {
            let mut request = Sha256::new();
            request.update(serde_json::to_vec(&input).unwrap_or_default());
            if let Some(business) = &key {
                request.update([0]);
                request.update(business.as_bytes());
            }
            IdempotencyKey { saga: saga.clone(), key: k, fingerprint: request.finalize().into() }
        });
        if self.active_executions() >= self.config.max_active_executions {
            // A retried trigger gets the execution it already made, busy or not.
            if let Some(key) = &idem
                && let Some((existing, fingerprint)) = self.store.idempotency(key).await?
            {
                if fingerprint.is_some_and(|f| f != key.fingerprint) {
                    return Err(OrchestratorError::IdempotencyKeyReused(existing));
                }
                let status = self.store.summary(existing).await?.map_or(ExecutionStatus::Running, |s| s.status);
                return Ok((Started { id: existing, status, created: false }, false));
            }
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
                idempotency_key,
                key,
            },
        };
        // The first step starts in the same write as the execution: one flush fewer on every
        // execution's path. Its driver then runs that attempt without planning it again.
        let mut exec = Execution::fold(id, std::slice::from_ref(&first))?;
        let driver::Plan { batch, next, .. } =
            driver::plan(&mut exec, &definition, None, now, InFlight::Crashed, false)?;
        let first_action = matches!(next, Next::Invoke(_)).then_some(next);
        let mut records = vec![first];
        records.extend(batch);
        let saga = saga.clone();
        // From the durable write on, nothing may depend on the caller staying: a client that
        // goes away mid-request must not leave a stored execution without its driver.
        self.detached(move |me| async move {
            match me.store.create_with(id, saga.clone(), records, idem).await? {
                Created::New => {
                    tracing::info!(execution_id = %id, %saga, "execution started");
                    crate::metrics::metrics()
                        .executions_started
                        .get_or_create(&crate::metrics::SagaLabels { saga: saga.to_string() })
                        .inc();
                    me.publish(&exec, true);
                    let registered = waiter.is_some();
                    if let Some(w) = waiter {
                        me.waiters.register(id, w);
                    }
                    // The driver starts from the state just written, without reading it back.
                    me.ensure_driver_from(id, Some((exec, first_action)));
                    Ok((Started { id, status: ExecutionStatus::Running, created: true }, registered))
                }
                Created::Existing(existing) => {
                    let status = me.store.summary(existing).await?.map_or(ExecutionStatus::Running, |s| s.status);
                    Ok((Started { id: existing, status, created: false }, false))
                }
                Created::KeyReused(first) => Err(OrchestratorError::IdempotencyKeyReused(first)),
            }
        })
        .await
    }

    /// Runs `work` in a task of its own and waits for it: if the caller's future is dropped
    /// (its client went away), the work still finishes, so that what it wrote durably is
    /// always followed by what must come after (a driver, a cache update).
    pub(super) async fn detached<T, Fut>(
        &self,
        work: impl FnOnce(Arc<Orchestrator>) -> Fut,
    ) -> Result<T, OrchestratorError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, OrchestratorError>> + Send + 'static,
    {
        let me = self.me.upgrade().expect("the orchestrator is alive while it is called");
        match tokio::spawn(work(me)).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(StoreError::Unavailable("the host is stopping".into()).into()),
            },
        }
    }

    /// Stop going forward and compensate what completed.
    pub async fn cancel(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        self.detached(move |me| async move { me.command(id, cancel).await }).await
    }

    /// Retry the stuck compensation of a failed execution.
    pub async fn resume(&self, id: ExecutionId) -> Result<Execution, OrchestratorError> {
        self.detached(move |me| async move { me.command(id, resume).await }).await
    }

    /// Sends a signal to an execution (docs/api.md, "Signals"): recorded while it runs, taken
    /// by a wait step on `topic` now or later. A repeated `signal_id` records nothing.
    pub async fn signal(
        &self,
        id: ExecutionId,
        topic: String,
        payload: Value,
        signal_id: Option<String>,
    ) -> Result<Execution, OrchestratorError> {
        self.detached(move |me| async move {
            let exec = me.execution(id).await?;
            let def = me.definition(&exec.saga, exec.definition_version).await?;
            me.command(id, |exec| crate::domain::decide::signal(exec, &def, &topic, payload.clone(), signal_id.clone()))
                .await
        })
        .await
    }

    /// Appends what `decide_command` answers, re-reading and deciding again on a version
    /// conflict (the driver may append between our read and our write).
    async fn command(
        &self,
        id: ExecutionId,
        decide_command: impl Fn(&Execution) -> Result<Vec<Event>, CommandError>,
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
}
