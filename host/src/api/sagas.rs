//! `/v1/sagas`: define, list, describe.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState, ErrorBody, SagaList, extract};
use crate::domain::SagaName;
use crate::store::{DefinitionPut, StoredDefinition};

/// `PUT /v1/sagas/{name}`: 201 new, 200 replaced (a new version) or unchanged.
#[utoipa::path(put, path = "/v1/sagas/{name}", tag = "sagas", operation_id = "putSaga",
    params(("name" = SagaName, Path, description = "saga name")),
    request_body(content = ref("#/components/schemas/DefinitionRequest"), content_type = "application/json",
        description = "steps, timeouts, retry policies, deadline (docs/definitions.md); no Content-Type is read as JSON, and so is `application/*+json`"),
    responses((status = 201, body = StoredDefinition, description = "defined"), (status = 200, body = StoredDefinition, description = "replaced by a new version, or unchanged"),
        (status = 400, body = ErrorBody, description = "bad saga name; body not JSON, a field of the wrong type or an unknown field"),
        (status = 413, body = ErrorBody, description = "over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON"),
        (status = 422, body = ErrorBody, description = "not an object, or rules broken: every problem listed in `problems`")))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StoredDefinition>), ApiError> {
    let name = extract::name(&name, SagaName::parse)?;
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    let (stored, put) = state.orch.put_definition(name, &bytes).await?;
    if put != DefinitionPut::Unchanged {
        tracing::info!(saga = %stored.name, version = stored.version, "saga defined");
    }
    let status = if put == DefinitionPut::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(stored)))
}

/// `GET /v1/sagas`.
#[utoipa::path(get, path = "/v1/sagas", tag = "sagas", operation_id = "listSagas", responses((status = 200, body = SagaList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SagaList>, ApiError> {
    Ok(Json(SagaList { sagas: state.orch.store().definitions().await? }))
}

/// `GET /v1/sagas/{name}`.
#[utoipa::path(get, path = "/v1/sagas/{name}", tag = "sagas", operation_id = "getSaga",
    params(("name" = SagaName, Path, description = "saga name")),
    responses((status = 200, body = StoredDefinition), (status = 400, body = ErrorBody, description = "bad saga name"),
        (status = 404, body = ErrorBody, description = "no such saga")))]
pub async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<StoredDefinition>, ApiError> {
    let name = extract::name(&name, SagaName::parse)?;
    let stored = state.orch.store().definition(&name, None).await?;
    stored.map(Json).ok_or_else(|| ApiError::NotFound(format!("saga {name} not found")))
}
