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

/// Labels of a subscription's deliveries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The subscription.
    pub subscription: String,
    /// `delivered`, `failed` (an attempt that will be retried or dead-lettered) or `dead_lettered`.
    pub outcome: String,
}

/// Labels of a stream ingress's entries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressLabels {
    /// The stream.
    pub stream: String,
    /// `recorded`, `duplicate` (an event with its id was in the log) or `refused` (unusable).
    pub outcome: String,
}

/// Labels of one subscription.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    /// The subscription.
    pub subscription: String,
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
    /// Events handed to subscriptions' targets, by subscription and outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Time from an event's record in the log to its delivery, by subscription.
    pub delivery_lag_seconds: Family<SubscriptionLabels, Histogram, fn() -> Histogram>,
    /// Stream entries read by an ingress, by stream and outcome.
    pub ingress_entries: Family<IngressLabels, Counter>,
    /// Ended executions removed by retention.
    pub retention_removed: Counter,
    /// Idempotency keys forgotten by retention.
    pub retention_keys_forgotten: Counter,
    /// The slowest store commit since it was last taken, microseconds (for `bench --sustain`;
    /// not exported).
    pub store_commit_max_us: std::sync::atomic::AtomicU64,
    /// Of it, the slowest apply of a group's batch (sled), microseconds (not exported).
    pub store_apply_max_us: std::sync::atomic::AtomicU64,
    /// Of it, the slowest flush after a group's batch (sled), microseconds (not exported).
    pub store_flush_max_us: std::sync::atomic::AtomicU64,
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
            deliveries: Family::default(),
            delivery_lag_seconds: Family::new_with_constructor(seconds_histogram),
            ingress_entries: Family::default(),
            retention_removed: Counter::default(),
            retention_keys_forgotten: Counter::default(),
            store_commit_max_us: std::sync::atomic::AtomicU64::new(0),
            store_apply_max_us: std::sync::atomic::AtomicU64::new(0),
            store_flush_max_us: std::sync::atomic::AtomicU64::new(0),
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
        registry.register(
            "active_executions",
            "Unfinished executions this process holds (driven now or parked until a retry or deadline)",
            m.active_executions.clone(),
        );
        registry.register(
            "retention_removed_executions",
            "Ended executions removed by retention (docs/operations.md#retention)",
            m.retention_removed.clone(),
        );
        registry.register(
            "retention_forgotten_keys",
            "Idempotency keys forgotten by retention when their window passed",
            m.retention_keys_forgotten.clone(),
        );
        registry.register(
            "quarantined_executions",
            "Executions set aside because their stored stream cannot be read (GET /v1/quarantine)",
            m.quarantined_executions.clone(),
        );
        registry.register(
            "deliveries",
            "Events handed to subscriptions' targets, by subscription and outcome (delivered, failed, dead_lettered)",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_lag_seconds",
            "Time from an event's record in the topic log to its delivery, by subscription",
            m.delivery_lag_seconds.clone(),
        );
        registry.register(
            "ingress_entries",
            "Redis stream entries read by an ingress, by stream and outcome (recorded, duplicate, refused)",
            m.ingress_entries.clone(),
        );
        Self { registry, ..m }
    }

    /// Every metric, in `format`.
    pub fn render(&self, format: Exposition) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        match format {
            Exposition::OpenMetrics => out,
            Exposition::Prometheus => openmetrics_to_prometheus(&out),
        }
    }
}

/// The text formats `GET /metrics` answers in (docs/operations.md, "Metrics").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0, what `prometheus-client` writes.
    OpenMetrics,
    /// Prometheus' text format 0.0.4, for scrapers that do not read OpenMetrics.
    Prometheus,
}

impl Exposition {
    /// The format a scraper's `Accept` header prefers: the Prometheus text format when it ranks
    /// `text/plain` above OpenMetrics (explicitly or through a wildcard), OpenMetrics otherwise,
    /// also on a tie and without the header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut openmetrics, mut text, mut any) = (None::<f32>, None::<f32>, None::<f32>);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse().unwrap_or(0.0));
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" => &mut text,
                "*/*" => &mut any,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |best| best.max(q)));
        }
        let openmetrics = openmetrics.or(any).unwrap_or(0.0);
        let text = text.or(any).unwrap_or(0.0);
        if text > openmetrics { Self::Prometheus } else { Self::OpenMetrics }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Rewrites `prometheus-client`'s OpenMetrics text as the Prometheus text format 0.0.4. Samples
/// stay as they are, so a counter's sample keeps its `_total` in both formats; what differs is
/// the family a sample belongs to. OpenMetrics names a counter family without `_total`, 0.0.4
/// names it after its samples, so a counter's `HELP` and `TYPE` lines take the `_total` here;
/// `# UNIT` and `# EOF` do not exist in 0.0.4 and are dropped.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.find(' ').map_or((rest, ""), |i| rest.split_at(i));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix}{tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fresh set with one sample in every family (the process-wide one is shared by tests).
    fn filled() -> Metrics {
        let m = Metrics::new();
        let saga = SagaLabels { saga: "s".into() };
        let finished = FinishedLabels { saga: "s".into(), status: "completed".into() };
        let attempt = AttemptLabels { saga: "s".into(), side: "execute".into() };
        let failure = FailureLabels { saga: "s".into(), side: "execute".into(), kind: "trap".into() };
        m.executions_started.get_or_create(&saga).inc();
        m.executions_finished.get_or_create(&finished).inc();
        m.execution_seconds.get_or_create(&finished).observe(0.5);
        m.step_attempts.get_or_create(&attempt).inc();
        m.step_failures.get_or_create(&failure).inc();
        m.step_seconds.get_or_create(&attempt).observe(0.01);
        m.store_batch_writes.observe(3.0);
        m.instances_in_use.set(2);
        m
    }

    /// Family name → type, and every sample name, of a text exposition.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                samples.push(line.split(['{', ' ']).next().unwrap().to_owned());
            }
        }
        (types, samples)
    }

    /// The type of the family a sample belongs to under each format's rules: in OpenMetrics a
    /// counter family `x` has samples `x_total`; in 0.0.4 a counter is named as its samples.
    fn family_type<'a>(types: &'a BTreeMap<String, String>, sample: &str, openmetrics: bool) -> Option<&'a str> {
        let suffixed = |suffix: &str, kind: &str| {
            let base = sample.strip_suffix(suffix)?;
            types.get(base).map(String::as_str).filter(|k| *k == kind)
        };
        let exact =
            types.get(sample).map(String::as_str).filter(|k| *k == "gauge" || (!openmetrics && *k == "counter"));
        exact
            .or_else(|| if openmetrics { suffixed("_total", "counter") } else { None })
            .or_else(|| ["_bucket", "_sum", "_count"].into_iter().find_map(|s| suffixed(s, "histogram")))
    }

    #[test]
    fn both_formats_have_the_same_samples_each_in_a_family_of_its_type() {
        let m = filled();
        let openmetrics = m.render(Exposition::OpenMetrics);
        let prometheus = m.render(Exposition::Prometheus);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(!prometheus.contains("# EOF") && !prometheus.contains("# UNIT"), "{prometheus}");
        let (om_types, om_samples) = parse(&openmetrics);
        let (prom_types, prom_samples) = parse(&prometheus);
        assert_eq!(om_samples, prom_samples, "sample names differ");
        assert!(om_samples.contains(&"sagahost_executions_started_total".to_owned()), "{om_samples:?}");
        assert_eq!(om_types.get("sagahost_executions_started").map(String::as_str), Some("counter"));
        assert_eq!(prom_types.get("sagahost_executions_started_total").map(String::as_str), Some("counter"));
        for sample in &om_samples {
            let om = family_type(&om_types, sample, true);
            let prom = family_type(&prom_types, sample, false);
            assert!(om.is_some(), "OpenMetrics: {sample} belongs to no family of its type");
            assert_eq!(om, prom, "{sample}: the two formats disagree on its type");
        }
        // Every family has its HELP under the same name as its TYPE.
        for (text, types) in [(&openmetrics, &om_types), (&prometheus, &prom_types)] {
            for name in types.keys() {
                assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
            }
        }
        assert_eq!(om_types.len(), prom_types.len());
        assert!(om_types.len() >= 12, "{om_types:?}");
    }

    #[test]
    fn the_scraper_chooses_the_format() {
        use Exposition::{OpenMetrics, Prometheus};
        let prometheus_3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
            application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
            text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        let cases = [
            (None, OpenMetrics),
            (Some("*/*"), OpenMetrics),
            (Some(prometheus_3), OpenMetrics),
            (Some("application/openmetrics-text; version=1.0.0"), OpenMetrics),
            (Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), Prometheus),
            (Some("text/plain; version=0.0.4"), Prometheus),
            (Some("TEXT/PLAIN"), Prometheus),
            (Some("application/openmetrics-text;q=0.2, text/plain;q=0.9"), Prometheus),
            (Some("text/plain, application/openmetrics-text"), OpenMetrics),
            (Some("application/json"), OpenMetrics),
            (Some("text/plain;q=0"), OpenMetrics),
        ];
        for (accept, want) in cases {
            assert_eq!(Exposition::negotiate(accept), want, "{accept:?}");
        }
    }
}
