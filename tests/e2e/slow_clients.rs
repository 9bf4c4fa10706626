//! Slow and abusive clients against the real binary (docs/operations.md, "Slow and abusive
//! clients"): connections that trickle a head or a body, or say nothing, are closed by the
//! server in time while normal traffic keeps being served; a body announced too large is
//! refused before it arrives; the connection limit holds; long responses (Server-Sent Events,
//! `wait`) and kept-alive connections are not cut short.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};
use crate::raw_http::{RawResponse, closed_within, connect, error_lines, exchange, read_response};

/// Every timeout, in the tests that shorten them.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How late past its deadline a close may be seen (a loaded debug host on 2 shared cores).
const MARGIN: Duration = Duration::from_secs(3);
/// A slow client's pace: each byte comes well within the timeout, the whole never does.
const TRICKLE: Duration = Duration::from_millis(500);
const SHORT_TIMEOUTS: [&str; 6] =
    ["--header-read-timeout-secs", "2", "--idle-timeout-secs", "2", "--body-read-timeout-secs", "2"];

#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request head one byte at a time.
    TrickledHead,
    /// Sends a head announcing a body, then the body one byte at a time.
    TrickledBody,
}

const KINDS: [Slow; 3] = [Slow::Silent, Slow::TrickledHead, Slow::TrickledBody];

/// What the server did to one slow connection.
#[derive(Debug)]
struct Outcome {
    kind: Slow,
    /// From the connection's establishment to the server's close.
    closed_after: Option<Duration>,
    answer: Option<RawResponse>,
}

async fn slow_client(url: &str, kind: Slow, give_up: Duration) -> Outcome {
    let (mut rd, mut wr) = connect(url).await.into_split();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let answer = read_response(&mut rd).await;
        let closed = match answer {
            None => Some(Instant::now()),
            Some(_) => closed_within(&mut rd, give_up).await,
        };
        (answer, closed)
    });
    let body = b"{\"input\": \"arriving very slowly\"}".repeat(20);
    let (head, trickled): (Vec<u8>, &[u8]) = match kind {
        Slow::Silent => (Vec::new(), &[]),
        Slow::TrickledHead => {
            (Vec::new(), b"POST /v1/sagas/noop/executions HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n")
        }
        Slow::TrickledBody => {
            let head =
                format!("POST /v1/sagas/noop/executions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
            (head.into_bytes(), &body)
        }
    };
    let _ = wr.write_all(&head).await;
    for byte in trickled {
        if reader.is_finished() || start.elapsed() > give_up {
            break;
        }
        tokio::time::sleep(TRICKLE).await;
        if wr.write_all(&[*byte]).await.is_err() {
            break;
        }
    }
    let (answer, closed) = reader.await.unwrap();
    Outcome { kind, closed_after: closed.map(|at| at - start), answer }
}

/// Checks one slow connection: closed by the deadline plus the margin; a trickled body
/// answered 408 JSON first, anything else never answered.
fn check(outcome: &Outcome) {
    let closed = outcome.closed_after.unwrap_or_else(|| panic!("never closed: {outcome:?}"));
    assert!(closed <= TIMEOUT + MARGIN, "closed after {closed:?}: {outcome:?}");
    match (outcome.kind, &outcome.answer) {
        (Slow::TrickledBody, Some(answer)) => {
            answer.assert_error(408, "request_timeout");
            assert_eq!(answer.header("connection"), Some("close"));
        }
        (Slow::TrickledBody, None) => panic!("a trickled body got no 408: {outcome:?}"),
        (_, None) => {}
        (_, Some(answer)) => panic!("a partial head was answered: {answer:?}"),
    }
}

/// Figures of one run.
#[derive(Debug, Default)]
struct Report {
    slow_closed: usize,
    slow_slowest_close: Duration,
    triggered: usize,
    trigger_failures: Vec<String>,
    latencies: Vec<Duration>,
    completed: usize,
}

impl Report {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: slow connections closed {} (slowest close {:?}); triggers {} ({} failed), latency p50 {:?} p99 {:?} max {:?}; executions completed {}",
            self.slow_closed,
            self.slow_slowest_close,
            self.triggered,
            self.trigger_failures.len(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.latencies.iter().max().copied().unwrap_or_default(),
            self.completed,
        );
    }
}

async fn setup(extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, HostProcess, Api) {
    let (tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[&SHORT_TIMEOUTS[..], extra].concat());
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("noop", &testkit_saga(&["only"], json!({}))).await;
    (tmp, dir, host, api)
}

/// `slow` connections kept open (each replaced when the server closes it, until `run_for` has
/// passed) beside `rate` no-op triggers a second for `run_for`; then every execution is
/// awaited.
async fn load(url: &str, slow: usize, rate: u32, run_for: Duration) -> (Report, Vec<Outcome>) {
    let report = Arc::new(Mutex::new(Report::default()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut slow_tasks = Vec::new();
    for i in 0..slow {
        let (url, outcomes) = (url.to_owned(), outcomes.clone());
        slow_tasks.push(tokio::spawn(async move {
            loop {
                let outcome = slow_client(&url, KINDS[i % KINDS.len()], TIMEOUT + MARGIN * 2).await;
                outcomes.lock().await.push(outcome);
                if start.elapsed() >= run_for {
                    break;
                }
            }
        }));
    }
    // Pooled connections are dropped before the server's idle timeout could race a reuse.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut triggers = Vec::new();
    while start.elapsed() < run_for {
        ticker.tick().await;
        let (http, report, ids) = (http.clone(), report.clone(), ids.clone());
        let trigger = format!("{url}/v1/sagas/noop/executions");
        triggers.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = http.post(trigger).json(&json!({"behaviors": {"only": "ok"}})).send().await;
            let latency = sent.elapsed();
            let failure = match answer {
                Ok(r) if r.status() == 202 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    ids.lock().await.push(body["id"].as_str().unwrap().to_owned());
                    None
                }
                Ok(r) => Some(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Some(e.to_string()),
            };
            let mut report = report.lock().await;
            report.triggered += 1;
            match failure {
                None => report.latencies.push(latency),
                Some(f) => report.trigger_failures.push(f),
            }
        }));
    }
    for t in triggers.into_iter().chain(slow_tasks) {
        t.await.unwrap();
    }
    let api = Api::new(url);
    let ids = ids.lock().await.clone();
    let statuses: Vec<String> = futures::stream::iter(ids)
        .map(|id| {
            let api = api.clone();
            async move { api.wait_terminal(&id).await["status"].as_str().unwrap().to_owned() }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut report = Arc::try_unwrap(report).unwrap().into_inner();
    report.completed = statuses.iter().filter(|s| *s == "completed").count();
    let outcomes = Arc::try_unwrap(outcomes).unwrap().into_inner();
    report.slow_closed = outcomes.iter().filter(|o| o.closed_after.is_some()).count();
    report.slow_slowest_close = outcomes.iter().filter_map(|o| o.closed_after).max().unwrap_or_default();
    (report, outcomes)
}

fn assert_served(report: &Report, dir: &std::path::Path) {
    assert!(report.trigger_failures.is_empty(), "{:?}", report.trigger_failures);
    assert_eq!(report.completed, report.triggered, "{report:?}");
    assert_eq!(error_lines(dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_slow_connections_are_closed_in_time_while_normal_traffic_flows() {
    let (_tmp, dir, host, _api) = setup(&[]).await;
    let (report, outcomes) = load(&host.url, 300, 20, TIMEOUT * 3).await;
    report.print("300 slow connections, 20 triggers/s");
    assert!(outcomes.len() >= 300);
    outcomes.iter().for_each(check);
    assert!(report.triggered >= 100, "{report:?}");
    assert_served(&report, &dir);
}

/// Measured once and reported (docs/operations.md): `cargo test -p sagahost --test e2e
/// slow_clients::sixty_seconds -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 60-second measurement"]
async fn sixty_seconds_of_500_slow_clients_and_200_sagas_a_second() {
    let (_tmp, dir, host, _api) = setup(&[]).await;
    let (report, outcomes) = load(&host.url, 500, 200, Duration::from_secs(60)).await;
    report.print("60 s, 500 slow clients, 200 sagas/s");
    outcomes.iter().for_each(check);
    assert_served(&report, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_is_refused_before_it_arrives() {
    let (_tmp, dir, host, _api) = setup(&["--max-body-kib", "64", "--max-plugin-mib", "1"]).await;
    let url = &host.url;
    let within = Duration::from_secs(1);
    // Two bytes of 99,999,999,999; then nothing, and the connection stays open.
    let lying = b"POST /v1/sagas/noop/executions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}";
    let answer = exchange(url, lying, within).await;
    answer.assert_error(413, "too_large");
    assert_eq!(answer.header("connection"), Some("close"));
    // The head alone, no body byte at all.
    let head = b"PUT /v1/sagas/big HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n";
    exchange(url, head, within).await.assert_error(413, "too_large");
    // Plugin uploads have their own, larger limit: announced past it is refused at once...
    let upload = format!("PUT /v1/plugins/p/1.0.0 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", (1 << 20) + 1);
    exchange(url, upload.as_bytes(), within).await.assert_error(413, "too_large");
    // ...while under it the body is awaited (here it never comes: the body timeout answers).
    let upload = format!("PUT /v1/plugins/p/1.0.0 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 19);
    exchange(url, upload.as_bytes(), TIMEOUT + MARGIN).await.assert_error(408, "request_timeout");
    assert_eq!(error_lines(&dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_connections_wait_for_a_free_one() {
    let (_tmp, dir, host, _api) = setup(&["--max-connections", "50"]).await;
    // Let the setup's pooled connection time out so that the 60 below see all 50 slots.
    tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(connect(&host.url).await);
    }
    let asked = Instant::now();
    let answer = exchange(&host.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", TIMEOUT * 2 + MARGIN).await;
    assert_eq!(answer.status, 200);
    // Served only once the first 50 idle connections had timed out and freed their slots.
    let waited = asked.elapsed();
    assert!(waited >= TIMEOUT - Duration::from_millis(500), "answered after {waited:?}: the limit did not hold");
    for tcp in &mut idle {
        let closed = closed_within(tcp, TIMEOUT * 2 + MARGIN).await.expect("an idle connection stayed open");
        assert!(closed - opened <= TIMEOUT * 2 + MARGIN);
    }
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("connection limit reached"), "{log}");
    assert_eq!(error_lines(&dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_responses_and_kept_alive_connections_are_not_cut() {
    let flags = ["--header-read-timeout-secs", "1", "--idle-timeout-secs", "3", "--body-read-timeout-secs", "1"];
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &flags);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("slow", &testkit_saga(&["nap"], json!({"timeout_ms": 20000}))).await;
    let napping = json!({"behaviors": {"nap": "sleep:5000"}});
    let http = reqwest::Client::new();
    let feed = http.get(format!("{}/v1/executions/feed", host.url)).send().await.unwrap();
    let id = api.trigger("slow", &napping, None).await;
    let follow = http.get(format!("{}/v1/executions/{id}/events?follow=true", host.url)).send().await.unwrap();
    let waited = http.post(format!("{}/v1/sagas/slow/executions?wait=20000", host.url)).json(&napping).send();

    // A kept-alive connection: silent for longer than the header timeout between requests.
    let mut tcp = connect(&host.url).await;
    for _ in 0..2 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut tcp).await.expect("answered").status, 200);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let silent_since = Instant::now() - Duration::from_millis(1_500);
    let closed = closed_within(&mut tcp, Duration::from_secs(3) + MARGIN).await.expect("idle connection kept");
    assert!(closed - silent_since >= Duration::from_millis(2_500), "closed after {:?}", closed - silent_since);

    // `wait` answers after 5 s, past every timeout.
    let waited = waited.await.unwrap();
    assert_eq!(waited.status(), 200);
    assert_eq!(waited.json::<serde_json::Value>().await.unwrap()["status"], "completed");
    let events = follow.text().await.unwrap();
    assert!(events.contains("event: execution_completed"), "{events}");
    // The feed is still open after all that, and told of every change.
    let mut feed = feed;
    let mut seen = String::new();
    while !seen.contains("completed") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), feed.chunk()).await.expect("feed silent");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("feed ended")));
    }
    assert_eq!(error_lines(&dir), Vec::<String>::new());
}
