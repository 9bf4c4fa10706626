//! The client commands' arguments: one subcommand per API route, plus the plugin author's
//! `new-plugin`. The connection flags belong to the commands that connect, and only to them.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};
use reqwest::Url;
use serde_json::Value;

use crate::domain::{ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaName};

/// The host's URL unless `--url`/`SAGAHOST_URL` says otherwise: where `serve` listens by default.
pub fn default_url() -> Url {
    Url::parse(&format!("http://{}", super::serve::DEFAULT_LISTEN)).expect("a valid default URL")
}

/// Where the host is and how to talk to it.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The host's URL.
    #[arg(long, global = true, env = "SAGAHOST_URL", default_value_t = default_url())]
    pub url: Url,
    /// Bearer token: the admin token for management commands, the client (or admin) token for
    /// executions.
    #[arg(long, global = true, env = "SAGAHOST_TOKEN", hide_env_values = true, value_parser = super::token)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true, env = "SAGAHOST_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

/// Client subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Upload, list and describe plugins.
    Plugin {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Define, list and describe sagas.
    Saga {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        command: SagaCommand,
    },
    /// Store, list and delete secrets (values are written, never read back).
    Secret {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Deliver events to webhooks and Redis streams: apply, list, show, delete subscriptions;
    /// list and redrive their dead letters (docs/subscriptions.md).
    Subscription {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        command: SubscriptionCommand,
    },
    /// Start an execution of a saga.
    Run {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Saga name.
        #[arg(value_parser = SagaName::parse)]
        saga: SagaName,
        /// Input JSON.
        #[arg(long, conflicts_with = "input_file", value_parser = json)]
        input: Option<Value>,
        /// File holding the input JSON.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Wait until the execution ends (at most this many seconds, 300 at most) and show it.
        #[arg(long, num_args = 0..=1, default_missing_value = "300")]
        wait: Option<u64>,
        /// Idempotency key: the same key for the same saga returns the first execution.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Business key the execution carries (find it with `list --key`).
        #[arg(long)]
        key: Option<String>,
    },
    /// Show an execution's state.
    Status {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Execution id.
        id: ExecutionId,
    },
    /// Show an execution's events; `--follow` streams them until it ends.
    Events {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Execution id.
        id: ExecutionId,
        /// Keep streaming new events until the execution is terminal.
        #[arg(long)]
        follow: bool,
    },
    /// List executions, newest first.
    List {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Only this saga.
        #[arg(long, value_parser = SagaName::parse)]
        saga: Option<SagaName>,
        /// Only this status.
        #[arg(long)]
        status: Option<ExecutionStatus>,
        /// Only executions with this business key.
        #[arg(long)]
        key: Option<String>,
        /// Page size (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this execution id (the previous page's `next`).
        #[arg(long)]
        after: Option<ExecutionId>,
    },
    /// Publish an event to the host's topic log (it starts the sagas it triggers and resumes
    /// the waits it ends).
    Publish {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Topic.
        topic: String,
        /// Payload JSON (default `{}`).
        #[arg(long, value_parser = json)]
        payload: Option<Value>,
        /// Event id: an event with an id already in the log is not recorded again.
        #[arg(long)]
        id: Option<String>,
        /// Event key: resumes waits of running executions with this business key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Send a signal to an execution, for a wait step on its topic.
    Signal {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Execution id.
        id: ExecutionId,
        /// Topic (one a wait step of the execution's saga waits for).
        topic: String,
        /// Payload JSON (default `{}`).
        #[arg(long, value_parser = json)]
        payload: Option<Value>,
        /// Idempotency key: a signal with a key the execution already received is not recorded again.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Stop an execution and compensate what completed.
    Cancel {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Execution id.
        id: ExecutionId,
    },
    /// Retry the stuck compensation of a failed execution.
    Resume {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Execution id.
        id: ExecutionId,
    },
    /// Write ended executions as NDJSON, one line per event (the retention archive's format:
    /// docs/operations.md#archive-format), in the order they ended.
    Export {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Executions that ended at or before this time: unix ms, or RFC 3339
        /// (`2026-11-22T10:00:00Z`).
        #[arg(long, value_parser = crate::retention::duration::parse_time)]
        before: u64,
        /// Only this saga.
        #[arg(long, value_parser = SagaName::parse)]
        saga: Option<SagaName>,
        /// Write to this file instead of standard output (replaced only once the export is whole).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Copy a running host's whole store into a new data directory, without stopping it
    /// (docs/operations.md#backups); `serve --data-dir DIR` starts on the copy.
    Backup {
        /// How to reach the host.
        #[command(flatten)]
        conn: Connection,
        /// Where to write the copy: a directory that does not exist yet, or is empty.
        dir: PathBuf,
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
        /// A step that calls an HTTP API (saga_guest::http) instead of one keeping state.
        #[arg(long)]
        http: bool,
    },
}

/// `plugin …`.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Upload a `.wasm` file, or build a plugin crate directory and upload the result.
    Push {
        /// Plugin name.
        #[arg(value_parser = PluginName::parse)]
        name: PluginName,
        /// Version (semver).
        #[arg(value_parser = PluginVersion::parse)]
        version: PluginVersion,
        /// A `.wasm` file or a crate directory.
        path: PathBuf,
    },
    /// List uploaded plugins.
    List,
    /// Describe one plugin.
    Show {
        /// Plugin name.
        #[arg(value_parser = PluginName::parse)]
        name: PluginName,
        /// Version.
        #[arg(value_parser = PluginVersion::parse)]
        version: PluginVersion,
    },
    /// List a plugin's durable state (shared by all its versions).
    State {
        /// Plugin name.
        #[arg(value_parser = PluginName::parse)]
        name: PluginName,
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
        #[arg(value_parser = SagaName::parse)]
        name: SagaName,
        /// Definition file.
        file: PathBuf,
    },
    /// List sagas.
    List,
    /// Describe one saga.
    Show {
        /// Saga name.
        #[arg(value_parser = SagaName::parse)]
        name: SagaName,
    },
}

/// `secret …`.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret (or replace its value). The value is read from standard input (one
    /// trailing newline removed) or from a file, never from the command line, where other local
    /// users could see it.
    Put {
        /// Secret name.
        name: String,
        /// Read the value from this file (as is) instead of standard input.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List secrets: names and when they were stored, never values.
    List,
    /// Delete a secret.
    Delete {
        /// Secret name.
        name: String,
    },
}

/// `subscription …`.
#[derive(Subcommand, Debug)]
pub enum SubscriptionCommand {
    /// Store a subscription from a JSON file (or replace it); delivery starts at once.
    Apply {
        /// Subscription name.
        name: String,
        /// The subscription's JSON document.
        file: PathBuf,
    },
    /// List subscriptions with their cursor and delivery status.
    List,
    /// Describe one subscription.
    Show {
        /// Subscription name.
        name: String,
    },
    /// Stop delivering and remove a subscription, its cursor and its dead letters.
    Delete {
        /// Subscription name.
        name: String,
    },
    /// List the events a subscription gave up on.
    DeadLetters {
        /// Subscription name.
        name: String,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Try every dead letter of a subscription once more.
    Redrive {
        /// Subscription name.
        name: String,
    },
}

fn json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}
