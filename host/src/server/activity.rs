//! What one connection is doing, for its timeouts: the socket wrapper records reads and stalled
//! writes, the service records requests in flight (until their response body is dropped), and
//! [`Activity::expired`] says when and why the connection has to go (docs/operations.md,
//! "Slow and abusive clients").

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The connection timeouts a watchdog enforces.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From accepting a connection, or from the first byte of a later request, to a complete
    /// request head.
    pub header_read: Duration,
    /// Between requests on a kept-alive connection; also how long a response may wait for a
    /// client that does not read it.
    pub idle: Duration,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head did not arrive in full in time: the connection is dropped.
    Head,
    /// Nothing was asked for the idle timeout: the connection is closed.
    Idle,
    /// The client stopped reading a response: the connection is dropped.
    WriteStalled,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// Since when no request is in flight (accepted, or the last response ended).
    waiting_since: Instant,
    /// The first byte read while no request was in flight: a request head has begun.
    first_byte: Option<Instant>,
    /// No request has started yet on this connection.
    fresh: bool,
    /// Since when a write has been waiting for the client to make room.
    write_blocked_since: Option<Instant>,
}

/// One connection's activity, shared by its socket, its service and its watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    /// Woken whenever a deadline may have moved earlier (or appeared).
    changed: Notify,
    timeouts: Timeouts,
}

impl Activity {
    /// A connection accepted now.
    pub fn new(timeouts: Timeouts) -> Arc<Self> {
        let state = State {
            in_flight: 0,
            waiting_since: Instant::now(),
            first_byte: None,
            fresh: true,
            write_blocked_since: None,
        };
        Arc::new(Self { state: Mutex::new(state), changed: Notify::new(), timeouts })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The earliest deadline now in force, if any.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let s = self.state();
        let t = self.timeouts;
        let stalled = s.write_blocked_since.map(|at| (at + t.idle, Expiry::WriteStalled));
        // A request in flight (its body being read, its handler running, its response
        // streaming) is bounded by the body timeout and the stall check, never by these.
        let waiting = (s.in_flight == 0).then(|| match s.first_byte {
            // A new connection is expected to send its first request at once: its clock runs
            // from the accept, however early its first byte.
            _ if s.fresh => (s.waiting_since + t.header_read, Expiry::Head),
            Some(at) => (at + t.header_read, Expiry::Head),
            None => (s.waiting_since + t.idle, Expiry::Idle),
        });
        [stalled, waiting].into_iter().flatten().min_by_key(|(at, _)| *at)
    }

    /// Resolves when a deadline has passed, with the reason.
    pub async fn expired(&self) -> Expiry {
        loop {
            match self.deadline() {
                None => self.changed.notified().await,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => continue,
                    }
                    if let Some((at, why)) = self.deadline()
                        && at <= Instant::now()
                    {
                        return why;
                    }
                }
            }
        }
    }

    fn read(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && s.first_byte.is_none() {
            s.first_byte = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut s = self.state();
        match (blocked, s.write_blocked_since) {
            (true, None) => {
                s.write_blocked_since = Some(Instant::now());
                drop(s);
                self.changed.notify_one();
            }
            (false, Some(_)) => s.write_blocked_since = None,
            _ => {}
        }
    }

    /// A request head has been read: it is in flight until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        let mut s = self.state();
        s.in_flight += 1;
        s.fresh = false;
        s.first_byte = None;
        InFlight(self.clone())
    }
}

/// A request in flight; dropped with its response body (or when the connection goes).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            s.waiting_since = Instant::now();
            s.first_byte = None;
            drop(s);
            self.0.changed.notify_one();
        }
    }
}

/// A response body that holds its request's [`InFlight`] until hyper drops it, which is when
/// the last byte has been handed to the socket (or the connection has gone).
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// `inner`, keeping `in_flight` alive as long as it.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that reports to its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// `inner`, reporting to `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn track<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.activity.write_blocked(polled.is_pending());
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's paused clock needs its test-util feature), kept short.
    const T: Timeouts = Timeouts { header_read: Duration::from_millis(40), idle: Duration::from_millis(120) };
    const NEVER: Duration = Duration::from_millis(400);

    async fn expiry_after(a: &Activity, at_least: Duration) -> Expiry {
        let start = Instant::now();
        let why = a.expired().await;
        assert!(start.elapsed() >= at_least, "{why:?} after {:?}", start.elapsed());
        why
    }

    #[tokio::test]
    async fn a_fresh_connection_must_send_its_head_in_time() {
        let a = Activity::new(T);
        assert_eq!(expiry_after(&a, T.header_read).await, Expiry::Head);
    }

    #[tokio::test]
    async fn requests_in_flight_have_no_deadline_and_idle_follows_them() {
        let a = Activity::new(T);
        let guard = a.request_started();
        assert!(tokio::time::timeout(NEVER, a.expired()).await.is_err());
        drop(guard);
        assert_eq!(expiry_after(&a, T.idle).await, Expiry::Idle);
    }

    #[tokio::test]
    async fn a_first_byte_after_idling_starts_the_header_clock() {
        let t = Timeouts { idle: Duration::from_secs(30), ..T };
        let a = Activity::new(t);
        drop(a.request_started());
        let waiting = a.clone();
        let watchdog = tokio::spawn(async move { waiting.expired().await });
        tokio::time::sleep(T.header_read).await;
        let first_byte = Instant::now();
        a.read();
        assert_eq!(watchdog.await.unwrap(), Expiry::Head);
        let waited = first_byte.elapsed();
        assert!(waited >= t.header_read && waited < t.idle, "{waited:?}");
    }

    #[tokio::test]
    async fn a_stalled_write_expires_even_while_a_response_streams() {
        let a = Activity::new(T);
        let _streaming = a.request_started();
        a.write_blocked(true);
        assert_eq!(expiry_after(&a, T.idle).await, Expiry::WriteStalled);
        a.write_blocked(false);
        assert!(tokio::time::timeout(NEVER, a.expired()).await.is_err());
    }
}
