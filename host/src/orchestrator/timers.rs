//! The timer wheel: an execution with nothing to do for longer than [`PARK_AFTER_MS`] holds
//! no task while it waits. It is parked here, and one timer task waits on the injected clock
//! for the earliest wake-up and restarts that execution's driver then.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, watch};

use super::Orchestrator;
use crate::clock::Clock;
use crate::domain::ExecutionId;
use crate::sync::lock;

/// A wait longer than this parks the execution (its driver exits) instead of sleeping in it.
pub const PARK_AFTER_MS: u64 = 2_000;

/// Parked executions: each at most once, by wake-up time.
#[derive(Default)]
struct Parked {
    /// `(wake_at_unix_ms, id)`, earliest first.
    by_time: BTreeSet<(u64, ExecutionId)>,
    /// Each parked execution's wake-up time.
    by_id: HashMap<ExecutionId, u64>,
}

/// The executions parked until a time, and the task that restarts them.
#[derive(Default)]
pub(super) struct Timers {
    parked: Mutex<Parked>,
    /// Rung when a new earliest wake-up is parked: the timer task waits for that one now.
    wake: Arc<Notify>,
    /// The timer task is running.
    started: AtomicBool,
}

impl Timers {
    /// Parks `id` until `at` (replacing an earlier wake-up of it); `true` when that is now
    /// the earliest wake-up.
    fn insert(&self, id: ExecutionId, at: u64) -> bool {
        let mut parked = lock(&self.parked);
        if let Some(old) = parked.by_id.insert(id, at) {
            parked.by_time.remove(&(old, id));
        }
        parked.by_time.insert((at, id));
        parked.by_time.first().is_some_and(|first| *first == (at, id))
    }

    /// Unparks `id` (a driver runs for it now).
    pub(super) fn remove(&self, id: ExecutionId) {
        let mut parked = lock(&self.parked);
        if let Some(at) = parked.by_id.remove(&id) {
            parked.by_time.remove(&(at, id));
        }
    }

    /// Unparks and returns, earliest first, every execution due at `now`.
    fn take_due(&self, now: u64) -> Vec<ExecutionId> {
        let mut parked = lock(&self.parked);
        let mut due = Vec::new();
        while let Some(&(at, id)) = parked.by_time.first() {
            if at > now {
                break;
            }
            parked.by_time.pop_first();
            parked.by_id.remove(&id);
            due.push(id);
        }
        due
    }

    /// The earliest wake-up.
    fn next_at(&self) -> Option<u64> {
        lock(&self.parked).by_time.first().map(|t| t.0)
    }

    fn len(&self) -> usize {
        lock(&self.parked).by_id.len()
    }
}

impl Orchestrator {
    /// Parks `id` until `at`: the timer task restarts its driver then.
    pub(super) fn park(&self, id: ExecutionId, at: u64) {
        if self.timers.insert(id, at) {
            self.timers.wake.notify_one();
        }
    }

    /// Executions parked on a timer.
    pub fn parked(&self) -> usize {
        self.timers.len()
    }

    /// Starts the timer task once (on the first driver, so that it runs inside the runtime).
    pub(super) fn start_timers(&self) {
        if !self.timers.started.swap(true, Ordering::SeqCst) {
            let task =
                run_timers(self.me.clone(), self.timers.wake.clone(), self.clock.clone(), self.stopping.subscribe());
            self.tasks.spawn(task);
        }
    }
}

/// Restarts parked executions when their time comes; ends when the host stops.
async fn run_timers(
    me: Weak<Orchestrator>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let notified = wake.notified();
        let next = {
            let Some(orch) = me.upgrade() else { return };
            if *orch.stopping.borrow() {
                return;
            }
            for id in orch.timers.take_due(orch.now_ms()) {
                orch.ensure_driver(id);
            }
            orch.timers.next_at()
        };
        let until_next = async {
            match next {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until_next => {}
            _ = notified => {}
            _ = stopping.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_executions_leave_earliest_first_and_later_ones_stay() {
        let timers = Timers::default();
        let (a, b, c) = (ExecutionId::new(), ExecutionId::new(), ExecutionId::new());
        assert!(timers.insert(b, 200), "the only one is the earliest");
        assert!(!timers.insert(c, 300));
        assert!(timers.insert(a, 100), "a new earliest");
        assert_eq!(timers.next_at(), Some(100));
        assert_eq!(timers.take_due(99), Vec::<ExecutionId>::new());
        assert_eq!(timers.take_due(200), vec![a, b]);
        assert_eq!((timers.len(), timers.next_at()), (1, Some(300)));
        // Parking again moves the wake-up; unparking removes it.
        assert!(timers.insert(c, 50));
        assert_eq!((timers.len(), timers.next_at()), (1, Some(50)));
        timers.remove(c);
        assert_eq!((timers.len(), timers.next_at()), (0, None));
    }
}
