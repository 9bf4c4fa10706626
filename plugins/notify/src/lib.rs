//! Tells the data platform about a booking. A non-critical side effect: with
//! `data_platform_down: true` it fails, and the booking goes on (`on_failure: continue`).

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Booking {
    seat: String,
    #[serde(default)]
    data_platform_down: bool,
}

#[derive(Serialize, Deserialize)]
struct Notified {
    event: String,
    state: String,
}

struct Notify;

impl Step for Notify {
    type Input = Booking;
    type Output = Notified;
    type Undone = ();

    fn execute(ctx: &Context, step: StepInput<Booking>) -> Result<Notified, StepError> {
        if step.input.data_platform_down {
            saga_guest::warn!("data platform unreachable; booking of {} not reported", step.input.seat);
            return Err(StepError::retryable("data platform unavailable"));
        }
        Ok(Notified { event: format!("booking-{}", ctx.execution_id), state: "REPORTED".into() })
    }

    fn compensate(_ctx: &Context, _undo: Compensation<Booking, Notified>) -> Result<(), StepError> {
        Ok(())
    }
}

export_step!(Notify);
