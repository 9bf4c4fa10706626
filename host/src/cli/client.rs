//! A small typed client of the HTTP API, used by the CLI's client commands.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// An API error as the host reported it.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Error code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// Talks to one host.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the host at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), token, http })
    }

    /// A request to `path` with the token attached.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends and decodes a JSON answer; API errors become [`ApiFailure`].
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let resp = req.send().await.with_context(|| format!("cannot reach the host at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("error").to_owned();
            let mut message = body["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string());
            if let Some(problems) = body["error"]["problems"].as_array() {
                for p in problems {
                    message.push_str(&format!("\n  - {}", p.as_str().unwrap_or_default()));
                }
            }
            return Err(ApiFailure { status, code, message }.into());
        }
        Ok((status, body))
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.request(Method::GET, path)).await?.1)
    }

    /// Streams Server-Sent Events from `path`, calling `on_event` with each `data` payload.
    pub async fn follow(&self, path: &str, mut on_event: impl FnMut(Value)) -> anyhow::Result<()> {
        let mut resp =
            self.request(Method::GET, path).send().await.with_context(|| format!("cannot reach {}", self.base))?;
        if !resp.status().is_success() {
            bail!("{}: {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        on_event(serde_json::from_str(data.trim()).unwrap_or(Value::String(data.into())));
                    }
                }
            }
        }
        Ok(())
    }
}
