//! The pure saga domain: definitions, events, the state fold and the decision function.
//!
//! Nothing here does IO or reads a clock: time is passed in, so every rule is testable
//! as "given these events, when this happens, then these events".

pub mod decide;
pub mod definition;
pub mod event;
pub mod http;
pub mod ids;
pub mod json;
pub mod state;
pub mod status;
pub mod subscription;
pub mod topic;
pub mod view;

#[cfg(test)]
mod tests;

pub use decide::{Invocation, Next, Side, decide, record_outcome};
pub use definition::{
    DefinitionError, DefinitionLimits, OnFailure, RetryPolicy, SagaDefinition, StepDefinition, WaitFor,
};
pub use event::{Event, EventRecord, FailureKind, StepFailure};
pub use http::{HttpCall, HttpGrant};
pub use ids::{ExecutionId, InvalidId, PluginName, PluginRef, PluginVersion, SagaName, StepName};
pub use state::Execution;
pub use status::ExecutionStatus;
pub use topic::{EventSource, TopicEvent, Trigger};
pub use view::ExecutionView;
