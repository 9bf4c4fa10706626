//! `/v1/plugins`: upload, list, describe.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState, extract};
use crate::domain::{PluginName, PluginVersion};

/// `PUT /v1/plugins/{name}/{version}`: 201 new, 200 same bytes again, 409 other bytes.
pub async fn upload(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = extract::name(&name, PluginName::parse)?;
    let version = extract::name(&version, PluginVersion::parse)?;
    let bytes = extract::body(body)?;
    let now = state.orch.now_ms();
    let (meta, created) = state.orch.plugins().upload(name, version, bytes.to_vec(), now).await?;
    if created {
        tracing::info!(plugin = %meta.name, version = %meta.version, digest = %meta.digest, size = meta.size, "plugin uploaded");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!(meta))))
}

/// `GET /v1/plugins`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "plugins": state.orch.store().plugins().await? })))
}

/// `GET /v1/plugins/{name}/{version}`.
pub async fn show(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let name = extract::name(&name, PluginName::parse)?;
    let version = extract::name(&version, PluginVersion::parse)?;
    let meta = state.orch.store().plugin(&name, &version).await?;
    meta.map(|m| Json(json!(m))).ok_or_else(|| ApiError::NotFound(format!("plugin {name}@{version} not found")))
}
