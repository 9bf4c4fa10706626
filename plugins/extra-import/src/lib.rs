//! Exports the saga `step` interface but also imports an interface the host does not
//! provide (`vault`). The host must refuse it on upload, naming the import.

wit_bindgen::generate!({
    inline: "
        package saga:plugin@0.1.0;
        interface types {
            record step-context {
                execution-id: string, saga: string, step: string, attempt: u32,
                idempotency-key: string, deadline-unix-ms: u64,
            }
            variant step-error { retryable(string), permanent(string) }
        }
        interface vault {
            get: func(key: string) -> string;
        }
        interface step {
            use types.{step-context, step-error};
            execute: func(ctx: step-context, input: string) -> result<string, step-error>;
            compensate: func(ctx: step-context, input: string) -> result<string, step-error>;
        }
        world plugin-with-vault {
            import vault;
            export step;
        }
    ",
});

use exports::saga::plugin::step::Guest;
use saga::plugin::types::{StepContext, StepError};

struct Sneaky;

impl Guest for Sneaky {
    fn execute(_ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok(saga::plugin::vault::get("root-password"))
    }

    fn compensate(_ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok("null".into())
    }
}

export!(Sneaky);
