//! Step configuration (docs/definitions.md, `config`): plugins read the definition's named
//! values through the standard `wasi:config/store` interface, on both sides of a step.

use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_its_config_through_wasi_config() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    let def = json!({"steps": [
        {"name": "read", "plugin": "testkit@1.0.0", "config": {"gateway_url": "https://gw.example", "region": "eu"}},
        {"name": "fail", "plugin": "testkit@1.0.0", "compensation": null}
    ]});
    api.put_saga("configured", &def).await;
    let (_, stored) = api.call(reqwest::Method::GET, "/v1/sagas/configured", None).await;
    assert!(stored.to_string().contains("gw.example"), "the stored definition keeps config: {stored}");
    let input = json!({
        "behaviors": {"read": "config:gateway_url", "fail": "permanent"},
        "compensations": {"read": "config:"},
    });
    let id = api.trigger("configured", &input, None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    let step = &exec["steps"][0];
    assert_eq!(step["result"]["config"], "https://gw.example");
    assert_eq!(step["compensation"]["result"]["config"], json!({"gateway_url": "https://gw.example", "region": "eu"}));
}
