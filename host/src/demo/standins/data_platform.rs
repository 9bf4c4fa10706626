//! The data platform stand-in: `POST /events` with any JSON body keeps it as an event and
//! answers 201 `{"id"}`; the same `Idempotency-Key` again answers 200 with the same id and keeps
//! nothing more. Outages on request ([`super::OUTAGE_HEADER`]).

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

struct Platform {
    events: Mutex<Vec<Event>>,
    outages: Outages,
}

/// The running data platform stand-in.
pub struct DataPlatform {
    state: Arc<Platform>,
    journal: Journal,
    pub(super) server: Server,
}

impl DataPlatform {
    /// Starts it on `127.0.0.1`, on a port of its own.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Platform { events: Mutex::default(), outages: Outages::default() });
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

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.journal).clone()
    }
}

fn router(state: Arc<Platform>) -> Router {
    Router::new().route("/events", post(accept)).with_state(state)
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
        let state = Arc::new(Platform { events: Mutex::default(), outages: Outages::default() });
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
