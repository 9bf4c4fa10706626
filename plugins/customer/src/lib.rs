//! The customer service of the order/customer choreography (`customer-credit.json`). Its saga
//! is started by every `OrderCreated` event (one execution per order id); its one step,
//! `reserve_credit`, reserves the order's amount from the customer's credit in the plugin's
//! durable state and answers with an event: `CreditReserved` when the credit covers it,
//! `CreditLimitExceeded` when it does not. Either way the step completes: the answer is the
//! outcome, and an event is only recorded with a completed step.
//!
//! The same plugin serves `customer-release.json`: its step `release_credit`, started by an
//! order's `OrderRejected`, gives back what was reserved for that order (nothing when nothing
//! was), so that a rejected order never keeps credit.
//!
//! State: `customers/{customer_id}` holds the credit limit and what is reserved;
//! `reservations/{order_id}` the amount reserved for that order (so a retried or repeated
//! request reserves once). A customer seen for the first time gets the step's `credit_limit`
//! configuration value (default 1000).

use saga_guest::state::{self, Versioned};
use saga_guest::{Compensation, Context, Step, StepError, StepInput, events, export_step};
use serde::{Deserialize, Serialize};

/// The trigger's input: `{"event": {..., "payload": OrderCreated}}`.
#[derive(Deserialize)]
struct Triggered {
    event: TopicEvent,
}

#[derive(Deserialize)]
struct TopicEvent {
    payload: OrderCreated,
}

#[derive(Clone, Deserialize, Serialize)]
struct OrderCreated {
    order_id: String,
    customer_id: String,
    amount: u64,
}

/// `customers/{customer_id}`.
#[derive(Serialize, Deserialize)]
struct Customer {
    credit_limit: u64,
    reserved: u64,
}

/// The step's result and the answer's payload.
#[derive(Serialize, Deserialize)]
struct Answer {
    order_id: String,
    customer_id: String,
    amount: u64,
    reserved: bool,
    /// Credit left after this order.
    available: u64,
}

const DEFAULT_LIMIT: u64 = 1_000;

fn credit_limit() -> Result<u64, StepError> {
    match saga_guest::config::get("credit_limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text.parse().map_err(|_| StepError::permanent(format!("credit_limit {text:?} is not a number"))),
    }
}

struct CustomerService;

impl Step for CustomerService {
    type Input = Triggered;
    type Output = Answer;
    type Undone = Answer;

    fn execute(ctx: &Context, step: StepInput<Triggered>) -> Result<Answer, StepError> {
        let order = step.input.event.payload;
        if ctx.step == "release_credit" {
            return release(order);
        }
        let customers = state::collection("customers");
        let reservations = state::collection("reservations");
        let mut customer = match customers.get::<Customer>(&order.customer_id)? {
            Some(Versioned { value, .. }) => value,
            None => Customer { credit_limit: credit_limit()?, reserved: 0 },
        };
        let already = reservations.get::<u64>(&order.order_id)?.is_some();
        let reserved = already || customer.reserved + order.amount <= customer.credit_limit;
        if reserved && !already {
            customer.reserved += order.amount;
            reservations.set(&order.order_id, &order.amount)?;
            customers.set(&order.customer_id, &customer)?;
        }
        let answer = Answer {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            amount: order.amount,
            reserved,
            available: customer.credit_limit.saturating_sub(customer.reserved),
        };
        // No key given: the event carries this execution's business key, the order id.
        let topic = if reserved { "CreditReserved" } else { "CreditLimitExceeded" };
        events::emit(topic, &answer)?;
        saga_guest::info!(
            "order {} of customer {}: {topic} ({} of {} available)",
            order.order_id,
            order.customer_id,
            answer.available,
            customer.credit_limit
        );
        Ok(answer)
    }

    fn compensate(_ctx: &Context, undo: Compensation<Triggered, Answer>) -> Result<Answer, StepError> {
        // The saga has no step after this one, so nothing makes it compensate; if it ever does
        // (a cancel while the answer's outcome is unknown), the reservation is released.
        release(undo.input.event.payload)
    }
}

/// Gives back what `order` reserved, if anything.
fn release(order: OrderCreated) -> Result<Answer, StepError> {
    let customers = state::collection("customers");
    let reservations = state::collection("reservations");
    let mut available = 0;
    if let Some(Versioned { value: amount, .. }) = reservations.get::<u64>(&order.order_id)?
        && let Some(Versioned { value: mut customer, .. }) = customers.get::<Customer>(&order.customer_id)?
    {
        customer.reserved = customer.reserved.saturating_sub(amount);
        available = customer.credit_limit.saturating_sub(customer.reserved);
        customers.set(&order.customer_id, &customer)?;
        reservations.delete(&order.order_id)?;
        saga_guest::info!("order {} of customer {}: {amount} released", order.order_id, order.customer_id);
    }
    Ok(Answer {
        order_id: order.order_id,
        customer_id: order.customer_id,
        amount: order.amount,
        reserved: false,
        available,
    })
}

export_step!(CustomerService);
