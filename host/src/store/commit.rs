//! The commit rules, once for every backend.
//!
//! A backend opens a [`Commit`] over what it can read (a [`Snapshot`]), stages writes into it
//! one after another, and makes the returned [`Mutation`]s durable in one atomic write. Every
//! rule lives here: expected versions, gapless sequences, read-set checks of plugin state, the
//! state version clock, idempotency records, status indexes, plugin and definition versions.
//! Backends keep only IO: reading what a rule asks for, and writing what it answers.
//!
//! A staged write either stages all of its mutations or none (its error says why), and later
//! writes of the same commit see what earlier ones staged, so that a backend can group many
//! callers' writes into one durable write (group commit) and still check each against the
//! state the ones before it leave behind.

use std::collections::HashMap;

use super::{
    Claim, Created, DefinitionPut, Effects, Ended, ExecutionSummary, HostId, IdempotencyKey, MadeKey, PluginMeta,
    PluginPut, QuarantineEntry, Removal, StateKey, StateValue, StoreError, StoredDefinition,
};
use crate::domain::subscription::{DeadLetter, StartAt, Subscription, cursor_name};
use crate::domain::{
    EventRecord, ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaDefinition, SagaName, TopicEvent,
};

/// What an idempotency key names: the execution it created, and the fingerprint of its request
/// (`None` for records written before fingerprints were kept: they match any request).
pub type KeyRecord = (ExecutionId, Option<[u8; 32]>);

/// What the rules need to read from a backend's committed data.
pub trait Snapshot {
    /// The stream's head, or `None` when there is no such stream.
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError>;
    /// The execution an idempotency key created, and the fingerprint of its request (`None`
    /// for records written before fingerprints were kept: they match any request).
    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError>;
    /// The committed version of a state entry (0: absent).
    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError>;
    /// A plugin's metadata.
    fn plugin(&mut self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError>;
    /// The latest stored version of a definition.
    fn latest_definition(&mut self, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError>;
    /// Whether a secret is stored under `name`.
    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError>;
    /// The `seq` of the topic event with this id, if the log holds one.
    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError>;
    /// Whether a subscription is stored under `name`.
    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError>;
    /// The `seq`s of a subscription's dead letters.
    fn dead_letter_seqs(&mut self, name: &str) -> Result<Vec<u64>, StoreError>;
    /// The `seq`s naming a stream's stored writes (each write is stored under its last
    /// record's `seq`).
    fn writes(&mut self, id: ExecutionId) -> Result<Vec<u64>, StoreError>;
    /// Whether an execution is quarantined.
    fn quarantined(&mut self, id: ExecutionId) -> Result<bool, StoreError>;
    /// A shared store: the host holding an execution's lease (`None`: no host holds it).
    fn owner(&mut self, _id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        Ok(None)
    }
    /// A shared store: whether `host`'s lease is live.
    fn live(&mut self, _host: HostId) -> Result<bool, StoreError> {
        Ok(true)
    }
}

impl<S: Snapshot + ?Sized> Snapshot for &mut S {
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        (**self).summary(id)
    }
    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        (**self).idempotency(key)
    }
    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        (**self).state_version(key)
    }
    fn plugin(&mut self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        (**self).plugin(name, version)
    }
    fn latest_definition(&mut self, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
        (**self).latest_definition(name)
    }
    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        (**self).secret_exists(name)
    }
    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        (**self).topic_event_seq(id)
    }
    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        (**self).subscription_exists(name)
    }
    fn dead_letter_seqs(&mut self, name: &str) -> Result<Vec<u64>, StoreError> {
        (**self).dead_letter_seqs(name)
    }
    fn writes(&mut self, id: ExecutionId) -> Result<Vec<u64>, StoreError> {
        (**self).writes(id)
    }
    fn quarantined(&mut self, id: ExecutionId) -> Result<bool, StoreError> {
        (**self).quarantined(id)
    }
    fn owner(&mut self, id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        (**self).owner(id)
    }
    fn live(&mut self, host: HostId) -> Result<bool, StoreError> {
        (**self).live(host)
    }
}

/// One change a backend must make durable. Applied in order, all in one atomic write.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// A new stream: index it under its saga (and its business key, if it has one).
    NewStream {
        /// The stream.
        id: ExecutionId,
        /// Its saga.
        saga: SagaName,
        /// Its business key.
        key: Option<String>,
    },
    /// Records that continue the stream (numbered right after its current version).
    Records {
        /// The stream.
        id: ExecutionId,
        /// The records, gapless.
        records: Vec<EventRecord>,
    },
    /// The stream's new head. When `summary.status` differs from `previous` (always for a new
    /// stream, whose `previous` is `None`), the status index moves.
    Head {
        /// The head after this write.
        summary: ExecutionSummary,
        /// The status before it.
        previous: Option<ExecutionStatus>,
    },
    /// A trigger's idempotency key now names this execution.
    Idempotency {
        /// The key.
        key: IdempotencyKey,
        /// The execution it created.
        id: ExecutionId,
        /// When (the execution's start): its window counts from here.
        at: u64,
    },
    /// Retention: an ended execution removed with its records, head and indexes.
    Removed {
        /// Its head.
        summary: ExecutionSummary,
        /// The `seq`s naming its stored writes.
        writes: Vec<u64>,
        /// The times of its entries in the index of ended executions.
        ended: Vec<u64>,
    },
    /// Retention: an entry of the index of ended executions that names nothing to remove
    /// (the execution was resumed, removed, or quarantined).
    Unended {
        /// The entry's time.
        at: u64,
        /// The execution.
        id: ExecutionId,
    },
    /// An idempotency key whose window has passed: its time index entry goes, and its record
    /// too when it still names the execution the entry was made for.
    KeyForgotten {
        /// The key.
        key: MadeKey,
        /// Whether its record goes.
        record: bool,
    },
    /// Set a state entry at a new version.
    StateSet {
        /// The entry.
        key: StateKey,
        /// Its value.
        value: StateValue,
        /// Its version, from the store-wide clock.
        version: u64,
    },
    /// Delete a state entry.
    StateDelete {
        /// The entry.
        key: StateKey,
    },
    /// The state version clock's new value (persist it: versions are never reused).
    StateClock(u64),
    /// A new plugin: its metadata, bytes and precompiled artifact.
    Plugin {
        /// Metadata.
        meta: PluginMeta,
        /// The component's bytes (stored by digest).
        bytes: Vec<u8>,
        /// `(key, bytes)` of its precompiled artifact.
        artifact: Option<(String, Vec<u8>)>,
    },
    /// A precompiled artifact.
    Artifact {
        /// Its key.
        key: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A new definition version.
    Definition(StoredDefinition),
    /// An execution set aside because its stream cannot be read.
    Quarantine(QuarantineEntry),
    /// An event appended to the topic log at `seq` (indexed by its id).
    TopicEvent {
        /// Its place in the log (from the store-wide clock: increasing, not gapless).
        seq: u64,
        /// The event.
        event: TopicEvent,
    },
    /// A named cursor of the topic log moved.
    Cursor {
        /// Its name.
        name: String,
        /// The last `seq` it has dealt with.
        seq: u64,
    },
    /// A subscription stored (`Some`), or removed (`None`) with its cursor.
    Subscription {
        /// Its name.
        name: String,
        /// It.
        record: Option<Subscription>,
    },
    /// A subscription's dead letter stored (`Some`) or removed (`None`).
    DeadLetter {
        /// The subscription.
        subscription: String,
        /// The event's `seq`.
        seq: u64,
        /// The letter.
        record: Option<DeadLetter>,
    },
    /// A shared store: the host now holding an execution's lease (`None`: released, the
    /// execution ended).
    Owner {
        /// The execution.
        id: ExecutionId,
        /// The host.
        host: Option<HostId>,
    },
    /// A secret's record stored (`Some`) or removed (`None`).
    Secret {
        /// Its name.
        name: String,
        /// Its record (sealed unless the host has no key: docs/secrets.md).
        record: Option<Vec<u8>>,
    },
}

/// Checks that `records` continue a stream at `expected` without gaps.
pub fn check_sequence(expected: u64, records: &[EventRecord]) -> Result<(), StoreError> {
    let ok = !records.is_empty() && records.iter().zip(expected + 1..).all(|(r, seq)| r.seq == seq);
    if ok { Ok(()) } else { Err(StoreError::BadSequence(expected + 1)) }
}

/// Writes being staged into one atomic commit.
pub struct Commit<S> {
    snapshot: S,
    mutations: Vec<Mutation>,
    /// Heads staged in this commit (`None`: removed).
    heads: HashMap<ExecutionId, Option<ExecutionSummary>>,
    /// Idempotency records staged in this commit (`None`: forgotten).
    idempotency: HashMap<(SagaName, String), Option<KeyRecord>>,
    state: HashMap<StateKey, u64>,
    plugins: HashMap<(PluginName, PluginVersion), PluginMeta>,
    definitions: HashMap<SagaName, StoredDefinition>,
    secrets: HashMap<String, bool>,
    subscriptions: HashMap<String, bool>,
    /// Dead letters staged in this commit, by subscription.
    letters: HashMap<String, Vec<u64>>,
    topic_events: HashMap<String, u64>,
    state_clock: u64,
    clock_moved: bool,
    /// A shared store: the host committing (leases are checked and taken for it).
    host: Option<HostId>,
    owners: HashMap<ExecutionId, Option<HostId>>,
}

impl<S: Snapshot> Commit<S> {
    /// A commit over `snapshot`, with the state version clock at `state_clock`.
    pub fn new(snapshot: S, state_clock: u64) -> Self {
        Self {
            snapshot,
            mutations: Vec::new(),
            heads: HashMap::new(),
            idempotency: HashMap::new(),
            state: HashMap::new(),
            plugins: HashMap::new(),
            definitions: HashMap::new(),
            secrets: HashMap::new(),
            subscriptions: HashMap::new(),
            letters: HashMap::new(),
            topic_events: HashMap::new(),
            state_clock,
            clock_moved: false,
            host: None,
            owners: HashMap::new(),
        }
    }

    /// The commit of `host` in a store shared by several hosts: new executions are leased to
    /// it, its driver's appends need its lease ([`drive`](Self::drive)), leases are released
    /// when executions end.
    pub fn for_host(mut self, host: HostId) -> Self {
        self.host = Some(host);
        self
    }

    fn owner(&mut self, id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        match self.owners.get(&id) {
            Some(owner) => Ok(*owner),
            None => self.snapshot.owner(id),
        }
    }

    fn set_owner(&mut self, id: ExecutionId, host: Option<HostId>) {
        self.owners.insert(id, host);
        self.mutations.push(Mutation::Owner { id, host });
    }

    /// Takes the lease of `id` for this commit's host unless another live host holds it.
    pub fn claim(&mut self, id: ExecutionId) -> Result<Claim, StoreError> {
        let Some(me) = self.host else { return Ok(Claim::Mine) };
        self.check_lease(me)?;
        let head = self.head(id)?.ok_or(StoreError::NotFound(id))?;
        match self.owner(id)? {
            Some(owner) if owner == me => Ok(Claim::Mine),
            Some(owner) if self.snapshot.live(owner)? => Ok(Claim::Theirs(owner)),
            // Nothing to lease for an execution that ended: its driver only reads it.
            _ if head.status.is_terminal() => Ok(Claim::Mine),
            _ => {
                self.set_owner(id, Some(me));
                Ok(Claim::Mine)
            }
        }
    }

    /// The driver's append: [`append`](Self::append), provided this commit's host holds the
    /// execution's lease (else [`StoreError::NotOwner`]) and its own lease is live (else
    /// [`StoreError::Unavailable`], retried until renewed).
    pub fn drive(
        &mut self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError> {
        if let Some(me) = self.host {
            if self.owner(id)? != Some(me) {
                return Err(StoreError::NotOwner(id));
            }
            self.check_lease(me)?;
        }
        self.append(id, expected, records, state)
    }

    /// This host's own lease must be live for it to take or record anything it holds. A lapsed
    /// lease is not a refusal: the host renews it (and keeps what nobody adopted meanwhile),
    /// so its writes wait and retry like writes to a store that does not answer.
    fn check_lease(&mut self, me: HostId) -> Result<(), StoreError> {
        if self.snapshot.live(me)? {
            Ok(())
        } else {
            Err(StoreError::Unavailable("this host's lease has lapsed; renewing it".into()))
        }
    }

    /// The backend's snapshot (for its caches).
    pub fn snapshot_mut(&mut self) -> &mut S {
        &mut self.snapshot
    }

    /// Whether nothing has been staged.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    /// Everything staged, in order, ending with the clock when it moved; and the clock.
    pub fn finish(mut self) -> (Vec<Mutation>, u64) {
        if self.clock_moved {
            self.mutations.push(Mutation::StateClock(self.state_clock));
        }
        (self.mutations, self.state_clock)
    }

    fn head(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        match self.heads.get(&id) {
            Some(s) => Ok(s.clone()),
            None => self.snapshot.summary(id),
        }
    }

    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        match self.state.get(key) {
            Some(v) => Ok(*v),
            None => self.snapshot.state_version(key),
        }
    }

    /// Creates a stream with `records` (numbered from 1), unless `idem` was used before.
    pub fn create(
        &mut self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        if let Some(key) = &idem {
            let existing = match self.idempotency.get(&(key.saga.clone(), key.key.clone())) {
                Some(found) => *found,
                None => self.snapshot.idempotency(key)?,
            };
            if let Some((first, fingerprint)) = existing {
                return Ok(match fingerprint {
                    Some(f) if f != key.fingerprint => Created::KeyReused(first),
                    _ => Created::Existing(first),
                });
            }
        }
        check_sequence(0, &records)?;
        if let Some(me) = self.host {
            self.check_lease(me)?;
        }
        if let Some(existing) = self.head(id)? {
            return Err(StoreError::Conflict { id, expected: 0, actual: existing.version });
        }
        let mut summary = ExecutionSummary::new(id, saga.clone(), &records[0]);
        summary.advance(&records[1..]);
        self.mutations.push(Mutation::NewStream { id, saga, key: summary.key.clone() });
        if let Some(key) = idem {
            self.idempotency.insert((key.saga.clone(), key.key.clone()), Some((id, Some(key.fingerprint))));
            self.mutations.push(Mutation::Idempotency { key, id, at: summary.created_at });
        }
        self.mutations.push(Mutation::Records { id, records });
        let ended = summary.status.is_terminal();
        self.heads.insert(id, Some(summary.clone()));
        self.mutations.push(Mutation::Head { summary, previous: None });
        if let Some(me) = self.host
            && !ended
        {
            self.set_owner(id, Some(me));
        }
        Ok(Created::New)
    }

    /// Appends `records` if the stream is at `expected`, with `state`'s writes if every entry
    /// in its read set is still at the version read, and its events in the topic log (those
    /// whose id is there already are skipped).
    pub fn append(
        &mut self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError> {
        let mut summary = self.head(id)?.ok_or(StoreError::NotFound(id))?;
        if summary.version != expected {
            return Err(StoreError::Conflict { id, expected, actual: summary.version });
        }
        check_sequence(expected, &records)?;
        for (key, read) in &state.reads {
            let now = self.state_version(key)?;
            if now != *read {
                return Err(StoreError::StateConflict { key: key.to_string(), read: *read, now });
            }
        }
        // Read before anything is staged: a failed read stages nothing.
        let mut events = Vec::with_capacity(state.events.len());
        for event in state.events {
            if self.topic_event_seq(&event.id)?.is_none() {
                events.push(event);
            }
        }
        for (key, value) in state.writes {
            match value {
                Some(value) => {
                    self.state_clock += 1;
                    self.clock_moved = true;
                    self.state.insert(key.clone(), self.state_clock);
                    self.mutations.push(Mutation::StateSet { key, value, version: self.state_clock });
                }
                None => {
                    self.state.insert(key.clone(), 0);
                    self.mutations.push(Mutation::StateDelete { key });
                }
            }
        }
        let previous = Some(summary.status);
        summary.advance(&records);
        let ended = summary.status.is_terminal() && previous.is_some_and(|p| !p.is_terminal());
        // A resumed execution (terminal → compensating) is held by the host that resumed it.
        let resumed = !summary.status.is_terminal() && previous.is_some_and(|p| p.is_terminal());
        self.mutations.push(Mutation::Records { id, records });
        self.heads.insert(id, Some(summary.clone()));
        self.mutations.push(Mutation::Head { summary, previous });
        for event in events {
            self.stage_event(event);
        }
        match self.host {
            Some(_) if ended => self.set_owner(id, None),
            Some(me) if resumed => self.set_owner(id, Some(me)),
            _ => {}
        }
        Ok(())
    }

    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        match self.topic_events.get(id) {
            Some(seq) => Ok(Some(*seq)),
            None => self.snapshot.topic_event_seq(id),
        }
    }

    /// Stages a new event at the next tick of the store-wide clock: its `seq`.
    fn stage_event(&mut self, event: TopicEvent) -> u64 {
        self.state_clock += 1;
        self.clock_moved = true;
        let seq = self.state_clock;
        self.topic_events.insert(event.id.clone(), seq);
        self.mutations.push(Mutation::TopicEvent { seq, event });
        seq
    }

    /// Stores a plugin unless its version exists (same bytes: `Unchanged`; other: `Conflict`).
    pub fn put_plugin(
        &mut self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        let key = (meta.name.clone(), meta.version.clone());
        let existing = match self.plugins.get(&key) {
            Some(m) => Some(m.clone()),
            None => self.snapshot.plugin(&key.0, &key.1)?,
        };
        if let Some(existing) = existing {
            return Ok(if existing.digest == meta.digest {
                PluginPut::Unchanged(existing)
            } else {
                PluginPut::Conflict(existing)
            });
        }
        self.plugins.insert(key, meta.clone());
        self.mutations.push(Mutation::Plugin { meta, bytes, artifact });
        Ok(PluginPut::Created)
    }

    /// Stores a precompiled artifact.
    pub fn put_artifact(&mut self, key: String, bytes: Vec<u8>) {
        self.mutations.push(Mutation::Artifact { key, bytes });
    }

    /// Appends `event` to the topic log unless an event with its id is there: its `seq`, and
    /// whether it is new. Seqs come from the store-wide clock, so the log's order is the order
    /// of commits.
    pub fn publish(&mut self, event: TopicEvent) -> Result<(u64, bool), StoreError> {
        if let Some(seq) = self.topic_event_seq(&event.id)? {
            return Ok((seq, false));
        }
        Ok((self.stage_event(event), true))
    }

    /// Moves the named cursor of the topic log to `seq`.
    pub fn set_cursor(&mut self, name: String, seq: u64) {
        self.mutations.push(Mutation::Cursor { name, seq });
    }

    /// Stores a secret's `record` under `name`; `true` when the name was new.
    pub fn put_secret(&mut self, name: String, record: Vec<u8>) -> Result<bool, StoreError> {
        let existed = self.secret_exists(&name)?;
        self.secrets.insert(name.clone(), true);
        self.mutations.push(Mutation::Secret { name, record: Some(record) });
        Ok(!existed)
    }

    /// Removes the secret `name`; `false` (and nothing staged) when there was none.
    pub fn delete_secret(&mut self, name: String) -> Result<bool, StoreError> {
        if !self.secret_exists(&name)? {
            return Ok(false);
        }
        self.secrets.insert(name.clone(), false);
        self.mutations.push(Mutation::Secret { name, record: None });
        Ok(true)
    }

    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        match self.secrets.get(name) {
            Some(exists) => Ok(*exists),
            None => self.snapshot.secret_exists(name),
        }
    }

    /// Stores `sub`; `true` when its name was new. A new subscription's cursor starts at the
    /// log's end (`StartAt::Now`: the events recorded after this commit) or its start; a
    /// replaced one keeps its cursor and dead letters.
    pub fn put_subscription(&mut self, sub: Subscription, start: StartAt) -> Result<bool, StoreError> {
        let existed = self.subscription_exists(&sub.name)?;
        if !existed {
            let seq = match start {
                StartAt::Now => self.state_clock,
                StartAt::Start => 0,
            };
            self.mutations.push(Mutation::Cursor { name: cursor_name(&sub.name), seq });
        }
        self.subscriptions.insert(sub.name.clone(), true);
        self.mutations.push(Mutation::Subscription { name: sub.name.clone(), record: Some(sub) });
        Ok(!existed)
    }

    /// Removes the subscription `name` with its cursor and dead letters; `false` (and nothing
    /// staged) when there was none.
    pub fn delete_subscription(&mut self, name: String) -> Result<bool, StoreError> {
        if !self.subscription_exists(&name)? {
            return Ok(false);
        }
        let mut seqs = self.snapshot.dead_letter_seqs(&name)?;
        seqs.extend(self.letters.remove(&name).unwrap_or_default());
        seqs.sort_unstable();
        seqs.dedup();
        for seq in seqs {
            self.mutations.push(Mutation::DeadLetter { subscription: name.clone(), seq, record: None });
        }
        self.subscriptions.insert(name.clone(), false);
        self.mutations.push(Mutation::Subscription { name, record: None });
        Ok(true)
    }

    /// Stores (`Some`) or removes (`None`) dead letters of subscription `name` and moves its
    /// cursor to `cursor`, if given; nothing when the subscription is gone (`false`).
    pub fn dead_letters(
        &mut self,
        name: String,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError> {
        if !self.subscription_exists(&name)? {
            return Ok(false);
        }
        for (seq, record) in letters {
            if record.is_some() {
                self.letters.entry(name.clone()).or_default().push(seq);
            }
            self.mutations.push(Mutation::DeadLetter { subscription: name.clone(), seq, record });
        }
        if let Some(seq) = cursor {
            self.mutations.push(Mutation::Cursor { name: cursor_name(&name), seq });
        }
        Ok(true)
    }

    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        match self.subscriptions.get(name) {
            Some(exists) => Ok(*exists),
            None => self.snapshot.subscription_exists(name),
        }
    }

    /// Stores `definition` as the next version of `name`, unless identical to the latest.
    pub fn put_definition(
        &mut self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        let latest = match self.definitions.get(&name) {
            Some(d) => Some(d.clone()),
            None => self.snapshot.latest_definition(&name)?,
        };
        let (version, put) = match latest {
            Some(d) if d.definition == definition => return Ok((d, DefinitionPut::Unchanged)),
            Some(d) => (d.version + 1, DefinitionPut::Replaced),
            None => (1, DefinitionPut::Created),
        };
        let stored = StoredDefinition { name: name.clone(), version, created_at: at, definition };
        self.definitions.insert(name, stored.clone());
        self.mutations.push(Mutation::Definition(stored.clone()));
        Ok((stored, put))
    }

    /// Sets an execution aside: recorded with its reason, and (when its head can still be
    /// read and it was unfinished) listed as `failed`, so that nothing drives it again.
    pub fn quarantine(&mut self, entry: QuarantineEntry) -> Result<(), StoreError> {
        let head = match self.head(entry.id) {
            Ok(head) => head,
            Err(e) if e.is_permanent() => None,
            Err(e) => return Err(e),
        };
        if let Some(mut summary) = head.filter(|s| !s.status.is_terminal()) {
            let previous = Some(summary.status);
            summary.status = ExecutionStatus::Failed;
            let id = summary.id;
            self.heads.insert(id, Some(summary.clone()));
            self.mutations.push(Mutation::Head { summary, previous });
            if self.host.is_some() {
                self.set_owner(id, None);
            }
        }
        self.mutations.push(Mutation::Quarantine(entry));
        Ok(())
    }

    /// Retention: removes the execution an entry of the index of ended executions names, with
    /// its records, head and indexes, when it ended at or before `cutoff` (its saga's retention
    /// has passed). An execution that was recorded for after `cutoff` is kept (its entry too,
    /// to be looked at again); an entry that names nothing to remove (the execution was
    /// resumed, is gone, or is quarantined: those wait for an operator) is dropped.
    pub fn remove(&mut self, entry: &Ended, cutoff: u64) -> Result<Removal, StoreError> {
        let id = entry.id;
        let head = self.head(id)?;
        let summary = match head {
            Some(s) if s.status.is_terminal() && !self.snapshot.quarantined(id)? => s,
            _ => {
                self.mutations.push(Mutation::Unended { at: entry.at, id });
                return Ok(Removal::Dropped);
            }
        };
        if summary.updated_at > cutoff {
            return Ok(Removal::Kept);
        }
        let writes = self.snapshot.writes(id)?;
        // Recorded for after it ended (a resumed execution that ended again): the later end
        // has its own entry.
        let ended = if summary.updated_at == entry.at { vec![entry.at] } else { vec![entry.at, summary.updated_at] };
        self.heads.insert(id, None);
        self.mutations.push(Mutation::Removed { summary, writes, ended });
        Ok(Removal::Removed)
    }

    /// [`remove`](Self::remove) for each entry with its cutoff, in order (an entry whose read
    /// fails stops the rest; those before it stay staged).
    pub fn remove_all(&mut self, entries: &[(Ended, u64)]) -> Result<Vec<Removal>, StoreError> {
        entries.iter().map(|(e, cutoff)| self.remove(e, *cutoff)).collect()
    }

    /// [`forget_key`](Self::forget_key) for each key, in order; how many records went (a key
    /// whose read fails stops the rest; those before it stay staged).
    pub fn forget_keys(&mut self, made: Vec<MadeKey>) -> Result<usize, StoreError> {
        let mut forgotten = 0;
        for m in made {
            forgotten += usize::from(self.forget_key(m)?);
        }
        Ok(forgotten)
    }

    /// Forgets an idempotency key whose window has passed: its record goes when it still
    /// names the execution it was made for (`true`), its time index entry in any case.
    pub fn forget_key(&mut self, made: MadeKey) -> Result<bool, StoreError> {
        let name = (made.saga.clone(), made.key.clone());
        let current = match self.idempotency.get(&name) {
            Some(found) => *found,
            None => self.snapshot.idempotency(&IdempotencyKey {
                saga: made.saga.clone(),
                key: made.key.clone(),
                fingerprint: [0; 32],
            })?,
        };
        let record = current.is_some_and(|(id, _)| id == made.id);
        if record {
            self.idempotency.insert(name, None);
        }
        self.mutations.push(Mutation::KeyForgotten { key: made, record });
        Ok(record)
    }
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
