//! A small blocking HTTP client for steps that call an API: JSON in and out through serde,
//! headers, timeouts, and failures mapped to [`StepError`] the way a retry policy wants them.
//!
//! Requests go out through the standard `wasi:http/outgoing-handler`, so the host's grants and
//! limits apply (docs/plugins.md, "Outbound HTTP"): only origins the step's `allow_http` grants
//! are reachable, and the host adds the step's `Idempotency-Key` header unless you set one.
//! It is built on [`wstd`](https://docs.rs/wstd) and needs the `http` feature of `saga-guest`
//! (on by default).
//!
//! How outcomes map to [`StepError`] (through [`HttpError`] and `?`):
//!
//! | outcome | error | `StepError` |
//! |---|---|---|
//! | 2xx (and 1xx, 3xx) | none: [`Response`] | — |
//! | 5xx, 429 | [`HttpError::Status`] from [`Response::error_for_status`] | retryable |
//! | other 4xx | [`HttpError::Status`] | permanent |
//! | no response: refused, reset, DNS, TLS handshake | [`HttpError::Connection`] | retryable |
//! | the request's own [`RequestBuilder::timeout`] passed | [`HttpError::Timeout`] | retryable |
//! | bad URL or header, a request the host refuses (not granted, too big) | [`HttpError::Invalid`] | permanent |
//! | a response body that does not decode as the asked type | [`HttpError::Decode`] | permanent |
//!
//! The host records a request it refused or cut off (not granted, over a limit) as the attempt's
//! failure whatever the plugin answers (`permission` or `limit`).
//!
//! [`RequestBuilder::send_json`] is the short way: it sends, calls `error_for_status` and decodes
//! the body. To decide for yourself, call [`RequestBuilder::send`], which answers every status
//! as a [`Response`], and look at [`Response::status`] before (or instead of)
//! [`Response::error_for_status`]:
//!
//! ```no_run
//! use std::time::Duration;
//! use saga_guest::StepError;
//! use saga_guest::http;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct NewCharge<'a> { order_id: &'a str, amount: u64 }
//!
//! #[derive(Deserialize)]
//! struct Charge { id: String }
//!
//! fn charge(order_id: &str, amount: u64) -> Result<String, StepError> {
//!     let charge: Charge = http::post("https://payments.example.com/charges")
//!         .header("authorization", "Bearer test-token")
//!         .timeout(Duration::from_secs(5))
//!         .json(&NewCharge { order_id, amount })
//!         .send_json()?; // 5xx, 429, connection errors: retryable; other 4xx: permanent
//!     Ok(charge.id)
//! }
//!
//! fn refund(charge_id: &str) -> Result<(), StepError> {
//!     let response = http::delete(&format!("https://payments.example.com/charges/{charge_id}")).send()?;
//!     if response.status() == 404 {
//!         return Ok(()); // nothing to undo
//!     }
//!     response.error_for_status()?;
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wstd::future::FutureExt;
use wstd::http::{Body, Client, ErrorCode, Method, Request};

use crate::StepError;

/// The most bytes of a response body quoted in an [`HttpError::Status`] message.
const EXCERPT_BYTES: usize = 200;

/// Why an HTTP call failed. `?` in a step turns it into a [`StepError`] (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The request could not be made as asked (bad URL or header), or the host refused it.
    Invalid(String),
    /// No response: the connection was refused or broken, the name did not resolve, TLS failed.
    Connection(String),
    /// The request did not end within its own [`RequestBuilder::timeout`].
    Timeout(String),
    /// The server answered a status that [`Response::error_for_status`] rejects.
    Status {
        /// The status code.
        status: u16,
        /// The method and URL, without the query string.
        request: String,
        /// The start of the response body (up to 200 bytes, whitespace collapsed).
        excerpt: String,
    },
    /// The response body is not the JSON the caller asked for.
    Decode(String),
}

impl HttpError {
    /// Whether retrying may help: 5xx, 429, connection failures and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connection(_) | Self::Timeout(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Invalid(_) | Self::Decode(_) => false,
        }
    }

    /// The status code, for [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "HTTP request invalid: {m}"),
            Self::Connection(m) => write!(f, "HTTP request failed: {m}"),
            Self::Timeout(m) => write!(f, "HTTP request timed out: {m}"),
            Self::Status { status, request, excerpt } if excerpt.is_empty() => write!(f, "{request} answered {status}"),
            Self::Status { status, request, excerpt } => write!(f, "{request} answered {status}: {excerpt}"),
            Self::Decode(m) => write!(f, "HTTP response cannot be read: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// `?` in a step: retryable when [`HttpError::is_retryable`], permanent otherwise.
impl From<HttpError> for StepError {
    fn from(e: HttpError) -> Self {
        if e.is_retryable() { StepError::retryable(e) } else { StepError::permanent(e) }
    }
}

/// A request to `url` with `method` (`"GET"`, `"POST"`, ... or any other token).
pub fn request(method: &str, url: &str) -> RequestBuilder {
    let mut builder = RequestBuilder {
        method: Method::GET,
        url: url.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: None,
        connect_timeout: None,
        error: None,
    };
    match Method::from_bytes(method.as_bytes()) {
        Ok(m) => builder.method = m,
        Err(e) => builder.error = Some(HttpError::Invalid(format!("method {method:?}: {e}"))),
    }
    builder
}

/// A `GET` request.
pub fn get(url: &str) -> RequestBuilder {
    request("GET", url)
}

/// A `POST` request.
pub fn post(url: &str) -> RequestBuilder {
    request("POST", url)
}

/// A `PUT` request.
pub fn put(url: &str) -> RequestBuilder {
    request("PUT", url)
}

/// A `PATCH` request.
pub fn patch(url: &str) -> RequestBuilder {
    request("PATCH", url)
}

/// A `DELETE` request.
pub fn delete(url: &str) -> RequestBuilder {
    request("DELETE", url)
}

/// A request being built; [`send`](Self::send) or [`send_json`](Self::send_json) makes it.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    /// The first mistake made while building, reported by `send`.
    error: Option<HttpError>,
}

impl RequestBuilder {
    /// Adds a header (names are case-insensitive; a repeated name adds another value).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `value` as the JSON body, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body;
                self.headers.push(("content-type".into(), "application/json".into()));
            }
            Err(e) => self.error = self.error.or(Some(HttpError::Invalid(format!("body is not JSON: {e}")))),
        }
        self
    }

    /// Sets the body's bytes as they are (set `content-type` with [`header`](Self::header)).
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = bytes.into();
        self
    }

    /// Gives up on the whole request (connecting, sending, the response and its body) after
    /// `limit`: [`HttpError::Timeout`], retryable. Without it only the host's per-request time
    /// limit applies, and going past that fails the attempt as `limit`, which is not retried.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Gives up connecting after `limit` ([`HttpError::Connection`], retryable).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    /// The method and URL without its query string, for messages (a query may carry secrets).
    fn describe(&self) -> String {
        let url = self.url.split(['?', '#']).next().unwrap_or_default();
        format!("{} {url}", self.method)
    }

    /// Sends the request and reads the whole response: a [`Response`] whatever its status.
    /// Errors are failures to get one ([`HttpError::Connection`], [`HttpError::Timeout`],
    /// [`HttpError::Invalid`]).
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let request = self.describe();
        let mut builder = Request::builder().method(self.method).uri(&self.url);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder.body(body(self.body)).map_err(|e| HttpError::Invalid(format!("{request}: {e}")))?;
        let mut client = Client::new();
        if let Some(limit) = self.connect_timeout {
            client.set_connect_timeout(limit);
        }
        let exchange = async move {
            let response = client.send(outgoing).await?;
            let (parts, mut body) = response.into_parts();
            let bytes = body.contents().await?.to_vec();
            Ok::<_, wstd::http::Error>((parts, bytes))
        };
        // Inside `block_on`: wstd's timer registers with the runtime's reactor when it is made.
        let outcome = wstd::runtime::block_on(async move {
            match self.timeout {
                None => Some(exchange.await),
                Some(limit) => exchange.timeout(wstd::time::Duration::from(limit)).await.ok(),
            }
        });
        let Some(outcome) = outcome else {
            let limit = self.timeout.unwrap_or_default().as_millis();
            return Err(HttpError::Timeout(format!("{request} took more than {limit} ms")));
        };
        let (parts, body) = outcome.map_err(|e| failure(&request, &e))?;
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Ok(Response { status: parts.status.as_u16(), headers, body, request })
    }

    /// Sends the request, rejects the status with [`Response::error_for_status`] and decodes the
    /// body as JSON.
    pub fn send_json<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        self.send()?.error_for_status()?.json()
    }
}

/// The request body as wstd sends it. An empty one is never written to: the host's HTTP/1
/// client sends a `GET` (or `HEAD`) of unknown body length without a body and lets go of the
/// body at once, and a write to it afterwards, even of nothing, fails the whole request in wstd
/// (`connection reset`) although the response has arrived. It did so for about 2 in 100 `GET`s
/// on loopback, whichever came first.
fn body(bytes: Vec<u8>) -> Body {
    if bytes.is_empty() {
        Body::from_http_body(wstd::http::body::util::Empty::<wstd::http::body::Bytes>::new())
    } else {
        Body::from(bytes)
    }
}

/// Maps wstd's error (an `anyhow` error, holding a wasi-http `error-code` when the host or the
/// connection failed) to ours.
fn failure(request: &str, e: &wstd::http::Error) -> HttpError {
    let message = format!("{request}: {e:#}");
    let Some(code) = e.chain().find_map(|cause| cause.downcast_ref::<ErrorCode>()) else {
        // No error code: wstd could not build the request from what it was given.
        return HttpError::Invalid(message);
    };
    match code {
        ErrorCode::HttpRequestDenied
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestUriTooLong
        | ErrorCode::HttpRequestBodySize(_)
        | ErrorCode::HttpRequestHeaderSectionSize(_)
        | ErrorCode::HttpRequestHeaderSize(_)
        | ErrorCode::HttpResponseBodySize(_)
        | ErrorCode::TlsCertificateError => HttpError::Invalid(message),
        _ => HttpError::Connection(message),
    }
}

/// A response, its body read in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    request: String,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header, names in lowercase, in the order received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON into `T` ([`HttpError::Decode`], permanent, when it does not).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode(format!("{}: {e}", self.request)))
    }

    /// The response itself when its status is below 400; otherwise an [`HttpError::Status`]
    /// with the status and the start of the body (retryable for 5xx and 429).
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        Err(HttpError::Status { status: self.status, excerpt: excerpt(&self.body), request: self.request })
    }
}

/// The start of `body` as one line of text, cut at a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // A cut through a multi-byte character shows as U+FFFD at the end: drop it.
    if body.len() > EXCERPT_BYTES {
        line = line.trim_end_matches('\u{FFFD}').to_owned();
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> HttpError {
        let response =
            Response { status, headers: vec![], body: b"busy \n now".to_vec(), request: "GET http://a/b".into() };
        response.error_for_status().unwrap_err()
    }

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        for s in [500, 502, 503, 504, 429] {
            assert!(matches!(StepError::from(status(s)), StepError::Retryable(_)), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(matches!(StepError::from(status(s)), StepError::Permanent(_)), "{s}");
        }
        assert_eq!(status(503).to_string(), "GET http://a/b answered 503: busy now");
        assert_eq!(status(404).status(), Some(404));
    }

    #[test]
    fn success_and_redirect_statuses_pass() {
        for s in [200, 201, 204, 301, 304] {
            let r = Response { status: s, headers: vec![], body: vec![], request: String::new() };
            assert_eq!(r.error_for_status().map(|r| r.status()), Ok(s));
        }
    }

    #[test]
    fn connection_failures_and_timeouts_are_retryable_the_rest_permanent() {
        assert!(HttpError::Connection("refused".into()).is_retryable());
        assert!(HttpError::Timeout("slow".into()).is_retryable());
        assert!(!HttpError::Invalid("bad url".into()).is_retryable());
        assert!(!HttpError::Decode("not json".into()).is_retryable());
    }

    #[test]
    fn a_long_body_is_cut_and_the_query_is_not_shown() {
        let long = excerpt("é".repeat(150).as_bytes());
        assert!(long.ends_with('…') && !long.contains('\u{FFFD}'), "{long}");
        assert!(long.len() <= EXCERPT_BYTES + '…'.len_utf8());
        assert_eq!(get("https://x.example/a?token=secret").describe(), "GET https://x.example/a");
        assert!(matches!(request("BAD METHOD", "http://x").send(), Err(HttpError::Invalid(_))));
    }

    #[test]
    fn a_json_body_sets_the_content_type() {
        let b = post("http://x").json(&serde_json::json!({"a": 1}));
        assert_eq!(b.body, br#"{"a":1}"#);
        assert_eq!(b.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    }
}
