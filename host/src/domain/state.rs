//! The state of an execution: a fold of its events. `apply` only records facts; every
//! rule about what happens next lives in `decide`.

use serde_json::Value;

use super::event::{Event, EventRecord, StepFailure};
use super::http::HttpCall;
use super::ids::{ExecutionId, SagaName, StepName};
use super::status::ExecutionStatus;

/// Where one side (execute or compensate) of a step stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Attempt `attempt` started and has no recorded outcome yet.
    Running {
        /// The attempt in flight.
        attempt: u32,
        /// When it started (unix ms).
        since: u64,
    },
    /// The last attempt failed; the next runs at `retry_at`.
    Waiting {
        /// Unix ms of the next attempt.
        retry_at: u64,
    },
    /// Succeeded with this result.
    Completed {
        /// The plugin's answer.
        result: Value,
    },
    /// Failed for good.
    GaveUp,
}

/// The attempts of one side of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempts {
    /// Current phase.
    pub phase: Phase,
    /// Highest attempt number started.
    pub attempts: u32,
    /// Attempts made before the current retry budget began (an operator's resume starts a new one).
    pub budget_base: u32,
    /// The most recent failure.
    pub last_error: Option<StepFailure>,
    /// When the first attempt started.
    pub started_at: u64,
    /// When it completed or gave up.
    pub finished_at: Option<u64>,
    /// Outbound HTTP requests of the latest attempt that ended.
    pub last_http: Vec<HttpCall>,
}

impl Attempts {
    fn started(attempt: u32, at: u64) -> Self {
        Self {
            phase: Phase::Running { attempt, since: at },
            attempts: attempt,
            budget_base: 0,
            last_error: None,
            started_at: at,
            finished_at: None,
            last_http: Vec::new(),
        }
    }

    fn start(&mut self, attempt: u32, at: u64) {
        self.phase = Phase::Running { attempt, since: at };
        self.attempts = self.attempts.max(attempt);
    }

    fn complete(&mut self, result: Value, at: u64, http: &[HttpCall]) {
        self.last_http = http.to_vec();
        self.phase = Phase::Completed { result };
        self.finished_at = Some(at);
    }

    fn fail(&mut self, error: StepFailure, retry_at: Option<u64>, at: u64, http: &[HttpCall]) {
        self.last_http = http.to_vec();
        self.last_error = Some(error);
        match retry_at {
            Some(retry_at) => self.phase = Phase::Waiting { retry_at },
            None => {
                self.phase = Phase::GaveUp;
                self.finished_at = Some(at);
            }
        }
    }

    /// The result, when completed.
    pub fn result(&self) -> Option<&Value> {
        match &self.phase {
            Phase::Completed { result } => Some(result),
            _ => None,
        }
    }
}

/// One step of an execution, once it has started.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState {
    /// Step name.
    pub name: StepName,
    /// The `execute` side.
    pub execute: Attempts,
    /// The `compensate` side, once compensation of this step began.
    pub compensation: Option<Attempts>,
}

impl StepState {
    /// Whether the step may have taken effect: completed, or cut off without an answer
    /// (in flight at a crash, timed out, trapped). Such a step must be compensated.
    pub fn may_have_effect(&self) -> bool {
        match self.execute.phase {
            Phase::Completed { .. } | Phase::Running { .. } => true,
            Phase::Waiting { .. } | Phase::GaveUp => {
                self.execute.last_error.as_ref().is_some_and(|e| e.kind.outcome_unknown())
            }
        }
    }
}

/// A signal received for an execution, and whether a wait step took it.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// `seq` of its `signal_received` event.
    pub seq: u64,
    /// Its topic.
    pub topic: String,
    /// Its body.
    pub payload: Value,
    /// The sender's idempotency key.
    pub id: Option<String>,
    /// Whether a wait step took it.
    pub taken: bool,
}

/// The whole state of one execution.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    /// Correlation id.
    pub id: ExecutionId,
    /// Definition name.
    pub saga: SagaName,
    /// Definition version it runs.
    pub definition_version: u64,
    /// Trigger input.
    pub input: Value,
    /// Whole-execution deadline.
    pub deadline_unix_ms: Option<u64>,
    /// The trigger's idempotency key.
    pub idempotency_key: Option<String>,
    /// The business key.
    pub key: Option<String>,
    /// When it started.
    pub created_at: u64,
    /// When its last event was recorded.
    pub updated_at: u64,
    /// `seq` of the last event: the expected version for the next append.
    pub version: u64,
    /// Current status.
    pub status: ExecutionStatus,
    /// Steps that have started, in order of first start.
    pub steps: Vec<StepState>,
    /// An operator asked to cancel.
    pub cancel_requested: bool,
    /// The deadline passed.
    pub deadline_exceeded: bool,
    /// Why it is compensating.
    pub compensation_reason: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Signals received, in order.
    pub signals: Vec<Signal>,
}

/// A stream that cannot be folded: out-of-order sequence numbers or events that do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream of {id} is inconsistent at seq {seq}: {problem}")]
pub struct FoldError {
    /// The execution.
    pub id: ExecutionId,
    /// Where.
    pub seq: u64,
    /// What.
    pub problem: String,
}

impl Execution {
    /// Folds a whole stream.
    pub fn fold(id: ExecutionId, records: &[EventRecord]) -> Result<Self, FoldError> {
        let err = |seq, problem: &str| FoldError { id, seq, problem: problem.into() };
        let (first, rest) = records.split_first().ok_or_else(|| err(0, "empty stream"))?;
        let Event::ExecutionStarted { saga, definition_version, input, deadline_unix_ms, idempotency_key, key } =
            &first.event
        else {
            return Err(err(first.seq, "first event is not execution_started"));
        };
        if first.seq != 1 {
            return Err(err(first.seq, "stream does not start at seq 1"));
        }
        let mut exec = Self {
            id,
            saga: saga.clone(),
            definition_version: *definition_version,
            input: input.clone(),
            deadline_unix_ms: *deadline_unix_ms,
            idempotency_key: idempotency_key.clone(),
            key: key.clone(),
            created_at: first.at,
            updated_at: first.at,
            version: 1,
            status: ExecutionStatus::Running,
            steps: Vec::new(),
            cancel_requested: false,
            deadline_exceeded: false,
            compensation_reason: None,
            failure_reason: None,
            signals: Vec::new(),
        };
        for r in rest {
            exec.apply(r)?;
        }
        Ok(exec)
    }

    /// The state of step `name`, if it has started.
    pub fn step(&self, name: &StepName) -> Option<&StepState> {
        self.steps.iter().find(|s| &s.name == name)
    }

    fn step_mut(&mut self, name: &StepName) -> Option<&mut StepState> {
        self.steps.iter_mut().find(|s| &s.name == name)
    }

    /// Numbers `events` as the next records of this stream.
    pub fn next_records(&self, events: Vec<Event>, at: u64) -> Vec<EventRecord> {
        (self.version + 1..).zip(events).map(|(seq, event)| EventRecord { seq, at, event }).collect()
    }

    /// Applies one recorded event.
    pub fn apply(&mut self, r: &EventRecord) -> Result<(), FoldError> {
        let id = self.id;
        let err = |problem: String| FoldError { id, seq: r.seq, problem };
        if r.seq != self.version + 1 {
            return Err(err(format!("expected seq {}", self.version + 1)));
        }
        let at = r.at;
        let missing = |step: &StepName| format!("step {step} has not started");
        match &r.event {
            Event::ExecutionStarted { .. } => return Err(err("execution_started twice".into())),
            Event::StepStarted { step, attempt } => match self.step_mut(step) {
                Some(s) => s.execute.start(*attempt, at),
                None => self.steps.push(StepState {
                    name: step.clone(),
                    execute: Attempts::started(*attempt, at),
                    compensation: None,
                }),
            },
            Event::StepCompleted { step, result, signal, .. } => {
                self.take_signal(*signal).map_err(err)?;
                self.step_mut(step).ok_or_else(|| err(missing(step)))?.execute.complete(
                    result.clone(),
                    at,
                    r.event.http_calls(),
                )
            }
            Event::StepFailed { step, error, retry_at_unix_ms, signal, .. } => {
                self.take_signal(*signal).map_err(err)?;
                self.step_mut(step).ok_or_else(|| err(missing(step)))?.execute.fail(
                    error.clone(),
                    *retry_at_unix_ms,
                    at,
                    r.event.http_calls(),
                )
            }
            Event::SignalReceived { topic, payload, signal_id } => self.signals.push(Signal {
                seq: r.seq,
                topic: topic.clone(),
                payload: payload.clone(),
                id: signal_id.clone(),
                taken: false,
            }),
            Event::ExecutionCompleted => {}
            Event::CancelRequested => self.cancel_requested = true,
            Event::DeadlineExceeded => self.deadline_exceeded = true,
            Event::CompensationStarted { reason } => self.compensation_reason = Some(reason.clone()),
            Event::CompensationStepStarted { step, attempt } => {
                let s = self.step_mut(step).ok_or_else(|| err(missing(step)))?;
                match &mut s.compensation {
                    Some(c) => c.start(*attempt, at),
                    None => s.compensation = Some(Attempts::started(*attempt, at)),
                }
            }
            Event::CompensationStepCompleted { step, result, .. } => self
                .compensation_mut(step)
                .ok_or_else(|| err(missing(step)))?
                .complete(result.clone(), at, r.event.http_calls()),
            Event::CompensationStepFailed { step, error, retry_at_unix_ms, .. } => self
                .compensation_mut(step)
                .ok_or_else(|| err(missing(step)))?
                .fail(error.clone(), *retry_at_unix_ms, at, r.event.http_calls()),
            Event::ExecutionCompensated => {}
            Event::ExecutionFailed { reason } => self.failure_reason = Some(reason.clone()),
            Event::ResumeRequested => {
                self.failure_reason = None;
                for c in self.steps.iter_mut().filter_map(|s| s.compensation.as_mut()) {
                    if c.phase == Phase::GaveUp {
                        c.phase = Phase::Waiting { retry_at: at };
                        c.budget_base = c.attempts;
                        c.finished_at = None;
                    }
                }
            }
        }
        if let Some(status) = r.event.status_after() {
            self.status = status;
        }
        self.version = r.seq;
        self.updated_at = at;
        Ok(())
    }

    /// The first signal on one of `topics` that no wait step has taken.
    pub fn pending_signal(&self, topics: &[String]) -> Option<&Signal> {
        self.signals.iter().find(|s| !s.taken && topics.contains(&s.topic))
    }

    fn take_signal(&mut self, seq: Option<u64>) -> Result<(), String> {
        let Some(seq) = seq else { return Ok(()) };
        match self.signals.iter_mut().find(|s| s.seq == seq) {
            Some(s) if !s.taken => {
                s.taken = true;
                Ok(())
            }
            Some(_) => Err(format!("signal {seq} taken twice")),
            None => Err(format!("signal {seq} was not received")),
        }
    }

    fn compensation_mut(&mut self, step: &StepName) -> Option<&mut Attempts> {
        self.step_mut(step)?.compensation.as_mut()
    }
}
