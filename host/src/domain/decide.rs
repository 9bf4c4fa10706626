//! Every business rule of a saga: given an execution's state, its definition and the time,
//! what happens next. Pure: no IO, no clock of its own.

use serde_json::{Map, Value, json};

use super::definition::{OnFailure, SagaDefinition, StepDefinition, WaitFor};
use super::event::{Event, FailureKind, StepFailure};
use super::ids::StepName;
use super::state::{Execution, Phase};
use super::status::ExecutionStatus;

/// Which side of a step an invocation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The plugin's `execute`.
    Execute,
    /// The compensation plugin's `compensate`.
    Compensate,
}

impl Side {
    /// `execute` or `compensate`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Compensate => "compensate",
        }
    }
}

/// One plugin call to make: which step, which side, which attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Execute or compensate.
    pub side: Side,
    /// Position of the step in the definition.
    pub index: usize,
    /// The step.
    pub step: StepName,
    /// 1-based attempt number.
    pub attempt: u32,
}

impl Invocation {
    /// The event that makes this attempt's start durable before the plugin runs.
    pub fn started_event(&self) -> Event {
        let (step, attempt) = (self.step.clone(), self.attempt);
        match self.side {
            Side::Execute => Event::StepStarted { step, attempt },
            Side::Compensate => Event::CompensationStepStarted { step, attempt },
        }
    }

    /// Stable across attempts and restarts of the same step side.
    pub fn idempotency_key(&self, exec: &Execution) -> String {
        match self.side {
            Side::Execute => format!("{}/{}", exec.id, self.step),
            Side::Compensate => format!("{}/{}/compensate", exec.id, self.step),
        }
    }
}

/// What the host should do next for an execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Append these events (no plugin call involved).
    Record(Vec<Event>),
    /// Record the invocation's start, then call the plugin.
    Invoke(Invocation),
    /// Nothing to do before this time (a backoff or the deadline), unless woken.
    SleepUntil(u64),
    /// Terminal: nothing left for the host to do.
    Done,
}

/// What an attempt that started without a recorded outcome (and that no driver of this
/// process holds) may still be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFlight {
    /// Nothing: the store belongs to this process alone (sled locks its directory), so such an
    /// attempt died with an earlier process. Run it again at once.
    Crashed,
    /// It may still run in another process sharing the store: run it again only once its time
    /// limit (plus a grace) has passed, so two runners do not keep superseding each other.
    Leased,
}

/// Extra wait past an attempt's time limit before a leased attempt is taken over.
pub const LEASE_GRACE_MS: u64 = 1_000;

/// Decides the next action (for a store this process owns alone).
pub fn decide(exec: &Execution, def: &SagaDefinition, now: u64) -> Next {
    decide_with(exec, def, now, InFlight::Crashed)
}

/// Decides the next action, treating attempts in flight as `in_flight` says.
pub fn decide_with(exec: &Execution, def: &SagaDefinition, now: u64, in_flight: InFlight) -> Next {
    match exec.status {
        ExecutionStatus::Completed | ExecutionStatus::Compensated | ExecutionStatus::Failed => Next::Done,
        ExecutionStatus::Running => decide_forward(exec, def, now, in_flight),
        ExecutionStatus::Compensating => decide_compensation(exec, def, now, in_flight),
    }
}

fn decide_forward(exec: &Execution, def: &SagaDefinition, now: u64, in_flight: InFlight) -> Next {
    if exec.cancel_requested {
        return Next::Record(vec![Event::CompensationStarted { reason: "cancelled by request".into() }]);
    }
    // The deadline bounds going forward: once every step is done, nothing is left to bound.
    if exec.deadline_unix_ms.is_some_and(|d| now >= d) && !all_steps_done(exec, def) {
        return Next::Record(vec![
            Event::DeadlineExceeded,
            Event::CompensationStarted { reason: "deadline exceeded".into() },
        ]);
    }
    for (index, sdef) in def.steps.iter().enumerate() {
        let invoke =
            |attempt| Next::Invoke(Invocation { side: Side::Execute, index, step: sdef.name.clone(), attempt });
        let Some(state) = exec.step(&sdef.name) else {
            if sdef.wait_for.is_some() {
                return Next::Record(vec![Event::StepStarted { step: sdef.name.clone(), attempt: 1 }]);
            }
            return invoke(1);
        };
        let a = &state.execute;
        if let (Some(wait), Phase::Running { since, .. }) = (&sdef.wait_for, &a.phase) {
            return decide_wait(exec, sdef, wait, *since, now);
        }
        match a.phase {
            Phase::Completed { .. } => continue,
            Phase::GaveUp if sdef.on_failure == OnFailure::Continue => continue,
            Phase::GaveUp => {
                let why = a.last_error.as_ref().map_or("failed", |e| e.message.as_str());
                return Next::Record(vec![Event::CompensationStarted {
                    reason: format!("step {} failed: {why}", sdef.name),
                }]);
            }
            // Started with no recorded outcome: the host stopped mid-attempt. Run it again.
            Phase::Running { attempt, since } => {
                return take_over(in_flight, since, sdef.timeout_ms, now, || invoke(attempt + 1));
            }
            Phase::Waiting { retry_at } if now >= retry_at => return invoke(a.attempts + 1),
            Phase::Waiting { retry_at } => {
                let wake = exec.deadline_unix_ms.map_or(retry_at, |d| d.min(retry_at));
                return Next::SleepUntil(wake);
            }
        }
    }
    Next::Record(vec![Event::ExecutionCompleted])
}

/// Whether every step completed, or gave up with `on_failure: continue`.
fn all_steps_done(exec: &Execution, def: &SagaDefinition) -> bool {
    def.steps.iter().all(|sdef| {
        exec.step(&sdef.name).is_some_and(|s| match s.execute.phase {
            Phase::Completed { .. } => true,
            Phase::GaveUp => sdef.on_failure == OnFailure::Continue,
            _ => false,
        })
    })
}

/// The wait step the execution is in, if it is in one: started, not ended, while running.
pub fn open_wait<'a>(exec: &Execution, def: &'a SagaDefinition) -> Option<(&'a StepDefinition, &'a WaitFor)> {
    if exec.status != ExecutionStatus::Running {
        return None;
    }
    def.steps.iter().find_map(|sdef| {
        let wait = sdef.wait_for.as_ref()?;
        let state = exec.step(&sdef.name)?;
        matches!(state.execute.phase, Phase::Running { .. }).then_some((sdef, wait))
    })
}

/// A wait step that has started: a pending signal on its topics ends it (completed, or failed
/// when the topic is in `fail_on`); past its timeout it fails; otherwise sleep until then (or
/// the deadline), unless a signal wakes the execution first.
fn decide_wait(exec: &Execution, sdef: &StepDefinition, wait: &WaitFor, since: u64, now: u64) -> Next {
    let step = sdef.name.clone();
    if let Some(signal) = exec.pending_signal(&wait.topics) {
        let seq = Some(signal.seq);
        if sdef.fail_on.contains(&signal.topic) {
            let message = format!("signal {} received, which fails this step (fail_on)", signal.topic);
            let error = StepFailure::new(FailureKind::Permanent, message);
            return Next::Record(vec![Event::StepFailed {
                step,
                attempt: 1,
                error,
                retry_at_unix_ms: None,
                http: Vec::new(),
                signal: seq,
            }]);
        }
        let result = json!({ "topic": signal.topic, "payload": signal.payload });
        return Next::Record(vec![Event::StepCompleted { step, attempt: 1, result, http: Vec::new(), signal: seq }]);
    }
    let until = since.saturating_add(wait.timeout_ms);
    if now >= until {
        let message = format!("no signal on {} within {} ms", wait.topics.join(", "), wait.timeout_ms);
        return Next::Record(vec![Event::StepFailed {
            step,
            attempt: 1,
            error: StepFailure::new(FailureKind::Timeout, message),
            retry_at_unix_ms: None,
            http: Vec::new(),
            signal: None,
        }]);
    }
    Next::SleepUntil(exec.deadline_unix_ms.map_or(until, |d| d.min(until)))
}

fn decide_compensation(exec: &Execution, def: &SagaDefinition, now: u64, in_flight: InFlight) -> Next {
    for (index, sdef) in def.steps.iter().enumerate().rev() {
        let Some(state) = exec.step(&sdef.name) else {
            continue;
        };
        if sdef.compensation.is_none() || !state.may_have_effect() {
            continue;
        }
        let invoke =
            |attempt| Next::Invoke(Invocation { side: Side::Compensate, index, step: sdef.name.clone(), attempt });
        let Some(c) = &state.compensation else {
            return invoke(1);
        };
        match c.phase {
            Phase::Completed { .. } => continue,
            Phase::Running { attempt, since } => {
                return take_over(in_flight, since, sdef.timeout_ms, now, || invoke(attempt + 1));
            }
            Phase::Waiting { retry_at } if now >= retry_at => return invoke(c.attempts + 1),
            Phase::Waiting { retry_at } => return Next::SleepUntil(retry_at),
            Phase::GaveUp => {
                let why = c.last_error.as_ref().map_or("failed", |e| e.message.as_str());
                return Next::Record(vec![Event::ExecutionFailed {
                    reason: format!("compensation of step {} failed: {why}", sdef.name),
                }]);
            }
        }
    }
    Next::Record(vec![Event::ExecutionCompensated])
}

/// Runs an orphaned attempt again now, or once its lease has run out.
fn take_over(in_flight: InFlight, since: u64, timeout_ms: u64, now: u64, again: impl FnOnce() -> Next) -> Next {
    let lease_end = since + timeout_ms + LEASE_GRACE_MS;
    match in_flight {
        InFlight::Leased if now < lease_end => Next::SleepUntil(lease_end),
        _ => again(),
    }
}

/// The event recording an invocation's outcome, or `None` when that attempt is no longer
/// in flight (its outcome was recorded by someone else): never merge blindly.
pub fn record_outcome(
    exec: &Execution,
    def: &SagaDefinition,
    inv: &Invocation,
    outcome: Result<Value, StepFailure>,
    now: u64,
) -> Option<Event> {
    let state = exec.step(&inv.step)?;
    let sdef = def.steps.get(inv.index)?;
    let (attempts, policy) = match inv.side {
        Side::Execute => (&state.execute, &sdef.retry),
        Side::Compensate => (state.compensation.as_ref()?, &sdef.compensation_retry),
    };
    if !matches!(attempts.phase, Phase::Running { attempt, .. } if attempt == inv.attempt) {
        return None;
    }
    let (step, attempt) = (inv.step.clone(), inv.attempt);
    Some(match (inv.side, outcome) {
        (Side::Execute, Ok(result)) => Event::StepCompleted { step, attempt, result, http: Vec::new(), signal: None },
        (Side::Compensate, Ok(result)) => Event::CompensationStepCompleted { step, attempt, result, http: Vec::new() },
        (side, Err(error)) => {
            let used = attempt.saturating_sub(attempts.budget_base);
            let retry_at_unix_ms =
                (error.kind.is_retryable() && used < policy.max_attempts).then(|| now + policy.backoff_ms(used));
            match side {
                Side::Execute => {
                    Event::StepFailed { step, attempt, error, retry_at_unix_ms, http: Vec::new(), signal: None }
                }
                Side::Compensate => {
                    Event::CompensationStepFailed { step, attempt, error, retry_at_unix_ms, http: Vec::new() }
                }
            }
        }
    })
}

/// The JSON text a plugin receives (docs/events.md, "Step input"): the execution input and the results of the
/// earlier completed steps; a compensation also gets its step's own result and the reason.
pub fn step_input(exec: &Execution, def: &SagaDefinition, inv: &Invocation) -> Value {
    let mut results = Map::new();
    for sdef in &def.steps[..inv.index] {
        if let Some(result) = exec.step(&sdef.name).and_then(|s| s.execute.result()) {
            results.insert(sdef.name.to_string(), result.clone());
        }
    }
    let mut input = json!({ "input": exec.input, "results": results });
    if inv.side == Side::Compensate {
        let own = exec.step(&inv.step).and_then(|s| s.execute.result()).cloned();
        input["result"] = own.unwrap_or(Value::Null);
        input["reason"] = json!(exec.compensation_reason.as_deref().unwrap_or("compensating"));
    }
    input
}

/// When the host interrupts this attempt: its step timeout, and for forward steps no later
/// than the execution's deadline.
pub fn attempt_deadline(exec: &Execution, sdef: &StepDefinition, side: Side, now: u64) -> u64 {
    let own = now + sdef.timeout_ms;
    match (side, exec.deadline_unix_ms) {
        (Side::Execute, Some(d)) => own.min(d.max(now)),
        _ => own,
    }
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The execution is already terminal (or not in the state the command needs).
    #[error("execution is {}: {}", .0.as_str(), .1)]
    WrongStatus(ExecutionStatus, &'static str),
    /// No wait step of the execution's definition waits for this topic.
    #[error("no wait step of this execution's saga waits for topic {0:?}")]
    UnknownTopic(String),
    /// Too many signals wait to be taken.
    #[error("this execution already holds {0} signals no wait step has taken")]
    TooManySignals(usize),
}

/// `cancel`: stop going forward and compensate. Empty when already cancelling.
pub fn cancel(exec: &Execution) -> Result<Vec<Event>, CommandError> {
    match exec.status {
        ExecutionStatus::Running if !exec.cancel_requested => Ok(vec![Event::CancelRequested]),
        ExecutionStatus::Running | ExecutionStatus::Compensating => Ok(vec![]),
        s => Err(CommandError::WrongStatus(s, "only a running execution can be cancelled")),
    }
}

/// Most signals an execution holds that no wait step has taken yet.
pub const MAX_PENDING_SIGNALS: usize = 64;

/// A signal for an execution: recorded (to be taken by a wait step on its topic, now or
/// later) while the execution is running. Empty when a signal with the same `signal_id` was
/// already received.
pub fn signal(
    exec: &Execution,
    def: &SagaDefinition,
    topic: &str,
    payload: serde_json::Value,
    signal_id: Option<String>,
) -> Result<Vec<Event>, CommandError> {
    if signal_id.is_some() && exec.signals.iter().any(|s| s.id == signal_id) {
        return Ok(vec![]);
    }
    if exec.status != ExecutionStatus::Running {
        return Err(CommandError::WrongStatus(exec.status, "only a running execution takes signals"));
    }
    if !def.steps.iter().filter_map(|s| s.wait_for.as_ref()).any(|w| w.topics.iter().any(|t| t == topic)) {
        return Err(CommandError::UnknownTopic(topic.to_owned()));
    }
    if exec.signals.iter().filter(|s| !s.taken).count() >= MAX_PENDING_SIGNALS {
        return Err(CommandError::TooManySignals(MAX_PENDING_SIGNALS));
    }
    Ok(vec![Event::SignalReceived { topic: topic.to_owned(), payload, signal_id }])
}

/// `resume`: retry the stuck compensation of a failed execution.
pub fn resume(exec: &Execution) -> Result<Vec<Event>, CommandError> {
    match exec.status {
        ExecutionStatus::Failed => Ok(vec![Event::ResumeRequested]),
        s => Err(CommandError::WrongStatus(s, "only a failed execution can be resumed")),
    }
}
