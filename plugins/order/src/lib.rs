//! The order of the order saga. One plugin serves two steps: `create_order` records the
//! order as PENDING, `approve_order` marks it APPROVED once payment and shipping succeeded.
//! Compensation cancels it: the order's soft state is visible in the step results.

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct OrderInput {
    order_id: String,
    #[serde(default)]
    item: String,
}

#[derive(Serialize, Deserialize)]
struct OrderState {
    order_id: String,
    state: String,
}

struct Order;

impl Step for Order {
    type Input = OrderInput;
    type Output = OrderState;
    type Undone = OrderState;

    fn execute(ctx: &Context, step: StepInput<OrderInput>) -> Result<OrderState, StepError> {
        let state = match ctx.step.as_str() {
            "approve_order" => "APPROVED",
            _ => "PENDING",
        };
        saga_guest::info!("order {} ({}) is {state}", step.input.order_id, step.input.item);
        Ok(OrderState { order_id: step.input.order_id, state: state.into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<OrderInput, OrderState>) -> Result<OrderState, StepError> {
        saga_guest::warn!("order {} cancelled: {}", undo.input.order_id, undo.reason);
        Ok(OrderState { order_id: undo.input.order_id, state: "CANCELLED".into() })
    }
}

export_step!(Order);
