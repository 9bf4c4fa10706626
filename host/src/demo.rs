//! `sagahost demo`: the example sagas of `plugins/`, run end to end against an embedded host
//! over its real HTTP API. The example plugins are built by `build.rs` and embedded here.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::server::{Host, HostConfig};

/// An example plugin, embedded at build time.
pub struct ExamplePlugin {
    /// Name.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

macro_rules! example {
    ($name:literal) => {
        ExamplePlugin {
            name: $name,
            version: "1.0.0",
            wasm: include_bytes!(concat!(env!("SAGAHOST_PLUGIN_DIR"), "/", $name, ".wasm")),
        }
    };
}

/// Every example plugin.
pub const PLUGINS: &[ExamplePlugin] = &[
    example!("order"),
    example!("payment"),
    example!("shipping"),
    example!("deposit"),
    example!("withdraw"),
    example!("seat"),
    example!("notify"),
];

/// Every example saga definition: (name, JSON).
pub const SAGAS: &[(&str, &str)] = &[
    ("order", include_str!("../../plugins/sagas/order.json")),
    ("transfer", include_str!("../../plugins/sagas/transfer.json")),
    ("concert", include_str!("../../plugins/sagas/concert.json")),
    ("payment-retry", include_str!("../../plugins/sagas/payment-retry.json")),
];

/// The scenarios the demo runs: one per path of each example saga.
pub const SCENARIOS: &str = include_str!("../../plugins/sagas/scenarios.json");

/// One scenario of [`SCENARIOS`].
#[derive(Deserialize, Debug, Clone)]
pub struct Scenario {
    /// Saga to trigger.
    pub saga: String,
    /// What it shows.
    pub title: String,
    /// Trigger input.
    pub input: Value,
    /// Expected final status.
    pub expect: String,
}

/// Uploads every example plugin and saga to the host at `url`.
pub async fn install(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for p in PLUGINS {
        let resp = client.put(format!("{url}/v1/plugins/{}/{}", p.name, p.version)).body(p.wasm).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("uploading plugin {}: {status} {body}", p.name);
        }
        println!(
            "  plugin {:<9} {}  {:>7} bytes  sha256 {}…",
            p.name,
            p.version,
            body["size"],
            body["digest"].as_str().and_then(|d| d.get(..12)).unwrap_or("?")
        );
    }
    for (name, json) in SAGAS {
        let resp = client.put(format!("{url}/v1/sagas/{name}")).body(*json).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("defining saga {name}: {status} {body}");
        }
        println!(
            "  saga   {name:<14} version {}, {} steps",
            body["version"],
            body["definition"]["steps"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

/// Runs every scenario, prints each outcome and returns how many ended as expected.
pub async fn run_scenarios(client: &reqwest::Client, url: &str) -> anyhow::Result<(usize, usize)> {
    let scenarios: Vec<Scenario> = serde_json::from_str(SCENARIOS)?;
    // Triggered together, reported in order: executions run concurrently.
    let runs = scenarios.iter().map(|s| async move {
        let resp =
            client.post(format!("{url}/v1/sagas/{}/executions?wait=30000", s.saga)).json(&s.input).send().await?;
        let exec: Value = resp.json().await?;
        let id = exec["id"].as_str().context("execution id")?.to_owned();
        let events: Value = client.get(format!("{url}/v1/executions/{id}/events")).send().await?.json().await?;
        anyhow::Ok((exec, events))
    });
    let results = futures::future::join_all(runs).await;
    let mut ok = 0;
    for (s, result) in scenarios.iter().zip(results) {
        let (exec, events) = result?;
        let status = exec["status"].as_str().unwrap_or("?");
        let pass = status == s.expect;
        ok += usize::from(pass);
        println!("\n{} {}  →  {status}", if pass { "✔" } else { "✘" }, s.title);
        println!("  execution {}", exec["id"].as_str().unwrap_or("?"));
        for step in exec["steps"].as_array().into_iter().flatten() {
            let shown = |v: &Value| v.get("state").or(v.get("message")).map(|x| x.to_string()).unwrap_or_default();
            let mut line = format!(
                "    {:<22} {:<12} attempts {}",
                step["name"].as_str().unwrap_or(""),
                step["status"].as_str().unwrap_or(""),
                step["attempts"]
            );
            if let Some(r) = step.get("result").filter(|r| !r.is_null()) {
                line += &format!("  result {}", shown(r));
            }
            if let Some(e) = step.get("error").filter(|e| !e.is_null()) {
                line +=
                    &format!("  error {}: {}", e["kind"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
            }
            if let Some(c) = step["compensation"].get("result").filter(|r| !r.is_null()) {
                line += &format!("  undone {}", shown(c));
            }
            println!("{line}");
        }
        let kinds: Vec<String> = events
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| match e["step"].as_str() {
                Some(step) => format!("{}({step})", e["type"].as_str().unwrap_or("")),
                None => e["type"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        println!("  events: {}", kinds.join(" → "));
    }
    Ok((ok, scenarios.len()))
}

/// The whole demo: embedded host on a temporary data directory, install, run, report.
pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = Host::start(HostConfig::new(dir.path())).await?;
    let url = host.url();
    println!("sagahost demo: embedded host at {url}, data in {}\n", dir.path().display());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    install(&client, &url).await?;
    let (ok, total) = run_scenarios(&client, &url).await?;
    println!("\n{ok} of {total} scenarios ended as expected");
    host.stop().await;
    if ok != total {
        bail!("{} scenario(s) ended differently than expected", total - ok);
    }
    Ok(())
}
