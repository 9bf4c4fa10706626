//! Requests refused from their head alone, before any body is read, and bodies that must
//! arrive in time (docs/api.md, "Errors"; docs/operations.md, "Slow and abusive clients").
//!
//! axum's `DefaultBodyLimit` only counts bytes as the handler reads them: a request announcing
//! `Content-Length: 99999999999` and sending two bytes would wait for the rest. These checks
//! answer from the announced length at once.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// Longest request target (path and query) answered with a JSON 414. hyper's parser refuses
/// targets of 65,534 bytes or more itself, with an empty 414.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest header section (names, values and separators) answered with a JSON 431. hyper's
/// parser refuses more than 100 fields, or a head past its read buffer (about 400-500 KiB),
/// itself with an empty 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Marks a response after which the connection cannot be reused (its body was not read).
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Route middleware (state: the route's `DefaultBodyLimit`) refusing, with 413 and without
/// reading it, any body announced larger than the limit.
pub async fn announced_body_limit(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => closing(
            ApiError::TooLarge(format!("request body of {n} bytes is over this route's limit of {limit} bytes"))
                .into_response(),
        ),
        _ => next.run(req).await,
    }
}

/// Refuses a request whose target or header section is over [`MAX_URI_BYTES`] or
/// [`MAX_HEADER_BYTES`], as JSON.
pub async fn head_limits(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        let message = format!("request target of {target} bytes is over the limit of {MAX_URI_BYTES}");
        return closing(ApiError::UriTooLong(message).into_response());
    }
    // Each field as sent: name, ": ", value, CRLF.
    let fields: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if fields > MAX_HEADER_BYTES {
        let message = format!("request headers of {fields} bytes are over the limit of {MAX_HEADER_BYTES}");
        return closing(ApiError::HeadersTooLarge(message).into_response());
    }
    next.run(req).await
}

/// Middleware (state: the timeout) giving every request body that long from the end of the
/// request head to arrive in full; past it, reading fails, the request gets 408 and the
/// connection is closed.
pub async fn body_read_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let late = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let req = req.map(|inner| Body::new(Deadline { inner, deadline, sleep: None, late: late.clone() }));
    let response = next.run(req).await;
    // Whatever the handler made of the failed read (400, most likely), the cause was time.
    if late.load(Ordering::Acquire) {
        let message = format!("the request body did not arrive within {} s", timeout.as_secs_f64());
        return closing(ApiError::RequestTimeout(message).into_response());
    }
    response
}

/// The request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimedOut;

/// A body that fails once its deadline has passed, and says so in `late`.
struct Deadline {
    inner: Body,
    deadline: Instant,
    /// Armed on the first read only, so that bodies never read cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    late: Arc<AtomicBool>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let deadline = self.deadline;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
