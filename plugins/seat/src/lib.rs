//! Reserves a concert seat. Seats whose name starts with `taken` are already reserved.

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Booking {
    seat: String,
}

#[derive(Serialize, Deserialize)]
struct SeatState {
    seat: String,
    state: String,
}

struct Seat;

impl Step for Seat {
    type Input = Booking;
    type Output = SeatState;
    type Undone = SeatState;

    fn execute(_ctx: &Context, step: StepInput<Booking>) -> Result<SeatState, StepError> {
        if step.input.seat.starts_with("taken") {
            return Err(StepError::permanent(format!("seat {} is already reserved", step.input.seat)));
        }
        Ok(SeatState { seat: step.input.seat, state: "SEAT_RESERVED".into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<Booking, SeatState>) -> Result<SeatState, StepError> {
        Ok(SeatState { seat: undo.input.seat, state: "SEAT_RELEASED".into() })
    }
}

export_step!(Seat);
