//! Runs one client command: a call of the typed [`Client`], then the answer shown with its
//! [`Render`] (or, with `--json`, re-serialized).

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::client::{Client, ListQuery, StateQuery, Trigger, Triggered};
use super::commands::{ClientCommand, Connection, PluginCommand, SagaCommand, SecretCommand, SubscriptionCommand};
use super::render::Render;
use super::scaffold::{HTTP_EXAMPLE_API, Template, build_plugin, default_sdk_path, new_plugin};
use crate::domain::ExecutionStatus;

/// Longest `--wait` the host accepts.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// A connected command: the client and how to print.
struct Session {
    client: Client,
    json: bool,
}

impl Session {
    fn new(conn: Connection) -> anyhow::Result<Self> {
        Ok(Self { client: Client::new(conn.url, conn.token)?, json: conn.json })
    }

    /// Prints `value`: its JSON, or `headline` (if any) and its rendering.
    fn show<T: Serialize + Render + ?Sized>(&self, headline: Option<String>, value: &T) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            if let Some(h) = headline {
                println!("{h}");
            }
            println!("{}", value.render());
        }
        Ok(())
    }
}

/// Exit code for an execution status: 0 completed (or not ended), 2 compensated, 3 failed.
fn exit_code(status: ExecutionStatus) -> i32 {
    match status {
        ExecutionStatus::Compensated => 2,
        ExecutionStatus::Failed => 3,
        ExecutionStatus::Running | ExecutionStatus::Compensating | ExecutionStatus::Completed => 0,
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

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<i32> {
    match cmd {
        ClientCommand::Plugin { conn, command } => plugin(&Session::new(conn)?, command).await?,
        ClientCommand::Saga { conn, command } => saga(&Session::new(conn)?, command).await?,
        ClientCommand::Secret { conn, command } => secret(&Session::new(conn)?, command).await?,
        ClientCommand::Subscription { conn, command } => subscription(&Session::new(conn)?, command).await?,
        ClientCommand::Run { conn, saga, input, input_file, wait, idempotency_key, key } => {
            let s = Session::new(conn)?;
            let input = match (input, input_file) {
                (Some(v), _) => v,
                (None, Some(f)) => {
                    serde_json::from_slice(&read(&f)?).with_context(|| format!("{} is not valid JSON", f.display()))?
                }
                (None, None) => Value::Object(Default::default()),
            };
            let wait = wait.map(|secs| Duration::from_secs(secs).min(MAX_WAIT));
            let trigger =
                Trigger { input: &input, wait, idempotency_key: idempotency_key.as_deref(), key: key.as_deref() };
            match with_spinner(&format!("running {saga}"), s.client.trigger(&saga, &trigger)).await? {
                Triggered::Ended(view) => {
                    s.show(None, view.as_ref())?;
                    return Ok(exit_code(view.status));
                }
                Triggered::Started(accepted) => s.show(None, &accepted)?,
            }
        }
        ClientCommand::Status { conn, id } => {
            let s = Session::new(conn)?;
            let view = s.client.execution(id).await?;
            s.show(None, &view)?;
            return Ok(exit_code(view.status));
        }
        ClientCommand::Events { conn, id, follow } => {
            let s = Session::new(conn)?;
            if follow {
                // One line per event as it comes: a rendered line, or a JSON line.
                let mut failed = None;
                s.client
                    .follow_events(id, |e| {
                        let line = if s.json { serde_json::to_string(&e) } else { Ok(e.render()) };
                        match line {
                            Ok(line) => println!("{line}"),
                            Err(err) => failed = Some(err),
                        }
                    })
                    .await?;
                if let Some(err) = failed {
                    return Err(err.into());
                }
            } else {
                s.show(None, &s.client.events(id).await?)?;
            }
        }
        ClientCommand::List { conn, saga, status, key, limit, after } => {
            let s = Session::new(conn)?;
            let page = s.client.list_executions(&ListQuery { saga, status, key, limit: Some(limit), after }).await?;
            s.show(None, &page)?;
        }
        ClientCommand::Publish { conn, topic, payload, id, key } => {
            let s = Session::new(conn)?;
            let payload = payload.unwrap_or_else(|| Value::Object(Default::default()));
            let published = s.client.publish(&topic, &payload, id.as_deref(), key.as_deref()).await?;
            let what = if published.duplicate { "already in the log" } else { "published" };
            s.show(Some(format!("event {} {what} (seq {})", published.id, published.seq)), &published)?;
        }
        ClientCommand::Signal { conn, id, topic, payload, idempotency_key } => {
            let s = Session::new(conn)?;
            let payload = payload.unwrap_or_else(|| Value::Object(Default::default()));
            let accepted = s.client.signal(id, &topic, &payload, idempotency_key.as_deref()).await?;
            s.show(Some(format!("signal {topic} sent")), &accepted)?;
        }
        ClientCommand::Cancel { conn, id } => {
            let s = Session::new(conn)?;
            s.show(Some("cancel requested".into()), &s.client.cancel(id).await?)?;
        }
        ClientCommand::Resume { conn, id } => {
            let s = Session::new(conn)?;
            s.show(Some("resume requested".into()), &s.client.resume(id).await?)?;
        }
        ClientCommand::Export { conn, before, saga, out } => {
            let s = Session::new(conn)?;
            let lines = match &out {
                Some(path) => {
                    let mut tmp = tempfile::NamedTempFile::new_in(
                        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")),
                    )
                    .with_context(|| format!("creating a file beside {}", path.display()))?;
                    let lines = s.client.export(before, saga.as_ref(), tmp.as_file_mut()).await?;
                    tmp.as_file().sync_all()?;
                    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
                    lines
                }
                None => s.client.export(before, saga.as_ref(), &mut std::io::stdout().lock()).await?,
            };
            if let Some(path) = out {
                eprintln!("{lines} events written to {}", path.display());
            }
        }
        ClientCommand::Backup { conn, dir } => {
            let s = Session::new(conn)?;
            let records = super::backup::run(&s.client, &dir).await?;
            println!("backup of {records} records written to {}", dir.display());
            println!("start a host on it with: sagahost serve --data-dir {}", dir.display());
        }
        ClientCommand::NewPlugin { name, dir, sdk, http } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let template = if http { Template::Http } else { Template::State };
            new_plugin(&name, &dir, &sdk.unwrap_or_else(default_sdk_path), template)?;
            println!("created plugin crate {name} in {}", dir.display());
            println!("next:");
            println!("  sagahost plugin push {name} 0.1.0 {}", dir.display());
            println!("  sagahost saga apply {name} {}", dir.join("saga.json").display());
            if http {
                println!("  # an API answering POST /charges with {{\"id\": ...}} must listen on {HTTP_EXAMPLE_API}");
                println!("  sagahost run {name} --input '{{\"amount\": 42, \"api\": \"{HTTP_EXAMPLE_API}\"}}' --wait");
            } else {
                println!("  sagahost run {name} --input '{{\"amount\": 42}}' --wait");
            }
        }
    }
    Ok(0)
}

async fn plugin(s: &Session, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Push { name, version, path } => {
            let wasm = if path.is_dir() { build_plugin(&path)? } else { path };
            let put = s.client.put_plugin(&name, &version, read(&wasm)?).await?;
            let what = if put.created { "uploaded" } else { "already uploaded (same bytes)" };
            s.show(Some(format!("plugin {name}@{version} {what}")), &put.value)
        }
        PluginCommand::List => s.show(None, &s.client.plugins().await?),
        PluginCommand::Show { name, version } => s.show(None, &s.client.plugin(&name, &version).await?),
        PluginCommand::State { name, collection, prefix, limit } => {
            let query = StateQuery { collection, prefix, limit: Some(limit) };
            s.show(None, &s.client.plugin_state(&name, &query).await?)
        }
    }
}

async fn secret(s: &Session, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Put { name, from_file } => {
            let value = match from_file {
                Some(f) => {
                    String::from_utf8(read(&f)?).with_context(|| format!("{} is not UTF-8 text", f.display()))?
                }
                None => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .context("reading the value from standard input")?;
                    let trimmed = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
                    trimmed.map(str::to_owned).unwrap_or(text)
                }
            };
            let put = s.client.put_secret(&name, &value).await?;
            let what = if put.created { "stored" } else { "replaced" };
            let sealed =
                if put.value.encrypted { "encrypted at rest" } else { "in clear at rest: the host has no secret key" };
            s.show(Some(format!("secret {name} {what} ({sealed})")), &put.value)
        }
        SecretCommand::List => s.show(None, &s.client.secrets().await?),
        SecretCommand::Delete { name } => {
            s.client.delete_secret(&name).await?;
            if !s.json {
                println!("secret {name} deleted");
            }
            Ok(())
        }
    }
}

async fn subscription(s: &Session, command: SubscriptionCommand) -> anyhow::Result<()> {
    match command {
        SubscriptionCommand::Apply { name, file } => {
            let put = s.client.put_subscription(&name, read(&file)?).await?;
            let what = if put.created { "created" } else { "replaced" };
            s.show(Some(format!("subscription {name} {what}")), &put.value)
        }
        SubscriptionCommand::List => s.show(None, &s.client.subscriptions().await?),
        SubscriptionCommand::Show { name } => s.show(None, &s.client.subscription(&name).await?),
        SubscriptionCommand::Delete { name } => {
            s.client.delete_subscription(&name).await?;
            if !s.json {
                println!("subscription {name} deleted");
            }
            Ok(())
        }
        SubscriptionCommand::DeadLetters { name, limit } => s.show(None, &s.client.dead_letters(&name, limit).await?),
        SubscriptionCommand::Redrive { name } => {
            let redrive = s.client.redrive(&name).await?;
            s.show(Some(format!("{} dead letters of {name} will be tried once more", redrive.redriving)), &redrive)
        }
    }
}

async fn saga(s: &Session, command: SagaCommand) -> anyhow::Result<()> {
    match command {
        SagaCommand::Apply { name, file } => {
            let put = s.client.put_saga(&name, read(&file)?).await?;
            // 200 is a new version, or the same definition again (then the version is unchanged).
            let what = if put.created { "defined" } else { "updated" };
            s.show(Some(format!("saga {name} {what}: version {}", put.value.version)), &put.value)
        }
        SagaCommand::List => s.show(None, &s.client.sagas().await?),
        SagaCommand::Show { name } => s.show(None, &s.client.saga(&name).await?),
    }
}
