//! One subscription's worker: read the log after the cursor, deliver what matches in order
//! (retrying with backoff and jitter, dead-lettering what it gives up on), move the cursor;
//! redrive dead letters when asked.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;

use super::redis::RedisStream;
use super::webhook::Webhook;
use super::{Shared, Status};
use crate::domain::TopicEvent;
use crate::domain::subscription::{DeadLetter, Subscription, Target, cursor_name, retry_wait_ms};
use crate::metrics::{DeliveryLabels, SubscriptionLabels, metrics};
use crate::secrets::SecretValue;
use crate::store::StoreError;

/// Events read from the log at once.
const BATCH: usize = 256;
/// Events a Redis pipeline carries at once.
const REDIS_CHUNK: usize = 256;
/// How often an idle worker looks at the log anyway (another process may publish).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Wait after the store failed.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// Dead letters read at once when redriving.
const REDRIVE_PAGE: usize = 100;

/// Why a worker's step did not finish.
enum Halt {
    /// The host is stopping.
    Stopped,
    /// The store failed; the step is retried from the cursor.
    Store(StoreError),
    /// The signing secret cannot be read (missing, or the store failed): nothing is tried, so
    /// nothing is dead-lettered for it; the step is retried from the cursor.
    Key(String),
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// How a chunk of events ended.
enum Outcome {
    Delivered,
    GaveUp { error: String, attempts: u32 },
}

enum Sender {
    Webhook(Webhook),
    Redis(RedisStream),
}

impl Sender {
    fn new(sub: &Subscription, shared: &Shared) -> Result<Self, String> {
        Ok(match &sub.target {
            Target::Webhook { url, timeout_ms, .. } => Self::Webhook(Webhook {
                client: shared.http.clone(),
                subscription: sub.name.clone(),
                url: url.clone(),
                timeout: Duration::from_millis(*timeout_ms),
            }),
            Target::RedisStream { url, stream, max_len } => Self::Redis(RedisStream {
                client: redis::Client::open(url.as_str()).map_err(|e| format!("the Redis URL: {e}"))?,
                stream: stream.clone(),
                max_len: *max_len,
                conn: None,
            }),
        })
    }

    /// Events sent at once: a webhook posts one at a time, a Redis pipeline carries many.
    fn chunk(&self) -> usize {
        match self {
            Self::Webhook(_) => 1,
            Self::Redis(_) => REDIS_CHUNK,
        }
    }

    async fn send(
        &mut self,
        events: &[(u64, &TopicEvent)],
        attempt: u32,
        now_ms: u64,
        key: Option<&SecretValue>,
    ) -> Result<(), String> {
        match self {
            Self::Webhook(w) => {
                for (seq, event) in events {
                    w.send(*seq, event, attempt, now_ms, key).await?;
                }
                Ok(())
            }
            Self::Redis(r) => r.send(events).await,
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    sub: Subscription,
    status: Arc<Status>,
    cursor: String,
    sender: Sender,
}

/// Runs the worker of `sub` until the host stops (or the worker is aborted).
pub(super) async fn run(shared: Arc<Shared>, sub: Subscription, status: Arc<Status>, wake: Arc<Notify>) {
    let sender = match Sender::new(&sub, &shared) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(subscription = %sub.name, error = %e, "subscription cannot deliver");
            *status.last_error.lock().expect("status lock") = Some(e);
            status.failing.store(true, Ordering::Relaxed);
            return;
        }
    };
    let cursor = cursor_name(&sub.name);
    let mut w = Worker { shared: shared.clone(), sub, status, cursor, sender };
    let mut log = shared.log.clone();
    let mut stopping = shared.stopping.clone();
    let mut outage_logged = false;
    loop {
        if *stopping.borrow() {
            return;
        }
        let step = async {
            // A page of redrive at a time, then live delivery: a long redrive does not hold
            // back new events.
            if w.status.redrive.swap(false, Ordering::SeqCst) {
                match w.redrive().await {
                    Ok(more) => w.status.redrive.fetch_or(more, Ordering::SeqCst),
                    Err(e) => {
                        w.status.redrive.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                };
            }
            w.step().await
        };
        match step.await {
            Ok(true) => outage_logged = false,
            Ok(false) => {
                outage_logged = false;
                tokio::select! {
                    _ = log.changed() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stopping.changed() => {}
                }
            }
            Err(Halt::Stopped) => return,
            Err(Halt::Store(e)) => {
                if !std::mem::replace(&mut outage_logged, true) {
                    tracing::warn!(subscription = %w.sub.name, error = %e, "store failed; delivery waits for it");
                }
                tokio::time::sleep(STORE_RETRY).await;
            }
            Err(Halt::Key(e)) => {
                if !std::mem::replace(&mut outage_logged, true) {
                    tracing::warn!(subscription = %w.sub.name, error = %e, "cannot sign; delivery waits for the secret");
                }
                w.status.failing.store(true, Ordering::Relaxed);
                *w.status.last_error.lock().expect("status lock") = Some(e);
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
}

impl Worker {
    /// Delivers the next batch of the log and moves the cursor past it: whether there was one.
    async fn step(&mut self) -> Result<bool, Halt> {
        let store = self.shared.store.clone();
        let cursor = store.cursor(&self.cursor).await?;
        let batch = store.topic_events(cursor, BATCH).await?;
        let Some(&(last, _)) = batch.last() else { return Ok(false) };
        let matching: Vec<(u64, &TopicEvent)> =
            batch.iter().filter(|(_, e)| self.sub.matches(&e.topic)).map(|(s, e)| (*s, e)).collect();
        let key = if matching.is_empty() { None } else { self.signing_key().await.map_err(Halt::Key)? };
        let mut done = cursor;
        for chunk in matching.chunks(self.sender.chunk()) {
            let chunk_end = chunk.last().expect("chunks are not empty").0;
            match self.deliver(chunk, cursor, done, key.as_ref()).await? {
                Outcome::Delivered => self.count("delivered", chunk.len()),
                Outcome::GaveUp { error, attempts } => {
                    let at = self.shared.clock.now_ms();
                    let letters = chunk
                        .iter()
                        .map(|(seq, e)| {
                            let letter = DeadLetter {
                                seq: *seq,
                                event_id: e.id.clone(),
                                topic: e.topic.clone(),
                                attempts,
                                error: error.clone(),
                                at,
                                redrive: false,
                            };
                            (*seq, Some(letter))
                        })
                        .collect();
                    tracing::warn!(subscription = %self.sub.name, events = chunk.len(), first = %chunk[0].1.id, %error, attempts, "delivery given up: dead-lettered");
                    store.dead_letters_write(&self.sub.name, letters, Some(chunk_end)).await?;
                    self.count("dead_lettered", chunk.len());
                    self.status.dead_lettered.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            done = chunk_end;
        }
        store.set_cursor(&self.cursor, last).await?;
        Ok(true)
    }

    /// Sends `chunk` under the retry policy. Before the first wait, the cursor is moved to
    /// `done` (what this batch has delivered so far), so that a crash during a long outage does
    /// not deliver all of it again.
    async fn deliver(
        &mut self,
        chunk: &[(u64, &TopicEvent)],
        cursor: u64,
        done: u64,
        key: Option<&SecretValue>,
    ) -> Result<Outcome, Halt> {
        let policy = self.sub.retry.clone();
        let mut saved = done == cursor;
        let mut stopping = self.shared.stopping.clone();
        let mut attempt = 1;
        loop {
            let now = self.shared.clock.now_ms();
            let error = match self.sender.send(chunk, attempt, now, key).await {
                Ok(()) => {
                    self.status.failing.store(false, Ordering::Relaxed);
                    self.status.delivered.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    let lag = metrics()
                        .delivery_lag_seconds
                        .get_or_create(&SubscriptionLabels { subscription: self.sub.name.clone() });
                    for (_, e) in chunk {
                        lag.observe(now.saturating_sub(e.at) as f64 / 1_000.0);
                    }
                    return Ok(Outcome::Delivered);
                }
                Err(e) => e,
            };
            self.status.failing.store(true, Ordering::Relaxed);
            *self.status.last_error.lock().expect("status lock") = Some(error.clone());
            self.count("failed", chunk.len());
            if attempt >= policy.max_attempts {
                return Ok(Outcome::GaveUp { error, attempts: attempt });
            }
            if !std::mem::replace(&mut saved, true) {
                self.shared.store.set_cursor(&self.cursor, done).await?;
            }
            let wait = retry_wait_ms(&policy, attempt, seed(&chunk[0].1.id, attempt));
            tracing::debug!(subscription = %self.sub.name, %error, attempt, wait_ms = wait, "delivery failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = stopping.wait_for(|s| *s) => return Err(Halt::Stopped),
            }
            attempt += 1;
        }
    }

    /// Tries once more up to [`REDRIVE_PAGE`] dead letters marked for redrive: a delivered one
    /// is removed, a failed one stays (unmarked) with its new error. Whether more may be marked.
    async fn redrive(&mut self) -> Result<bool, Halt> {
        let store = self.shared.store.clone();
        let key = self.signing_key().await.map_err(Halt::Key)?;
        let (mut after, mut tried) = (0, 0);
        loop {
            let letters = store.dead_letters(&self.sub.name, after, REDRIVE_PAGE).await?;
            let Some(last) = letters.last() else { return Ok(false) };
            after = last.seq;
            for letter in letters.into_iter().filter(|l| l.redrive) {
                if tried == REDRIVE_PAGE {
                    return Ok(true);
                }
                tried += 1;
                let now = self.shared.clock.now_ms();
                let found = store.topic_events(letter.seq - 1, 1).await?.into_iter().find(|(s, _)| *s == letter.seq);
                let attempt = letter.attempts.saturating_add(1);
                let result = match &found {
                    None => Err("the event is no longer in the topic log".to_owned()),
                    Some((seq, e)) => self.sender.send(&[(*seq, e)], attempt, now, key.as_ref()).await,
                };
                let update = match result {
                    Ok(()) => {
                        self.count("delivered", 1);
                        self.status.delivered.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Err(error) => {
                        self.count("failed", 1);
                        Some(DeadLetter { attempts: attempt, error, at: now, redrive: false, ..letter.clone() })
                    }
                };
                tracing::info!(subscription = %self.sub.name, event = %letter.event_id, delivered = update.is_none(), "dead letter redriven");
                store.dead_letters_write(&self.sub.name, vec![(letter.seq, update)], None).await?;
            }
        }
    }

    /// The value of the subscription's signing secret, if it has one; `Err` (every try of the
    /// batch fails with it) when it cannot be read.
    async fn signing_key(&self) -> Result<Option<SecretValue>, String> {
        let Target::Webhook { signing_secret: Some(name), .. } = &self.sub.target else { return Ok(None) };
        match self.shared.vault.resolve(std::slice::from_ref(name)).await {
            Ok(mut found) => Ok(found.pop().map(|(_, v)| v)),
            Err(e) => Err(format!("the signing secret: {e}")),
        }
    }

    fn count(&self, outcome: &str, n: usize) {
        let labels = DeliveryLabels { subscription: self.sub.name.clone(), outcome: outcome.to_owned() };
        metrics().deliveries.get_or_create(&labels).inc_by(n as u64);
    }
}

/// A jitter seed that differs between events and attempts.
fn seed(event_id: &str, attempt: u32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (event_id, attempt).hash(&mut h);
    h.finish()
}
