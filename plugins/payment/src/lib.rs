//! Charges a card. The input decides the outcome so every path can be shown:
//! `card: "declined"` fails permanently (PAYMENT_FAILED); `gateway_outage_attempts: n` makes
//! the first n attempts fail as retryable (a transient gateway outage).

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct PaymentInput {
    amount: u64,
    #[serde(default)]
    card: String,
    #[serde(default)]
    gateway_outage_attempts: u32,
}

#[derive(Serialize, Deserialize)]
struct Charge {
    charge_id: String,
    amount: u64,
    state: String,
}

struct Payment;

impl Step for Payment {
    type Input = PaymentInput;
    type Output = Charge;
    type Undone = Charge;

    fn execute(ctx: &Context, step: StepInput<PaymentInput>) -> Result<Charge, StepError> {
        let p = step.input;
        if ctx.attempt <= p.gateway_outage_attempts {
            saga_guest::warn!("payment gateway unavailable (attempt {})", ctx.attempt);
            return Err(StepError::retryable("payment gateway unavailable"));
        }
        if p.card == "declined" {
            return Err(StepError::permanent("PAYMENT_FAILED: card declined"));
        }
        // The idempotency key is stable across retries: the gateway charges at most once.
        Ok(Charge {
            charge_id: format!("ch-{}", ctx.idempotency_key),
            amount: p.amount,
            state: "PAYMENT_COMPLETE".into(),
        })
    }

    fn compensate(_ctx: &Context, undo: Compensation<PaymentInput, Charge>) -> Result<Charge, StepError> {
        // No result: the charge's outcome is unknown; refunding by key is safe either way.
        let charge_id = undo.result.map(|c| c.charge_id).unwrap_or_default();
        Ok(Charge { charge_id, amount: undo.input.amount, state: "REFUNDED".into() })
    }
}

export_step!(Payment);
