//! Executions whose stored stream cannot be read any more (it does not decode, or does not
//! fold, or names a definition version that is gone). Waiting cannot heal that, so instead of
//! retrying, the host sets the execution aside once: recorded in the store's quarantine list
//! (listed as `failed` from then on), counted in `/metrics`, logged once, and answered for with
//! [`OrchestratorError::Quarantined`] (docs/operations.md, "Executions that cannot be read").

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Orchestrator, OrchestratorError};
use crate::domain::ExecutionId;
use crate::store::QuarantineEntry;
use crate::sync::lock;

/// The executions this process knows to be quarantined, with their reasons, so that each is
/// recorded and logged once however many readers hit it.
#[derive(Default)]
pub(super) struct Quarantine {
    known: Mutex<HashMap<ExecutionId, String>>,
}

impl OrchestratorError {
    /// Whether waiting cannot help: only storage being unavailable heals by itself.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Store(e) => e.is_permanent(),
            Self::Busy(_) => false,
            _ => true,
        }
    }
}

impl Orchestrator {
    /// Sets `id` aside for `reason` (once; later calls answer with the first reason) and
    /// returns the error to answer with.
    pub(super) async fn set_aside(&self, id: ExecutionId, reason: String) -> OrchestratorError {
        if let Some(first) = lock(&self.quarantine.known).get(&id) {
            return OrchestratorError::Quarantined { id, reason: first.clone() };
        }
        let reason = match self.store.quarantined(id).await {
            Ok(Some(entry)) => entry.reason,
            Ok(None) => {
                let entry = QuarantineEntry { id, reason: reason.clone(), at: self.now_ms() };
                if let Err(e) = self.store.quarantine(entry).await {
                    // Not recorded: the next reader tries again (and logs again).
                    return e.into();
                }
                if lock(&self.quarantine.known).insert(id, reason.clone()).is_none() {
                    tracing::error!(execution_id = %id, %reason, "execution quarantined: its stored stream cannot be read");
                    crate::metrics::metrics().quarantined_executions.inc();
                }
                return OrchestratorError::Quarantined { id, reason };
            }
            Err(e) => return e.into(),
        };
        lock(&self.quarantine.known).insert(id, reason.clone());
        OrchestratorError::Quarantined { id, reason }
    }

    /// Loads the store's quarantine list (at start): sets the gauge, and answers for those
    /// executions without logging them again.
    pub(super) async fn load_quarantine(&self) -> Result<(), OrchestratorError> {
        let entries = self.store.quarantine_list().await?;
        crate::metrics::metrics().quarantined_executions.set(entries.len() as i64);
        let mut known = lock(&self.quarantine.known);
        for e in entries {
            known.insert(e.id, e.reason);
        }
        Ok(())
    }
}
