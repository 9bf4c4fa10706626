//! The plugin author's short path: `new-plugin` writes a ready-to-build crate (a step keeping
//! durable state, or with `--http` one calling an HTTP API), and
//! `plugin push` of a crate directory builds it for `wasm32-wasip2` first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where the guest SDK of this build lives (the crate is not on crates.io).
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk")
}

const LIB_RS: &str = r#"//! A saga step plugin. `execute` performs the step; `compensate` undoes it.

use saga_guest::state;
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

/// The execution input this step reads.
#[derive(Deserialize)]
struct Input {
    amount: u64,
}

/// What the step records as its result.
#[derive(Serialize, Deserialize)]
struct Done {
    reference: String,
    state: String,
    total: u64,
}

/// A running total per saga in this plugin's durable state (`totals/{saga}`). The host commits
/// a step's state writes together with its completion, all or nothing, and retries the step if
/// another execution changed the total first: no update is lost or applied twice.
#[derive(Serialize, Deserialize, Default)]
struct Total {
    amount: u64,
}

fn add(saga: &str, amount: i64) -> Result<u64, StepError> {
    let totals = state::collection("totals");
    let mut total = totals.get::<Total>(saga)?.map(|v| v.value).unwrap_or_default();
    total.amount = total.amount.saturating_add_signed(amount);
    totals.set(saga, &total)?;
    Ok(total.amount)
}

struct MyStep;

impl Step for MyStep {
    type Input = Input;
    type Output = Done;
    type Undone = Done;

    fn execute(ctx: &Context, step: StepInput<Input>) -> Result<Done, StepError> {
        if step.input.amount == 0 {
            return Err(StepError::permanent("amount must be positive"));
        }
        saga_guest::info!("{} for {}", ctx.step, step.input.amount);
        let total = add(&ctx.saga, step.input.amount as i64)?;
        // ctx.idempotency_key is stable across retries and restarts: hand it to other systems.
        Ok(Done { reference: ctx.idempotency_key.clone(), state: "DONE".into(), total })
    }

    fn compensate(ctx: &Context, undo: Compensation<Input, Done>) -> Result<Done, StepError> {
        // undo.result is None when execute's outcome is unknown (it timed out or trapped):
        // then its state writes were not committed either, so there is nothing to subtract.
        let Some(done) = undo.result else {
            return Ok(Done { reference: ctx.idempotency_key.clone(), state: "NOTHING_TO_UNDO".into(), total: 0 });
        };
        let total = add(&ctx.saga, -(undo.input.amount as i64))?;
        Ok(Done { reference: done.reference, state: "UNDONE".into(), total })
    }
}

export_step!(MyStep);
"#;

const HTTP_LIB_RS: &str = r#"//! A saga step plugin that calls an HTTP API. `execute` creates a charge; `compensate`
//! deletes it. The API's origin must be granted in the step's `allow_http` (saga.json).

use std::time::Duration;

use saga_guest::http;
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

/// The execution input this step reads.
#[derive(Deserialize)]
struct Input {
    amount: u64,
    /// Where the API is, e.g. "http://127.0.0.1:9400".
    api: String,
}

/// What the step sends.
#[derive(Serialize)]
struct NewCharge<'a> {
    amount: u64,
    reference: &'a str,
}

/// What the API answers (other fields are ignored).
#[derive(Deserialize)]
struct Charge {
    id: String,
}

/// What the step records as its result.
#[derive(Serialize, Deserialize)]
struct Done {
    charge_id: String,
    state: String,
}

struct MyStep;

impl Step for MyStep {
    type Input = Input;
    type Output = Done;
    type Undone = Done;

    fn execute(ctx: &Context, step: StepInput<Input>) -> Result<Done, StepError> {
        if step.input.amount == 0 {
            return Err(StepError::permanent("amount must be positive"));
        }
        // 5xx, 429, connection failures and the timeout are retryable (the step's retry policy
        // runs it again); other 4xx and an answer that does not decode are permanent. The host
        // adds an Idempotency-Key header, the same on every attempt, so the API can de-duplicate.
        let charge: Charge = http::post(&format!("{}/charges", step.input.api))
            .timeout(Duration::from_secs(5))
            .json(&NewCharge { amount: step.input.amount, reference: &ctx.idempotency_key })
            .send_json()?;
        saga_guest::info!("charged {} as {}", step.input.amount, charge.id);
        Ok(Done { charge_id: charge.id, state: "CHARGED".into() })
    }

    fn compensate(_ctx: &Context, undo: Compensation<Input, Done>) -> Result<Done, StepError> {
        // undo.result is None when execute's outcome is unknown (it timed out or trapped): the
        // charge may exist, but we do not know its id. A real API would be asked by reference.
        let Some(done) = undo.result else {
            return Ok(Done { charge_id: String::new(), state: "NOTHING_TO_UNDO".into() });
        };
        let response = http::delete(&format!("{}/charges/{}", undo.input.api, done.charge_id))
            .timeout(Duration::from_secs(5))
            .send()?;
        // Overriding the default mapping: a charge that is already gone is undone.
        if response.status() != 404 {
            response.error_for_status()?;
        }
        Ok(Done { charge_id: done.charge_id, state: "REFUNDED".into() })
    }
}

export_step!(MyStep);
"#;

/// What the scaffolded step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Keeps a running total in the plugin's durable state.
    State,
    /// Calls an HTTP API with `saga_guest::http` (granted in `saga.json`).
    Http,
}

/// The origin the HTTP template's `saga.json` grants and its example input names.
pub const HTTP_EXAMPLE_API: &str = "http://127.0.0.1:9400";

/// Writes a new plugin crate called `name` into `dir`.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Path, template: Template) -> anyhow::Result<()> {
    crate::domain::ids::check_name("plugin name", name)?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = sdk.canonicalize().with_context(|| format!("guest SDK not found at {}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
saga-guest = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

# A small component: ~100 KB instead of megabytes.
[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1
panic = "abort"

[workspace]
"#,
        sdk = sdk.display().to_string()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    let (lib, grant, timeout_ms) = match template {
        Template::State => (LIB_RS, String::new(), 2000),
        Template::Http => (HTTP_LIB_RS, format!(r#" "allow_http": ["{HTTP_EXAMPLE_API}"],"#), 10000),
    };
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    let saga = format!(
        r#"{{
  "deadline_ms": 60000,
  "steps": [
    {{ "name": "{name}", "plugin": "{name}@0.1.0", "timeout_ms": {timeout_ms},{grant}
      "retry": {{ "max_attempts": 3, "initial_backoff_ms": 500, "multiplier": 2.0, "max_backoff_ms": 5000 }} }}
  ]
}}
"#
    );
    std::fs::write(dir.join("saga.json"), saga)?;
    std::fs::write(dir.join(".gitignore"), "target/\n")?;
    Ok(())
}

/// Builds the plugin crate in `dir` for `wasm32-wasip2` (release) and returns its `.wasm`.
pub fn build_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} is not a crate directory (no Cargo.toml)", dir.display());
    }
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo (is the Rust toolchain installed?)")?;
    if !out.status.success() {
        bail!("building {} failed (try `rustup target add wasm32-wasip2`)", dir.display());
    }
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" {
            for f in msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    wasm.context("cargo built no .wasm: is the crate a cdylib?")
}
