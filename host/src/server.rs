//! Wiring: store, runtime, orchestrator and HTTP API put together into a running host.

mod activity;
mod http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, ApiConfig, AppState};
use crate::clock::SystemClock;
use crate::orchestrator::{Orchestrator, OrchestratorConfig};
use crate::runtime::{Limits, PluginCache, Runtime};
use crate::store::{PgStore, PostgresConfig, SledStore, Store};

pub use http::HttpConfig;

/// Everything a host needs to start.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where the sled store lives.
    pub data_dir: PathBuf,
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// Sandbox limits.
    pub limits: Limits,
    /// API settings (tokens, body sizes).
    pub api: ApiConfig,
    /// Connection limits and timeouts.
    pub http: HttpConfig,
    /// Orchestrator settings.
    pub orchestrator: OrchestratorConfig,
    /// Allow a non-loopback address without an admin token.
    pub insecure: bool,
    /// How long a stop waits for running attempts.
    pub shutdown_grace: Duration,
    /// Free disk space the store keeps; writes are refused below it.
    pub store_reserve_bytes: u64,
    /// sled's page cache, bytes (about: sled counts its in-memory pages).
    pub sled_cache_bytes: u64,
    /// Redis streams read into the topic log.
    pub redis_ingress: Vec<crate::ingress::redis::RedisIngress>,
    /// Keep the store in this PostgreSQL database instead of sled in `data_dir`.
    pub postgres: Option<PostgresConfig>,
    /// What the store keeps, and for how long.
    pub retention: crate::retention::RetentionConfig,
}

impl HostConfig {
    /// Defaults with the given data directory, listening on `127.0.0.1:0`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: Limits::default(),
            api: ApiConfig::default(),
            http: HttpConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            insecure: false,
            shutdown_grace: Duration::from_secs(10),
            store_reserve_bytes: crate::store::DEFAULT_RESERVE_BYTES,
            sled_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            redis_ingress: Vec::new(),
            postgres: None,
            retention: crate::retention::RetentionConfig::default(),
        }
    }
}

/// Where the store is, for logs: the data directory, or the database's URL without its password.
fn store_name(config: &HostConfig) -> String {
    match &config.postgres {
        Some(pg) => crate::domain::subscription::redact_password(&pg.url),
        None => config.data_dir.display().to_string(),
    }
}

/// Opens the configured store: PostgreSQL when configured, else sled in the data directory.
async fn open_store(config: &HostConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(pg) = &config.postgres {
        let store = PgStore::open(pg).await.with_context(|| format!("opening the store in {}", store_name(config)))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (dir, reserve, cache) = (config.data_dir.clone(), config.store_reserve_bytes, config.sled_cache_bytes);
    let store = tokio::task::spawn_blocking(move || SledStore::open_with(&dir, reserve, cache))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// A running host: HTTP server plus orchestrator.
pub struct Host {
    orch: Arc<Orchestrator>,
    addr: SocketAddr,
    stop_http: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    grace: Duration,
}

impl Host {
    /// Opens the store, resumes unfinished executions and starts serving.
    pub async fn start(mut config: HostConfig) -> anyhow::Result<Self> {
        if !config.listen.ip().is_loopback() && config.api.admin_token.is_none() && !config.insecure {
            bail!(
                "refusing to listen on {} without an admin token: set --admin-token (or SAGAHOST_ADMIN_TOKEN), or pass --insecure",
                config.listen
            );
        }
        if config.api.client_token.is_some() && config.api.admin_token.is_none() && !config.insecure {
            bail!(
                "refusing to start with a client token but no admin token: the management routes (plugins, sagas, \
                 secrets, cancel, resume) would be open to anyone; set --admin-token too, or pass --insecure"
            );
        }
        config.api.max_plugin_bytes = config.limits.max_plugin_bytes;
        let store = open_store(&config).await?;
        // Other hosts may change definitions and run attempts in a shared store.
        config.orchestrator.shared_store = config.postgres.is_some();
        let runtime =
            Runtime::new(config.limits.clone()).map_err(|e| anyhow::anyhow!("configuring the wasm engine: {e:#}"))?;
        let plugins = Arc::new(PluginCache::new(runtime, store.clone()));
        let orch = Orchestrator::new(store, plugins, Arc::new(SystemClock), config.orchestrator.clone());
        // A secret that does not open must stop the host now, not fail steps one by one.
        let secrets = orch.secrets().open_all().await.context("checking the stored secrets")?;
        if secrets.resealed > 0 {
            tracing::info!(count = secrets.resealed, "secrets stored in clear are now sealed with the secret key");
        }
        if secrets.plain > 0 {
            tracing::warn!(
                count = secrets.plain,
                "secrets are stored in clear: start the host with a secret key to seal them (docs/secrets.md)"
            );
        }
        let listener = http::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let app = api::router(AppState { orch: orch.clone(), config: Arc::new(config.api.clone()) })
            .layer(axum::middleware::from_fn_with_state(config.http.body_read_timeout, api::body_read_timeout));
        let (stop_http, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, app, config.http.clone(), stopped));
        // Recovery runs beside the server: the API answers while executions resume.
        let recovering = orch.clone();
        tokio::spawn(async move {
            if let Err(e) = recovering.recover().await {
                tracing::error!(error = %e, "recovery failed");
            }
        });
        orch.spawn(crate::retention::run(orch.store().clone(), config.retention.clone(), Arc::new(SystemClock)));
        for ingress in config.redis_ingress.clone() {
            orch.spawn(crate::ingress::redis::run(orch.clone(), ingress));
        }
        tracing::info!(%addr, store = %store_name(&config), "sagahost listening");
        Ok(Self { orch, addr, stop_http: Some(stop_http), server, grace: config.shutdown_grace })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The orchestrator (for in-process use: benchmarks, tests).
    pub fn orchestrator(&self) -> &Arc<Orchestrator> {
        &self.orch
    }

    /// Stops accepting requests, lets running attempts finish (up to the grace period) and
    /// stops. Unfinished executions resume at the next start.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        self.orch.shutdown(self.grace).await;
        // Connections still busy after the grace period (Server-Sent Events, long waits) are
        // dropped with the server task.
        match tokio::time::timeout(self.grace, &mut self.server).await {
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Ok(Ok(())) => {}
            Err(_) => self.server.abort(),
        }
    }
}
