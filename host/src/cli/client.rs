//! A typed client of the HTTP API (docs/api.md): one method per route, answers decoded into
//! the very types the API serializes, error bodies into [`ApiFailure`]. URLs are built with
//! [`Url`]'s path-segment and query encoders, so a name or a filter can never change a route.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::sse;
use crate::api::{
    Accepted, ErrorBody, ErrorDetail, ExecutionList, PluginList, PluginState, Published, SagaList, SecretList,
};
use crate::api::{DeadLetterList, Redrive, SubscriptionList};
use crate::domain::{EventRecord, ExecutionId, ExecutionStatus, ExecutionView, PluginName, PluginVersion, SagaName};
use crate::orchestrator::SubscriptionView;
use crate::secrets::SecretInfo;
use crate::store::{PluginMeta, StoredDefinition};

/// An error answer of the host: its status and the API's error body.
#[derive(Debug, thiserror::Error)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// `code`, `message` and, for 422, every problem.
    pub detail: ErrorDetail,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.status, self.detail.code, self.detail.message)?;
        for problem in self.detail.problems.iter().flatten() {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Why a call did not return what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answered with an error.
    #[error(transparent)]
    Api(#[from] ApiFailure),
    /// The host could not be reached, or the connection broke.
    #[error("cannot reach the host at {url}")]
    Unreachable {
        /// What was asked.
        url: Url,
        /// Why.
        source: reqwest::Error,
    },
    /// A success answer that is not what the API documents (another service on that port?).
    #[error("unexpected answer from {url}: {reason}")]
    Unexpected {
        /// What was asked.
        url: Url,
        /// What did not fit.
        reason: String,
    },
    /// The `--url` given cannot hold the API's paths.
    #[error("{0} is not a host URL (give http://HOST:PORT)")]
    BadUrl(Url),
}

/// A `PUT` that stores something: the stored value, and whether it is new.
#[derive(Debug)]
pub struct Put<T> {
    /// What the host stored (or already had).
    pub value: T,
    /// 201: created; 200: the same was there already, or (sagas) a new version replaced it.
    pub created: bool,
}

/// A trigger's answer.
#[derive(Debug)]
pub enum Triggered {
    /// With `wait`: the execution ended in time (200).
    Ended(Box<ExecutionView>),
    /// Started, still running, or found by its idempotency key (202).
    Started(Accepted),
}

/// A trigger.
#[derive(Debug)]
pub struct Trigger<'a> {
    /// The execution's input.
    pub input: &'a Value,
    /// Wait this long for the end (the host allows at most 300 s).
    pub wait: Option<Duration>,
    /// The same key for the same saga returns the first execution.
    pub idempotency_key: Option<&'a str>,
    /// The execution's business key.
    pub key: Option<&'a str>,
}

/// `GET /v1/executions`'s filters.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only this saga.
    pub saga: Option<SagaName>,
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only this business key.
    pub key: Option<String>,
    /// Page size (1-1000; the host's default when `None`).
    pub limit: Option<usize>,
    /// The previous page's `next`.
    pub after: Option<ExecutionId>,
}

/// `GET /v1/plugins/{name}/state`'s filters.
#[derive(Clone, Debug, Default)]
pub struct StateQuery {
    /// Only this collection.
    pub collection: Option<String>,
    /// Only keys starting with this.
    pub prefix: String,
    /// At most this many entries (1-1000; the host's default when `None`).
    pub limit: Option<usize>,
}

/// Talks to one host.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the host at `base` (`http://host:port`, possibly under a path prefix).
    pub fn new(base: Url, token: Option<String>) -> Result<Self, ClientError> {
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(base));
        }
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().map_err(unreachable(&base))?;
        Ok(Self { base, token, http })
    }

    /// `PUT /v1/plugins/{name}/{version}`.
    pub async fn put_plugin(
        &self,
        name: &PluginName,
        version: &PluginVersion,
        wasm: Vec<u8>,
    ) -> Result<Put<PluginMeta>, ClientError> {
        let url = self.url(&["v1", "plugins", name.as_str(), version.as_str()], &[]);
        let (status, value) = self.call(self.request(Method::PUT, &url).body(wasm), &url).await?;
        Ok(Put { value, created: status == StatusCode::CREATED })
    }

    /// `GET /v1/plugins`.
    pub async fn plugins(&self) -> Result<PluginList, ClientError> {
        self.get(&["v1", "plugins"], &[]).await
    }

    /// `GET /v1/plugins/{name}/{version}`.
    pub async fn plugin(&self, name: &PluginName, version: &PluginVersion) -> Result<PluginMeta, ClientError> {
        self.get(&["v1", "plugins", name.as_str(), version.as_str()], &[]).await
    }

    /// `GET /v1/plugins/{name}/state`.
    pub async fn plugin_state(&self, name: &PluginName, q: &StateQuery) -> Result<PluginState, ClientError> {
        let mut query = vec![("prefix", q.prefix.clone())];
        query.extend(q.collection.clone().map(|c| ("collection", c)));
        query.extend(q.limit.map(|l| ("limit", l.to_string())));
        self.get(&["v1", "plugins", name.as_str(), "state"], &query).await
    }

    /// `PUT /v1/sagas/{name}`: `definition` is the JSON document as the user wrote it, so that
    /// the host's own validation reports every problem.
    pub async fn put_saga(&self, name: &SagaName, definition: Vec<u8>) -> Result<Put<StoredDefinition>, ClientError> {
        let url = self.url(&["v1", "sagas", name.as_str()], &[]);
        let req = self.request(Method::PUT, &url).header(reqwest::header::CONTENT_TYPE, "application/json");
        let (status, value) = self.call(req.body(definition), &url).await?;
        Ok(Put { value, created: status == StatusCode::CREATED })
    }

    /// `GET /v1/sagas`.
    pub async fn sagas(&self) -> Result<SagaList, ClientError> {
        self.get(&["v1", "sagas"], &[]).await
    }

    /// `GET /v1/sagas/{name}`.
    pub async fn saga(&self, name: &SagaName) -> Result<StoredDefinition, ClientError> {
        self.get(&["v1", "sagas", name.as_str()], &[]).await
    }

    /// `POST /v1/sagas/{name}/executions`.
    pub async fn trigger(&self, saga: &SagaName, t: &Trigger<'_>) -> Result<Triggered, ClientError> {
        let query: Vec<_> = t.wait.map(|w| ("wait", w.as_millis().to_string())).into_iter().collect();
        let url = self.url(&["v1", "sagas", saga.as_str(), "executions"], &query);
        let mut req = self.request(Method::POST, &url).json(t.input);
        if let Some(key) = t.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(key) = t.key {
            req = req.header("Execution-Key", key);
        }
        let (status, body) = self.fetch(req, &url).await?;
        Ok(if status == StatusCode::OK {
            Triggered::Ended(Box::new(decode(&url, &body)?))
        } else {
            Triggered::Started(decode(&url, &body)?)
        })
    }

    /// `GET /v1/executions/{id}`.
    pub async fn execution(&self, id: ExecutionId) -> Result<ExecutionView, ClientError> {
        self.get(&["v1", "executions", &id.to_string()], &[]).await
    }

    /// `GET /v1/executions/{id}/events`.
    pub async fn events(&self, id: ExecutionId) -> Result<Vec<EventRecord>, ClientError> {
        self.get(&["v1", "executions", &id.to_string(), "events"], &[]).await
    }

    /// `GET /v1/executions/{id}/events?follow=true`: calls `on_event` with every event, the
    /// recorded ones first, until the host ends the stream after the terminal event.
    pub async fn follow_events(
        &self,
        id: ExecutionId,
        mut on_event: impl FnMut(EventRecord),
    ) -> Result<(), ClientError> {
        let url = self.url(&["v1", "executions", &id.to_string(), "events"], &[("follow", "true".into())]);
        let req = self.request(Method::GET, &url).header(reqwest::header::ACCEPT, "text/event-stream");
        let mut resp = self.send(req, &url).await?;
        let mut decoder = sse::Decoder::default();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable(&url))? {
            for frame in decoder.push(&chunk) {
                let record = serde_json::from_str(&frame.data).map_err(|e| ClientError::Unexpected {
                    url: url.clone(),
                    reason: format!("event {:?}: {e}", frame.id.unwrap_or_default()),
                })?;
                on_event(record);
            }
        }
        Ok(())
    }

    /// `GET /v1/executions`.
    pub async fn list_executions(&self, q: &ListQuery) -> Result<ExecutionList, ClientError> {
        let mut query = Vec::new();
        query.extend(q.saga.as_ref().map(|s| ("saga", s.to_string())));
        query.extend(q.status.map(|s| ("status", s.as_str().to_owned())));
        query.extend(q.key.clone().map(|k| ("key", k)));
        query.extend(q.limit.map(|l| ("limit", l.to_string())));
        query.extend(q.after.map(|a| ("after", a.to_string())));
        self.get(&["v1", "executions"], &query).await
    }

    /// `PUT /v1/secrets/{name}`.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<Put<SecretInfo>, ClientError> {
        let url = self.url(&["v1", "secrets", name], &[]);
        let req = self.request(Method::PUT, &url).json(&serde_json::json!({ "value": value }));
        let (status, value) = self.call(req, &url).await?;
        Ok(Put { value, created: status == StatusCode::CREATED })
    }

    /// `GET /v1/secrets`.
    pub async fn secrets(&self) -> Result<SecretList, ClientError> {
        self.get(&["v1", "secrets"], &[]).await
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "secrets", name], &[]);
        self.fetch(self.request(Method::DELETE, &url), &url).await.map(drop)
    }

    /// `PUT /v1/subscriptions/{name}`.
    pub async fn put_subscription(&self, name: &str, doc: Vec<u8>) -> Result<Put<SubscriptionView>, ClientError> {
        let url = self.url(&["v1", "subscriptions", name], &[]);
        let req = self.request(Method::PUT, &url).header(reqwest::header::CONTENT_TYPE, "application/json");
        let (status, value) = self.call(req.body(doc), &url).await?;
        Ok(Put { value, created: status == StatusCode::CREATED })
    }

    /// `GET /v1/subscriptions`.
    pub async fn subscriptions(&self) -> Result<SubscriptionList, ClientError> {
        self.get(&["v1", "subscriptions"], &[]).await
    }

    /// `GET /v1/subscriptions/{name}`.
    pub async fn subscription(&self, name: &str) -> Result<SubscriptionView, ClientError> {
        self.get(&["v1", "subscriptions", name], &[]).await
    }

    /// `DELETE /v1/subscriptions/{name}`.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "subscriptions", name], &[]);
        self.fetch(self.request(Method::DELETE, &url), &url).await.map(drop)
    }

    /// `GET /v1/subscriptions/{name}/dead-letters?limit=`.
    pub async fn dead_letters(&self, name: &str, limit: usize) -> Result<DeadLetterList, ClientError> {
        self.get(&["v1", "subscriptions", name, "dead-letters"], &[("limit", limit.to_string())]).await
    }

    /// `POST /v1/subscriptions/{name}/dead-letters/redrive`.
    pub async fn redrive(&self, name: &str) -> Result<Redrive, ClientError> {
        self.post(&["v1", "subscriptions", name, "dead-letters", "redrive"]).await
    }

    /// `POST /v1/events/{topic}`.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &Value,
        id: Option<&str>,
        key: Option<&str>,
    ) -> Result<Published, ClientError> {
        let url = self.url(&["v1", "events", topic], &[]);
        let mut req = self.request(Method::POST, &url).json(payload);
        if let Some(id) = id {
            req = req.header("Event-Id", id);
        }
        if let Some(key) = key {
            req = req.header("Event-Key", key);
        }
        Ok(self.call(req, &url).await?.1)
    }

    /// `POST /v1/executions/{id}/signals/{topic}`.
    pub async fn signal(
        &self,
        id: ExecutionId,
        topic: &str,
        payload: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ClientError> {
        let url = self.url(&["v1", "executions", &id.to_string(), "signals", topic], &[]);
        let mut req = self.request(Method::POST, &url).json(payload);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        Ok(self.call(req, &url).await?.1)
    }

    /// `POST /v1/executions/{id}/cancel`.
    pub async fn cancel(&self, id: ExecutionId) -> Result<Accepted, ClientError> {
        self.post(&["v1", "executions", &id.to_string(), "cancel"]).await
    }

    /// `POST /v1/executions/{id}/resume`.
    pub async fn resume(&self, id: ExecutionId) -> Result<Accepted, ClientError> {
        self.post(&["v1", "executions", &id.to_string(), "resume"]).await
    }

    /// `GET /v1/export`, written to `out` as it arrives; the lines written. A body cut short
    /// (the host failed mid-way) is an error, not a shorter export.
    pub async fn export(
        &self,
        before: u64,
        saga: Option<&SagaName>,
        out: &mut impl std::io::Write,
    ) -> Result<u64, ClientError> {
        let mut query = vec![("before", before.to_string())];
        if let Some(s) = saga {
            query.push(("saga", s.to_string()));
        }
        let url = self.url(&["v1", "export"], &query);
        let mut resp = self.send(self.request(Method::GET, &url), &url).await?;
        let mut lines = 0;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable(&url))? {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&chunk).map_err(|e| ClientError::Unexpected {
                url: url.clone(),
                reason: format!("writing the export: {e}"),
            })?;
        }
        out.flush()
            .map_err(|e| ClientError::Unexpected { url: url.clone(), reason: format!("writing the export: {e}") })?;
        Ok(lines)
    }

    /// `GET /v1/backup`, each piece of the body handed to `piece` as it arrives.
    pub async fn backup(&self, mut piece: impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let url = self.url(&["v1", "backup"], &[]);
        let mut resp = self.send(self.request(Method::GET, &url), &url).await?;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable(&url))? {
            piece(&chunk)?;
        }
        Ok(())
    }

    /// The base URL with `segments` appended (each percent-encoded) and `query` encoded.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in Client::new").pop_if_empty().extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        let req = self.http.request(method, url.clone());
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str], query: &[(&str, String)]) -> Result<T, ClientError> {
        let url = self.url(segments, query);
        Ok(self.call(self.request(Method::GET, &url), &url).await?.1)
    }

    async fn post<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let url = self.url(segments, &[]);
        Ok(self.call(self.request(Method::POST, &url), &url).await?.1)
    }

    /// Sends and decodes a success answer as `T`.
    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder, url: &Url) -> Result<(StatusCode, T), ClientError> {
        let (status, body) = self.fetch(req, url).await?;
        Ok((status, decode(url, &body)?))
    }

    /// Sends and reads a success answer's body.
    async fn fetch(&self, req: RequestBuilder, url: &Url) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let resp = self.send(req, url).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable(url))?;
        Ok((status, body.into()))
    }

    /// Sends; an error status becomes [`ApiFailure`].
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(unreachable(url))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(ApiFailure { status, detail: error_detail(status, &text) }.into())
    }
}

/// A transport failure on `url` (reqwest's message would repeat the URL).
fn unreachable(url: &Url) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
    move |e| ClientError::Unreachable { url: url.clone(), source: e.without_url() }
}

fn decode<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Unexpected { url: url.clone(), reason: e.to_string() })
}

/// The API's error body; anything else (a proxy's page) is kept as the message.
fn error_detail(status: StatusCode, body: &str) -> ErrorDetail {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => b.error,
        Err(_) => ErrorDetail {
            code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
            message: body.chars().take(500).collect::<String>().trim().to_owned(),
            problems: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(Url::parse(base).unwrap(), None).unwrap()
    }

    #[test]
    fn names_and_filters_are_encoded_never_spliced() {
        let c = client("http://127.0.0.1:8080");
        let q = vec![("prefix", "a&b=c d/é".to_owned()), ("collection", "x#y".to_owned())];
        let url = c.url(&["v1", "plugins", "p", "state"], &q);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/plugins/p/state?prefix=a%26b%3Dc+d%2F%C3%A9&collection=x%23y"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs, [("prefix".into(), "a&b=c d/é".into()), ("collection".into(), "x#y".into())]);
        assert_eq!(c.url(&["v1", "a/b?c"], &[]).as_str(), "http://127.0.0.1:8080/v1/a%2Fb%3Fc");
    }

    #[test]
    fn a_base_path_is_kept_and_an_empty_query_is_left_out() {
        assert_eq!(client("http://h:1/prefix/").url(&["v1", "sagas"], &[]).as_str(), "http://h:1/prefix/v1/sagas");
        assert_eq!(client("http://h:1").url(&["v1", "sagas"], &[]).as_str(), "http://h:1/v1/sagas");
    }

    #[test]
    fn only_http_urls_are_hosts() {
        for bad in ["mailto:ops@example.com", "ftp://h/"] {
            assert!(matches!(Client::new(Url::parse(bad).unwrap(), None), Err(ClientError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn error_bodies_decode_with_every_problem() {
        let body = r#"{"error":{"code":"invalid","message":"2 problems","problems":["a","b"]}}"#;
        let f = ApiFailure { status: StatusCode::UNPROCESSABLE_ENTITY, detail: error_detail(StatusCode::OK, body) };
        assert_eq!(f.to_string(), "422 Unprocessable Entity: invalid: 2 problems\n  - a\n  - b");
        let proxy = error_detail(StatusCode::BAD_GATEWAY, "<html>upstream down</html>");
        assert_eq!((proxy.code.as_str(), proxy.message.as_str()), ("bad_gateway", "<html>upstream down</html>"));
    }
}
