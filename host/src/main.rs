//! `sagahost`: serve the saga host, run the demo or the benchmark, or talk to a host. The
//! command line itself (flags, environment variables, defaults) is declared in `sagahost::cli`;
//! this file only wires it to telemetry, the server and the client.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use sagahost::cli::{BenchArgs, Cli, Command, LogFormat};
use sagahost::server::{Host, HostConfig};

/// mimalloc: per-thread heaps instead of glibc's locked arenas, which were the largest
/// single cost under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Only the server logs by default; the other commands' output is the story.
const SERVE_LOG: &str = "info,tower_http=warn";
const OTHER_LOG: &str = "warn,plugin=error";

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
    if let Some(secs) = args.sustain {
        let report =
            sagahost::bench::sustain::run(secs, args.rate, args.retain, args.sled_cache_mib, args.json).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(());
    }
    if let Some(url) = &args.store {
        let report = sagahost::bench::stores::run(url, std::time::Duration::from_secs_f64(args.phase_secs)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            sagahost::bench::stores::print(&report);
        }
        return Ok(());
    }
    if args.events {
        let phase = std::time::Duration::from_secs_f64(args.phase_secs);
        let report = sagahost::bench::events::run(phase, Some(args.redis_url)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            sagahost::bench::events::print(&report);
        }
        return Ok(());
    }
    if args.http {
        let report = sagahost::bench::http::run(std::time::Duration::from_secs_f64(args.phase_secs)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            sagahost::bench::http::print(&report);
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

async fn migrate(args: sagahost::cli::MigrateArgs) -> anyhow::Result<()> {
    let to = sagahost::store::PostgresConfig::new(args.to);
    let started = std::time::Instant::now();
    let done = sagahost::store::migrate::sled_to_postgres(&args.from, &to)
        .await
        .with_context(|| format!("migrating {}", args.from.display()))?;
    println!(
        "copied {} key-value pairs ({:.1} MiB) from {} in {:.1} s",
        done.pairs,
        done.bytes as f64 / (1 << 20) as f64,
        args.from.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn serve(config: HostConfig) -> anyhow::Result<()> {
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

/// Prints a command-line error (or the help or version asked for) and exits: 0 for help and
/// version, else 1 like every other error, since 2 and 3 say how an execution ended.
fn usage_error(e: &clap::Error) -> ! {
    let _ = e.print();
    std::process::exit(if e.use_stderr() { 1 } else { 0 })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(&e));
    let (default_log, otlp) = match &cli.command {
        Command::Serve(args) => (SERVE_LOG, args.telemetry.otlp_endpoint.clone()),
        _ => (OTHER_LOG, None),
    };
    let telemetry = sagahost::telemetry::init(cli.log_format == LogFormat::Json, default_log, otlp.as_deref())?;
    let result = match cli.command {
        Command::Serve(args) => {
            // A flag or variable meant for the client must not start a host its operator
            // believes protected: it is refused like any other usage error.
            match args.config(std::env::var_os("SAGAHOST_TOKEN").is_some()) {
                Ok(config) => serve(config).await,
                Err(e) => {
                    let mut cli = Cli::command();
                    cli.build();
                    let serve = cli.find_subcommand_mut("serve").expect("serve is a subcommand");
                    usage_error(&serve.error(ErrorKind::ArgumentConflict, e))
                }
            }
        }
        Command::Demo => sagahost::demo::run().await,
        Command::Bench(args) => bench(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Client(cmd) => match sagahost::cli::run(cmd).await {
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
