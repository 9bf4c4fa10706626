//! Online backup of a sled store: a scan of every pair while writes go on, then every write
//! committed since the scan began, replayed in order. Every key ends at its value as of the
//! moment the replay was taken: the scan saw it at that value, or at an older one that a
//! replayed write then brings up to date. Writes are never paused; the writer only keeps a copy
//! of what it commits while a backup runs ([`Capture`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::unavailable;
use crate::store::StoreError;
use crate::store::backup::{Chunks, Record};
use crate::sync::lock;

/// Pairs per chunk handed to the stream.
const CHUNK: usize = 1_024;
/// Most bytes of writes a backup keeps while it scans; past it the backup fails (the host
/// is writing faster than the backup is read).
pub const MAX_CAPTURE_BYTES: u64 = 512 << 20;

/// What the writer keeps for a running backup.
#[derive(Default)]
pub(super) struct Captured {
    records: Vec<Record>,
    bytes: u64,
    overflowed: bool,
}

/// Shared by the store and its writer thread: `Some` while a backup runs.
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Option<Captured>>>);

impl Capture {
    /// Whether a backup runs (the writer then keeps copies of what it commits).
    pub(super) fn on(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// Keeps a committed group's records for the running backup, if any.
    pub(super) fn keep(&self, records: Vec<Record>) {
        if let Some(c) = lock(&self.0).as_mut() {
            if c.overflowed {
                return;
            }
            c.bytes += records
                .iter()
                .map(|r| match r {
                    Record::Put(k, v) => (k.len() + v.len()) as u64,
                    Record::Remove(k) => k.len() as u64,
                })
                .sum::<u64>();
            if c.bytes > MAX_CAPTURE_BYTES {
                *c = Captured { overflowed: true, ..Captured::default() };
            } else {
                c.records.extend(records);
            }
        }
    }

    /// Starts keeping; the caller must then let the writer finish the group it may be in (so
    /// that every later group is kept), and call [`scan`].
    pub(super) fn start(&self) -> Result<(), StoreError> {
        let mut c = lock(&self.0);
        if c.is_some() {
            return Err(StoreError::Unavailable("a backup is already running; try again when it is done".into()));
        }
        *c = Some(Captured::default());
        Ok(())
    }

    pub(super) fn take(&self) -> Option<Captured> {
        lock(&self.0).take()
    }
}

/// Ends the capture however the backup ends (a client that goes away included).
struct Stop(Capture);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Streams every pair of `db`, then the writes kept since [`Capture::start`].
pub(super) fn scan(db: sled::Db, capture: Capture) -> Chunks {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let stop = Stop(capture);
        let mut chunk = Vec::with_capacity(CHUNK);
        for pair in db.iter() {
            match pair {
                Ok((k, v)) => chunk.push(Record::Put(k.to_vec(), v.to_vec())),
                Err(e) => {
                    let _ = tx.blocking_send(Err(unavailable(e)));
                    return;
                }
            }
            if chunk.len() == CHUNK && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err() {
                return;
            }
        }
        if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        let captured = stop.0.take().unwrap_or_default();
        if captured.overflowed {
            let why = format!("more than {} MiB were written while the backup ran", MAX_CAPTURE_BYTES >> 20);
            let _ = tx.blocking_send(Err(StoreError::Unavailable(why)));
            return;
        }
        for part in captured.records.chunks(CHUNK) {
            if tx.blocking_send(Ok(part.to_vec())).is_err() {
                return;
            }
        }
    });
    rx
}

/// A new sled data directory being filled from a backup stream.
pub struct Restore {
    db: sled::Db,
    batch: sled::Batch,
    pending: usize,
}

impl Restore {
    /// Creates the store in `dir`, which must not exist or be empty.
    pub fn create(dir: &Path) -> Result<Self, StoreError> {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(StoreError::Unavailable(format!("{} is not empty", dir.display())));
        }
        let db = sled::Config::new().path(dir).open().map_err(unavailable)?;
        Ok(Self { db, batch: sled::Batch::default(), pending: 0 })
    }

    /// Applies `records`, in order.
    pub fn apply(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        for r in records {
            match r {
                Record::Put(k, v) => self.batch.insert(k, v),
                Record::Remove(k) => self.batch.remove(k),
            }
            self.pending += 1;
        }
        if self.pending >= 10_000 {
            self.db.apply_batch(std::mem::take(&mut self.batch)).map_err(unavailable)?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Applies what is left and makes it durable.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.db.apply_batch(std::mem::take(&mut self.batch)).map_err(unavailable)?;
        self.db.flush().map_err(unavailable)?;
        Ok(())
    }
}
