//! `/v1/sagas/{name}/executions` and `/v1/executions`: trigger, read, follow, cancel, resume.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::{Accepted, ApiError, AppState, ErrorBody, ExecutionList, extract};
use crate::domain::{EventRecord, Execution, ExecutionId, ExecutionStatus, ExecutionView, SagaName};
use crate::orchestrator::{Orchestrator, TriggerKeys};
use crate::store::ListFilter;

/// Longest `wait` a trigger may ask for.
const MAX_WAIT_MS: u64 = 300_000;
use extract::{MAX_KEY, key_header};

async fn view(state: &AppState, exec: &Execution) -> Result<ExecutionView, ApiError> {
    let def = state.orch.definition(&exec.saga, exec.definition_version).await?;
    Ok(ExecutionView::new(exec, &def))
}

/// Query of a trigger.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerQuery {
    wait: Option<u64>,
}

/// `POST /v1/sagas/{name}/executions`.
#[utoipa::path(post, path = "/v1/sagas/{name}/executions", tag = "executions", operation_id = "triggerExecution",
    params(("name" = SagaName, Path, description = "saga name"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 300000, description = "wait up to this many ms for the end"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256,
            description = "printable ASCII; the same key and input for the same saga return the first execution"),
        ("Execution-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256,
            description = "printable ASCII; the execution's business key, to find it by (`GET /v1/executions?key=`)")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "the execution input, any JSON value (`{}` for none); no Content-Type is read as JSON, and so is `application/*+json`"),
    responses((status = 202, body = Accepted, description = "started (or found by its idempotency key)"), (status = 200, body = ExecutionView, description = "with `wait`: ended in time"),
        (status = 400, body = ErrorBody, description = "bad saga name, empty body, input not JSON, bad Idempotency-Key or Execution-Key, bad or unknown query parameter"),
        (status = 404, body = ErrorBody, description = "unknown saga"),
        (status = 409, body = ErrorBody, description = "`execution_quarantined`: the execution of this Idempotency-Key cannot be read"),
        (status = 413, body = ErrorBody, description = "input over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON"),
        (status = 422, body = ErrorBody, description = "`idempotency_key_reused`: the key was used with another request"),
        (status = 429, body = ErrorBody, description = "`busy`: host full",
            headers(("Retry-After" = String, description = "seconds to wait: `1`")))))]
pub async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<TriggerQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let saga = extract::name(&name, SagaName::parse)?;
    let query = extract::query(query)?;
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    // Never stored as null: an empty body is a client that forgot its input.
    let input = extract::required_json(&bytes, "input")?;
    let keys = TriggerKeys {
        idempotency_key: key_header(&headers, "Idempotency-Key")?,
        key: key_header(&headers, "Execution-Key")?,
    };
    if query.wait.is_some_and(|w| w > MAX_WAIT_MS) {
        return Err(ApiError::BadRequest(format!("wait is at most {MAX_WAIT_MS} ms")));
    }
    let started = match query.wait {
        Some(wait) => {
            let (started, ended) = state.orch.start_and_wait(&saga, input, keys, Duration::from_millis(wait)).await?;
            if let Some(exec) = ended {
                return Ok((StatusCode::OK, Json(view(&state, &exec).await?)).into_response());
            }
            started
        }
        None => state.orch.start_keyed(&saga, input, keys).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: started.id, status: started.status })).into_response())
}

/// `GET /v1/executions/{id}`.
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "executions", operation_id = "getExecution",
    params(("id" = ExecutionId, Path, description = "execution id")),
    responses((status = 200, body = ExecutionView), (status = 400, body = ErrorBody, description = "a path that does not decode"),
        (status = 404, body = ErrorBody, description = "no such execution (a malformed id included)"),
        (status = 409, body = ErrorBody, description = "`execution_quarantined`: its events cannot be read")))]
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ExecutionView>, ApiError> {
    let exec = state.orch.execution(extract::execution_id(&id)?).await?;
    Ok(Json(view(&state, &exec).await?))
}

/// Query of the event stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    after: u64,
}

#[utoipa::path(get, path = "/v1/executions/{id}/events", tag = "executions", operation_id = "getExecutionEvents",
    params(("id" = ExecutionId, Path, description = "execution id"),
        ("follow" = Option<bool>, Query, description = "stream as Server-Sent Events until terminal"),
        ("after" = Option<u64>, Query, minimum = 0, description = "only events with a greater seq")),
    responses((status = 200, description = "the events in order; with follow=true as Server-Sent Events",
            content((Vec<EventRecord> = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = ErrorBody, description = "bad or unknown query parameter, a path that does not decode"),
        (status = 404, body = ErrorBody, description = "no such execution (a malformed id included)"),
        (status = 409, body = ErrorBody, description = "`execution_quarantined`: its events cannot be read")))]
/// `GET /v1/executions/{id}/events`: a JSON array, or with `follow=true` Server-Sent Events
/// (existing events first, then live ones, ending with the terminal event).
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = extract::execution_id(&id)?;
    let query = extract::query(query)?;
    if !query.follow {
        return Ok(Json(state.orch.events(id, query.after).await?).into_response());
    }
    // Subscribe before the first read, so that nothing recorded in between is missed.
    let notices = state.orch.subscribe();
    let first = state.orch.events(id, query.after).await?;
    // Nothing left to send of an ended execution: end at once instead of waiting forever.
    let ended = first.is_empty() && state.orch.store().summary(id).await?.is_some_and(|s| s.status.is_terminal());
    Ok(Sse::new(follow(state.orch.clone(), id, first, notices, query.after, ended))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn is_terminal_event(r: &EventRecord) -> bool {
    r.event.status_after().is_some_and(ExecutionStatus::is_terminal)
}

fn follow(
    orch: std::sync::Arc<Orchestrator>,
    id: crate::domain::ExecutionId,
    first: Vec<EventRecord>,
    notices: broadcast::Receiver<crate::orchestrator::Notice>,
    after: u64,
    ended: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct S {
        orch: std::sync::Arc<Orchestrator>,
        id: crate::domain::ExecutionId,
        pending: std::collections::VecDeque<EventRecord>,
        notices: broadcast::Receiver<crate::orchestrator::Notice>,
        last: u64,
        done: bool,
    }
    let s = S { orch, id, pending: first.into(), notices, last: after, done: ended };
    futures::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(r) = s.pending.pop_front() {
                s.last = r.seq;
                s.done = is_terminal_event(&r);
                let data = serde_json::to_string(&r).expect("events serialize");
                return Some((Ok(SseEvent::default().event(r.event.type_name()).id(r.seq.to_string()).data(data)), s));
            }
            if s.done {
                return None;
            }
            match s.notices.recv().await {
                Ok(n) if n.id != s.id || n.version <= s.last => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => match s.orch.events(s.id, s.last).await {
                    Ok(new) => s.pending.extend(new),
                    Err(_) => return None,
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Query of the execution list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    saga: Option<String>,
    status: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/executions?saga=&status=&key=&limit=&after=`: newest first; `next` is the cursor.
#[utoipa::path(get, path = "/v1/executions", tag = "executions", operation_id = "listExecutions",
    params(("saga" = Option<SagaName>, Query, description = "only this saga"), ("status" = Option<ExecutionStatus>, Query, description = "only this status"),
        ("key" = Option<String>, Query, min_length = 1, max_length = 256, description = "only executions with this business key (`Execution-Key`)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, default 50"),
        ("after" = Option<ExecutionId>, Query, description = "the previous page's `next`")),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody, description = "bad or unknown query parameter")))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ExecutionList>, ApiError> {
    let q = extract::query(query)?;
    let limit = extract::page_limit(q.limit, 50)?;
    let filter = ListFilter {
        saga: q.saga.as_deref().map(|s| extract::name(s, SagaName::parse)).transpose()?,
        status: q.status.as_deref().map(|s| extract::name(s, str::parse)).transpose()?,
        key: match q.key {
            Some(k) if k.is_empty() || k.len() > MAX_KEY => {
                return Err(ApiError::BadRequest(format!("key must be 1-{MAX_KEY} characters")));
            }
            k => k,
        },
        after: q
            .after
            .as_deref()
            .map(|a| a.parse().map_err(|_| ApiError::BadRequest(format!("after {a:?} is not an execution id"))))
            .transpose()?,
        limit,
    };
    let page = state.orch.store().list(&filter).await?;
    let next = (page.len() == limit).then(|| page.last().map(|s| s.id)).flatten();
    Ok(Json(ExecutionList { executions: page, next }))
}

/// `POST /v1/executions/{id}/signals/{topic}`: 202 once the signal is durable (or was
/// already received under the same `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/executions/{id}/signals/{topic}", tag = "executions", operation_id = "signalExecution",
    params(("id" = ExecutionId, Path, description = "execution id"),
        ("topic" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "a topic a wait step of the execution's saga waits for"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 256,
            description = "printable ASCII; a signal with a key this execution already received is not recorded again")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "the signal's payload, any JSON value (`{}` for none); no Content-Type is read as JSON, and so is `application/*+json`"),
    responses((status = 202, body = Accepted, description = "recorded (or already received under its Idempotency-Key)"),
        (status = 400, body = ErrorBody, description = "bad topic, empty body, payload not JSON, bad Idempotency-Key"),
        (status = 404, body = ErrorBody, description = "no such execution (a malformed id included)"),
        (status = 409, body = ErrorBody, description = "the execution is not running or holds 64 signals no wait step has taken (`conflict`), or its events cannot be read (`execution_quarantined`)"),
        (status = 413, body = ErrorBody, description = "payload over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON"),
        (status = 422, body = ErrorBody, description = "`invalid`: no wait step of the execution's saga waits for this topic")))]
pub async fn signal(
    State(state): State<AppState>,
    Path((id, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let id = extract::execution_id(&id)?;
    crate::domain::ids::check_name("topic", &topic).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    let payload = extract::required_json(&bytes, "payload")?;
    let signal_id = key_header(&headers, "Idempotency-Key")?;
    let exec = state.orch.signal(id, topic, payload, signal_id).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: exec.id, status: exec.status })))
}

/// `POST /v1/executions/{id}/cancel`: 202, or 409 when already terminal.
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", tag = "executions", operation_id = "cancelExecution",
    params(("id" = ExecutionId, Path, description = "execution id")),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody, description = "a path that does not decode"),
        (status = 404, body = ErrorBody, description = "no such execution (a malformed id included)"),
        (status = 409, body = ErrorBody, description = "already ended (`conflict`), or its events cannot be read (`execution_quarantined`)")))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let exec = state.orch.cancel(extract::execution_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: exec.id, status: exec.status })))
}

/// `POST /v1/executions/{id}/resume`: 202, or 409 unless failed.
#[utoipa::path(post, path = "/v1/executions/{id}/resume", tag = "executions", operation_id = "resumeExecution",
    params(("id" = ExecutionId, Path, description = "execution id")),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody, description = "a path that does not decode"),
        (status = 404, body = ErrorBody, description = "no such execution (a malformed id included)"),
        (status = 409, body = ErrorBody, description = "not `failed` (`conflict`), or its events cannot be read (`execution_quarantined`)")))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let exec = state.orch.resume(extract::execution_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: exec.id, status: exec.status })))
}

#[utoipa::path(get, path = "/v1/executions/feed", tag = "executions", operation_id = "followStatusFeed", responses((status = 200, content_type = "text/event-stream", body = String, description = "`status` events: {id, version, status}")))]
/// `GET /v1/executions/feed`: Server-Sent Events, one `status` event per status change of
/// any execution (`{id, version, status}`), from now on.
pub async fn feed(State(state): State<AppState>) -> Response {
    let notices = state.orch.subscribe();
    let stream = futures::stream::unfold(notices, |mut notices| async move {
        loop {
            match notices.recv().await {
                Ok(n) if n.status_changed => {
                    let data = json!({ "id": n.id, "version": n.version, "status": n.status }).to_string();
                    return Some((Ok::<_, Infallible>(SseEvent::default().event("status").data(data)), notices));
                }
                Ok(_) => continue,
                // A slow reader missed changes: say so rather than pretend nothing happened.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let data = json!({ "missed": n }).to_string();
                    return Some((Ok(SseEvent::default().event("lagged").data(data)), notices));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
