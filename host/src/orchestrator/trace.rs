//! The W3C `traceparent` an attempt's outbound requests carry (docs/plugins.md, "Outbound
//! HTTP"): the attempt span's own when spans are exported over OTLP, so a called service joins
//! the host's trace; otherwise one derived from the execution and the attempt, stable across
//! restarts, so the called service can still correlate requests of one execution.

use opentelemetry::trace::TraceContextExt;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `00-<trace id>-<span id>-<flags>` for the attempt running in `span`.
pub(super) fn traceparent(span: &tracing::Span, execution_id: &str, idempotency_key: &str, attempt: u32) -> String {
    let context = span.context();
    let sc = context.span().span_context().clone();
    if sc.is_valid() {
        return format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    }
    // Execution ids are UUIDs: their 32 hex digits are a valid trace id.
    let trace: String = execution_id.chars().filter(char::is_ascii_hexdigit).collect();
    let trace = if trace.len() == 32 && trace.chars().any(|c| c != '0') {
        trace.to_ascii_lowercase()
    } else {
        hex::encode(&Sha256::digest(execution_id.as_bytes())[..16])
    };
    let span_id = hex::encode(&Sha256::digest(format!("{idempotency_key}#{attempt}").as_bytes())[..8]);
    format!("00-{trace}-{span_id}-00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_exported_spans_the_trace_is_the_execution() {
        let span = tracing::Span::none();
        let t = traceparent(&span, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "k", 1);
        assert!(t.starts_with("00-0190a1b2c3d47e5f8a9b0c1d2e3f4a5b-"), "{t}");
        assert_eq!(t.len(), 55);
        assert_ne!(t, traceparent(&span, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "k", 2));
    }
}
