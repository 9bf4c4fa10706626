//! One execution's driver: a loop of plan → append → act that ends when the execution is
//! terminal.
//!
//! *Plan* folds, in memory, the outcome of the last attempt and every decision that follows
//! up to the next plugin call, sleep or end; *append* makes all of it durable in one write
//! carrying the expected version; *act* calls the plugin or sleeps. So a step's outcome and
//! the next step's start are one append (the result is durable before the next step runs),
//! and on a version conflict the driver re-reads the stream and plans again: an outcome is
//! recorded only if its attempt is still the one in flight.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::registry::DriverSlot;
use super::{Orchestrator, OrchestratorError};
use crate::domain::decide::{InFlight, attempt_deadline, decide_with, open_wait, step_input};
use crate::domain::{
    Event, EventRecord, Execution, ExecutionId, FailureKind, HttpCall, Invocation, Next, SagaDefinition, Side,
    StepFailure, StepName, TopicEvent, record_outcome,
};
use crate::metrics::{AttemptLabels, FailureLabels, FinishedLabels, HttpLabels, metrics, observe};
use crate::runtime::{Call, HttpAccess, StateScope, StepConfig};
use crate::store::{Claim, Effects, StoreError};

/// Wait before retrying after the store failed (disk full, ...): the execution stays put.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// How long before an execution started an event with its key may have been recorded and
/// still resume its wait (docs/topics.md).
pub const EARLY_WINDOW_MS: u64 = 10 * 60 * 1_000;
/// Most recent events of a key looked at for that.
const EARLY_EVENTS: usize = 64;

pub(super) async fn drive(
    orch: Arc<Orchestrator>,
    id: ExecutionId,
    slot: Arc<DriverSlot>,
    known: Option<(Execution, Option<Next>)>,
) {
    // The business key, recorded once the stream is loaded (docs/operations.md, "Traces").
    let span = tracing::info_span!("execution", execution_id = %id, execution.key = tracing::field::Empty);
    async move { Driver { orch, id, slot }.run(known).await }.instrument(span).await
}

struct Driver {
    orch: Arc<Orchestrator>,
    id: ExecutionId,
    slot: Arc<DriverSlot>,
}

/// An attempt's outcome, not yet recorded.
pub(super) struct Outcome {
    inv: Invocation,
    result: Result<Value, StepFailure>,
    /// State the attempt read and wrote, and events it emitted: committed with its completion
    /// event, or not at all.
    effects: Effects,
    /// Outbound requests the attempt made, recorded with its outcome event.
    http: Vec<HttpCall>,
}

/// Applies `events` to the in-memory state and adds them to the batch being planned.
fn stage(
    exec: &mut Execution,
    batch: &mut Vec<EventRecord>,
    events: Vec<Event>,
    now: u64,
) -> Result<(), OrchestratorError> {
    for r in exec.next_records(events, now) {
        exec.apply(&r)?;
        batch.push(r);
    }
    Ok(())
}

/// What to record now and what to do once it is durable.
pub(super) struct Plan {
    pub(super) batch: Vec<EventRecord>,
    pub(super) next: Next,
    /// The outcome was recorded as a completion: its state changes commit with the batch.
    pub(super) completes: bool,
}

/// Everything to record now, and what to do after it is durable. While `stopping`, no new
/// attempt is started: the plan records what is decided up to the next attempt and ends
/// (`Next::Done`); the next start of the host runs that attempt.
pub(super) fn plan(
    exec: &mut Execution,
    def: &SagaDefinition,
    outcome: Option<&Outcome>,
    now: u64,
    in_flight: InFlight,
    stopping: bool,
) -> Result<Plan, OrchestratorError> {
    let mut batch = Vec::new();
    let mut completes = false;
    if let Some(o) = outcome
        && let Some(event) = record_outcome(exec, def, &o.inv, o.result.clone(), now)
    {
        let event = event.with_http(o.http.clone());
        completes = matches!(event, Event::StepCompleted { .. } | Event::CompensationStepCompleted { .. });
        stage(exec, &mut batch, vec![event], now)?;
    }
    loop {
        match decide_with(exec, def, now, in_flight) {
            Next::Record(events) => stage(exec, &mut batch, events, now)?,
            Next::Invoke(_) if stopping => return Ok(Plan { batch, next: Next::Done, completes }),
            Next::Invoke(inv) => {
                stage(exec, &mut batch, vec![inv.started_event()], now)?;
                return Ok(Plan { batch, next: Next::Invoke(inv), completes });
            }
            next => return Ok(Plan { batch, next, completes }),
        }
    }
}

impl Driver {
    /// Drives until the end, starting from `known` if the caller knows the stream's state
    /// (and, with it, the next action already recorded, such as the first step's start).
    async fn run(&mut self, known: Option<(Execution, Option<Next>)>) {
        let mut stopping = self.orch.stopping.subscribe();
        let (mut exec, mut decided) = match known {
            Some((e, next)) => (Some(e), next),
            None => (None, None),
        };
        let mut outcome: Option<Outcome> = None;
        let mut outage_logged = false;
        // A driver the caller did not start from what it just recorded takes the lease first
        // (a store shared by several hosts; others always answer `Mine`).
        if exec.is_none() && !self.claim(&mut stopping).await {
            self.orch.drivers.remove(self.id);
            return;
        }
        // The wait step whose early events were looked up (once per wait, per driver).
        let mut early_checked: Option<StepName> = None;
        // An attempt that ended during the grace period of a stop still has its outcome
        // recorded: the loop goes on until it is, starting nothing new.
        while !*stopping.borrow() || outcome.is_some() {
            let loaded = async {
                let current = match exec.take() {
                    Some(e) => e,
                    None => self.load().await?,
                };
                let def = self.orch.definition(&current.saga, current.definition_version).await?;
                Ok::<_, OrchestratorError>((current, def))
            };
            let (mut current, def) = match loaded.await {
                Ok(v) => {
                    outage_logged = false;
                    v
                }
                Err(e) if e.is_permanent() => {
                    // Set aside (logged once there); nothing to drive any more.
                    if !matches!(e, OrchestratorError::Quarantined { .. }) {
                        self.orch.set_aside(self.id, e.to_string()).await;
                    }
                    break;
                }
                Err(e) => {
                    // Storage unavailable: wait for it, saying so once per outage.
                    if !std::mem::replace(&mut outage_logged, true) {
                        tracing::warn!(error = %e, "cannot load execution; retrying until the store answers");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            if let Some(key) = &current.key {
                tracing::Span::current().record("execution.key", key.as_str());
            }
            let now = self.orch.now_ms();
            let (base, before) = (current.version, current.status);
            let planned = match decided.take() {
                // Already recorded by whoever started this driver: act on it.
                Some(next) => Ok(Plan { batch: Vec::new(), next, completes: false }),
                None => plan(&mut current, &def, outcome.as_ref(), now, self.in_flight(), *stopping.borrow()),
            };
            let Plan { batch, next, completes } = match planned {
                Ok(p) => p,
                // The stream's own events do not fold with the definition: permanent.
                Err(e) => {
                    self.orch.set_aside(self.id, e.to_string()).await;
                    break;
                }
            };
            if !batch.is_empty() {
                let effects = match &outcome {
                    Some(o) if completes => o.effects.clone(),
                    _ => Effects::default(),
                };
                let emitted = effects.events.len();
                let effects = Effects {
                    events: effects.events.into_iter().map(|e| TopicEvent { at: now, ..e }).collect(),
                    ..effects
                };
                match self.orch.store.append_with_state(self.id, base, batch.clone(), effects).await {
                    Ok(()) => {
                        if emitted > 0 {
                            tracing::debug!(events = emitted, "emitted events recorded");
                            self.orch.events_published();
                        }
                        for r in &batch {
                            tracing::debug!(seq = r.seq, event = r.event.type_name(), "recorded");
                        }
                        if current.status.is_terminal() {
                            tracing::info!(status = current.status.as_str(), "execution finished");
                            let labels = FinishedLabels {
                                saga: current.saga.to_string(),
                                status: current.status.as_str().into(),
                            };
                            let m = metrics();
                            m.executions_finished.get_or_create(&labels).inc();
                            let took = Duration::from_millis(current.updated_at.saturating_sub(current.created_at));
                            observe(&m.execution_seconds.get_or_create(&labels), took);
                        }
                        self.orch.publish(&current, current.status != before);
                        outcome = None;
                    }
                    // The stream moved (a cancel, another driver): re-read and plan again,
                    // keeping the outcome to record if its attempt is still in flight.
                    Err(StoreError::Conflict { expected, actual, .. }) => {
                        tracing::debug!(expected, actual, "version conflict; re-reading");
                        continue;
                    }
                    // State the attempt read changed under it: none of its writes count, and
                    // the attempt is recorded as a retryable failure instead of a completion.
                    Err(e @ StoreError::StateConflict { .. }) => {
                        tracing::info!(error = %e, "state conflict; the attempt will be retried");
                        if let Some(o) = outcome.as_mut() {
                            o.result = Err(StepFailure::new(FailureKind::Conflict, e.to_string()));
                            o.effects = Effects::default();
                        }
                        continue;
                    }
                    // A shared store: another host holds the lease now (this one's lapsed).
                    Err(StoreError::NotOwner(_)) => {
                        tracing::info!("another host drives this execution now; letting it go");
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        self.orch.set_aside(self.id, e.to_string()).await;
                        break;
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut outage_logged, true) {
                            tracing::warn!(error = %e, "store failed; retrying until it answers");
                        }
                        tokio::time::sleep(STORE_RETRY).await;
                        continue;
                    }
                }
            }
            // A wait that begins takes the events its key had before the execution started.
            if matches!(next, Next::SleepUntil(_)) {
                match self.early_events(&current, &def, &mut early_checked).await {
                    Some(false) => {}
                    Some(true) => continue,
                    None => {
                        tokio::time::sleep(STORE_RETRY).await;
                        continue;
                    }
                }
            }
            match next {
                Next::Done => {
                    if self.orch.drivers.retire(self.id, &self.slot) {
                        return;
                    }
                }
                Next::SleepUntil(at) if at.saturating_sub(now) > super::PARK_AFTER_MS => {
                    // A long wait holds no task: park on the timer and let go.
                    self.orch.park(self.id, at);
                    if self.orch.drivers.retire(self.id, &self.slot) {
                        return;
                    }
                    // Someone appended meanwhile: keep driving, so it is not parked.
                    self.orch.timers.remove(self.id);
                }
                Next::SleepUntil(at) => {
                    tokio::select! {
                        _ = self.orch.clock.sleep_until(at) => exec = Some(current),
                        _ = self.slot.wake.notified() => {}
                        _ = stopping.changed() => {}
                    }
                }
                Next::Invoke(inv) => {
                    let (result, http) = self.invoke(&current, &def, &inv).await;
                    let (result, effects) = match result {
                        Ok((value, effects)) => (Ok(value), effects),
                        Err(f) => (Err(f), Effects::default()),
                    };
                    outcome = Some(Outcome { inv, result, effects, http });
                    exec = Some(current);
                }
                Next::Record(_) => unreachable!("plan records every decision"),
            }
        }
        self.orch.drivers.remove(self.id);
    }

    /// Takes the execution's lease; `false` when another host holds it (which is then woken,
    /// since whoever started this driver recorded something it must see) or the host stops.
    async fn claim(&self, stopping: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut outage_logged = false;
        while !*stopping.borrow() {
            match self.orch.store.claim(self.id).await {
                Ok(Claim::Mine) => return true,
                Ok(Claim::Theirs(host)) => {
                    tracing::debug!(%host, "another host drives this execution; waking it");
                    if let Err(e) = self.orch.store.wake(host, self.id).await {
                        tracing::warn!(%host, error = %e, "waking the host that drives this execution failed");
                    }
                    return false;
                }
                // Unknown here, or this host's own lease lapsed: nothing to drive.
                Err(StoreError::NotFound(_) | StoreError::NotOwner(_)) => return false,
                Err(e) if e.is_permanent() => return true, // the driver's load reports it
                Err(e) => {
                    if !std::mem::replace(&mut outage_logged, true) {
                        tracing::warn!(error = %e, "cannot take the execution's lease; retrying until the store answers");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                        _ = stopping.changed() => {}
                    }
                }
            }
        }
        false
    }

    /// Delivers, as signals, the events with the execution's business key on the topics of the
    /// wait it is in that were recorded before the execution started (up to [`EARLY_WINDOW_MS`]
    /// before): no dispatch could deliver them, since the execution did not exist yet
    /// (docs/topics.md, "Waits resumed by events"). `Some(true)` when one was recorded, `None`
    /// when the store failed (try again later: the wait is not marked as looked up).
    async fn early_events(
        &self,
        exec: &Execution,
        def: &SagaDefinition,
        checked: &mut Option<StepName>,
    ) -> Option<bool> {
        let (Some(key), Some((sdef, wait))) = (&exec.key, open_wait(exec, def)) else { return Some(false) };
        if checked.as_ref() == Some(&sdef.name) {
            return Some(false);
        }
        let events = match self.orch.store.topic_events_by_key(key, EARLY_EVENTS).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "reading the events of the execution's key failed; trying again");
                return None;
            }
        };
        let since = exec.created_at.saturating_sub(EARLY_WINDOW_MS);
        let mut recorded = false;
        for (_, event) in events.into_iter().filter(|(_, e)| e.at >= since && wait.topics.contains(&e.topic)) {
            if exec.signals.iter().any(|s| s.id.as_deref() == Some(event.id.as_str())) {
                continue;
            }
            let event_id = event.id.clone();
            match self.orch.signal(self.id, event.topic, event.payload, Some(event.id)).await {
                Ok(_) => {
                    tracing::info!(event = %event_id, "an event recorded before the execution started resumes its wait");
                    recorded = true;
                }
                // Refused for what it is (too many signals, the execution ended): final.
                Err(e) if e.is_permanent() => {
                    tracing::debug!(event = %event_id, error = %e, "early event not delivered")
                }
                Err(e) => {
                    tracing::warn!(event = %event_id, error = %e, "delivering an early event failed; trying again");
                    return None;
                }
            }
        }
        *checked = Some(sdef.name.clone());
        Some(recorded)
    }

    fn in_flight(&self) -> InFlight {
        if self.orch.config.shared_store { InFlight::Leased } else { InFlight::Crashed }
    }

    async fn load(&self) -> Result<Execution, OrchestratorError> {
        self.slot.dirty.store(false, std::sync::atomic::Ordering::SeqCst);
        let _permit = self.orch.loads.acquire().await.expect("semaphore never closed");
        let exec = self.orch.execution(self.id).await;
        self.orch.streams_loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        exec
    }

    /// Runs one attempt (its start is already durable) and returns its outcome and the
    /// outbound requests it made.
    async fn invoke(
        &self,
        exec: &Execution,
        def: &SagaDefinition,
        inv: &Invocation,
    ) -> (Result<(Value, Effects), StepFailure>, Vec<HttpCall>) {
        let sdef = &def.steps[inv.index];
        let plugin = match inv.side {
            Side::Execute => sdef.plugin.as_ref().expect("decide invokes only plugin steps"),
            Side::Compensate => sdef.compensation.as_ref().expect("decide only compensates steps with a compensation"),
        };
        let _permit = self.orch.attempts.acquire().await.expect("semaphore never closed");
        let now = self.orch.now_ms();
        let deadline = attempt_deadline(exec, sdef, inv.side, now);
        let call = Call {
            side: inv.side,
            execution_id: self.id.to_string(),
            saga: exec.saga.to_string(),
            step: inv.step.to_string(),
            attempt: inv.attempt,
            idempotency_key: inv.idempotency_key(exec),
            execution_key: exec.key.clone(),
            deadline_unix_ms: deadline,
            timeout: Duration::from_millis(deadline.saturating_sub(now)),
            input: step_input(exec, def, inv).to_string(),
            state: Some(StateScope { plugin: plugin.name.clone(), store: self.orch.store.clone() }),
            http: HttpAccess::default(),
            config: StepConfig { values: sdef.config.clone(), secrets: Vec::new() },
        };
        let span = tracing::info_span!("attempt", step = %inv.step, side = inv.side.as_str(), attempt = inv.attempt, plugin = %plugin);
        let call = Call {
            http: HttpAccess {
                grants: sdef.http_grants(inv.side == Side::Compensate).to_vec(),
                traceparent: Some(super::trace::traceparent(
                    &span,
                    &call.execution_id,
                    &call.idempotency_key,
                    inv.attempt,
                )),
            },
            ..call
        };
        let started = std::time::Instant::now();
        async {
            let secrets = self.orch.secrets.resolve(&sdef.secrets).await;
            let plugin_and_secrets = match secrets {
                Ok(secrets) => self.orch.plugins.get(plugin).await.map(|pre| (pre, secrets)).map_err(|e| e.to_string()),
                // The operator can store (or fix) the secret while the policy retries.
                Err(e) => Err(e.to_string()),
            };
            let (outcome, http) = match plugin_and_secrets {
                Ok((pre, secrets)) => {
                    let call = Call { config: StepConfig { secrets, ..call.config }, ..call };
                    let attempted = self.orch.plugins.runtime().invoke_recorded(&pre, call).await;
                    (attempted.result, attempted.http)
                }
                Err(e) => (Err(StepFailure::new(FailureKind::Retryable, e)), Vec::new()),
            };
            let outcome = outcome.and_then(|done| {
                // A result the host could not read back from its own events is refused.
                crate::domain::json::check(done.output.as_bytes())
                    .map_err(|e| StepFailure::new(FailureKind::Limit, format!("plugin result refused: {e}")))?;
                let value = serde_json::from_str(&done.output).map_err(|e| {
                    StepFailure::new(
                        FailureKind::Trap,
                        format!("plugin broke the contract: its result is not JSON ({e})"),
                    )
                })?;
                Ok((value, done.effects))
            });
            let (saga, side) = (exec.saga.to_string(), inv.side.as_str().to_string());
            let m = metrics();
            m.step_attempts.get_or_create(&AttemptLabels { saga: saga.clone(), side: side.clone() }).inc();
            observe(
                &m.step_seconds.get_or_create(&AttemptLabels { saga: saga.clone(), side: side.clone() }),
                started.elapsed(),
            );
            match &outcome {
                Ok(_) => tracing::debug!("attempt succeeded"),
                Err(f) => {
                    tracing::warn!(kind = f.kind.as_str(), message = %f.message, "attempt failed");
                    m.step_failures.get_or_create(&FailureLabels { saga, side, kind: f.kind.as_str().into() }).inc();
                }
            }
            for c in &http {
                let status = c.status.map_or_else(|| "error".to_string(), |s| s.to_string());
                m.http_requests.get_or_create(&HttpLabels { host: c.host.clone(), status }).inc();
            }
            (outcome, http)
        }
        .instrument(span)
        .await
    }
}
