//! Per-attempt state: a fresh WASI context with no ambient authority, the `host` interface
//! (logging into `tracing`), and a memory limiter that remembers when it refused.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{current, v0_1, v0_2};
use super::events::EventSession;
use super::http::HttpSession;
use super::state::StateSession;

/// Refuses memory growth past the configured size and remembers it did, so that the
/// resulting trap is reported as a `limit` failure naming the limit.
pub struct MemoryLimiter {
    max_bytes: usize,
    /// Set when a growth was refused.
    pub refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Where the guest's log lines go, with the attempt's identity.
pub struct LogSink {
    /// Correlation id.
    pub execution_id: String,
    /// Step name.
    pub step: String,
    /// `execute` or `compensate`.
    pub side: &'static str,
    /// Attempt number.
    pub attempt: u32,
    /// Lines still allowed in this attempt.
    pub lines_left: u32,
    /// Bytes still allowed in this attempt.
    pub bytes_left: usize,
    /// Set once a budget ran out: the next `log` call traps the guest.
    pub exceeded: bool,
    /// Removes the attempt's secret values from each line.
    pub redactor: crate::secrets::Redactor,
}

impl LogSink {
    /// Emits one guest line through `tracing`, within the attempt's budget. `false` when the
    /// budget is exhausted (the line is dropped).
    pub fn emit(&mut self, level: tracing::Level, source: &'static str, message: &str) -> bool {
        if self.lines_left == 0 || self.bytes_left < message.len() {
            self.exceeded = true;
            return false;
        }
        self.lines_left -= 1;
        self.bytes_left -= message.len();
        let (execution_id, step, side, attempt) = (&self.execution_id, &self.step, self.side, self.attempt);
        // A plugin's text must not forge log lines: control characters are written escaped.
        let message = self.redactor.text(message);
        let message = escape_control(&message);
        macro_rules! at {
            ($lvl:expr) => {
                tracing::event!(target: "plugin", $lvl, %execution_id, %step, side, attempt, source, "{message}")
            };
        }
        match level {
            tracing::Level::ERROR => at!(tracing::Level::ERROR),
            tracing::Level::WARN => at!(tracing::Level::WARN),
            tracing::Level::INFO => at!(tracing::Level::INFO),
            tracing::Level::DEBUG => at!(tracing::Level::DEBUG),
            _ => at!(tracing::Level::TRACE),
        }
        true
    }
}

/// `message` with every control character (newline, carriage return, escape, ...) written as
/// a visible escape (`\n`, `\u{1b}`), so that one call logs exactly one line.
pub fn escape_control(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The message of a Rust panic the guest printed to stderr before it trapped
/// (`thread '…' panicked at FILE:LINE:COL:` then the message), bounded in length.
pub fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.find("panicked at ")?;
    let mut lines = text[at..].lines();
    let location = lines.next()?.trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    let mut out = format!("{} ({location})", message.join(" ").trim());
    if out.len() > 1_024 {
        let mut end = 1_024;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    Some(escape_control(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain"), "plain");
        assert_eq!(escape_control("a\nERROR forged\r\t\u{1b}[31m"), "a\\nERROR forged\\r\\t\\u{1b}[31m");
    }

    #[test]
    fn panic_messages_are_found_in_stderr() {
        let stderr = b"thread '<unnamed>' panicked at src/lib.rs:121:19:\ntestkit was told to panic\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("testkit was told to panic (panicked at src/lib.rs:121:19)"));
        assert_eq!(panic_message(b"just a line\n"), None);
    }
}

/// The data of one attempt's store.
pub struct StepData {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory limiter.
    pub limiter: MemoryLimiter,
    /// Log destination.
    pub log: LogSink,
    /// Captured stdout.
    pub stdout: MemoryOutputPipe,
    /// Captured stderr.
    pub stderr: MemoryOutputPipe,
    /// The attempt's view of its plugin's durable state.
    pub state: StateSession,
    /// The attempt's outbound HTTP: its grants, limits and journal.
    pub http: HttpSession,
    /// The events the attempt emitted.
    pub events: EventSession,
    http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    config: wasmtime_wasi_config::WasiConfigVariables,
    log_bytes: usize,
}

impl StepData {
    /// A fresh sandbox: no preopened directories, no environment, no arguments, no network;
    /// clocks and randomness only; outbound HTTP only as `http` grants. stdout and stderr are
    /// captured, bounded by `log_bytes`.
    pub fn new(
        log: LogSink,
        max_memory_bytes: usize,
        log_bytes: usize,
        state: StateSession,
        http: HttpSession,
        events: EventSession,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(log_bytes);
        let stderr = MemoryOutputPipe::new(log_bytes);
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max_bytes: max_memory_bytes, refused: None },
            log,
            stdout,
            stderr,
            state,
            http,
            events,
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            config: Default::default(),
            log_bytes,
        }
    }

    /// The named values `wasi:config/store` answers: the step definition's `config` and its
    /// secrets.
    pub fn set_config(&mut self, config: &super::StepConfig) {
        let values = config.values.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let secrets = config.secrets.iter().map(|(k, v)| (k.as_str(), v.expose()));
        self.config = values.chain(secrets).collect();
    }

    /// The `wasi:config/store` view of this attempt.
    pub fn config(&mut self) -> wasmtime_wasi_config::WasiConfig<'_> {
        wasmtime_wasi_config::WasiConfig::from(&self.config)
    }

    /// Whether the guest wrote more than its log budget (through `log` or stdout/stderr).
    pub fn log_limit_exceeded(&self) -> bool {
        self.log.exceeded
            || self.stdout.contents().len() >= self.log_bytes
            || self.stderr.contents().len() >= self.log_bytes
    }

    /// Sends what the guest printed to the log, line by line, within the attempt's budget.
    pub fn drain_stdio(&mut self) {
        for (pipe, level, source) in [
            (self.stdout.contents(), tracing::Level::INFO, "stdout"),
            (self.stderr.contents(), tracing::Level::WARN, "stderr"),
        ] {
            // Redacted whole, before splitting: a value may span lines.
            let text = self.log.redactor.text(&String::from_utf8_lossy(&pipe)).into_owned();
            for line in text.lines().filter(|l| !l.is_empty()) {
                if !self.log.emit(level, source, line) {
                    tracing::warn!(execution_id = %self.log.execution_id, step = %self.log.step, "plugin log budget exhausted");
                    return;
                }
            }
        }
    }
}

impl WasiView for StepData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for StepData {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView { ctx: &mut self.http_ctx, table: &mut self.table, hooks: &mut self.http }
    }
}

impl StepData {
    /// A `log` call: `Err` (a trap) once the attempt's log budget is spent, which stops a log
    /// flood at once rather than letting it run to its time limit.
    fn log_call(&mut self, level: tracing::Level, message: &str) -> wasmtime::Result<()> {
        if self.log.emit(level, "log", message) { Ok(()) } else { Err(wasmtime::Error::msg("log limit exceeded")) }
    }
}

/// Implements a world's `types` and `host` interfaces by forwarding to [`StepData::log_call`].
macro_rules! host_interfaces {
    ($world:ident) => {
        impl $world::saga::plugin::types::Host for StepData {}

        impl $world::saga::plugin::host::Host for StepData {
            async fn log(&mut self, level: $world::saga::plugin::host::Level, message: String) -> wasmtime::Result<()> {
                use $world::saga::plugin::host::Level;
                let level = match level {
                    Level::Trace => tracing::Level::TRACE,
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                self.log_call(level, &message)
            }
        }
    };
}

host_interfaces!(current);
host_interfaces!(v0_2);
host_interfaces!(v0_1);
