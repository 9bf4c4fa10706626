//! The benchmark plugin of `sagahost bench --http`: with `{"url": ..}` as input it makes one
//! `GET` of that URL with the guest SDK's client (`saga_guest::http`) and answers its status;
//! with `{}` it makes no call. The same component both ways, so that the difference between the
//! two is the cost of the call and nothing else.

use saga_guest::{Compensation, Context, Step, StepError, StepInput, export_step, http};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Fetched {
    status: Option<u16>,
}

struct BenchHttp;

impl Step for BenchHttp {
    type Input = Input;
    type Output = Fetched;
    type Undone = ();

    fn execute(_ctx: &Context, step: StepInput<Input>) -> Result<Fetched, StepError> {
        let Some(url) = step.input.url else { return Ok(Fetched { status: None }) };
        let response = http::get(&url).send()?.error_for_status()?;
        Ok(Fetched { status: Some(response.status()) })
    }

    fn compensate(_ctx: &Context, _undo: Compensation<Input, Fetched>) -> Result<(), StepError> {
        Ok(())
    }
}

export_step!(BenchHttp);
