//! The HTTP API (docs/api.md): thin handlers that extract, call the orchestrator, map errors.

mod auth;
mod backup;
mod error;
mod executions;
mod export;
mod extract;
mod fallback;
mod guard;
mod openapi;
mod plugins;
mod quarantine;
mod sagas;
mod secrets;
mod subscriptions;
mod topics;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use serde_json::json;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use guard::{MAX_HEADER_BYTES, MAX_URI_BYTES, body_read_timeout};
pub use openapi::{ApiDoc, ROUTES};
pub use secrets::{SecretList, SecretRequest};
pub use subscriptions::{DeadLetterList, Redrive, SubscriptionList};
pub use topics::{EventLog, LoggedEvent, Published};

use crate::orchestrator::Orchestrator;

/// API settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Required for management routes (plugins, sagas, cancel, resume) when set.
    pub admin_token: Option<String>,
    /// Required for triggering and reading executions when set (the admin token works too).
    pub client_token: Option<String>,
    /// Required for `GET /metrics` when set (the admin token works too); open otherwise.
    pub metrics_token: Option<String>,
    /// Largest request body outside plugin uploads (definitions, inputs).
    pub max_body_bytes: usize,
    /// Largest plugin upload.
    pub max_plugin_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            client_token: None,
            metrics_token: None,
            max_body_bytes: 1 << 20,
            max_plugin_bytes: 32 << 20,
        }
    }
}

/// `GET /v1/plugins`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginList {
    /// Every plugin, by name then version.
    pub plugins: Vec<crate::store::PluginMeta>,
}

/// `GET /v1/plugins/{name}/state`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginState {
    /// The plugin whose namespace this is.
    pub plugin: crate::domain::PluginName,
    /// Entries, by collection then key.
    pub entries: Vec<crate::store::StateItem>,
    /// More entries match than `limit`.
    pub truncated: bool,
}

/// `GET /v1/sagas`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SagaList {
    /// The latest version of every saga.
    pub sagas: Vec<crate::store::StoredDefinition>,
}

/// `GET /v1/executions`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExecutionList {
    /// A page, newest first.
    pub executions: Vec<crate::store::ExecutionSummary>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<crate::domain::ExecutionId>,
}

/// An execution accepted for running (or found by its idempotency key).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Its id.
    pub id: crate::domain::ExecutionId,
    /// Its status now.
    pub status: crate::domain::ExecutionStatus,
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The orchestrator.
    pub orch: Arc<Orchestrator>,
    /// Settings.
    pub config: Arc<ApiConfig>,
}

/// `GET /healthz`: 200 while the host serves and its store answers, 503 (with why) when the
/// store does not (a PostgreSQL server that is down or unreachable).
async fn healthz(State(s): State<AppState>) -> axum::response::Response {
    match s.orch.store().health().await {
        Ok(()) => Json(json!({ "status": "ok", "store": "ok" })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "store": e.to_string() })))
            .into_response(),
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (max_body, max_plugin) = (state.config.max_body_bytes, state.config.max_plugin_bytes);
    // Each route's body limit twice: counted as read (DefaultBodyLimit), and announced
    // (Content-Length, answered before any of the body is read).
    let uploads = Router::new()
        .route(
            "/v1/plugins/{name}/{version}",
            put(plugins::upload).layer(DefaultBodyLimit::max(max_plugin)).get(plugins::show),
        )
        .route_layer(middleware::from_fn_with_state(max_plugin, guard::announced_body_limit));
    let management = Router::new()
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}/state", get(plugins::state))
        .route("/v1/sagas", get(sagas::list))
        .route("/v1/sagas/{name}", put(sagas::put).get(sagas::show))
        .route("/v1/executions/{id}/cancel", post(executions::cancel))
        .route("/v1/executions/{id}/resume", post(executions::resume))
        .route("/v1/quarantine", get(quarantine::list))
        .route("/v1/export", get(export::export))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/secrets", get(secrets::list))
        .route("/v1/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route("/v1/subscriptions", get(subscriptions::list))
        .route(
            "/v1/subscriptions/{name}",
            put(subscriptions::put).get(subscriptions::show).delete(subscriptions::delete),
        )
        .route("/v1/subscriptions/{name}/dead-letters", get(subscriptions::dead_letters))
        .route("/v1/subscriptions/{name}/dead-letters/redrive", post(subscriptions::redrive))
        .route_layer(middleware::from_fn_with_state(max_body, guard::announced_body_limit))
        .merge(uploads)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    let client = Router::new()
        .route("/v1/sagas/{name}/executions", post(executions::trigger))
        .route("/v1/executions", get(executions::list))
        .route("/v1/executions/feed", get(executions::feed))
        .route("/v1/executions/{id}", get(executions::show))
        .route("/v1/executions/{id}/events", get(executions::events))
        .route("/v1/executions/{id}/signals/{topic}", post(executions::signal))
        .route("/v1/events", get(topics::list))
        .route("/v1/events/{topic}", post(topics::publish))
        .route_layer(middleware::from_fn_with_state(max_body, guard::announced_body_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_client));
    Router::new()
        .merge(management)
        .merge(client)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(|| async { Json(<ApiDoc as utoipa::OpenApi>::openapi()) }))
        .route("/ui", get(|| async { axum::response::Html(include_str!("ui.html")) }))
        .route("/", get(|| async { axum::response::Redirect::to("/ui") }))
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(guard::head_limits))
        .layer(middleware::from_fn(fallback::json_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /metrics`: the metrics token (or the admin token) when one is set; the text format the
/// scraper's `Accept` asks for (docs/operations.md, "Metrics").
async fn metrics(State(state): State<AppState>, req: axum::extract::Request) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.config.metrics_token {
        auth::check(&req, &[Some(token), state.config.admin_token.as_ref()].into_iter().flatten().collect::<Vec<_>>())?;
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Exposition::negotiate(accept);
    let m = crate::metrics::metrics();
    m.active_executions.set(state.orch.active_executions() as i64);
    let headers = [(header::CONTENT_TYPE, format.content_type()), (header::VARY, "accept")];
    Ok((StatusCode::OK, headers, m.render(format)))
}
