//! Time, injected: the domain never reads a clock; the shells ask this one, and wait on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// A source of wall-clock time in unix milliseconds, and a way to wait for a time of it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> u64;

    /// Resolves once `now_ms() >= at_ms` (at once if that is already so).
    ///
    /// Every wait of the orchestrator for a time of this clock (a backoff, a deadline, a parked
    /// execution) goes through here, so that a clock which does not follow real time still
    /// wakes it. The default sleeps on tokio's timer for the difference of readings: right
    /// for a clock that follows real time.
    fn sleep_until(&self, at_ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(self.now_ms()))))
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told: for tests and simulations.
///
/// A backoff of a minute or a deadline a day away passes in one [`advance`](Self::advance),
/// without sleeping: waits in [`Clock::sleep_until`] end as soon as the clock is moved past
/// their time, and not before, whatever tokio's timer says.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock reading `start_ms` until moved.
    pub fn new(start_ms: u64) -> Self {
        Self { now: watch::channel(start_ms).0 }
    }

    /// Moves the clock `ms` forward, waking every wait whose time has come.
    pub fn advance(&self, ms: u64) {
        self.now.send_modify(|now| *now = now.saturating_add(ms));
    }

    /// Sets the clock to `ms`. Moving it back wakes nothing, as with a wall clock set back.
    pub fn set(&self, ms: u64) {
        self.now.send_replace(ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: u64) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            if now.wait_for(|now| *now >= at_ms).await.is_err() {
                // The clock is gone, so its time never comes.
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_wakes_waits_when_moved_past_them() {
        use futures::FutureExt;
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert!(clock.sleep_until(1_000).now_or_never().is_some(), "a time already come waits not");
        let mut wait = clock.sleep_until(61_000);
        clock.advance(59_999);
        assert!((&mut wait).now_or_never().is_none(), "woke early");
        clock.advance(1);
        assert!(wait.now_or_never().is_some(), "not woken");
        assert_eq!(clock.now_ms(), 61_000);
        clock.set(5);
        assert_eq!(clock.now_ms(), 5);
    }
}
