//! Events this step emits (docs/topics.md): they start the sagas that trigger on their topic,
//! resume the waits of executions with their key, and go out to subscriptions.
//!
//! Emitting is an outbox: the host records the events together with the step's completion, all
//! or nothing. A failed, trapped or timed-out attempt emits nothing, so a retried step never
//! leaves a duplicate behind, and an event is never recorded for a step that did not complete.
//!
//! ```no_run
//! use saga_guest::{StepError, events};
//! use serde::Serialize;
//!
//! #[derive(Serialize)]
//! struct CreditReserved { order_id: String, amount: u64 }
//!
//! fn reserved(order_id: &str, amount: u64) -> Result<(), StepError> {
//!     // No key: the event carries the execution's business key.
//!     events::emit("CreditReserved", &CreditReserved { order_id: order_id.into(), amount })?;
//!     Ok(())
//! }
//! ```

use std::fmt;

use serde::Serialize;

use crate::StepError;
use crate::bindings::saga::plugin::events as wit;

/// Why an event was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The topic, key or payload is not allowed.
    Invalid(String),
    /// The attempt emitted as many events (or bytes) as it may.
    Limit(String),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "event refused: {m}"),
            Self::Limit(m) => write!(f, "event limit: {m}"),
        }
    }
}

impl std::error::Error for EmitError {}

/// `?` in a step: a refused event is a bug a retry cannot fix.
impl From<EmitError> for StepError {
    fn from(e: EmitError) -> Self {
        StepError::permanent(e)
    }
}

/// Emits `payload` on `topic` with the execution's business key (if it has one) when the step
/// commits: the event's id (`<execution-id>:<step>:<side>:<n>`).
pub fn emit<T: Serialize + ?Sized>(topic: &str, payload: &T) -> Result<String, EmitError> {
    send(topic, None, payload)
}

/// [`emit`] with an explicit `key`: the executions it resumes are those with this business key.
pub fn emit_keyed<T: Serialize + ?Sized>(topic: &str, key: &str, payload: &T) -> Result<String, EmitError> {
    send(topic, Some(key), payload)
}

fn send<T: Serialize + ?Sized>(topic: &str, key: Option<&str>, payload: &T) -> Result<String, EmitError> {
    let payload = serde_json::to_string(payload).map_err(|e| EmitError::Invalid(format!("payload: {e}")))?;
    wit::emit(topic, key, &payload).map_err(|e| match e {
        wit::EmitError::Invalid(m) => EmitError::Invalid(m),
        wit::EmitError::Limit(m) => EmitError::Limit(m),
    })
}
