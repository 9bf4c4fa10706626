//! A plugin written outside the project against the guest SDK: scaffolded in a temporary
//! directory, built with a plain `cargo build --release --target wasm32-wasip2`, uploaded and
//! run inside a saga defined over HTTP.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir};

const LIB: &str = r#"
use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Greeting { name: String }

#[derive(Serialize, Deserialize)]
struct Greeted { text: String, attempt: u32 }

struct Greeter;

impl Step for Greeter {
    type Input = Greeting;
    type Output = Greeted;
    type Undone = String;

    fn execute(ctx: &Context, step: StepInput<Greeting>) -> Result<Greeted, StepError> {
        if step.input.name.is_empty() {
            return Err(StepError::permanent("nobody to greet"));
        }
        saga_guest::info!("greeting {}", step.input.name);
        Ok(Greeted { text: format!("hello, {}", step.input.name), attempt: ctx.attempt })
    }

    fn compensate(_ctx: &Context, undo: Compensation<Greeting, Greeted>) -> Result<String, StepError> {
        Ok(format!("unsaid: {}", undo.result.map(|g| g.text).unwrap_or_default()))
    }
}

export_step!(Greeter);
"#;

/// The crate a plugin author would have: `sagahost new-plugin`'s layout, their own code.
fn scaffold(dir: &Path) {
    sagahost::cli::new_plugin("greeter", dir, &sagahost::cli::default_sdk_path(), sagahost::cli::Template::State)
        .unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB).unwrap();
    // Reuse the lock file of the project's plugins so the same dependency versions are chosen.
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_plugin_builds_uploads_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("greeter");
    scaffold(&crate_dir);
    // The project's plugin target dir already holds the SDK's dependencies, compiled.
    let target_dir = Path::new(env!("SAGAHOST_PLUGIN_DIR")).ancestors().nth(2).unwrap().to_path_buf();
    let out = Command::new(env!("CARGO"))
        .current_dir(&crate_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wasm = std::fs::read(target_dir.join("wasm32-wasip2/release/greeter.wasm")).unwrap();

    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let (status, meta) = api.call(reqwest::Method::PUT, "/v1/plugins/greeter/0.1.0", Some(wasm)).await;
    assert_eq!(status, 201, "{meta}");
    let def = json!({"steps": [
        {"name": "greet", "plugin": "greeter@0.1.0"},
        {"name": "fail", "plugin": "greeter@0.1.0", "compensation": null}
    ]});
    api.put_saga("greet", &def).await;
    let id = api.trigger("greet", &json!({"name": "world"}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][0]["result"]["text"], "hello, world");

    let id = api.trigger("greet", &json!({"name": ""}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    assert_eq!(exec["steps"][0]["error"]["message"], "nobody to greet");
}
