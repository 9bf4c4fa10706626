//! A plugin built against `saga:plugin@0.1.0` (no state interface), as plugins uploaded before
//! 0.2.0 were. It answers `{"world": "0.1.0", "step": .., "attempt": ..}` and logs one line.

wit_bindgen::generate!({
    path: "../../wit/v0.1",
    world: "plugin",
});

use exports::saga::plugin::step::Guest;
use saga::plugin::host::{Level, log};
use saga::plugin::types::{StepContext, StepError};

struct Legacy;

impl Guest for Legacy {
    fn execute(ctx: StepContext, _input: String) -> Result<String, StepError> {
        log(Level::Info, &format!("legacy plugin ran {}", ctx.step));
        Ok(format!(r#"{{"world":"0.1.0","step":"{}","attempt":{}}}"#, ctx.step, ctx.attempt))
    }

    fn compensate(ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok(format!(r#"{{"world":"0.1.0","undone":"{}"}}"#, ctx.step))
    }
}

export!(Legacy);
