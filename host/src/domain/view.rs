//! What `GET /v1/executions/{id}` shows: the folded state laid over the definition's steps.

use serde::Serialize;
use serde_json::Value;

use super::definition::SagaDefinition;
use super::event::StepFailure;
use super::http::HttpCall;
use super::ids::{ExecutionId, SagaName, StepName};
use super::state::{Attempts, Execution, Phase};
use super::status::ExecutionStatus;

/// A step's status as users see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached yet.
    Pending,
    /// An attempt is running or a retry is scheduled.
    Running,
    /// Succeeded.
    Completed,
    /// Gave up (or, for a compensation, its compensation gave up).
    Failed,
    /// Being undone.
    Compensating,
    /// Undone.
    Compensated,
    /// Never reached: the execution ended first.
    Skipped,
}

/// One side (execute or compensate) of a step.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AttemptsView {
    /// Attempts started.
    pub attempts: u32,
    /// The result, once completed.
    pub result: Option<Value>,
    /// The latest failure.
    pub error: Option<StepFailure>,
    /// When the next attempt runs, while waiting in backoff.
    pub retry_at_unix_ms: Option<u64>,
    /// When the first attempt started.
    pub started_at: u64,
    /// When it completed or gave up.
    pub finished_at: Option<u64>,
    /// Outbound HTTP requests of the latest attempt that ended; omitted when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpCall>,
}

impl From<&Attempts> for AttemptsView {
    fn from(a: &Attempts) -> Self {
        Self {
            attempts: a.attempts,
            result: a.result().cloned(),
            error: a.last_error.clone(),
            retry_at_unix_ms: match a.phase {
                Phase::Waiting { retry_at } => Some(retry_at),
                _ => None,
            },
            started_at: a.started_at,
            finished_at: a.finished_at,
            http: a.last_http.clone(),
        }
    }
}

/// One step of the view.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StepView {
    /// Step name.
    pub name: StepName,
    /// Status.
    pub status: StepStatus,
    /// Attempts of `execute`.
    pub attempts: u32,
    /// Result of `execute`.
    pub result: Option<Value>,
    /// Latest failure of `execute`.
    pub error: Option<StepFailure>,
    /// Details of `execute`; `None` while pending.
    pub execute: Option<AttemptsView>,
    /// Details of `compensate`; `None` unless compensation of this step began.
    pub compensation: Option<AttemptsView>,
}

/// The execution as users see it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExecutionView {
    /// Correlation id.
    pub id: ExecutionId,
    /// Definition name.
    pub saga: SagaName,
    /// Definition version.
    pub definition_version: u64,
    /// Status.
    pub status: ExecutionStatus,
    /// Trigger input.
    pub input: Value,
    /// The business key (`Execution-Key`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `seq` of the latest event.
    pub version: u64,
    /// When it started.
    pub created_at: u64,
    /// When it last changed.
    pub updated_at: u64,
    /// Deadline, if any.
    pub deadline_unix_ms: Option<u64>,
    /// Why it is compensating.
    pub compensation_reason: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Every step of the definition, in order.
    pub steps: Vec<StepView>,
}

impl ExecutionView {
    /// Lays the state over the definition's steps.
    pub fn new(exec: &Execution, def: &SagaDefinition) -> Self {
        let steps = def
            .steps
            .iter()
            .map(|sdef| match exec.step(&sdef.name) {
                None => StepView {
                    name: sdef.name.clone(),
                    status: if exec.status == ExecutionStatus::Running {
                        StepStatus::Pending
                    } else {
                        StepStatus::Skipped
                    },
                    attempts: 0,
                    result: None,
                    error: None,
                    execute: None,
                    compensation: None,
                },
                Some(s) => {
                    let status = match (&s.compensation, &s.execute.phase) {
                        (Some(c), _) => match c.phase {
                            Phase::Completed { .. } => StepStatus::Compensated,
                            Phase::GaveUp => StepStatus::Failed,
                            _ => StepStatus::Compensating,
                        },
                        (None, Phase::Completed { .. }) => StepStatus::Completed,
                        (None, Phase::GaveUp) => StepStatus::Failed,
                        (None, _) => StepStatus::Running,
                    };
                    StepView {
                        name: s.name.clone(),
                        status,
                        attempts: s.execute.attempts,
                        result: s.execute.result().cloned(),
                        error: s.execute.last_error.clone(),
                        execute: Some((&s.execute).into()),
                        compensation: s.compensation.as_ref().map(Into::into),
                    }
                }
            })
            .collect();
        Self {
            id: exec.id,
            saga: exec.saga.clone(),
            definition_version: exec.definition_version,
            status: exec.status,
            input: exec.input.clone(),
            key: exec.key.clone(),
            version: exec.version,
            created_at: exec.created_at,
            updated_at: exec.updated_at,
            deadline_unix_ms: exec.deadline_unix_ms,
            compensation_reason: exec.compensation_reason.clone(),
            failure_reason: exec.failure_reason.clone(),
            steps,
        }
    }
}
