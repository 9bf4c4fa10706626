//! The driver registry: at most one driver task per execution in this process, found by id
//! so that whoever appends to a stream can wake the driver that owns it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{Orchestrator, driver};
use crate::domain::{Execution, ExecutionId, Next};
use crate::sync::lock;

/// What the registry keeps of a running driver.
pub(super) struct DriverSlot {
    /// Rung when someone else appended (a command, a timer): stop waiting and re-read.
    pub(super) wake: Notify,
    /// Set when someone appended while the driver ran: it must re-read before retiring.
    pub(super) dirty: AtomicBool,
}

/// The drivers of this process, by execution.
#[derive(Default)]
pub(super) struct DriverRegistry {
    slots: Mutex<HashMap<ExecutionId, Arc<DriverSlot>>>,
}

impl DriverRegistry {
    /// Executions with a driver.
    pub(super) fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// A new slot for `id`, to start a driver with; `None` when `id` has a driver already,
    /// which is then told to re-read.
    fn claim(&self, id: ExecutionId) -> Option<Arc<DriverSlot>> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&id) {
            slot.dirty.store(true, Ordering::SeqCst);
            slot.wake.notify_one();
            return None;
        }
        let slot = Arc::new(DriverSlot { wake: Notify::new(), dirty: AtomicBool::new(false) });
        slots.insert(id, slot.clone());
        Some(slot)
    }

    /// Removes the driver of `id` unless someone appended meanwhile. `false`: keep driving.
    ///
    /// The check and the removal are under the lock [`claim`](Self::claim) marks slots under,
    /// so an append is either seen here or finds no driver and starts one.
    pub(super) fn retire(&self, id: ExecutionId, slot: &DriverSlot) -> bool {
        let mut slots = lock(&self.slots);
        if slot.dirty.swap(false, Ordering::SeqCst) {
            return false;
        }
        slots.remove(&id);
        true
    }

    /// Forgets the driver of `id` (it stopped with the host).
    pub(super) fn remove(&self, id: ExecutionId) {
        lock(&self.slots).remove(&id);
    }
}

impl Orchestrator {
    /// Executions currently being driven by this process.
    pub fn active_drivers(&self) -> usize {
        self.drivers.len()
    }

    /// Unfinished executions this process holds: driven now or parked until a time. The
    /// `--max-active-executions` limit and the `sagahost_active_executions` gauge count these.
    pub fn active_executions(&self) -> usize {
        self.drivers.len() + self.parked()
    }

    /// Makes sure a driver runs for `id`, waking it if it exists: exactly one driver per
    /// execution in this process.
    pub(crate) fn ensure_driver(&self, id: ExecutionId) {
        self.ensure_driver_from(id, None);
    }

    /// [`ensure_driver`](Self::ensure_driver); a new driver starts from `known` (the stream's
    /// current fold, and what to do first if that is already decided and recorded) instead of
    /// reading the stream.
    pub(super) fn ensure_driver_from(&self, id: ExecutionId, known: Option<(Execution, Option<Next>)>) {
        if *self.stopping.borrow() {
            return;
        }
        self.start_timers();
        if let Some(slot) = self.drivers.claim(id)
            && let Some(me) = self.me.upgrade()
        {
            // Driven now: no longer parked (each execution is counted once).
            self.timers.remove(id);
            self.tasks.spawn(driver::drive(me, id, slot, known));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_while_driving_keeps_the_driver_until_it_re_read() {
        let registry = DriverRegistry::default();
        let id = ExecutionId::new();
        let slot = registry.claim(id).expect("no driver yet");
        assert_eq!(registry.len(), 1);
        // Someone appends while the driver runs: no second driver, and the first must re-read.
        assert!(registry.claim(id).is_none());
        assert!(!registry.retire(id, &slot), "retired past an append it did not read");
        assert_eq!(registry.len(), 1);
        assert!(registry.retire(id, &slot));
        assert_eq!(registry.len(), 0);
        assert!(registry.claim(id).is_some(), "a retired execution gets a new driver");
    }
}
