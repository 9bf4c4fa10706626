//! Hostile plugins next to well-behaved work: every adversarial behaviour fails only its own
//! step, with the kind and a message naming the problem, while 100 normal executions run
//! beside them and all complete.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};

const HOSTILE: [(&str, &str, &str); 11] = [
    ("loop", "timeout", "time limit"),
    ("oom", "limit", "memory limit of 16 MiB"),
    ("stack_overflow", "trap", "trapped"),
    ("panic", "trap", "plugin panicked: testkit was told to panic"),
    ("trap", "trap", "trapped"),
    ("huge_output", "limit", "output limit"),
    ("not_json", "trap", "not JSON"),
    ("log_flood", "limit", "log limit"),
    // Sandbox escapes do not fail: they find nothing (checked in the results).
    ("read_file", "", ""),
    ("read_env", "", ""),
    ("open_socket", "", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_plugins_in_parallel_with_100_normal_executions() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--max-memory-mib", "16", "--max-output-kib", "256"]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga(
        "hostile",
        &testkit_saga(&["setup", "evil"], json!({"timeout_ms": 1500, "retry": {"max_attempts": 1}})),
    )
    .await;
    api.put_saga("normal", &testkit_saga(&["one", "two", "three"], json!({}))).await;

    let mut hostile = Vec::new();
    for (behavior, _, _) in HOSTILE {
        hostile.push(api.trigger("hostile", &json!({"behaviors": {"evil": behavior}}), None).await);
    }
    let mut normal = Vec::new();
    for i in 0..100 {
        normal.push(api.trigger("normal", &json!({"n": i}), None).await);
        if i == 50 {
            // The host answers while hostile guests run.
            let (status, _) = api.call(reqwest::Method::GET, "/healthz", None).await;
            assert_eq!(status, 200);
        }
    }
    for id in &normal {
        let exec = api.wait_terminal(id).await;
        assert_eq!(exec["status"], "completed", "{exec}");
    }
    for ((behavior, kind, needle), id) in HOSTILE.iter().zip(&hostile) {
        let exec = api
            .wait_for(id, Duration::from_secs(60), |e| {
                matches!(e["status"].as_str(), Some("completed" | "compensated"))
            })
            .await;
        let evil = &exec["steps"][1];
        if kind.is_empty() {
            assert_eq!(exec["status"], "completed", "{behavior}: {exec}");
            let found = evil["result"].to_string();
            assert!(
                found.contains("Err") || found.contains("\"env_vars\":0"),
                "{behavior} escaped the sandbox: {found}"
            );
        } else {
            assert_eq!(exec["status"], "compensated", "{behavior}: {exec}");
            assert_eq!(evil["error"]["kind"], *kind, "{behavior}: {exec}");
            let message = evil["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{behavior}: {needle:?} not in {message:?}");
            // Only its own step failed.
            assert_eq!(exec["steps"][0]["status"], "compensated");
        }
    }
    // And after all that, the host still serves.
    let (status, exec) =
        api.call(reqwest::Method::POST, "/v1/sagas/normal/executions?wait=10000", Some(b"{}".to_vec())).await;
    assert_eq!((status, exec["status"].as_str()), (200, Some("completed")));
}

/// A plugin's log text (through the SDK and through stderr) cannot forge a line of the host's
/// log, in either log format: control characters come out escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_text_cannot_forge_log_lines() {
    for format in ["text", "json"] {
        let (_tmp, dir) = data_dir();
        let host = HostProcess::start(&dir, &["--log-format", format]);
        let api = Api::new(&host.url);
        api.put_plugin("testkit", wasm("testkit")).await;
        api.put_saga("talk", &testkit_saga(&["say"], json!({}))).await;
        let forged = "hello\nERROR sagahost: forged-line\r\u{1b}[2K";
        let id = api.trigger("talk", &json!({"behaviors": {"say": format!("log_text:{forged}")}}), None).await;
        assert_eq!(api.wait_terminal(&id).await["status"], "completed");
        drop(host);
        let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
        let mut seen = 0;
        for line in log.lines() {
            assert!(!line.starts_with("ERROR sagahost: forged-line"), "{format}: forged line in the log:\n{log}");
            assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{format}: raw control character in {line:?}");
            if line.contains("forged-line") {
                seen += 1;
                // Each line is a record of its own, attributed to the plugin's attempt.
                assert!(line.contains(&id), "{format}: an unattributed line: {line:?}");
                if format == "json" {
                    serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                }
            }
        }
        assert_eq!(seen, 2, "{format}: one line from the SDK log, one from stderr:\n{log}");
    }
}
