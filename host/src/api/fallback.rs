//! The last word on errors: every error the router produces is JSON of the documented shape
//! (docs/api.md, "Errors"), including those no handler wrote: 405 on a known route, and the
//! plain-text rejections of axum's extractors (a path segment that is not UTF-8 once
//! percent-decoded, for one).

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ErrorBody, ErrorDetail};

/// Longest plain-text error body carried over into the JSON message.
const MAX_MESSAGE_BYTES: usize = 4 << 10;

/// `Router::method_not_allowed_fallback`: 405 naming the method (axum adds `Allow`).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}

/// The unknown-route fallback.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

fn is_json(response: &Response) -> bool {
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    content_type.is_some_and(|t| t.starts_with("application/json"))
}

/// Middleware rewriting any error response that is not JSON into the documented shape, with
/// its status, its `Allow` header, and its text as the message.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = text(body).await.unwrap_or_default();
    let message = match message.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        text => text.to_owned(),
    };
    let mut json = as_api_error(status, message);
    for name in [header::ALLOW, header::CONNECTION, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// The whole body as text when it is a small, complete one (a rejection's message); never
/// waits on a stream.
async fn text(body: Body) -> Option<String> {
    let size = axum::body::HttpBody::size_hint(&body).exact()?;
    if size > MAX_MESSAGE_BYTES as u64 {
        return None;
    }
    let bytes = to_bytes(body, MAX_MESSAGE_BYTES).await.ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn as_api_error(status: StatusCode, message: String) -> Response {
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(message),
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(message),
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong(message),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(vec![message]),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeadersTooLarge(message),
        // Logged as internal errors (they are bugs), with their own status kept.
        s if s.is_server_error() => {
            let mut response = ApiError::Internal(message).into_response();
            *response.status_mut() = s;
            return response;
        }
        // No variant for it: the status stays, with the generic client-error code.
        _ => {
            let detail = ErrorDetail { code: "bad_request".into(), message, problems: None };
            return (status, axum::Json(ErrorBody { error: detail })).into_response();
        }
    };
    error.into_response()
}
