//! The order/customer choreography (plugins/sagas/README.md) under kill -9: order sagas emit
//! OrderCreated, customer sagas triggered by it reserve credit and answer CreditReserved or
//! CreditLimitExceeded, the orders wait for the answer and approve or reject; a webhook
//! subscription receives every event. The host is killed at random moments while it runs and
//! restarted on the same data directory. At the end:
//!
//! - every order ended APPROVED (execution completed) or REJECTED (compensated), consistently
//!   with its customer's credit: a customer's reserved credit is exactly the sum of its
//!   approved orders, never over its limit, and an order has a reservation iff it is approved;
//! - no trigger started two executions for one key: one customer execution per order, and one
//!   credit release (started by OrderRejected) per rejected order;
//! - every event in the log reached the webhook (and, when the tests have a Redis, a Redis
//!   stream) at least once, and per key each consumer saw the events in log order with none
//!   missing.
//!
//! 500 orders and 3 kills by default; `SAGAHOST_CHOREO_ORDERS`, `SAGAHOST_CRASH_ROUNDS` and
//! `SAGAHOST_CRASH_SEED` change that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::crash::{Rng, env_or, seed};
use crate::harness::{Api, HostProcess, data_dir};
use crate::subscriptions::{Receiver, subscribe};

const CUSTOMERS: usize = 100;
const CREDIT_LIMIT: u64 = 1_000;

fn example(name: &str) -> &'static str {
    sagahost::demo::SAGAS.iter().find(|(n, _)| *n == name).unwrap().1
}

async fn install(api: &Api, webhook: &str, redis_stream: Option<&(String, String)>) {
    for p in sagahost::demo::PLUGINS.iter().filter(|p| p.name == "order" || p.name == "customer") {
        api.put_plugin(p.name, p.wasm.to_vec()).await;
    }
    for name in ["order-credit", "customer-credit", "customer-release"] {
        api.put_saga(name, &serde_json::from_str(example(name)).unwrap()).await;
    }
    let retry = json!({"max_attempts": 1000, "initial_backoff_ms": 20, "multiplier": 2.0, "max_backoff_ms": 200});
    subscribe(api, "audit", json!({"topics": ["*"], "webhook": {"url": webhook}, "retry": retry, "from": "start"}))
        .await;
    if let Some((url, stream)) = redis_stream {
        let target = json!({"url": url, "stream": stream});
        subscribe(
            api,
            "audit-redis",
            json!({"topics": ["*"], "redis_stream": target, "retry": retry, "from": "start"}),
        )
        .await;
    }
}

/// Checks that a consumer saw every event of `log` at least once, and per key in log order
/// with none missing; `received` is the ids and keys in order of arrival (repeats included).
/// How many arrivals were repeats.
fn check_consumer(name: &str, log: &[Value], received: &[(String, String)]) -> usize {
    let mut log_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in log {
        log_order.entry(e["key"].as_str().unwrap_or("")).or_default().push(e["id"].as_str().unwrap());
    }
    let mut first_seen: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut seen = HashSet::new();
    for (id, key) in received {
        if seen.insert(id.as_str()) {
            first_seen.entry(key.as_str()).or_default().push(id.as_str());
        }
    }
    for (key, ids) in &log_order {
        assert_eq!(first_seen.get(key), Some(ids), "{name}: key {key}");
    }
    assert_eq!(seen.len(), log.len(), "{name}: events it saw that are not in the log");
    received.len() - seen.len()
}

/// Starts order `i` (idempotent: its order id is the Idempotency-Key): whether the host said 202.
async fn trigger(url: &str, order: &(String, String, u64)) -> bool {
    let (id, customer, amount) = order;
    let input = json!({"order_id": id, "item": "thing", "customer_id": customer, "amount": amount});
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/sagas/order-credit/executions"))
        .header("Execution-Key", id)
        .header("Idempotency-Key", id)
        .timeout(Duration::from_secs(10))
        .json(&input)
        .send()
        .await;
    matches!(resp, Ok(r) if r.status().as_u16() == 202)
}

/// Every entry of a plugin's collection: key → JSON value.
async fn state(api: &Api, plugin: &str, collection: &str) -> BTreeMap<String, Value> {
    let path = format!("/v1/plugins/{plugin}/state?collection={collection}&limit=1000");
    let (status, listed) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{listed}");
    listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_owned(), e["json"].clone()))
        .collect()
}

/// The whole topic log.
async fn log(api: &Api) -> Vec<Value> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let (_, page) = api.call(Method::GET, &format!("/v1/events?after={after}&limit=1000"), None).await;
        all.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

/// Executions of `saga`, by business key.
async fn executions_by_key(api: &Api, saga: &str) -> HashMap<String, Vec<Value>> {
    let (mut out, mut after): (HashMap<String, Vec<Value>>, Option<String>) = (HashMap::new(), None);
    loop {
        let mut path = format!("/v1/executions?saga={saga}&limit=1000");
        if let Some(a) = &after {
            path += &format!("&after={a}");
        }
        let (_, page) = api.call(Method::GET, &path, None).await;
        for e in page["executions"].as_array().unwrap() {
            out.entry(e["key"].as_str().unwrap_or("").to_owned()).or_default().push(e.clone());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreographed_orders_stay_consistent_across_kills() {
    let orders_n = env_or("SAGAHOST_CHOREO_ORDERS", 500) as usize;
    let rounds = env_or("SAGAHOST_CRASH_ROUNDS", 3);
    let seed = seed();
    println!("choreography crash test: {orders_n} orders, {rounds} kills, SAGAHOST_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let orders: Vec<(String, String, u64)> = (0..orders_n)
        .map(|i| (format!("o-{i}"), format!("c-{}", rng.below(CUSTOMERS as u64)), 50 + rng.below(351)))
        .collect();
    let (receiver, webhook) = Receiver::start().await;
    // A Redis stream consumer too, when the tests have a Redis.
    let redis = crate::subscriptions::redis_url().map(|url| (url, format!("sagahost-choreo-{}", uuid::Uuid::now_v7())));
    let (_tmp, dir) = data_dir();
    let started = Instant::now();
    let mut confirmed: HashSet<String> = HashSet::new();
    for round in 0..=rounds {
        let mut host = HostProcess::start(&dir, &[]);
        let api = Api::new(&host.url);
        if round == 0 {
            install(&api, &webhook, redis.as_ref()).await;
        }
        // Each round triggers its share (and what earlier rounds could not confirm); the last
        // one, not killed, everything left.
        let share = if round == rounds { orders_n } else { orders_n * (round as usize + 1) / (rounds as usize + 1) };
        let todo: Vec<(String, String, u64)> =
            orders[..share].iter().filter(|o| !confirmed.contains(&o.0)).cloned().collect();
        let url = host.url.clone();
        let triggering = tokio::spawn(async move {
            let mut ok = Vec::new();
            for chunk in todo.chunks(16) {
                let answers = futures::future::join_all(chunk.iter().map(|o| trigger(&url, o))).await;
                ok.extend(chunk.iter().zip(answers).filter(|(_, a)| *a).map(|(o, _)| o.0.clone()));
            }
            ok
        });
        if round < rounds {
            tokio::time::sleep(Duration::from_millis(300 + rng.below(1_500))).await;
            host.kill();
            confirmed.extend(triggering.await.unwrap());
            continue;
        }
        confirmed.extend(triggering.await.unwrap());
        assert_eq!(confirmed.len(), orders_n, "every order was triggered");

        // Every order ends, approved or rejected.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut by_key = executions_by_key(&api, "order-credit").await;
        while by_key.values().flatten().any(|e| e["status"] == "running" || e["status"] == "compensating") {
            assert!(Instant::now() < deadline, "orders still running");
            tokio::time::sleep(Duration::from_millis(200)).await;
            by_key = executions_by_key(&api, "order-credit").await;
        }
        // Every rejected order's OrderRejected started one release of its credit, which ended.
        let rejected = by_key.values().flatten().filter(|e| e["status"] == "compensated").count();
        let mut releases = executions_by_key(&api, "customer-release").await;
        while releases.values().flatten().filter(|e| e["status"] == "completed").count() < rejected {
            assert!(Instant::now() < deadline, "credit releases still running");
            tokio::time::sleep(Duration::from_millis(200)).await;
            releases = executions_by_key(&api, "customer-release").await;
        }
        assert!(releases.values().all(|v| v.len() == 1), "one release per order");
        assert_eq!(releases.len(), rejected, "a release per rejected order, none for an approved one");
        let order_state = state(&api, "order", "orders").await;
        let reservations = state(&api, "customer", "reservations").await;
        let customers = state(&api, "customer", "customers").await;
        let mut approved_sum: HashMap<&str, u64> = HashMap::new();
        let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, customer, amount) in &orders {
            let execs = by_key.get(id).unwrap_or_else(|| panic!("order {id} has no execution"));
            assert_eq!(execs.len(), 1, "{id}: one execution per order");
            let status = execs[0]["status"].as_str().unwrap();
            let recorded = order_state[id]["state"].as_str().unwrap_or("none");
            match (status, recorded) {
                ("completed", "APPROVED") => {
                    *approved_sum.entry(customer).or_default() += amount;
                    assert_eq!(reservations.get(id), Some(&json!(amount)), "{id}: approved without its reservation");
                }
                ("compensated", "REJECTED") => {
                    assert_eq!(reservations.get(id), None, "{id}: rejected but credit reserved");
                }
                other => panic!("{id}: execution and order disagree: {other:?}"),
            }
            *outcomes.entry(recorded_name(recorded)).or_default() += 1;
        }
        for c in 0..CUSTOMERS {
            let name = format!("c-{c}");
            let reserved = customers.get(&name).map_or(0, |v| v["reserved"].as_u64().unwrap());
            assert_eq!(reserved, approved_sum.get(name.as_str()).copied().unwrap_or(0), "{name}: credit vs orders");
            assert!(reserved <= CREDIT_LIMIT, "{name}: over its limit");
        }
        // One customer execution per order: the trigger's key held across kills.
        let customer_execs = executions_by_key(&api, "customer-credit").await;
        for (id, ..) in &orders {
            assert_eq!(customer_execs.get(id).map_or(0, Vec::len), 1, "{id}: customer executions");
        }

        // Every logged event reached the webhook, in log order per key, none missing.
        let log = log(&api).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seen: HashSet<String> = receiver.ids().into_iter().collect();
            let missing = log.iter().filter(|e| !seen.contains(e["id"].as_str().unwrap())).count();
            if missing == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{missing} of {} events never reached the webhook", log.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let received: Vec<(String, String)> = receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.json["id"].as_str().unwrap().to_owned(), r.json["key"].as_str().unwrap_or("").to_owned()))
            .collect();
        let redelivered = check_consumer("webhook", &log, &received);
        if let Some((url, stream)) = &redis {
            let mut conn = crate::subscriptions::redis_connection(url).await;
            let deadline = Instant::now() + Duration::from_secs(60);
            let entries = loop {
                let entries: Vec<(String, HashMap<String, String>)> =
                    redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
                let ids: HashSet<&str> = entries.iter().map(|(_, f)| f["id"].as_str()).collect();
                if ids.len() >= log.len() {
                    break entries;
                }
                assert!(Instant::now() < deadline, "{} of {} events in the Redis stream", ids.len(), log.len());
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let in_stream: Vec<(String, String)> =
                entries.iter().map(|(_, f)| (f["id"].clone(), f.get("key").cloned().unwrap_or_default())).collect();
            check_consumer("redis stream", &log, &in_stream);
            let _: () = redis::cmd("DEL").arg(stream).query_async(&mut conn).await.unwrap();
        }
        println!(
            "choreography crash test: {orders_n} orders {outcomes:?}, {} events, {} deliveries ({redelivered} again after kills), {:.1} s",
            log.len(),
            received.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

fn recorded_name(state: &str) -> &'static str {
    match state {
        "APPROVED" => "approved",
        _ => "rejected",
    }
}
