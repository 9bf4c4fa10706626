//! Ships an order; `address: "nowhere"` cannot be shipped to (a permanent failure).

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ShippingInput {
    order_id: String,
    address: String,
}

#[derive(Serialize, Deserialize)]
struct Shipment {
    tracking: String,
    state: String,
}

struct Shipping;

impl Step for Shipping {
    type Input = ShippingInput;
    type Output = Shipment;
    type Undone = Shipment;

    fn execute(ctx: &Context, step: StepInput<ShippingInput>) -> Result<Shipment, StepError> {
        if step.input.address == "nowhere" {
            return Err(StepError::permanent(format!(
                "cannot ship order {} to {:?}",
                step.input.order_id, step.input.address
            )));
        }
        Ok(Shipment { tracking: format!("trk-{}", ctx.execution_id), state: "SHIPPED".into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<ShippingInput, Shipment>) -> Result<Shipment, StepError> {
        let tracking = undo.result.map(|s| s.tracking).unwrap_or_default();
        Ok(Shipment { tracking, state: "SHIPMENT_CANCELLED".into() })
    }
}

export_step!(Shipping);
