//! Events in from brokers (docs/topics.md, "Redis Streams ingress"): a consumer group reads a
//! Redis stream, records each entry in the topic log as an event (idempotent by id), and
//! acknowledges the entry only once the event is durable. Recorded events start and resume
//! sagas like any other.

pub mod redis;
