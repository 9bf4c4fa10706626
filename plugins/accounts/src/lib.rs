//! Bank accounts kept in the plugin's durable state. One plugin serves three steps (by name):
//!
//! - `open_account`: creates `accounts/{account}` with an opening balance;
//! - `deposit` (first step of a transfer): credits the target as *pending* — it shows on the
//!   target account but cannot be spent until the transfer completes — and records the
//!   transfer under `transfers/{execution id}` as PENDING;
//! - `withdraw` (second step): debits the source if its balance allows (else fails
//!   permanently, and the deposit is compensated), and settles the pending credit.
//!
//! Compensating a deposit removes its pending credit, which can never make a balance negative:
//! money is only spendable once both sides of a transfer are committed. Each step's writes
//! commit atomically with its completion event, and a conflicting concurrent update makes the
//! host retry the step, so balances are exact under any concurrency and across crashes.

use saga_guest::state::{self, Versioned};
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    /// `open_account`: the account to open.
    #[serde(default)]
    account: String,
    /// `open_account`: its opening balance.
    #[serde(default)]
    balance: u64,
    /// Transfer: source account.
    #[serde(default)]
    from: String,
    /// Transfer: target account.
    #[serde(default)]
    to: String,
    /// Transfer: amount.
    #[serde(default)]
    amount: u64,
}

/// `accounts/{name}`.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Account {
    /// Spendable balance.
    balance: u64,
    /// Credits of transfers still running.
    pending_in: u64,
}

/// `transfers/{execution id}`.
#[derive(Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    amount: u64,
    state: String,
}

/// A step's result as the saga shows it.
#[derive(Serialize, Deserialize)]
struct Outcome {
    account: String,
    amount: u64,
    balance: u64,
    state: String,
}

fn accounts() -> state::Collection {
    state::collection("accounts")
}

fn transfers() -> state::Collection {
    state::collection("transfers")
}

fn account(name: &str) -> Result<Account, StepError> {
    match accounts().get::<Account>(name)? {
        Some(Versioned { value, .. }) => Ok(value),
        None => Err(StepError::permanent(format!("no account {name:?}"))),
    }
}

fn open(r: Request) -> Result<Outcome, StepError> {
    if r.account.is_empty() {
        return Err(StepError::permanent("account must not be empty"));
    }
    if accounts().get::<Account>(&r.account)?.is_some() {
        return Err(StepError::permanent(format!("account {:?} already exists", r.account)));
    }
    accounts().set(&r.account, &Account { balance: r.balance, pending_in: 0 })?;
    Ok(Outcome { account: r.account, amount: r.balance, balance: r.balance, state: "OPEN".into() })
}

fn deposit(ctx: &Context, r: Request) -> Result<Outcome, StepError> {
    if r.amount == 0 {
        return Err(StepError::permanent("amount must be positive"));
    }
    if r.from == r.to {
        return Err(StepError::permanent("cannot transfer to the same account"));
    }
    account(&r.from)?;
    let mut target = account(&r.to)?;
    target.pending_in += r.amount;
    accounts().set(&r.to, &target)?;
    let t = Transfer { from: r.from, to: r.to.clone(), amount: r.amount, state: "PENDING".into() };
    transfers().set(&ctx.execution_id, &t)?;
    Ok(Outcome { account: r.to, amount: r.amount, balance: target.balance, state: "DEPOSIT_PENDING".into() })
}

fn transfer(ctx: &Context) -> Result<Option<Transfer>, StepError> {
    Ok(transfers().get::<Transfer>(&ctx.execution_id)?.map(|v| v.value))
}

fn withdraw(ctx: &Context, r: Request) -> Result<Outcome, StepError> {
    let Some(mut t) = transfer(ctx)?.filter(|t| t.state == "PENDING") else {
        return Err(StepError::permanent("no pending deposit for this transfer"));
    };
    let mut source = account(&t.from)?;
    if source.balance < t.amount {
        return Err(StepError::permanent(format!(
            "insufficient balance: {} holds {}, {} requested",
            t.from, source.balance, t.amount
        )));
    }
    source.balance -= t.amount;
    accounts().set(&t.from, &source)?;
    let mut target = account(&t.to)?;
    target.pending_in -= t.amount;
    target.balance += t.amount;
    accounts().set(&t.to, &target)?;
    t.state = "COMPLETED".into();
    transfers().set(&ctx.execution_id, &t)?;
    Ok(Outcome { account: r.from, amount: t.amount, balance: source.balance, state: "WITHDRAWN".into() })
}

/// Undoes a deposit: drops its pending credit. Nothing to do if the deposit never committed.
fn reverse_deposit(ctx: &Context, r: Request) -> Result<Outcome, StepError> {
    let Some(mut t) = transfer(ctx)? else {
        return Ok(Outcome { account: r.to, amount: r.amount, balance: 0, state: "NOTHING_TO_UNDO".into() });
    };
    let mut target = account(&t.to)?;
    match t.state.as_str() {
        "PENDING" => {
            target.pending_in -= t.amount;
            accounts().set(&t.to, &target)?;
            t.state = "CANCELLED".into();
            transfers().set(&ctx.execution_id, &t)?;
        }
        "CANCELLED" => {}
        other => return Err(StepError::permanent(format!("cannot reverse a {other} transfer's deposit"))),
    }
    Ok(Outcome { account: t.to, amount: t.amount, balance: target.balance, state: "DEPOSIT_REVERSED".into() })
}

/// Undoes a withdrawal: only a committed one moved money (the step is the transfer's last, so
/// this runs when its outcome was unknown, and then it did not commit).
fn reverse_withdraw(ctx: &Context, r: Request) -> Result<Outcome, StepError> {
    match transfer(ctx)? {
        Some(t) if t.state == "COMPLETED" => {
            Err(StepError::permanent("a completed transfer is not reversed by compensation: transfer back instead"))
        }
        _ => Ok(Outcome { account: r.from, amount: r.amount, balance: 0, state: "NOTHING_TO_UNDO".into() }),
    }
}

struct Accounts;

impl Step for Accounts {
    type Input = Request;
    type Output = Outcome;
    type Undone = Outcome;

    fn execute(ctx: &Context, step: StepInput<Request>) -> Result<Outcome, StepError> {
        match ctx.step.as_str() {
            "open_account" => open(step.input),
            "deposit" => deposit(ctx, step.input),
            "withdraw" => withdraw(ctx, step.input),
            other => Err(StepError::permanent(format!("the accounts plugin has no step {other:?}"))),
        }
    }

    fn compensate(ctx: &Context, undo: Compensation<Request, Outcome>) -> Result<Outcome, StepError> {
        match ctx.step.as_str() {
            "deposit" => reverse_deposit(ctx, undo.input),
            "withdraw" => reverse_withdraw(ctx, undo.input),
            other => Err(StepError::permanent(format!("the accounts plugin cannot undo {other:?}"))),
        }
    }
}

export_step!(Accounts);
