//! Tells the data platform about a booking: `POST {data_platform_url}/events`, the URL from the
//! step's `config` and granted by its `allow_http`. A non-critical side effect: when the
//! platform does not answer the step fails, and the booking goes on (`on_failure: continue`).
//! The host's `Idempotency-Key` lets the platform keep one event however often it is retried.
//!
//! `data_platform_down: true` in the input is test control for the demo's stand-in: it is passed
//! on as the header `x-standin-outage: all`, and the stand-in answers every try with 503.

use std::time::Duration;

use saga_guest::{Compensation, Context, Step, StepError, StepInput, config, export_step, http};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Booking {
    seat: String,
    #[serde(default)]
    data_platform_down: bool,
}

#[derive(Serialize)]
struct BookingEvent<'a> {
    kind: &'static str,
    seat: &'a str,
    execution_id: &'a str,
}

#[derive(Deserialize)]
struct Accepted {
    id: String,
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
        let platform = config::require("data_platform_url")?;
        let event = BookingEvent { kind: "booking", seat: &step.input.seat, execution_id: &ctx.execution_id };
        let mut request = http::post(&format!("{platform}/events")).timeout(Duration::from_millis(1_000)).json(&event);
        if step.input.data_platform_down {
            request = request.header("x-standin-outage", "all");
        }
        let accepted: Accepted = request.send_json().inspect_err(|e| {
            saga_guest::warn!("booking of {} not reported: {e}", step.input.seat);
        })?;
        Ok(Notified { event: accepted.id, state: "REPORTED".into() })
    }

    fn compensate(_ctx: &Context, _undo: Compensation<Booking, Notified>) -> Result<(), StepError> {
        Ok(())
    }
}

export_step!(Notify);
