//! What the client commands print for people: one [`Render`] per type the API answers with,
//! used by every command that shows that type (`--json` prints the same value re-serialized).

use serde_json::Value;

use crate::api::{Accepted, ExecutionList, PluginList, PluginState, SagaList, SecretList};
use crate::api::{DeadLetterList, Redrive, SubscriptionList};
use crate::domain::subscription::Target;
use crate::domain::{Event, EventRecord, ExecutionView, StepFailure};
use crate::orchestrator::SubscriptionView;
use crate::secrets::SecretInfo;
use crate::store::{PluginMeta, StateItem, StoredDefinition};

/// Text for people.
pub trait Render {
    /// The value as lines of text (no trailing newline).
    fn render(&self) -> String;
}

impl Render for ExecutionView {
    fn render(&self) -> String {
        let mut out = vec![
            format!("execution  {}", self.id),
            format!("saga       {} (definition v{})", self.saga, self.definition_version),
            format!("status     {}", self.status.as_str()),
        ];
        out.extend(self.key.as_ref().map(|k| format!("key        {k}")));
        out.extend(self.compensation_reason.as_ref().map(|r| format!("reason     {r}")));
        out.extend(self.failure_reason.as_ref().map(|r| format!("failure    {r}")));
        let rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.name.to_string(),
                    label(&s.status),
                    s.attempts.to_string(),
                    s.result.as_ref().map_or_else(none, short),
                    s.error.as_ref().map_or_else(none, failure),
                    s.compensation.as_ref().and_then(|c| c.result.as_ref()).map_or_else(none, short),
                ]
            })
            .collect();
        out.push(String::new());
        out.push(table(&["step", "status", "attempts", "result", "error", "compensation"], &rows));
        out.join("\n")
    }
}

impl Render for ExecutionList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .executions
            .iter()
            .map(|e| {
                let status = e.status.as_str().to_owned();
                let key = e.key.clone().unwrap_or_else(none);
                vec![e.id.to_string(), e.saga.to_string(), key, status, date_time(e.created_at), e.version.to_string()]
            })
            .collect();
        let mut out = table(&["id", "saga", "key", "status", "started", "events"], &rows);
        if let Some(next) = self.next {
            out.push_str(&format!("\nmore: --after {next}"));
        }
        out
    }
}

impl Render for PluginList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .plugins
            .iter()
            .map(|p| vec![p.name.to_string(), p.version.to_string(), p.size.to_string(), p.digest.clone()])
            .collect();
        table(&["name", "version", "size", "digest"], &rows)
    }
}

impl Render for PluginMeta {
    fn render(&self) -> String {
        [
            format!("plugin    {}@{}", self.name, self.version),
            format!("size      {} bytes", self.size),
            format!("sha256    {}", self.digest),
            format!("uploaded  {}", date_time(self.uploaded_at)),
        ]
        .join("\n")
    }
}

impl Render for crate::api::Published {
    fn render(&self) -> String {
        table(&["id", "seq", "duplicate"], &[vec![self.id.clone(), self.seq.to_string(), self.duplicate.to_string()]])
    }
}

impl Render for SecretList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self.secrets.iter().map(secret_row).collect();
        table(&["name", "updated", "at rest"], &rows)
    }
}

impl Render for SecretInfo {
    fn render(&self) -> String {
        table(&["name", "updated", "at rest"], &[secret_row(self)])
    }
}

fn subscription_row(s: &SubscriptionView) -> Vec<String> {
    let sub = &s.subscription;
    let target = match &sub.target {
        Target::Webhook { url, .. } => format!("webhook {url}"),
        Target::RedisStream { url, stream, .. } => format!("redis {url} {stream}"),
    };
    let status = s.status.as_ref().map_or_else(none, |st| {
        let failing =
            if st.failing { format!(", failing: {}", st.last_error.as_deref().unwrap_or("?")) } else { String::new() };
        format!("{} delivered, {} dead-lettered{failing}", st.delivered, st.dead_lettered)
    });
    vec![sub.name.clone(), sub.topics.join(" "), target, s.cursor.to_string(), status]
}

const SUBSCRIPTION_HEADER: [&str; 5] = ["name", "topics", "target", "cursor", "since the host started"];

impl Render for SubscriptionList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self.subscriptions.iter().map(subscription_row).collect();
        table(&SUBSCRIPTION_HEADER, &rows)
    }
}

impl Render for SubscriptionView {
    fn render(&self) -> String {
        table(&SUBSCRIPTION_HEADER, &[subscription_row(self)])
    }
}

impl Render for DeadLetterList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .dead_letters
            .iter()
            .map(|l| {
                let redrive = if l.redrive { " (redrive pending)" } else { "" };
                vec![
                    l.seq.to_string(),
                    l.event_id.clone(),
                    l.topic.clone(),
                    l.attempts.to_string(),
                    format!("{}{redrive}", l.error),
                ]
            })
            .collect();
        table(&["seq", "event", "topic", "attempts", "last error"], &rows)
    }
}

impl Render for Redrive {
    fn render(&self) -> String {
        table(&["redriving"], &[vec![self.redriving.to_string()]])
    }
}

fn secret_row(s: &SecretInfo) -> Vec<String> {
    let at_rest = if s.encrypted { "encrypted" } else { "in clear" };
    vec![s.name.clone(), date_time(s.updated_at), at_rest.into()]
}

impl Render for SagaList {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .sagas
            .iter()
            .map(|s| {
                let steps: Vec<String> = s.definition.steps.iter().map(|st| st.name.to_string()).collect();
                vec![s.name.to_string(), s.version.to_string(), steps.join(" → ")]
            })
            .collect();
        table(&["name", "version", "steps"], &rows)
    }
}

impl Render for StoredDefinition {
    fn render(&self) -> String {
        let deadline = self.definition.deadline_ms.map_or_else(|| "none".into(), |ms| format!("{ms} ms"));
        let rows: Vec<Vec<String>> = self
            .definition
            .steps
            .iter()
            .map(|s| {
                let (runs, timeout, attempts) = match (&s.plugin, &s.wait_for) {
                    (Some(p), _) => (p.to_string(), s.timeout_ms, s.retry.max_attempts.to_string()),
                    (None, Some(w)) => (format!("wait for {}", w.topics.join(" | ")), w.timeout_ms, "-".into()),
                    (None, None) => (none(), s.timeout_ms, "-".into()),
                };
                vec![
                    s.name.to_string(),
                    runs,
                    s.compensation.as_ref().map_or_else(none, ToString::to_string),
                    format!("{timeout} ms"),
                    attempts,
                    label(&s.on_failure),
                ]
            })
            .collect();
        [
            format!("saga      {} (version {}, defined {})", self.name, self.version, date_time(self.created_at)),
            format!("deadline  {deadline}"),
            String::new(),
            table(&["step", "plugin", "compensation", "timeout", "attempts", "on failure"], &rows),
        ]
        .join("\n")
    }
}

impl Render for PluginState {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| vec![e.collection.clone(), e.key.clone(), e.version.to_string(), state_value(e)])
            .collect();
        let mut out = table(&["collection", "key", "version", "value"], &rows);
        if self.truncated {
            out.push_str("\n(more entries match: raise --limit or narrow --collection/--prefix)");
        }
        out
    }
}

impl Render for EventRecord {
    fn render(&self) -> String {
        let mut line = format!("{:>4}  {}  {}", self.seq, clock(self.at), self.event.type_name());
        match &self.event {
            Event::StepStarted { step, attempt }
            | Event::StepCompleted { step, attempt, .. }
            | Event::CompensationStepStarted { step, attempt }
            | Event::CompensationStepCompleted { step, attempt, .. } => line.push_str(&format!("  {step}#{attempt}")),
            Event::StepFailed { step, attempt, error, .. }
            | Event::CompensationStepFailed { step, attempt, error, .. } => {
                line.push_str(&format!("  {step}#{attempt}  {}", failure(error)))
            }
            Event::CompensationStarted { reason } | Event::ExecutionFailed { reason } => {
                line.push_str(&format!("  ({reason})"))
            }
            Event::SignalReceived { topic, payload, .. } => line.push_str(&format!("  {topic}  {}", short(payload))),
            Event::ExecutionStarted { .. }
            | Event::ExecutionCompleted
            | Event::CancelRequested
            | Event::DeadlineExceeded
            | Event::ExecutionCompensated
            | Event::ResumeRequested => {}
        }
        for c in self.event.http_calls() {
            let outcome =
                c.status.map_or_else(|| c.error.clone().unwrap_or_else(|| "no response".into()), |s| s.to_string());
            line.push_str(&format!(
                "\n        http {} {}://{}{}  {outcome}  {} ms  sent {} B  received {} B",
                c.method, c.scheme, c.host, c.path, c.duration_ms, c.request_bytes, c.response_bytes
            ));
        }
        line
    }
}

impl Render for [EventRecord] {
    fn render(&self) -> String {
        self.iter().map(Render::render).collect::<Vec<_>>().join("\n")
    }
}

impl Render for Vec<EventRecord> {
    fn render(&self) -> String {
        self.as_slice().render()
    }
}

impl Render for Accepted {
    fn render(&self) -> String {
        format!("execution {}: {}", self.id, self.status.as_str())
    }
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(&header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>())];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

fn none() -> String {
    "-".into()
}

/// A JSON value in at most 60 characters.
fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
}

/// A unit enum's name as the API spells it.
fn label(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn failure(f: &StepFailure) -> String {
    format!("{}: {}", f.kind.as_str(), f.message)
}

fn state_value(e: &StateItem) -> String {
    match (&e.json, &e.bytes_base64) {
        (Some(json), _) => json.to_string(),
        (None, Some(b64)) => format!("(bytes, base64) {b64}"),
        // The API leaves out `json` only for bytes, and a JSON `null` decodes to `None`.
        (None, None) => "null".into(),
    }
}

/// Milliseconds since the unix epoch as UTC `HH:MM:SS.mmm`.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60, ms % 1000)
}

/// Milliseconds since the unix epoch as UTC `YYYY-MM-DD HH:MM:SS`.
fn date_time(ms: u64) -> String {
    // Days to a proleptic Gregorian date: Howard Hinnant's `civil_from_days`.
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {}", &clock(ms)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_utc() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(date_time(1_795_000_000_123), "2026-11-18 11:06:40");
        assert_eq!(clock(1_795_000_000_123), "11:06:40.123");
    }

    #[test]
    fn tables_align_and_long_values_are_cut() {
        let rows = vec![vec!["a".into(), "-".into()], vec!["longer".into(), "x".into()]];
        assert_eq!(table(&["k", "v"], &rows), "K       V\na       -\nlonger  x");
        assert_eq!(short(&Value::String("x".repeat(80))).chars().count(), 60);
    }

    #[test]
    fn events_render_as_one_line_each() {
        let rec: EventRecord = serde_json::from_value(serde_json::json!({"seq": 4, "at": 1_000, "type": "step_failed",
            "step": "pay", "attempt": 2, "error": {"kind": "timeout", "message": "slow"}, "retry_at_unix_ms": null}))
        .unwrap();
        assert_eq!(rec.render(), "   4  00:00:01.000  step_failed  pay#2  timeout: slow");
        let rec: EventRecord =
            serde_json::from_value(serde_json::json!({"seq": 5, "at": 1_000, "type": "step_completed",
            "step": "pay", "attempt": 3, "result": {}, "http": [{"method": "POST", "scheme": "https",
            "host": "pay.example.com", "path": "/charge", "status": 201, "duration_ms": 12, "request_bytes": 20,
            "response_bytes": 7}]}))
            .unwrap();
        assert_eq!(
            rec.render(),
            "   5  00:00:01.000  step_completed  pay#3\n        http POST https://pay.example.com/charge  201  12 ms  sent 20 B  received 7 B"
        );
    }
}
