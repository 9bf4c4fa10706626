//! Durable means durable against power loss ([docs/operations.md](../../docs/operations.md#durability),
//! sled change 3 in `vendor/README.md`): the real host runs under `strace`, triggers are sent
//! one at a time, and the trace must show
//! - that every write to sled's log file is followed, in the thread that wrote it, by a data
//!   sync (`fdatasync` or `fsync`) of that file before the thread touches the file again;
//! - for every `202` answer, a data sync of the log file that started after the first write
//!   to it following the request and ended before the answer arrived;
//! - a sync of the data directory (the names `db`, `conf`, `blobs`) and of its parent (the
//!   directory's own name) before the first answer.
//!
//! Skipped with a printed reason when `strace` is missing or cannot trace (no ptrace).
//! `SAGAHOST_DURABILITY_BIN=<path>` runs it against another build of the host: it fails for
//! one built with upstream sled (`sync_file_range`, no `fdatasync`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::{Api, testkit_saga, wasm};

/// Triggers sent, one at a time.
const TRIGGERS: usize = 20;

/// The syscalls that write to or sync a file (sled writes its log with `pwrite`).
const TRACED: &str = "pwrite64,pwritev,pwritev2,fdatasync,fsync,sync_file_range";

/// `strace`'s flags, or why it cannot trace here.
fn strace_flags() -> Result<Vec<&'static str>, String> {
    let probe = |flags: &[&str]| {
        Command::new("strace")
            .args(flags)
            .args(["-e", "trace=fdatasync", "-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .output()
    };
    let plain = ["-f", "-ttt", "-T", "-y"];
    match probe(&plain) {
        Err(e) => return Err(format!("cannot run strace: {e}")),
        Ok(out) if !out.status.success() => {
            return Err(format!("strace cannot trace here: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(_) => {}
    }
    // Only the traced calls stop the host when the kernel filters for strace (strace ≥ 5.3).
    let fast = ["-f", "-ttt", "-T", "-y", "--seccomp-bpf"];
    Ok(if probe(&fast).is_ok_and(|o| o.status.success()) { fast.to_vec() } else { plain.to_vec() })
}

/// `strace` running `sagahost serve`; killed with the host if the test fails.
struct Traced {
    strace: Child,
    url: String,
}

impl Traced {
    fn start(flags: &[&str], trace: &Path, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut strace = Command::new("strace")
            .args(flags)
            .args(["-e", &format!("trace={TRACED}"), "-o"])
            .arg(trace)
            .arg(std::env::var("SAGAHOST_DURABILITY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sagahost").into()))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start strace");
        let line = BufReader::new(strace.stdout.take().unwrap()).lines().next().expect("no output").unwrap();
        let url = line.strip_prefix("sagahost listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        Self { strace, url }
    }

    /// The host: strace's only child.
    fn host_pid(&self) -> Option<u32> {
        let parent = self.strace.id().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == parent).then(|| e.file_name().to_str()?.parse().ok()).flatten()
        })
    }

    /// SIGTERM to the host, then wait for the host and strace to exit.
    fn stop(mut self) {
        let pid = self.host_pid().expect("the host under strace");
        assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
        let status = self.strace.wait().unwrap();
        assert!(status.success(), "host under strace exited with {status}");
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Ok(None) = self.strace.try_wait() {
            if let Some(pid) = self.host_pid() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            let _ = self.strace.kill();
            let _ = self.strace.wait();
        }
    }
}

/// One finished syscall on a file, from the trace. Times in µs since the epoch.
#[derive(Debug, Clone)]
struct Call {
    pid: u32,
    start: u64,
    end: u64,
    name: String,
    path: String,
    ok: bool,
}

impl Call {
    fn is_write(&self) -> bool {
        self.name.starts_with("pwrite")
    }
    fn is_data_sync(&self) -> bool {
        self.ok && (self.name == "fdatasync" || self.name == "fsync")
    }
}

fn micros(seconds: &str) -> u64 {
    let (s, frac) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let frac = format!("{frac:0<6}");
    s.parse::<u64>().unwrap() * 1_000_000 + frac[..6].parse::<u64>().unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// `name(fd</path>, ...`: the call's name and the file's path as `-y` prints it.
fn name_and_path(call: &str) -> Option<(String, String)> {
    let (name, args) = call.split_once('(')?;
    let path = args.split_once('<')?.1.split_once('>')?.0;
    Some((name.to_owned(), path.to_owned()))
}

/// `... = RET <DUR>`: whether it succeeded, and its duration in µs.
fn outcome(line: &str) -> Option<(bool, u64)> {
    let ret = line.rsplit_once(" = ")?.1;
    let dur = micros(ret.rsplit_once('<')?.1.strip_suffix('>')?);
    Some((!ret.starts_with('-'), dur))
}

/// The finished calls in a trace written with `-f -ttt -T -y`, in the order they ended.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<u32, (u64, String, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        // `PID TIME CALL`; strace pads the pid to a width, so fields may be apart by several spaces.
        let Some((pid, rest)) = line.split_once(' ') else { continue };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else { continue };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), ts.parse::<f64>()) else { continue };
        let at = micros(ts);
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        if rest.starts_with("<... ") {
            if let (Some((start, name, path)), Some((ok, dur))) = (pending.remove(&pid), outcome(rest)) {
                calls.push(Call { pid, start, end: start + dur, name, path, ok });
            }
            continue;
        }
        let Some((name, path)) = name_and_path(rest) else { continue };
        if rest.ends_with("<unfinished ...>") {
            pending.insert(pid, (at, name, path));
        } else if let Some((ok, dur)) = outcome(rest) {
            calls.push(Call { pid, start: at, end: at + dur, name, path, ok });
        }
    }
    calls
}

/// Every write to the log is followed, in its thread, by a data sync before anything else
/// touches the file from that thread: the buffer counts as stable only after it.
fn unsynced_writes(log_calls: &[Call]) -> Vec<String> {
    let mut last: HashMap<u32, &Call> = HashMap::new();
    let mut bad = Vec::new();
    for c in log_calls {
        if let Some(prev) = last.insert(c.pid, c)
            && prev.is_write()
            && !c.is_data_sync()
        {
            bad.push(format!("{prev:?} then {c:?}"));
        }
    }
    bad.extend(last.values().filter(|c| c.is_write()).map(|c| format!("{c:?} never synced")));
    bad
}

/// Why the answer to a request sent at `sent` and answered at `answered` did not wait for a
/// data sync of what was written for it.
fn unsynced_answer(log_calls: &[Call], sent: u64, answered: u64) -> Option<String> {
    let Some(write) = log_calls.iter().filter(|c| c.is_write() && c.start >= sent).min_by_key(|c| c.start) else {
        return Some("no write to the log after the request".into());
    };
    if write.end > answered {
        return Some(format!("answered before its write ended: {write:?}"));
    }
    let synced = log_calls.iter().any(|c| c.is_data_sync() && c.start >= write.end && c.end <= answered);
    (!synced).then(|| format!("no data sync between {write:?} and the answer at {answered}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_waited_for_a_data_sync_of_the_log() {
    let flags = match strace_flags() {
        Ok(flags) => flags,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let trace_file = tmp.path().join("trace.txt");
    let host = Traced::start(&flags, &trace_file, &dir);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("s", &testkit_saga(&["a"], json!({}))).await;

    let mut answers = Vec::new();
    for _ in 0..TRIGGERS {
        let sent = now();
        let id = api.trigger("s", &json!({}), None).await;
        answers.push((sent, now()));
        let exec = api.wait_terminal(&id).await;
        assert_eq!(exec["status"], "completed", "{exec}");
    }
    host.stop();

    let canonical = std::fs::canonicalize(&dir).unwrap();
    let (log, data_dir) = (canonical.join("db"), canonical.to_string_lossy().into_owned());
    let calls = parse(&std::fs::read_to_string(&trace_file).unwrap());
    let mut log_calls: Vec<Call> = calls.iter().filter(|c| Path::new(&c.path) == log).cloned().collect();
    log_calls.sort_by_key(|c| c.start);
    let count = |name: &str| log_calls.iter().filter(|c| c.name == name).count();
    let writes = log_calls.iter().filter(|c| c.is_write()).count();
    println!(
        "trace of {TRIGGERS} acknowledged triggers: {} calls, on the log file {writes} writes, {} fdatasync, {} \
         fsync, {} sync_file_range",
        calls.len(),
        count("fdatasync"),
        count("fsync"),
        count("sync_file_range")
    );
    assert!(writes >= TRIGGERS, "the trace has {writes} writes to {log:?}: is it the log file?");

    let bad = unsynced_writes(&log_calls);
    assert!(bad.is_empty(), "{} writes to the log were not followed by a data sync:\n{}", bad.len(), bad.join("\n"));
    let late: Vec<String> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, &(sent, answered))| unsynced_answer(&log_calls, sent, answered).map(|w| format!("#{i}: {w}")))
        .collect();
    assert!(late.is_empty(), "answers that did not wait for a data sync:\n{}", late.join("\n"));

    let first_answer = answers[0].1;
    let parent = canonical.parent().unwrap().to_string_lossy().into_owned();
    for dir in [&data_dir, &parent] {
        let synced = calls.iter().any(|c| c.name == "fsync" && c.ok && &c.path == dir && c.end <= first_answer);
        assert!(synced, "directory {dir} was not fsynced before the first answer");
    }
}

/// The parser on lines as strace 6 writes them, split calls included.
#[test]
fn strace_lines_are_parsed() {
    let trace = "\
7 1700000000.000010 pwrite64(5</d/db>, \"\\1 = x\"..., 4096, 0) = 4096 <0.000020>
8 1700000000.000040 fdatasync(5</d/db> <unfinished ...>
7     1700000000.000050 fsync(6</d>) = 0 <0.000005>
8 1700000000.000400 <... fdatasync resumed>) = 0 <0.000360>
9 1700000000.000500 fdatasync(5</d/db>) = -1 EIO (Input/output error) <0.000001>
7 1700000000.000600 +++ exited with 0 +++
";
    let calls = parse(trace);
    let sums: Vec<(u32, &str, &str, u64, u64, bool)> = calls
        .iter()
        .map(|c| (c.pid, c.name.as_str(), c.path.as_str(), c.start % 1_000_000, c.end % 1_000_000, c.ok))
        .collect();
    assert_eq!(
        sums,
        [
            (7, "pwrite64", "/d/db", 10, 30, true),
            (7, "fsync", "/d", 50, 55, true),
            (8, "fdatasync", "/d/db", 40, 400, true),
            (9, "fdatasync", "/d/db", 500, 501, false),
        ]
    );
    let on_log: Vec<Call> = calls.iter().filter(|c| c.path == "/d/db").cloned().collect();
    assert_eq!(unsynced_writes(&on_log).len(), 1, "pid 7 wrote and never synced the log itself");
    assert_eq!(unsynced_answer(&on_log, micros("1700000000.000000"), micros("1700000000.000401")), None);
    assert!(unsynced_answer(&on_log, micros("1700000000.000000"), micros("1700000000.000399")).is_some());
}
