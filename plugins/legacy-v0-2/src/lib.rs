//! A plugin built against `saga:plugin@0.2.0` (state, no events), as plugins uploaded before
//! 0.3.0 were. Each run counts in its state (`runs/count`) and answers
//! `{"world": "0.2.0", "step": .., "count": ..}`.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "plugin",
});

use exports::saga::plugin::step::Guest;
use saga::plugin::host::{Level, log};
use saga::plugin::state::{Value, get, set};
use saga::plugin::types::{StepContext, StepError};

struct Legacy;

impl Guest for Legacy {
    fn execute(ctx: StepContext, _input: String) -> Result<String, StepError> {
        let count = match get("runs", "count").map_err(|e| StepError::Retryable(format!("{e:?}")))? {
            Some(entry) => match entry.value {
                Value::Json(text) => text.parse::<u64>().unwrap_or(0),
                Value::Bytes(_) => 0,
            },
            None => 0,
        } + 1;
        set("runs", "count", &Value::Json(count.to_string())).map_err(|e| StepError::Permanent(format!("{e:?}")))?;
        log(Level::Info, &format!("legacy 0.2 plugin ran {} ({count})", ctx.step));
        Ok(format!(r#"{{"world":"0.2.0","step":"{}","count":{count}}}"#, ctx.step))
    }

    fn compensate(ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok(format!(r#"{{"world":"0.2.0","undone":"{}"}}"#, ctx.step))
    }
}

export!(Legacy);
