//! The `sagahost` command line: `serve` (its flags in [`ServeArgs`]), `demo`, `bench`, and the
//! client commands ([`ClientCommand`], run by [`run`]) that speak the HTTP API through the typed
//! [`Client`]. Tables for people (one [`Render`] per type), `--json` for scripts, and exit codes
//! that say how a waited-for execution ended (0 completed, 2 compensated, 3 failed, 1 any error).
//!
//! Every option has an environment variable, `SAGAHOST_<OPTION>` (`--otlp-endpoint` keeps the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`); the command line wins over the environment. An
//! option belongs only to the commands it applies to, so `serve --token` is refused, not ignored.
#![allow(clippy::print_stdout)]

mod backup;
mod client;
mod commands;
mod render;
mod run;
mod scaffold;
mod serve;
mod sse;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::{ApiFailure, Client, ClientError, ListQuery, Put, StateQuery, Trigger, Triggered};
pub use commands::{
    ClientCommand, Connection, PluginCommand, SagaCommand, SecretCommand, SubscriptionCommand, default_url,
};
pub use render::Render;
pub use run::run;
pub use scaffold::{HTTP_EXAMPLE_API, Template, build_plugin, default_sdk_path, new_plugin};
pub use serve::{
    AccessArgs, DEFAULT_DATA_DIR, DEFAULT_LISTEN, ExecutionArgs, SandboxArgs, ServeArgs, ServeFlagError, StateArgs,
    StoreArgs, TelemetryArgs,
};

/// `sagahost`.
#[derive(Parser, Debug)]
#[command(name = "sagahost", version, about = "A WebAssembly-plugin saga host")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SAGAHOST_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How the log is written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `sagahost`'s commands.
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the host: embedded store in a data directory, HTTP API on a loopback address.
    Serve(ServeArgs),
    /// Build-embedded example sagas, run end to end against an embedded host.
    Demo,
    /// Measure the raw limits of this machine and the host against them.
    Bench(BenchArgs),
    /// Copy a sled data directory into an empty PostgreSQL store (stop the host first).
    Migrate(MigrateArgs),
    /// A client command.
    #[command(flatten)]
    Client(ClientCommand),
}

/// `sagahost migrate`.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The data directory of a stopped sled host.
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// The PostgreSQL store to create: `postgres://…` (its table must be empty).
    #[arg(long)]
    pub to: String,
}

/// `sagahost bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Seconds each measured phase runs.
    #[arg(long, env = "SAGAHOST_PHASE_SECS", default_value_t = 4.0)]
    pub phase_secs: f64,
    /// Saga concurrencies to sweep.
    #[arg(long, env = "SAGAHOST_CONCURRENCY", value_delimiter = ',', default_values_t = vec![1, 16, 64, 256])]
    pub concurrency: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long, env = "SAGAHOST_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Measure the scale figures with this many executions waiting in backoff instead.
    #[arg(long, env = "SAGAHOST_SCALE")]
    pub scale: Option<usize>,
    /// Measure instead what one loopback HTTP call from a plugin adds to a step, beside the
    /// same call made by the host (one phase of `--phase-secs`).
    #[arg(long, env = "SAGAHOST_HTTP", value_parser = BoolishValueParser::new(), conflicts_with = "scale")]
    pub http: bool,
    /// Measure instead how fast emitted events reach a webhook and a Redis stream: events/s
    /// and emit → delivery latency (one live phase of `--phase-secs` per target).
    #[arg(long, env = "SAGAHOST_EVENTS", value_parser = BoolishValueParser::new(), conflicts_with_all = ["scale", "http"])]
    pub events: bool,
    /// Run sagas at a fixed rate for this many seconds instead, reporting latency, the slowest
    /// commit, memory and data size every 10 s.
    #[arg(long, env = "SAGAHOST_SUSTAIN", conflicts_with_all = ["scale", "http", "events"])]
    pub sustain: Option<u64>,
    /// The `--sustain` rate: sagas per second (`1500`) or a share of a peak measured first (`50%`).
    #[arg(long, env = "SAGAHOST_RATE", default_value = "50%", value_parser = clap::value_parser!(crate::bench::sustain::Rate))]
    pub rate: crate::bench::sustain::Rate,
    /// The `--sustain` host's `--retain` (its default otherwise): with a short one, the run
    /// shows retention keeping the data directory within a band.
    #[arg(long, env = "SAGAHOST_RETAIN", requires = "sustain", value_parser = crate::retention::duration::parse)]
    pub retain: Option<std::time::Duration>,
    /// The `--sustain` host's `--sled-cache-mib` (its default otherwise).
    #[arg(long, env = "SAGAHOST_SLED_CACHE_MIB", requires = "sustain", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub sled_cache_mib: Option<u64>,
    /// The Redis `--events` measures (skipped, saying so, when it does not answer).
    #[arg(long, env = "SAGAHOST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Compare stores instead: three-step sagas on sled, then on this PostgreSQL database with
    /// one and with two hosts (in a scratch schema, dropped afterwards).
    #[arg(long = "store", env = "SAGAHOST_STORE", conflicts_with_all = ["scale", "http", "events", "sustain"], hide_env_values = true)]
    pub store: Option<String>,
}

/// A bearer token from the command line or the environment. An empty or blank one is refused:
/// taken as "no token" it would leave open a host its operator meant to protect.
fn token(s: &str) -> Result<String, &'static str> {
    if s.trim().is_empty() {
        Err("a token must not be empty or only whitespace (leave the option out for no token)")
    } else {
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    /// Every option of every command, with the command's path.
    fn options(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some() && !a.is_hide_set()) {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            options(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_has_its_environment_variable() {
        let mut all = Vec::new();
        options(&Cli::command(), "sagahost", &mut all);
        assert!(all.len() > 25, "{}", all.len());
        for (path, arg) in all {
            let long = arg.get_long().unwrap();
            if matches!(long, "help" | "version") {
                continue;
            }
            let client_option = !path.starts_with("sagahost serve") && !path.starts_with("sagahost bench");
            if client_option && !matches!(long, "url" | "token" | "json" | "log-format") {
                continue; // a command's own options (`list --saga`, `run --wait`): no environment
            }
            let expected = match long {
                "otlp-endpoint" => "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                other => format!("SAGAHOST_{}", other.to_uppercase().replace('-', "_")),
            };
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(expected.as_str()), "{path} --{long}");
        }
    }

    #[test]
    fn serve_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["sagahost", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let got = args.config(false).unwrap();
        let want = crate::server::HostConfig::new(DEFAULT_DATA_DIR);
        assert_eq!(got.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(got.data_dir, want.data_dir);
        assert_eq!(format!("{:?}", got.limits), format!("{:?}", want.limits));
        assert_eq!(format!("{:?}", got.orchestrator), format!("{:?}", want.orchestrator));
        assert_eq!(format!("{:?}", got.api), format!("{:?}", want.api));
        assert_eq!(got.store_reserve_bytes, want.store_reserve_bytes);
    }

    #[test]
    fn serve_refuses_the_client_token_and_names_the_flags_meant() {
        for args in [&["sagahost", "serve", "--token", "x"][..], &["sagahost", "serve", "--token"]] {
            let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else { panic!() };
            let err = serve.config(false).unwrap_err();
            assert_eq!(err, ServeFlagError::Flag);
            assert!(err.to_string().contains("--admin-token") && err.to_string().contains("--client-token"));
        }
        let Command::Serve(serve) = Cli::try_parse_from(["sagahost", "serve"]).unwrap().command else { panic!() };
        let err = serve.clone().config(true).unwrap_err();
        assert!(err.to_string().contains("SAGAHOST_ADMIN_TOKEN"), "{err}");
        let with_admin = ["sagahost", "serve", "--admin-token", "secret"];
        let Command::Serve(serve) = Cli::try_parse_from(with_admin).unwrap().command else { panic!() };
        assert_eq!(serve.config(true).unwrap().api.admin_token.as_deref(), Some("secret"));
    }

    #[test]
    fn blank_tokens_are_refused() {
        for flag in ["--admin-token", "--client-token"] {
            for blank in ["", "   ", "\t"] {
                let err = Cli::try_parse_from(["sagahost", "serve", flag, blank]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flag} {blank:?}");
                assert!(err.to_string().contains("must not be empty"), "{err}");
            }
        }
        let err =
            Cli::try_parse_from(["sagahost", "status", "--token", " ", &crate::domain::ExecutionId::new().to_string()])
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn options_belong_to_the_commands_they_apply_to() {
        for args in [
            &["sagahost", "serve", "--url", "http://h:1"][..],
            &["sagahost", "serve", "--json"],
            &["sagahost", "demo", "--token", "x"],
            &["sagahost", "new-plugin", "p", "--url", "http://h:1"],
        ] {
            assert_eq!(Cli::try_parse_from(args).unwrap_err().kind(), ErrorKind::UnknownArgument, "{args:?}");
        }
        // The connection options go before or after a group's subcommand alike.
        for args in [
            &["sagahost", "plugin", "--token", "t", "list", "--json"][..],
            &["sagahost", "plugin", "list", "--token", "t", "--json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Client(ClientCommand::Plugin { conn, .. }) = cli.command else { panic!("{args:?}") };
            assert_eq!((conn.token.as_deref(), conn.json), (Some("t"), true), "{args:?}");
        }
    }

    #[test]
    fn the_client_defaults_to_the_serve_address() {
        assert_eq!(default_url().as_str(), format!("http://{DEFAULT_LISTEN}/"));
    }
}
