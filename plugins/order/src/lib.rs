//! The order of the order saga, kept in the plugin's durable state (`orders/{order_id}`). One
//! plugin serves two steps: `create_order` records the order as PENDING (a soft state visible
//! while the saga runs), `approve_order` marks it APPROVED once payment and shipping succeeded.
//! Compensation marks it CANCELLED.

use saga_guest::state::{self, Versioned};
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct OrderInput {
    order_id: String,
    #[serde(default)]
    item: String,
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
        let OrderInput { order_id, item } = step.input;
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
                OrderState { order_id, item, state: "PENDING".into(), execution_id: ctx.execution_id.clone() }
            }
        };
        orders().set(&order.order_id, &order)?;
        saga_guest::info!("order {} ({}) is {}", order.order_id, order.item, order.state);
        Ok(order)
    }

    fn compensate(ctx: &Context, undo: Compensation<OrderInput, OrderState>) -> Result<OrderState, StepError> {
        let order_id = undo.input.order_id;
        saga_guest::warn!("order {order_id} cancelled: {}", undo.reason);
        let Some(mut order) = own_order(ctx, &order_id)? else {
            // The order was never recorded (its step's outcome was unknown): nothing to cancel.
            return Ok(OrderState {
                order_id,
                item: undo.input.item,
                state: "CANCELLED".into(),
                execution_id: ctx.execution_id.clone(),
            });
        };
        order.state = "CANCELLED".into();
        orders().set(&order.order_id, &order)?;
        Ok(order)
    }
}

export_step!(Order);
