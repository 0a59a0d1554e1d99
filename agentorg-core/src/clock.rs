//! Clocks: where the runtime reads "now" for leases, deadlines and task times.
//!
//! Leases and breaker cool-downs are stored as wall-clock times so that every
//! process of an org can read them. The default [`MonotonicClock`] anchors the
//! wall clock once, at creation, and advances it with tokio's monotonic clock:
//! it never jumps when the system clock is stepped, and under tokio's paused
//! test clock it advances with virtual time, so lease expiry and backoff can
//! be tested without sleeping. Processes compare each other's times, so keep
//! hosts synchronised (NTP) as for any lease-based system; [`SystemClock`]
//! reads the system clock on every call instead.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock, read on every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time at creation plus tokio's monotonic time since (follows tokio's
/// paused clock in tests).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl MonotonicClock {
    /// Anchors a new clock at the current wall time.
    ///
    /// Must be called inside a tokio runtime when the runtime's clock is
    /// paused, so that later readings follow it.
    pub fn new() -> Self {
        Self {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        chrono::TimeDelta::from_std(elapsed)
            .ok()
            .and_then(|d| self.wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
