//! One execution's driver: a loop of load → decide → (record | invoke | sleep) that ends
//! when the execution is terminal. Every append carries the expected version; on a conflict
//! the driver re-reads the stream and decides again.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{DriverSlot, Orchestrator, OrchestratorError};
use crate::domain::decide::{attempt_deadline, step_input};
use crate::domain::{
    Event, Execution, ExecutionId, FailureKind, Invocation, Next, SagaDefinition, Side,
    StepFailure, decide, record_outcome,
};
use crate::runtime::Call;
use crate::store::StoreError;

/// Wait before retrying after the store failed (disk full, ...): the execution stays put.
const STORE_RETRY: Duration = Duration::from_millis(500);

pub(super) async fn drive(orch: Arc<Orchestrator>, id: ExecutionId, slot: Arc<DriverSlot>) {
    let span = tracing::info_span!("execution", execution_id = %id);
    async move {
        let mut driver = Driver { orch, id, slot };
        driver.run().await;
    }
    .instrument(span)
    .await
}

struct Driver {
    orch: Arc<Orchestrator>,
    id: ExecutionId,
    slot: Arc<DriverSlot>,
}

/// Whether an append took: `false` means the stream moved and was re-read.
type Appended = Result<bool, OrchestratorError>;

impl Driver {
    async fn run(&mut self) {
        let mut stopping = self.orch.stopping.subscribe();
        let mut exec = None;
        loop {
            if *stopping.borrow() {
                break;
            }
            let step = async {
                let current = match exec.take() {
                    Some(e) => e,
                    None => self.load().await?,
                };
                let def = self
                    .orch
                    .definition(&current.saga, current.definition_version)
                    .await?;
                Ok::<_, OrchestratorError>((current, def))
            };
            let (mut current, def) = match step.await {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "cannot load execution; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            let now = self.orch.now_ms();
            let result = match decide(&current, &def, now) {
                Next::Done => {
                    if self.orch.retire(self.id, &self.slot) {
                        return;
                    }
                    Ok(false)
                }
                Next::Record(events) => self.append(&mut current, events).await,
                Next::SleepUntil(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => Ok(true),
                        _ = self.slot.wake.notified() => Ok(false),
                        _ = stopping.changed() => Ok(true),
                    }
                }
                Next::Invoke(inv) => self.attempt(&mut current, &def, inv).await,
            };
            match result {
                // Keep the folded state in memory; re-read only when the stream moved under us.
                Ok(true) => exec = Some(current),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "store failed; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
        self.orch
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }

    async fn load(&self) -> Result<Execution, OrchestratorError> {
        self.slot
            .dirty
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let _permit = self
            .orch
            .loads
            .acquire()
            .await
            .expect("semaphore never closed");
        self.orch.execution(self.id).await
    }

    async fn append(&self, exec: &mut Execution, events: Vec<Event>) -> Appended {
        let records = exec.next_records(events, self.orch.now_ms());
        match self
            .orch
            .store
            .append(self.id, exec.version, records.clone())
            .await
        {
            Ok(()) => {
                for r in &records {
                    exec.apply(r)?;
                    tracing::debug!(seq = r.seq, event = r.event.type_name(), "recorded");
                }
                if exec.status.is_terminal() {
                    tracing::info!(status = exec.status.as_str(), "execution finished");
                }
                self.orch.publish(self.id, exec.version, exec.status);
                Ok(true)
            }
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                tracing::debug!(expected, actual, "version conflict; re-reading");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records the attempt's start, runs the plugin, records its outcome.
    async fn attempt(
        &self,
        exec: &mut Execution,
        def: &SagaDefinition,
        inv: Invocation,
    ) -> Appended {
        let sdef = &def.steps[inv.index];
        let plugin = match inv.side {
            Side::Execute => &sdef.plugin,
            Side::Compensate => sdef
                .compensation
                .as_ref()
                .expect("decide only compensates steps with a compensation"),
        };
        // Take the instance slot first, so that a recorded start is followed by a run at once.
        let _permit = self
            .orch
            .attempts
            .acquire()
            .await
            .expect("semaphore never closed");
        if !self.append(exec, vec![inv.started_event()]).await? {
            return Ok(false);
        }
        let now = self.orch.now_ms();
        let deadline = attempt_deadline(exec, sdef, inv.side, now);
        let call = Call {
            side: inv.side,
            execution_id: self.id.to_string(),
            saga: exec.saga.to_string(),
            step: inv.step.to_string(),
            attempt: inv.attempt,
            idempotency_key: inv.idempotency_key(exec),
            deadline_unix_ms: deadline,
            timeout: Duration::from_millis(deadline.saturating_sub(now)),
            input: step_input(exec, def, &inv).to_string(),
        };
        let span = tracing::info_span!("attempt", step = %inv.step, side = inv.side.as_str(), attempt = inv.attempt, plugin = %plugin);
        let outcome = async {
            let outcome = match self.orch.plugins.get(plugin).await {
                Ok(pre) => self.orch.plugins.runtime().invoke(&pre, call).await,
                Err(e) => Err(StepFailure::new(FailureKind::Retryable, e.to_string())),
            };
            let outcome = outcome.and_then(|text| {
                serde_json::from_str(&text).map_err(|e| {
                    StepFailure::new(
                        FailureKind::Trap,
                        format!("plugin broke the contract: its result is not JSON ({e})"),
                    )
                })
            });
            match &outcome {
                Ok(_) => tracing::info!("attempt succeeded"),
                Err(f) => {
                    tracing::warn!(kind = f.kind.as_str(), message = %f.message, "attempt failed")
                }
            }
            outcome
        }
        .instrument(span)
        .await;
        drop(_permit);
        // Record the outcome; if the stream moved meanwhile (a cancel), re-read and record it
        // only if this attempt is still the one in flight.
        loop {
            let Some(event) = record_outcome(exec, def, &inv, outcome.clone(), self.orch.now_ms())
            else {
                return Ok(true);
            };
            match self.append(exec, vec![event]).await {
                Ok(true) => return Ok(true),
                Ok(false) => *exec = self.load().await?,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record outcome; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }
}
