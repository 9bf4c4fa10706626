//! The WebAssembly runtime: one engine, plugins validated and compiled once, a fresh
//! sandboxed instance per attempt, with memory, time, output and log limits.

pub mod bindings;
mod engine;
mod events;
pub mod http;
mod instance;
mod plugins;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::domain::{EventSource, FailureKind, HttpCall, Side, StepFailure};
use crate::secrets::{Redactor, SecretValue};
use crate::store::{Effects, StateValue};

pub use bindings::PluginPre;
pub use engine::EPOCH_TICK;
pub use events::EventLimits;
pub use http::{HttpAccess, HttpLimits};
pub use instance::StepData;
pub use plugins::{LoadError, PluginCache, UploadError, digest_of};
pub use state::{StateLimits, StateScope};

/// Sandbox limits, each configurable (docs/plugins.md, "Limits per attempt").
#[derive(Clone, Debug)]
pub struct Limits {
    /// Linear memory per instance.
    pub max_memory_bytes: usize,
    /// Wasm stack per instance.
    pub max_wasm_stack: usize,
    /// Largest result a plugin may return.
    pub max_output_bytes: usize,
    /// Log lines a plugin may write per attempt.
    pub max_log_lines: u32,
    /// Log bytes a plugin may write per attempt (stdout and stderr each, and `log` calls).
    pub max_log_bytes: usize,
    /// Largest plugin upload.
    pub max_plugin_bytes: usize,
    /// Instances that may exist at once (pool size); also bounds concurrent attempts.
    pub max_instances: u32,
    /// Compiled plugin versions kept in memory, least recently used evicted first (an evicted
    /// one is loaded again from its stored artifact when next run).
    pub max_cached_plugins: usize,
    /// Bounds on an attempt's use of durable state.
    pub state: StateLimits,
    /// Bounds on an attempt's outbound HTTP.
    pub http: HttpLimits,
    /// Bounds on the events an attempt emits.
    pub events: EventLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            max_wasm_stack: 512 << 10,
            max_output_bytes: 1 << 20,
            max_log_lines: 1_000,
            max_log_bytes: 256 << 10,
            max_plugin_bytes: 32 << 20,
            max_instances: 256,
            max_cached_plugins: 64,
            state: StateLimits::default(),
            http: HttpLimits::default(),
            events: EventLimits::default(),
        }
    }
}

/// One attempt to run.
#[derive(Clone, Debug)]
pub struct Call {
    /// Execute or compensate.
    pub side: Side,
    /// Correlation id.
    pub execution_id: String,
    /// Saga name.
    pub saga: String,
    /// Step name.
    pub step: String,
    /// Attempt number.
    pub attempt: u32,
    /// Stable key for de-duplication in other systems.
    pub idempotency_key: String,
    /// The execution's business key.
    pub execution_key: Option<String>,
    /// When the host interrupts the attempt (unix ms).
    pub deadline_unix_ms: u64,
    /// How long the attempt may run.
    pub timeout: Duration,
    /// JSON text input.
    pub input: String,
    /// The plugin's state namespace (`None`: state calls answer `unavailable`).
    pub state: Option<StateScope>,
    /// What the attempt may reach over HTTP (default: nothing).
    pub http: HttpAccess,
    /// Named values the plugin reads through `wasi:config/store`.
    pub config: StepConfig,
}

/// What a plugin reads through `wasi:config/store`: the step's `config` and its secrets.
#[derive(Clone, Debug, Default)]
pub struct StepConfig {
    /// The step definition's `config`.
    pub values: BTreeMap<String, String>,
    /// The secrets the step references, with their values: redacted from everything the
    /// attempt hands back (docs/secrets.md).
    pub secrets: Vec<(String, SecretValue)>,
}

impl StepConfig {
    /// The redactor of this attempt's secrets.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.iter().map(|(n, v)| (n.as_str(), v.expose())))
    }
}

/// A successful attempt: its result and the effects to commit with it.
#[derive(Debug)]
pub struct Completed {
    /// JSON text the plugin answered.
    pub output: String,
    /// The state it read and wrote, and the events it emitted.
    pub effects: Effects,
}

/// An attempt's outcome with the outbound requests it made, whatever the outcome.
#[derive(Debug)]
pub struct Attempted {
    /// Success or failure, as [`Runtime::invoke`] answers.
    pub result: Result<Completed, StepFailure>,
    /// Outbound HTTP requests, in the order they were made.
    pub http: Vec<HttpCall>,
}

/// Why bytes are not a runnable plugin.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// wasmtime refused the component (not a component, wrong world, bad artifact); the
    /// message is wasmtime's whole error chain, bounded in length.
    #[error("{0}")]
    Wasm(String),
    /// The compilation task did not finish (the host is shutting down, or it panicked).
    #[error("compilation aborted: {0}")]
    Aborted(#[from] tokio::task::JoinError),
}

impl CompileError {
    fn wasm(e: wasmtime::Error) -> Self {
        Self::Wasm(describe(&e))
    }
}

/// The shared engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepData>,
    limits: Limits,
    /// One permit per pool slot: an attempt waits for a slot instead of failing to
    /// instantiate when more attempts run at once than the pool holds.
    instances: tokio::sync::Semaphore,
    outbound: http::Outbound,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Builds the engine and links WASI p2 and the `host` interface.
    pub fn new(limits: Limits) -> wasmtime::Result<Arc<Self>> {
        let engine = engine::build_engine(&limits)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |data: &mut StepData| data.config())?;
        bindings::add_to_linker(&mut linker)?;
        let outbound = http::Outbound::new(limits.http.clone()).map_err(wasmtime::Error::msg)?;
        let ticker = engine::EpochTicker::start(&engine);
        let instances = tokio::sync::Semaphore::new(limits.max_instances as usize);
        Ok(Arc::new(Self { engine, linker, limits, instances, outbound, _ticker: ticker }))
    }

    /// The TLS client settings plugins' requests use (roots and `--ca-bundle`), for the host's
    /// own outbound connections (webhooks).
    pub fn tls_config(&self) -> rustls::ClientConfig {
        self.outbound.tls_config()
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Identifies this engine's compiled-code format: artifacts of another are recompiled.
    pub fn engine_fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Compiles and checks a component against the world. Blocking (compilation).
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, PluginPre), CompileError> {
        let component = Component::new(&self.engine, bytes).map_err(CompileError::wasm)?;
        let pre = self.pre(&component)?;
        Ok((component, pre))
    }

    /// Loads an artifact this host wrote with [`Component::serialize`]. Blocking.
    pub fn load_artifact(&self, artifact: &[u8]) -> Result<(Component, PluginPre), CompileError> {
        // SAFETY: artifacts are only ever written by this host (`compile` + `serialize`) into its
        // own store, keyed by digest and `engine_fingerprint`, so they match this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, artifact) }.map_err(CompileError::wasm)?;
        let pre = self.pre(&component)?;
        Ok((component, pre))
    }

    fn pre(&self, component: &Component) -> Result<PluginPre, CompileError> {
        let pre = self.linker.instantiate_pre(component).map_err(CompileError::wasm)?;
        PluginPre::new(pre).map_err(CompileError::wasm)
    }

    /// Runs one attempt in a fresh instance. Every failure, including traps, timeouts and
    /// exceeded limits, comes back as a [`StepFailure`]; nothing here panics the host.
    pub async fn invoke(&self, pre: &PluginPre, call: Call) -> Result<Completed, StepFailure> {
        self.invoke_recorded(pre, call).await.result
    }

    /// [`Runtime::invoke`], with the attempt's outbound requests. A broken grant or HTTP limit
    /// decides the outcome whatever the plugin answered: the plugin may have caught the error.
    pub async fn invoke_recorded(&self, pre: &PluginPre, call: Call) -> Attempted {
        let session = self.outbound.session(call.http.clone(), &call.idempotency_key);
        let journal = session.journal_handle();
        let redactor = call.config.redactor();
        let result = self.run_attempt(pre, call, session, redactor.clone()).await;
        let (http, violation) = journal.take();
        redacted(Attempted { result: violation.map_or(result, Err), http }, &redactor)
    }

    async fn run_attempt(
        &self,
        pre: &PluginPre,
        call: Call,
        http: http::HttpSession,
        redactor: Redactor,
    ) -> Result<Completed, StepFailure> {
        let _slot = self.instances.acquire().await.expect("the instance semaphore is never closed");
        let log = instance::LogSink {
            execution_id: call.execution_id.clone(),
            step: call.step.clone(),
            side: call.side.as_str(),
            attempt: call.attempt,
            lines_left: self.limits.max_log_lines,
            bytes_left: self.limits.max_log_bytes,
            exceeded: false,
            redactor,
        };
        let state = state::StateSession::new(call.state.clone(), self.limits.state.clone());
        let source = EventSource {
            execution_id: call.execution_id.clone(),
            saga: call.saga.clone(),
            step: call.step.clone(),
            side: call.side.as_str().to_owned(),
        };
        let events = events::EventSession::new(source, call.execution_key.clone(), self.limits.events.clone());
        let mut data = StepData::new(log, self.limits.max_memory_bytes, self.limits.max_log_bytes, state, http, events);
        data.set_config(&call.config);
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| &mut data.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let timeout = call.timeout;
        let in_use = &crate::metrics::metrics().instances_in_use;
        in_use.inc();
        let _alive = scopeguard(|| {
            in_use.dec();
        });
        let outcome = tokio::time::timeout(timeout, run(&mut store, pre, call)).await;
        store.data_mut().drain_stdio();
        let refused = store.data().limiter.refused;
        let log_exceeded = store.data().log_limit_exceeded();
        match outcome {
            Err(_) => Err(StepFailure::new(
                FailureKind::Timeout,
                format!("attempt interrupted after its time limit of {} ms", timeout.as_millis()),
            )),
            Ok(Err(_)) if refused.is_some() => Err(StepFailure::new(
                FailureKind::Limit,
                format!(
                    "memory limit of {} MiB exceeded (tried to grow to {} MiB)",
                    self.limits.max_memory_bytes >> 20,
                    refused.unwrap_or(0) >> 20
                ),
            )),
            Ok(Err(failure)) if failure.kind == FailureKind::Trap && log_exceeded => Err(StepFailure::new(
                FailureKind::Limit,
                format!(
                    "log limit exceeded ({} lines or {} bytes per attempt)",
                    self.limits.max_log_lines, self.limits.max_log_bytes
                ),
            )),
            // A panicking Rust guest prints its message to stderr before it traps: keep it.
            Ok(Err(mut failure)) => {
                if failure.kind == FailureKind::Trap
                    && let Some(panic) = instance::panic_message(
                        &store.data().log.redactor.bytes(store.data().stderr.contents().to_vec()),
                    )
                {
                    failure.message = format!("plugin panicked: {panic}; {}", failure.message);
                }
                Err(failure)
            }
            Ok(Ok(Ok(text))) if text.len() > self.limits.max_output_bytes => Err(StepFailure::new(
                FailureKind::Limit,
                format!(
                    "result of {} bytes exceeds the output limit of {} bytes",
                    text.len(),
                    self.limits.max_output_bytes
                ),
            )),
            Ok(Ok(Ok(output))) => {
                let data = store.into_data();
                let mut effects = data.state.into_changes();
                effects.events = data.events.into_events();
                Ok(Completed { output, effects })
            }
            Ok(Ok(Err(Refusal::Retryable(m)))) => Err(StepFailure::new(FailureKind::Retryable, truncate(m))),
            Ok(Ok(Err(Refusal::Permanent(m)))) => Err(StepFailure::new(FailureKind::Permanent, truncate(m))),
        }
    }
}

/// `attempted` without any of its secrets' values: its result, state writes, emitted events,
/// failure message and request records (docs/secrets.md, "Redaction").
fn redacted(mut attempted: Attempted, redactor: &Redactor) -> Attempted {
    if redactor.is_empty() {
        return attempted;
    }
    match &mut attempted.result {
        Ok(done) => {
            done.output = redactor.json(std::mem::take(&mut done.output));
            for (_, value) in done.effects.writes.iter_mut() {
                *value = match value.take() {
                    Some(StateValue::Json(text)) => Some(StateValue::Json(redactor.json(text))),
                    Some(StateValue::Bytes(bytes)) => Some(StateValue::Bytes(redactor.bytes(bytes))),
                    None => None,
                };
            }
            for event in done.effects.events.iter_mut() {
                let text = redactor.json(event.payload.to_string());
                event.payload = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                if let Some(key) = &mut event.key {
                    *key = redactor.text(key).into_owned();
                }
            }
        }
        Err(failure) => failure.message = redactor.text(&failure.message).into_owned(),
    }
    for call in &mut attempted.http {
        for text in [&mut call.host, &mut call.path].into_iter().chain(call.error.as_mut()) {
            *text = redactor.text(text).into_owned();
        }
    }
    attempted
}

/// A plugin's `step-error`, whatever world it came from.
enum Refusal {
    Retryable(String),
    Permanent(String),
}

/// Instantiates `pre` and calls `execute` or `compensate`, with the context and error types of
/// the plugin's world.
macro_rules! call_step {
    ($world:ident, $pre:expr, $store:expr, $call:expr $(, $field:ident: $value:expr)*) => {{
        use bindings::$world::exports::saga::plugin::step::StepError;
        let instantiating = std::time::Instant::now();
        let plugin = $pre.instantiate_async(&mut *$store).await.map_err(instantiate_failed)?;
        crate::metrics::observe(&crate::metrics::metrics().instantiate_seconds, instantiating.elapsed());
        let call = $call;
        // The world's extra fields first: they read `call` before its strings move.
        let ctx = bindings::$world::saga::plugin::types::StepContext {
            $($field: $value(&call),)*
            execution_id: call.execution_id,
            saga: call.saga,
            step: call.step,
            attempt: call.attempt,
            idempotency_key: call.idempotency_key,
            deadline_unix_ms: call.deadline_unix_ms,
        };
        let step = plugin.saga_plugin_step();
        let result = match call.side {
            Side::Execute => step.call_execute(&mut *$store, &ctx, &call.input).await,
            Side::Compensate => step.call_compensate(&mut *$store, &ctx, &call.input).await,
        };
        result.map_err(trapped).map(|r| {
            r.map_err(|e| match e {
                StepError::Retryable(m) => Refusal::Retryable(m),
                StepError::Permanent(m) => Refusal::Permanent(m),
            })
        })
    }};
}

async fn run(store: &mut Store<StepData>, pre: &PluginPre, call: Call) -> Result<Result<String, Refusal>, StepFailure> {
    match pre {
        PluginPre::Current(pre) => {
            call_step!(current, pre, store, call, execution_key: |c: &Call| c.execution_key.clone())
        }
        PluginPre::V0_2(pre) => call_step!(v0_2, pre, store, call),
        PluginPre::V0_1(pre) => call_step!(v0_1, pre, store, call),
    }
}

/// Not the plugin's fault (for example the instance pool is exhausted): try again later.
fn instantiate_failed(e: wasmtime::Error) -> StepFailure {
    StepFailure::new(FailureKind::Retryable, format!("host could not instantiate the plugin: {}", describe(&e)))
}

fn trapped(e: wasmtime::Error) -> StepFailure {
    StepFailure::new(FailureKind::Trap, format!("plugin trapped: {}", describe(&e)))
}

/// An error with its causes on one line, bounded in length.
fn describe(e: &wasmtime::Error) -> String {
    truncate(format!("{e:#}"))
}

fn truncate(mut s: String) -> String {
    const MAX: usize = 2_048;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Runs `f` when dropped (also when the attempt's future is dropped by a timeout).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
