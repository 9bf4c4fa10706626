//! One error type for the whole API, rendered as `{"error": {"code", "message"}}`.
//! Server-side failures are logged here with their cause; clients get a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::domain::DefinitionError;
use crate::domain::decide::CommandError;
use crate::domain::subscription::SubscriptionError;
use crate::orchestrator::OrchestratorError;
use crate::runtime::UploadError;
use crate::store::StoreError;

/// The JSON body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The details of an error.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code: bad_request, invalid, invalid_plugin, not_found, conflict,
    /// execution_quarantined, idempotency_key_reused, too_large, unsupported_media_type, unauthorized,
    /// busy, unavailable, internal, method_not_allowed, request_timeout, uri_too_long,
    /// headers_too_large
    /// (docs/api.md).
    pub code: String,
    /// For people.
    pub message: String,
    /// Every problem found (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// An API failure, each variant with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but breaking rules; every problem listed.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Not valid as a plugin.
    #[error("{0}")]
    InvalidPlugin(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource's state forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The execution's stored stream cannot be read: it is quarantined (docs/operations.md).
    #[error("{0}")]
    Quarantined(String),
    /// An Idempotency-Key reused with a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// Body too large.
    #[error("{0}")]
    TooLarge(String),
    /// A body of a media type the route does not read (its `Content-Type`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The host is at its limit of running executions: try again later.
    #[error("{0}")]
    Busy(String),
    /// Storage unavailable (disk full, read-only): try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
    /// The route exists, but not with this method (the response carries `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body did not arrive in full in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request target (path and query) is too long.
    #[error("{0}")]
    UriTooLong(String),
    /// The request's header section is too large.
    #[error("{0}")]
    HeadersTooLarge(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::InvalidPlugin(_) => (StatusCode::BAD_REQUEST, "invalid_plugin"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Quarantined(_) => (StatusCode::CONFLICT, "execution_quarantined"),
            Self::IdempotencyKeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error; see the host's log".to_string()
            }
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                format!("storage unavailable, try again later: {cause}")
            }
            other => other.to_string(),
        };
        let problems = match self {
            Self::Invalid(problems) => Some(problems),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message, problems } };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound(format!("execution {id} not found")),
            StoreError::NotOwner(_) => Self::Conflict(e.to_string()),
            StoreError::Conflict { .. } | StoreError::StateConflict { .. } => Self::Conflict(e.to_string()),
            StoreError::Unavailable(_) => Self::Unavailable(e.to_string()),
            StoreError::BadSequence(_) | StoreError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(e: crate::secrets::SecretError) -> Self {
        use crate::secrets::SecretError;
        match e {
            SecretError::BadName(_) | SecretError::BadValue => Self::BadRequest(e.to_string()),
            SecretError::Missing(_) => Self::NotFound(e.to_string()),
            SecretError::TooMany => Self::Conflict(e.to_string()),
            SecretError::Store(s) => s.into(),
            SecretError::NoKey(_) | SecretError::WrongKey(_) | SecretError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::UnknownSaga(_)
            | OrchestratorError::UnknownExecution(_)
            | OrchestratorError::UnknownSubscription(_) => Self::NotFound(e.to_string()),
            OrchestratorError::Subscription(SubscriptionError::Malformed(m)) => {
                Self::BadRequest(format!("malformed subscription: {m}"))
            }
            OrchestratorError::Subscription(SubscriptionError::Invalid(problems)) => Self::Invalid(problems),
            OrchestratorError::Command(c @ CommandError::UnknownTopic(_)) => Self::Invalid(vec![c.to_string()]),
            OrchestratorError::Command(c) => Self::Conflict(c.to_string()),
            OrchestratorError::Busy(_) => Self::Busy(e.to_string()),
            OrchestratorError::Definition(DefinitionError::Malformed(m)) => {
                Self::BadRequest(format!("malformed definition: {m}"))
            }
            OrchestratorError::Definition(DefinitionError::Invalid(problems)) => Self::Invalid(problems),
            OrchestratorError::Store(s) => s.into(),
            OrchestratorError::Fold(f) => Self::Internal(f.to_string()),
            OrchestratorError::Quarantined { .. } => Self::Quarantined(e.to_string()),
            OrchestratorError::IdempotencyKeyReused(_) => Self::IdempotencyKeyReused(e.to_string()),
            OrchestratorError::Secret(s) => s.into(),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            UploadError::Invalid(_) => Self::InvalidPlugin(e.to_string()),
            UploadError::Conflict(_) => Self::Conflict(e.to_string()),
            UploadError::Store(s) => s.into(),
        }
    }
}
