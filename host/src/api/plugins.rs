//! `/v1/plugins`: upload, list, describe.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, ErrorBody, PluginList, PluginState, extract};
use crate::domain::{PluginName, PluginVersion};
use crate::store::{PluginMeta, StateItem};

/// `PUT /v1/plugins/{name}/{version}`: 201 new, 200 same bytes again, 409 other bytes.
#[utoipa::path(put, path = "/v1/plugins/{name}/{version}", tag = "plugins", operation_id = "uploadPlugin",
    params(("name" = PluginName, Path, description = "plugin name"), ("version" = PluginVersion, Path, description = "semver version")),
    request_body(content = ref("#/components/schemas/WasmComponent"), content_type = "application/wasm",
        description = "the component's bytes (wasm32-wasip2); the Content-Type is not read"),
    responses((status = 201, body = PluginMeta, description = "stored"), (status = 200, body = PluginMeta, description = "the same bytes were already stored"),
        (status = 400, body = ErrorBody, description = "bad name or version (`bad_request`); not a valid component of the plugin world, with the reason (`invalid_plugin`)"),
        (status = 409, body = ErrorBody, description = "other bytes are stored under this version"), (status = 413, body = ErrorBody, description = "over --max-plugin-mib")))]
pub async fn upload(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PluginMeta>), ApiError> {
    let name = extract::name(&name, PluginName::parse)?;
    let version = extract::name(&version, PluginVersion::parse)?;
    let bytes = extract::body(body)?;
    let now = state.orch.now_ms();
    let (meta, created) = state.orch.plugins().upload(name, version, bytes.to_vec(), now).await?;
    if created {
        tracing::info!(plugin = %meta.name, version = %meta.version, digest = %meta.digest, size = meta.size, "plugin uploaded");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(meta)))
}

/// `GET /v1/plugins`.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", operation_id = "listPlugins", responses((status = 200, body = PluginList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList { plugins: state.orch.store().plugins().await? }))
}

/// `GET /v1/plugins/{name}/{version}`.
#[utoipa::path(get, path = "/v1/plugins/{name}/{version}", tag = "plugins", operation_id = "getPlugin",
    params(("name" = PluginName, Path, description = "plugin name"), ("version" = PluginVersion, Path, description = "semver version")),
    responses((status = 200, body = PluginMeta), (status = 400, body = ErrorBody, description = "bad name or version"),
        (status = 404, body = ErrorBody, description = "no such plugin version")))]
pub async fn show(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PluginMeta>, ApiError> {
    let name = extract::name(&name, PluginName::parse)?;
    let version = extract::name(&version, PluginVersion::parse)?;
    let meta = state.orch.store().plugin(&name, &version).await?;
    meta.map(Json).ok_or_else(|| ApiError::NotFound(format!("plugin {name}@{version} not found")))
}

/// Query of a state listing.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    collection: Option<String>,
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// `GET /v1/plugins/{name}/state?collection=&prefix=&limit=`: the plugin's committed state, by
/// collection then key (admin).
#[utoipa::path(get, path = "/v1/plugins/{name}/state", tag = "plugins", operation_id = "getPluginState",
    params(("name" = PluginName, Path, description = "plugin name (state is shared by its versions)"),
        ("collection" = Option<String>, Query, description = "only this collection"),
        ("prefix" = Option<String>, Query, description = "only keys starting with this"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size, default 100")),
    responses((status = 200, body = PluginState), (status = 400, body = ErrorBody, description = "bad name, bad or unknown query parameter"),
        (status = 404, body = ErrorBody, description = "no plugin of that name")))]
pub async fn state(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Json<PluginState>, ApiError> {
    let name = extract::name(&name, PluginName::parse)?;
    let q = extract::query(query)?;
    let limit = extract::page_limit(q.limit, 100)?;
    let store = state.orch.store();
    if !store.plugins().await?.iter().any(|p| p.name == name) {
        return Err(ApiError::NotFound(format!("no plugin named {name} has been uploaded")));
    }
    let mut found = store.state_list(&name, q.collection.as_deref(), &q.prefix, limit + 1).await?;
    let truncated = found.len() > limit;
    found.truncate(limit);
    let entries = found.iter().map(|(k, e)| StateItem::new(k, e)).collect();
    Ok(Json(PluginState { plugin: name, entries, truncated }))
}
