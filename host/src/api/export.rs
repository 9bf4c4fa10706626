//! `GET /v1/export`: ended executions as NDJSON, one line per event, in the order they ended —
//! the format retention archives in (docs/operations.md#archive-format).

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, extract};
use crate::domain::{ExecutionId, SagaName};
use crate::retention::{archive, duration};
use crate::store::{Store, StoreError};

/// Executions read from the index per page.
const PAGE: usize = 64;

/// Query of an export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    before: String,
    saga: Option<String>,
}

/// `GET /v1/export` (admin token).
#[utoipa::path(get, path = "/v1/export", tag = "executions", operation_id = "exportExecutions",
    params(("before" = String, Query, description = "executions that ended (and were last recorded for) at or before this time: unix ms or RFC 3339"),
        ("saga" = Option<SagaName>, Query, description = "only this saga")),
    responses((status = 200, content_type = "application/x-ndjson", body = String,
            description = "one line per event: the event record (`seq`, `at`, `type`, fields) with `execution` and `saga`; in the order the executions ended. A store failure mid-way ends the body early, without its final chunk"),
        (status = 400, body = super::ErrorBody, description = "bad or unknown query parameter")))]
pub async fn export(
    State(state): State<AppState>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = extract::query(query)?;
    let before = duration::parse_time(&q.before).map_err(ApiError::BadRequest)?;
    let saga = q.saga.as_deref().map(|s| extract::name(s, SagaName::parse)).transpose()?;
    let store = state.orch.store().clone();
    let pages = futures::stream::try_unfold(Some(None), move |after| {
        let (store, saga) = (store.clone(), saga.clone());
        async move {
            let Some(after) = after else { return Ok(None) };
            let (chunk, next) = page(store.as_ref(), before, after, saga.as_ref()).await?;
            Ok::<_, StoreError>(Some((Bytes::from(chunk), next.map(Some))))
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(pages)).into_response())
}

/// One page of lines after `after`, and where the next starts (`None`: the last page).
async fn page(
    store: &dyn Store,
    before: u64,
    after: Option<(u64, ExecutionId)>,
    saga: Option<&SagaName>,
) -> Result<(Vec<u8>, Option<(u64, ExecutionId)>), StoreError> {
    let entries = store.ended(before, after, PAGE).await?;
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| saga.is_none_or(|s| *s == e.saga)) {
        out.extend(archive::ended_lines(store, e, before).await?);
    }
    let next = (entries.len() == PAGE).then(|| entries.last().map(|e| (e.at, e.id))).flatten();
    Ok((out, next))
}
