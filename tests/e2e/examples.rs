//! Every example saga, every path: the demo's scenarios, checked in full.

use serde::Deserialize;
use serde_json::Value;

use crate::harness::{Api, HostProcess, assert_gapless, compensated_steps, data_dir, trace, wasm};

#[derive(Deserialize)]
struct Scenario {
    saga: String,
    title: String,
    input: Value,
    expect: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_path_ends_as_expected() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    for p in ["order", "payment", "shipping", "deposit", "withdraw", "seat", "notify"] {
        api.put_plugin(p, wasm(p)).await;
    }
    for (name, json) in [
        ("order", include_str!("../../plugins/sagas/order.json")),
        ("transfer", include_str!("../../plugins/sagas/transfer.json")),
        ("concert", include_str!("../../plugins/sagas/concert.json")),
        ("payment-retry", include_str!("../../plugins/sagas/payment-retry.json")),
    ] {
        api.put_saga(name, &serde_json::from_str(json).unwrap()).await;
    }
    let scenarios: Vec<Scenario> = serde_json::from_str(include_str!("../../plugins/sagas/scenarios.json")).unwrap();
    let mut ids = Vec::new();
    for s in &scenarios {
        ids.push(api.trigger(&s.saga, &s.input, None).await);
    }
    for (s, id) in scenarios.iter().zip(&ids) {
        let exec = api.wait_terminal(id).await;
        assert_eq!(exec["status"], s.expect.as_str(), "{}: {exec}", s.title);
        let events = api.events(id).await;
        assert_gapless(&events);
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
                assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "CANCELLED");
                assert_eq!(exec["steps"][2]["error"]["kind"], "permanent");
                assert_eq!(exec["steps"][3]["status"], "skipped");
            }
            "order: paid and shipped" => {
                assert_eq!(exec["steps"][3]["result"]["state"], "APPROVED");
                assert_eq!(exec["steps"][0]["result"]["state"], "PENDING");
            }
            "transfer: insufficient balance reverses the deposit" => {
                assert_eq!(compensated_steps(&events), ["deposit"]);
                assert!(exec["steps"][1]["error"]["message"].as_str().unwrap().contains("insufficient balance"));
            }
            "concert: data platform down, booking still completes" => {
                assert_eq!(exec["steps"][2]["status"], "failed");
                assert_eq!(exec["steps"][2]["attempts"], 2);
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
            }
            _ => {}
        }
    }
    // Correlation: every step and compensation of one execution carried its id.
    let shipped = api.execution(&ids[0]).await;
    assert!(shipped["steps"][2]["result"]["tracking"].as_str().unwrap().ends_with(ids[0].as_str()));
}
