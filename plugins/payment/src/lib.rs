//! Charges a card through a payment gateway over HTTP, and refunds on compensation.
//!
//! The gateway's base URL is the step's `config` value `gateway_url`; the step's `allow_http`
//! must grant its origin. The host adds the step's `Idempotency-Key` to every request, the same
//! on every attempt, so the gateway charges once however often a charge is retried (and refunds
//! once: the compensation has a key of its own). The gateway API is the one the demo's stand-in
//! serves (`host/src/demo/standins/gateway.rs`):
//!
//! - `POST /charges {"amount", "card", "reference"}` → 201 `{"id", "amount"}` (200 with the
//!   same charge when the key was charged already), 402 for a declined card;
//! - `POST /refunds {"charge_id", "reference"}` → 201 `{"id", "charge_id", "amount"}`, 404
//!   when there is nothing to refund.
//!
//! The gateway's API key is the secret `gateway_key` (docs/secrets.md), sent as
//! `Authorization: Bearer <key>` when the step lists it; the host redacts it from everything the
//! step hands back.
//!
//! Outcomes: a declined card (402) fails permanently (`PAYMENT_FAILED`); a 5xx, a 429, a
//! connection failure or a timeout is retryable; any other 4xx is permanent. The input field
//! `gateway_outage_attempts: n` is test control for the stand-in: it is passed on as the header
//! `x-standin-outage: n`, and the stand-in answers the first n tries of this charge with 503.

use std::time::Duration;

use saga_guest::{Compensation, Context, Step, StepError, StepInput, config, export_step, http};
use serde::{Deserialize, Serialize};

/// Each request's own time limit: a slow gateway is a retryable failure, well within the step's.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_000);

#[derive(Deserialize)]
struct PaymentInput {
    amount: u64,
    #[serde(default)]
    card: String,
    #[serde(default)]
    gateway_outage_attempts: u32,
}

#[derive(Serialize)]
struct NewCharge<'a> {
    amount: u64,
    card: &'a str,
    /// Finds the charge for a refund whose charge id is unknown.
    reference: &'a str,
}

#[derive(Deserialize)]
struct GatewayCharge {
    id: String,
    amount: u64,
}

#[derive(Serialize)]
struct NewRefund<'a> {
    charge_id: Option<&'a str>,
    reference: &'a str,
}

#[derive(Deserialize)]
struct GatewayRefund {
    id: String,
    charge_id: String,
    amount: u64,
}

/// The step's result.
#[derive(Serialize, Deserialize)]
struct Charge {
    charge_id: String,
    amount: u64,
    state: String,
}

/// The compensation's result.
#[derive(Serialize)]
struct Refund {
    refund_id: Option<String>,
    charge_id: Option<String>,
    amount: u64,
    state: String,
}

struct Payment;

impl Step for Payment {
    type Input = PaymentInput;
    type Output = Charge;
    type Undone = Refund;

    fn execute(ctx: &Context, step: StepInput<PaymentInput>) -> Result<Charge, StepError> {
        let gateway = config::require("gateway_url")?;
        let p = step.input;
        let mut request = authorized(http::post(&format!("{gateway}/charges")))?
            .timeout(REQUEST_TIMEOUT)
            .json(&NewCharge { amount: p.amount, card: &p.card, reference: &ctx.execution_id });
        if p.gateway_outage_attempts > 0 {
            request = request.header("x-standin-outage", &p.gateway_outage_attempts.to_string());
        }
        let response = request.send()?;
        if response.status() == 402 {
            return Err(StepError::permanent(format!("PAYMENT_FAILED: card declined ({})", response.text())));
        }
        if !response.is_success() {
            saga_guest::warn!("payment gateway answered {} (attempt {})", response.status(), ctx.attempt);
        }
        let charge: GatewayCharge = response.error_for_status()?.json()?;
        Ok(Charge { charge_id: charge.id, amount: charge.amount, state: "PAYMENT_COMPLETE".into() })
    }

    fn compensate(ctx: &Context, undo: Compensation<PaymentInput, Charge>) -> Result<Refund, StepError> {
        let gateway = config::require("gateway_url")?;
        // No result: the charge's outcome is unknown, so the gateway looks it up by reference.
        let charge_id = undo.result.map(|c| c.charge_id);
        let response = authorized(http::post(&format!("{gateway}/refunds")))?
            .timeout(REQUEST_TIMEOUT)
            .json(&NewRefund { charge_id: charge_id.as_deref(), reference: &ctx.execution_id })
            .send()?;
        if response.status() == 404 {
            let state = "NOTHING_TO_REFUND".into();
            return Ok(Refund { refund_id: None, charge_id, amount: 0, state });
        }
        let refund: GatewayRefund = response.error_for_status()?.json()?;
        Ok(Refund {
            refund_id: Some(refund.id),
            charge_id: Some(refund.charge_id),
            amount: refund.amount,
            state: "REFUNDED".into(),
        })
    }
}

/// `request` with the gateway's API key, when the step lists the secret `gateway_key`.
fn authorized(request: http::RequestBuilder) -> Result<http::RequestBuilder, StepError> {
    Ok(match config::get("gateway_key")? {
        Some(key) => request.header("authorization", &format!("Bearer {key}")),
        None => request,
    })
}

export_step!(Payment);
