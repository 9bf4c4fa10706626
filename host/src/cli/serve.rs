//! `sagahost serve`'s flags, one group per concern. Every flag has its environment variable
//! (`SAGAHOST_<FLAG>`; the OTLP endpoint keeps the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), and
//! every default is read from the configuration type the flag sets ([`HostConfig::new`] and the
//! `Default`s it is built from), so the command line and the library cannot disagree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;

use crate::retention::duration;
use crate::secrets::SealKey;
use crate::server::HostConfig;
use crate::store::PostgresConfig;

/// Where `serve` listens unless told otherwise (and where the client commands look for it).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where `serve` keeps its store unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "sagahost-data";

/// The library's defaults, which the flags' defaults are read from.
fn defaults() -> HostConfig {
    HostConfig::new(DEFAULT_DATA_DIR)
}

/// `sagahost serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address, tokens, request bodies.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Client connections: limits and timeouts.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// How much work the host takes on.
    #[command(flatten)]
    pub executions: ExecutionArgs,
    /// Per plugin instance and attempt.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Plugins' durable state.
    #[command(flatten)]
    pub state: StateArgs,
    /// Plugins' outbound HTTP.
    #[command(flatten)]
    pub http: HttpArgs,
    /// The embedded store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Events in from brokers.
    #[command(flatten)]
    pub ingress: IngressArgs,
    /// What the store keeps, and for how long.
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Not a flag of `serve` but of the client commands: caught so that `serve --token X`
    /// fails naming the flags meant instead of starting an unprotected host.
    #[arg(long = "token", hide = true, num_args = 0..=1, value_name = "TOKEN")]
    pub misplaced_token: Option<Option<String>>,
}

/// Network and access.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Network and access")]
pub struct AccessArgs {
    /// Address to listen on.
    #[arg(long, env = "SAGAHOST_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Bearer token for management routes (plugins, sagas, cancel, resume).
    #[arg(long, env = "SAGAHOST_ADMIN_TOKEN", hide_env_values = true, value_parser = super::token)]
    pub admin_token: Option<String>,
    /// Bearer token for triggering and reading executions.
    #[arg(long, env = "SAGAHOST_CLIENT_TOKEN", hide_env_values = true, value_parser = super::token)]
    pub client_token: Option<String>,
    /// Bearer token for `GET /metrics` (the admin token works too); without it /metrics is open.
    #[arg(long, env = "SAGAHOST_METRICS_TOKEN", hide_env_values = true, value_parser = super::token)]
    pub metrics_token: Option<String>,
    /// Allow listening on a non-loopback address without an admin token.
    #[arg(long, env = "SAGAHOST_INSECURE", value_parser = BoolishValueParser::new())]
    pub insecure: bool,
    /// Largest request body other than a plugin upload (definitions, inputs), in KiB.
    #[arg(long, env = "SAGAHOST_MAX_BODY_KIB", default_value_t = defaults().api.max_body_bytes >> 10)]
    pub max_body_kib: usize,
}

/// Client connections: slow and abusive clients are cut off (docs/operations.md).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connections")]
pub struct ConnectionArgs {
    /// Seconds a client has to send a complete request head, from connecting (or from the first
    /// byte of a later request); past it the connection is closed.
    #[arg(long, env = "SAGAHOST_HEADER_READ_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = defaults().http.header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may stay silent between requests, and a response may wait
    /// for a client that does not read it; past it the connection is closed.
    #[arg(long, env = "SAGAHOST_IDLE_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = defaults().http.idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a request body in full after its head; past it the request
    /// gets 408 and the connection is closed. Responses (Server-Sent Events, `wait`) are not limited.
    #[arg(long, env = "SAGAHOST_BODY_READ_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = defaults().http.body_read_timeout.as_secs())]
    pub body_read_timeout_secs: u64,
    /// Connections served at once; past it, new connections wait (in the listen backlog) until
    /// one closes. Each takes a file descriptor.
    #[arg(long, env = "SAGAHOST_MAX_CONNECTIONS",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000),
        default_value_t = defaults().http.max_connections)]
    pub max_connections: usize,
}

/// Executions.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Executions")]
pub struct ExecutionArgs {
    /// Unfinished executions driven at once; triggers past it get 429 with Retry-After.
    #[arg(long, env = "SAGAHOST_MAX_ACTIVE_EXECUTIONS", default_value_t = defaults().orchestrator.max_active_executions)]
    pub max_active_executions: usize,
    /// Plugin attempts running at once.
    #[arg(long, env = "SAGAHOST_MAX_CONCURRENT_ATTEMPTS", default_value_t = defaults().orchestrator.max_concurrent_attempts)]
    pub max_concurrent_attempts: usize,
    /// Most steps in one saga definition.
    #[arg(long, env = "SAGAHOST_MAX_STEPS", default_value_t = defaults().orchestrator.definition_limits.max_steps)]
    pub max_steps: usize,
}

/// Sandbox limits.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Sandbox limits")]
pub struct SandboxArgs {
    /// Linear memory per plugin instance, in MiB.
    #[arg(long, env = "SAGAHOST_MAX_MEMORY_MIB", default_value_t = defaults().limits.max_memory_bytes >> 20)]
    pub max_memory_mib: usize,
    /// Largest plugin upload, in MiB.
    #[arg(long, env = "SAGAHOST_MAX_PLUGIN_MIB", default_value_t = defaults().limits.max_plugin_bytes >> 20)]
    pub max_plugin_mib: usize,
    /// Compiled plugin versions kept in memory; the least recently used is evicted first and
    /// loaded again from its stored compiled code when next run.
    #[arg(long, env = "SAGAHOST_MAX_CACHED_PLUGINS", default_value_t = defaults().limits.max_cached_plugins, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_cached_plugins: usize,
    /// Largest plugin result, in KiB.
    #[arg(long, env = "SAGAHOST_MAX_OUTPUT_KIB", default_value_t = defaults().limits.max_output_bytes >> 10)]
    pub max_output_kib: usize,
    /// Log lines a plugin may write per attempt.
    #[arg(long, env = "SAGAHOST_MAX_LOG_LINES", default_value_t = defaults().limits.max_log_lines)]
    pub max_log_lines: u32,
    /// Log bytes a plugin may write per attempt, in KiB.
    #[arg(long, env = "SAGAHOST_MAX_LOG_KIB", default_value_t = defaults().limits.max_log_bytes >> 10)]
    pub max_log_kib: usize,
}

/// State limits.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "State limits")]
pub struct StateArgs {
    /// Largest value a plugin may store in its durable state, in KiB.
    #[arg(long, env = "SAGAHOST_MAX_STATE_VALUE_KIB", default_value_t = defaults().limits.state.max_value_bytes >> 10)]
    pub max_state_value_kib: usize,
    /// Entries a plugin may write (or delete) in its durable state per attempt.
    #[arg(long, env = "SAGAHOST_MAX_STATE_WRITES", default_value_t = defaults().limits.state.max_writes)]
    pub max_state_writes: usize,
}

/// Outbound HTTP limits (docs/plugins.md, "Outbound HTTP").
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Outbound HTTP limits")]
pub struct HttpArgs {
    /// Outbound HTTP requests a plugin may make per attempt.
    #[arg(long, env = "SAGAHOST_MAX_HTTP_REQUESTS", default_value_t = defaults().limits.http.max_requests)]
    pub max_http_requests: u32,
    /// Largest outbound request body, in KiB.
    #[arg(long, env = "SAGAHOST_MAX_HTTP_REQUEST_BODY_KIB", default_value_t = defaults().limits.http.max_request_body_bytes >> 10)]
    pub max_http_request_body_kib: u64,
    /// Largest response body a plugin may receive, in KiB.
    #[arg(long, env = "SAGAHOST_MAX_HTTP_RESPONSE_BODY_KIB", default_value_t = defaults().limits.http.max_response_body_bytes >> 10)]
    pub max_http_response_body_kib: u64,
    /// Time one outbound request may take, connection to the end of its response body, in ms.
    #[arg(long, env = "SAGAHOST_HTTP_REQUEST_TIMEOUT_MS", default_value_t = defaults().limits.http.request_timeout.as_millis() as u64)]
    pub http_request_timeout_ms: u64,
    /// Outbound requests a plugin may have in flight at once, per attempt.
    #[arg(long, env = "SAGAHOST_MAX_HTTP_CONCURRENT", default_value_t = defaults().limits.http.max_concurrent)]
    pub max_http_concurrent: u32,
    /// PEM file of root certificates trusted for HTTPS besides the platform's.
    #[arg(long, env = "SAGAHOST_HTTP_CA_BUNDLE")]
    pub http_ca_bundle: Option<PathBuf>,
}

/// Store.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Where the store lives (unless --store names a database).
    #[arg(long, env = "SAGAHOST_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keep the store in PostgreSQL instead, shared by every host given the same URL:
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?options=-c%20search_path%3DSCHEMA]`
    /// (docs/postgres.md).
    #[arg(long, env = "SAGAHOST_STORE", value_parser = parse_store_url, hide_env_values = true)]
    pub store: Option<String>,
    /// Connections to PostgreSQL for reads (the writer keeps one more).
    #[arg(long, env = "SAGAHOST_PG_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pg_pool_size: u32,
    /// Longest a PostgreSQL statement may run before the server cancels it, in ms.
    #[arg(long, env = "SAGAHOST_PG_STATEMENT_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pg_statement_timeout_ms: u64,
    /// How long this host's lease on its executions lasts unless renewed, in ms: when a host
    /// stops (killed, cut off), the others take its executions this long after its last renewal.
    #[arg(long, env = "SAGAHOST_PG_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub pg_lease_ms: u64,
    /// Memory sled keeps as its page cache, in MiB (about: sled counts its in-memory pages).
    #[arg(long, env = "SAGAHOST_SLED_CACHE_MIB", default_value_t = defaults().sled_cache_bytes >> 20, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub sled_cache_mib: u64,
    /// Free disk space the store keeps in reserve, in MiB: below it, writes get 503.
    #[arg(long, env = "SAGAHOST_MIN_FREE_MIB", default_value_t = defaults().store_reserve_bytes >> 20)]
    pub min_free_mib: u64,
    /// File holding the key that seals secrets at rest: 64 hexadecimal characters (32 random
    /// bytes, e.g. from `openssl rand -hex 32`). Without a key, secrets are stored in clear.
    #[arg(long, env = "SAGAHOST_SECRET_KEY_FILE", conflicts_with = "secret_key")]
    pub secret_key_file: Option<PathBuf>,
    /// The key itself, as in --secret-key-file; prefer the file or the variable: a flag's
    /// value is visible to every local user in the process list.
    #[arg(long, env = "SAGAHOST_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
}

/// Events in from brokers (docs/topics.md, "Redis Streams ingress").
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Ingress")]
pub struct IngressArgs {
    /// Read a Redis stream into the topic log through a consumer group:
    /// `redis://HOST:PORT[/DB]?stream=NAME[&group=G][&consumer=C][&topic=T][&from=start|now][&claim_idle_ms=N]`.
    /// Repeat for several streams (in the variable: separated by spaces).
    #[arg(long, env = "SAGAHOST_REDIS_INGRESS", value_delimiter = ' ', value_parser = crate::ingress::redis::RedisIngress::parse)]
    pub redis_ingress: Vec<crate::ingress::redis::RedisIngress>,
}

/// Retention (docs/operations.md#retention).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Retention")]
pub struct RetentionArgs {
    /// How long an ended execution is kept before the sweeper removes it (events, summary,
    /// indexes; never plugin state): `90s`, `30m`, `12h`, `7d`, … or `forever`. A saga's
    /// `retain_ms` overrides it.
    #[arg(long, env = "SAGAHOST_RETAIN", value_parser = parse_retain,
          default_value_t = Retain(defaults().retention.retain))]
    pub retain: Retain,
    /// How long an idempotency key is remembered, from the start of the execution it created:
    /// after it, the same key starts a new execution.
    #[arg(long, env = "SAGAHOST_IDEMPOTENCY_WINDOW", value_parser = parse_window,
          default_value_t = Window(defaults().retention.idempotency_window))]
    pub idempotency_window: Window,
    /// Write each execution the sweeper removes to NDJSON files in this directory first.
    #[arg(long, env = "SAGAHOST_ARCHIVE")]
    pub archive: Option<PathBuf>,
}

/// `--retain`: a duration, or `forever` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retain(pub Option<Duration>);

impl std::fmt::Display for Retain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.map_or_else(|| "forever".into(), duration::show))
    }
}

/// `--idempotency-window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(pub Duration);

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&duration::show(self.0))
    }
}

fn parse_retain(text: &str) -> Result<Retain, String> {
    let retain = duration::parse_or_forever(text)?;
    match retain {
        Some(d) if d < Duration::from_secs(1) => Err("--retain must be at least 1s".into()),
        _ => Ok(Retain(retain)),
    }
}

fn parse_window(text: &str) -> Result<Window, String> {
    match duration::parse(text)? {
        d if d < Duration::from_secs(1) => Err("--idempotency-window must be at least 1s".into()),
        d => Ok(Window(d)),
    }
}

/// Telemetry.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryArgs {
    /// Export traces (executions and step attempts as spans) to this OTLP/HTTP collector,
    /// for example http://127.0.0.1:4318.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Flags `serve` refuses: some would leave a host unprotected while its operator believes it
/// protected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeFlagError {
    /// `serve --token`.
    #[error(
        "`serve` has no --token (that is the client commands' flag): use --admin-token for the \
         management routes (plugins, sagas, cancel, resume) and/or --client-token for triggering \
         and reading executions"
    )]
    Flag,
    /// `SAGAHOST_TOKEN` in the environment of `serve`, without an admin token.
    #[error(
        "SAGAHOST_TOKEN is set, but it is the client commands' token and does not protect a host: \
         set SAGAHOST_ADMIN_TOKEN (or --admin-token) to require a token, or unset SAGAHOST_TOKEN"
    )]
    ClientEnvironment,
    /// The secret key could not be read or is not a key.
    #[error("secret key: {0}")]
    SecretKey(String),
}

/// The key from `--secret-key-file` or `--secret-key`; errors never quote what was read.
fn secret_key(file: Option<PathBuf>, text: Option<String>) -> Result<Option<SealKey>, ServeFlagError> {
    let text = match (file, text) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| ServeFlagError::SecretKey(format!("cannot read {}: {e}", path.display())))?,
        (None, Some(text)) => text,
        (None, None) => return Ok(None),
    };
    SealKey::parse(&text).map(Some).map_err(|e| ServeFlagError::SecretKey(e.to_string()))
}

/// A `--store` value: a PostgreSQL URL.
fn parse_store_url(url: &str) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err("the store is sled in --data-dir unless --store is a postgres:// URL".into())
    }
}

/// `units` of `2^shift` bytes, in bytes (saturating: a limit too large to hold is no limit).
fn bytes(units: usize, shift: u32) -> usize {
    units.saturating_mul(1 << shift)
}

impl ServeArgs {
    /// The host configuration these flags describe. `client_token_in_env`: whether
    /// `SAGAHOST_TOKEN` is set, which `serve` refuses unless an admin token is given too.
    pub fn config(self, client_token_in_env: bool) -> Result<HostConfig, ServeFlagError> {
        if self.misplaced_token.is_some() {
            return Err(ServeFlagError::Flag);
        }
        let a = self.access;
        if client_token_in_env && a.admin_token.is_none() {
            return Err(ServeFlagError::ClientEnvironment);
        }
        let mut config = HostConfig::new(self.store.data_dir);
        config.postgres = self.store.store.map(|url| {
            let mut pg = PostgresConfig::new(url);
            pg.pool_size = self.store.pg_pool_size as usize;
            pg.statement_timeout = Duration::from_millis(self.store.pg_statement_timeout_ms);
            pg.lease = Duration::from_millis(self.store.pg_lease_ms);
            pg
        });
        config.listen = a.listen;
        config.insecure = a.insecure;
        config.api.admin_token = a.admin_token;
        config.api.client_token = a.client_token;
        config.api.metrics_token = a.metrics_token;
        config.api.max_body_bytes = bytes(a.max_body_kib, 10);
        let c = self.connections;
        config.http.header_read_timeout = Duration::from_secs(c.header_read_timeout_secs);
        config.http.idle_timeout = Duration::from_secs(c.idle_timeout_secs);
        config.http.body_read_timeout = Duration::from_secs(c.body_read_timeout_secs);
        config.http.max_connections = c.max_connections;
        let e = self.executions;
        config.orchestrator.max_active_executions = e.max_active_executions;
        config.orchestrator.max_concurrent_attempts = e.max_concurrent_attempts;
        config.orchestrator.definition_limits.max_steps = e.max_steps;
        let (s, limits) = (self.sandbox, &mut config.limits);
        limits.max_memory_bytes = bytes(s.max_memory_mib, 20);
        limits.max_plugin_bytes = bytes(s.max_plugin_mib, 20);
        limits.max_cached_plugins = s.max_cached_plugins;
        limits.max_output_bytes = bytes(s.max_output_kib, 10);
        limits.max_log_lines = s.max_log_lines;
        limits.max_log_bytes = bytes(s.max_log_kib, 10);
        limits.state.max_value_bytes = bytes(self.state.max_state_value_kib, 10);
        limits.state.max_writes = self.state.max_state_writes;
        // A value larger than the per-attempt write budget could never be written.
        limits.state.max_write_bytes = limits.state.max_write_bytes.max(limits.state.max_value_bytes);
        let (h, http) = (self.http, &mut config.limits.http);
        http.max_requests = h.max_http_requests;
        http.max_request_body_bytes = h.max_http_request_body_kib.saturating_mul(1 << 10);
        http.max_response_body_bytes = h.max_http_response_body_kib.saturating_mul(1 << 10);
        http.request_timeout = std::time::Duration::from_millis(h.http_request_timeout_ms);
        http.max_concurrent = h.max_http_concurrent;
        http.ca_bundle = h.http_ca_bundle;
        config.store_reserve_bytes = self.store.min_free_mib.saturating_mul(1 << 20);
        config.sled_cache_bytes = self.store.sled_cache_mib << 20;
        config.orchestrator.secret_key = secret_key(self.store.secret_key_file, self.store.secret_key)?;
        config.redis_ingress = self.ingress.redis_ingress;
        config.retention.retain = self.retention.retain.0;
        config.retention.idempotency_window = self.retention.idempotency_window.0;
        config.retention.archive = self.retention.archive;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use crate::cli::{Cli, Command};

    fn serve(args: &[&str]) -> Result<super::ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["sagahost", "serve"][..], args].concat())?;
        let Command::Serve(serve) = cli.command else { panic!("not serve") };
        Ok(serve)
    }

    #[test]
    fn retention_flags_parse_durations_and_forever() {
        let config = serve(&[]).unwrap().config(false).unwrap();
        assert_eq!(config.retention.retain, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(config.retention.idempotency_window, std::time::Duration::from_secs(86_400));
        let config = serve(&["--retain", "2m", "--idempotency-window", "90s", "--archive", "/a"])
            .unwrap()
            .config(false)
            .unwrap();
        assert_eq!(config.retention.retain, Some(std::time::Duration::from_secs(120)));
        assert_eq!(config.retention.idempotency_window, std::time::Duration::from_secs(90));
        assert_eq!(config.retention.archive.as_deref(), Some(std::path::Path::new("/a")));
        assert_eq!(serve(&["--retain", "forever"]).unwrap().config(false).unwrap().retention.retain, None);
        for bad in ["0s", "500ms", "soon", "7"] {
            assert!(serve(&["--retain", bad]).is_err(), "{bad}");
        }
        assert!(serve(&["--idempotency-window", "forever"]).is_err());
    }

    #[test]
    fn the_metrics_token_is_carried_and_never_blank() {
        let config = serve(&["--metrics-token", "scrape"]).unwrap().config(false).unwrap();
        assert_eq!(config.api.metrics_token.as_deref(), Some("scrape"));
        assert_eq!(serve(&[]).unwrap().config(false).unwrap().api.metrics_token, None);
        for blank in ["", " ", "\t "] {
            let err = serve(&["--metrics-token", blank]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{blank:?}");
            assert!(err.to_string().contains("must not be empty"), "{err}");
        }
    }
}
