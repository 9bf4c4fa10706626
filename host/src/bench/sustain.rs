//! `sagahost bench --sustain SECS --rate RATE`: an open-loop run of three-step no-op sagas
//! over HTTP at a fixed rate (`1500`, or `50%` of a peak measured first), reporting every 10
//! seconds: sagas started and finished, trigger → terminal latency percentiles of the sagas
//! finished in the window, the slowest store commit, the process's resident memory and the
//! data directory's size. For finding stalls that only show over minutes (issue: steady
//! latency under hours of load).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::measure::percentile;
use super::{TRIGGER_AND_WAIT, client, start_bench_host};
use crate::retention::duration;

/// Length of one reported window.
const WINDOW: Duration = Duration::from_secs(10);

/// How fast to start sagas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Sagas per second.
    PerSecond(f64),
    /// A share (0–1] of the peak measured first.
    OfPeak(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate: sagas per second (1500) or a share of the peak (50%)");
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Self::OfPeak(p / 100.0)),
                _ => Err(bad()),
            },
            None => match s.trim().parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Ok(Self::PerSecond(r)),
                _ => Err(bad()),
            },
        }
    }
}

/// One 10-second window.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// Seconds since the start, at the window's end.
    pub at_s: u64,
    /// Sagas started in it.
    pub started: u64,
    /// Sagas that finished in it.
    pub finished: u64,
    /// Their latency, ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest store commit in the window, ms.
    pub slowest_commit_ms: f64,
    /// The slowest apply of a group's batch in the window (sled), ms.
    pub slowest_apply_ms: f64,
    /// The slowest flush after a group's batch in the window (sled), ms.
    pub slowest_flush_ms: f64,
    /// Resident memory at its end, MiB.
    pub rss_mib: f64,
    /// The data directory's size at its end, MiB.
    pub data_mib: f64,
    /// Executions retention has removed since the host started.
    pub removed: u64,
}

/// What `bench --sustain` measured.
#[derive(Clone, Debug, Serialize)]
pub struct SustainReport {
    /// Cores the machine offers.
    pub cores: usize,
    /// The rate sagas were started at, per second.
    pub rate: f64,
    /// The peak it was derived from, when it was.
    pub peak: Option<f64>,
    /// Every window, in order.
    pub windows: Vec<Window>,
}

/// Runs for `secs` at `rate`, with the host's `--retain` and `--sled-cache-mib` set when given;
/// each window is printed as it ends unless `quiet`.
pub async fn run(
    secs: u64,
    rate: Rate,
    retain: Option<Duration>,
    sled_cache_mib: Option<u64>,
    quiet: bool,
) -> anyhow::Result<SustainReport> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::server::HostConfig::new(dir.path());
    if retain.is_some() {
        config.retention.retain = retain;
    }
    if let Some(mib) = sled_cache_mib {
        config.sled_cache_bytes = mib << 20;
    }
    let host = start_bench_host(config).await?;
    let (rate, peak) = match rate {
        Rate::PerSecond(r) => (r, None),
        Rate::OfPeak(share) => {
            let peak = super::closed_loop_peak(&host, Duration::from_secs(5)).await?;
            (peak * share, Some(peak))
        }
    };
    if !quiet {
        let of =
            peak.map_or_else(String::new, |p| format!(" ({:.0}% of a measured peak of {p:.0}/s)", rate / p * 100.0));
        let kept = retain.map_or_else(String::new, |r| format!(", ended ones kept {}", duration::show(r)));
        let cache = sled_cache_mib.map_or_else(String::new, |m| format!(", sled cache {m} MiB"));
        println!(
            "sagahost bench --sustain {secs} — three-step no-op sagas over HTTP at {rate:.0}/s{of}{kept}{cache}, windows of 10 s\n"
        );
        println!("{}", header());
    }
    let pool = Arc::new(client::Pool::new(host.addr(), TRIGGER_AND_WAIT, 64).await?);
    let finished: Arc<Mutex<Vec<f64>>> = Arc::default();
    let failures: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut windows = Vec::new();
    let mut started = 0u64;
    let mut window_end = start + WINDOW;
    let m = crate::metrics::metrics();
    for max in [&m.store_commit_max_us, &m.store_apply_max_us, &m.store_flush_max_us] {
        max.store(0, Ordering::Relaxed);
    }
    let mut runs = tokio::task::JoinSet::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::select! {
            _ = ticks.tick() => {
                started += 1;
                let (pool, finished, failures) = (pool.clone(), finished.clone(), failures.clone());
                runs.spawn(async move {
                    let t0 = Instant::now();
                    match pool.post(b"{}").await {
                        Ok((status, _)) if status == 200 => {
                            finished.lock().expect("latencies").push(t0.elapsed().as_secs_f64() * 1e3)
                        }
                        other => {
                            let why = match other {
                                Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body)),
                                Err(e) => format!("{e:#}"),
                            };
                            *failures.lock().expect("failures").entry(why).or_default() += 1;
                        }
                    }
                });
            }
            _ = tokio::time::sleep_until(window_end.into()) => {
                let w = window(start, std::mem::take(&mut started), &finished, dir.path());
                if !quiet {
                    println!("{}", row(&w));
                }
                windows.push(w);
                window_end += WINDOW;
            }
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
        }
    }
    // The last window: what started before the end, and finished since the last report.
    while runs.join_next().await.is_some() {}
    let last = window(start, started, &finished, dir.path());
    if last.started + last.finished > 0 {
        if !quiet {
            println!("{}", row(&last));
        }
        windows.push(last);
    }
    host.stop().await;
    let failed = std::mem::take(&mut *failures.lock().expect("failures"));
    if !failed.is_empty() {
        let total: u64 = failed.values().sum();
        let why: Vec<String> = failed.iter().map(|(why, n)| format!("{n} × {why}")).collect();
        bail!("{total} sagas did not complete: {}", why.join("; "));
    }
    Ok(SustainReport { cores: std::thread::available_parallelism().map_or(1, |n| n.get()), rate, peak, windows })
}

fn window(start: Instant, started: u64, finished: &Mutex<Vec<f64>>, dir: &Path) -> Window {
    let mut lat = std::mem::take(&mut *finished.lock().expect("latencies"));
    lat.sort_by(f64::total_cmp);
    let m = crate::metrics::metrics();
    let slowest = m.store_commit_max_us.swap(0, Ordering::Relaxed);
    let slowest_apply = m.store_apply_max_us.swap(0, Ordering::Relaxed);
    let slowest_flush = m.store_flush_max_us.swap(0, Ordering::Relaxed);
    let removed = m.retention_removed.get();
    Window {
        at_s: start.elapsed().as_secs_f64().round() as u64,
        started,
        finished: lat.len() as u64,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        slowest_commit_ms: slowest as f64 / 1e3,
        slowest_apply_ms: slowest_apply as f64 / 1e3,
        slowest_flush_ms: slowest_flush as f64 / 1e3,
        rss_mib: rss_bytes() as f64 / (1 << 20) as f64,
        data_mib: dir_bytes(dir) as f64 / (1 << 20) as f64,
        removed,
    }
}

/// Resident memory of this process (`/proc/self/statm`; 0 elsewhere).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn header() -> String {
    format!(
        "  {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "at s",
        "started",
        "finished",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "slowest commit",
        "apply ms",
        "flush ms",
        "rss MiB",
        "data MiB",
        "removed"
    )
}

fn row(w: &Window) -> String {
    format!(
        "  {:>6} {:>9} {:>9} {:>9.2} {:>9.2} {:>10.2} {:>12.2} ms {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>9}",
        w.at_s,
        w.started,
        w.finished,
        w.p50_ms,
        w.p99_ms,
        w.p999_ms,
        w.slowest_commit_ms,
        w.slowest_apply_ms,
        w.slowest_flush_ms,
        w.rss_mib,
        w.data_mib,
        w.removed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_or_a_share_of_the_peak() {
        assert_eq!("1500".parse::<Rate>(), Ok(Rate::PerSecond(1500.0)));
        assert_eq!("50%".parse::<Rate>(), Ok(Rate::OfPeak(0.5)));
        for bad in ["0", "-3", "0%", "101%", "fast", "NaN", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
