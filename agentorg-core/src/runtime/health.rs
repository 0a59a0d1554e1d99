//! The health of hosted roles: their lifecycle state and counters.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

use super::kernel::Kernel;
use super::registry;
use crate::name::Name;
use crate::transport::ConsumerLag;

/// A hosted role's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AgentState {
    /// Binding its consumers.
    Starting,
    /// Taking deliveries.
    Ready,
    /// No longer taking deliveries; finishing those in flight.
    Draining,
    /// Stopped.
    Stopped,
}

/// One hosted role's readiness and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentHealth {
    /// The role.
    pub role: Name,
    /// Its state.
    pub state: AgentState,
    /// Deliveries being handled now.
    pub in_flight: usize,
    /// Deliveries handled to completion (acknowledged).
    pub completed: u64,
    /// Handler failures (each attempt that failed).
    pub failures: u64,
    /// Messages dead-lettered by this role.
    pub dead_lettered: u64,
    /// When it last finished a delivery.
    pub last_active: Option<DateTime<Utc>>,
    /// How far each of its durable consumers is behind, as last read: by
    /// the maintenance sweep (every
    /// [`sweep_interval`](super::RuntimeConfig::sweep_interval)) or by
    /// [`Org::health_now`](super::Org::health_now). Empty before the first
    /// reading.
    pub backlog: Vec<ConsumerBacklog>,
}

impl AgentHealth {
    /// The messages not processed yet on the consumers that carry the
    /// handler `handler`'s deliveries (a pattern's name, e.g. `"events"`
    /// for the role's event subscription), as last read; `None` if none
    /// was read.
    pub fn lag(&self, handler: &str) -> Option<u64> {
        self.backlog
            .iter()
            .filter(|b| b.handlers.contains(&handler))
            .map(|b| b.lag.total())
            .reduce(u64::saturating_add)
    }
}

/// One durable consumer of a hosted role, and how far it is behind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerBacklog {
    /// The consumer's durable name.
    pub consumer: Name,
    /// The handlers whose deliveries it carries (patterns' names, e.g.
    /// `["hierarchy", "peer"]`, or `["events"]` for the event
    /// subscription).
    pub handlers: Vec<&'static str>,
    /// Its lag when it was read.
    pub lag: ConsumerLag,
    /// When that was.
    pub read_at: DateTime<Utc>,
}

/// A hosted role's live counters (and its registry counters not flushed
/// yet). Atomics: every delivery task of the role updates them.
#[derive(Debug, Default)]
pub(crate) struct RoleStats {
    pub(crate) state: AtomicU8,
    /// Its consumers, and how many of them are bound now: the role is
    /// ready when all are.
    pub(crate) consumers: AtomicUsize,
    pub(crate) bound: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// Milliseconds since the epoch, 0 for never.
    pub(crate) last_active_ms: AtomicU64,
    /// Its consumers' lag, as last read.
    pub(crate) backlog: std::sync::Mutex<Vec<ConsumerBacklog>>,
    /// Registry counters not flushed yet.
    pub(crate) pending: std::sync::Mutex<registry::Delta>,
    pub(crate) dirty: std::sync::atomic::AtomicBool,
}

impl RoleStats {
    pub(crate) fn set_state(&self, s: AgentState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// One of the role's consumers was bound (`true`) or lost (`false`): the
    /// role is ready while all are bound.
    pub(crate) fn consumer_bound(&self, bound: bool) {
        let now = if bound {
            self.bound.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.bound.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
        };
        let state = if now >= self.consumers.load(Ordering::SeqCst) {
            AgentState::Ready
        } else {
            AgentState::Starting
        };
        // Only while running: draining and stopped stay.
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s == AgentState::Starting as u8 || s == AgentState::Ready as u8)
                    .then_some(state as u8)
            });
    }

    pub(crate) fn touch(&self, now: DateTime<Utc>) {
        let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, role: &Name) -> AgentHealth {
        let state = match self.state.load(Ordering::Relaxed) {
            x if x == AgentState::Ready as u8 => AgentState::Ready,
            x if x == AgentState::Draining as u8 => AgentState::Draining,
            x if x == AgentState::Stopped as u8 => AgentState::Stopped,
            _ => AgentState::Starting,
        };
        let ms = self.last_active_ms.load(Ordering::Relaxed);
        AgentHealth {
            role: role.clone(),
            state,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            last_active: (ms > 0)
                .then(|| DateTime::from_timestamp_millis(ms as i64))
                .flatten(),
            backlog: self.backlog.lock().map(|b| b.clone()).unwrap_or_default(),
        }
    }
}

/// How long one reading of a consumer's lag may take.
const LAG_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the lag of every consumer of the hosted `roles` from the
/// transport (each role's consumers at once, each reading bounded by
/// [`LAG_READ_TIMEOUT`]), into their health. A consumer the transport cannot
/// tell about now keeps no entry until the next reading.
pub(crate) async fn read_backlog(kernel: &Kernel, roles: &[(Name, std::sync::Arc<RoleStats>)]) {
    for (role, stats) in roles {
        let consumers = kernel.role_consumer_handlers(role);
        let lags = futures::future::join_all(consumers.iter().map(|(consumer, _)| {
            tokio::time::timeout(LAG_READ_TIMEOUT, kernel.transport.consumer_lag(consumer))
        }))
        .await;
        let mut backlog = Vec::new();
        for ((consumer, handlers), lag) in consumers.into_iter().zip(lags) {
            match lag {
                Ok(Ok(lag)) => backlog.push(ConsumerBacklog {
                    consumer,
                    handlers,
                    lag,
                    read_at: kernel.now(),
                }),
                Ok(Err(e)) => {
                    tracing::debug!(role = %role, consumer = %consumer, error = %e, "reading a consumer's lag failed");
                }
                Err(_) => {
                    tracing::debug!(role = %role, consumer = %consumer, "reading a consumer's lag timed out");
                }
            }
        }
        if let Ok(mut b) = stats.backlog.lock() {
            *b = backlog;
        }
    }
}
