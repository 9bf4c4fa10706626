//! Bearer tokens: an admin token for management routes, an optional client token for
//! triggering and reading executions.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Compares in time independent of where the strings differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented(req: &Request) -> Option<&str> {
    req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn check(req: &Request, accepted: &[&String]) -> Result<(), ApiError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let token = presented(req).ok_or(ApiError::Unauthorized)?;
    if accepted.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Management routes: the admin token, when one is configured.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    check(&req, &state.config.admin_token.iter().collect::<Vec<_>>())?;
    Ok(next.run(req).await)
}

/// Execution routes: the client token or the admin token, when a client token is configured.
pub async fn require_client(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(client) = &state.config.client_token {
        check(&req, &[Some(client), state.config.admin_token.as_ref()].into_iter().flatten().collect::<Vec<_>>())?;
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
