//! A Redis Streams target: an `XADD` per event, a batch of them in one pipeline
//! (docs/subscriptions.md, "Redis Streams").

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::domain::TopicEvent;

/// Longest wait for a connection or a pipeline's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One subscription's stream, and its connection once made.
pub(super) struct RedisStream {
    pub client: redis::Client,
    pub stream: String,
    pub max_len: Option<u64>,
    pub conn: Option<MultiplexedConnection>,
}

impl RedisStream {
    /// Appends `events` in order, in one round trip; a failure drops the connection (the next
    /// try makes a new one).
    pub async fn send(&mut self, events: &[(u64, &TopicEvent)]) -> Result<(), String> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
                .await
                .map_err(|_| "connecting to Redis timed out".to_owned())?
                .map_err(|e| format!("connecting to Redis: {e}"))?,
        };
        let mut pipe = redis::pipe();
        for (seq, event) in events {
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(n) = self.max_len {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*").arg("id").arg(&event.id).arg("seq").arg(*seq).arg("topic").arg(&event.topic);
            if let Some(key) = &event.key {
                cmd.arg("key").arg(key);
            }
            cmd.arg("payload").arg(event.payload.to_string()).arg("at").arg(event.at);
            if let Some(source) = &event.source {
                cmd.arg("source").arg(serde_json::to_string(source).map_err(|e| e.to_string())?);
            }
        }
        let mut c = conn.clone();
        match tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut c)).await {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("XADD to {}: {e}", self.stream)),
            Err(_) => Err(format!("XADD to {} timed out", self.stream)),
        }
    }
}
