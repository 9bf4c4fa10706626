//! The `events` interface inside one attempt: emitted events are checked and buffered; they
//! leave with the attempt's result as [`Effects::events`](crate::store::Effects), for the
//! store to record in the topic log with the attempt's completion event or not at all.

use super::StepData;
use super::bindings::current::saga::plugin::events::{self as wit, EmitError};
use crate::domain::topic::check_key;
use crate::domain::{EventSource, TopicEvent};

/// Per-attempt bounds on emitted events; exceeding one is a `limit` error the plugin sees.
#[derive(Clone, Debug)]
pub struct EventLimits {
    /// Events an attempt may emit.
    pub max_events: usize,
    /// Payload bytes an attempt may emit in all.
    pub max_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self { max_events: 100, max_bytes: 1 << 20 }
    }
}

/// One attempt's emitted events.
pub struct EventSession {
    source: EventSource,
    default_key: Option<String>,
    limits: EventLimits,
    events: Vec<TopicEvent>,
    bytes: usize,
}

impl EventSession {
    /// A session for the attempt `source`; events without a key get `default_key`.
    pub fn new(source: EventSource, default_key: Option<String>, limits: EventLimits) -> Self {
        Self { source, default_key, limits, events: Vec::new(), bytes: 0 }
    }

    /// The events, in the order emitted (their `at` is set when they are recorded).
    pub fn into_events(self) -> Vec<TopicEvent> {
        self.events
    }

    /// Checks and buffers one event: its id.
    pub fn emit(&mut self, topic: String, key: Option<String>, payload: &str) -> Result<String, EmitError> {
        crate::domain::ids::check_name("topic", &topic).map_err(|e| EmitError::Invalid(e.to_string()))?;
        if let Some(key) = &key {
            check_key(key).map_err(|e| EmitError::Invalid(format!("key refused: {e}")))?;
        }
        if self.events.len() >= self.limits.max_events {
            return Err(EmitError::Limit(format!(
                "more than {} events emitted in one attempt",
                self.limits.max_events
            )));
        }
        if self.bytes + payload.len() > self.limits.max_bytes {
            return Err(EmitError::Limit(format!(
                "event payloads of more than {} bytes in one attempt",
                self.limits.max_bytes
            )));
        }
        crate::domain::json::check(payload.as_bytes())
            .map_err(|e| EmitError::Invalid(format!("payload refused: {e}")))?;
        let size = payload.len();
        let payload =
            serde_json::from_str(payload).map_err(|e| EmitError::Invalid(format!("payload is not JSON: {e}")))?;
        self.bytes += size;
        let s = &self.source;
        let id = format!("{}:{}:{}:{}", s.execution_id, s.step, s.side, self.events.len());
        self.events.push(TopicEvent {
            id: id.clone(),
            topic,
            key: key.or_else(|| self.default_key.clone()),
            payload,
            at: 0,
            source: Some(self.source.clone()),
        });
        Ok(id)
    }
}

impl wit::Host for StepData {
    async fn emit(
        &mut self,
        topic: String,
        key: Option<String>,
        payload: String,
    ) -> wasmtime::Result<Result<String, EmitError>> {
        Ok(self.events.emit(topic, key, &payload))
    }
}
