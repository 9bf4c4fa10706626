//! The load generator's HTTP client: one kept-alive HTTP/1.1 connection per client task,
//! straight on hyper. A general client (URL parsing, a shared pool, redirects, timeouts per
//! request) cost the benchmark process a noticeable share of its CPU, which it then could not
//! give to the host it measures.

use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::sync::lock;

/// One connection that sends its requests to one path.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    uri: Uri,
    host: HeaderValue,
}

impl Conn {
    /// Connects to `addr`; requests go to `path_and_query`.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "bench connection closed");
            }
        });
        Ok(Self { send, uri: path_and_query.parse()?, host: HeaderValue::from_str(&addr.to_string())? })
    }

    /// Gets the path and returns the answer's status and body.
    pub async fn get(&mut self) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let req = Request::get(self.uri.clone()).header(HOST, self.host.clone()).body(Full::new(Bytes::new()))?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// Posts `body` (JSON) and returns the answer's status and body.
    pub async fn post(&mut self, body: &'static [u8]) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let req = Request::post(self.uri.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body)))?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

/// Connections to one address and path, shared by any number of concurrent requests: a
/// request takes an idle connection or opens one, and gives it back when answered.
pub struct Pool {
    addr: SocketAddr,
    path_and_query: String,
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl Pool {
    /// A pool with `warm` connections opened already.
    pub async fn new(addr: SocketAddr, path_and_query: &str, warm: usize) -> anyhow::Result<Self> {
        let mut idle = Vec::with_capacity(warm);
        for _ in 0..warm {
            idle.push(Conn::connect(addr, path_and_query).await?);
        }
        Ok(Self { addr, path_and_query: path_and_query.into(), idle: std::sync::Mutex::new(idle) })
    }

    /// Posts `body` on some connection.
    pub async fn post(&self, body: &'static [u8]) -> anyhow::Result<(StatusCode, Bytes)> {
        // A connection the server closed while it sat idle (its idle timeout) is dropped.
        let idle = std::iter::from_fn(|| lock(&self.idle).pop()).find(|c| !c.send.is_closed());
        let mut conn = match idle {
            Some(c) => c,
            None => Conn::connect(self.addr, &self.path_and_query).await?,
        };
        let answer = conn.post(body).await?;
        lock(&self.idle).push(conn);
        Ok(answer)
    }
}
