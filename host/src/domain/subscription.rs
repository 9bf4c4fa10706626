//! Subscriptions (docs/subscriptions.md): which events of the topic log go where — a webhook or
//! a Redis stream — and how a failed delivery is retried before it is dead-lettered. Pure:
//! parsing and validation, topic matching, and the wait before a retry.

use serde::{Deserialize, Serialize};

use super::definition::{DefinitionLimits, RetryDoc, RetryPolicy, retry_policy};
use super::ids::check_name;

/// Most topics one subscription names.
pub const MAX_TOPICS: usize = 64;
/// Longest URL of a target.
pub const MAX_URL_BYTES: usize = 2_048;
/// Longest Redis stream name.
pub const MAX_STREAM_BYTES: usize = 256;
/// The topic filter that matches every topic.
pub const ALL_TOPICS: &str = "*";

/// A stored subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    /// Its name.
    pub name: String,
    /// The topics it delivers (`*`: all).
    pub topics: Vec<String>,
    /// Where.
    #[serde(flatten)]
    pub target: Target,
    /// How a failed delivery is retried before the event is dead-lettered.
    pub retry: RetryPolicy,
    /// When it was created or last changed (unix ms).
    pub updated_at: u64,
}

impl Subscription {
    /// Whether events on `topic` are delivered.
    pub fn matches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == ALL_TOPICS || t == topic)
    }
}

/// Where a subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An HTTP(S) POST of each event.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// The stored secret whose value signs each request (HMAC-SHA256), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signing_secret: Option<String>,
        /// Time limit of one request (ms).
        timeout_ms: u64,
    },
    /// An `XADD` of each event to a Redis stream.
    RedisStream {
        /// `redis://` URL (`redis://[user:password@]host:port[/db]`).
        url: String,
        /// The stream's key.
        stream: String,
        /// Trims the stream to about this many entries (`MAXLEN ~`), if set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_len: Option<u64>,
    },
}

impl Target {
    /// The target as the API shows it: a password in its URL is replaced by `***`.
    pub fn redacted(&self) -> Self {
        match self {
            Self::RedisStream { url, stream, max_len } => {
                Self::RedisStream { url: redact_password(url), stream: stream.clone(), max_len: *max_len }
            }
            Self::Webhook { url, signing_secret, timeout_ms } => Self::Webhook {
                url: redact_password(url),
                signing_secret: signing_secret.clone(),
                timeout_ms: *timeout_ms,
            },
        }
    }

    /// `webhook` or `redis_stream`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::RedisStream { .. } => "redis_stream",
        }
    }
}

/// Where a new subscription starts in the topic log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// With the events recorded after it is created.
    Now,
    /// With the first event in the log.
    Start,
}

/// One event a subscription gave up on, kept for inspection and redrive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The event's place in the log.
    pub seq: u64,
    /// Its id.
    pub event_id: String,
    /// Its topic.
    pub topic: String,
    /// Attempts made (across redrives).
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// When it was given up on (unix ms).
    pub at: u64,
    /// A redrive was asked for and has not run yet.
    #[serde(default)]
    pub redrive: bool,
}

/// The name of a subscription's cursor in the topic log.
pub fn cursor_name(subscription: &str) -> String {
    format!("subscription:{subscription}")
}

/// The default retry policy of a subscription: 8 attempts, 0.5 s doubling to at most 60 s.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy { max_attempts: 8, initial_backoff_ms: 500, multiplier: 2.0, max_backoff_ms: 60_000 }
}

/// The wait after failed attempt `attempt` (1-based): the policy's backoff with "equal
/// jitter" — half of it, plus a part of the other half chosen by `seed` — so that many
/// deliveries failing at once do not retry in step.
pub fn retry_wait_ms(policy: &RetryPolicy, attempt: u32, seed: u64) -> u64 {
    let base = policy.backoff_ms(attempt);
    let half = base / 2;
    half + seed % (base - half + 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionDoc {
    topics: Vec<String>,
    #[serde(default)]
    webhook: Option<WebhookDoc>,
    #[serde(default)]
    redis_stream: Option<RedisDoc>,
    #[serde(default)]
    retry: Option<RetryDoc>,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDoc {
    url: String,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisDoc {
    url: String,
    stream: String,
    #[serde(default)]
    max_len: Option<i64>,
}

/// Why a subscription document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubscriptionError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed subscription: {0}")]
    Malformed(String),
    /// Well-formed, but breaking rules; every problem found is listed.
    #[error("invalid subscription: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Parses and checks a subscription document named `name`, stamped `at`; where it starts.
pub fn parse_subscription(name: &str, bytes: &[u8], at: u64) -> Result<(Subscription, StartAt), SubscriptionError> {
    super::json::check(bytes).map_err(|e| SubscriptionError::Malformed(e.to_string()))?;
    let doc: SubscriptionDoc =
        serde_json::from_slice(bytes).map_err(|e| SubscriptionError::Malformed(e.to_string()))?;
    let mut problems = Vec::new();
    if let Err(e) = check_name("subscription", name) {
        problems.push(e.to_string());
    }
    if doc.topics.is_empty() || doc.topics.len() > MAX_TOPICS {
        problems.push(format!("topics must list 1-{MAX_TOPICS} topics (\"*\" for all), got {}", doc.topics.len()));
    }
    for (i, topic) in doc.topics.iter().enumerate() {
        if topic != ALL_TOPICS
            && let Err(e) = check_name("topic", topic)
        {
            problems.push(format!("topics[{i}]: {e}"));
        }
        if doc.topics[..i].contains(topic) {
            problems.push(format!("topics[{i}]: {topic:?} is listed twice"));
        }
    }
    let target = match (doc.webhook, doc.redis_stream) {
        (Some(w), None) => Some(webhook(w, &mut problems)),
        (None, Some(r)) => Some(redis(r, &mut problems)),
        _ => {
            problems.push("exactly one target is required: \"webhook\" or \"redis_stream\"".into());
            None
        }
    };
    let retry = retry_policy("retry", doc.retry.as_ref(), default_retry(), &DefinitionLimits::default(), &mut problems);
    let start = match doc.from.as_deref() {
        None | Some("now") => StartAt::Now,
        Some("start") => StartAt::Start,
        Some(other) => {
            problems.push(format!("from must be \"now\" or \"start\", got {other:?}"));
            StartAt::Now
        }
    };
    match target {
        Some(target) if problems.is_empty() => {
            Ok((Subscription { name: name.to_owned(), topics: doc.topics, target, retry, updated_at: at }, start))
        }
        _ => Err(SubscriptionError::Invalid(problems)),
    }
}

fn webhook(doc: WebhookDoc, problems: &mut Vec<String>) -> Target {
    check_url("webhook.url", &doc.url, &["http", "https"], problems);
    if doc.url.parse::<http::Uri>().ok().and_then(|u| u.authority().map(|a| a.as_str().contains('@'))) == Some(true) {
        problems.push("webhook.url: credentials in the URL are not sent; sign requests with signing_secret".into());
    }
    if let Some(secret) = &doc.signing_secret
        && !crate::secrets::valid_name(secret)
    {
        problems.push(format!("webhook.signing_secret {secret:?} is not a secret name"));
    }
    let timeout_ms = match doc.timeout_ms {
        None => 10_000,
        Some(t) if (1..=60_000).contains(&t) => t as u64,
        Some(t) => {
            problems.push(format!("webhook.timeout_ms must be between 1 and 60000, got {t}"));
            10_000
        }
    };
    Target::Webhook { url: doc.url, signing_secret: doc.signing_secret, timeout_ms }
}

fn redis(doc: RedisDoc, problems: &mut Vec<String>) -> Target {
    if doc.url.starts_with("rediss:") {
        problems
            .push("redis_stream.url: TLS (rediss://) is not supported yet; use redis:// on a trusted network".into());
    } else {
        check_url("redis_stream.url", &doc.url, &["redis"], problems);
    }
    if doc.stream.is_empty() || doc.stream.len() > MAX_STREAM_BYTES || !doc.stream.bytes().all(|b| b.is_ascii_graphic())
    {
        problems.push(format!(
            "redis_stream.stream must be 1-{MAX_STREAM_BYTES} printable ASCII characters without spaces"
        ));
    }
    let max_len = match doc.max_len {
        None => None,
        Some(n) if (1..=1_000_000_000).contains(&n) => Some(n as u64),
        Some(n) => {
            problems.push(format!("redis_stream.max_len must be between 1 and 1000000000, got {n}"));
            None
        }
    };
    Target::RedisStream { url: doc.url, stream: doc.stream, max_len }
}

/// `scheme://user:password@host...` with the password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

fn check_url(at: &str, url: &str, schemes: &[&str], problems: &mut Vec<String>) {
    if url.len() > MAX_URL_BYTES {
        problems.push(format!("{at} is longer than {MAX_URL_BYTES} bytes"));
        return;
    }
    let ok = match url.parse::<http::Uri>() {
        Ok(uri) => {
            uri.scheme_str().is_some_and(|s| schemes.contains(&s))
                && uri.authority().is_some_and(|a| !a.host().is_empty())
        }
        Err(_) => false,
    };
    if !ok {
        problems.push(format!("{at} {url:?} is not a {} URL with a host", schemes.join(" or ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<(Subscription, StartAt), SubscriptionError> {
        parse_subscription("orders", doc.as_bytes(), 7)
    }

    fn problems(doc: &str) -> String {
        match parse(doc) {
            Err(SubscriptionError::Invalid(p)) => p.join("; "),
            other => panic!("{doc}: {other:?}"),
        }
    }

    #[test]
    fn a_webhook_subscription_gets_its_defaults() {
        let (s, start) =
            parse(r#"{"topics": ["OrderCreated", "*"], "webhook": {"url": "https://hooks.example/in"}}"#).unwrap();
        assert_eq!(start, StartAt::Now);
        assert_eq!(
            s.target,
            Target::Webhook { url: "https://hooks.example/in".into(), signing_secret: None, timeout_ms: 10_000 }
        );
        assert_eq!((&s.retry, s.updated_at), (&default_retry(), 7));
        assert!(s.matches("Anything"), "* matches every topic");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["webhook"]["url"], "https://hooks.example/in");
        assert_eq!(serde_json::from_value::<Subscription>(json).unwrap(), s);
    }

    #[test]
    fn a_redis_subscription_matches_its_topics_only() {
        let doc = r#"{"topics": ["A"], "redis_stream": {"url": "redis://127.0.0.1:6379", "stream": "events", "max_len": 1000},
                      "retry": {"max_attempts": 2}, "from": "start"}"#;
        let (s, start) = parse(doc).unwrap();
        assert_eq!(start, StartAt::Start);
        assert!(s.matches("A") && !s.matches("B"));
        assert_eq!(s.retry.max_attempts, 2);
        assert_eq!(s.target.kind(), "redis_stream");
    }

    #[test]
    fn bad_documents_name_every_problem() {
        assert!(matches!(parse("[]"), Err(SubscriptionError::Malformed(_))));
        assert!(matches!(
            parse(r#"{"topics": ["A"], "webhook": {"url": "http://h"}, "extra": 1}"#),
            Err(SubscriptionError::Malformed(_))
        ));
        let p = problems(
            r#"{"topics": [], "webhook": {"url": "ftp://h", "timeout_ms": 0, "signing_secret": "no spaces"}}"#,
        );
        for needle in ["topics must list", "webhook.url", "timeout_ms", "signing_secret"] {
            assert!(p.contains(needle), "{needle}: {p}");
        }
        let p = problems(
            r#"{"topics": ["A", "A", "bad topic"], "redis_stream": {"url": "http://h", "stream": "a b", "max_len": 0}}"#,
        );
        for needle in ["listed twice", "topics[2]", "redis_stream.url", "redis_stream.stream", "max_len"] {
            assert!(p.contains(needle), "{needle}: {p}");
        }
        assert!(problems(r#"{"topics": ["A"]}"#).contains("exactly one target"));
        let both =
            r#"{"topics": ["A"], "webhook": {"url": "http://h"}, "redis_stream": {"url": "redis://h", "stream": "s"}}"#;
        assert!(problems(both).contains("exactly one target"));
        assert!(problems(r#"{"topics": ["A"], "webhook": {"url": "http://h"}, "from": "yesterday"}"#).contains("from"));
        assert!(
            problems(r#"{"topics": ["A"], "webhook": {"url": "http://h"}, "retry": {"max_attempts": 0}}"#)
                .contains("max_attempts")
        );
        let long = format!(r#"{{"topics": ["A"], "webhook": {{"url": "http://h/{}"}}}}"#, "x".repeat(MAX_URL_BYTES));
        assert!(problems(&long).contains("longer than"));
        assert!(problems(r#"{"topics": ["A"], "webhook": {"url": "http:///path"}}"#).contains("webhook.url"));
        assert!(problems(r#"{"topics": ["A"], "webhook": {"url": "https://u:p@h/x"}}"#).contains("credentials"));
        assert!(parse_subscription("bad name", br#"{"topics": ["A"], "webhook": {"url": "http://h"}}"#, 0).is_err());
    }

    #[test]
    fn passwords_in_redis_urls_are_not_shown() {
        assert_eq!(redact_password("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_password("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact_password("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_password("redis://user@h:1"), "redis://user@h:1");
        let t = Target::RedisStream { url: "redis://a:b@h:1".into(), stream: "s".into(), max_len: None };
        assert_eq!(
            t.redacted(),
            Target::RedisStream { url: "redis://a:***@h:1".into(), stream: "s".into(), max_len: None }
        );
    }

    #[test]
    fn retry_waits_are_jittered_within_half_to_all_of_the_backoff() {
        let p = RetryPolicy { max_attempts: 5, initial_backoff_ms: 1_000, multiplier: 2.0, max_backoff_ms: 3_000 };
        for seed in [0, 1, 999, u64::MAX] {
            let w = retry_wait_ms(&p, 1, seed);
            assert!((500..=1_000).contains(&w), "{w}");
            let w = retry_wait_ms(&p, 4, seed);
            assert!((1_500..=3_000).contains(&w), "{w}");
        }
        assert_ne!(retry_wait_ms(&p, 1, 1), retry_wait_ms(&p, 1, 2));
        let zero = RetryPolicy { initial_backoff_ms: 0, max_backoff_ms: 0, ..p };
        assert_eq!(retry_wait_ms(&zero, 3, 12345), 0);
    }
}
