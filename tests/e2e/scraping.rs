//! The real binary as a scraper and a careless client meet it: `/metrics` in the format the
//! `Accept` header asks for, behind `--metrics-token` (from the environment too, never blank),
//! and a trigger sent as a form (what `curl -d` does) refused with 415.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{HostProcess, data_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_in_either_format_behind_their_own_token() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--admin-token", "admin-secret", "--metrics-token", "scrape-secret"]);
    let http = reqwest::Client::new();
    let metrics = format!("{}/metrics", host.url);

    let refused = http.get(&metrics).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let scrape = |token: &'static str, accept: Option<&'static str>| {
        let mut req = http.get(&metrics).header("authorization", format!("bearer {token}"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
            (kind, resp.text().await.unwrap())
        }
    };
    let (kind, openmetrics) = scrape("scrape-secret", None).await;
    assert!(kind.starts_with("application/openmetrics-text; version=1.0.0"), "{kind}");
    assert!(openmetrics.ends_with("# EOF\n"));
    let (kind, prometheus) = scrape("admin-secret", Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2")).await;
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert!(!prometheus.contains("# EOF") && prometheus.contains("# TYPE sagahost_instances_in_use gauge"));
    // The same samples under the same names (their values may have moved between the scrapes).
    let names = |text: &str| -> Vec<String> {
        let samples = text.lines().filter(|l| !l.starts_with('#'));
        samples.map(|l| l.split(['{', ' ']).next().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&openmetrics), names(&prometheus));
    assert!(!names(&openmetrics).is_empty());
}

#[test]
fn a_blank_metrics_token_in_the_environment_is_refused_at_start() {
    let (_tmp, dir) = data_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("SAGAHOST_METRICS_TOKEN", "  ")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve started with a blank SAGAHOST_METRICS_TOKEN");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("must not be empty") && stderr.contains("metrics-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_sent_as_a_form_is_refused() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sagas/any/executions", host.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
}
