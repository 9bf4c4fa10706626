//! The order of the order sagas, kept in the plugin's durable state (`orders/{order_id}`). One
//! plugin serves two steps: `create_order` records the order as PENDING (a soft state visible
//! while the saga runs), `approve_order` marks it APPROVED once the steps between succeeded.
//! Compensation marks it CANCELLED.
//!
//! An order with a `customer_id` and an `amount` takes part in the choreography with the
//! customer service (`order-credit.json`): `create_order` emits `OrderCreated`, and the
//! customer saga answers `CreditReserved` or `CreditLimitExceeded`; such an order is REJECTED
//! rather than cancelled when the saga compensates, and the compensation emits `OrderRejected`
//! so that the customer service releases any credit it reserved for it.

use saga_guest::state::{self, Versioned};
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct OrderInput {
    order_id: String,
    #[serde(default)]
    item: String,
    /// Whose credit pays for the order (the choreographed saga only).
    #[serde(default)]
    customer_id: Option<String>,
    /// What it costs.
    #[serde(default)]
    amount: u64,
}

/// What `create_order` announces for the customer service.
#[derive(Serialize)]
struct OrderCreated<'a> {
    order_id: &'a str,
    customer_id: &'a str,
    amount: u64,
}

/// `orders/{order_id}`, and each step's result.
#[derive(Serialize, Deserialize)]
struct OrderState {
    order_id: String,
    #[serde(default)]
    item: String,
    state: String,
    #[serde(default)]
    execution_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    amount: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn orders() -> state::Collection {
    state::collection("orders")
}

/// The order as this execution left it, if this execution created it.
fn own_order(ctx: &Context, order_id: &str) -> Result<Option<OrderState>, StepError> {
    Ok(orders().get::<OrderState>(order_id)?.map(|v| v.value).filter(|o| o.execution_id == ctx.execution_id))
}

struct Order;

impl Step for Order {
    type Input = OrderInput;
    type Output = OrderState;
    type Undone = OrderState;

    fn execute(ctx: &Context, step: StepInput<OrderInput>) -> Result<OrderState, StepError> {
        let OrderInput { order_id, item, customer_id, amount } = step.input;
        let order = match ctx.step.as_str() {
            "approve_order" => {
                let Some(mut order) = own_order(ctx, &order_id)? else {
                    return Err(StepError::permanent(format!("order {order_id} was not created by this saga")));
                };
                order.state = "APPROVED".into();
                order
            }
            _ => {
                if let Some(Versioned { value: other, .. }) = orders().get::<OrderState>(&order_id)?
                    && other.execution_id != ctx.execution_id
                {
                    return Err(StepError::permanent(format!("order {order_id} already exists ({})", other.state)));
                }
                if let Some(customer_id) = &customer_id {
                    let created = OrderCreated { order_id: &order_id, customer_id, amount };
                    saga_guest::events::emit_keyed("OrderCreated", &order_id, &created)?;
                }
                OrderState {
                    order_id,
                    item,
                    state: "PENDING".into(),
                    execution_id: ctx.execution_id.clone(),
                    customer_id,
                    amount,
                }
            }
        };
        orders().set(&order.order_id, &order)?;
        saga_guest::info!("order {} ({}) is {}", order.order_id, order.item, order.state);
        Ok(order)
    }

    fn compensate(ctx: &Context, undo: Compensation<OrderInput, OrderState>) -> Result<OrderState, StepError> {
        let OrderInput { order_id, item, customer_id, amount } = undo.input;
        let undone = if customer_id.is_some() { "REJECTED" } else { "CANCELLED" };
        if let Some(customer_id) = &customer_id {
            let rejected = OrderCreated { order_id: &order_id, customer_id, amount };
            saga_guest::events::emit_keyed("OrderRejected", &order_id, &rejected)?;
        }
        saga_guest::warn!("order {order_id} {}: {}", undone.to_lowercase(), undo.reason);
        let Some(mut order) = own_order(ctx, &order_id)? else {
            // The order was never recorded (its step's outcome was unknown): nothing to undo.
            return Ok(OrderState {
                order_id,
                item,
                state: undone.into(),
                execution_id: ctx.execution_id.clone(),
                customer_id,
                amount,
            });
        };
        order.state = undone.into();
        orders().set(&order.order_id, &order)?;
        Ok(order)
    }
}

export_step!(Order);
