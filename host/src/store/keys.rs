//! Every sled key the host writes, in one place. One tree holds everything, so that one
//! `apply_batch` makes a group of writes atomic; a leading tag byte separates the tables.
//!
//! Names never contain `0x00` (they are validated), so it separates variable-length parts.

use super::StateKey;
use crate::domain::{ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaName};

const EVENT: u8 = b'e';
const SUMMARY: u8 = b'x';
const BY_STATUS: u8 = b's';
const BY_SAGA: u8 = b'g';
const IDEMPOTENCY: u8 = b'i';
const PLUGIN: u8 = b'p';
const BLOB: u8 = b'b';
const ARTIFACT: u8 = b'a';
const DEFINITION: u8 = b'd';
const STATE: u8 = b't';
const META: u8 = b'm';
const QUARANTINE: u8 = b'q';
const SECRET: u8 = b'k';
const BY_KEY: u8 = b'y';
const TOPIC_EVENT: u8 = b'v';
const TOPIC_EVENT_ID: u8 = b'w';
const CURSOR: u8 = b'c';
const SUBSCRIPTION: u8 = b'u';
const DEAD_LETTER: u8 = b'l';
const TOPIC_EVENT_BY_KEY: u8 = b'z';
const ENDED: u8 = b'r';
const KEY_MADE: u8 = b'j';

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `t ‖ plugin ‖ 0 ‖ collection ‖ 0 ‖ key`: a plugin's entries sort by collection, then key.
pub fn state(k: &StateKey) -> Vec<u8> {
    key(&[&[STATE], k.plugin.as_str().as_bytes(), &[0], k.collection.as_bytes(), &[0], k.key.as_bytes()])
}

/// Prefix of a plugin's entries, or of one of its collections.
pub fn state_of(plugin: &PluginName, collection: Option<&str>) -> Vec<u8> {
    match collection {
        Some(c) => key(&[&[STATE], plugin.as_str().as_bytes(), &[0], c.as_bytes(), &[0]]),
        None => key(&[&[STATE], plugin.as_str().as_bytes(), &[0]]),
    }
}

/// The entry key back from a stored key of `plugin`'s namespace.
pub fn parse_state(plugin: &PluginName, k: &[u8]) -> Option<StateKey> {
    let rest = k.strip_prefix(state_of(plugin, None).as_slice())?;
    let split = rest.iter().position(|&b| b == 0)?;
    let collection = std::str::from_utf8(&rest[..split]).ok()?;
    let key = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some(StateKey { plugin: plugin.clone(), collection: collection.into(), key: key.into() })
}

/// The store-wide counter state versions come from.
pub fn state_clock() -> Vec<u8> {
    key(&[&[META], b"state-clock"])
}

/// `e ‖ id ‖ seq (big-endian)`: the records of one write to a stream, under the `seq` of the
/// last of them. Keys sort by sequence, and a range from `after + 1` finds every record after
/// `after` (the first write found may also hold earlier ones).
pub fn event(id: ExecutionId, seq: u64) -> Vec<u8> {
    key(&[&[EVENT], id.as_bytes(), &seq.to_be_bytes()])
}

/// The `seq` an event key is named by.
pub fn event_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(k.len().checked_sub(8)?..)?.try_into().ok()?))
}

/// Prefix of all records of one stream.
pub fn events_of(id: ExecutionId) -> Vec<u8> {
    key(&[&[EVENT], id.as_bytes()])
}

/// `x ‖ id`: the stream's summary, rewritten when its status changes; its version and
/// update time are brought up to date from the stream's last event key when read.
pub fn summary(id: ExecutionId) -> Vec<u8> {
    key(&[&[SUMMARY], id.as_bytes()])
}

/// Prefix of all summaries.
pub fn summaries() -> Vec<u8> {
    vec![SUMMARY]
}

fn status_tag(s: ExecutionStatus) -> u8 {
    match s {
        ExecutionStatus::Running => b'r',
        ExecutionStatus::Compensating => b'c',
        ExecutionStatus::Completed => b'd',
        ExecutionStatus::Compensated => b'u',
        ExecutionStatus::Failed => b'f',
    }
}

/// `s ‖ status ‖ id`: executions by status.
pub fn by_status(s: ExecutionStatus, id: ExecutionId) -> Vec<u8> {
    key(&[&[BY_STATUS, status_tag(s)], id.as_bytes()])
}

/// Prefix of one status's index.
pub fn status_index(s: ExecutionStatus) -> Vec<u8> {
    vec![BY_STATUS, status_tag(s)]
}

/// `g ‖ saga ‖ 0 ‖ id`: executions by saga.
pub fn by_saga(saga: &SagaName, id: ExecutionId) -> Vec<u8> {
    key(&[&[BY_SAGA], saga.as_str().as_bytes(), &[0], id.as_bytes()])
}

/// Prefix of one saga's index.
pub fn saga_index(saga: &SagaName) -> Vec<u8> {
    key(&[&[BY_SAGA], saga.as_str().as_bytes(), &[0]])
}

/// `y ‖ key ‖ 0 ‖ id`: an execution with a business key (keys are printable ASCII, no NUL).
pub fn by_key(k: &str, id: ExecutionId) -> Vec<u8> {
    key(&[&[BY_KEY], k.as_bytes(), &[0], id.as_bytes()])
}

/// Prefix of one business key's index.
pub fn key_index(k: &str) -> Vec<u8> {
    key(&[&[BY_KEY], k.as_bytes(), &[0]])
}

/// `i ‖ saga ‖ 0 ‖ key`: the execution a trigger's idempotency key created.
pub fn idempotency(saga: &SagaName, k: &str) -> Vec<u8> {
    key(&[&[IDEMPOTENCY], saga.as_str().as_bytes(), &[0], k.as_bytes()])
}

/// `j ‖ at (big-endian) ‖ saga ‖ 0 ‖ key`, valued with the execution's id: idempotency keys
/// by the time they were first used, for forgetting them when their window has passed.
pub fn key_made(at: u64, saga: &SagaName, k: &str) -> Vec<u8> {
    key(&[&[KEY_MADE], &at.to_be_bytes(), saga.as_str().as_bytes(), &[0], k.as_bytes()])
}

/// Keys made at or before `until`: the end of their range (exclusive).
pub fn keys_made_until(until: u64) -> Vec<u8> {
    key(&[&[KEY_MADE], &until.saturating_add(1).to_be_bytes()])
}

/// Prefix of all [`key_made`] entries.
pub fn keys_made() -> Vec<u8> {
    vec![KEY_MADE]
}

/// `(at, saga, key)` back from a [`key_made`] key.
pub fn parse_key_made(k: &[u8]) -> Option<(u64, SagaName, String)> {
    let rest = k.strip_prefix(&[KEY_MADE])?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let rest = &rest[8..];
    let split = rest.iter().position(|&b| b == 0)?;
    let saga = SagaName::parse(std::str::from_utf8(&rest[..split]).ok()?).ok()?;
    Some((at, saga, std::str::from_utf8(&rest[split + 1..]).ok()?.to_owned()))
}

/// `r ‖ at (big-endian) ‖ id`, valued with the saga's name: executions by the time they
/// ended, for retention.
pub fn ended(at: u64, id: ExecutionId) -> Vec<u8> {
    key(&[&[ENDED], &at.to_be_bytes(), id.as_bytes()])
}

/// Executions that ended at or before `until`: the end of their range (exclusive).
pub fn ended_until(until: u64) -> Vec<u8> {
    key(&[&[ENDED], &until.saturating_add(1).to_be_bytes()])
}

/// Prefix of all [`ended`] entries.
pub fn ended_all() -> Vec<u8> {
    vec![ENDED]
}

/// `(at, id)` back from an [`ended`] key.
pub fn parse_ended(k: &[u8]) -> Option<(u64, ExecutionId)> {
    let rest = k.strip_prefix(&[ENDED])?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some((at, trailing_id(rest).filter(|_| rest.len() == 24)?))
}

/// `p ‖ name ‖ 0 ‖ version`: plugin metadata.
pub fn plugin(name: &PluginName, version: &PluginVersion) -> Vec<u8> {
    key(&[&[PLUGIN], name.as_str().as_bytes(), &[0], version.as_str().as_bytes()])
}

/// Prefix of all plugins.
pub fn plugins() -> Vec<u8> {
    vec![PLUGIN]
}

/// `b ‖ digest`: plugin bytes, content-addressed.
pub fn blob(digest: &str) -> Vec<u8> {
    key(&[&[BLOB], digest.as_bytes()])
}

/// `a ‖ key`: a precompiled artifact (key names digest and engine).
pub fn artifact(k: &str) -> Vec<u8> {
    key(&[&[ARTIFACT], k.as_bytes()])
}

/// `d ‖ name ‖ 0 ‖ version (big-endian)`: a definition version.
pub fn definition(name: &SagaName, version: u64) -> Vec<u8> {
    key(&[&[DEFINITION], name.as_str().as_bytes(), &[0], &version.to_be_bytes()])
}

/// Prefix of one saga's definition versions.
pub fn definitions_of(name: &SagaName) -> Vec<u8> {
    key(&[&[DEFINITION], name.as_str().as_bytes(), &[0]])
}

/// Prefix of all definitions.
pub fn definitions() -> Vec<u8> {
    vec![DEFINITION]
}

/// `q ‖ id`: an execution set aside because its stream cannot be read.
pub fn quarantine(id: ExecutionId) -> Vec<u8> {
    key(&[&[QUARANTINE], id.as_bytes()])
}

/// Prefix of all quarantine entries.
pub fn quarantined() -> Vec<u8> {
    vec![QUARANTINE]
}

/// The id at the end of an index key.
pub fn trailing_id(k: &[u8]) -> Option<ExecutionId> {
    let tail: [u8; 16] = k.get(k.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(ExecutionId::from_bytes(tail))
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// `k ‖ name`: a secret's record.
pub fn secret(name: &str) -> Vec<u8> {
    key(&[&[SECRET], name.as_bytes()])
}

/// Prefix of all secrets.
pub fn secrets() -> Vec<u8> {
    vec![SECRET]
}

/// `v ‖ seq (big-endian)`: an event of the topic log.
pub fn topic_event(seq: u64) -> Vec<u8> {
    key(&[&[TOPIC_EVENT], &seq.to_be_bytes()])
}

/// Prefix of the topic log.
pub fn topic_events() -> Vec<u8> {
    vec![TOPIC_EVENT]
}

/// `w ‖ id`: the `seq` of the topic event with this id.
pub fn topic_event_id(id: &str) -> Vec<u8> {
    key(&[&[TOPIC_EVENT_ID], id.as_bytes()])
}

/// `z ‖ key ‖ 0 ‖ seq (big-endian)`: the topic events with this key, by `seq`.
pub fn topic_event_by_key(event_key: &str, seq: u64) -> Vec<u8> {
    key(&[&[TOPIC_EVENT_BY_KEY], event_key.as_bytes(), &[0], &seq.to_be_bytes()])
}

/// Prefix of the topic events with this key.
pub fn topic_events_by_key(event_key: &str) -> Vec<u8> {
    key(&[&[TOPIC_EVENT_BY_KEY], event_key.as_bytes(), &[0]])
}

/// `c ‖ name`: a cursor of the topic log.
pub fn cursor(name: &str) -> Vec<u8> {
    key(&[&[CURSOR], name.as_bytes()])
}

/// `u ‖ name`: a subscription.
pub fn subscription(name: &str) -> Vec<u8> {
    key(&[&[SUBSCRIPTION], name.as_bytes()])
}

/// Prefix of all subscriptions.
pub fn subscriptions() -> Vec<u8> {
    vec![SUBSCRIPTION]
}

/// `l ‖ subscription ‖ 0 ‖ seq (big-endian)`: a dead letter; a subscription's sort by `seq`.
pub fn dead_letter(subscription: &str, seq: u64) -> Vec<u8> {
    key(&[&[DEAD_LETTER], subscription.as_bytes(), &[0], &seq.to_be_bytes()])
}

/// Prefix of a subscription's dead letters.
pub fn dead_letters_of(subscription: &str) -> Vec<u8> {
    key(&[&[DEAD_LETTER], subscription.as_bytes(), &[0]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_sequence() {
        let id = ExecutionId::new();
        assert!(event(id, 255) < event(id, 256));
        assert!(event(id, 9).starts_with(&events_of(id)));
        assert_eq!(trailing_id(&by_status(ExecutionStatus::Running, id)), Some(id));
    }

    #[test]
    fn state_keys_parse_back_and_stay_inside_their_namespace() {
        let bank = PluginName::parse("bank").unwrap();
        let k = StateKey::new(bank.clone(), "accounts", "alice/1").unwrap();
        let stored = state(&k);
        assert!(stored.starts_with(&state_of(&bank, Some("accounts"))));
        assert_eq!(parse_state(&bank, &stored), Some(k));
        // `bank` and `bankx` do not share a prefix: the name is NUL-terminated.
        let other = StateKey::new(PluginName::parse("bankx").unwrap(), "accounts", "alice").unwrap();
        assert!(!state(&other).starts_with(&state_of(&bank, None)));
    }

    #[test]
    fn retention_keys_sort_by_time_and_parse_back() {
        let (a, b) = (ExecutionId::new(), ExecutionId::new());
        assert!(ended(255, b) < ended(256, a));
        assert!(ended(7, a) < ended_until(7) && ended_until(7) <= ended(8, a));
        assert_eq!(parse_ended(&ended(7, a)), Some((7, a)));
        assert_eq!(parse_ended(b"r123"), None);
        let saga = SagaName::parse("order").unwrap();
        let made = key_made(9, &saga, "k-1");
        assert!(made < keys_made_until(9) && keys_made_until(9) <= key_made(10, &saga, ""));
        assert_eq!(parse_key_made(&made), Some((9, saga, "k-1".to_owned())));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(&[1, 255]), [2]);
    }
}
