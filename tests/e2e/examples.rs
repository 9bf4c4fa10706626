//! Every example saga, every path: the demo's scenarios, checked in full, with the payment
//! gateway and data platform stand-ins the demo uses (`sagahost::demo::standins`) on 127.0.0.1.

use sagahost::demo::report::gateway_checks;
use sagahost::demo::standins::StandIns;
use sagahost::demo::{PLUGINS, SAGAS, SUBSCRIPTIONS, Scenarios};
use serde_json::Value;

use crate::harness::{Api, HostProcess, assert_gapless, compensated_steps, data_dir, trace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_path_ends_as_expected() {
    let standins = StandIns::start().await.unwrap();
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    for p in PLUGINS {
        api.put_plugin(p.name, p.wasm.to_vec()).await;
    }
    for (name, value) in standins.secrets() {
        let body = serde_json::json!({ "value": value }).to_string().into_bytes();
        assert_eq!(api.call(reqwest::Method::PUT, &format!("/v1/secrets/{name}"), Some(body)).await.0, 201);
    }
    for (name, json) in SAGAS {
        api.put_saga(name, &serde_json::from_str(&standins.fill(json).unwrap()).unwrap()).await;
    }
    for (name, json) in SUBSCRIPTIONS {
        let doc = standins.fill(json).unwrap().into_bytes();
        assert_eq!(api.call(reqwest::Method::PUT, &format!("/v1/subscriptions/{name}"), Some(doc)).await.0, 201);
    }
    let all = Scenarios::examples();
    let mut ids = Vec::new();
    let mut ran = Vec::new();
    for stage in &all.stages {
        let mut started = Vec::new();
        for s in stage {
            let key: Vec<_> = s.key.iter().map(|k| ("Execution-Key", k.as_str())).collect();
            started.push(api.trigger_with(&s.saga, &s.input, &key).await);
        }
        // A stage ends before the next starts: later stages depend on the state it leaves.
        for id in &started {
            api.wait_terminal(id).await;
        }
        ids.extend(started);
        ran.extend(stage.iter().cloned());
    }
    let ledger = || standins.gateway.ledger();
    // The answers the gateway gave to requests under `key`, in order.
    let answers = |key: &str| -> Vec<u16> {
        let seen = ledger().requests;
        seen.iter().filter(|r| r.idempotency_key.as_deref() == Some(key)).map(|r| r.status).collect()
    };
    let charges_under = |key: &str| ledger().charges.into_iter().filter(|c| c.idempotency_key == key).count();
    let mut views = Vec::new();
    for (s, id) in ran.iter().zip(&ids) {
        let exec = api.wait_terminal(id).await;
        views.push(serde_json::from_value(exec.clone()).unwrap());
        assert_eq!(exec["status"], s.expect.as_str(), "{}: {exec}", s.title);
        let events = api.events(id).await;
        assert_gapless(&events);
        // The gateway's API key (a secret the payment steps read) is nowhere in what the host shows.
        for shown in [&exec, &Value::Array(events.clone())] {
            assert!(!shown.to_string().contains(&standins.gateway_key), "{}: the API key is shown", s.title);
        }
        let t = trace(&events);
        assert_eq!(t[0], "execution_started");
        // Every step's start is recorded before its outcome.
        for (i, e) in t.iter().enumerate() {
            if let Some(step) = e.strip_prefix("step_completed(") {
                assert!(t[..i].contains(&format!("step_started({step}")), "{}: {t:?}", s.title);
            }
        }
        match s.title.as_str() {
            "order: shipping impossible refunds and cancels" => {
                assert_eq!(compensated_steps(&events), ["payment", "create_order"], "reverse order");
                let refund = &exec["steps"][1]["compensation"]["result"];
                assert_eq!(refund["state"], "REFUNDED", "{exec}");
                assert_eq!(refund["charge_id"], exec["steps"][1]["result"]["charge_id"]);
                assert_eq!(answers(&format!("{id}/payment/compensate")), [201], "one refund request, its own key");
                assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "CANCELLED");
                assert_eq!(exec["steps"][2]["error"]["kind"], "permanent");
                assert_eq!(exec["steps"][3]["status"], "skipped");
            }
            "order: card declined cancels the order" => {
                let step = &exec["steps"][1];
                assert_eq!(step["error"]["kind"], "permanent", "a 402 is not retried: {exec}");
                assert!(step["error"]["message"].as_str().unwrap().starts_with("PAYMENT_FAILED: card declined"));
                assert_eq!(answers(&format!("{id}/payment")), [402]);
                assert_eq!(charges_under(&format!("{id}/payment")), 0);
            }
            "order: paid and shipped" => {
                // The gateway answers 401 to a request without its API key: this one had it.
                assert_eq!(answers(&format!("{id}/payment")), [201], "the host's key on the charge");
                assert!(exec["steps"][1]["result"]["charge_id"].as_str().unwrap().starts_with("ch-"));
                assert_eq!(exec["steps"][1]["execute"]["http"][0]["status"], 201, "the call is recorded");
                assert_eq!(exec["steps"][3]["result"]["state"], "APPROVED");
                assert_eq!(exec["steps"][0]["result"]["state"], "PENDING");
            }
            "transfer: insufficient balance reverses the deposit" => {
                assert_eq!(compensated_steps(&events), ["deposit"]);
                assert!(exec["steps"][1]["error"]["message"].as_str().unwrap().contains("insufficient balance"));
                assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "DEPOSIT_REVERSED");
            }
            "concert: a reserved seat cannot be booked twice" => {
                assert_eq!(exec["steps"][0]["error"]["message"], "seat A12 is already reserved");
            }
            "concert: seat booked and reported" => {
                let key = format!("{id}/notify_data_platform");
                let kept = standins.data_platform.events();
                let event = kept.iter().find(|e| e.idempotency_key == key).expect("the booking event");
                assert_eq!(
                    (event.body["seat"].as_str(), event.body["execution_id"].as_str()),
                    (Some("A12"), Some(id.as_str()))
                );
                assert_eq!(exec["steps"][2]["result"]["event"], event.id.as_str());
            }
            "concert: data platform down, booking still completes" => {
                assert_eq!(exec["steps"][2]["status"], "failed");
                assert_eq!(exec["steps"][2]["attempts"], 2);
                let key = format!("{id}/notify_data_platform");
                let tries = standins.data_platform.requests();
                let tries: Vec<u16> = tries
                    .iter()
                    .filter(|r| r.idempotency_key.as_deref() == Some(key.as_str()))
                    .map(|r| r.status)
                    .collect();
                assert_eq!(tries, [503, 503], "both attempts reached it, under one key");
                assert!(compensated_steps(&events).is_empty());
            }
            "concert: payment failed releases the seat" => {
                assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "SEAT_RELEASED");
                assert_eq!(exec["steps"][2]["status"], "skipped");
            }
            "retry then fail: gateway down for 5 tries, 3 allowed" => {
                assert_eq!(exec["steps"][1]["attempts"], 3);
                let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "step_failed").collect();
                assert_eq!(failures.len(), 3);
                // Retries wait the configured backoff (1 s), recorded as durable timers.
                for pair in failures.windows(2) {
                    let retry_at = pair[0]["retry_at_unix_ms"].as_u64().unwrap();
                    assert!(retry_at >= pair[0]["at"].as_u64().unwrap() + 1000);
                }
                assert!(failures[2]["retry_at_unix_ms"].is_null(), "giving up");
                assert_eq!(compensated_steps(&events), ["create_order"]);
                assert_eq!(answers(&format!("{id}/payment")), [503, 503, 503]);
                assert_eq!(charges_under(&format!("{id}/payment")), 0);
            }
            "retry then succeed: gateway back on the third try" => {
                assert_eq!(exec["steps"][1]["attempts"], 3);
                // Three tries under the step's one key, one charge.
                assert_eq!(answers(&format!("{id}/payment")), [503, 503, 201]);
                assert_eq!(charges_under(&format!("{id}/payment")), 1);
            }
            t if t.starts_with("choreography:") => {
                // The wait was ended by the event the customer saga's step emitted.
                let signal = events.iter().find(|e| e["type"] == "signal_received").expect("a signal");
                let key = s.key.as_deref().unwrap();
                let (_, customers) = api
                    .call(reqwest::Method::GET, &format!("/v1/executions?key={key}&saga=customer-credit"), None)
                    .await;
                let customer = customers["executions"][0]["id"].as_str().expect("the customer execution").to_owned();
                assert_eq!(signal["signal_id"], format!("{customer}:reserve_credit:execute:0"));
                let answer = &api.wait_terminal(&customer).await["steps"][0]["result"];
                let reserved = s.expect == "completed";
                assert_eq!(
                    (&answer["reserved"], &signal["topic"]),
                    (
                        &Value::Bool(reserved),
                        &Value::from(if reserved { "CreditReserved" } else { "CreditLimitExceeded" })
                    )
                );
                if !reserved {
                    assert_eq!(compensated_steps(&events), ["create_order"]);
                    assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "REJECTED");
                }
            }
            _ => {}
        }
    }
    // The state the scenarios leave: balances, orders, seats.
    let client = reqwest::Client::new();
    for check in &all.state {
        let held = check.verify(&client, &host.url).await.unwrap();
        assert_eq!(held, Ok(()), "{}", check.name());
    }
    // The gateway's ledger against every execution: one charge per paid step, one refund per
    // refunded payment, each under the host's idempotency key for that step and side.
    for check in gateway_checks(&ledger(), &views) {
        assert_eq!(check.outcome, Ok(()), "{}", check.name);
    }
    // The seat events reached the data platform's webhook through the subscription, signed
    // (the stand-in refuses a bad signature), each once by id and with the seat as key.
    let (_, log) = api.call(reqwest::Method::GET, "/v1/events?limit=1000", None).await;
    let mut seat_events: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| matches!(e["topic"].as_str(), Some("SeatReserved" | "SeatReleased")))
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seat_events.len(), 5, "4 seats reserved, 1 released: {log}");
    let start = std::time::Instant::now();
    let mut delivered: Vec<String> = Vec::new();
    while delivered.len() < seat_events.len() && start.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        delivered = standins.data_platform.delivered().into_iter().map(|d| d.id).collect();
    }
    seat_events.sort();
    delivered.sort();
    assert_eq!(delivered, seat_events);
    // Correlation: every step and compensation of one execution carried its id.
    let first_order = ran.iter().position(|s| s.title == "order: paid and shipped").unwrap();
    let shipped = api.execution(&ids[first_order]).await;
    assert!(shipped["steps"][2]["result"]["tracking"].as_str().unwrap().ends_with(ids[first_order].as_str()));
}
