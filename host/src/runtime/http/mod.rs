//! Outbound HTTP for plugins (docs/plugins.md, "Outbound HTTP"): `wasi:http/outgoing-handler`
//! with every request checked against the step's grants and the attempt's limits, sent by
//! `send` to an address this host resolved and checked itself, and recorded in a [`Journal`]
//! that leaves with the attempt's outcome.
//!
//! wasi-http runs each request's future in a task of its own, so what the attempt must learn
//! afterwards (the calls made, a violation) is shared through the journal, not the store data.

mod body;
mod send;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::domain::{FailureKind, HttpCall, HttpGrant, StepFailure};

/// Bounds on one attempt's outbound HTTP, each configurable (`serve --max-http-*`).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Requests an attempt may make.
    pub max_requests: u32,
    /// Request body bytes, per request.
    pub max_request_body_bytes: u64,
    /// Response body bytes, per request.
    pub max_response_body_bytes: u64,
    /// From sending a request to the end of its response body.
    pub request_timeout: Duration,
    /// Requests in flight at once, per attempt.
    pub max_concurrent: u32,
    /// PEM file of extra root certificates trusted besides the platform's.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_requests: 16,
            max_request_body_bytes: 1 << 20,
            max_response_body_bytes: 4 << 20,
            request_timeout: Duration::from_secs(10),
            max_concurrent: 4,
            ca_bundle: None,
        }
    }
}

/// What one attempt may reach, from its step definition and its identity.
#[derive(Clone, Debug, Default)]
pub struct HttpAccess {
    /// Origins the attempt's side of the step is granted; empty: none.
    pub grants: Vec<HttpGrant>,
    /// W3C `traceparent` of the attempt's span, sent unless the plugin sets its own.
    pub traceparent: Option<String>,
}

/// What an attempt's requests left behind, shared with their tasks.
#[derive(Debug, Default)]
pub struct Journal {
    inner: Mutex<JournalInner>,
}

#[derive(Debug, Default)]
struct JournalInner {
    calls: Vec<(HttpCall, Option<Instant>)>,
    violation: Option<StepFailure>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call's record; its index, for [`Journal::finish`].
    fn open(&self, call: HttpCall) -> usize {
        let mut j = self.lock();
        j.calls.push((call, Some(Instant::now())));
        j.calls.len() - 1
    }

    /// Ends a call's record (the first end counts).
    fn finish(&self, index: usize, update: impl FnOnce(&mut HttpCall)) {
        let mut j = self.lock();
        if let Some((call, started @ Some(_))) = j.calls.get_mut(index) {
            call.duration_ms = started.take().map_or(0, |t| t.elapsed().as_millis() as u64);
            update(call);
        }
    }

    /// Adds request body bytes sent to a call's record.
    fn count_request(&self, index: usize, bytes: u64) {
        if let Some((call, _)) = self.lock().calls.get_mut(index) {
            call.request_bytes += bytes;
        }
    }

    /// Remembers the first rule the attempt broke: it becomes the attempt's failure.
    fn violate(&self, kind: FailureKind, message: String) {
        self.lock().violation.get_or_insert(StepFailure::new(kind, message));
    }

    /// The calls made (those still open marked as cut off) and the violation, if any.
    pub fn take(&self) -> (Vec<HttpCall>, Option<StepFailure>) {
        let mut j = self.lock();
        let calls = std::mem::take(&mut j.calls)
            .into_iter()
            .map(|(mut call, open)| {
                if let Some(t) = open {
                    call.duration_ms = t.elapsed().as_millis() as u64;
                    call.error.get_or_insert_with(|| "the attempt ended first".into());
                }
                call
            })
            .collect();
        (calls, j.violation.take())
    }
}

/// Settings shared by every attempt: limits and the TLS configuration, built once.
#[derive(Clone)]
pub struct Outbound {
    limits: HttpLimits,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Outbound {
    /// Loads the platform's root certificates and the configured bundle, if any. An unreadable
    /// or empty bundle is an error: the operator asked for it.
    pub fn new(limits: HttpLimits) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "reading a platform root certificate failed");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = &limits.ca_bundle {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading the CA bundle {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("the CA bundle {} holds no certificate", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { limits, tls: Arc::new(tls) })
    }

    /// The TLS client settings (the platform's roots and the configured bundle), for the
    /// host's own outbound connections.
    pub fn tls_config(&self) -> rustls::ClientConfig {
        (*self.tls).clone()
    }

    /// The hooks of one attempt.
    pub fn session(&self, access: HttpAccess, idempotency_key: &str) -> HttpSession {
        HttpSession {
            outbound: self.clone(),
            grants: Arc::new(access.grants),
            traceparent: access.traceparent.and_then(|t| HeaderValue::from_str(&t).ok()),
            idempotency_key: HeaderValue::from_str(idempotency_key).ok(),
            requests: 0,
            in_flight: Arc::new(tokio::sync::Semaphore::new(self.limits.max_concurrent as usize)),
            journal: Arc::new(Journal::default()),
        }
    }
}

/// One attempt's `wasi:http` hooks: the grant and limit checks before a request leaves.
pub struct HttpSession {
    outbound: Outbound,
    grants: Arc<Vec<HttpGrant>>,
    traceparent: Option<HeaderValue>,
    idempotency_key: Option<HeaderValue>,
    requests: u32,
    in_flight: Arc<tokio::sync::Semaphore>,
    journal: Arc<Journal>,
}

impl HttpSession {
    /// What the attempt's requests left behind, readable after the store is gone.
    pub fn journal_handle(&self) -> Arc<Journal> {
        self.journal.clone()
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpSession {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let target = send::Target::of(&request);
        let index = self.journal.open(send::record(&request));
        let refuse = |journal: &Journal, kind, message: String, code| -> SendFuture {
            journal.finish(index, |c| c.error = Some(message.clone()));
            journal.violate(kind, message);
            Box::new(async move { Err(code) })
        };
        self.requests += 1;
        let limits = &self.outbound.limits;
        if self.requests > limits.max_requests {
            let message = format!("outbound HTTP request limit of {} per attempt exceeded", limits.max_requests);
            return refuse(
                &self.journal,
                FailureKind::Limit,
                message,
                wasmtime_wasi_http::Error::ConnectionLimitReached,
            );
        }
        let Some(target) = target else {
            let message = format!("outbound request to {} has no http(s) scheme and host", request.uri());
            return refuse(
                &self.journal,
                FailureKind::Permission,
                message,
                wasmtime_wasi_http::Error::HttpRequestDenied,
            );
        };
        let Some(grant) = crate::domain::http::covering(&self.grants, target.https, &target.host, target.port) else {
            let message = format!("outbound request to {} is not granted by the step's allow_http", target.url());
            return refuse(
                &self.journal,
                FailureKind::Permission,
                message,
                wasmtime_wasi_http::Error::HttpRequestDenied,
            );
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let message =
                format!("outbound HTTP concurrency limit of {} requests at once exceeded", limits.max_concurrent);
            return refuse(
                &self.journal,
                FailureKind::Limit,
                message,
                wasmtime_wasi_http::Error::ConnectionLimitReached,
            );
        };
        let headers = request.headers_mut();
        for (name, value) in [("idempotency-key", &self.idempotency_key), ("traceparent", &self.traceparent)] {
            if let Some(value) = value
                && !headers.contains_key(name)
            {
                headers.insert(name, value.clone());
            }
        }
        let job = send::Job {
            target,
            grant: grant.clone(),
            limits: limits.clone(),
            tls: self.outbound.tls.clone(),
            journal: self.journal.clone(),
            index,
            permit,
            connect_timeout: options.and_then(|o| o.connect_timeout),
        };
        Box::new(job.run(request))
    }
}
