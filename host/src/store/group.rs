//! Group commit, once for both durable backends: callers hand a write to the backend's writer
//! thread as a [`Request`]; the writer stages whatever has queued up into one
//! [`Commit`](super::commit::Commit) and makes it durable in one atomic write, then answers
//! every caller of the group.
//!
//! A request says what it will read ([`Needs`]) so that a backend whose reads cost a round
//! trip (PostgreSQL) can fetch a whole group's in one query before staging it.

use tokio::sync::{mpsc, oneshot};

use super::commit::{Commit, Snapshot};
use super::{
    Claim, Created, DefinitionPut, Effects, Ended, IdempotencyKey, MadeKey, PluginMeta, PluginPut, QuarantineEntry,
    Removal, StoreError, StoredDefinition, keys,
};
use crate::domain::subscription::{DeadLetter, StartAt, Subscription};
use crate::domain::{EventRecord, ExecutionId, SagaDefinition, SagaName, TopicEvent};

/// Most writes merged into one group: bounds the latency a large group adds to its first caller.
pub(super) const MAX_GROUP: usize = 4_096;

/// Answers a staged write's caller once its group has been committed (or refused).
pub(super) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The commit a write stages itself into.
pub(super) type Staging<'a> = Commit<&'a mut dyn Snapshot>;

/// A write that stages itself into the group's commit and returns how to answer its caller.
pub(super) type Stage = Box<dyn for<'a, 'b> FnOnce(&'b mut Staging<'a>) -> Finish + Send>;

/// What a write will read while it is staged: stream heads and exact keys.
#[derive(Default, Debug, Clone)]
pub(super) struct Needs {
    pub(super) heads: Vec<ExecutionId>,
    pub(super) keys: Vec<Vec<u8>>,
}

/// One write on its way to the writer.
pub(super) struct Request {
    pub(super) needs: Needs,
    pub(super) stage: Stage,
}

/// Answers `reply` with `result` once the group it was staged in is committed.
fn finish<T: Send + 'static>(result: Result<T, StoreError>, reply: oneshot::Sender<Result<T, StoreError>>) -> Finish {
    Box::new(move |committed| {
        // Failed writes staged nothing, so they answer with their own error.
        let answer = match (result, committed) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) | (Err(e), _) => Err(e),
        };
        let _ = reply.send(answer);
    })
}

/// Takes up to [`MAX_GROUP`] requests: `first` and whatever else has queued up.
pub(super) fn gather(first: Request, rx: &mut mpsc::Receiver<Request>) -> Vec<Request> {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
    }
    group
}

/// The sending half of a writer thread's queue, with one method per kind of write.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Request>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("store writer has stopped".into())
}

impl Writer {
    /// A writer and the queue its thread reads.
    pub(super) fn new() -> (Self, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        (Self { tx }, rx)
    }

    /// Stages `f` into the writer's next group (the rules of [`super::commit`]) and answers
    /// once that group is durable.
    pub(super) async fn commit<T: Send + 'static>(
        &self,
        needs: Needs,
        f: impl for<'a, 'b> FnOnce(&'b mut Staging<'a>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let stage: Stage = Box::new(move |c| finish(f(c), reply));
        self.tx.send(Request { needs, stage }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub(super) async fn create(
        &self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let keys = idem.iter().map(|k| keys::idempotency(&k.saga, &k.key)).collect();
        self.commit(Needs { heads: vec![id], keys }, move |c| c.create(id, saga, records, idem)).await
    }

    /// Appends to a stream; `driven`: the driver's append, which needs the execution's lease
    /// in a shared store.
    pub(super) async fn append(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
        driven: bool,
    ) -> Result<(), StoreError> {
        let keys = state
            .reads
            .iter()
            .map(|(k, _)| keys::state(k))
            .chain(state.events.iter().map(|e| keys::topic_event_id(&e.id)))
            .collect();
        self.commit(Needs { heads: vec![id], keys }, move |c| {
            if driven { c.drive(id, expected, records, state) } else { c.append(id, expected, records, state) }
        })
        .await
    }

    pub(super) async fn claim(&self, id: ExecutionId) -> Result<Claim, StoreError> {
        self.commit(Needs { heads: vec![id], keys: Vec::new() }, move |c| c.claim(id)).await
    }

    pub(super) async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), StoreError> {
        self.commit(Needs { heads: vec![entry.id], keys: Vec::new() }, move |c| c.quarantine(entry)).await
    }

    pub(super) async fn remove(&self, entries: Vec<(Ended, u64)>) -> Result<Vec<Removal>, StoreError> {
        let needs = Needs {
            heads: entries.iter().map(|(e, _)| e.id).collect(),
            keys: entries.iter().map(|(e, _)| keys::quarantine(e.id)).collect(),
        };
        self.commit(needs, move |c| c.remove_all(&entries)).await
    }

    pub(super) async fn forget_keys(&self, made: Vec<MadeKey>) -> Result<usize, StoreError> {
        let needs =
            Needs { heads: Vec::new(), keys: made.iter().map(|m| keys::idempotency(&m.saga, &m.key)).collect() };
        self.commit(needs, move |c| c.forget_keys(made)).await
    }

    pub(super) async fn put_plugin(
        &self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::plugin(&meta.name, &meta.version)] };
        self.commit(needs, move |c| c.put_plugin(meta, bytes, artifact)).await
    }

    pub(super) async fn put_artifact(&self, key: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.commit(Needs::default(), move |c| {
            c.put_artifact(key, bytes);
            Ok(())
        })
        .await
    }

    pub(super) async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        self.commit(Needs::default(), move |c| c.put_definition(name, definition, at)).await
    }

    pub(super) async fn put_secret(&self, name: String, record: Vec<u8>) -> Result<bool, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::secret(&name)] };
        self.commit(needs, move |c| c.put_secret(name, record)).await
    }

    pub(super) async fn delete_secret(&self, name: String) -> Result<bool, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::secret(&name)] };
        self.commit(needs, move |c| c.delete_secret(name)).await
    }

    pub(super) async fn publish(&self, event: TopicEvent) -> Result<(u64, bool), StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::topic_event_id(&event.id)] };
        self.commit(needs, move |c| c.publish(event)).await
    }

    pub(super) async fn set_cursor(&self, name: String, seq: u64) -> Result<(), StoreError> {
        self.commit(Needs::default(), move |c| {
            c.set_cursor(name, seq);
            Ok(())
        })
        .await
    }

    pub(super) async fn put_subscription(&self, sub: Subscription, start: StartAt) -> Result<bool, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::subscription(&sub.name)] };
        self.commit(needs, move |c| c.put_subscription(sub, start)).await
    }

    pub(super) async fn delete_subscription(&self, name: String) -> Result<bool, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::subscription(&name)] };
        self.commit(needs, move |c| c.delete_subscription(name)).await
    }

    pub(super) async fn dead_letters(
        &self,
        name: String,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError> {
        let needs = Needs { heads: Vec::new(), keys: vec![keys::subscription(&name)] };
        self.commit(needs, move |c| c.dead_letters(name, letters, cursor)).await
    }
}
