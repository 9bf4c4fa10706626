//! Prometheus metrics (`GET /metrics`), kept with the maintained `prometheus-client` crate.
//! One process-wide set: the host has one store, one runtime and one orchestrator.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a saga.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaLabels {
    /// Saga name.
    pub saga: String,
}

/// Labels naming a saga and a final status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    /// Saga name.
    pub saga: String,
    /// Terminal status.
    pub status: String,
}

/// Labels of a step attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Saga name.
    pub saga: String,
    /// `execute` or `compensate`.
    pub side: String,
}

/// Labels of a failed attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Saga name.
    pub saga: String,
    /// `execute` or `compensate`.
    pub side: String,
    /// Failure kind.
    pub kind: String,
}

/// Labels of a plugin's outbound HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The URL's host (with its port when not the scheme's default).
    pub host: String,
    /// The response status, or `error` when there was none (refused, failed, timed out).
    pub status: String,
}

fn seconds_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    /// Executions started, by saga.
    pub executions_started: Family<SagaLabels, Counter>,
    /// Executions finished, by saga and status.
    pub executions_finished: Family<FinishedLabels, Counter>,
    /// Execution duration (start → terminal), by saga and status.
    pub execution_seconds: Family<FinishedLabels, Histogram, fn() -> Histogram>,
    /// Step attempts, by saga and side.
    pub step_attempts: Family<AttemptLabels, Counter>,
    /// Failed step attempts, by saga, side and kind.
    pub step_failures: Family<FailureLabels, Counter>,
    /// Step attempt duration, by saga and side.
    pub step_seconds: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    /// Writes merged into each store commit.
    pub store_batch_writes: Histogram,
    /// Duration of each store commit (apply + flush).
    pub store_commit_seconds: Histogram,
    /// Wasm instantiation time.
    pub instantiate_seconds: Histogram,
    /// Plugins' outbound HTTP requests, by host and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Plugin instances alive now.
    pub instances_in_use: Gauge,
    /// Executions driven by this process now.
    pub active_executions: Gauge,
    /// Executions set aside because their stored stream cannot be read.
    pub quarantined_executions: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("sagahost");
        let m = Self {
            executions_started: Family::default(),
            executions_finished: Family::default(),
            execution_seconds: Family::new_with_constructor(seconds_histogram),
            step_attempts: Family::default(),
            step_failures: Family::default(),
            step_seconds: Family::new_with_constructor(seconds_histogram),
            store_batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            store_commit_seconds: seconds_histogram(),
            instantiate_seconds: seconds_histogram(),
            http_requests: Family::default(),
            instances_in_use: Gauge::default(),
            active_executions: Gauge::default(),
            quarantined_executions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("executions_started", "Executions started", m.executions_started.clone());
        registry.register(
            "executions_finished",
            "Executions that reached a terminal status",
            m.executions_finished.clone(),
        );
        registry.register(
            "execution_duration_seconds",
            "Execution start to terminal status",
            m.execution_seconds.clone(),
        );
        registry.register("step_attempts", "Step attempts run", m.step_attempts.clone());
        registry.register("step_failures", "Step attempts that failed, by kind", m.step_failures.clone());
        registry.register("step_duration_seconds", "Step attempt duration", m.step_seconds.clone());
        registry.register("store_batch_writes", "Writes merged into one store commit", m.store_batch_writes.clone());
        registry.register(
            "store_commit_duration_seconds",
            "Store commit (apply and flush) duration",
            m.store_commit_seconds.clone(),
        );
        registry.register(
            "wasm_instantiate_duration_seconds",
            "Fresh plugin instance creation",
            m.instantiate_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "Plugins' outbound HTTP requests, by host and status (error: no response)",
            m.http_requests.clone(),
        );
        registry.register("instances_in_use", "Plugin instances alive", m.instances_in_use.clone());
        registry.register("active_executions", "Executions driven by this process", m.active_executions.clone());
        registry.register(
            "quarantined_executions",
            "Executions set aside because their stored stream cannot be read (GET /v1/quarantine)",
            m.quarantined_executions.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Records a duration in a histogram, in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}
