//! Measuring a load: driving an operation from many tasks for a phase, the CPU it took,
//! percentiles, and the progress line on stderr.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::lock;

#[derive(Default)]
pub(super) struct Progress {
    pub(super) phase: std::sync::Mutex<String>,
    pub(super) count: AtomicU64,
    pub(super) done: AtomicBool,
}

impl Progress {
    pub(super) fn start(&self, phase: String) {
        self.count.store(0, Ordering::Relaxed);
        *lock(&self.phase) = phase;
    }
}

pub(super) fn spawn_progress(p: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let mut last = String::new();
        while !p.done.load(Ordering::Relaxed) {
            let phase = lock(&p.phase).clone();
            let line = format!("[bench] {phase}: {} done", p.count.load(Ordering::Relaxed));
            if tty {
                eprint!("\r\x1b[K{line}");
            } else if phase != last {
                eprintln!("[bench] {phase}");
            }
            last = phase;
            let _ = std::io::stderr().flush();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if tty {
            eprint!("\r\x1b[K");
        }
    })
}

/// What [`drive`] measured.
pub(super) struct Driven {
    /// Operations completed.
    pub(super) n: u64,
    /// Operations per second.
    pub(super) per_s: f64,
    /// Each operation's latency, milliseconds.
    pub(super) lat: Vec<f64>,
    /// CPU time of the whole process per operation, microseconds.
    pub(super) cpu_us_each: f64,
}

/// Runs `op` from `tasks` tasks for `phase`.
pub(super) async fn drive<F, Fut>(
    tasks: usize,
    phase: Duration,
    progress: &Arc<Progress>,
    op: F,
) -> anyhow::Result<Driven>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let cpu = cpu_time();
    let start = Instant::now();
    let until = start + phase;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (op, progress) = (op.clone(), progress.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t0 = Instant::now();
                op(t).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                progress.count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = all.len() as u64;
    Ok(Driven { n, per_s: n as f64 / elapsed, lat: all, cpu_us_each: cpu_us_per(cpu, n) })
}

/// User + system CPU time of this process so far.
pub(super) fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1_000);
        tv(u.user_time()) + tv(u.system_time())
    })
}

pub(super) fn cpu_us_per(cpu_before: Duration, n: u64) -> f64 {
    (cpu_time() - cpu_before).as_secs_f64() * 1e6 / n.max(1) as f64
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
