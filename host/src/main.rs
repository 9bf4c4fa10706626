//! `sagahost`: serve the saga host, run the demo or the benchmark, or talk to a host (client commands in `cli`).
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sagahost::server::{Host, HostConfig};

/// mimalloc: per-thread heaps instead of glibc's locked arenas, which were the largest
/// single cost under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sagahost", version, about = "A WebAssembly-plugin saga host")]
struct Cli {
    #[command(flatten)]
    connection: sagahost::cli::Connection,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SAGAHOST_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: embedded store in a data directory, HTTP API on a loopback address.
    Serve(ServeArgs),
    /// Build-embedded example sagas, run end to end against an embedded host.
    Demo,
    /// Measure the raw limits of this machine and the host against them.
    Bench(BenchArgs),
    #[command(flatten)]
    Client(sagahost::cli::ClientCommand),
}

#[derive(Parser)]
struct ServeArgs {
    /// Where the store lives.
    #[arg(long, env = "SAGAHOST_DATA_DIR", default_value = "sagahost-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SAGAHOST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Bearer token for management routes (plugins, sagas, cancel, resume).
    #[arg(long, env = "SAGAHOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token for triggering and reading executions.
    #[arg(long, env = "SAGAHOST_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Allow listening on a non-loopback address without an admin token.
    #[arg(long)]
    insecure: bool,
    /// Linear memory per plugin instance, in MiB.
    #[arg(long, default_value_t = 64)]
    max_memory_mib: usize,
    /// Largest plugin upload, in MiB.
    #[arg(long, default_value_t = 32)]
    max_plugin_mib: usize,
    /// Largest plugin result, in KiB.
    #[arg(long, default_value_t = 1024)]
    max_output_kib: usize,
    /// Plugin attempts running at once.
    #[arg(long, default_value_t = 128)]
    max_concurrent_attempts: usize,
    /// Unfinished executions driven at once; triggers past it get 429 with Retry-After.
    #[arg(long, default_value_t = 100_000)]
    max_active_executions: usize,
    /// Log lines a plugin may write per attempt.
    #[arg(long, default_value_t = 1_000)]
    max_log_lines: u32,
    /// Log bytes a plugin may write per attempt, in KiB.
    #[arg(long, default_value_t = 256)]
    max_log_kib: usize,
    /// Largest value a plugin may store in its durable state, in KiB.
    #[arg(long, default_value_t = 1024)]
    max_state_value_kib: usize,
    /// Entries a plugin may write (or delete) in its durable state per attempt.
    #[arg(long, default_value_t = 1_000)]
    max_state_writes: usize,
    /// Largest request body other than a plugin upload (definitions, inputs), in KiB.
    #[arg(long, default_value_t = 1024)]
    max_body_kib: usize,
    /// Free disk space the store keeps in reserve, in MiB: below it, writes get 503.
    #[arg(long, default_value_t = 64)]
    min_free_mib: u64,
    /// Export traces (executions and step attempts as spans) to this OTLP/HTTP collector,
    /// for example http://127.0.0.1:4318.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Most steps in one saga definition.
    #[arg(long, default_value_t = 64)]
    max_steps: usize,
}

#[derive(Parser)]
struct BenchArgs {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 4.0)]
    phase_secs: f64,
    /// Saga concurrencies to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64, 256])]
    concurrency: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Measure the scale figures with this many executions waiting in backoff instead.
    #[arg(long)]
    scale: Option<usize>,
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(n) = args.scale {
        let report = sagahost::bench::scale::run(n).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            sagahost::bench::scale::print(&report);
        }
        return Ok(());
    }
    let opts = sagahost::bench::BenchOptions {
        phase: std::time::Duration::from_secs_f64(args.phase_secs),
        concurrency: args.concurrency,
    };
    let report = sagahost::bench::run(opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        sagahost::bench::print_table(&report);
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = HostConfig::new(args.data_dir);
    config.listen = args.listen;
    config.insecure = args.insecure;
    config.api.admin_token = args.admin_token.filter(|t| !t.is_empty());
    config.api.client_token = args.client_token.filter(|t| !t.is_empty());
    config.limits.max_memory_bytes = args.max_memory_mib << 20;
    config.limits.max_plugin_bytes = args.max_plugin_mib << 20;
    config.limits.max_output_bytes = args.max_output_kib << 10;
    config.orchestrator.max_concurrent_attempts = args.max_concurrent_attempts;
    config.orchestrator.max_active_executions = args.max_active_executions;
    config.orchestrator.definition_limits.max_steps = args.max_steps;
    config.limits.max_log_lines = args.max_log_lines;
    config.limits.max_log_bytes = args.max_log_kib << 10;
    config.limits.state.max_value_bytes = args.max_state_value_kib << 10;
    config.limits.state.max_writes = args.max_state_writes;
    config.limits.state.max_write_bytes = config.limits.state.max_write_bytes.max(config.limits.state.max_value_bytes);
    config.api.max_body_bytes = args.max_body_kib << 10;
    config.store_reserve_bytes = args.min_free_mib << 20;
    let host = Host::start(config).await?;
    // Scripts and tests read this line to learn the port when listening on port 0.
    println!("sagahost listening on {}", host.url());
    shutdown_signal().await;
    tracing::info!("shutting down");
    host.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo's own output is the story; the host's log would drown it unless asked for.
    // Only the server logs by default; the other commands' output is the story.
    let default_log =
        if matches!(cli.command, Command::Serve(_)) { "info,tower_http=warn" } else { "warn,plugin=error" };
    let otlp = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.clone(),
        _ => None,
    };
    let telemetry = sagahost::telemetry::init(matches!(cli.log_format, LogFormat::Json), default_log, otlp.as_deref())?;
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo => sagahost::demo::run().await,
        Command::Bench(args) => bench(args).await,
        Command::Client(cmd) => match sagahost::cli::run(cmd, &cli.connection).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        },
    };
    telemetry.shutdown();
    result
}
