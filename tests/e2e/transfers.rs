//! Money under concurrency and crashes: 1,000 concurrent random transfers among 10 accounts of
//! the example `accounts` plugin, with the host killed (SIGKILL) and restarted three times
//! while they run. At the end every execution is `completed` or `compensated`, no money was
//! created or lost, no balance went negative, and for every execution the plugin's state
//! agrees with its events: a step's writes are there exactly when its completion event is.
//!
//! The same on PostgreSQL with three hosts sharing the database and taking requests, one of
//! them killed and restarted at random moments (at least five kills; `SAGAHOST_TEST_POSTGRES_URL`):
//! the others adopt a killed host's executions once its lease lapses.
//!
//! Sizes: `SAGAHOST_TRANSFERS` (1000), `SAGAHOST_TRANSFER_KILLS` (3; 5 with several hosts),
//! `SAGAHOST_CRASH_SEED`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::crash::{Rng, env_or, seed};
use crate::harness::{Api, HostProcess, data_dir, wasm};

const ACCOUNTS: u64 = 10;
const OPENING: u64 = 1_000;

fn definition() -> Value {
    // Conflicts are expected: ten accounts, a thousand writers. They are retried, and a
    // compensation keeps trying long enough never to give up.
    let retry = json!({"max_attempts": 40, "initial_backoff_ms": 5, "multiplier": 2.0, "max_backoff_ms": 300});
    let undo = json!({"max_attempts": 1000, "initial_backoff_ms": 5, "multiplier": 2.0, "max_backoff_ms": 300});
    let step = |name: &str| json!({"name": name, "plugin": "accounts@1.0.0", "timeout_ms": 2000, "retry": retry, "compensation_retry": undo});
    json!({"deadline_ms": 120000, "steps": [step("deposit"), step("withdraw")]})
}

fn account(i: u64) -> String {
    format!("acct-{i}")
}

/// Triggers `pending` (idempotency key → input) with 64 requests in flight; returns the
/// triggers the host accepted (202) as key → execution id. Cut-off requests are retried
/// later under the same key, so none can run twice.
async fn trigger_all(url: String, saga: &'static str, pending: Vec<(String, Value)>) -> Vec<(String, String)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    futures::stream::iter(pending)
        .map(|(key, input)| {
            let client = client.clone();
            let target = format!("{url}/v1/sagas/{saga}/executions");
            async move {
                let resp = client.post(target).header("Idempotency-Key", &key).json(&input).send().await.ok()?;
                if resp.status().as_u16() != 202 {
                    return None;
                }
                let body: Value = resp.json().await.ok()?;
                Some((key, body["id"].as_str()?.to_owned()))
            }
        })
        .buffer_unordered(64)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

async fn state_entry(api: &Api, collection: &str, key: &str) -> Option<Value> {
    let (status, listed) = api
        .call(reqwest::Method::GET, &format!("/v1/plugins/accounts/state?collection={collection}&prefix={key}"), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    listed["entries"].as_array().unwrap().iter().find(|e| e["key"] == key).map(|e| e["json"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_money_across_kills() {
    transfers_across_kills(&[], 1, env_or("SAGAHOST_TRANSFER_KILLS", 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_postgres_conserve_money_across_kills() {
    let Some(scratch) = crate::postgres::Scratch::new().await else { return };
    // Short leases: a killed host's executions move within about two seconds.
    let args = ["--store", &scratch.url, "--pg-lease-ms", "2000"];
    transfers_across_kills(&args, 3, env_or("SAGAHOST_TRANSFER_KILLS", 5).max(5)).await;
}

/// Runs the transfers on `hosts` hosts started with `store_args`, killing one of them (at
/// random) `kills` times while transfers are triggered on all of them, and restarting it.
async fn transfers_across_kills(store_args: &[&str], hosts: usize, kills: u64) {
    let count = env_or("SAGAHOST_TRANSFERS", 1_000);
    let seed = seed();
    println!("transfers: {count} transfers, {hosts} host(s), {kills} kills, SAGAHOST_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let transfers: Vec<(String, Value)> = (0..count)
        .map(|i| {
            let from = rng.below(ACCOUNTS);
            let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
            // Up to 40% of an opening balance: some transfers find too little money.
            let amount = 1 + rng.below(OPENING * 2 / 5);
            (format!("t-{i}"), json!({"from": account(from), "to": account(to), "amount": amount}))
        })
        .collect();
    let inputs: HashMap<String, Value> = transfers.iter().cloned().collect();
    let (_tmp, dir) = data_dir();
    let started = Instant::now();
    let mut accepted: HashMap<String, String> = HashMap::new();
    let mut procs: Vec<HostProcess> = (0..hosts).map(|_| HostProcess::start(&dir, store_args)).collect();
    for round in 0..=kills {
        let api = Api::new(&procs[0].url);
        if round == 0 {
            api.put_plugin("accounts", wasm("accounts")).await;
            let open = sagahost::demo::SAGAS.iter().find(|(n, _)| *n == "open-account").unwrap().1;
            api.put_saga("open-account", &serde_json::from_str(open).unwrap()).await;
            api.put_saga("bulk-transfer", &definition()).await;
            for i in 0..ACCOUNTS {
                let id = api.trigger("open-account", &json!({"account": account(i), "balance": OPENING}), None).await;
                assert_eq!(api.wait_terminal(&id).await["status"], "completed");
            }
        }
        let pending: Vec<(String, Value)> =
            transfers.iter().filter(|(k, _)| !accepted.contains_key(k)).cloned().collect();
        if round < kills {
            // Requests go to every host.
            let mut shares: Vec<Vec<(String, Value)>> = vec![Vec::new(); hosts];
            for (i, t) in pending.into_iter().enumerate() {
                shares[i % hosts].push(t);
            }
            let runs: Vec<_> = shares
                .into_iter()
                .zip(&procs)
                .map(|(share, p)| tokio::spawn(trigger_all(p.url.clone(), "bulk-transfer", share)))
                .collect();
            tokio::time::sleep(Duration::from_millis(300 + rng.below(1_200))).await;
            let (_, running) = api
                .call(reqwest::Method::GET, "/v1/executions?saga=bulk-transfer&status=running&limit=1000", None)
                .await;
            let victim = rng.below(hosts as u64) as usize;
            procs[victim].kill();
            for run in runs {
                accepted.extend(run.await.unwrap());
            }
            procs[victim] = HostProcess::start(&dir, store_args);
            println!(
                "kill {} (host {victim}): {} running just before it, {} of {count} triggers accepted so far",
                round + 1,
                running["executions"].as_array().map_or(0, Vec::len),
                accepted.len()
            );
        } else {
            let mut pending = pending;
            while !pending.is_empty() {
                accepted.extend(trigger_all(procs[0].url.clone(), "bulk-transfer", pending).await);
                pending = transfers.iter().filter(|(k, _)| !accepted.contains_key(k)).cloned().collect();
            }
            // Every execution ends.
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
            let mut conflicts = 0;
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            let mut moved: BTreeMap<String, i64> = BTreeMap::new();
            for (key, id) in &accepted {
                let exec = api
                    .wait_for(id, deadline.saturating_duration_since(Instant::now()), |e| {
                        matches!(e["status"].as_str(), Some("completed" | "compensated" | "failed"))
                    })
                    .await;
                let status = exec["status"].as_str().unwrap().to_owned();
                assert!(status == "completed" || status == "compensated", "{key} ({id}) ended {status}: {exec}");
                let events = api.events(id).await;
                let has = |ty: &str, step: &str| events.iter().filter(|e| e["type"] == ty && e["step"] == step).count();
                conflicts += events.iter().filter(|e| e["error"]["kind"] == "conflict").count();
                // The state agrees with the events, execution by execution.
                let record = state_entry(&api, "transfers", id).await;
                assert!(has("step_completed", "deposit") <= 1 && has("step_completed", "withdraw") <= 1, "{id}");
                let expected_state = match (has("step_completed", "deposit"), has("step_completed", "withdraw")) {
                    (0, _) => None,
                    (1, 1) => Some("COMPLETED"),
                    _ if has("compensation_step_completed", "deposit") == 1 => Some("CANCELLED"),
                    _ => Some("PENDING"),
                };
                assert_eq!(record.as_ref().map(|r| r["state"].as_str().unwrap()), expected_state, "{id}: {events:?}");
                assert_eq!(status == "completed", expected_state == Some("COMPLETED"), "{id}");
                if status == "completed" {
                    let t = &inputs[key];
                    let amount = t["amount"].as_i64().unwrap();
                    *moved.entry(t["from"].as_str().unwrap().into()).or_default() -= amount;
                    *moved.entry(t["to"].as_str().unwrap().into()).or_default() += amount;
                }
                if status == "compensated" {
                    // Why: the last failure before compensation began.
                    let why = events.iter().rev().find(|e| e["type"] == "step_failed").map_or("deadline", |e| {
                        if e["error"]["message"].as_str().unwrap_or("").contains("insufficient") {
                            "insufficient balance"
                        } else {
                            e["error"]["kind"].as_str().unwrap_or("?")
                        }
                    });
                    *reasons.entry(why.to_owned()).or_default() += 1;
                }
                *statuses.entry(status).or_default() += 1;
            }
            // No money created or lost; every balance is exactly its completed transfers.
            let mut total = 0;
            for i in 0..ACCOUNTS {
                let a = state_entry(&api, "accounts", &account(i)).await.expect("account");
                let balance = a["balance"].as_i64().expect("a non-negative balance");
                assert!(balance >= 0, "{}: {a}", account(i));
                assert_eq!(a["pending_in"], 0, "{}: a pending credit left behind", account(i));
                let expected = OPENING as i64 + moved.get(&account(i)).copied().unwrap_or(0);
                assert_eq!(balance, expected, "{}: balance vs its completed transfers", account(i));
                total += balance;
            }
            assert_eq!(total, (ACCOUNTS * OPENING) as i64, "the sum of balances changed");
            println!(
                "transfers: {} executions after {kills} kills in {:.1} s: {statuses:?} (compensated because: {reasons:?}), {conflicts} attempts retried after a state conflict",
                accepted.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}
