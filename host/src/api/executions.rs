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
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{ApiError, AppState, extract};
use crate::domain::{EventRecord, Execution, ExecutionStatus, ExecutionView, SagaName};
use crate::orchestrator::Orchestrator;
use crate::store::ListFilter;

/// Longest `wait` a trigger may ask for.
const MAX_WAIT_MS: u64 = 300_000;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 256;

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
pub async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<TriggerQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let saga = extract::name(&name, SagaName::parse)?;
    let query = extract::query(query)?;
    let bytes = extract::body(body)?;
    let input: Value =
        if bytes.iter().all(u8::is_ascii_whitespace) { Value::Null } else { extract::json(&bytes, "input")? };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters"
                )));
            }
            Some(k.to_owned())
        }
    };
    if query.wait.is_some_and(|w| w > MAX_WAIT_MS) {
        return Err(ApiError::BadRequest(format!("wait is at most {MAX_WAIT_MS} ms")));
    }
    let started = state.orch.start(&saga, input, key).await?;
    if let Some(wait) = query.wait
        && let Some(exec) = state.orch.wait_terminal(started.id, Duration::from_millis(wait)).await?
    {
        return Ok((StatusCode::OK, Json(json!(view(&state, &exec).await?))).into_response());
    }
    let status = state.orch.store().summary(started.id).await?.map_or(started.status, |s| s.status);
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": started.id, "status": status }))).into_response())
}

/// `GET /v1/executions/{id}`.
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
    Ok(Sse::new(follow(state.orch.clone(), id, first, notices, query.after))
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
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct S {
        orch: std::sync::Arc<Orchestrator>,
        id: crate::domain::ExecutionId,
        pending: std::collections::VecDeque<EventRecord>,
        notices: broadcast::Receiver<crate::orchestrator::Notice>,
        last: u64,
        done: bool,
    }
    let s = S { orch, id, pending: first.into(), notices, last: after, done: false };
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
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/executions?saga=&status=&limit=&after=`: newest first; `next` is the cursor.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = extract::query(query)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let filter = ListFilter {
        saga: q.saga.as_deref().map(|s| extract::name(s, SagaName::parse)).transpose()?,
        status: q.status.as_deref().map(|s| s.parse().map_err(ApiError::BadRequest)).transpose()?,
        after: q
            .after
            .as_deref()
            .map(|a| a.parse().map_err(|_| ApiError::BadRequest(format!("after {a:?} is not an execution id"))))
            .transpose()?,
        limit,
    };
    let page = state.orch.store().list(&filter).await?;
    let next = (page.len() == limit).then(|| page.last().map(|s| s.id)).flatten();
    Ok(Json(json!({ "executions": page, "next": next })))
}

/// `POST /v1/executions/{id}/cancel`: 202, or 409 when already terminal.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let exec = state.orch.cancel(extract::execution_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": exec.id, "status": exec.status }))))
}

/// `POST /v1/executions/{id}/resume`: 202, or 409 unless failed.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let exec = state.orch.resume(extract::execution_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": exec.id, "status": exec.status }))))
}
