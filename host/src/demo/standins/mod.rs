//! Local stand-ins for the services the example sagas call over HTTP: a payment gateway
//! ([`gateway`]) and a data platform ([`data_platform`]). Real HTTP servers (axum) on
//! `127.0.0.1` with an ephemeral port, inside the process that starts them (`sagahost demo`,
//! the end-to-end tests), so the examples run with no network and no accounts anywhere.
//! They are stand-ins, not simulations of any real provider's API.
//!
//! The example definitions (`plugins/sagas/*.json`) name the services by placeholders,
//! `${PAYMENT_GATEWAY_URL}` and `${DATA_PLATFORM_URL}`, in their `allow_http` grants and
//! `config`; [`StandIns::fill`] replaces them with the stand-ins' origins.
//!
//! Both stand-ins share two behaviours:
//! - every request must carry an `Idempotency-Key` (the host adds the step's key), and one key
//!   has one effect however often it is sent: the answer to a repeat is the first answer;
//! - test control: a request with `x-standin-outage: N` ([`OUTAGE_HEADER`]) is answered 503
//!   for the first N tries under its idempotency key (`all`: every try), so one scenario's
//!   outage does not touch the others running at the same time. The example plugins pass it on
//!   from their input (`gateway_outage_attempts`, `data_platform_down`).

pub mod data_platform;
pub mod gateway;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::sync::lock;
pub use data_platform::DataPlatform;
pub use gateway::PaymentGateway;

/// The test-control header: `N` (503 for the first N tries under one idempotency key) or `all`.
pub const OUTAGE_HEADER: &str = "x-standin-outage";

/// The header every request to a stand-in must carry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// One request a stand-in answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// `POST`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Its `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The status it was answered.
    pub status: u16,
}

/// Every request a stand-in answered, in order.
pub type Journal = Arc<Mutex<Vec<Seen>>>;

/// The secret the example definitions list for the gateway's API key (docs/secrets.md).
pub const GATEWAY_KEY_SECRET: &str = "gateway_key";

/// The secret the example subscription signs its webhook requests with
/// (`plugins/sagas/data-platform.subscription.json`).
pub const DATA_PLATFORM_HOOK_SECRET: &str = "data_platform_hook";

/// Both stand-ins, running.
pub struct StandIns {
    /// The payment gateway the `payment` plugin charges and refunds through.
    pub gateway: PaymentGateway,
    /// The API key the gateway requires (`Authorization: Bearer`), made for this run: the host
    /// must hold it as the secret [`GATEWAY_KEY_SECRET`].
    pub gateway_key: String,
    /// The data platform the `notify` plugin reports bookings to, and the example subscription
    /// delivers seat events to.
    pub data_platform: DataPlatform,
    /// The key the data platform's webhook checks signatures with, made for this run: the host
    /// must hold it as the secret [`DATA_PLATFORM_HOOK_SECRET`].
    pub hook_key: String,
}

/// A `${NAME}` in a definition that no stand-in provides.
#[derive(Debug, thiserror::Error)]
#[error("unknown placeholder {0} (known: ${{PAYMENT_GATEWAY_URL}}, ${{DATA_PLATFORM_URL}})")]
pub struct UnknownPlaceholder(pub String);

impl StandIns {
    /// Starts both on `127.0.0.1`, each on a port of its own; the gateway requires a fresh
    /// API key, [`StandIns::gateway_key`].
    pub async fn start() -> std::io::Result<Self> {
        let gateway_key = format!("sk_demo_{}", uuid::Uuid::now_v7().simple());
        let hook_key = format!("whsec_demo_{}", uuid::Uuid::now_v7().simple());
        Ok(Self {
            gateway: PaymentGateway::start_with_api_key(&gateway_key).await?,
            gateway_key,
            data_platform: DataPlatform::start(&hook_key).await?,
            hook_key,
        })
    }

    /// The secrets the example definitions and subscription list, with their values: store
    /// them in the host (`PUT /v1/secrets/{name}`) before defining the sagas.
    pub fn secrets(&self) -> [(&'static str, &str); 2] {
        [(GATEWAY_KEY_SECRET, self.gateway_key.as_str()), (DATA_PLATFORM_HOOK_SECRET, self.hook_key.as_str())]
    }

    /// Each placeholder and the origin it stands for.
    pub fn placeholders(&self) -> [(&'static str, &str); 2] {
        [("${PAYMENT_GATEWAY_URL}", self.gateway.url()), ("${DATA_PLATFORM_URL}", self.data_platform.url())]
    }

    /// `text` (a definition) with every placeholder replaced by the stand-in's origin.
    pub fn fill(&self, text: &str) -> Result<String, UnknownPlaceholder> {
        let mut filled = text.to_owned();
        for (name, url) in self.placeholders() {
            filled = filled.replace(name, url);
        }
        match filled.find("${") {
            Some(at) => {
                let rest = &filled[at..];
                Err(UnknownPlaceholder(rest[..rest.find('}').map_or(rest.len(), |end| end + 1)].to_owned()))
            }
            None => Ok(filled),
        }
    }

    /// Stops both servers.
    pub fn stop(self) {
        self.gateway.server.stop();
        self.data_platform.server.stop();
    }
}

/// A stand-in's HTTP server, serving until stopped or dropped.
struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `app` on `127.0.0.1:0`, recording every answered request in `journal`.
    async fn start(app: Router, journal: Journal) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = app.layer(middleware::from_fn_with_state(journal, record));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "stand-in server stopped");
            }
        });
        Ok(Self { url, task })
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn record(State(journal): State<Journal>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let idempotency_key = header(req.headers(), IDEMPOTENCY_KEY);
    let response = next.run(req).await;
    lock(&journal).push(Seen { method, path, idempotency_key, status: response.status().as_u16() });
    response
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Why a stand-in refused a request; answered as its status and `{"error": message}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request has no `Idempotency-Key`.
    NoIdempotencyKey,
    /// 401: the gateway wants an API key and the request has not the right one.
    Unauthorized,
    /// 402: the card was declined.
    CardDeclined,
    /// 404: no charge to refund.
    NoSuchCharge,
    /// 422: an idempotency key already used for a different charge.
    KeyReused,
    /// 503: an outage asked for with [`OUTAGE_HEADER`].
    Outage,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NoIdempotencyKey => (StatusCode::BAD_REQUEST, "an Idempotency-Key header is required"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "a valid API key is required"),
            Self::CardDeclined => (StatusCode::PAYMENT_REQUIRED, "card_declined"),
            Self::NoSuchCharge => (StatusCode::NOT_FOUND, "no such charge"),
            Self::KeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key reused for another amount"),
            Self::Outage => (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable (stand-in outage)"),
        };
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

/// The request's idempotency key.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Refusal> {
    header(headers, IDEMPOTENCY_KEY).filter(|k| !k.is_empty()).ok_or(Refusal::NoIdempotencyKey)
}

/// Tries seen per (route, idempotency key), for the outages asked by [`OUTAGE_HEADER`].
#[derive(Default)]
struct Outages {
    tries: Mutex<HashMap<(&'static str, String), u32>>,
}

impl Outages {
    /// Counts this try; a 503 while the asked outage lasts.
    fn check(&self, route: &'static str, key: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(asked) = header(headers, OUTAGE_HEADER) else { return Ok(()) };
        let lasts = if asked == "all" { u32::MAX } else { asked.parse().unwrap_or(0) };
        let mut tries = lock(&self.tries);
        let n = tries.entry((route, key.to_owned())).or_default();
        *n += 1;
        if *n <= lasts {
            return Err(Refusal::Outage);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn placeholders_are_filled_and_unknown_ones_named() {
        let s = StandIns::start().await.unwrap();
        let filled = s.fill(r#"{"allow_http": ["${PAYMENT_GATEWAY_URL}"], "c": "${DATA_PLATFORM_URL}/x"}"#).unwrap();
        assert_eq!(filled, format!(r#"{{"allow_http": ["{}"], "c": "{}/x"}}"#, s.gateway.url(), s.data_platform.url()));
        assert!(s.gateway.url().starts_with("http://127.0.0.1:"));
        assert_ne!(s.gateway.url(), s.data_platform.url());
        let err = s.fill(r#"{"a": "${BILLING_URL}/v1"}"#).unwrap_err();
        assert_eq!(err.0, "${BILLING_URL}");
        s.stop();
    }

    #[test]
    fn an_outage_lasts_its_tries_per_key() {
        let outages = Outages::default();
        let mut two = HeaderMap::new();
        two.insert(OUTAGE_HEADER, "2".parse().unwrap());
        let statuses = |key: &str| (0..3).map(|_| outages.check("charges", key, &two).is_ok()).collect::<Vec<_>>();
        assert_eq!(statuses("a"), [false, false, true]);
        assert_eq!(statuses("b"), [false, false, true], "another key has its own outage");
        assert!(outages.check("charges", "c", &HeaderMap::new()).is_ok(), "no header, no outage");
        let mut all = HeaderMap::new();
        all.insert(OUTAGE_HEADER, "all".parse().unwrap());
        assert!((0..5).all(|_| outages.check("events", "d", &all).is_err()));
    }
}
