//! Retention (docs/operations.md#retention): a background sweeper removes ended executions
//! once their saga's retention has passed (events, head, indexes), optionally archiving them
//! first as NDJSON ([`archive`]), and forgets idempotency keys once their own window has
//! passed. Plugin state is never touched.
//!
//! The sweeper walks the store's index of ended executions in the order they ended, a batch
//! at a time: each batch is one commit of at most [`BATCH`] executions, and it pauses between
//! batches, so that foreground writes never queue behind a large removal.

pub mod archive;
pub mod duration;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::SagaName;
use crate::store::{Removal, Store, StoreError};

/// Executions (or keys) looked at per batch, each batch one commit: small, so that the group
/// commit a batch joins grows by little (about 8 keys removed per execution).
pub const BATCH: usize = 64;
/// Pause between two batches.
pub const PAUSE: Duration = Duration::from_millis(2);
/// Longest time between two sweeps.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest time between two sweeps.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What retention keeps, and where it archives.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// How long an ended execution is kept (a saga's `retain_ms` overrides it); `None`: forever.
    pub retain: Option<Duration>,
    /// How long an idempotency key is remembered, from its execution's start.
    pub idempotency_window: Duration,
    /// Archive executions here (NDJSON, one line per event) before removing them.
    pub archive: Option<PathBuf>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retain: Some(Duration::from_secs(7 * 24 * 3_600)),
            idempotency_window: Duration::from_secs(24 * 3_600),
            archive: None,
        }
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Executions removed.
    pub removed: u64,
    /// Events written to the archive.
    pub archived: u64,
    /// Idempotency keys forgotten.
    pub keys: u64,
}

/// Each saga's retention in ms (`None`: forever): its definition's `retain_ms`, else the host's.
struct Retention {
    default: Option<u64>,
    sagas: HashMap<SagaName, u64>,
}

impl Retention {
    async fn load(store: &dyn Store, default: Option<Duration>) -> Result<Self, StoreError> {
        let sagas =
            store.definitions().await?.into_iter().filter_map(|d| Some((d.name, d.definition.retain_ms?))).collect();
        Ok(Self { default: default.map(|d| d.as_millis() as u64), sagas })
    }

    fn of(&self, saga: &SagaName) -> Option<u64> {
        self.sagas.get(saga).copied().or(self.default)
    }

    /// The shortest retention of any saga: nothing that ended after `now` minus it can go.
    fn shortest(&self) -> Option<u64> {
        self.sagas.values().copied().chain(self.default).min()
    }
}

/// How long to wait between sweeps: a quarter of the shortest retention, within
/// [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
pub fn interval(config: &RetentionConfig) -> Duration {
    let shortest = config.retain.unwrap_or(MAX_INTERVAL * 4).min(config.idempotency_window);
    (shortest / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// One sweep at `now` (unix ms): every execution whose retention has passed, then every
/// idempotency key whose window has.
pub async fn sweep(store: &dyn Store, config: &RetentionConfig, now: u64) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let retention = Retention::load(store, config.retain).await?;
    if let Some(shortest) = retention.shortest() {
        let until = now.saturating_sub(shortest);
        let mut after = None;
        loop {
            let page = store.ended(until, after, BATCH).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.at, last.id));
            let due: Vec<_> = page
                .into_iter()
                .filter_map(|e| {
                    let cutoff = now.saturating_sub(retention.of(&e.saga)?);
                    (e.at <= cutoff).then_some((e, cutoff))
                })
                .collect();
            if !due.is_empty() {
                if let Some(dir) = &config.archive {
                    swept.archived += archive::write(store, dir, &due, now).await?;
                }
                let removals = store.remove(due).await?;
                swept.removed += removals.iter().filter(|r| **r == Removal::Removed).count() as u64;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    let until = now.saturating_sub(config.idempotency_window.as_millis() as u64);
    loop {
        let page = store.keys_made(until, BATCH).await?;
        let full = page.len() == BATCH;
        if page.is_empty() {
            break;
        }
        swept.keys += store.forget_keys(page).await? as u64;
        if !full {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(swept)
}

/// Sweeps now and then every [`interval`], until the task is dropped. In a store shared by
/// several hosts, only the host whose turn it is to deliver the subscriptions sweeps (one
/// archive, no two hosts removing the same batch).
pub async fn run(store: Arc<dyn Store>, config: RetentionConfig, clock: Arc<dyn crate::clock::Clock>) {
    let every = interval(&config);
    let turn = store.delivery_turn();
    loop {
        if turn.as_ref().is_some_and(|t| !*t.borrow()) {
            tokio::time::sleep(every).await;
            continue;
        }
        match sweep(store.as_ref(), &config, clock.now_ms()).await {
            Ok(s) if s == Swept::default() => {}
            Ok(s) => {
                let m = crate::metrics::metrics();
                m.retention_removed.inc_by(s.removed);
                m.retention_keys_forgotten.inc_by(s.keys);
                tracing::info!(removed = s.removed, archived_events = s.archived, keys = s.keys, "retention swept");
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "retention sweep failed; trying again later"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests;
