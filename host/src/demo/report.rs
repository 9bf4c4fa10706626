//! What the stand-ins saw, beside what the host recorded: the demo's view of the payment
//! gateway (every charge and refund request with its idempotency key and answers) and the
//! checks that tie the two together — one charge per paid step, made under that step's key
//! however many attempts it took, and one refund per refunded payment.
#![allow(clippy::print_stdout)]

use serde_json::Value;

use super::Scenario;
use super::standins::StandIns;
use super::standins::gateway::Ledger;
use crate::domain::ExecutionView;

/// The steps of the example sagas that charge through the gateway (`order`, `payment-retry`:
/// `payment`; `concert`: `pay`).
pub const PAYMENT_STEPS: [&str; 2] = ["payment", "pay"];

/// A check of what a stand-in saw against what the host recorded.
#[derive(Clone, Debug)]
pub struct Check {
    /// What it checks.
    pub name: &'static str,
    /// `Err` lists what did not hold.
    pub outcome: Result<(), String>,
}

/// The gateway's ledger against the executions (as the API answers them): each payment step
/// sent one request per attempt, all under the step's idempotency key, and left exactly one
/// charge (the one in its result) if it completed and none if it did not; each refunded
/// payment left one refund of its charge, under its compensation's key; nothing else was
/// charged or refunded.
pub fn gateway_checks(ledger: &Ledger, executions: &[ExecutionView]) -> Vec<Check> {
    let (mut charge_problems, mut refund_problems) = (Vec::new(), Vec::new());
    let (mut paid, mut refunded) = (0, 0);
    for exec in executions {
        for step in exec.steps.iter().filter(|s| PAYMENT_STEPS.contains(&s.name.as_str())) {
            let key = format!("{}/{}", exec.id, step.name);
            let tries = ledger
                .requests
                .iter()
                .filter(|r| r.path == "/charges" && r.idempotency_key.as_deref() == Some(key.as_str()))
                .count();
            if tries != step.attempts as usize {
                charge_problems.push(format!("{key}: {} attempts, {tries} charge requests", step.attempts));
            }
            let charged: Vec<&str> =
                ledger.charges.iter().filter(|c| c.idempotency_key == key).map(|c| c.id.as_str()).collect();
            let in_result = step.result.as_ref().and_then(|r| r["charge_id"].as_str());
            match (in_result, charged.as_slice()) {
                (Some(want), [got]) if want == *got => paid += 1,
                (None, []) => {}
                (want, got) => {
                    charge_problems.push(format!("{key}: the step's charge is {want:?}, the gateway's {got:?}"))
                }
            }
            let undone = step.compensation.as_ref().and_then(|c| c.result.as_ref());
            let Some(refund) = undone.filter(|u| u["state"] == "REFUNDED") else { continue };
            let comp_key = format!("{key}/compensate");
            let made: Vec<_> = ledger.refunds.iter().filter(|r| r.idempotency_key == comp_key).collect();
            match made.as_slice() {
                [r] if Some(r.id.as_str()) == refund["refund_id"].as_str()
                    && Some(r.charge_id.as_str()) == in_result =>
                {
                    refunded += 1
                }
                other => {
                    refund_problems.push(format!("{comp_key}: the gateway's refunds {other:?}, the step's {refund}"))
                }
            }
        }
    }
    if paid != ledger.charges.len() {
        charge_problems.push(format!("{} charges at the gateway, {paid} paid steps", ledger.charges.len()));
    }
    if refunded != ledger.refunds.len() {
        refund_problems.push(format!("{} refunds at the gateway, {refunded} refunded steps", ledger.refunds.len()));
    }
    let outcome = |problems: Vec<String>| if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) };
    vec![
        Check {
            name: "gateway: one charge per paid step under the step's idempotency key, whatever the retries",
            outcome: outcome(charge_problems),
        },
        Check {
            name: "gateway: one refund per refunded payment, under its compensation's key",
            outcome: outcome(refund_problems),
        },
    ]
}

/// Prints what the stand-ins saw, for each scenario that reached the gateway, and the checks;
/// answers the checks.
pub fn print(standins: &StandIns, runs: &[(Scenario, Value)]) -> Vec<Check> {
    let ledger = standins.gateway.ledger();
    println!("\npayment gateway stand-in ({}), what it saw:", standins.gateway.url());
    // Requests grouped by (path, key), in the order first seen; a key starts with its execution's id.
    let mut groups: Vec<(&str, &str, Vec<u16>)> = Vec::new();
    for r in &ledger.requests {
        let key = r.idempotency_key.as_deref().unwrap_or("");
        match groups.iter_mut().find(|(path, k, _)| *path == r.path && *k == key) {
            Some(group) => group.2.push(r.status),
            None => groups.push((&r.path, key, vec![r.status])),
        }
    }
    for (scenario, exec) in runs {
        let id = exec["id"].as_str().unwrap_or("?");
        let mine: Vec<_> = groups.iter().filter(|(_, key, _)| key.split('/').next() == Some(id)).collect();
        if mine.is_empty() {
            continue;
        }
        println!("  {}", scenario.title);
        for (path, key, statuses) in mine {
            let answers: Vec<String> = statuses.iter().map(u16::to_string).collect();
            let tries = match statuses.len() {
                1 => String::new(),
                n => format!(", once for {n} tries"),
            };
            let effect = if *path == "/charges" {
                match ledger.charges.iter().find(|c| c.idempotency_key == *key) {
                    Some(c) => format!("charged {} {}{tries}", c.id, c.amount),
                    None => "nothing charged".to_owned(),
                }
            } else {
                match ledger.refunds.iter().find(|r| r.idempotency_key == *key) {
                    Some(r) => format!("refunded {} of {}{tries}", r.id, r.charge_id),
                    None => "nothing refunded".to_owned(),
                }
            };
            println!("    POST {path:<9} key {key:<56} answered {:<12} {effect}", answers.join(" "));
        }
    }
    let events = standins.data_platform.events();
    // The notify plugin's requests; the webhook's are listed below.
    let requests: Vec<_> = standins.data_platform.requests().into_iter().filter(|r| r.path == "/events").collect();
    let unavailable = requests.iter().filter(|r| r.status == 503).count();
    println!(
        "\ndata platform stand-in ({}): {} booking events kept from {} requests ({unavailable} answered 503)",
        standins.data_platform.url(),
        events.len(),
        requests.len()
    );
    let delivered = standins.data_platform.delivered();
    println!("  its webhook, from the host's `data-platform` subscription (signed; each event once by id):");
    for d in &delivered {
        let again = if d.deliveries > 1 { format!(" ({} deliveries)", d.deliveries) } else { String::new() };
        println!("    {:<13} key {:<4} {}{again}", d.topic, d.body["key"].as_str().unwrap_or("-"), d.id);
    }
    let views: Result<Vec<ExecutionView>, _> =
        runs.iter().map(|(_, exec)| serde_json::from_value(exec.clone())).collect();
    let checks = match views {
        Ok(views) => gateway_checks(&ledger, &views),
        Err(e) => vec![Check { name: "executions as the API answered them", outcome: Err(e.to_string()) }],
    };
    println!();
    for c in &checks {
        match &c.outcome {
            Ok(()) => println!("✔ {}", c.name),
            Err(problems) => println!("✘ {}: {problems}", c.name),
        }
    }
    checks
}
