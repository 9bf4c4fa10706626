//! The HTTP/1.1 server: an accept loop bounded by a connection limit, and one task per
//! connection enforcing the header-read, idle keep-alive and stalled-write timeouts
//! (docs/operations.md, "Slow and abusive clients"). `axum::serve` has none of these.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::activity::{Activity, Expiry, Timeouts, Tracked, Watched};

/// Connection settings (the `serve` flags under "Connections").
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Time to send a complete request head, from connecting (or from the first byte of a later
    /// request on a kept-alive connection); past it the connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may stay silent between requests before it is closed; also
    /// how long a response may wait for a client that does not read it.
    pub idle_timeout: Duration,
    /// Time to send a request body in full, from the end of its head; past it the request gets
    /// 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Connections served at once; past it, new connections wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Connections the kernel completes and queues for us to accept (capped by
/// `net.core.somaxconn`): where connections past the limit wait, and what absorbs a burst of
/// connects. tokio's `TcpListener::bind` asks for 128, which 300 simultaneous connects overflowed
/// (the kernel then drops SYNs and clients retry a second later).
const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with the [`ACCEPT_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std and tokio do: a restarted host can bind while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// How often the "connection limit reached" warning may repeat.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` fires (or is dropped), then stops accepting, asks
/// every connection to finish its request in progress and close, and returns once all have.
/// Dropping the returned future drops every connection at once.
pub async fn serve(listener: TcpListener, app: Router, config: HttpConfig, mut stop: oneshot::Receiver<()>) {
    let timeouts = Timeouts { header_read: config.header_read_timeout, idle: config.idle_timeout };
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (shutdown, shutting_down) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut warned_at: Option<Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        if slots.available_permits() == 0 && warned_at.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
            tracing::warn!(
                max_connections = config.max_connections,
                "connection limit reached: new connections wait until one closes"
            );
            warned_at = Some(Instant::now());
        }
        // A slot first, then a connection: past the limit, clients wait in the kernel's
        // backlog instead of being accepted and dropped.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // No Nagle delay: answers and Server-Sent Events go out as soon as they are written.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (app, shutting_down) = (app.clone(), shutting_down.clone());
        connections.spawn(async move {
            let why = serve_connection(tcp, app, timeouts, shutting_down, slot).await;
            tracing::debug!(%peer, closed = why, "connection closed");
        });
    }
    drop(listener);
    let _ = shutdown.send(());
    while connections.join_next().await.is_some() {}
}

/// Errors that concern one connection only are skipped; others (out of file descriptors)
/// pause accepting for a second, as `axum::serve` does, rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed (out of file descriptors? see docs/operations.md)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it ends; returns why, for the log.
async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    timeouts: Timeouts,
    mut shutting_down: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) -> &'static str {
    let activity = Activity::new(timeouts);
    let io = TokioIo::new(Watched::new(tcp, activity.clone()));
    let service = Service { app: TowerToHyperService::new(app), activity: activity.clone() };
    let conn = hyper::server::conn::http1::Builder::new()
        // hyper's own header timeout also runs between requests, which would cut idle
        // keep-alive to the header timeout: the activity watchdog enforces both instead.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                return match served {
                    Ok(()) => "ended",
                    Err(e) => {
                        tracing::debug!(error = %e, "connection error");
                        "error"
                    }
                };
            }
            _ = shutting_down.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // When idle, nothing has been read since the last response: dropping loses nothing.
            why = activity.expired() => {
                return match why {
                    Expiry::Idle => "idle timeout",
                    Expiry::Head => "header read timeout",
                    Expiry::WriteStalled => "client stopped reading",
                };
            }
        }
    }
}

/// The router, with each request counted in flight until its response body is dropped.
#[derive(Clone)]
struct Service {
    app: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

type Answer = Response<Tracked<Body>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let answer = hyper::service::Service::call(&self.app, req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}
