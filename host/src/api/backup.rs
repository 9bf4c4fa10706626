//! `GET /v1/backup`: a consistent copy of the whole store, streamed while the host keeps
//! running (docs/operations.md#backups). `sagahost backup DIR` reads it into a new data
//! directory.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{ApiError, AppState};
use crate::store::StoreError;
use crate::store::backup::Encoder;

/// `GET /v1/backup` (admin token).
#[utoipa::path(get, path = "/v1/backup", tag = "executions", operation_id = "backup",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            description = "the backup stream (docs/operations.md#backups); a store failure mid-way ends the body early, without its end record"),
        (status = 503, body = super::ErrorBody, description = "a backup is already running, or the store has no online backup")))]
pub async fn backup(State(state): State<AppState>) -> Result<Response, ApiError> {
    let chunks = state.orch.store().backup().await?;
    let mut encoder = Some(Encoder::default());
    let header = encoder.as_mut().map(Encoder::header).unwrap_or_default();
    let records = futures::stream::unfold((chunks, encoder), |(mut chunks, mut encoder)| async move {
        let enc = encoder.as_mut()?;
        match chunks.recv().await {
            Some(Ok(records)) => Some((Ok(Bytes::from(enc.records(&records))), (chunks, encoder))),
            Some(Err(e)) => {
                tracing::error!(error = %e, "backup failed");
                Some((Err(e), (chunks, None)))
            }
            None => Some((Ok(Bytes::from(encoder.take()?.end())), (chunks, None))),
        }
    });
    let body = futures::stream::once(async move { Ok::<_, StoreError>(Bytes::from(header)) }).chain(records);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(body)).into_response())
}
