//! The writer thread: every write goes through it. It stages whatever has queued up into one
//! [`Commit`] (the rules of [`crate::store::commit`]), turns the mutations into one sled batch,
//! applies and flushes it once, and then answers all its callers: group commit. Being the only
//! writer also makes the rules' reads race-free, and lets it cache stream heads across groups.
//!
//! Only this thread ever flushes: concurrent `flush_async` hangs in sled 0.34.7 (issue #1308).

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::backup::Capture;
use super::disk_guard::DiskGuard;
use super::{CommitStats, unavailable};
use crate::domain::ExecutionId;
use crate::store::backup::Record;
use crate::store::commit::{Commit, Mutation, Snapshot};
use crate::store::group::{Request, gather};
use crate::store::kv::{self, KvRead, KvSnapshot, Op, Pair};
use crate::store::{ExecutionSummary, StoreError};

/// sled's committed pairs, as the commit rules read them.
struct SledKv<'a>(&'a sled::Db);

impl KvRead for SledKv<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).map_err(unavailable)?.map(|v| v.to_vec()))
    }

    fn last(&mut self, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        let found = self.0.scan_prefix(prefix).next_back().transpose().map_err(unavailable)?;
        Ok(found.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn keys(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.0.scan_prefix(prefix).keys().map(|k| Ok(k.map_err(unavailable)?.to_vec())).collect()
    }
}

/// A group's mutations as one sled batch, and its size in bytes.
#[derive(Default)]
struct Batch {
    batch: sled::Batch,
    bytes: u64,
}

impl Batch {
    fn add(&mut self, op: Op) {
        match op {
            Op::Put(k, v) => {
                self.bytes += (k.len() + v.len()) as u64;
                self.batch.insert(k, v);
            }
            Op::Remove(k) => self.batch.remove(k),
        }
    }
}

/// The writer thread's loop, until every sender is gone.
pub(super) fn run(
    db: sled::Db,
    mut rx: mpsc::Receiver<Request>,
    stats: &CommitStats,
    guard: &DiskGuard,
    capture: &Capture,
    mut state_clock: u64,
) {
    let mut heads: HashMap<ExecutionId, ExecutionSummary> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let group = gather(first, &mut rx);
        // Checked once the group is gathered: a backup that starts waits for a group of its
        // own to pass, so every group after it keeps its copy.
        let keep = capture.on();
        let mut snapshot = KvSnapshot { kv: SledKv(&db), heads: &mut heads };
        let mut commit = Commit::new(&mut snapshot as &mut dyn Snapshot, state_clock);
        let finishers: Vec<_> = group.into_iter().map(|r| (r.stage)(&mut commit)).collect();
        let (mutations, clock) = commit.finish();
        let mut batch = Batch::default();
        let mut kept = Vec::new();
        for m in &mutations {
            kv::ops(m, &mut |op| {
                if keep {
                    kept.push(match &op {
                        Op::Put(k, v) => Record::Put(k.clone(), v.clone()),
                        Op::Remove(k) => Record::Remove(k.clone()),
                    });
                }
                batch.add(op)
            });
        }
        let started = std::time::Instant::now();
        let committed = if mutations.is_empty() {
            Ok(())
        } else {
            guard.check(batch.bytes).and_then(|()| {
                apply_and_flush(&db, batch.batch).map_err(|e| {
                    tracing::error!(error = %e, "store commit failed");
                    unavailable(e)
                })
            })
        };
        match &committed {
            Ok(()) => {
                state_clock = clock;
                if keep {
                    capture.keep(kept);
                }
                // The cache holds committed heads only: bring it up to this group.
                for m in mutations {
                    match m {
                        Mutation::Head { summary, .. } if !summary.status.is_terminal() => {
                            heads.insert(summary.id, summary);
                        }
                        Mutation::Head { summary, .. } | Mutation::Removed { summary, .. } => {
                            heads.remove(&summary.id);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, writes = finishers.len(), "store refused a group of writes"),
        }
        crate::store::observe_commit(stats, finishers.len(), started.elapsed());
        for f in finishers {
            f(committed.clone());
        }
    }
}

/// Applies a group's batch and flushes it, keeping the slowest of each for `bench --sustain`.
fn apply_and_flush(db: &sled::Db, batch: sled::Batch) -> sled::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = crate::metrics::metrics();
    let t0 = std::time::Instant::now();
    db.apply_batch(batch)?;
    let t1 = std::time::Instant::now();
    db.flush()?;
    m.store_apply_max_us.fetch_max((t1 - t0).as_micros() as u64, Relaxed);
    m.store_flush_max_us.fetch_max(t1.elapsed().as_micros() as u64, Relaxed);
    Ok(())
}
