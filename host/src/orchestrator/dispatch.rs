//! Delivery of the topic log (docs/topics.md). One task reads the events after its durable
//! cursor, in order: each starts the sagas it triggers and signals the waits it ends; then the
//! cursor moves past it. Every delivery is idempotent — a trigger starts its execution under an
//! idempotency key made of the event's key, a signal carries the event's id — so an event read
//! again after a crash (delivered, cursor not yet moved) changes nothing twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, watch};

use super::{Orchestrator, OrchestratorError, Started, TriggerKeys};
use crate::domain::decide::CommandError;
use crate::domain::topic::key_at;
use crate::domain::{ExecutionStatus, TopicEvent};
use crate::store::{ListFilter, StoreError, StoredDefinition};

/// The dispatcher's cursor in the topic log.
const CURSOR: &str = "dispatch";
/// Events read at once.
const BATCH: usize = 256;
/// How often an idle dispatcher looks at the log anyway (another process may publish).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Wait after a failed delivery before trying the same event again.
const RETRY: Duration = Duration::from_millis(500);
/// Most running executions of one key an event is offered to.
const MAX_KEYED: usize = 1_000;

/// The dispatcher's wake-up and whether it runs.
#[derive(Default)]
pub(super) struct Dispatcher {
    wake: Arc<Notify>,
    started: AtomicBool,
}

impl Orchestrator {
    /// Appends `event` to the topic log (unless its id is there already) and has it delivered:
    /// its `seq`, and whether it is new.
    pub async fn publish_event(&self, event: TopicEvent) -> Result<(u64, bool), OrchestratorError> {
        let published = self.store.publish(event).await?;
        self.events_published();
        Ok(published)
    }

    /// Has the events just recorded in the log delivered.
    pub(super) fn events_published(&self) {
        self.start_dispatcher();
        self.dispatcher.wake.notify_one();
        self.deliveries.log_changed();
    }

    /// Starts the dispatcher once (at recovery, or on the first publish).
    pub(super) fn start_dispatcher(&self) {
        if !*self.stopping.borrow() && !self.dispatcher.started.swap(true, Ordering::SeqCst) {
            self.tasks.spawn(run(self.me.clone(), self.dispatcher.wake.clone(), self.stopping.subscribe()));
        }
    }

    /// Starts the sagas `event` triggers (among `triggered`: the definitions with a trigger,
    /// read once per batch) and signals the waits it ends. An error leaves the event to be
    /// delivered again.
    async fn deliver(&self, event: &TopicEvent, triggered: &[StoredDefinition]) -> Result<(), OrchestratorError> {
        for stored in triggered {
            let Some(trigger) = stored.definition.triggers.iter().find(|t| t.topic == event.topic) else { continue };
            let Some(key) = key_at(&event.payload, &trigger.key) else {
                tracing::warn!(event = %event.id, saga = %stored.name, path = %trigger.key, "event has no key at its trigger's path: no execution started");
                continue;
            };
            let input = json!({ "event": event });
            let keys = TriggerKeys { idempotency_key: Some(format!("trigger:{key}")), key: Some(key) };
            match self.start_keyed(&stored.name, input, keys).await {
                Ok(started) if started.created => {
                    tracing::info!(event = %event.id, saga = %stored.name, execution_id = %started.id, "event started an execution")
                }
                // Exactly one execution per saga and key: another event with this key (or this
                // one, delivered again) started it.
                Ok(Started { id, .. }) | Err(OrchestratorError::IdempotencyKeyReused(id)) => {
                    tracing::debug!(event = %event.id, saga = %stored.name, execution_id = %id, "the event's key has its execution already")
                }
                Err(OrchestratorError::UnknownSaga(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let Some(key) = &event.key else { return Ok(()) };
        let filter = ListFilter {
            key: Some(key.clone()),
            status: Some(ExecutionStatus::Running),
            limit: MAX_KEYED,
            ..Default::default()
        };
        // `signal` decides for each execution whether its saga waits on this topic (the rule
        // lives in `decide::signal`): a refusal there means there is nothing to deliver to it.
        for summary in self.store.list(&filter).await? {
            match self.signal(summary.id, event.topic.clone(), event.payload.clone(), Some(event.id.clone())).await {
                Ok(_) => {}
                Err(OrchestratorError::Command(CommandError::TooManySignals(n))) => {
                    tracing::warn!(event = %event.id, execution_id = %summary.id, pending = n, "event not delivered: too many signals wait");
                }
                // No wait on this topic, ended meanwhile, or unreadable: nothing to deliver.
                Err(OrchestratorError::Command(_)) => {}
                Err(e) if e.is_permanent() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Delivers the events after the cursor, moving it past each; how many were delivered.
    async fn dispatch_batch(&self) -> Result<usize, OrchestratorError> {
        let cursor = self.store.cursor(CURSOR).await?;
        let events = self.store.topic_events(cursor, BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        // Read after the events: every definition stored before one of them was recorded is here.
        let mut triggered = self.store.definitions().await?;
        triggered.retain(|d| !d.definition.triggers.is_empty());
        let mut delivered = 0;
        let mut result = Ok(());
        for (seq, event) in &events {
            if *self.stopping.borrow() {
                break;
            }
            if let Err(e) = self.deliver(event, &triggered).await {
                result = Err(e);
                break;
            }
            delivered = *seq;
        }
        if delivered > 0 {
            self.store.set_cursor(CURSOR, delivered).await?;
        }
        result.map(|()| events.len())
    }
}

/// Delivers the log until the host stops.
async fn run(me: Weak<Orchestrator>, wake: Arc<Notify>, mut stopping: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        let notified = wake.notified();
        let pause = {
            let Some(orch) = me.upgrade() else { return };
            if *orch.stopping.borrow() {
                return;
            }
            match orch.dispatch_batch().await {
                Ok(0) => Some(IDLE_POLL),
                Ok(_) => {
                    failing = false;
                    None
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        let busy = matches!(
                            e,
                            OrchestratorError::Busy(_) | OrchestratorError::Store(StoreError::Unavailable(_))
                        );
                        tracing::warn!(error = %e, busy, "delivering topic events failed; retrying");
                    }
                    Some(RETRY)
                }
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = notified => {}
                _ = stopping.changed() => {}
            }
        }
    }
}
