//! Subscriptions (docs/subscriptions.md), admin token: `PUT /v1/subscriptions/{name}` stores
//! one, `GET /v1/subscriptions[/{name}]` shows them with their cursor and delivery status,
//! `DELETE` removes one, `GET .../dead-letters` lists what delivery gave up on and `POST
//! .../dead-letters/redrive` tries those again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{ApiError, AppState, ErrorBody, extract};
use crate::domain::subscription::DeadLetter;
use crate::orchestrator::SubscriptionView;

/// `GET /v1/subscriptions`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SubscriptionList {
    /// Every subscription, by name.
    pub subscriptions: Vec<SubscriptionView>,
}

/// `GET /v1/subscriptions/{name}/dead-letters`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// In log order.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; null when this page was not full.
    pub next: Option<u64>,
}

/// `POST /v1/subscriptions/{name}/dead-letters/redrive`'s answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Redrive {
    /// Dead letters marked to be tried once more.
    pub redriving: usize,
}

/// `PUT /v1/subscriptions/{name}`: 201 new, 200 replaced; delivery starts (or restarts) at once.
#[utoipa::path(put, path = "/v1/subscriptions/{name}", tag = "subscriptions", operation_id = "putSubscription",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "subscription name")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "`{\"topics\": [..], \"webhook\": {..} | \"redis_stream\": {..}, \"retry\"?: {..}, \"from\"?: \"now\" | \"start\"}` (docs/subscriptions.md)"),
    responses((status = 201, body = SubscriptionView, description = "stored"), (status = 200, body = SubscriptionView, description = "replaced"),
        (status = 400, body = ErrorBody, description = "not JSON, unknown field, or beyond the JSON bounds; a path that is not UTF-8"),
        (status = 413, body = ErrorBody, description = "over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON"),
        (status = 422, body = ErrorBody, description = "breaks a rule; every problem is listed")))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    let (_, created) = state.orch.put_subscription(&name, &bytes).await?;
    let view = state.orch.subscription(&name).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

/// `GET /v1/subscriptions`.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", operation_id = "listSubscriptions",
    responses((status = 200, body = SubscriptionList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SubscriptionList>, ApiError> {
    Ok(Json(SubscriptionList { subscriptions: state.orch.subscriptions().await? }))
}

/// `GET /v1/subscriptions/{name}`.
#[utoipa::path(get, path = "/v1/subscriptions/{name}", tag = "subscriptions", operation_id = "showSubscription",
    params(("name" = String, Path, description = "subscription name")),
    responses((status = 200, body = SubscriptionView), (status = 400, body = ErrorBody, description = "a path that is not UTF-8"),
        (status = 404, body = ErrorBody, description = "no such subscription")))]
pub async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(state.orch.subscription(&name).await?))
}

/// `DELETE /v1/subscriptions/{name}`: 204; its cursor and dead letters go with it.
#[utoipa::path(delete, path = "/v1/subscriptions/{name}", tag = "subscriptions", operation_id = "deleteSubscription",
    params(("name" = String, Path, description = "subscription name")),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody, description = "a path that is not UTF-8"),
        (status = 404, body = ErrorBody, description = "no such subscription")))]
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.orch.delete_subscription(&name).await?;
    tracing::info!(subscription = %name, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/subscriptions/{name}/dead-letters`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/subscriptions/{name}/dead-letters?after=&limit=`: in log order.
#[utoipa::path(get, path = "/v1/subscriptions/{name}/dead-letters", tag = "subscriptions", operation_id = "listDeadLetters",
    params(("name" = String, Path, description = "subscription name"),
        ("after" = Option<u64>, Query, description = "only letters of events after this seq (the previous page's `next`)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, default 100")),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody, description = "bad or unknown query parameter; a path that is not UTF-8"),
        (status = 404, body = ErrorBody, description = "no such subscription")))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<LetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let q = extract::query(query)?;
    let limit = extract::page_limit(q.limit, 100)?;
    let dead_letters = state.orch.dead_letters(&name, q.after.unwrap_or(0), limit).await?;
    let next = (dead_letters.len() == limit).then(|| dead_letters.last().map(|l| l.seq)).flatten();
    Ok(Json(DeadLetterList { dead_letters, next }))
}

/// `POST /v1/subscriptions/{name}/dead-letters/redrive`: 202; each dead letter is tried once
/// more, in log order, in the background: delivered ones leave the list.
#[utoipa::path(post, path = "/v1/subscriptions/{name}/dead-letters/redrive", tag = "subscriptions", operation_id = "redriveDeadLetters",
    params(("name" = String, Path, description = "subscription name")),
    responses((status = 202, body = Redrive), (status = 400, body = ErrorBody, description = "a path that is not UTF-8"),
        (status = 404, body = ErrorBody, description = "no such subscription")))]
pub async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Redrive>), ApiError> {
    let redriving = state.orch.redrive(&name).await?;
    tracing::info!(subscription = %name, redriving, "dead letters redriven");
    Ok((StatusCode::ACCEPTED, Json(Redrive { redriving })))
}
