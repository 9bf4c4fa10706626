//! The crash test, in the style of sled's own: the real host runs as a child process and is
//! killed with SIGKILL at random moments while executions with slow and failing steps run;
//! it is restarted on the same data directory each time, and at the end every execution
//! must satisfy the saga invariants.
//!
//! Short by default (3 rounds). Longer: `SAGAHOST_CRASH_ROUNDS=200 ./scripts/test --test e2e crash`.
//! `SAGAHOST_CRASH_SEED` replays a run (the seed is printed).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, assert_gapless, data_dir, wasm};

/// xorshift64*: enough randomness for kill points, reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len() as u64) as usize]
    }
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `SAGAHOST_CRASH_SEED`, or a fresh one from the clock (printed by the tests, to replay a run).
pub fn seed() -> u64 {
    env_or(
        "SAGAHOST_CRASH_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
    )
}

const CRITICAL: [&str; 3] = ["reserve", "charge", "ship"];

fn definition() -> Value {
    let retry = json!({"max_attempts": 3, "initial_backoff_ms": 100, "multiplier": 2.0, "max_backoff_ms": 400});
    let comp_retry = json!({"max_attempts": 100, "initial_backoff_ms": 20, "multiplier": 2.0, "max_backoff_ms": 200});
    let step = |name: &str| json!({"name": name, "plugin": "testkit@1.0.0", "timeout_ms": 1000, "retry": retry, "compensation_retry": comp_retry});
    let mut notify = step("notify");
    notify["on_failure"] = json!("continue");
    notify["compensation"] = Value::Null;
    json!({"steps": [step("reserve"), step("charge"), notify, step("ship")]})
}

/// Random behaviours per step; every step and compensation also writes plugin state
/// (`crash/{key}/{step}`, `.../undone`), which must be there exactly when its completion is.
fn random_input(rng: &mut Rng, key: &str) -> Value {
    let forward =
        ["ok", "ok", "ok", "sleep:100", "sleep:400", "fail_until:2", "fail_until:3", "retryable", "permanent"];
    let backward = ["ok", "ok", "sleep:100", "fail_until:2", "fail_until:3"];
    let mut behaviors = serde_json::Map::new();
    let mut compensations = serde_json::Map::new();
    let (mut state, mut compensation_state) = (serde_json::Map::new(), serde_json::Map::new());
    for step in ["reserve", "charge", "notify", "ship"] {
        behaviors.insert(step.into(), json!(rng.pick(&forward)));
        compensations.insert(step.into(), json!(rng.pick(&backward)));
        state.insert(step.into(), json!([{"add": ["crash", format!("{key}/{step}"), 1]}]));
        compensation_state.insert(step.into(), json!([{"add": ["crash", format!("{key}/{step}/undone"), 1]}]));
    }
    json!({"behaviors": behaviors, "compensations": compensations, "state": state, "compensation_state": compensation_state})
}

/// The invariants of docs/state-machine.md ("Concurrency and exactly-once recording") for one finished execution.
fn check(exec: &Value, events: &[Value]) {
    let id = exec["id"].as_str().unwrap();
    let status = exec["status"].as_str().unwrap();
    assert!(matches!(status, "completed" | "compensated"), "{id} ended {status}");
    assert_gapless(events);
    let count = |ty: &str, step: &str| events.iter().filter(|e| e["type"] == ty && e["step"] == step).count();
    for step in ["reserve", "charge", "notify", "ship"] {
        assert!(count("step_completed", step) <= 1, "{id}: {step} completed twice");
        assert!(count("compensation_step_completed", step) <= 1, "{id}: {step} compensated twice");
        if count("step_started", step) == 0 {
            assert_eq!(
                count("compensation_step_started", step),
                0,
                "{id}: compensation of {step}, which never started"
            );
        }
    }
    assert_eq!(count("compensation_step_started", "notify"), 0, "{id}: notify has nothing to undo");
    let terminal: Vec<&Value> = events
        .iter()
        .filter(|e| {
            matches!(e["type"].as_str(), Some("execution_completed" | "execution_compensated" | "execution_failed"))
        })
        .collect();
    assert_eq!(terminal.len(), 1, "{id}: one terminal event");
    match status {
        "completed" => {
            for step in CRITICAL {
                assert_eq!(count("step_completed", step), 1, "{id}: completed without {step}");
            }
            assert!(!events.iter().any(|e| e["type"].as_str().unwrap().starts_with("compensation")), "{id}");
        }
        _ => {
            for step in CRITICAL {
                if count("step_completed", step) == 1 {
                    assert_eq!(
                        count("compensation_step_completed", step),
                        1,
                        "{id}: completed {step} not compensated once"
                    );
                }
            }
            // Reverse order of the definition.
            let order: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "compensation_step_completed")
                .map(|e| e["step"].as_str().unwrap())
                .collect();
            let mut expected: Vec<&str> =
                ["ship", "charge", "reserve"].into_iter().filter(|s| order.contains(s)).collect();
            expected.dedup();
            assert_eq!(order, expected, "{id}: compensations out of order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_survive_random_kills() {
    survive_random_kills("sled", &[]).await;
}

/// The same on PostgreSQL (`SAGAHOST_TEST_POSTGRES_URL`): a kill -9 leaves a transaction cut
/// off at any point, which the database rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_survive_random_kills_on_postgres() {
    let Some(scratch) = crate::postgres::Scratch::new().await else { return };
    survive_random_kills("postgres", &["--store", &scratch.url]).await;
}

/// Runs the crash test on the store `store_args` selects.
async fn survive_random_kills(store: &str, store_args: &[&str]) {
    let rounds = env_or("SAGAHOST_CRASH_ROUNDS", 3);
    let per_round = env_or("SAGAHOST_CRASH_EXECUTIONS", 10);
    let seed = seed();
    println!("crash test on {store}: {rounds} rounds, {per_round} executions per round, SAGAHOST_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (_tmp, dir) = data_dir();
    let mut accepted: HashMap<String, String> = HashMap::new();
    for round in 0..rounds {
        let mut host = HostProcess::start(&dir, store_args);
        let api = Api::new(&host.url);
        if round == 0 {
            api.put_plugin("testkit", wasm("testkit")).await;
            api.put_saga("crash", &definition()).await;
        }
        let kill_after = Duration::from_millis(50 + rng.below(1_200));
        let inputs: Vec<(String, Value, u64)> = (0..per_round)
            .map(|i| {
                let key = format!("r{round}-{i}");
                let input = random_input(&mut rng, &key);
                (key, input, rng.below(60))
            })
            .collect();
        let triggering = tokio::spawn({
            let api = api.clone();
            async move {
                let mut ok = Vec::new();
                for (key, input, pause) in inputs {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    let resp = reqwest::Client::new()
                        .post(format!("{}/v1/sagas/crash/executions", api.url))
                        .header("Idempotency-Key", &key)
                        .json(&input)
                        .send()
                        .await;
                    // A trigger cut off by the kill may or may not have been recorded; only a
                    // 202 is a promise.
                    if let Ok(r) = resp
                        && r.status().as_u16() == 202
                        && let Ok(body) = r.json::<Value>().await
                    {
                        ok.push((key, body["id"].as_str().unwrap().to_owned()));
                    }
                }
                ok
            }
        });
        tokio::time::sleep(kill_after).await;
        host.kill();
        accepted.extend(triggering.await.unwrap());
    }

    let host = HostProcess::start(&dir, store_args);
    let api = Api::new(&host.url);
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/executions?saga=crash&limit=1000&after={a}"),
            None => "/v1/executions?saga=crash&limit=1000".to_string(),
        };
        let (_, page) = api.call(reqwest::Method::GET, &path, None).await;
        for e in page["executions"].as_array().unwrap() {
            all.insert(e["id"].as_str().unwrap().to_owned(), ());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    for (key, id) in &accepted {
        assert!(all.contains_key(id), "accepted trigger {key} ({id}) was lost");
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for id in all.keys() {
        let exec = api
            .wait_for(id, deadline.saturating_duration_since(Instant::now()), |e| {
                matches!(e["status"].as_str(), Some("completed" | "compensated" | "failed"))
            })
            .await;
        check(&exec, &api.events(id).await);
        *statuses.entry(exec["status"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    // Atomicity: a step's (or compensation's) state write is there exactly when its
    // completion event is, and was applied once.
    for (key, id) in &accepted {
        let events = api.events(id).await;
        let (_, listed) = api
            .call(reqwest::Method::GET, &format!("/v1/plugins/testkit/state?collection=crash&prefix={key}/"), None)
            .await;
        let written: BTreeMap<String, Value> = listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str().unwrap().to_owned(), e["json"].clone()))
            .collect();
        let count = |ty: &str, step: &str| events.iter().filter(|e| e["type"] == ty && e["step"] == step).count();
        for step in ["reserve", "charge", "notify", "ship"] {
            for (entry, ty) in [
                (format!("{key}/{step}"), "step_completed"),
                (format!("{key}/{step}/undone"), "compensation_step_completed"),
            ] {
                let expected = (count(ty, step) == 1).then(|| json!(1));
                assert_eq!(written.get(&entry).cloned(), expected, "{id}: {entry} vs its {ty} event");
            }
        }
    }
    println!(
        "crash test on {store}: {} executions ({} accepted triggers) after {rounds} kills: {statuses:?}",
        all.len(),
        accepted.len()
    );
    assert!(!all.is_empty());
}
