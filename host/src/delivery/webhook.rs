//! A webhook target: one signed HTTP(S) POST per event (docs/subscriptions.md, "Webhooks").

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::Sha256;

use super::Delivered;
use crate::domain::TopicEvent;
use crate::secrets::SecretValue;

/// The host's HTTP(S) client for webhooks: pooled connections, the TLS settings plugins' requests
/// use (platform roots and `--ca-bundle`), HTTP/1.1, no redirects followed.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most bytes of a webhook's answer read (and dropped): enough to keep the connection for reuse.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// A client over `tls`.
pub fn client(tls: rustls::ClientConfig) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// Where and how one subscription posts.
pub(super) struct Webhook {
    pub client: HttpsClient,
    pub subscription: String,
    pub url: String,
    pub timeout: Duration,
}

/// The `Sagahost-Signature` of `body` sent at `timestamp` (unix seconds): `v1=` and the hex
/// HMAC-SHA256 of `"{timestamp}.{body}"` under the signing secret's value.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    /// Posts one event; `Err` says why it does not count as delivered (an error or a status
    /// other than 2xx). Redirects are not followed.
    pub async fn send(
        &self,
        seq: u64,
        event: &TopicEvent,
        attempt: u32,
        now_ms: u64,
        key: Option<&SecretValue>,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(&Delivered { seq, event }).map_err(|e| e.to_string())?;
        let timestamp = now_ms / 1_000;
        let mut request = http::Request::post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("sagahost/", env!("CARGO_PKG_VERSION")))
            .header("sagahost-subscription", &self.subscription)
            .header("sagahost-event-id", &event.id)
            .header("sagahost-topic", &event.topic)
            .header("sagahost-attempt", attempt.to_string())
            .header("sagahost-timestamp", timestamp.to_string());
        if let Some(key) = key {
            request = request.header("sagahost-signature", signature(key.expose().as_bytes(), timestamp, &body));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| format!("the request: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| describe(&e))?;
            let status = response.status();
            // Read (a bounded part of) the answer, so that the connection can serve the next one.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            Ok::<_, String>(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))??;
        if status.is_success() { Ok(()) } else { Err(format!("the webhook answered {status}")) }
    }
}

/// A client error with its deepest cause, without the URL (it is the subscription's, known).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() { "could not connect" } else { "request failed" };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64, "{sig}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(signature(b"k", 1_700_000_000, b"{}"), signature(b"k", 1_700_000_000, b"{}"));
        assert_ne!(signature(b"k", 1_700_000_000, b"{}"), signature(b"k", 1_700_000_001, b"{}"));
        assert_ne!(signature(b"k", 1, b"{}"), signature(b"j", 1, b"{}"));
    }
}
