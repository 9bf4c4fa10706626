//! Guest SDK for [sagahost](https://example.invalid) step plugins.
//!
//! A plugin performs one saga step (`execute`) and undoes it (`compensate`). Write a type
//! implementing [`Step`] with typed (serde) input and output, and export it with
//! [`export_step!`]. `cargo build --release --target wasm32-wasip2` then produces the
//! `.wasm` component to upload with `PUT /v1/plugins/{name}/{version}`.
//!
//! ```no_run
//! use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Order { order_id: String, amount: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Charge { charge_id: String, state: String }
//!
//! struct Payment;
//!
//! impl Step for Payment {
//!     type Input = Order;
//!     type Output = Charge;
//!     type Undone = Charge;
//!
//!     fn execute(ctx: &Context, step: StepInput<Order>) -> Result<Charge, StepError> {
//!         if step.input.amount > 1_000 {
//!             return Err(StepError::permanent("PAYMENT_FAILED: amount over limit"));
//!         }
//!         saga_guest::info!("charging {} for order {}", step.input.amount, step.input.order_id);
//!         // The idempotency key is stable across retries: pass it to the payment provider.
//!         Ok(Charge { charge_id: ctx.idempotency_key.clone(), state: "PAYMENT_COMPLETE".into() })
//!     }
//!
//!     fn compensate(_ctx: &Context, undo: Compensation<Order, Charge>) -> Result<Charge, StepError> {
//!         // `result` is None when the outcome of `execute` is unknown (it timed out or
//!         // trapped): a compensation must tolerate "nothing to undo".
//!         let charge_id = undo.result.map(|c| c.charge_id).unwrap_or_default();
//!         Ok(Charge { charge_id, state: "REFUNDED".into() })
//!     }
//! }
//!
//! export_step!(Payment);
//! ```
//!
//! Beyond the step itself: [`state`] is the plugin's durable key-value state, committed with
//! the step; [`events`] emits events, recorded with the step too (an outbox); [`config`] reads the step's named configuration values; `http` (the cargo feature
//! `http`, on by default) is a typed client for the outbound HTTP calls the step's `allow_http`
//! grants, mapping failures to [`StepError`].
//!
//! Keep the `.wasm` small with this release profile in the plugin's `Cargo.toml`
//! (a few dozen KB instead of megabytes):
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! codegen-units = 1
//! panic = "abort"
//! ```

use std::fmt;

pub mod config;
pub mod events;
#[cfg(feature = "http")]
pub mod http;
pub mod state;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use serde;
pub use serde_json;

/// Bindings generated from the WIT package shared with the host. Plugin authors do not
/// need them: [`Step`] and [`export_step!`] wrap them.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "saga_guest::bindings",
    });
}

use bindings::saga::plugin::host::{self as wit_host, Level};
use bindings::saga::plugin::types::{StepContext, StepError as WitStepError};

/// What the host tells a plugin about the attempt it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Correlation id: the same for every step and compensation of one execution.
    pub execution_id: String,
    /// Saga definition name.
    pub saga: String,
    /// Step name within the definition.
    pub step: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Stable across retries and restarts of this step (and, separately, of its compensation):
    /// hand it to other systems to de-duplicate.
    pub idempotency_key: String,
    /// When the host will interrupt this attempt (unix milliseconds).
    pub deadline_unix_ms: u64,
    /// The execution's business key (from its trigger or its `Execution-Key`), if it has one.
    pub execution_key: Option<String>,
}

impl From<StepContext> for Context {
    fn from(c: StepContext) -> Self {
        Self {
            execution_id: c.execution_id,
            saga: c.saga,
            step: c.step,
            attempt: c.attempt,
            idempotency_key: c.idempotency_key,
            deadline_unix_ms: c.deadline_unix_ms,
            execution_key: c.execution_key,
        }
    }
}

/// Why a step attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// Try again under the step's retry policy (a transient outage).
    Retryable(String),
    /// Retrying cannot help: the saga compensates (or, for a compensation, fails).
    Permanent(String),
}

impl StepError {
    /// A failure worth retrying.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::Permanent(message.to_string())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

impl From<StepError> for WitStepError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable(m) => Self::Retryable(m),
            StepError::Permanent(m) => Self::Permanent(m),
        }
    }
}

/// What `execute` receives: the execution's input and the results of earlier steps.
#[derive(Clone, Debug, Deserialize)]
pub struct StepInput<I> {
    /// The input the execution was triggered with.
    pub input: I,
    /// Results of the earlier completed steps, by step name.
    #[serde(default)]
    pub results: Map<String, Value>,
}

impl<I> StepInput<I> {
    /// The result of an earlier step, decoded; `None` if it has none or it does not decode.
    pub fn result<T: DeserializeOwned>(&self, step: &str) -> Option<T> {
        self.results.get(step).and_then(|v| T::deserialize(v).ok())
    }
}

/// What `compensate` receives: the `execute` input plus that step's result and the reason.
#[derive(Clone, Debug, Deserialize)]
pub struct Compensation<I, O> {
    /// The input the execution was triggered with.
    pub input: I,
    /// Results of the steps before this one.
    #[serde(default)]
    pub results: Map<String, Value>,
    /// This step's own result; `None` when its outcome is unknown (timed out, trapped).
    #[serde(default = "none")]
    pub result: Option<O>,
    /// Why the saga is compensating.
    #[serde(default)]
    pub reason: String,
}

fn none<O>() -> Option<O> {
    None
}

/// One saga step: its forward action and its compensation.
pub trait Step {
    /// The execution input this step reads (`{"input": ...}`, docs/events.md "Step input").
    type Input: DeserializeOwned;
    /// What `execute` answers; recorded as the step's result.
    type Output: Serialize + DeserializeOwned;
    /// What `compensate` answers; recorded as the compensation's result.
    type Undone: Serialize;

    /// Performs the step.
    fn execute(ctx: &Context, step: StepInput<Self::Input>) -> Result<Self::Output, StepError>;

    /// Undoes the step. Must tolerate being called when `execute` had no effect.
    fn compensate(ctx: &Context, undo: Compensation<Self::Input, Self::Output>) -> Result<Self::Undone, StepError>;
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, WitStepError> {
    serde_json::from_str(text)
        .map_err(|e| WitStepError::Permanent(format!("input does not match the plugin's input type: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<String, WitStepError> {
    serde_json::to_string(value).map_err(|e| WitStepError::Permanent(format!("result cannot be encoded as JSON: {e}")))
}

#[doc(hidden)]
pub fn __execute<S: Step>(ctx: StepContext, input: String) -> Result<String, WitStepError> {
    let step = decode(&input)?;
    let out = S::execute(&ctx.into(), step).map_err(WitStepError::from)?;
    encode(&out)
}

#[doc(hidden)]
pub fn __compensate<S: Step>(ctx: StepContext, input: String) -> Result<String, WitStepError> {
    let undo = decode(&input)?;
    let out = S::compensate(&ctx.into(), undo).map_err(WitStepError::from)?;
    encode(&out)
}

/// Exports a [`Step`] implementation as the plugin's `execute` and `compensate`.
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        struct __SagaGuestExport;

        impl $crate::bindings::exports::saga::plugin::step::Guest for __SagaGuestExport {
            fn execute(
                ctx: $crate::bindings::saga::plugin::types::StepContext,
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::bindings::saga::plugin::types::StepError> {
                $crate::__execute::<$step>(ctx, input)
            }

            fn compensate(
                ctx: $crate::bindings::saga::plugin::types::StepContext,
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::bindings::saga::plugin::types::StepError> {
                $crate::__compensate::<$step>(ctx, input)
            }
        }

        $crate::bindings::__export_plugin!(__SagaGuestExport with_types_in $crate::bindings);
    };
}

/// Log levels of [`log`].
pub use bindings::saga::plugin::host::Level as LogLevel;

/// Writes one line to the host's log; the host tags it with the execution id and step.
pub fn log(level: LogLevel, message: &str) {
    wit_host::log(level, message);
}

#[doc(hidden)]
pub fn __log(level: Level, args: fmt::Arguments<'_>) {
    wit_host::log(level, &args.to_string());
}

/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Info, format_args!($($arg)*)) };
}

/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Warn, format_args!($($arg)*)) };
}

/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Error, format_args!($($arg)*)) };
}

/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Debug, format_args!($($arg)*)) };
}
