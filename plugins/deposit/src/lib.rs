//! Deposits `amount` into account `to` (the first step of a transfer).

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Transfer {
    to: String,
    amount: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    account: String,
    amount: u64,
    state: String,
}

struct Deposit;

impl Step for Deposit {
    type Input = Transfer;
    type Output = Entry;
    type Undone = Entry;

    fn execute(_ctx: &Context, step: StepInput<Transfer>) -> Result<Entry, StepError> {
        if step.input.amount == 0 {
            return Err(StepError::permanent("amount must be positive"));
        }
        Ok(Entry { account: step.input.to, amount: step.input.amount, state: "DEPOSITED".into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<Transfer, Entry>) -> Result<Entry, StepError> {
        Ok(Entry { account: undo.input.to, amount: undo.input.amount, state: "DEPOSIT_REVERSED".into() })
    }
}

export_step!(Deposit);
