//! Bodies that count what passes through them, enforce the per-request byte and time limits,
//! and close the call's record when they end; and the connection task they keep alive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error, WasiBody};

use super::Journal;
use crate::domain::FailureKind;

/// The task driving one connection's I/O; aborted when the response body is dropped, so no
/// connection outlives the attempt that opened it.
pub(super) struct ConnTask(tokio::task::JoinHandle<()>);

impl ConnTask {
    pub(super) fn spawn<F>(conn: F) -> Self
    where
        F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        Self(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "outbound connection ended with an error");
            }
        }))
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request body, counted against the per-request limit.
pub(super) struct MeteredRequest {
    inner: WasiBody,
    journal: Arc<Journal>,
    index: usize,
    sent: u64,
    limit: u64,
    url: String,
}

impl MeteredRequest {
    pub(super) fn new(inner: WasiBody, journal: Arc<Journal>, index: usize, limit: u64, url: String) -> Self {
        Self { inner, journal, index, sent: 0, limit, url }
    }
}

impl Body for MeteredRequest {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let n = data.map_or(0, |d| d.len() as u64);
            this.sent += n;
            this.journal.count_request(this.index, n);
            if this.sent > this.limit {
                let message = format!(
                    "outbound request to {} has a body larger than the limit of {} bytes",
                    this.url, this.limit
                );
                this.journal.violate(FailureKind::Limit, message);
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(this.sent)))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response body needs besides the bytes: see [`MeteredResponse::wrap`].
pub(super) struct MeteredResponse {
    pub(super) journal: Arc<Journal>,
    pub(super) index: usize,
    pub(super) status: u16,
    pub(super) limit: u64,
    pub(super) timeout_ms: u64,
    pub(super) url: String,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) conn: Option<ConnTask>,
}

impl MeteredResponse {
    /// The response body as the guest reads it: counted, bounded in size and time.
    pub(super) fn wrap(self, incoming: hyper::body::Incoming) -> ResponseBody {
        ResponseBody { incoming, meter: self, received: 0, ended: false }
    }
}

/// A response body being read by the guest.
pub(super) struct ResponseBody {
    incoming: hyper::body::Incoming,
    meter: MeteredResponse,
    received: u64,
    ended: bool,
}

impl ResponseBody {
    /// Closes the call's record and lets go of its concurrency slot and connection.
    fn end(&mut self, error: Option<String>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let (status, received) = (self.meter.status, self.received);
        self.meter.journal.finish(self.meter.index, |c| {
            c.status = Some(status);
            c.response_bytes = received;
            c.error = error;
        });
        self.meter.permit = None;
        self.meter.conn = None;
    }

    fn fail(&mut self, kind: FailureKind, message: String, code: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.meter.journal.violate(kind, message.clone());
        self.end(Some(message));
        Poll::Ready(Some(Err(code)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                if this.received > this.meter.limit {
                    let message = format!(
                        "outbound response from {} has a body larger than the limit of {} bytes",
                        this.meter.url, this.meter.limit
                    );
                    let limit = this.meter.limit;
                    return this.fail(FailureKind::Limit, message, Error::HttpResponseBodySize(Some(limit)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(Some(format!("reading the response: {e}")));
                Poll::Ready(Some(Err(Error::Hyper(e))))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.meter.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let message = format!(
                    "outbound request to {} exceeded the per-request time limit of {} ms",
                    this.meter.url, this.meter.timeout_ms
                );
                this.fail(FailureKind::Limit, message, Error::ConnectionReadTimeout)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped unread (or partly read): the record keeps what was received.
        self.end(None);
    }
}
