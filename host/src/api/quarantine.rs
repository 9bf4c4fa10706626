//! `GET /v1/quarantine`: executions set aside because their stored stream cannot be read
//! (docs/operations.md, "Executions that cannot be read").

use axum::Json;
use axum::extract::State;

use super::{ApiError, AppState};
use crate::store::QuarantineEntry;

/// Every quarantined execution.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QuarantineList {
    /// By execution id.
    pub executions: Vec<QuarantineEntry>,
}

/// `GET /v1/quarantine` (admin token).
#[utoipa::path(get, path = "/v1/quarantine", tag = "executions", operation_id = "listQuarantine",
    responses((status = 200, body = QuarantineList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<QuarantineList>, ApiError> {
    Ok(Json(QuarantineList { executions: state.orch.store().quarantine_list().await? }))
}
