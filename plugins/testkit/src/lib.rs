//! A test plugin whose behaviour is chosen per step by the execution input, so one plugin
//! can play every part in host tests: `{"behaviors": {"<step>": "<behavior>"},
//! "compensations": {"<step>": "<behavior>"}}`. Unlisted steps succeed. An execution started by
//! a trigger reads these tables from its event's payload (`{"event": {"payload": {...}}}`).
//!
//! It uses the raw bindings rather than the typed `Step` trait so that it can also break
//! the contract (answer text that is not JSON).
//!
//! Behaviours: `ok`, `permanent`, `retryable`, `fail_until:N` (retryable before attempt N),
//! `sleep:MS`, `loop`, `trap`, `panic`, `oom`, `stack_overflow`, `huge_output`, `not_json`,
//! `log_flood`, `read_file`, `read_env`, `open_socket`, `residue` (reports whether static memory
//! still holds what an earlier instance wrote there, then writes it),
//! `http:<METHOD>:<url>` (calls `url` through `wasi:http`; answers `{"status", "body",
//! "headers"}`, a retryable error on a 5xx status or when the host refuses the request, with
//! the `ErrorCode` in its message). `"http_headers": {"<step>": {"name": "value"}}` in the input
//! adds request headers, `"http_body": {"<step>": "text"}` a request body, `"http_repeat":
//! {"<step>": N}` makes the call N times in a row (the answer is the last one's);
//! `http_parallel:<N>:<url>` starts N GET requests at once through the raw bindings and answers
//! their statuses (or error codes) once all have ended;
//! `sdk_http:<url>` POSTs `{"step", "attempt"}` as JSON to `url` with the SDK's client
//! (`saga_guest::http`) and answers `{"api": <the JSON response>}`; failures map to retryable or
//! permanent as the SDK does (5xx, 429, connection: retryable; other 4xx: permanent);
//! `"sdk_http_timeout_ms": {"<step>": N}` sets the request's timeout (default 5,000);
//! `config:<name>` answers `{"config": value-or-null}` read through `wasi:config/store`
//! (`config:` alone: every value, as an object);
//! `leak:<name>` echoes config value `name` everywhere a plugin can (a log line, stdout,
//! stderr, two state entries, the result as a value, inside a sentence and as an object key,
//! and — when `"leak_url": {"<step>": url}` is given — the path and an `x-leak` header of a GET
//! to `url/<value>`); `leak_fail:<name>` fails permanently with the value in its message.
//!
//! State: `{"state": {"<step>": [op, ...]}}` (and `"compensation_state"`) runs state operations
//! before the behaviour; their results are in the answer's `"state"`. Ops: `{"get": [c, k]}`,
//! `{"set": [c, k, json]}`, `{"set_raw": [c, k, text]}`, `{"set_bytes": [c, k, text]}`, `{"delete": [c, k]}`,
//! `{"cas": [c, k, expected_version_or_null, json_or_null]}`, `{"add": [c, k, n]}` (read a
//! number, add `n`, write it back).
//!
//! Events: `{"emit": {"<step>": [[topic, key_or_null, payload], ...]}}` (and
//! `"compensation_emit"`) emits events before the behaviour (a payload that is a string is sent
//! as that raw text); each one's id or error is in the answer's `"emitted"`. The answer's
//! `"execution_key"` is the context's business key.

use saga_guest::bindings::exports::saga::plugin::step::Guest;
use saga_guest::bindings::saga::plugin::state::{self, Value as Stored};
use saga_guest::bindings::saga::plugin::types::{StepContext, StepError};
use saga_guest::serde_json::{self, Value, json};

mod sdk_http;

struct Testkit;

/// Zero in a fresh instance (`.bss`); `residue` fills it.
static SCRATCH: std::sync::Mutex<[u8; 256 << 10]> = std::sync::Mutex::new([0; 256 << 10]);
/// 7 in a fresh instance (`.data`); `residue` sets it to 8.
static GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(7);

/// The entry of `step` in `table` of the execution input, or of the payload of the event that
/// triggered the execution (`{"input": {"event": {"payload": {...}}}}`).
fn entry(input: &str, table: &str, step: &str) -> Value {
    let v: Value = serde_json::from_str(input).unwrap_or(Value::Null);
    let direct = &v["input"][table][step];
    if direct.is_null() { v["input"]["event"]["payload"][table][step].clone() } else { direct.clone() }
}

fn behavior(input: &str, table: &str, step: &str) -> String {
    entry(input, table, step).as_str().unwrap_or("ok").to_string()
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut more = *pad;
    recurse(depth + 1, &mut more) + more[0] as u64
}

fn stored_json(v: &Value) -> Stored {
    Stored::Json(v.to_string())
}

fn shown(e: Option<state::Entry>) -> Value {
    match e {
        None => Value::Null,
        Some(state::Entry { value: Stored::Json(text), version }) => {
            json!({ "json": serde_json::from_str::<Value>(&text).unwrap_or(Value::Null), "version": version })
        }
        Some(state::Entry { value: Stored::Bytes(b), version }) => {
            json!({ "bytes": String::from_utf8_lossy(&b), "version": version })
        }
    }
}

/// Runs one state operation; its result, or `{"error": ..}`.
fn state_op(op: &Value) -> Value {
    let Some((name, args)) = op.as_object().and_then(|o| o.iter().next()) else {
        return json!({ "error": "an op is an object with one key" });
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let text = |i: usize| arg(i).as_str().unwrap_or("").to_string();
    let (c, k) = (text(0), text(1));
    let result = match name.as_str() {
        "get" => state::get(&c, &k).map(shown),
        "set" => state::set(&c, &k, &stored_json(&arg(2))).map(|()| Value::Null),
        "set_raw" => state::set(&c, &k, &Stored::Json(text(2))).map(|()| Value::Null),
        "set_bytes" => state::set(&c, &k, &Stored::Bytes(text(2).into_bytes())).map(|()| Value::Null),
        "delete" => state::delete(&c, &k).map(|()| Value::Null),
        "cas" => {
            let value = (!arg(3).is_null()).then(|| stored_json(&arg(3)));
            state::compare_and_set(&c, &k, arg(2).as_u64(), value.as_ref()).map(Value::Bool)
        }
        "add" => state::get(&c, &k).and_then(|e| {
            let now = shown(e)["json"].as_i64().unwrap_or(0) + arg(2).as_i64().unwrap_or(0);
            state::set(&c, &k, &stored_json(&json!(now))).map(|()| json!(now))
        }),
        other => return json!({ "error": format!("unknown op {other:?}") }),
    };
    result.unwrap_or_else(|e| json!({ "error": format!("{e:?}") }))
}

fn state_ops(input: &str, table: &str, step: &str) -> Vec<Value> {
    entry(input, table, step).as_array().map(|ops| ops.iter().map(state_op).collect()).unwrap_or_default()
}

fn emit_ops(input: &str, table: &str, step: &str) -> Vec<Value> {
    use saga_guest::bindings::saga::plugin::events::emit;
    let ops = entry(input, table, step);
    let Some(ops) = ops.as_array() else { return Vec::new() };
    ops.iter()
        .map(|op| {
            let topic = op[0].as_str().unwrap_or_default();
            let payload = match &op[2] {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            };
            match emit(topic, op[1].as_str(), &payload) {
                Ok(id) => json!({ "id": id }),
                Err(e) => json!({ "error": format!("{e:?}") }),
            }
        })
        .collect()
}

fn act(
    ctx: &StepContext,
    side: &str,
    behavior: &str,
    (state, emitted): (Vec<Value>, Vec<Value>),
    input: &Value,
) -> Result<String, StepError> {
    let ok = || {
        Ok(json!({
            "step": ctx.step, "side": side, "attempt": ctx.attempt,
            "execution_id": ctx.execution_id, "idempotency_key": ctx.idempotency_key,
            "execution_key": ctx.execution_key,
            "state": state, "emitted": emitted,
        })
        .to_string())
    };
    let (name, arg) = behavior.split_once(':').unwrap_or((behavior, ""));
    match name {
        "ok" => ok(),
        "permanent" => Err(StepError::Permanent(format!("{} said no", ctx.step))),
        "retryable" => Err(StepError::Retryable(format!("{} is temporarily unavailable", ctx.step))),
        "fail_until" if ctx.attempt < arg.parse().unwrap_or(0) => {
            Err(StepError::Retryable(format!("not yet (attempt {})", ctx.attempt)))
        }
        "fail_until" => ok(),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(arg.parse().unwrap_or(0)));
            ok()
        }
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "trap" => std::process::abort(),
        "panic" => panic!("testkit was told to panic"),
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "stack_overflow" => {
            let mut pad = [0u8; 256];
            Ok(recurse(0, &mut pad).to_string())
        }
        "huge_output" => Ok(json!({ "blob": "x".repeat(2 << 20) }).to_string()),
        "not_json" => Ok("this is not JSON".into()),
        "residue" => {
            let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
            let dirty_bytes = scratch.iter().filter(|b| **b != 0).count();
            let generation = GENERATION.swap(8, std::sync::atomic::Ordering::Relaxed);
            scratch.fill(0xAB);
            Ok(json!({ "dirty_bytes": dirty_bytes, "generation": generation }).to_string())
        }
        "deep_result" => {
            let depth: usize = arg.parse().unwrap_or(0);
            Ok(format!("{}1{}", "[".repeat(depth), "]".repeat(depth)))
        }
        "big_number" => Ok("{\"n\": 12345678901234567890123}".into()),
        "log_text" => {
            saga_guest::info!("{arg}");
            eprintln!("{arg}");
            ok()
        }
        "log_flood" => {
            for i in 0..100_000 {
                saga_guest::info!("flood line {i}");
                println!("stdout flood line {i}");
            }
            ok()
        }
        "read_file" => {
            Ok(json!({ "read_file": format!("{:?}", std::fs::read_to_string("/etc/passwd").map(|s| s.len())) })
                .to_string())
        }
        "read_env" => Ok(json!({ "env_vars": std::env::vars().count(), "args": std::env::args().count() }).to_string()),
        "open_socket" => {
            Ok(json!({ "open_socket": format!("{:?}", std::net::TcpStream::connect("127.0.0.1:1").map(|_| ())) })
                .to_string())
        }
        "http" => http_call(ctx, arg, input),
        "sdk_http" => sdk_http::call(ctx, arg, input),
        "config" => read_config(arg),
        "leak" => leak(ctx, arg, input),
        "leak_fail" => Err(StepError::Permanent(format!("refusing, the value is {}", config_value(arg)?))),
        "http_parallel" => http_parallel(arg),
        other => Err(StepError::Permanent(format!("unknown testkit behaviour {other:?}"))),
    }
}

mod config_store {
    wit_bindgen::generate!({ path: "wit", world: "config-reader", generate_all });
}

/// `config:<name>`: one named value, or all of them.
fn read_config(name: &str) -> Result<String, StepError> {
    use config_store::wasi::config::store;
    let value = if name.is_empty() {
        store::get_all().map(|all| Value::Object(all.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
    } else {
        store::get(name).map(|v| v.map_or(Value::Null, Value::String))
    };
    let value = value.map_err(|e| StepError::Retryable(format!("wasi:config/store failed: {e:?}")))?;
    Ok(json!({ "config": value }).to_string())
}

fn config_value(name: &str) -> Result<String, StepError> {
    use config_store::wasi::config::store;
    store::get(name)
        .map_err(|e| StepError::Retryable(format!("wasi:config/store failed: {e:?}")))?
        .ok_or_else(|| StepError::Permanent(format!("no config value {name:?}")))
}

/// `leak:<name>`: see the module documentation.
fn leak(ctx: &StepContext, name: &str, input: &Value) -> Result<String, StepError> {
    let v = config_value(name)?;
    saga_guest::info!("the value is {v}");
    println!("stdout says {v}");
    eprintln!("stderr says {v}");
    // Without state (a runtime test), the writes fail and the rest goes on.
    let _ = state::set("leak", "json", &stored_json(&json!({ "value": v })));
    let _ = state::set("leak", "bytes", &Stored::Bytes(format!("raw {v} bytes").into_bytes()));
    let mut sent = Value::Null;
    if let Some(url) = input["input"]["leak_url"][&ctx.step].as_str() {
        let response = waki::Client::new().get(&format!("{url}/{v}")).header("x-leak", v.as_str()).send();
        sent = json!(response.map(|r| r.status_code()).map_err(|e| format!("{e:?}")).is_ok());
    }
    let mut answer = json!({ "echo": v, "sentence": format!("the key is {v}."), "sent": sent });
    answer[v.as_str()] = json!("as a key");
    Ok(answer.to_string())
}

/// `http_parallel:<N>:<url>`: N requests in flight at once (`handle` N times, then wait).
fn http_parallel(arg: &str) -> Result<String, StepError> {
    use waki::bindings::wasi::http::{outgoing_handler, types};
    let (n, url) = arg.split_once(':').unwrap_or(("2", arg));
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let mut pending = Vec::new();
    for _ in 0..n.parse::<u32>().unwrap_or(2) {
        let request = types::OutgoingRequest::new(types::Fields::new());
        let scheme = if scheme == "https" { types::Scheme::Https } else { types::Scheme::Http };
        let _ = request.set_scheme(Some(&scheme));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some(path));
        pending.push(outgoing_handler::handle(request, None));
    }
    let outcomes: Vec<Value> = pending
        .into_iter()
        .map(|started| match started {
            Err(code) => json!(format!("{code:?}")),
            Ok(future) => {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(response))) => json!(response.status()),
                    Some(Ok(Err(code))) => json!(format!("{code:?}")),
                    other => json!(format!("{other:?}")),
                }
            }
        })
        .collect();
    Ok(json!({ "parallel": outcomes }).to_string())
}

/// `http:<METHOD>:<url>`, `http_repeat` times.
fn http_call(ctx: &StepContext, arg: &str, input: &Value) -> Result<String, StepError> {
    let times = input["input"]["http_repeat"][&ctx.step].as_u64().unwrap_or(1).max(1);
    for _ in 1..times {
        http_once(ctx, arg, input)?;
    }
    http_once(ctx, arg, input)
}

/// One request through `wasi:http/outgoing-handler`.
fn http_once(ctx: &StepContext, arg: &str, input: &Value) -> Result<String, StepError> {
    let (method, url) = arg.split_once(':').unwrap_or(("GET", arg));
    let method = match method {
        "GET" => waki::Method::Get,
        "POST" => waki::Method::Post,
        "PUT" => waki::Method::Put,
        "DELETE" => waki::Method::Delete,
        other => waki::Method::Other(other.to_string()),
    };
    let mut request = waki::Client::new().request(method, url);
    if let Some(headers) = input["input"]["http_headers"][&ctx.step].as_object() {
        for (name, value) in headers {
            if let Ok(name) = waki::header::HeaderName::from_bytes(name.as_bytes()) {
                request = request.header(name, value.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(body) = input["input"]["http_body"][&ctx.step].as_str() {
        request = request.body(body.as_bytes().to_vec());
    }
    let response = request.send().map_err(|e| {
        // On stderr too: the host replaces the answer when it refused the request itself.
        eprintln!("testkit http request failed: {e:?}");
        StepError::Retryable(format!("http request failed: {e:?}"))
    })?;
    let status = response.status_code();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    let body = response.body().map_err(|e| StepError::Retryable(format!("http body failed: {e:?}")))?;
    if status >= 500 {
        return Err(StepError::Retryable(format!("upstream answered {status}")));
    }
    Ok(json!({ "status": status, "body": String::from_utf8_lossy(&body), "headers": headers }).to_string())
}

impl Guest for Testkit {
    fn execute(ctx: StepContext, input: String) -> Result<String, StepError> {
        let b = behavior(&input, "behaviors", &ctx.step);
        let effects = (state_ops(&input, "state", &ctx.step), emit_ops(&input, "emit", &ctx.step));
        act(&ctx, "execute", &b, effects, &serde_json::from_str(&input).unwrap_or(Value::Null))
    }

    fn compensate(ctx: StepContext, input: String) -> Result<String, StepError> {
        let b = behavior(&input, "compensations", &ctx.step);
        let effects =
            (state_ops(&input, "compensation_state", &ctx.step), emit_ops(&input, "compensation_emit", &ctx.step));
        act(&ctx, "compensate", &b, effects, &serde_json::from_str(&input).unwrap_or(Value::Null))
    }
}

saga_guest::bindings::__export_plugin!(Testkit with_types_in saga_guest::bindings);
