//! `bench --store postgres://…`, the fail-over part: two `sagahost serve` processes on one
//! database; executions started on the first wait for a signal; the first is killed (SIGKILL)
//! and the signals are sent to the second, which can drive them only once it has adopted them
//! (after the killed host's lease lapsed). Fail-over time, per execution: from the kill until the
//! execution is recorded completed by the second host.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::NOOP_WASM;

/// What the fail-over run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    /// Executions the killed host was driving (all waiting for a signal).
    pub executions: usize,
    /// The hosts' lease.
    pub lease_ms: u64,
    /// Median time from the kill to an execution completed by the other host, ms.
    pub median_ms: f64,
    /// The longest, ms.
    pub max_ms: f64,
}

/// A `sagahost serve` child process on `url`.
async fn serve(url: &str, lease: Duration) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", url, "--pg-lease-ms"])
        .arg(lease.as_millis().to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sagahost serve")?;
    let stdout = child.stdout.take().context("its standard output")?;
    let line = BufReader::new(stdout).lines().next_line().await?.context("sagahost serve printed nothing")?;
    let addr = line.strip_prefix("sagahost listening on ").context("unexpected first line")?.to_owned();
    Ok((child, addr))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn ok(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

/// Runs `n` waiting executions on a first host, kills it, and measures their fail-over to a
/// second host, both on `url` with leases of `lease`.
pub async fn run(url: &str, lease: Duration, n: usize) -> anyhow::Result<Failover> {
    let http = reqwest::Client::new();
    let (mut first, a) = serve(url, lease).await?;
    let (_second, b) = serve(url, lease).await?;
    ok(http.put(format!("{a}/v1/plugins/noop/1.0.0")).body(NOOP_WASM).send().await?, "uploading").await?;
    let step = |name: &str| json!({"name": name, "plugin": "noop@1.0.0", "compensation": null, "timeout_ms": 5000});
    let def = json!({"steps": [
        step("one"),
        {"name": "wait", "wait_for": {"topics": ["go"], "timeout_ms": 600000}},
        step("two"),
    ]});
    ok(http.put(format!("{a}/v1/sagas/failover")).json(&def).send().await?, "defining").await?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let started =
            ok(http.post(format!("{a}/v1/sagas/failover/executions")).json(&json!({})).send().await?, "triggering")
                .await?;
        ids.push(started["id"].as_str().context("an id")?.to_owned());
    }
    // Every execution waits on the first host.
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = ok(http.get(format!("{a}/v1/executions/{id}/events")).send().await?, "reading").await?;
            let waiting = events
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["type"] == "step_started" && e["step"] == "wait"));
            if waiting {
                break;
            }
            if Instant::now() > deadline {
                bail!("{id} did not reach its wait step");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    first.start_kill()?;
    first.wait().await?;
    let killed_at = now_ms();
    for id in &ids {
        ok(http.post(format!("{b}/v1/executions/{id}/signals/go")).json(&json!({})).send().await?, "signalling")
            .await?;
    }
    let mut took = Vec::with_capacity(n);
    let deadline = Instant::now() + lease * 4 + Duration::from_secs(30);
    for id in &ids {
        loop {
            let exec = ok(http.get(format!("{b}/v1/executions/{id}")).send().await?, "reading").await?;
            if exec["status"] == "completed" {
                took.push(exec["updated_at"].as_u64().unwrap_or(0).saturating_sub(killed_at) as f64);
                break;
            }
            if Instant::now() > deadline {
                bail!("{id} was not driven again in time after the kill");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    took.sort_by(f64::total_cmp);
    Ok(Failover {
        executions: n,
        lease_ms: lease.as_millis() as u64,
        median_ms: took[took.len() / 2],
        max_ms: took[took.len() - 1],
    })
}
