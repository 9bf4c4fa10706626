//! Withdraws `amount` from account `from`, which holds `source_balance`: an insufficient
//! balance fails permanently, so the transfer's deposit is compensated.

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Transfer {
    from: String,
    amount: u64,
    source_balance: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    account: String,
    amount: u64,
    balance: u64,
    state: String,
}

struct Withdraw;

impl Step for Withdraw {
    type Input = Transfer;
    type Output = Entry;
    type Undone = Entry;

    fn execute(_ctx: &Context, step: StepInput<Transfer>) -> Result<Entry, StepError> {
        let t = step.input;
        if t.amount > t.source_balance {
            return Err(StepError::permanent(format!(
                "insufficient balance: {} holds {}, {} requested",
                t.from, t.source_balance, t.amount
            )));
        }
        Ok(Entry { balance: t.source_balance - t.amount, account: t.from, amount: t.amount, state: "WITHDRAWN".into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<Transfer, Entry>) -> Result<Entry, StepError> {
        let t = undo.input;
        Ok(Entry { account: t.from, amount: t.amount, balance: t.source_balance, state: "WITHDRAWAL_REVERSED".into() })
    }
}

export_step!(Withdraw);
