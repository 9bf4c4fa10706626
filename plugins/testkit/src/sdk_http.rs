//! `sdk_http:<url>`: one JSON round trip through the guest SDK's typed client.

use std::time::Duration;

use saga_guest::bindings::saga::plugin::types::{StepContext, StepError};
use saga_guest::serde_json::{Value, json};

/// POSTs the step's name and attempt to `url`; answers the JSON it got back.
pub(crate) fn call(ctx: &StepContext, url: &str, input: &Value) -> Result<String, StepError> {
    let timeout_ms = input["input"]["sdk_http_timeout_ms"][&ctx.step].as_u64().unwrap_or(5_000);
    let answer: Value = saga_guest::http::post(url)
        .header("x-testkit", "sdk")
        .timeout(Duration::from_millis(timeout_ms))
        .json(&json!({ "step": ctx.step, "attempt": ctx.attempt }))
        .send_json()
        .map_err(saga_guest::StepError::from)?;
    Ok(json!({ "api": answer }).to_string())
}
