//! The benchmark plugin: a step that does nothing, so that a benchmark measures the host.

use saga_guest::bindings::exports::saga::plugin::step::Guest;
use saga_guest::bindings::saga::plugin::types::{StepContext, StepError};

struct Noop;

impl Guest for Noop {
    fn execute(_ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok("{}".into())
    }

    fn compensate(_ctx: StepContext, _input: String) -> Result<String, StepError> {
        Ok("{}".into())
    }
}

saga_guest::bindings::__export_plugin!(Noop with_types_in saga_guest::bindings);
