//! Request parsing shared by the handlers, so that every bad input becomes an [`ApiError`]
//! that says what was wrong (never axum's plain-text rejections).

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::domain::{ExecutionId, InvalidId};

/// The body, or a 413/400 naming the problem.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!("request body too large: {}", r.body_text())),
        _ => ApiError::BadRequest(format!("cannot read request body: {}", r.body_text())),
    })
}

/// Query parameters, or a 400 naming the problem.
pub fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|r| ApiError::BadRequest(format!("bad query string: {}", r.body_text())))
}

/// A JSON body, or a 400 with serde's explanation (line, column, what was expected).
/// Bounded as docs/api.md says (nesting, numbers): whatever is accepted can be read back.
pub fn json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    crate::domain::json::check(bytes).map_err(|e| ApiError::BadRequest(format!("{what} refused: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("{what} is not valid JSON: {e}")))
}

/// A path segment parsed with `parse`, or a 400.
pub fn name<T>(text: &str, parse: impl FnOnce(&str) -> Result<T, InvalidId>) -> Result<T, ApiError> {
    parse(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// An execution id; a malformed one cannot exist, so it is a 404.
pub fn execution_id(text: &str) -> Result<ExecutionId, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound(format!("execution {text:?} not found (not an execution id)")))
}

/// A JSON body's `Content-Type`: none (taken as JSON), `application/json` or any
/// `application/*+json`, with any parameters; anything else is a 415 (docs/api.md, "Requests").
pub fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let media = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = media == "application/json"
        || media.strip_prefix("application/").is_some_and(|s| s.len() > "+json".len() && s.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not JSON: send application/json (or leave the header out)",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

/// Longest key header (`Idempotency-Key`, `Execution-Key`, `Event-Id`, `Event-Key`).
pub const MAX_KEY: usize = crate::domain::topic::MAX_KEY_BYTES;

/// A key header: 1-256 printable ASCII characters, or absent.
pub fn key_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let k = v.to_str().map_err(|_| ApiError::BadRequest(format!("{name} must be visible ASCII")))?;
    if k.is_empty() || k.len() > MAX_KEY || k.bytes().any(|b| !(b' '..=b'~').contains(&b)) {
        return Err(ApiError::BadRequest(format!("{name} must be 1-{MAX_KEY} printable ASCII characters")));
    }
    Ok(Some(k.to_owned()))
}

/// A JSON body that must be there: `{}` for nothing (an empty body is a client that forgot it).
pub fn required_json(bytes: &[u8], what: &str) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(format!("the {what} is required: send JSON, e.g. {{}}")));
    }
    json(bytes, what)
}

/// A page size: `default` when absent, else 1 to 1000.
pub fn page_limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=1_000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest("limit must be between 1 and 1000".into()))
    }
}
