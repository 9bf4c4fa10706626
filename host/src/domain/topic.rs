//! Events on topics (docs/topics.md): what is published to the host's log, the triggers that
//! start sagas from them, and how an event's key is read from its payload. Pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event in the host's topic log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicEvent {
    /// Unique id: the publisher's `Event-Id`, or one the host made. A second event with an id
    /// already in the log is not recorded.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Its key (`Event-Key`): it resumes waits of the running executions with this business key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its body.
    pub payload: Value,
    /// When the host recorded it (unix ms).
    pub at: u64,
    /// The step that emitted it; absent for an event published from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
}

/// The step attempt an emitted event comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventSource {
    /// The execution.
    pub execution_id: String,
    /// Its saga.
    pub saga: String,
    /// The step.
    pub step: String,
    /// `execute` or `compensate`.
    pub side: String,
}

/// A saga's trigger: every event on `topic` starts one execution per value of `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trigger {
    /// The topic.
    pub topic: String,
    /// A dot-separated path into the event's payload (`order.id`; an array index is a number);
    /// the value found (a string, or a number written as JSON) is the execution's business
    /// key, and at most one execution per saga and key is started.
    pub key: String,
}

/// The key at `path` in `payload`: a string as is, a number or boolean as JSON text; `None`
/// when the path leads nowhere, to null, an object, an array or an empty string.
pub fn key_at(payload: &Value, path: &str) -> Option<String> {
    let mut at = payload;
    for segment in path.split('.') {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let key = match at {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    check_key(&key).is_ok().then_some(key)
}

/// Whether `key` may be an event's or an execution's key: 1-256 bytes, no control characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(format!("a key has 1-{MAX_KEY_BYTES} bytes and no control characters"));
    }
    Ok(())
}

/// Whether `id` may be given to an event from outside (an `Event-Id`, an ingress entry's
/// `id`): ids of the form `<execution id>:…` are reserved for the events steps emit, so that
/// no publisher can take an emitted event's id before the step that emits it commits.
pub fn check_external_id(id: &str) -> Result<(), String> {
    if let Some((head, _)) = id.split_once(':')
        && head.parse::<uuid::Uuid>().is_ok()
    {
        return Err("ids of the form <execution id>:... are reserved for events emitted by steps".into());
    }
    Ok(())
}

/// Longest event key, business key and trigger path.
pub const MAX_KEY_BYTES: usize = 256;

/// Problems with a trigger's `key` path.
pub fn check_key_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_KEY_BYTES || path.split('.').any(str::is_empty) {
        return Err(format!("{path:?} is not a path: 1-{MAX_KEY_BYTES} characters, segments separated by single dots"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_read_from_payload_paths() {
        let p = json!({"order_id": "o-1", "order": {"lines": [{"sku": 42}]}, "ok": true, "empty": "", "none": null});
        assert_eq!(key_at(&p, "order_id").as_deref(), Some("o-1"));
        assert_eq!(key_at(&p, "order.lines.0.sku").as_deref(), Some("42"));
        assert_eq!(key_at(&p, "ok").as_deref(), Some("true"));
        for nowhere in
            ["missing", "order", "order.lines", "order.lines.9.sku", "order.lines.x", "empty", "none", "order_id.x"]
        {
            assert_eq!(key_at(&p, nowhere), None, "{nowhere}");
        }
        assert_eq!(key_at(&json!({"k": "x".repeat(257)}), "k"), None, "too long");
        assert_eq!(key_at(&json!({"k": "a\nb"}), "k"), None, "control characters");
    }

    #[test]
    fn ids_of_emitted_events_are_reserved() {
        assert!(check_external_id("evt-1").is_ok());
        assert!(check_external_id("orders:1700-0").is_ok());
        assert!(check_external_id("not-a-uuid:create:execute:0").is_ok());
        let emitted = "01a201ba-c592-75bc-849b-47901389cd4c:reserve_seat:execute:0";
        assert!(check_external_id(emitted).is_err());
        assert!(check_external_id("01A201BA-C592-75BC-849B-47901389CD4C:x").is_err());
    }

    #[test]
    fn key_paths_are_dotted_segments() {
        assert!(check_key_path("order.id").is_ok());
        for bad in ["", ".", "a..b", "a.", ".a", &"a".repeat(257)] {
            assert!(check_key_path(bad).is_err(), "{bad:?}");
        }
    }
}
