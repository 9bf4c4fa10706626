//! Reserves a concert seat in the plugin's durable state (`seats/{seat}`): a seat held by
//! another booking cannot be reserved again; compensation releases it. Each emits an event
//! (`SeatReserved`, `SeatReleased`, keyed by the seat), recorded with the step's completion:
//! the demo's subscription delivers them to the data platform's webhook.

use saga_guest::state::{self, Versioned};
use saga_guest::{Compensation, Context, Step, StepError, StepInput, events, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Booking {
    seat: String,
}

/// `seats/{seat}`: who holds it.
#[derive(Serialize, Deserialize)]
struct Reservation {
    execution_id: String,
    state: String,
}

#[derive(Serialize, Deserialize)]
struct SeatState {
    seat: String,
    state: String,
}

fn seats() -> state::Collection {
    state::collection("seats")
}

struct Seat;

impl Step for Seat {
    type Input = Booking;
    type Output = SeatState;
    type Undone = SeatState;

    fn execute(ctx: &Context, step: StepInput<Booking>) -> Result<SeatState, StepError> {
        let seat = step.input.seat;
        if let Some(Versioned { value: held, .. }) = seats().get::<Reservation>(&seat)?
            && held.execution_id != ctx.execution_id
        {
            return Err(StepError::permanent(format!("seat {seat} is already reserved")));
        }
        let state = "SEAT_RESERVED".to_string();
        seats().set(&seat, &Reservation { execution_id: ctx.execution_id.clone(), state: state.clone() })?;
        let done = SeatState { seat, state };
        events::emit_keyed("SeatReserved", &done.seat, &done)?;
        Ok(done)
    }

    fn compensate(ctx: &Context, undo: Compensation<Booking, SeatState>) -> Result<SeatState, StepError> {
        let seat = undo.input.seat;
        // Only this booking's hold is released (there is none if the reservation never committed).
        if let Some(Versioned { value: held, .. }) = seats().get::<Reservation>(&seat)?
            && held.execution_id == ctx.execution_id
        {
            seats().delete(&seat)?;
        }
        let done = SeatState { seat, state: "SEAT_RELEASED".into() };
        events::emit_keyed("SeatReleased", &done.seat, &done)?;
        Ok(done)
    }
}

export_step!(Seat);
