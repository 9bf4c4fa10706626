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
    bearer_token(req.headers().get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `Authorization` value `Bearer <token>`. The scheme is matched without regard
/// to case and may be followed by one or more spaces (RFC 9110 §11.1 and §11.4: `auth-scheme
/// 1*SP token68`); surrounding whitespace was already trimmed by the HTTP parser.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(super) fn check(req: &Request, accepted: &[&String]) -> Result<(), ApiError> {
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
    use axum::body::Body;

    use super::*;

    fn with_authorization(value: &str) -> Request {
        Request::builder().header(header::AUTHORIZATION, value).body(Body::empty()).unwrap()
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_may_be_followed_by_several_spaces() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc", "Bearer   abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", "Bearer    ", "Bearerabc", "Basic abc", "Token abc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_request_passes_with_the_token_in_any_accepted_spelling() {
        let secret = "s3cret".to_owned();
        for ok in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert!(check(&with_authorization(ok), &[&secret]).is_ok(), "{ok:?}");
        }
        for refused in ["bearer s3cre", "bearer S3CRET", "Basic s3cret", "bearer"] {
            assert!(
                matches!(check(&with_authorization(refused), &[&secret]), Err(ApiError::Unauthorized)),
                "{refused:?}"
            );
        }
        let none = Request::builder().body(Body::empty()).unwrap();
        assert!(matches!(check(&none, &[&secret]), Err(ApiError::Unauthorized)));
        assert!(check(&none, &[]).is_ok(), "no token configured: open");
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
