//! The command line, as a newcomer uses it: scaffold a plugin, push the crate (built on the
//! way), apply its saga, run it and read it back, with tables, JSON and exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{HostProcess, data_dir};

fn sagahost(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(args)
        .env("SAGAHOST_URL", url)
        // Reuse the project's plugin build cache for the scaffolded crate.
        .env("CARGO_TARGET_DIR", Path::new(env!("SAGAHOST_PLUGIN_DIR")).ancestors().nth(2).unwrap())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_new_plugin_to_a_finished_saga_with_the_cli() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let url = host.url.clone();
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("tally");
    let crate_arg = crate_dir.to_str().unwrap();

    let out = sagahost(&url, &["new-plugin", "tally", "--dir", crate_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(crate_dir.join("src/lib.rs").exists() && crate_dir.join("saga.json").exists());

    let out = sagahost(&url, &["plugin", "push", "tally", "0.1.0", crate_arg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("plugin tally@0.1.0 uploaded"), "{}", stdout(&out));

    let out = sagahost(&url, &["saga", "apply", "tally", crate_dir.join("saga.json").to_str().unwrap()]);
    assert!(out.status.success() && stdout(&out).contains("saga tally defined: version 1"), "{out:?}");

    let out = sagahost(&url, &["run", "tally", "--input", r#"{"amount": 5}"#, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = stdout(&out);
    assert!(table.contains("status     completed") && table.contains("reference"), "{table}");

    // A failing run exits non-zero; --json prints the execution.
    let out = sagahost(&url, &["run", "tally", "--input", r#"{"amount": 0}"#, "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(2), "compensated exits 2: {out:?}");
    let exec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(exec["status"], "compensated");
    let id = exec["id"].as_str().unwrap();

    let out = sagahost(&url, &["events", id]);
    assert!(stdout(&out).contains("step_failed"), "{}", stdout(&out));
    let out = sagahost(&url, &["events", id, "--follow"]);
    assert!(
        stdout(&out).trim_end().ends_with("execution_compensated"),
        "follow ends at the terminal event: {}",
        stdout(&out)
    );
    let out = sagahost(&url, &["status", id]);
    assert_eq!(out.status.code(), Some(2));
    let out = sagahost(&url, &["list", "--saga", "tally"]);
    assert!(stdout(&out).lines().count() >= 3, "{}", stdout(&out));
    let out = sagahost(&url, &["plugin", "list"]);
    assert!(stdout(&out).contains("tally"));
    // The template keeps a running total in its durable state: the completed run's 5 only.
    let out = sagahost(&url, &["plugin", "state", "tally", "--collection", "totals"]);
    let listed = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        listed.lines().any(|l| l.starts_with("totals") && l.contains("tally") && l.contains(r#"{"amount":5}"#)),
        "{listed}"
    );
    let out = sagahost(&url, &["plugin", "state", "tally", "--json", "--prefix", "nothing"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], serde_json::json!([]));
    let out = sagahost(&url, &["cancel", id]);
    assert_eq!(out.status.code(), Some(1), "cancel of a terminal execution is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"), "{out:?}");
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SAGAHOST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without an admin token"), "{stderr}");
}

/// Runs `sagahost serve` with `args` and `env` on a fresh directory, expecting it to refuse to
/// start; returns its exit code and stderr. A host that starts anyway is killed and fails the test.
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagahost"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).args(args);
    for var in ["SAGAHOST_TOKEN", "SAGAHOST_ADMIN_TOKEN", "SAGAHOST_CLIENT_TOKEN"] {
        cmd.env_remove(var);
    }
    let mut child = cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} with {env:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.is_empty(), "nothing listened: {}", stdout(&out));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serve_refuses_the_client_token_flag_and_names_the_flags_meant() {
    for args in [&["--token", "s3cret"][..], &["--token=s3cret"], &["--admin-token", "a", "--token", "s3cret"]] {
        let (code, stderr) = serve_refused(args, &[]);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("--admin-token") && stderr.contains("--client-token"), "{stderr}");
        assert!(!stderr.contains("s3cret"), "the token is not echoed: {stderr}");
    }
}

#[test]
fn serve_refuses_the_client_token_variable_without_an_admin_token() {
    for args in [&[][..], &["--client-token", "c"]] {
        let (code, stderr) = serve_refused(args, &[("SAGAHOST_TOKEN", "s3cret")]);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("SAGAHOST_ADMIN_TOKEN") && !stderr.contains("s3cret"), "{stderr}");
    }
}

/// Exit codes 2 and 3 say how an execution ended, so a mistyped command exits 1 like any error.
#[test]
fn usage_errors_exit_1() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_sagahost")).args(args).output().unwrap();
    for args in
        [&["status", "not-an-id"][..], &["list", "--status", "bogus"], &["run", "s", "--input", "{x"], &["nope"]]
    {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "), "{out:?}");
    }
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

#[test]
fn serve_refuses_empty_and_blank_tokens() {
    for (args, env) in [
        (&["--admin-token", "   "][..], &[][..]),
        (&["--admin-token", ""], &[]),
        (&["--client-token", " \t "], &[]),
        (&[], &[("SAGAHOST_ADMIN_TOKEN", "")]),
        (&[], &[("SAGAHOST_CLIENT_TOKEN", "  ")]),
    ] {
        let (code, stderr) = serve_refused(args, env);
        assert_eq!(code, Some(1), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("must not be empty or only whitespace"), "{stderr}");
    }
}

/// With an admin token, the client commands pass it from `SAGAHOST_TOKEN`, and the host takes
/// the scheme in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_flow_from_the_client_to_the_host() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--admin-token", "s3cret"]);
    let list = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagahost"));
        cmd.args(["plugin", "list", "--json"]).env("SAGAHOST_URL", &host.url).env_remove("SAGAHOST_TOKEN");
        if let Some(t) = token {
            cmd.env("SAGAHOST_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = list(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    let out = list(Some("s3cret"));
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, serde_json::json!({ "plugins": [] }));
    for scheme in ["bearer", "BEARER", "Bearer  "] {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/plugins", host.url))
            .header("Authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{scheme:?}");
    }
}

/// The benchmark runs end to end (short phases) and reports every figure: numbers only, no
/// timing is asserted.
#[test]
fn bench_measures_the_raw_limits_and_the_host_and_prints_the_ratio() {
    let run = |json: bool| {
        let mut args = vec!["bench", "--phase-secs", "1", "--concurrency", "2"];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_sagahost")).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        stdout(&out)
    };
    let report: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    for figure in ["raw_instances_per_s", "raw_appends_per_s", "ratio", "ratio_in_process"] {
        assert!(report[figure].as_f64().unwrap() > 0.0, "{figure}: {report}");
    }
    let loads = report["loads"].as_array().unwrap();
    assert_eq!(loads.iter().map(|l| l["via"].as_str().unwrap()).collect::<Vec<_>>(), ["http", "in-process"]);
    for load in loads.iter().chain([&report["half_peak"]]) {
        assert!(load["sagas"].as_u64().unwrap() > 0, "{load}");
        assert!(load["p50_ms"].as_f64().unwrap() > 0.0 && load["cpu_us_per_saga"].as_f64().unwrap() > 0.0, "{load}");
    }
    let table = run(false);
    assert!(table.contains("raw limits") && table.trim_end().lines().last().unwrap().starts_with("ratio: "), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_put_from_standard_input_and_listed_without_values() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let value = "cli-secret-value-9a8b7c";
    let mut put = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["secret", "put", "gateway_key"])
        .env("SAGAHOST_URL", &host.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), format!("{value}\n").as_bytes()).unwrap();
    let out = put.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("secret gateway_key stored (in clear at rest"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(value));

    let out = sagahost(&host.url, &["secret", "list"]);
    assert!(out.status.success() && stdout(&out).contains("gateway_key") && !stdout(&out).contains(value), "{out:?}");
    let out = sagahost(&host.url, &["secret", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["secrets"][0]["name"], "gateway_key");

    let out = sagahost(&host.url, &["secret", "delete", "gateway_key"]);
    assert!(out.status.success() && stdout(&out).contains("secret gateway_key deleted"), "{out:?}");
    let out = sagahost(&host.url, &["secret", "delete", "gateway_key"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stored"), "{out:?}");
}

/// `sagahost subscription …` against a webhook that is down: apply, list (table and JSON),
/// the dead letters it leaves, redrive once it is back, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_managed_from_the_command_line() {
    use std::sync::atomic::Ordering;
    let (receiver, hook) = crate::subscriptions::Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let url = host.url.clone();
    let work = tempfile::tempdir().unwrap();
    let doc = work.path().join("audit.json");
    let retry = serde_json::json!({"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10});
    std::fs::write(&doc, serde_json::json!({"topics": ["*"], "webhook": {"url": hook}, "retry": retry}).to_string())
        .unwrap();

    let out = sagahost(&url, &["subscription", "apply", "audit", doc.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("subscription audit created"), "{}", stdout(&out));
    let out = sagahost(&url, &["publish", "Paid", "--payload", "{}", "--id", "p-1"]);
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    let letters = loop {
        let out = sagahost(&url, &["subscription", "dead-letters", "audit", "--json"]);
        let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
        if letters["dead_letters"].as_array().is_some_and(|l| !l.is_empty()) {
            break letters;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters["dead_letters"][0]["event_id"], "p-1");
    let table = stdout(&sagahost(&url, &["subscription", "list"]));
    assert!(table.contains("audit") && table.contains("1 dead-lettered"), "{table}");

    receiver.down.store(false, Ordering::SeqCst);
    let out = sagahost(&url, &["subscription", "redrive", "audit"]);
    assert!(stdout(&out).contains("1 dead letters of audit will be tried once more"), "{}", stdout(&out));
    receiver.until(1, Duration::from_secs(30)).await;
    let out = sagahost(&url, &["subscription", "delete", "audit"]);
    assert!(out.status.success() && stdout(&out).contains("subscription audit deleted"), "{out:?}");
    let out = sagahost(&url, &["subscription", "show", "audit"]);
    assert!(!out.status.success(), "a deleted subscription is gone");
}
