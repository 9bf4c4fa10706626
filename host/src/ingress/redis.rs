//! The Redis Streams ingress: `--redis-ingress 'redis://HOST:PORT[/DB]?stream=S[&group=G]
//! [&consumer=C][&topic=T][&from=start|now][&claim_idle_ms=N]'`.
//!
//! One task per ingress reads its stream through a consumer group: first the entries it read
//! before and did not acknowledge (a crash between reading and acknowledging), then new ones.
//! Each entry becomes a topic event; the entry is acknowledged (`XACK`) once the event is
//! durable in the log, or once it is found unusable (it is then logged and counted, never
//! retried). So every entry is recorded at least once, and once by id.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};

use crate::domain::TopicEvent;
use crate::domain::ids::check_name;
use crate::domain::topic::check_key;
use crate::metrics::{IngressLabels, metrics};
use crate::orchestrator::Orchestrator;

/// Entries read at once.
const COUNT: usize = 100;
/// How long one read waits for new entries (ms).
const BLOCK_MS: u64 = 1_000;
/// Wait after Redis or the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// One configured ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisIngress {
    /// The server, without the query.
    pub url: String,
    /// The stream's key.
    pub stream: String,
    /// The consumer group (created when missing).
    pub group: String,
    /// This host's consumer name in the group.
    pub consumer: String,
    /// The topic of entries without a `topic` field.
    pub topic: Option<String>,
    /// Where a group created by the host starts: the stream's first entry, or its end.
    pub from_start: bool,
    /// Entries pending this long under another consumer of the group (one that read them and
    /// never acknowledged them: a host that is gone) are taken over (`XAUTOCLAIM`), ms.
    pub claim_idle_ms: u64,
}

impl RedisIngress {
    /// Parses `redis://HOST:PORT[/DB]?stream=S&group=G&consumer=C&topic=T&from=start|now`
    /// (`group` and `consumer` default to `sagahost`, `from` to `now`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (url, query) = spec.split_once('?').ok_or("a Redis ingress needs ?stream=NAME")?;
        if !url.starts_with("redis://") {
            return Err(format!("{url:?} is not a redis:// URL (TLS is not supported yet)"));
        }
        let mut me = Self {
            url: url.to_owned(),
            stream: String::new(),
            group: "sagahost".into(),
            consumer: "sagahost".into(),
            topic: None,
            from_start: false,
            claim_idle_ms: 60_000,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not name=value"))?;
            if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("{k}: 1-256 printable ASCII characters without spaces"));
            }
            match k {
                "stream" => me.stream = v.to_owned(),
                "group" => me.group = v.to_owned(),
                "consumer" => me.consumer = v.to_owned(),
                "topic" => {
                    check_name("topic", v).map_err(|e| e.to_string())?;
                    me.topic = Some(v.to_owned());
                }
                "from" if v == "start" || v == "now" => me.from_start = v == "start",
                "from" => return Err(format!("from must be start or now, got {v:?}")),
                "claim_idle_ms" => {
                    me.claim_idle_ms = v
                        .parse()
                        .ok()
                        .filter(|ms| (1..=86_400_000).contains(ms))
                        .ok_or_else(|| format!("claim_idle_ms must be 1-86400000, got {v:?}"))?
                }
                other => return Err(format!("unknown Redis ingress setting {other:?}")),
            }
        }
        if me.stream.is_empty() {
            return Err("a Redis ingress needs ?stream=NAME".into());
        }
        redis::Client::open(me.url.as_str()).map_err(|e| format!("{url}: {e}"))?;
        Ok(me)
    }

    /// For logs: the URL without credentials, and the stream.
    pub fn describe(&self) -> String {
        let host = self.url.rsplit('@').next().unwrap_or(&self.url).trim_start_matches("redis://");
        format!("redis://{host} stream {} group {}", self.stream, self.group)
    }
}

/// The event an entry stands for: fields `topic` (or the ingress's `topic`), `payload` (JSON
/// text; `{}` when absent), `id` (default `<stream>:<entry id>`) and `key`, all optional but
/// the topic. `Err` says why the entry cannot be an event.
pub fn event_of(ingress: &RedisIngress, entry: &StreamId, now_ms: u64) -> Result<TopicEvent, String> {
    // A pending entry deleted or trimmed from the stream comes back without fields.
    if entry.map.is_empty() {
        return Err("the entry has no fields (deleted or trimmed from the stream)".into());
    }
    let size: usize = entry.map.iter().map(|(k, v)| k.len() + value_len(v)).sum();
    if size > MAX_ENTRY_BYTES {
        return Err(format!("the entry's {size} bytes exceed the limit of {MAX_ENTRY_BYTES}"));
    }
    let text = |field: &str| -> Result<Option<String>, String> {
        match entry.map.get(field) {
            None => Ok(None),
            Some(v) => redis::from_redis_value_ref::<String>(v)
                .map(Some)
                .map_err(|_| format!("field {field:?} is not UTF-8 text")),
        }
    };
    let topic = text("topic")?.or_else(|| ingress.topic.clone()).ok_or("the entry has no topic field")?;
    check_name("topic", &topic).map_err(|e| e.to_string())?;
    let payload = match text("payload")? {
        None => serde_json::json!({}),
        Some(p) => {
            crate::domain::json::check(p.as_bytes()).map_err(|e| format!("payload: {e}"))?;
            serde_json::from_str(&p).map_err(|e| format!("payload is not JSON: {e}"))?
        }
    };
    let id = text("id")?.unwrap_or_else(|| format!("redis:{}:{}", ingress.stream, entry.id));
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err("id: 1-256 printable ASCII characters".into());
    }
    crate::domain::topic::check_external_id(&id).map_err(|e| format!("id: {e}"))?;
    let key = text("key")?;
    if let Some(k) = &key {
        check_key(k).map_err(|e| format!("key: {e}"))?;
    }
    Ok(TopicEvent { id, topic, key, payload, at: now_ms, source: None })
}

/// Largest entry taken (its fields' names and values): what a published event's body may be
/// by default (`--max-body-kib`).
const MAX_ENTRY_BYTES: usize = 1 << 20;

fn value_len(v: &Value) -> usize {
    match v {
        Value::BulkString(b) => b.len(),
        Value::SimpleString(s) => s.len(),
        _ => 16,
    }
}

/// Runs `ingress` until the host stops.
pub async fn run(orch: Arc<Orchestrator>, ingress: RedisIngress) {
    let mut stopping = orch.stopping();
    let mut outage_logged = false;
    while !*stopping.borrow() {
        let session = async {
            let mut conn = connect(&ingress).await?;
            tracing::info!(ingress = %ingress.describe(), "reading the Redis stream");
            outage_logged = false;
            // Entries read before and not acknowledged (this consumer's, and those another
            // consumer left idle, claimed), then new ones; claiming again every CLAIM_EVERY.
            let mut from_pending = true;
            let mut claimed_at = None;
            while !*orch.stopping().borrow() {
                if claimed_at.is_none_or(|t: std::time::Instant| t.elapsed() >= CLAIM_EVERY) {
                    if claim(&mut conn, &ingress).await? > 0 {
                        from_pending = true;
                    }
                    claimed_at = Some(std::time::Instant::now());
                }
                let start = if from_pending { "0" } else { ">" };
                let mut read = redis::cmd("XREADGROUP");
                read.arg("GROUP").arg(&ingress.group).arg(&ingress.consumer).arg("COUNT").arg(COUNT);
                if !from_pending {
                    read.arg("BLOCK").arg(BLOCK_MS);
                }
                read.arg("STREAMS").arg(&ingress.stream).arg(start);
                let reply: Option<StreamReadReply> = read.query_async(&mut conn).await.map_err(|e| e.to_string())?;
                let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
                if from_pending && entries.is_empty() {
                    from_pending = false;
                }
                for entry in &entries {
                    record(&orch, &ingress, entry).await?;
                    let _: Value = redis::cmd("XACK")
                        .arg(&ingress.stream)
                        .arg(&ingress.group)
                        .arg(&entry.id)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<(), String>(())
        };
        let result = tokio::select! {
            r = session => r,
            _ = stopping.wait_for(|s| *s) => Ok(()),
        };
        if let Err(e) = result {
            if !std::mem::replace(&mut outage_logged, true) {
                tracing::warn!(ingress = %ingress.describe(), error = %e, "Redis ingress failed; retrying every second");
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
    }
}

/// How often the entries other consumers left idle are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(30);

/// Takes over the entries pending for longer than `claim_idle_ms` under other consumers of the
/// group (`XAUTOCLAIM … JUSTID`): they become this consumer's pending entries, read next. How
/// many were claimed.
async fn claim(conn: &mut redis::aio::MultiplexedConnection, ingress: &RedisIngress) -> Result<usize, String> {
    let (mut cursor, mut claimed) = ("0-0".to_owned(), 0);
    loop {
        let reply: Vec<Value> = redis::cmd("XAUTOCLAIM")
            .arg(&ingress.stream)
            .arg(&ingress.group)
            .arg(&ingress.consumer)
            .arg(ingress.claim_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(COUNT)
            .arg("JUSTID")
            .query_async(conn)
            .await
            .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
        let next: String = reply.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
        let ids: Vec<String> = reply.get(1).and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
        claimed += ids.len();
        if next.is_empty() || next == "0-0" {
            if claimed > 0 {
                tracing::info!(ingress = %ingress.describe(), claimed, "took over entries another consumer left pending");
            }
            return Ok(claimed);
        }
        cursor = next;
    }
}

/// A connection, with the consumer group created if missing.
async fn connect(ingress: &RedisIngress) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(ingress.url.as_str()).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_millis(BLOCK_MS + 5_000)));
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
    let start = if ingress.from_start { "0" } else { "$" };
    let created: Result<Value, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&ingress.stream)
        .arg(&ingress.group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    match created {
        Ok(_) => tracing::info!(ingress = %ingress.describe(), "consumer group created"),
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        Err(e) => return Err(format!("creating the consumer group: {e}")),
    }
    Ok(conn)
}

/// Records one entry as an event; `Err` only when the store failed (the entry is then read
/// again). An unusable entry is logged and counted, and acknowledged.
async fn record(orch: &Orchestrator, ingress: &RedisIngress, entry: &StreamId) -> Result<(), String> {
    let count = |outcome: &str| {
        let labels = IngressLabels { stream: ingress.stream.clone(), outcome: outcome.to_owned() };
        metrics().ingress_entries.get_or_create(&labels).inc();
    };
    let event = match event_of(ingress, entry, orch.now_ms()) {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(ingress = %ingress.describe(), entry = %entry.id, %why, "stream entry refused: acknowledged, not recorded");
            count("refused");
            return Ok(());
        }
    };
    match orch.publish_event(event).await {
        Ok((_, true)) => count("recorded"),
        Ok((_, false)) => count("duplicate"),
        Err(e) => return Err(format!("recording the event: {e}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> StreamId {
        let map: HashMap<String, Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.to_vec()))).collect();
        StreamId { id: "1700-0".into(), map, ..Default::default() }
    }

    #[test]
    fn specs_are_parsed_with_defaults_and_bad_ones_named() {
        let i = RedisIngress::parse("redis://127.0.0.1:6379?stream=orders").unwrap();
        assert_eq!(
            (i.url.as_str(), i.stream.as_str(), i.group.as_str()),
            ("redis://127.0.0.1:6379", "orders", "sagahost")
        );
        assert!(!i.from_start && i.topic.is_none());
        assert_eq!(i.claim_idle_ms, 60_000);
        let i = RedisIngress::parse("redis://h:1?stream=s&claim_idle_ms=500").unwrap();
        assert_eq!(i.claim_idle_ms, 500);
        let i = RedisIngress::parse("redis://u:p@h:1/2?stream=s&group=g&consumer=c&topic=T&from=start").unwrap();
        assert_eq!((i.consumer.as_str(), i.topic.as_deref(), i.from_start), ("c", Some("T"), true));
        assert_eq!(i.describe(), "redis://h:1/2 stream s group g", "no credentials in logs");
        for bad in [
            "redis://h:1",
            "redis://h:1?group=g",
            "rediss://h:1?stream=s",
            "http://h?stream=s",
            "redis://h:1?stream=s&from=yesterday",
            "redis://h:1?stream=s&topic=bad topic",
            "redis://h:1?stream=s&what=1",
            "redis://h:1?stream=",
            "redis://h:1?stream=s&claim_idle_ms=0",
            "redis://h:1?stream=s&claim_idle_ms=soon",
        ] {
            assert!(RedisIngress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_become_events_or_say_why_not() {
        let i = RedisIngress::parse("redis://h:1?stream=orders").unwrap();
        let e =
            event_of(&i, &entry(&[("topic", b"OrderCreated"), ("payload", b"{\"a\":1}"), ("key", b"o-1")]), 5).unwrap();
        assert_eq!(
            (e.id.as_str(), e.topic.as_str(), e.key.as_deref(), e.at),
            ("redis:orders:1700-0", "OrderCreated", Some("o-1"), 5)
        );
        assert_eq!(e.payload, serde_json::json!({"a": 1}));
        let e = event_of(&i, &entry(&[("topic", b"T"), ("id", b"evt-9")]), 0).unwrap();
        assert!(event_of(&i, &entry(&[]), 0).unwrap_err().contains("no fields"));
        let big = vec![b'x'; (1 << 20) + 1];
        assert!(event_of(&i, &entry(&[("topic", b"T"), ("payload", &big)]), 0).unwrap_err().contains("exceed"));
        assert_eq!((e.id.as_str(), &e.payload), ("evt-9", &serde_json::json!({})));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (fields, why) in [
            (vec![("payload", &b"{}"[..])], "no topic"),
            (vec![("topic", &b"bad topic"[..])], "topic"),
            (vec![("topic", &b"T"[..]), ("payload", &b"{oops"[..])], "not JSON"),
            (vec![("topic", &b"T"[..]), ("payload", deep.as_bytes())], "payload"),
            (vec![("topic", &b"T"[..]), ("key", &b"a\nb"[..])], "key"),
            (vec![("topic", &b"T"[..]), ("id", &[0xff, 0xfe][..])], "UTF-8"),
            (vec![("topic", &b"T"[..]), ("id", &b"01a201ba-c592-75bc-849b-47901389cd4c:s:execute:0"[..])], "reserved"),
        ] {
            let err = event_of(&i, &entry(&fields), 0).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        let with_topic = RedisIngress::parse("redis://h:1?stream=s&topic=Default").unwrap();
        assert_eq!(event_of(&with_topic, &entry(&[("payload", b"{}")]), 0).unwrap().topic, "Default");
    }
}
