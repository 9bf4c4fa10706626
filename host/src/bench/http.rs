//! `sagahost bench --http`: what one loopback HTTP call from a plugin adds to a step, beside
//! the same call made by the host itself.
//!
//! A small server on `127.0.0.1` answers `GET /` with 200 and a 2-byte body. One after the
//! other, round-robin so that any drift of the machine touches all four alike:
//! - the host's own call, on a new connection each time (what a plugin's call does: the host
//!   opens a connection per request and closes it with the attempt) and on one kept-alive
//!   connection (hyper, HTTP/1.1, TCP_NODELAY);
//! - a step without the call and a step with it: [`Runtime::invoke`] of the `bench-http` plugin
//!   (a fresh sandboxed instance per step), with input `{}` or `{"url": ..}`, the step granted
//!   the server's origin. Full sagas are left out so the figure isolates the call.
//!
//! The added cost per step is the difference of the two steps' medians (and of their 99th
//! percentiles): the grant and address checks, the `Idempotency-Key` and `traceparent`
//! headers, the connection, the wasi-http plumbing and the guest SDK's client. One request at a
//! time, so these are latencies, not throughput.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::client::Conn;
use super::measure::percentile;
use crate::domain::{HttpGrant, Side};
use crate::runtime::{Call, HttpAccess, Limits, PluginPre, Runtime};

/// The plugin: one `GET` of `url` through `saga_guest::http` when the input has one, else nothing.
pub const BENCH_HTTP_WASM: &[u8] = include_bytes!(concat!(env!("SAGAHOST_PLUGIN_DIR"), "/bench_http.wasm"));

/// Rounds run before measuring (connections, caches, the allocator warmed).
const WARM_UP: usize = 200;

/// Median and 99th percentile of one measured operation, microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl Spread {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Self { p50_us: percentile(&samples, 0.50), p99_us: percentile(&samples, 0.99) }
    }
}

/// What `bench --http` measured.
#[derive(Clone, Debug, Serialize)]
pub struct HttpReport {
    /// Cores the machine offers.
    pub cores: usize,
    /// Samples of each operation.
    pub samples: usize,
    /// The host's own `GET`, a new connection each time.
    pub host_new_connection: Spread,
    /// The host's own `GET` on one kept-alive connection.
    pub host_kept_alive: Spread,
    /// A step (fresh instance + `execute`) of the plugin making no call.
    pub step_without_call: Spread,
    /// The same step making one `GET`.
    pub step_with_call: Spread,
    /// `step_with_call` − `step_without_call`: what the call adds to a step.
    pub added_by_call: Spread,
}

/// Runs the measurement for `phase`.
pub async fn run(phase: Duration) -> anyhow::Result<HttpReport> {
    let addr = serve().await?;
    let origin = format!("http://{addr}");
    let runtime = Runtime::new(Limits::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let rt = runtime.clone();
    let (_, pre) = tokio::task::spawn_blocking(move || rt.compile(BENCH_HTTP_WASM)).await??;
    let grant = HttpGrant::parse(&origin).map_err(anyhow::Error::msg)?;
    let with_call = format!(r#"{{"url": "{origin}/"}}"#);
    let step = |input: &str| call(input, grant.clone());
    let mut kept_alive = Conn::connect(addr, "/").await?;

    let mut samples: [Vec<f64>; 4] = Default::default();
    let start = Instant::now();
    let mut round = 0;
    while round < WARM_UP || start.elapsed() < phase {
        let timings = [
            timed(async { expect_ok(Conn::connect(addr, "/").await?.get().await?.0) }).await?,
            timed(async { expect_ok(kept_alive.get().await?.0) }).await?,
            timed(invoke(&runtime, &pre, step("{}"))).await?,
            timed(invoke(&runtime, &pre, step(&with_call))).await?,
        ];
        round += 1;
        if round > WARM_UP {
            for (all, t) in samples.iter_mut().zip(timings) {
                all.push(t);
            }
        }
    }
    let [host_new, host_kept, without, with] = samples;
    let n = without.len();
    let (without, with) = (Spread::of(without), Spread::of(with));
    let added_by_call = Spread { p50_us: with.p50_us - without.p50_us, p99_us: with.p99_us - without.p99_us };
    Ok(HttpReport {
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        samples: n,
        host_new_connection: Spread::of(host_new),
        host_kept_alive: Spread::of(host_kept),
        step_without_call: without,
        step_with_call: with,
        added_by_call,
    })
}

/// The loopback server: `GET /` answers 200 `ok`.
async fn serve() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    // Accepted connections get TCP_NODELAY, as the host's own server gives them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "bench server stopped");
        }
    });
    Ok(addr)
}

/// One attempt of the bench plugin with `input`, granted `grant`.
fn call(input: &str, grant: HttpGrant) -> Call {
    Call {
        side: Side::Execute,
        execution_id: "bench".into(),
        saga: "bench".into(),
        step: "http".into(),
        attempt: 1,
        idempotency_key: "bench/http".into(),
        execution_key: None,
        deadline_unix_ms: 0,
        timeout: Duration::from_secs(5),
        input: format!(r#"{{"input": {input}}}"#),
        state: None,
        config: Default::default(),
        http: HttpAccess { grants: vec![grant], traceparent: None },
    }
}

async fn invoke(runtime: &Runtime, pre: &PluginPre, call: Call) -> anyhow::Result<()> {
    let done = runtime.invoke(pre, call).await.map_err(|f| anyhow::anyhow!("bench step failed: {}", f.message))?;
    if done.output.contains("\"status\":null") || done.output.contains("\"status\":200") {
        return Ok(());
    }
    bail!("bench step answered {}", done.output)
}

fn expect_ok(status: hyper::StatusCode) -> anyhow::Result<()> {
    if status != hyper::StatusCode::OK {
        bail!("the loopback server answered {status}");
    }
    Ok(())
}

/// How long `op` took, microseconds.
async fn timed(op: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    op.await.context("a measured operation failed")?;
    Ok(t0.elapsed().as_secs_f64() * 1e6)
}

/// Prints the report as a table.
#[allow(clippy::print_stdout)]
pub fn print(r: &HttpReport) {
    println!("sagahost bench --http — {} cores, one request at a time, {} samples each\n", r.cores, r.samples);
    println!("  {:<60} {:>10} {:>10}", "loopback GET, 200 with a 2-byte body", "p50 µs", "p99 µs");
    let row = |name: &str, s: &Spread| println!("  {name:<60} {:>10.1} {:>10.1}", s.p50_us, s.p99_us);
    row("host's own call, new connection each time (hyper)", &r.host_new_connection);
    row("host's own call, kept-alive connection (hyper)", &r.host_kept_alive);
    row("step without the call (fresh instance + execute)", &r.step_without_call);
    row("step with one call (saga_guest::http through wasi:http)", &r.step_with_call);
    println!();
    row("added per step by one call (with − without)", &r.added_by_call);
}
