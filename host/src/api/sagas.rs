//! `/v1/sagas`: define, list, describe.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState, extract};
use crate::domain::SagaName;
use crate::store::{DefinitionPut, StoredDefinition};

fn describe(d: &StoredDefinition) -> Value {
    json!({ "name": d.name, "version": d.version, "created_at": d.created_at, "definition": d.definition })
}

/// `PUT /v1/sagas/{name}`: 201 new, 200 replaced (a new version) or unchanged.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = extract::name(&name, SagaName::parse)?;
    let bytes = extract::body(body)?;
    let (stored, put) = state.orch.put_definition(name, &bytes).await?;
    if put != DefinitionPut::Unchanged {
        tracing::info!(saga = %stored.name, version = stored.version, "saga defined");
    }
    let status = if put == DefinitionPut::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(describe(&stored))))
}

/// `GET /v1/sagas`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = state.orch.store().definitions().await?;
    Ok(Json(json!({ "sagas": all.iter().map(describe).collect::<Vec<_>>() })))
}

/// `GET /v1/sagas/{name}`.
pub async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let name = extract::name(&name, SagaName::parse)?;
    let stored = state.orch.store().definition(&name, None).await?;
    stored.map(|d| Json(describe(&d))).ok_or_else(|| ApiError::NotFound(format!("saga {name} not found")))
}
