//! Saga definitions: the JSON users submit, its validation, and the canonical stored form.
//!
//! Parsing is two-staged so users get every problem at once: a loose document is
//! deserialized first (a syntax or type error is reported as malformed), then every
//! semantic rule is checked and all violations are listed together.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize};

use super::http::HttpGrant;
use super::ids::{PluginRef, StepName};
use super::topic::Trigger;

/// How a step's failure affects the saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Give up the saga and compensate the completed steps (the default).
    Compensate,
    /// A non-critical side effect: record the failure and go on with the next step.
    Continue,
}

/// Exponential backoff between attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff_ms: u64,
    /// Factor applied to the wait after each failed attempt (at least 1.0).
    pub multiplier: f64,
    /// Upper bound of any single wait.
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// The default for a step: three attempts, 1 s then 2 s apart.
    pub fn step_default() -> Self {
        Self { max_attempts: 3, initial_backoff_ms: 1_000, multiplier: 2.0, max_backoff_ms: 60_000 }
    }

    /// The default for a compensation: many attempts, because giving up needs an operator.
    pub fn compensation_default() -> Self {
        Self { max_attempts: 20, initial_backoff_ms: 1_000, multiplier: 2.0, max_backoff_ms: 60_000 }
    }

    /// The wait after failed attempt number `attempt` (1-based) of this policy's budget.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(1_000) as i32;
        let wait = self.initial_backoff_ms as f64 * self.multiplier.powi(exp);
        if wait.is_finite() { (wait as u64).min(self.max_backoff_ms) } else { self.max_backoff_ms }
    }
}

/// One validated step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepDefinition {
    /// Unique within the definition.
    pub name: StepName,
    /// The plugin whose `execute` performs the step; `None` for a wait step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// The plugin whose `compensate` undoes it; `None`: nothing to undo.
    pub compensation: Option<PluginRef>,
    /// Per-attempt time limit.
    pub timeout_ms: u64,
    /// Retries of `execute`.
    pub retry: RetryPolicy,
    /// Retries of `compensate`.
    pub compensation_retry: RetryPolicy,
    /// What a failure of this step does to the saga.
    pub on_failure: OnFailure,
    /// Origins `execute` may call over HTTP (docs/definitions.md); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub allow_http: Vec<HttpGrant>,
    /// Origins `compensate` may call; `None`: the same as `allow_http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub compensate_allow_http: Option<Vec<HttpGrant>>,
    /// Named values its plugins read through `wasi:config/store` (execute and compensate).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Names of stored secrets its plugins read through `wasi:config/store`, beside `config`
    /// (docs/secrets.md). Only names: values never enter a definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// A wait step: what it waits for instead of calling a plugin (docs/definitions.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
    /// Topics (of `wait_for`) that fail the wait step instead of completing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_on: Vec<String>,
}

/// What a wait step waits for: a signal on one of its topics, for at most `timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitFor {
    /// Topics that end the wait.
    pub topics: Vec<String>,
    /// How long the wait may last, from its start; then the step fails with kind `timeout`.
    pub timeout_ms: u64,
}

impl StepDefinition {
    /// The origins the given side may call.
    pub fn http_grants(&self, compensating: bool) -> &[HttpGrant] {
        match (&self.compensate_allow_http, compensating) {
            (Some(grants), true) => grants,
            _ => &self.allow_http,
        }
    }
}

/// A validated saga definition, with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaDefinition {
    /// Bound on the whole execution; `None`: no deadline.
    pub deadline_ms: Option<u64>,
    /// How long an ended execution of this saga is kept; `None`: the host's `--retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
    /// The steps, run in this order.
    pub steps: Vec<StepDefinition>,
    /// Events that start an execution of this saga (docs/topics.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

impl SagaDefinition {
    /// The step called `name`, with its position.
    pub fn step(&self, name: &StepName) -> Option<(usize, &StepDefinition)> {
        self.steps.iter().enumerate().find(|(_, s)| &s.name == name)
    }

    /// Every plugin the definition names (execute and compensate), without repeats.
    pub fn plugins(&self) -> Vec<&PluginRef> {
        let mut seen = Vec::new();
        for s in &self.steps {
            for p in s.plugin.iter().chain(s.compensation.as_ref()) {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
        seen
    }
}

/// Bounds applied while validating definitions (configurable by the operator).
#[derive(Clone, Debug)]
pub struct DefinitionLimits {
    /// Most steps in one definition.
    pub max_steps: usize,
    /// Largest `timeout_ms`.
    pub max_timeout_ms: u64,
    /// Largest `deadline_ms`.
    pub max_deadline_ms: u64,
    /// Largest `max_attempts`.
    pub max_attempts: u32,
    /// Largest backoff value.
    pub max_backoff_ms: u64,
}

impl Default for DefinitionLimits {
    fn default() -> Self {
        Self {
            max_steps: 64,
            max_timeout_ms: 15 * 60 * 1_000,
            max_deadline_ms: 30 * 24 * 3_600 * 1_000,
            max_attempts: 1_000,
            max_backoff_ms: 24 * 3_600 * 1_000,
        }
    }
}

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    /// Not JSON, or JSON of the wrong shape (a type error, an unknown field).
    #[error("malformed definition: {0}")]
    Malformed(String),
    /// Well-formed, but breaking rules; every problem found is listed.
    #[error("invalid definition: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Shortest `retain_ms` (one second).
pub const MIN_RETAIN_MS: u64 = 1_000;
/// Longest `retain_ms` (3,650 days).
pub const MAX_RETAIN_MS: u64 = 3_650 * 24 * 3_600 * 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionDoc {
    #[serde(default)]
    deadline_ms: Option<i64>,
    #[serde(default)]
    retain_ms: Option<i64>,
    steps: Vec<StepDoc>,
    #[serde(default)]
    triggers: Vec<TriggerDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerDoc {
    topic: String,
    key: String,
}

/// Most triggers of one saga.
const MAX_TRIGGERS: usize = 16;

fn triggers(docs: &[TriggerDoc], problems: &mut Vec<String>) -> Vec<Trigger> {
    if docs.len() > MAX_TRIGGERS {
        problems.push(format!("triggers has at most {MAX_TRIGGERS} entries, got {}", docs.len()));
    }
    let mut out: Vec<Trigger> = Vec::new();
    for (i, t) in docs.iter().enumerate() {
        if let Err(e) = super::ids::check_name("topic", &t.topic) {
            problems.push(format!("triggers[{i}].topic: {e}"));
        } else if out.iter().any(|o| o.topic == t.topic) {
            problems.push(format!("triggers[{i}].topic: {:?} has a trigger already", t.topic));
        }
        if let Err(e) = super::topic::check_key_path(&t.key) {
            problems.push(format!("triggers[{i}].key: {e}"));
        }
        out.push(Trigger { topic: t.topic.clone(), key: t.key.clone() });
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    name: String,
    #[serde(default)]
    plugin: Option<String>,
    #[serde(default)]
    wait_for: Option<WaitDoc>,
    #[serde(default)]
    fail_on: Vec<String>,
    // Absent: same plugin as `plugin`; explicit null: nothing to undo.
    #[serde(default, deserialize_with = "present")]
    compensation: Option<Option<String>>,
    #[serde(default)]
    timeout_ms: Option<i64>,
    #[serde(default)]
    retry: Option<RetryDoc>,
    #[serde(default)]
    compensation_retry: Option<RetryDoc>,
    #[serde(default)]
    on_failure: Option<OnFailure>,
    #[serde(default)]
    allow_http: Vec<String>,
    #[serde(default)]
    compensate_allow_http: Option<Vec<String>>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitDoc {
    topics: Vec<String>,
    timeout_ms: i64,
}

/// A retry policy as written (every field optional).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryDoc {
    #[serde(default)]
    max_attempts: Option<i64>,
    #[serde(default)]
    initial_backoff_ms: Option<i64>,
    #[serde(default)]
    multiplier: Option<f64>,
    #[serde(default)]
    max_backoff_ms: Option<i64>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Parses and validates a definition document. `plugin_exists` answers whether a plugin
/// reference names an uploaded plugin; every missing one is reported.
pub fn parse_definition(
    json: &[u8],
    limits: &DefinitionLimits,
    plugin_exists: impl Fn(&PluginRef) -> bool,
) -> Result<SagaDefinition, DefinitionError> {
    let doc: DefinitionDoc = serde_json::from_slice(json)
        .map_err(|e| not_an_object(json).unwrap_or_else(|| DefinitionError::Malformed(e.to_string())))?;
    let mut problems = Vec::new();
    let mut check_ms = |what: String, v: Option<i64>, default: u64, max: u64, min: u64| -> u64 {
        match v {
            None => default,
            Some(v) if v < min as i64 || v as u64 > max => {
                problems.push(format!("{what} must be between {min} and {max}, got {v}"));
                default
            }
            Some(v) => v as u64,
        }
    };
    let deadline_ms = doc.deadline_ms.map(|v| check_ms("deadline_ms".into(), Some(v), 0, limits.max_deadline_ms, 1));
    let retain_ms = doc.retain_ms.map(|v| check_ms("retain_ms".into(), Some(v), 0, MAX_RETAIN_MS, MIN_RETAIN_MS));
    let mut steps = Vec::new();
    let mut later = Vec::new();
    for (i, s) in doc.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let timeout_ms =
            check_ms(format!("{at}.timeout_ms"), s.timeout_ms, DEFAULT_TIMEOUT_MS, limits.max_timeout_ms, 1);
        let retry =
            retry_policy(&format!("{at}.retry"), s.retry.as_ref(), RetryPolicy::step_default(), limits, &mut later);
        let compensation_retry = retry_policy(
            &format!("{at}.compensation_retry"),
            s.compensation_retry.as_ref(),
            RetryPolicy::compensation_default(),
            limits,
            &mut later,
        );
        let name = StepName::parse(&s.name).map_err(|e| later.push(format!("{at}.name: {e}"))).ok();
        let wait_for = s.wait_for.as_ref().map(|w| wait_for(&at, w, s, limits, &mut later));
        let plugin = match (&s.plugin, &wait_for) {
            (Some(p), None) => parse_ref(&format!("{at}.plugin"), p, &plugin_exists, &mut later).map(Some),
            (None, Some(_)) => Some(None),
            (Some(_), Some(_)) => {
                later.push(format!("{at}: a step has a plugin or a wait_for, not both"));
                None
            }
            (None, None) => {
                later.push(format!("{at}: a step needs a plugin (or a wait_for)"));
                None
            }
        };
        if s.wait_for.is_none() && !s.fail_on.is_empty() {
            later.push(format!("{at}.fail_on: only a wait step (wait_for) has fail_on"));
        }
        let compensation = match &s.compensation {
            None => plugin.clone().flatten(),
            Some(None) => None,
            Some(Some(c)) => parse_ref(&format!("{at}.compensation"), c, &plugin_exists, &mut later),
        };
        let allow_http = grants(&format!("{at}.allow_http"), &s.allow_http, &mut later);
        let compensate_allow_http =
            s.compensate_allow_http.as_ref().map(|g| grants(&format!("{at}.compensate_allow_http"), g, &mut later));
        check_config(&format!("{at}.config"), &s.config, &mut later);
        check_secrets(&format!("{at}.secrets"), &s.secrets, &s.config, &mut later);
        if let (Some(name), Some(plugin)) = (name, plugin) {
            steps.push(StepDefinition {
                name,
                plugin,
                compensation,
                timeout_ms,
                retry,
                compensation_retry,
                on_failure: s.on_failure.unwrap_or(OnFailure::Compensate),
                allow_http,
                compensate_allow_http,
                config: s.config.clone(),
                secrets: s.secrets.clone(),
                wait_for: wait_for.flatten(),
                fail_on: s.fail_on.clone(),
            });
        }
    }
    problems.extend(later);
    if doc.steps.is_empty() {
        problems.push("steps must not be empty".into());
    }
    if doc.steps.len() > limits.max_steps {
        problems.push(format!("a definition has at most {} steps, got {}", limits.max_steps, doc.steps.len()));
    }
    let triggers = triggers(&doc.triggers, &mut problems);
    let mut names = HashSet::new();
    for s in &doc.steps {
        if !names.insert(s.name.as_str()) {
            problems.push(format!("step name {:?} is used more than once", s.name));
        }
    }
    if problems.is_empty() {
        Ok(SagaDefinition { deadline_ms, retain_ms, steps, triggers })
    } else {
        Err(DefinitionError::Invalid(problems))
    }
}

/// A document that is JSON but not an object (an array of steps, a string) is well-formed and
/// of the wrong shape: it is refused by naming what it is, rather than with serde's type error.
fn not_an_object(json: &[u8]) -> Option<DefinitionError> {
    let what = match serde_json::from_slice::<serde_json::Value>(json).ok()? {
        serde_json::Value::Object(_) => return None,
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
    };
    Some(DefinitionError::Invalid(vec![format!(
        "a definition must be a JSON object with a \"steps\" array (docs/definitions.md), got {what}"
    )]))
}

fn parse_ref(
    at: &str,
    text: &str,
    plugin_exists: &impl Fn(&PluginRef) -> bool,
    problems: &mut Vec<String>,
) -> Option<PluginRef> {
    match text.parse::<PluginRef>() {
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
        Ok(r) if !plugin_exists(&r) => {
            problems.push(format!("{at}: plugin {r} has not been uploaded"));
            Some(r)
        }
        Ok(r) => Some(r),
    }
}

/// Most named values in a step's `config`, and the largest value.
const MAX_CONFIG_ENTRIES: usize = 64;
const MAX_CONFIG_VALUE_BYTES: usize = 16 << 10;

fn check_config(at: &str, config: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    if config.len() > MAX_CONFIG_ENTRIES {
        problems.push(format!("{at} has at most {MAX_CONFIG_ENTRIES} entries, got {}", config.len()));
    }
    for (name, value) in config {
        if !crate::secrets::valid_name(name) {
            problems.push(format!("{at}: name {name:?} is not 1-128 characters of A-Z a-z 0-9 _ - ."));
        }
        if value.len() > MAX_CONFIG_VALUE_BYTES {
            problems.push(format!("{at}.{name} is longer than {MAX_CONFIG_VALUE_BYTES} bytes"));
        }
    }
}

/// Most topics one wait step waits for.
const MAX_WAIT_TOPICS: usize = 16;

/// Checks a wait step: its topics and timeout, its `fail_on`, and that it sets none of the
/// fields of a plugin step (it runs no plugin and has nothing to undo).
fn wait_for(
    at: &str,
    w: &WaitDoc,
    s: &StepDoc,
    limits: &DefinitionLimits,
    problems: &mut Vec<String>,
) -> Option<WaitFor> {
    let before = problems.len();
    if w.topics.is_empty() || w.topics.len() > MAX_WAIT_TOPICS {
        problems.push(format!("{at}.wait_for.topics has 1 to {MAX_WAIT_TOPICS} topics, got {}", w.topics.len()));
    }
    for (i, topic) in w.topics.iter().enumerate() {
        if let Err(e) = super::ids::check_name("topic", topic) {
            problems.push(format!("{at}.wait_for.topics[{i}]: {e}"));
        } else if w.topics[..i].contains(topic) {
            problems.push(format!("{at}.wait_for.topics[{i}]: {topic:?} is listed twice"));
        }
    }
    if w.timeout_ms < 1 || w.timeout_ms as u64 > limits.max_deadline_ms {
        let max = limits.max_deadline_ms;
        problems.push(format!("{at}.wait_for.timeout_ms must be between 1 and {max}, got {}", w.timeout_ms));
    }
    for (i, topic) in s.fail_on.iter().enumerate() {
        if !w.topics.contains(topic) {
            problems.push(format!("{at}.fail_on[{i}]: {topic:?} is not one of wait_for.topics"));
        }
    }
    let plugin_fields = [
        ("compensation", s.compensation.is_some()),
        ("timeout_ms", s.timeout_ms.is_some()),
        ("retry", s.retry.is_some()),
        ("compensation_retry", s.compensation_retry.is_some()),
        ("allow_http", !s.allow_http.is_empty()),
        ("compensate_allow_http", s.compensate_allow_http.is_some()),
        ("config", !s.config.is_empty()),
        ("secrets", !s.secrets.is_empty()),
    ];
    for (field, set) in plugin_fields {
        if set {
            problems.push(format!("{at}.{field}: a wait step runs no plugin, so it has no {field}"));
        }
    }
    (problems.len() == before).then(|| WaitFor { topics: w.topics.clone(), timeout_ms: w.timeout_ms as u64 })
}

/// Most secrets one step references.
const MAX_STEP_SECRETS: usize = 64;

fn check_secrets(at: &str, secrets: &[String], config: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    if secrets.len() > MAX_STEP_SECRETS {
        problems.push(format!("{at} has at most {MAX_STEP_SECRETS} entries, got {}", secrets.len()));
    }
    for (i, name) in secrets.iter().enumerate() {
        if !crate::secrets::valid_name(name) {
            problems.push(format!("{at}[{i}]: name {name:?} is not 1-128 characters of A-Z a-z 0-9 _ - ."));
        } else if secrets[..i].contains(name) {
            problems.push(format!("{at}[{i}]: {name:?} is listed twice"));
        } else if config.contains_key(name) {
            problems.push(format!("{at}[{i}]: {name:?} is also a config name: a plugin could not tell which it reads"));
        }
    }
}

fn grants(at: &str, texts: &[String], problems: &mut Vec<String>) -> Vec<HttpGrant> {
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match HttpGrant::parse(text) {
            Ok(g) if !out.contains(&g) => out.push(g),
            Ok(_) => {}
            Err(e) => problems.push(format!("{at}[{i}]: {text:?}: {e}")),
        }
    }
    out
}

/// `doc` checked against `limits`, `default` filling what it leaves out; problems are pushed.
pub(crate) fn retry_policy(
    at: &str,
    doc: Option<&RetryDoc>,
    default: RetryPolicy,
    limits: &DefinitionLimits,
    problems: &mut Vec<String>,
) -> RetryPolicy {
    let Some(doc) = doc else { return default };
    let mut ms = |field: &str, v: Option<i64>, default: u64| match v {
        None => default,
        Some(v) if v < 0 || v as u64 > limits.max_backoff_ms => {
            problems.push(format!("{at}.{field} must be between 0 and {}, got {v}", limits.max_backoff_ms));
            default
        }
        Some(v) => v as u64,
    };
    let initial_backoff_ms = ms("initial_backoff_ms", doc.initial_backoff_ms, default.initial_backoff_ms);
    let max_backoff_ms = ms("max_backoff_ms", doc.max_backoff_ms, default.max_backoff_ms.max(initial_backoff_ms));
    let max_attempts = match doc.max_attempts {
        None => default.max_attempts,
        Some(v) if v < 1 || v > limits.max_attempts as i64 => {
            problems.push(format!("{at}.max_attempts must be between 1 and {}, got {v}", limits.max_attempts));
            default.max_attempts
        }
        Some(v) => v as u32,
    };
    let multiplier = match doc.multiplier {
        None => default.multiplier,
        Some(m) if !(1.0..=100.0).contains(&m) => {
            problems.push(format!("{at}.multiplier must be between 1.0 and 100.0, got {m}"));
            default.multiplier
        }
        Some(m) => m,
    };
    if max_backoff_ms < initial_backoff_ms {
        problems.push(format!(
            "{at}.max_backoff_ms ({max_backoff_ms}) must not be less than initial_backoff_ms ({initial_backoff_ms})"
        ));
    }
    RetryPolicy { max_attempts, initial_backoff_ms, multiplier, max_backoff_ms }
}

#[cfg(test)]
#[path = "definition_tests.rs"]
mod tests;
