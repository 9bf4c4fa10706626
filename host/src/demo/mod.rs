//! `sagahost demo`: the example sagas of `plugins/`, run end to end against an embedded host
//! over its real HTTP API. The example plugins are built by `build.rs` and embedded here; the
//! services they call over HTTP are local stand-ins ([`standins`]), and [`report`] shows what
//! those saw beside what the host recorded.
#![allow(clippy::print_stdout)]

pub mod report;
pub mod standins;

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::server::{Host, HostConfig};
use standins::StandIns;

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
    example!("accounts"),
    example!("seat"),
    example!("notify"),
    example!("customer"),
];

/// Every example saga definition: (name, JSON). Those that call a service name it by a
/// placeholder (`${PAYMENT_GATEWAY_URL}`, `${DATA_PLATFORM_URL}`): [`StandIns::fill`] them.
pub const SAGAS: &[(&str, &str)] = &[
    ("order", include_str!("../../../plugins/sagas/order.json")),
    ("open-account", include_str!("../../../plugins/sagas/open-account.json")),
    ("transfer", include_str!("../../../plugins/sagas/transfer.json")),
    ("concert", include_str!("../../../plugins/sagas/concert.json")),
    ("payment-retry", include_str!("../../../plugins/sagas/payment-retry.json")),
    ("order-credit", include_str!("../../../plugins/sagas/order-credit.json")),
    ("customer-credit", include_str!("../../../plugins/sagas/customer-credit.json")),
    ("customer-release", include_str!("../../../plugins/sagas/customer-release.json")),
];

/// Every example subscription: (name, JSON), placeholders as in [`SAGAS`].
pub const SUBSCRIPTIONS: &[(&str, &str)] =
    &[("data-platform", include_str!("../../../plugins/sagas/data-platform.subscription.json"))];

/// The scenarios the demo runs (one per path of each example saga) and the plugin state they
/// must leave behind.
pub const SCENARIOS: &str = include_str!("../../../plugins/sagas/scenarios.json");

/// [`SCENARIOS`], parsed.
#[derive(Deserialize, Debug, Clone)]
pub struct Scenarios {
    /// Run one after the other; the scenarios of one stage run concurrently.
    pub stages: Vec<Vec<Scenario>>,
    /// Plugin state expected once every stage is over.
    pub state: Vec<StateCheck>,
}

impl Scenarios {
    /// The scenarios shipped with the examples.
    pub fn examples() -> Self {
        serde_json::from_str(SCENARIOS).expect("plugins/sagas/scenarios.json is valid")
    }
}

/// One expected entry of a plugin's state.
#[derive(Deserialize, Debug, Clone)]
pub struct StateCheck {
    /// Plugin name.
    pub plugin: String,
    /// Collection.
    pub collection: String,
    /// Key.
    pub key: String,
    /// Only this field of the (JSON) value; the whole value when absent.
    #[serde(default)]
    pub field: Option<String>,
    /// Expected value (of the field).
    pub value: Value,
}

impl StateCheck {
    /// Fetches the entry from the host at `url` and compares; `Err` says what was found instead.
    pub async fn verify(&self, client: &reqwest::Client, url: &str) -> anyhow::Result<Result<(), String>> {
        let target = reqwest::Url::parse_with_params(
            &format!("{url}/v1/plugins/{}/state", self.plugin),
            [("collection", self.collection.as_str()), ("prefix", self.key.as_str())],
        )?;
        let listed: Value = client.get(target).send().await?.error_for_status()?.json().await?;
        let entry = listed["entries"].as_array().into_iter().flatten().find(|e| e["key"] == self.key.as_str());
        let Some(json) = entry.map(|e| &e["json"]) else { return Ok(Err("no such entry".into())) };
        let found = match &self.field {
            Some(f) => &json[f.as_str()],
            None => json,
        };
        Ok(if *found == self.value { Ok(()) } else { Err(format!("found {found}")) })
    }

    /// `plugin:collection/key[.field]`.
    pub fn name(&self) -> String {
        let field = self.field.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
        format!("{}:{}/{}{field}", self.plugin, self.collection, self.key)
    }
}

/// One scenario of [`SCENARIOS`].
#[derive(Deserialize, Debug, Clone)]
pub struct Scenario {
    /// Saga to trigger.
    pub saga: String,
    /// What it shows.
    pub title: String,
    /// Trigger input.
    pub input: Value,
    /// Its business key (`Execution-Key`).
    #[serde(default)]
    pub key: Option<String>,
    /// Expected final status.
    pub expect: String,
}

/// Uploads every example plugin and saga to the host at `url`, the sagas pointing at `standins`.
pub async fn install(client: &reqwest::Client, url: &str, standins: &StandIns) -> anyhow::Result<()> {
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
    for (name, value) in standins.secrets() {
        let resp =
            client.put(format!("{url}/v1/secrets/{name}")).json(&serde_json::json!({ "value": value })).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("storing secret {name}: {status} {body}");
        }
        let what = match name {
            standins::GATEWAY_KEY_SECRET => {
                "the gateway's API key: write-only, read by the payment step, redacted from events"
            }
            _ => "the key the data platform's webhook checks the subscription's signatures with",
        };
        println!("  secret {name:<18} {what}");
    }
    for (name, json) in SAGAS {
        let definition = standins.fill(json)?;
        let resp = client.put(format!("{url}/v1/sagas/{name}")).body(definition).send().await?;
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
    for (name, json) in SUBSCRIPTIONS {
        let doc = standins.fill(json)?;
        let resp = client.put(format!("{url}/v1/subscriptions/{name}")).body(doc).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("subscribing {name}: {status} {body}");
        }
        println!("  subscription {name}: {} → {}", body["topics"], body["webhook"]["url"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// What running the scenarios gave: each scenario with its execution as it ended, and how many
/// scenarios and state checks held, out of how many.
pub struct Outcome {
    /// Every scenario run, in order, with its execution (`GET /v1/executions/{id}`).
    pub runs: Vec<(Scenario, Value)>,
    /// Scenarios and checks that held.
    pub ok: usize,
    /// Scenarios and checks.
    pub total: usize,
}

/// Runs every stage of scenarios, then checks the state they left; prints each outcome.
pub async fn run_scenarios(client: &reqwest::Client, url: &str) -> anyhow::Result<Outcome> {
    let all = Scenarios::examples();
    let mut outcome = Outcome { runs: Vec::new(), ok: 0, total: 0 };
    for stage in &all.stages {
        for (scenario, exec) in stage.iter().zip(run_stage(client, url, stage).await?) {
            outcome.ok += usize::from(exec["status"] == scenario.expect.as_str());
            outcome.total += 1;
            outcome.runs.push((scenario.clone(), exec));
        }
    }
    println!("\nplugin state afterwards:");
    for check in &all.state {
        let held = check.verify(client, url).await?;
        outcome.ok += usize::from(held.is_ok());
        outcome.total += 1;
        match held {
            Ok(()) => println!("✔ {} = {}", check.name(), check.value),
            Err(found) => println!("✘ {} should be {}: {found}", check.name(), check.value),
        }
    }
    Ok(outcome)
}

/// Runs one stage's scenarios, prints how each ended and answers their executions.
async fn run_stage(client: &reqwest::Client, url: &str, scenarios: &[Scenario]) -> anyhow::Result<Vec<Value>> {
    // Triggered together, reported in order: executions run concurrently.
    let runs = scenarios.iter().map(|s| async move {
        let mut request = client.post(format!("{url}/v1/sagas/{}/executions?wait=30000", s.saga)).json(&s.input);
        if let Some(key) = &s.key {
            request = request.header("Execution-Key", key);
        }
        let resp = request.send().await?;
        let exec: Value = resp.json().await?;
        let id = exec["id"].as_str().context("execution id")?.to_owned();
        let events: Value = client.get(format!("{url}/v1/executions/{id}/events")).send().await?.json().await?;
        anyhow::Ok((exec, events))
    });
    let results = futures::future::join_all(runs).await;
    let mut execs = Vec::new();
    for (s, result) in scenarios.iter().zip(results) {
        let (exec, events) = result?;
        print_run(s, &exec, &events);
        execs.push(exec);
    }
    Ok(execs)
}

/// One scenario's outcome: status, each step, the event order.
fn print_run(s: &Scenario, exec: &Value, events: &Value) {
    let status = exec["status"].as_str().unwrap_or("?");
    println!("\n{} {}  →  {status}", if status == s.expect { "✔" } else { "✘" }, s.title);
    println!("  execution {}", exec["id"].as_str().unwrap_or("?"));
    for step in exec["steps"].as_array().into_iter().flatten() {
        // A wait step's result is the event that ended it: its topic.
        let shown = |v: &Value| {
            v.get("state").or(v.get("message")).or(v.get("topic")).map(|x| x.to_string()).unwrap_or_default()
        };
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
            line += &format!("  error {}: {}", e["kind"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
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

/// Every event the steps emitted, from the host's topic log: the choreography's, which started
/// or resumed sagas, and the seat events the subscription delivers.
async fn print_topic_log(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let log: Value = client.get(format!("{url}/v1/events?limit=1000")).send().await?.error_for_status()?.json().await?;
    let events = log["events"].as_array().cloned().unwrap_or_default();
    println!("\ntopic log (every event the steps emitted):");
    for e in &events {
        let source = &e["source"];
        println!(
            "  {:<20} key {:<7} from {}/{}  {}",
            e["topic"].as_str().unwrap_or(""),
            e["key"].as_str().unwrap_or("-"),
            source["saga"].as_str().unwrap_or("outside"),
            source["step"].as_str().unwrap_or("-"),
            e["payload"]
        );
    }
    Ok(events)
}

/// Waits (up to 10 s) until the data platform's webhook has every event of `log` the example
/// subscription asks for.
async fn webhook_check(standins: &StandIns, log: &[Value]) -> report::Check {
    let wanted: Vec<&str> = log
        .iter()
        .filter(|e| matches!(e["topic"].as_str(), Some("SeatReserved" | "SeatReleased")))
        .filter_map(|e| e["id"].as_str())
        .collect();
    let name = "the data platform's webhook got every seat event, signed";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<String> = standins.data_platform.delivered().into_iter().map(|d| d.id).collect();
        let missing: Vec<&str> = wanted.iter().copied().filter(|id| !got.iter().any(|g| g == id)).collect();
        if missing.is_empty() && !wanted.is_empty() {
            return report::Check { name, outcome: Ok(()) };
        }
        if tokio::time::Instant::now() > deadline {
            let outcome = Err(format!("{} of {} missing: {missing:?}", missing.len(), wanted.len()));
            return report::Check { name, outcome };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole demo: stand-ins and an embedded host on a temporary data directory, install,
/// run, report.
pub async fn run() -> anyhow::Result<()> {
    let standins = StandIns::start().await?;
    let dir = tempfile::tempdir()?;
    let host = Host::start(HostConfig::new(dir.path())).await?;
    let url = host.url();
    println!("sagahost demo: embedded host at {url}, data in {}", dir.path().display());
    println!("stand-ins: local HTTP servers in this process standing in for the services the examples call");
    println!("  payment gateway  {}   (the definitions' ${{PAYMENT_GATEWAY_URL}})", standins.gateway.url());
    println!("  data platform    {}   (the definitions' ${{DATA_PLATFORM_URL}})\n", standins.data_platform.url());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    install(&client, &url, &standins).await?;
    let mut outcome = run_scenarios(&client, &url).await?;
    let log = print_topic_log(&client, &url).await?;
    let delivered = webhook_check(&standins, &log).await;
    let mut checks = report::print(&standins, &outcome.runs);
    match &delivered.outcome {
        Ok(()) => println!("✔ {}", delivered.name),
        Err(problems) => println!("✘ {}: {problems}", delivered.name),
    }
    checks.push(delivered);
    outcome.ok += checks.iter().filter(|c| c.outcome.is_ok()).count();
    outcome.total += checks.len();
    let (ok, total) = (outcome.ok, outcome.total);
    println!("\n{ok} of {total} scenarios and checks ended as expected");
    host.stop().await;
    standins.stop();
    if ok != total {
        bail!("{} scenario(s) or check(s) ended differently than expected", total - ok);
    }
    Ok(())
}
