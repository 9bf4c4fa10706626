//! The events of an execution's stream (docs/events.md). An execution's state is a fold of them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::HttpCall;
use super::ids::{SagaName, StepName};
use super::status::ExecutionStatus;

/// How an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The plugin asked to be retried.
    Retryable,
    /// The plugin said retrying cannot help.
    Permanent,
    /// The attempt ran past its time limit and was interrupted.
    Timeout,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The guest exceeded a resource limit (memory, output size, outbound requests, ...).
    Limit,
    /// The guest tried something its step's definition does not grant (an outbound request to
    /// an origin or address not in `allow_http`). Not retried: only a new definition helps.
    Permission,
    /// State the attempt read changed before its commit (another execution committed first):
    /// none of its writes were kept. Retried under the step's policy.
    Conflict,
}

impl FailureKind {
    /// Whether the retry policy applies to a failure of this kind.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable | Self::Timeout | Self::Trap | Self::Conflict)
    }

    /// Whether the step may have taken effect despite failing: the guest was cut off
    /// rather than answering, so the step must be compensated too.
    pub fn outcome_unknown(self) -> bool {
        matches!(self, Self::Timeout | Self::Trap | Self::Limit | Self::Permission)
    }

    /// The kind's name as it appears in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Trap => "trap",
            Self::Limit => "limit",
            Self::Conflict => "conflict",
            Self::Permission => "permission",
        }
    }
}

/// A failed attempt: its kind and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The plugin's or the host's explanation.
    pub message: String,
}

impl StepFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// One transition of an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The execution was created.
    ExecutionStarted {
        /// Definition name.
        saga: SagaName,
        /// The definition version this execution keeps to the end.
        definition_version: u64,
        /// The trigger's input.
        input: Value,
        /// When the whole execution must be over; `None`: no deadline.
        deadline_unix_ms: Option<u64>,
        /// The trigger's `Idempotency-Key`, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// The execution's business key (the trigger's `Execution-Key`), if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// An attempt of a step is about to run (durable before the plugin runs).
    StepStarted {
        /// The step.
        step: StepName,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// An attempt succeeded.
    StepCompleted {
        /// The step.
        step: StepName,
        /// The attempt.
        attempt: u32,
        /// The plugin's answer (for a wait step, the signal's topic and payload).
        result: Value,
        /// Outbound HTTP requests the attempt made; omitted when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        http: Vec<HttpCall>,
        /// For a wait step: the `seq` of the `signal_received` it took; omitted otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<u64>,
    },
    /// An attempt failed.
    StepFailed {
        /// The step.
        step: StepName,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: StepFailure,
        /// When the next attempt runs; `None` when giving up.
        retry_at_unix_ms: Option<u64>,
        /// Outbound HTTP requests the attempt made; omitted when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        http: Vec<HttpCall>,
        /// For a wait step failed by a `fail_on` signal: the `seq` of that `signal_received`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<u64>,
    },
    /// A signal arrived for this execution (`POST /v1/executions/{id}/signals/{topic}`). It
    /// waits in the stream until a wait step on its topic takes it.
    SignalReceived {
        /// The topic: one a wait step of the definition waits for.
        topic: String,
        /// The signal's body.
        payload: Value,
        /// The sender's `Idempotency-Key`: a signal with a key already received is not recorded twice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal_id: Option<String>,
    },
    /// Every step is done.
    ExecutionCompleted,
    /// An operator asked to stop going forward.
    CancelRequested,
    /// The execution's deadline passed before it completed.
    DeadlineExceeded,
    /// Undoing completed steps begins.
    CompensationStarted {
        /// Why the saga is compensating.
        reason: String,
    },
    /// A compensation attempt is about to run.
    CompensationStepStarted {
        /// The step being undone.
        step: StepName,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// A compensation attempt succeeded.
    CompensationStepCompleted {
        /// The step undone.
        step: StepName,
        /// The attempt.
        attempt: u32,
        /// The plugin's answer.
        result: Value,
        /// Outbound HTTP requests the attempt made; omitted when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        http: Vec<HttpCall>,
    },
    /// A compensation attempt failed.
    CompensationStepFailed {
        /// The step.
        step: StepName,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: StepFailure,
        /// When the next attempt runs; `None` when giving up.
        retry_at_unix_ms: Option<u64>,
        /// Outbound HTTP requests the attempt made; omitted when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        http: Vec<HttpCall>,
    },
    /// Every needed compensation is done.
    ExecutionCompensated,
    /// A compensation gave up: an operator must `resume`.
    ExecutionFailed {
        /// What gave up, and why.
        reason: String,
    },
    /// An operator asked to retry the stuck compensation of a failed execution.
    ResumeRequested,
}

impl Event {
    /// The type name, as in the JSON `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ExecutionStarted { .. } => "execution_started",
            Self::StepStarted { .. } => "step_started",
            Self::StepCompleted { .. } => "step_completed",
            Self::StepFailed { .. } => "step_failed",
            Self::ExecutionCompleted => "execution_completed",
            Self::CancelRequested => "cancel_requested",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::CompensationStarted { .. } => "compensation_started",
            Self::CompensationStepStarted { .. } => "compensation_step_started",
            Self::CompensationStepCompleted { .. } => "compensation_step_completed",
            Self::CompensationStepFailed { .. } => "compensation_step_failed",
            Self::ExecutionCompensated => "execution_compensated",
            Self::ExecutionFailed { .. } => "execution_failed",
            Self::ResumeRequested => "resume_requested",
            Self::SignalReceived { .. } => "signal_received",
        }
    }

    /// The same event carrying the outbound requests its attempt made (an attempt's outcome
    /// event; any other event is returned as it is).
    pub fn with_http(mut self, calls: Vec<HttpCall>) -> Self {
        match &mut self {
            Self::StepCompleted { http, .. }
            | Self::StepFailed { http, .. }
            | Self::CompensationStepCompleted { http, .. }
            | Self::CompensationStepFailed { http, .. } => *http = calls,
            _ => {}
        }
        self
    }

    /// The outbound requests an attempt's outcome event records.
    pub fn http_calls(&self) -> &[HttpCall] {
        match self {
            Self::StepCompleted { http, .. }
            | Self::StepFailed { http, .. }
            | Self::CompensationStepCompleted { http, .. }
            | Self::CompensationStepFailed { http, .. } => http,
            _ => &[],
        }
    }

    /// The execution status this event moves to, if it changes it. Stores use this to keep
    /// their status indexes without folding whole streams.
    pub fn status_after(&self) -> Option<ExecutionStatus> {
        use ExecutionStatus as S;
        match self {
            Self::ExecutionStarted { .. } => Some(S::Running),
            Self::CompensationStarted { .. } | Self::ResumeRequested => Some(S::Compensating),
            Self::ExecutionCompleted => Some(S::Completed),
            Self::ExecutionCompensated => Some(S::Compensated),
            Self::ExecutionFailed { .. } => Some(S::Failed),
            _ => None,
        }
    }
}

/// An event with its place in the stream: `seq` counts from 1 without gaps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// Position in the stream, from 1.
    pub seq: u64,
    /// When it was recorded (unix milliseconds).
    pub at: u64,
    /// The event itself.
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_flat_with_type() {
        let rec = EventRecord {
            seq: 3,
            at: 42,
            event: Event::StepFailed {
                step: StepName::parse("pay").unwrap(),
                attempt: 2,
                error: StepFailure::new(FailureKind::Timeout, "took too long"),
                retry_at_unix_ms: None,
                http: Vec::new(),
                signal: None,
            },
        };
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq":3,"at":42,"type":"step_failed","step":"pay","attempt":2,
                "error":{"kind":"timeout","message":"took too long"},"retry_at_unix_ms":null})
        );
        assert_eq!(serde_json::from_value::<EventRecord>(json).unwrap(), rec);
        let done = serde_json::to_value(EventRecord { seq: 9, at: 1, event: Event::ExecutionCompleted }).unwrap();
        assert_eq!(done, serde_json::json!({"seq":9,"at":1,"type":"execution_completed"}));
        assert_eq!(rec.event.type_name(), "step_failed");
    }
}
