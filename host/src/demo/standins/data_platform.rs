//! The data platform stand-in: `POST /events` with any JSON body keeps it as an event and
//! answers 201 `{"id"}`; the same `Idempotency-Key` again answers 200 with the same id and keeps
//! nothing more. Outages on request ([`super::OUTAGE_HEADER`]).
//!
//! It is also the receiving end of a host subscription (docs/subscriptions.md): `POST
//! /webhooks/sagahost` checks the `Sagahost-Signature` against its webhook key (401 when it does
//! not match), keeps each event once by its `Sagahost-Event-Id`, and answers 204.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Journal, Outages, Refusal, Seen, Server, idempotency_key};
use crate::sync::lock;

/// An event the platform kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// `ev-1`, `ev-2`, ...
    pub id: String,
    /// The idempotency key it came with.
    pub idempotency_key: String,
    /// The body as sent.
    pub body: Value,
}

/// An event a host subscription delivered to the webhook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivered {
    /// The event's id.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// The whole body as delivered.
    pub body: Value,
    /// Deliveries of this id (more than one after a redelivery).
    pub deliveries: u32,
}

struct Platform {
    events: Mutex<Vec<Event>>,
    outages: Outages,
    hook_key: String,
    delivered: Mutex<Vec<Delivered>>,
}

/// The running data platform stand-in.
pub struct DataPlatform {
    state: Arc<Platform>,
    journal: Journal,
    pub(super) server: Server,
}

impl DataPlatform {
    /// Starts it on `127.0.0.1`, on a port of its own; its webhook takes requests signed with
    /// `hook_key`.
    pub async fn start(hook_key: &str) -> std::io::Result<Self> {
        let state = Arc::new(Platform::new(hook_key));
        let journal = Journal::default();
        let server = Server::start(router(state.clone()), journal.clone()).await?;
        Ok(Self { state, journal, server })
    }

    /// Its origin, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The events kept so far, in order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.state.events).clone()
    }

    /// The events host subscriptions delivered to the webhook, each once, in order of arrival.
    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.state.delivered).clone()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.journal).clone()
    }
}

impl Platform {
    fn new(hook_key: &str) -> Self {
        Self {
            events: Mutex::default(),
            outages: Outages::default(),
            hook_key: hook_key.to_owned(),
            delivered: Mutex::default(),
        }
    }
}

fn router(state: Arc<Platform>) -> Router {
    Router::new().route("/events", post(accept)).route("/webhooks/sagahost", post(webhook)).with_state(state)
}

/// A delivery from a host subscription: signed, kept once by event id.
async fn webhook(State(p): State<Arc<Platform>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let Ok(timestamp) = text("sagahost-timestamp").parse::<u64>() else { return StatusCode::UNAUTHORIZED };
    let expected = crate::delivery::signature(p.hook_key.as_bytes(), timestamp, &body);
    let signature = text("sagahost-signature");
    // Compared in full, whatever the first difference (no early exit on a mismatch).
    let same = expected.len() == signature.len()
        && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
    let id = text("sagahost-event-id");
    let mut delivered = lock(&p.delivered);
    match delivered.iter_mut().find(|d| d.id == id) {
        Some(seen) => seen.deliveries += 1,
        None => delivered.push(Delivered { id, topic: text("sagahost-topic"), body: json, deliveries: 1 }),
    }
    StatusCode::NO_CONTENT
}

async fn accept(
    State(p): State<Arc<Platform>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, Refusal> {
    let key = idempotency_key(&headers)?;
    p.outages.check("events", &key, &headers)?;
    let mut events = lock(&p.events);
    if let Some(kept) = events.iter().find(|e| e.idempotency_key == key) {
        return Ok((StatusCode::OK, Json(json!({ "id": kept.id }))).into_response());
    }
    let id = format!("ev-{}", events.len() + 1);
    events.push(Event { id: id.clone(), idempotency_key: key, body });
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn post(app: &Router, key: &str, outage: Option<&str>) -> (u16, Value) {
        let mut req =
            Request::post("/events").header("content-type", "application/json").header("idempotency-key", key);
        if let Some(o) = outage {
            req = req.header(super::super::OUTAGE_HEADER, o);
        }
        let body = Body::from(json!({"kind": "booking", "seat": "A12"}).to_string());
        let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn an_event_is_kept_once_per_key_and_an_outage_answers_503() {
        let state = Arc::new(Platform::new("hook"));
        let app = router(state.clone());
        assert_eq!(post(&app, "e1/notify", None).await, (201, json!({"id": "ev-1"})));
        assert_eq!(post(&app, "e1/notify", None).await, (200, json!({"id": "ev-1"})));
        assert_eq!(post(&app, "e2/notify", Some("all")).await.0, 503);
        assert_eq!(post(&app, "e2/notify", Some("all")).await.0, 503);
        let events = lock(&state.events).clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].body["seat"], "A12");
    }
}

#[cfg(test)]
mod webhook_tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn deliver(app: &Router, key: &[u8], id: &str) -> u16 {
        let body = json!({"id": id, "topic": "SeatReserved", "payload": {"seat": "A1"}}).to_string();
        let req = Request::post("/webhooks/sagahost")
            .header("sagahost-event-id", id)
            .header("sagahost-topic", "SeatReserved")
            .header("sagahost-timestamp", "1700000000")
            .header("sagahost-signature", crate::delivery::signature(key, 1_700_000_000, body.as_bytes()));
        app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn signed_deliveries_are_kept_once_and_unsigned_ones_refused() {
        let state = Arc::new(Platform::new("the-key"));
        let app = router(state.clone());
        assert_eq!(deliver(&app, b"the-key", "e-1").await, 204);
        assert_eq!(deliver(&app, b"the-key", "e-1").await, 204);
        assert_eq!(deliver(&app, b"another-key", "e-2").await, 401);
        let delivered = lock(&state.delivered).clone();
        assert_eq!(delivered.len(), 1);
        assert_eq!((delivered[0].id.as_str(), delivered[0].deliveries), ("e-1", 2));
    }
}
