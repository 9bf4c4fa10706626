//! The topic log (docs/topics.md): `POST /v1/events/{topic}` publishes an event from outside
//! (idempotent by `Event-Id`), `GET /v1/events` reads the log in order.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::extract::{self, key_header};
use super::{ApiError, AppState, ErrorBody};
use crate::domain::TopicEvent;

/// `POST /v1/events/{topic}`'s answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// The event's id (its `Event-Id`, or one the host made).
    pub id: String,
    /// Its place in the log.
    pub seq: u64,
    /// An event with this id was already in the log: nothing was recorded.
    pub duplicate: bool,
}

/// One event of the log, with its place.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LoggedEvent {
    /// Its place in the log: increasing, not gapless.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: TopicEvent,
}

/// `GET /v1/events`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EventLog {
    /// In order.
    pub events: Vec<LoggedEvent>,
    /// Pass as `after` for the next page; null when this page was not full.
    pub next: Option<u64>,
}

/// `POST /v1/events/{topic}`: 202 once the event is durable in the log (delivery follows).
#[utoipa::path(post, path = "/v1/events/{topic}", tag = "events", operation_id = "publishEvent",
    params(("topic" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "the event's topic"),
        ("Event-Id" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256,
            description = "printable ASCII; an event with an id already in the log is not recorded again"),
        ("Event-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256,
            description = "printable ASCII; the event resumes waits of running executions with this business key")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "the event's payload, any JSON value (`{}` for none); no Content-Type is read as JSON, and so is `application/*+json`"),
    responses((status = 202, body = Published, description = "recorded (or already in the log under its Event-Id)"),
        (status = 400, body = ErrorBody, description = "bad topic, empty body, payload not JSON or beyond the JSON bounds, bad Event-Id or Event-Key"),
        (status = 413, body = ErrorBody, description = "payload over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON")))]
pub async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    crate::domain::ids::check_name("topic", &topic).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    let payload = extract::required_json(&bytes, "payload")?;
    let id = match key_header(&headers, "Event-Id")? {
        Some(id) => {
            crate::domain::topic::check_external_id(&id).map_err(|e| ApiError::BadRequest(format!("Event-Id: {e}")))?;
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let key = key_header(&headers, "Event-Key")?;
    let event = TopicEvent { id: id.clone(), topic, key, payload, at: state.orch.now_ms(), source: None };
    let (seq, new) = state.orch.publish_event(event).await?;
    Ok((StatusCode::ACCEPTED, Json(Published { id, seq, duplicate: !new })))
}

/// Query of `GET /v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/events?after=&limit=`: the log in order, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", operation_id = "listEvents",
    params(("after" = Option<u64>, Query, description = "only events after this seq (the previous page's `next`)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, default 100")),
    responses((status = 200, body = EventLog), (status = 400, body = ErrorBody, description = "bad or unknown query parameter")))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<EventLog>, ApiError> {
    let q = extract::query(query)?;
    let limit = extract::page_limit(q.limit, 100)?;
    let page = state.orch.store().topic_events(q.after.unwrap_or(0), limit).await?;
    let next = (page.len() == limit).then(|| page.last().map(|(seq, _)| *seq)).flatten();
    let events = page.into_iter().map(|(seq, event)| LoggedEvent { seq, event }).collect();
    Ok(Json(EventLog { events, next }))
}
