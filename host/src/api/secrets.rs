//! Secrets (docs/secrets.md), admin token: `PUT /v1/secrets/{name}` stores a value,
//! `GET /v1/secrets` lists names, `DELETE /v1/secrets/{name}` removes one. No route answers a
//! value, and no error quotes the body: it may be the value.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState, ErrorBody, extract};
use crate::secrets::SecretInfo;

/// `PUT /v1/secrets/{name}`'s body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The value: UTF-8 text of 8 to 16,384 bytes.
    #[schema(min_length = 8, max_length = 16384)]
    pub value: String,
}

/// `GET /v1/secrets`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    /// Every secret, by name, without values.
    pub secrets: Vec<SecretInfo>,
}

/// `PUT /v1/secrets/{name}`: 201 new, 200 replaced. Answers the name, never the value.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "putSecret",
    params(("name" = String, Path, description = "secret name: 1-128 characters of A-Z a-z 0-9 _ - .")),
    request_body(content = SecretRequest, content_type = "application/json"),
    responses((status = 201, body = SecretInfo, description = "stored"), (status = 200, body = SecretInfo, description = "replaced"),
        (status = 400, body = ErrorBody, description = "bad name; body not `{\"value\": \"<8 to 16,384 bytes of text>\"}` (the message never quotes the body)"),
        (status = 409, body = ErrorBody, description = "the host already holds 1,000 secrets"),
        (status = 413, body = ErrorBody, description = "over --max-body-kib"),
        (status = 415, body = ErrorBody, description = "a Content-Type that is not JSON")))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    extract::json_content_type(&headers)?;
    let bytes = extract::body(body)?;
    let value = serde_json::from_slice::<SecretRequest>(&bytes).map(|r| r.value).map_err(|_| {
        ApiError::BadRequest(
            "the body must be a JSON object {\"value\": \"<text>\"} and nothing else (not detailed further: \
             the detail could quote the value)"
                .into(),
        )
    })?;
    let (created, info) = state.orch.secrets().put(&name, &value, state.orch.now_ms()).await?;
    tracing::info!(secret = %info.name, encrypted = info.encrypted, "secret stored");
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(info)))
}

/// `GET /v1/secrets`: names and times, never values.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", operation_id = "listSecrets",
    responses((status = 200, body = SecretList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SecretList>, ApiError> {
    Ok(Json(SecretList { secrets: state.orch.secrets().list().await? }))
}

/// `DELETE /v1/secrets/{name}`: 204; steps that reference it fail (retryably) until it is
/// stored again.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "deleteSecret",
    params(("name" = String, Path, description = "secret name")),
    responses((status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "bad name"),
        (status = 404, body = ErrorBody, description = "no such secret")))]
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if state.orch.secrets().delete(&name).await? {
        tracing::info!(secret = %name, "secret deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("secret {name:?} is not stored")))
    }
}
