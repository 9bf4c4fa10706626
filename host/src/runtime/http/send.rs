//! Sending one granted request: resolve the name here, check every address against the grant,
//! connect to a checked address (never resolving again), TLS with rustls, HTTP/1.1 with hyper;
//! the per-request time limit covers all of it, the response body included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, WasiBody};

use super::body::{ConnTask, MeteredRequest, MeteredResponse};
use super::{HttpLimits, Journal};
use crate::domain::http::ip_literal;
use crate::domain::{FailureKind, HttpCall, HttpGrant};

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Where a request goes.
pub(super) struct Target {
    pub(super) https: bool,
    /// As in the URL (IPv6 in brackets).
    pub(super) host: String,
    pub(super) port: u16,
    path: String,
}

impl Target {
    /// The target of `request`, if it has an http(s) scheme and a host.
    pub(super) fn of<B>(request: &http::Request<B>) -> Option<Self> {
        let uri = request.uri();
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let host = uri.host().filter(|h| !h.is_empty())?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Self { https, host, port, path: uri.path().to_string() })
    }

    /// `scheme://host[:port]/path`, without the query string (which may carry secrets).
    pub(super) fn url(&self) -> String {
        format!("{}://{}{}", if self.https { "https" } else { "http" }, self.authority(), self.path)
    }

    fn authority(&self) -> String {
        if self.port == if self.https { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The record of a request as it is about to be checked.
pub(super) fn record<B>(request: &http::Request<B>) -> HttpCall {
    let uri = request.uri();
    let target = Target::of(request);
    HttpCall {
        method: request.method().to_string(),
        scheme: uri.scheme_str().unwrap_or("").to_string(),
        host: target.as_ref().map_or_else(|| uri.host().unwrap_or("").to_string(), Target::authority),
        path: uri.path().to_string(),
        status: None,
        duration_ms: 0,
        request_bytes: 0,
        response_bytes: 0,
        error: None,
    }
}

/// A request that passed the checks made before sending, with what it needs to go out.
pub(super) struct Job {
    pub(super) target: Target,
    pub(super) grant: HttpGrant,
    pub(super) limits: HttpLimits,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) journal: Arc<Journal>,
    pub(super) index: usize,
    pub(super) permit: tokio::sync::OwnedSemaphorePermit,
    pub(super) connect_timeout: Option<Duration>,
}

/// Why a request did not get a response: the guest's error code, and for the record.
struct Failed(Error, String);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Job {
    /// Sends `request` and answers its response (headers; the body streams, metered).
    pub(super) async fn run(
        self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let (journal, index, url) = (self.journal.clone(), self.index, self.target.url());
        let timeout_ms = self.limits.request_timeout.as_millis() as u64;
        match tokio::time::timeout_at(deadline, self.exchange(request, deadline)).await {
            Ok(Ok(response)) => Ok((response, Box::new(async { Ok(()) }))),
            Ok(Err(Failed(code, message))) => {
                journal.finish(index, |c| c.error = Some(message));
                Err(code)
            }
            Err(_) => {
                let message =
                    format!("outbound request to {url} exceeded the per-request time limit of {timeout_ms} ms");
                journal.finish(index, |c| c.error = Some(message.clone()));
                journal.violate(FailureKind::Limit, message);
                Err(Error::ConnectionReadTimeout)
            }
        }
    }

    async fn exchange(
        self,
        mut request: http::Request<WasiBody>,
        deadline: tokio::time::Instant,
    ) -> Result<http::Response<WasiBody>, Failed> {
        let url = self.target.url();
        let limit = self.limits.max_request_body_bytes;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            let message = format!("outbound request to {url} has a body larger than the limit of {limit} bytes");
            self.journal.violate(FailureKind::Limit, message.clone());
            return Err(Failed(Error::HttpRequestBodySize(declared), message));
        }
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failed(Error::HttpProtocolError, format!("HTTP handshake: {e}")))?;
        let conn = ConnTask::spawn(conn);
        // The request line carries the path only: scheme and host are for proxies.
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = path.parse().map_err(|_| Failed(Error::HttpRequestUriInvalid, "bad path".into()))?;
        let (parts, body) = request.into_parts();
        let body = MeteredRequest::new(body, self.journal.clone(), self.index, limit, url.clone());
        let request = http::Request::from_parts(parts, body);
        let response = sender.send_request(request).await.map_err(|e| {
            let text = format!("sending the request: {e}");
            Failed(Error::Hyper(e), text)
        })?;
        let status = response.status().as_u16();
        let meter = MeteredResponse {
            journal: self.journal,
            index: self.index,
            status,
            limit: self.limits.max_response_body_bytes,
            timeout_ms: self.limits.request_timeout.as_millis() as u64,
            url,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            permit: Some(self.permit),
            conn: Some(conn),
        };
        Ok(response.map(|incoming| meter.wrap(incoming).boxed_unsync()))
    }

    /// A connection to an address that passed the grant's checks.
    async fn connect(&self) -> Result<Box<dyn Stream>, Failed> {
        let target = &self.target;
        let addrs: Vec<SocketAddr> = match ip_literal(&target.host) {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|e| {
                    let code = Error::DnsError { rcode: Some(e.to_string()), info_code: None };
                    Failed(code, format!("resolving {}: {e}", target.host))
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Failed(Error::DestinationNotFound, format!("{} has no address", target.host)));
        }
        // Every address is checked before any connection: a name must not reach a private
        // address by answering a public one first (docs/plugins.md, "Threat model").
        for addr in &addrs {
            if let Err(why) = self.grant.permits_address(addr.ip()) {
                let message =
                    format!("outbound request to {} refused: {} resolves to {why}", target.url(), target.host);
                self.journal.violate(FailureKind::Permission, message.clone());
                return Err(Failed(Error::DestinationIpProhibited, message));
            }
        }
        let connect_timeout = self.connect_timeout.unwrap_or(self.limits.request_timeout);
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(Failed(Error::ConnectionRefused, format!("connecting to {addr}: {e}"))),
                Err(_) => last = Some(Failed(Error::ConnectionTimeout, format!("connecting to {addr} timed out"))),
            }
        }
        let Some(tcp) = tcp else {
            return Err(last.unwrap_or_else(|| Failed(Error::ConnectionRefused, "no address answered".into())));
        };
        let _ = tcp.set_nodelay(true);
        if !target.https {
            return Ok(Box::new(tcp));
        }
        let name = match ip_literal(&target.host) {
            Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            None => rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| Failed(Error::HttpRequestUriInvalid, format!("{}: {e}", target.host)))?,
        };
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(|e| {
            let text = format!("TLS with {}: {e}", target.host);
            Failed(Error::Tls(e), text)
        })?;
        Ok(Box::new(tls))
    }
}
