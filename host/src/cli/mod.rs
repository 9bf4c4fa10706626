//! The client half of the `sagahost` command: one subcommand per API route, plus the plugin
//! author's `new-plugin`. Tables for people, `--json` for scripts, and exit codes that say how
//! a waited-for execution ended (0 completed, 2 compensated, 3 failed, 1 any error).
#![allow(clippy::print_stdout)]

mod client;
mod render;
mod scaffold;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

pub use client::{ApiFailure, Client};
pub use scaffold::{build_plugin, default_sdk_path, new_plugin};

/// Where the host is and how to talk to it.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The host's URL.
    #[arg(long, global = true, env = "SAGAHOST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token (admin token for management commands).
    #[arg(long, global = true, env = "SAGAHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Client subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Upload, list and describe plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Define, list and describe sagas.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Start an execution of a saga.
    Run {
        /// Saga name.
        saga: String,
        /// Input JSON.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// File holding the input JSON.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Wait until the execution ends (at most this many seconds) and show it.
        #[arg(long, num_args = 0..=1, default_missing_value = "300")]
        wait: Option<u64>,
        /// Idempotency key: the same key for the same saga returns the first execution.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show an execution's state.
    Status {
        /// Execution id.
        id: String,
    },
    /// Show an execution's events; `--follow` streams them until it ends.
    Events {
        /// Execution id.
        id: String,
        /// Keep streaming new events until the execution is terminal.
        #[arg(long)]
        follow: bool,
    },
    /// List executions, newest first.
    List {
        /// Only this saga.
        #[arg(long)]
        saga: Option<String>,
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this execution id (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Stop an execution and compensate what completed.
    Cancel {
        /// Execution id.
        id: String,
    },
    /// Retry the stuck compensation of a failed execution.
    Resume {
        /// Execution id.
        id: String,
    },
    /// Write a ready-to-build plugin crate (with an example saga.json).
    NewPlugin {
        /// Plugin (and crate) name.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path of the guest SDK crate.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// `plugin …`.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Upload a `.wasm` file, or build a plugin crate directory and upload the result.
    Push {
        /// Plugin name.
        name: String,
        /// Version (semver).
        version: String,
        /// A `.wasm` file or a crate directory.
        path: PathBuf,
    },
    /// List uploaded plugins.
    List,
    /// Describe one plugin.
    Show {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
    },
    /// List a plugin's durable state (shared by all its versions).
    State {
        /// Plugin name.
        name: String,
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many entries (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `saga …`.
#[derive(Subcommand, Debug)]
pub enum SagaCommand {
    /// Define (or replace with a new version) a saga from a JSON file.
    Apply {
        /// Saga name.
        name: String,
        /// Definition file.
        file: PathBuf,
    },
    /// List sagas.
    List,
    /// Describe one saga.
    Show {
        /// Saga name.
        name: String,
    },
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Exit code for an execution status.
fn exit_code(status: &Value) -> i32 {
    match status.as_str() {
        Some("compensated") => 2,
        Some("failed") => 3,
        _ => 0,
    }
}

/// Shows a spinner on an interactive terminal until `fut` finishes.
async fn with_spinner<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return fut.await;
    }
    let spin = async {
        for frame in ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"].iter().cycle() {
            eprint!("\r{frame} {what}");
            let _ = std::io::stderr().flush();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let out = tokio::select! {
        out = fut => out,
        _ = spin => unreachable!("the spinner never ends"),
    };
    eprint!("\r\x1b[K");
    out
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand, conn: &Connection) -> anyhow::Result<i32> {
    let client = Client::new(&conn.url, conn.token.clone())?;
    match cmd {
        ClientCommand::Plugin(PluginCommand::Push { name, version, path }) => {
            let wasm = if path.is_dir() { build_plugin(&path)? } else { path };
            let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let (status, meta) =
                client.send(client.request(Method::PUT, &format!("/v1/plugins/{name}/{version}")).body(bytes)).await?;
            if conn.json {
                print_json(&meta);
            } else {
                let what = if status.as_u16() == 201 { "uploaded" } else { "already uploaded (same bytes)" };
                println!(
                    "plugin {name}@{version} {what}: {} bytes, sha256 {}",
                    meta["size"],
                    render::cell(&meta["digest"])
                );
            }
        }
        ClientCommand::Plugin(PluginCommand::List) => {
            let v = client.get("/v1/plugins").await?;
            if conn.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            render::cell(&p["name"]),
                            render::cell(&p["version"]),
                            render::cell(&p["size"]),
                            render::cell(&p["digest"]),
                        ]
                    })
                    .collect();
                println!("{}", render::table(&["name", "version", "size", "digest"], &rows));
            }
        }
        ClientCommand::Plugin(PluginCommand::Show { name, version }) => {
            print_json(&client.get(&format!("/v1/plugins/{name}/{version}")).await?)
        }
        ClientCommand::Plugin(PluginCommand::State { name, collection, prefix, limit }) => {
            let mut query = reqwest::Url::parse("http://query/")?;
            query.query_pairs_mut().append_pair("prefix", &prefix).append_pair("limit", &limit.to_string());
            if let Some(c) = &collection {
                query.query_pairs_mut().append_pair("collection", c);
            }
            let v = client.get(&format!("/v1/plugins/{name}/state?{}", query.query().unwrap_or(""))).await?;
            if conn.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let value = e.get("json").map_or_else(
                            || format!("(bytes, base64) {}", render::cell(&e["bytes_base64"])),
                            Value::to_string,
                        );
                        vec![
                            render::cell(&e["collection"]),
                            render::cell(&e["key"]),
                            render::cell(&e["version"]),
                            value,
                        ]
                    })
                    .collect();
                println!("{}", render::table(&["collection", "key", "version", "value"], &rows));
                if v["truncated"] == true {
                    println!("(more entries match: raise --limit or narrow --collection/--prefix)");
                }
            }
        }
        ClientCommand::Saga(SagaCommand::Apply { name, file }) => {
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (status, d) = client.send(client.request(Method::PUT, &format!("/v1/sagas/{name}")).body(body)).await?;
            if conn.json {
                print_json(&d);
            } else {
                let what = if status.as_u16() == 201 { "defined" } else { "updated" };
                println!(
                    "saga {name} {what}: version {}, {} steps",
                    d["version"],
                    d["definition"]["steps"].as_array().map_or(0, Vec::len)
                );
            }
        }
        ClientCommand::Saga(SagaCommand::List) => {
            let v = client.get("/v1/sagas").await?;
            if conn.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["sagas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        let steps: Vec<String> = s["definition"]["steps"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|st| render::cell(&st["name"]))
                            .collect();
                        vec![render::cell(&s["name"]), render::cell(&s["version"]), steps.join(" → ")]
                    })
                    .collect();
                println!("{}", render::table(&["name", "version", "steps"], &rows));
            }
        }
        ClientCommand::Saga(SagaCommand::Show { name }) => print_json(&client.get(&format!("/v1/sagas/{name}")).await?),
        ClientCommand::Run { saga, input, input_file, wait, idempotency_key } => {
            let input = match (input, input_file) {
                (Some(text), _) => text,
                (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
                (None, None) => "{}".into(),
            };
            serde_json::from_str::<Value>(&input).context("--input is not valid JSON")?;
            let path = match wait {
                Some(secs) => format!("/v1/sagas/{saga}/executions?wait={}", secs.min(300) * 1000),
                None => format!("/v1/sagas/{saga}/executions"),
            };
            let mut req = client.request(Method::POST, &path).body(input);
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let (status, body) = with_spinner(&format!("running {saga}"), client.send(req)).await?;
            if conn.json {
                print_json(&body);
            } else if status.as_u16() == 200 {
                println!("{}", render::execution(&body));
            } else {
                println!("execution {} {}", render::cell(&body["id"]), render::cell(&body["status"]));
            }
            if status.as_u16() == 200 {
                return Ok(exit_code(&body["status"]));
            }
        }
        ClientCommand::Status { id } => {
            let e = client.get(&format!("/v1/executions/{id}")).await?;
            if conn.json {
                print_json(&e);
            } else {
                println!("{}", render::execution(&e));
            }
            return Ok(exit_code(&e["status"]));
        }
        ClientCommand::Events { id, follow } => {
            if follow {
                let json = conn.json;
                client
                    .follow(&format!("/v1/executions/{id}/events?follow=true"), |e| {
                        if json { println!("{e}") } else { println!("{}", render::event(&e)) }
                    })
                    .await?;
            } else {
                let v = client.get(&format!("/v1/executions/{id}/events")).await?;
                if conn.json {
                    print_json(&v);
                } else {
                    for e in v.as_array().into_iter().flatten() {
                        println!("{}", render::event(e));
                    }
                }
            }
        }
        ClientCommand::List { saga, status, limit, after } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(saga.map(|s| format!("saga={s}")));
            query.extend(status.map(|s| format!("status={s}")));
            query.extend(after.map(|a| format!("after={a}")));
            let v = client.get(&format!("/v1/executions?{}", query.join("&"))).await?;
            if conn.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["executions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            render::cell(&e["id"]),
                            render::cell(&e["saga"]),
                            render::cell(&e["status"]),
                            render::time(&e["created_at"]),
                            render::cell(&e["version"]),
                        ]
                    })
                    .collect();
                println!("{}", render::table(&["id", "saga", "status", "started", "events"], &rows));
                if let Some(next) = v["next"].as_str() {
                    println!("more: --after {next}");
                }
            }
        }
        ClientCommand::Cancel { id } => {
            let (_, v) = client.send(client.request(Method::POST, &format!("/v1/executions/{id}/cancel"))).await?;
            if conn.json {
                print_json(&v)
            } else {
                println!("execution {id}: cancel requested ({})", render::cell(&v["status"]))
            }
        }
        ClientCommand::Resume { id } => {
            let (_, v) = client.send(client.request(Method::POST, &format!("/v1/executions/{id}/resume"))).await?;
            if conn.json {
                print_json(&v)
            } else {
                println!("execution {id}: resumed ({})", render::cell(&v["status"]))
            }
        }
        ClientCommand::NewPlugin { name, dir, sdk } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            new_plugin(&name, &dir, &sdk.unwrap_or_else(default_sdk_path))?;
            println!("created plugin crate {name} in {}", dir.display());
            println!("next:");
            println!("  sagahost plugin push {name} 0.1.0 {}", dir.display());
            println!("  sagahost saga apply {name} {}", dir.join("saga.json").display());
            println!("  sagahost run {name} --input '{{\"amount\": 42}}' --wait");
        }
    }
    Ok(0)
}
