//! `bench --store postgres://…`: the three-step no-op sagas of the main bench over HTTP, in one
//! run on sled and on PostgreSQL with one host and with two hosts sharing the database, so
//! that the figures compare on the same machine at the same moment. The database gets a
//! scratch schema for the run, dropped at its end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::measure::Progress;
use super::{BenchOptions, LoadResult, saga_load, start_bench_host};
use crate::server::{Host, HostConfig};
use crate::store::PostgresConfig;

/// One store's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StoreLoad {
    /// `sled` or `postgres`.
    pub store: &'static str,
    /// Hosts sharing the store, each driven at `concurrency / hosts`.
    pub hosts: usize,
    /// Sagas in flight at once, over all hosts.
    pub concurrency: usize,
    /// Sagas completed, over all hosts.
    pub sagas: u64,
    /// Sagas per second, over all hosts.
    pub sagas_per_s: f64,
    /// Median trigger → terminal latency, ms (the slower host's).
    pub p50_ms: f64,
    /// 99th percentile, ms (the slower host's).
    pub p99_ms: f64,
}

/// A scratch schema for the run: created here, dropped by [`Scratch::drop_schema`].
struct Scratch {
    client: tokio_postgres::Client,
    schema: String,
    url: String,
}

impl Scratch {
    async fn create(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", crate::domain::subscription::redact_password(url)))?;
        tokio::spawn(connection);
        let schema = format!("sagahost_bench_{}", uuid::Uuid::now_v7().simple());
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.context("creating the bench's schema")?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        Ok(Self { client, schema, url })
    }

    async fn drop_schema(self) -> anyhow::Result<()> {
        self.client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await?;
        Ok(())
    }
}

/// Drives `hosts` at `concurrency` in all (split evenly) for `phase`.
async fn load(store: &'static str, hosts: &[Host], concurrency: usize, phase: Duration) -> anyhow::Result<StoreLoad> {
    let opts = BenchOptions { phase, concurrency: vec![concurrency] };
    let progress = Arc::new(Progress::default());
    let each = (concurrency / hosts.len()).max(1);
    let runs = hosts.iter().map(|h| saga_load("http", each, &opts, h, &progress));
    let results: Vec<LoadResult> = futures::future::try_join_all(runs).await?;
    Ok(StoreLoad {
        store,
        hosts: hosts.len(),
        concurrency: each * hosts.len(),
        sagas: results.iter().map(|r| r.sagas).sum(),
        sagas_per_s: results.iter().map(|r| r.sagas_per_s).sum(),
        p50_ms: results.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
        p99_ms: results.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
    })
}

/// What `bench --store` measured.
#[derive(Clone, Debug, Serialize)]
pub struct StoresReport {
    /// Sagas/s and latency by store and hosts.
    pub loads: Vec<StoreLoad>,
    /// Fail-over from a killed host, at two lease lengths.
    pub failover: Vec<super::failover::Failover>,
}

/// Runs sled, then PostgreSQL at `url` with one and with two hosts, each for `phase` at
/// concurrency 64; then fail-over with leases of 2 s and of 10 s (the default).
pub async fn run(url: &str, phase: Duration) -> anyhow::Result<StoresReport> {
    let loads = loads(url, phase).await?;
    let mut failover = Vec::new();
    for lease in [Duration::from_secs(2), Duration::from_secs(10)] {
        let scratch = Scratch::create(url).await?;
        failover.push(super::failover::run(&scratch.url, lease, 200).await?);
        scratch.drop_schema().await?;
    }
    Ok(StoresReport { loads, failover })
}

async fn loads(url: &str, phase: Duration) -> anyhow::Result<Vec<StoreLoad>> {
    const CONCURRENCY: usize = 64;
    let mut out = Vec::new();
    let dir = tempfile::tempdir()?;
    let sled = start_bench_host(HostConfig::new(dir.path())).await?;
    out.push(load("sled", std::slice::from_ref(&sled), CONCURRENCY, phase).await?);
    sled.stop().await;

    let scratch = Scratch::create(url).await?;
    let mut config = HostConfig::new(dir.path());
    config.postgres = Some(PostgresConfig::new(&scratch.url));
    let first = start_bench_host(config.clone()).await?;
    out.push(load("postgres", std::slice::from_ref(&first), CONCURRENCY, phase).await?);
    // The second host finds the plugin and the saga the first one stored.
    let second = Host::start(config).await?;
    let both = [first, second];
    out.push(load("postgres", &both, CONCURRENCY, phase).await?);
    for h in both {
        h.stop().await;
    }
    scratch.drop_schema().await?;
    Ok(out)
}

/// Prints the figures as tables.
pub fn print(report: &StoresReport) {
    let loads = &report.loads;
    println!("three-step no-op sagas over HTTP, trigger → terminal, by store\n");
    println!(
        "  {:<9} {:>5} {:>5} {:>9} {:>10} {:>9} {:>9}",
        "store", "hosts", "conc", "sagas", "sagas/s", "p50 ms", "p99 ms"
    );
    for l in loads {
        println!(
            "  {:<9} {:>5} {:>5} {:>9} {:>10.0} {:>9.2} {:>9.2}",
            l.store, l.hosts, l.concurrency, l.sagas, l.sagas_per_s, l.p50_ms, l.p99_ms
        );
    }
    println!("\nfail-over: a host killed with executions waiting; from the kill until another host completed each\n");
    println!("  {:>8} {:>11} {:>10} {:>10}", "lease ms", "executions", "median ms", "max ms");
    for f in &report.failover {
        println!("  {:>8} {:>11} {:>10.0} {:>10.0}", f.lease_ms, f.executions, f.median_ms, f.max_ms);
    }
}
