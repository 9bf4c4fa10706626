//! Callers waiting for an execution to end, handed its final state by whoever records the end,
//! so that a synchronous trigger reads nothing back from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Orchestrator, OrchestratorError};
use crate::domain::{Execution, ExecutionId};
use crate::sync::lock;

/// Told an execution's final state when it ends (`None`: read it from the store).
pub(super) type Waiter = oneshot::Sender<Option<Arc<Execution>>>;

/// The waiters of each execution.
#[derive(Default)]
pub(super) struct Waiters {
    by_execution: Mutex<HashMap<ExecutionId, Vec<Waiter>>>,
}

impl Waiters {
    /// Adds a waiter for the end of `id`.
    pub(super) fn register(&self, id: ExecutionId, waiter: Waiter) {
        lock(&self.by_execution).entry(id).or_default().push(waiter);
    }

    /// Drops waiters of `id` that gave up (their receiver is gone).
    pub(super) fn forget_closed(&self, id: ExecutionId) {
        let mut waiters = lock(&self.by_execution);
        if let Some(list) = waiters.get_mut(&id) {
            list.retain(|w| !w.is_closed());
            if list.is_empty() {
                waiters.remove(&id);
            }
        }
    }

    /// Hands `exec` to its waiters if it has ended.
    pub(super) fn hand_final_state(&self, exec: &Execution) {
        if !exec.status.is_terminal() {
            return;
        }
        let woken = lock(&self.by_execution).remove(&exec.id);
        if let Some(woken) = woken {
            let exec = Arc::new(exec.clone());
            for w in woken {
                let _ = w.send(Some(exec.clone()));
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.by_execution).len()
    }
}

impl Orchestrator {
    /// Waits until the execution is terminal, at most `wait`. `None` if it is not by then.
    pub async fn wait_terminal(&self, id: ExecutionId, wait: Duration) -> Result<Option<Execution>, OrchestratorError> {
        // Register before reading, so that an end recorded in between is not missed.
        let (tx, rx) = oneshot::channel();
        self.waiters.register(id, tx);
        let exec = self.execution(id).await?;
        if exec.status.is_terminal() {
            return Ok(Some(exec));
        }
        self.await_end(id, rx, wait).await
    }

    /// The final state sent on `rx` (or read from the store if the sender could not give
    /// it), or `None` when `id` has not ended within `wait`.
    pub(super) async fn await_end(
        &self,
        id: ExecutionId,
        rx: oneshot::Receiver<Option<Arc<Execution>>>,
        wait: Duration,
    ) -> Result<Option<Execution>, OrchestratorError> {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Some(exec))) => Ok(Some(Arc::unwrap_or_clone(exec))),
            Ok(_) => Ok(Some(self.execution(id).await?)),
            Err(_) => {
                self.waiters.forget_closed(id);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, EventRecord};

    fn execution(id: ExecutionId, ended: bool) -> Execution {
        let started = Event::ExecutionStarted {
            saga: crate::domain::SagaName::parse("s").unwrap(),
            definition_version: 1,
            input: serde_json::Value::Null,
            deadline_unix_ms: None,
            idempotency_key: None,
            key: None,
        };
        let mut events = vec![started];
        if ended {
            events.push(Event::ExecutionCompleted);
        }
        let records: Vec<_> =
            events.into_iter().enumerate().map(|(i, event)| EventRecord { seq: i as u64 + 1, at: 0, event }).collect();
        Execution::fold(id, &records).unwrap()
    }

    #[test]
    fn every_waiter_gets_the_final_state_once_it_ends() {
        let waiters = Waiters::default();
        let id = ExecutionId::new();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        waiters.register(id, tx1);
        waiters.register(id, tx2);
        waiters.hand_final_state(&execution(id, false));
        assert!(rx1.try_recv().is_err(), "woken before the end");
        waiters.hand_final_state(&execution(id, true));
        for rx in [&mut rx1, &mut rx2] {
            assert!(rx.try_recv().unwrap().unwrap().status.is_terminal());
        }
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn waiters_that_gave_up_are_forgotten() {
        let waiters = Waiters::default();
        let id = ExecutionId::new();
        let (gave_up, rx) = oneshot::channel();
        waiters.register(id, gave_up);
        drop(rx);
        let (still, waiting) = oneshot::channel();
        waiters.register(id, still);
        waiters.forget_closed(id);
        assert_eq!(waiters.len(), 1);
        drop(waiting);
        waiters.forget_closed(id);
        assert_eq!(waiters.len(), 0);
    }
}
