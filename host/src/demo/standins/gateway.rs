//! The payment gateway stand-in: charges and refunds, each de-duplicated by its
//! `Idempotency-Key`, with declined cards and outages on request.
//!
//! - `POST /charges {"amount", "card", "reference"}`: 201 `{"id", "amount", "reference"}`;
//!   the same key again answers 200 with the same charge and charges nothing (422 if the
//!   amount differs); `"card": "declined"` answers 402.
//! - `POST /refunds {"charge_id" (or null), "reference"}`: 201 `{"id", "charge_id", "amount"}`
//!   for the charge named, or, without one, the charge made under `reference`; 200 with the
//!   first refund when the key or the charge was refunded already; 404 when there is no charge.
//!
//! Every request needs an `Idempotency-Key` (400 without). An API key is not required: with
//! [`PaymentGateway::start_with_api_key`] every request also needs
//! `Authorization: Bearer <key>` (401 without).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::{Journal, Outages, Refusal, Seen, Server, header, idempotency_key};
use crate::sync::lock;

/// A charge the gateway made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Charge {
    /// `ch-1`, `ch-2`, ...
    pub id: String,
    /// The idempotency key it was made under.
    pub idempotency_key: String,
    /// Amount charged.
    pub amount: u64,
    /// The caller's reference (the example plugin sends the execution id).
    pub reference: String,
    /// Requests under its key answered with this charge after the first: retries it absorbed.
    pub replays: u32,
}

/// A refund the gateway made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refund {
    /// `re-1`, `re-2`, ...
    pub id: String,
    /// The idempotency key it was made under.
    pub idempotency_key: String,
    /// The charge refunded.
    pub charge_id: String,
    /// Amount refunded.
    pub amount: u64,
}

/// What the gateway has done and seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ledger {
    /// Charges, in order.
    pub charges: Vec<Charge>,
    /// Refunds, in order.
    pub refunds: Vec<Refund>,
    /// Every request answered, in order.
    pub requests: Vec<Seen>,
}

#[derive(Default)]
struct Books {
    charges: Vec<Charge>,
    refunds: Vec<Refund>,
}

struct Gateway {
    books: Mutex<Books>,
    outages: Outages,
    api_key: Option<String>,
}

/// The running payment gateway stand-in.
pub struct PaymentGateway {
    state: Arc<Gateway>,
    journal: Journal,
    pub(super) server: Server,
}

#[derive(Deserialize)]
struct NewCharge {
    amount: u64,
    #[serde(default)]
    card: String,
    #[serde(default)]
    reference: String,
}

#[derive(Deserialize)]
struct NewRefund {
    #[serde(default)]
    charge_id: Option<String>,
    #[serde(default)]
    reference: String,
}

#[derive(Serialize)]
struct ChargeBody<'a> {
    id: &'a str,
    amount: u64,
    reference: &'a str,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    id: &'a str,
    charge_id: &'a str,
    amount: u64,
}

impl PaymentGateway {
    /// Starts it on `127.0.0.1`, on a port of its own, needing no API key.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(None).await
    }

    /// Starts it needing `Authorization: Bearer <api_key>` on every request.
    pub async fn start_with_api_key(api_key: &str) -> std::io::Result<Self> {
        Self::serve(Some(api_key.to_owned())).await
    }

    async fn serve(api_key: Option<String>) -> std::io::Result<Self> {
        let state = Arc::new(Gateway { books: Mutex::default(), outages: Outages::default(), api_key });
        let journal = Journal::default();
        let server = Server::start(router(state.clone()), journal.clone()).await?;
        Ok(Self { state, journal, server })
    }

    /// Its origin, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// A copy of what it has done and seen so far.
    pub fn ledger(&self) -> Ledger {
        let books = lock(&self.state.books);
        Ledger { charges: books.charges.clone(), refunds: books.refunds.clone(), requests: lock(&self.journal).clone() }
    }
}

fn router(state: Arc<Gateway>) -> Router {
    Router::new().route("/charges", post(charge)).route("/refunds", post(refund)).with_state(state)
}

/// The idempotency key of a request that may go on: authorised, keyed, not in an outage.
fn admit(gw: &Gateway, route: &'static str, headers: &HeaderMap) -> Result<String, Refusal> {
    if let Some(api_key) = &gw.api_key
        && header(headers, "authorization").as_deref() != Some(format!("Bearer {api_key}").as_str())
    {
        return Err(Refusal::Unauthorized);
    }
    let key = idempotency_key(headers)?;
    gw.outages.check(route, &key, headers)?;
    Ok(key)
}

async fn charge(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(new): Json<NewCharge>,
) -> Result<Response, Refusal> {
    let key = admit(&gw, "charges", &headers)?;
    let mut books = lock(&gw.books);
    if let Some(done) = books.charges.iter_mut().find(|c| c.idempotency_key == key) {
        if done.amount != new.amount {
            return Err(Refusal::KeyReused);
        }
        done.replays += 1;
        return Ok((StatusCode::OK, charge_body(done)).into_response());
    }
    if new.card == "declined" {
        return Err(Refusal::CardDeclined);
    }
    let made = Charge {
        id: format!("ch-{}", books.charges.len() + 1),
        idempotency_key: key,
        amount: new.amount,
        reference: new.reference,
        replays: 0,
    };
    let body = charge_body(&made);
    books.charges.push(made);
    Ok((StatusCode::CREATED, body).into_response())
}

fn charge_body(c: &Charge) -> Json<serde_json::Value> {
    Json(serde_json::json!(ChargeBody { id: &c.id, amount: c.amount, reference: &c.reference }))
}

async fn refund(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(asked): Json<NewRefund>,
) -> Result<Response, Refusal> {
    let key = admit(&gw, "refunds", &headers)?;
    let mut books = lock(&gw.books);
    let charge = match &asked.charge_id {
        Some(id) => books.charges.iter().find(|c| &c.id == id),
        None => books.charges.iter().find(|c| !asked.reference.is_empty() && c.reference == asked.reference),
    };
    let charge = charge.cloned().ok_or(Refusal::NoSuchCharge)?;
    // A repeat of this refund, or a refund of a charge refunded already: the first refund.
    if let Some(done) = books.refunds.iter().find(|r| r.idempotency_key == key || r.charge_id == charge.id) {
        return Ok((StatusCode::OK, refund_body(done)).into_response());
    }
    let made = Refund {
        id: format!("re-{}", books.refunds.len() + 1),
        idempotency_key: key,
        charge_id: charge.id,
        amount: charge.amount,
    };
    let body = refund_body(&made);
    books.refunds.push(made);
    Ok((StatusCode::CREATED, body).into_response())
}

fn refund_body(r: &Refund) -> Json<serde_json::Value> {
    Json(serde_json::json!(RefundBody { id: &r.id, charge_id: &r.charge_id, amount: r.amount }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    fn gateway(api_key: Option<&str>) -> (Arc<Gateway>, Router) {
        let gw = Arc::new(Gateway {
            books: Mutex::default(),
            outages: Outages::default(),
            api_key: api_key.map(str::to_owned),
        });
        (gw.clone(), router(gw))
    }

    async fn send(app: &Router, path: &str, key: Option<&str>, extra: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_retried_charge_with_the_same_key_charges_once() {
        let (gw, app) = gateway(None);
        let order = json!({"amount": 42, "card": "4242", "reference": "e1"});
        let (status, first) = send(&app, "/charges", Some("e1/payment"), &[], order.clone()).await;
        assert_eq!((status, &first["id"], &first["amount"]), (201, &json!("ch-1"), &json!(42)));
        let (status, again) = send(&app, "/charges", Some("e1/payment"), &[], order.clone()).await;
        assert_eq!((status, &again), (200, &first));
        let (status, other) = send(&app, "/charges", Some("e2/payment"), &[], order).await;
        assert_eq!((status, &other["id"]), (201, &json!("ch-2")));
        let books = lock(&gw.books);
        assert_eq!(books.charges.len(), 2);
        assert_eq!(books.charges[0].replays, 1);
    }

    #[tokio::test]
    async fn an_outage_then_the_charge_declines_and_keys_are_required() {
        let (gw, app) = gateway(None);
        let order = json!({"amount": 10, "card": "4242"});
        let outage = [("x-standin-outage", "2")];
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(send(&app, "/charges", Some("k"), &outage, order.clone()).await.0);
        }
        assert_eq!(statuses, [503, 503, 201]);
        let declined = json!({"amount": 10, "card": "declined"});
        assert_eq!(send(&app, "/charges", Some("d"), &[], declined).await, (402, json!({"error": "card_declined"})));
        assert_eq!(send(&app, "/charges", None, &[], order.clone()).await.0, 400);
        let more = json!({"amount": 11, "card": "4242"});
        assert_eq!(send(&app, "/charges", Some("k"), &[], more).await.0, 422, "same key, other amount");
        assert_eq!(lock(&gw.books).charges.len(), 1);
    }

    #[tokio::test]
    async fn a_refund_is_made_once_by_charge_or_by_reference() {
        let (gw, app) = gateway(None);
        let order = json!({"amount": 90, "card": "4242", "reference": "e3"});
        send(&app, "/charges", Some("e3/pay"), &[], order).await;
        let by_id = json!({"charge_id": "ch-1", "reference": "e3"});
        let (status, refund) = send(&app, "/refunds", Some("e3/pay/compensate"), &[], by_id.clone()).await;
        assert_eq!(refund, json!({"id": "re-1", "charge_id": "ch-1", "amount": 90}));
        assert_eq!(status, 201);
        assert_eq!(send(&app, "/refunds", Some("e3/pay/compensate"), &[], by_id).await, (200, refund.clone()));
        let by_reference = json!({"charge_id": null, "reference": "e3"});
        assert_eq!(send(&app, "/refunds", Some("other"), &[], by_reference).await, (200, refund));
        let unknown = json!({"charge_id": null, "reference": "e4"});
        assert_eq!(send(&app, "/refunds", Some("e4/pay/compensate"), &[], unknown).await.0, 404);
        assert_eq!(lock(&gw.books).refunds.len(), 1);
    }

    #[tokio::test]
    async fn with_an_api_key_every_request_needs_it() {
        let (_gw, app) = gateway(Some("sk-test"));
        let order = json!({"amount": 1, "card": "4242"});
        assert_eq!(send(&app, "/charges", Some("a"), &[], order.clone()).await.0, 401);
        let wrong = [("authorization", "Bearer nope")];
        assert_eq!(send(&app, "/charges", Some("a"), &wrong, order.clone()).await.0, 401);
        let right = [("authorization", "Bearer sk-test")];
        assert_eq!(send(&app, "/charges", Some("a"), &right, order).await.0, 201);
    }

    #[tokio::test]
    async fn the_server_records_every_request_with_its_key_and_status() {
        let gw = PaymentGateway::start().await.unwrap();
        let client = reqwest::Client::new();
        let post = |key: &'static str| {
            client
                .post(format!("{}/charges", gw.url()))
                .header("idempotency-key", key)
                .header("x-standin-outage", "1")
                .json(&json!({"amount": 5, "card": "4242"}))
                .send()
        };
        assert_eq!(post("k1").await.unwrap().status(), 503);
        assert_eq!(post("k1").await.unwrap().status(), 201);
        let ledger = gw.ledger();
        let statuses: Vec<(Option<&str>, u16)> =
            ledger.requests.iter().map(|s| (s.idempotency_key.as_deref(), s.status)).collect();
        assert_eq!(statuses, [(Some("k1"), 503), (Some("k1"), 201)]);
        assert_eq!(ledger.charges.len(), 1);
    }
}
