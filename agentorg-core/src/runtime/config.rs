//! The runtime's configuration and the errors of building an org.

use std::time::Duration;

use crate::store::StoreError;
use crate::transport::TransportError;

/// How the runtime behaves: attempts, leases, backoff, breakers, sweeps.
///
/// Durations are real time on real backends; tests on the memory backends can
/// run them on tokio's paused clock.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Attempts before a message is dead-lettered (default 3).
    pub max_attempts: u32,
    /// How long a claim holds without being extended (default 30 s). The
    /// lease is extended every third of it while the handler runs.
    pub lease: Duration,
    /// The inbox consumers' ack wait (default 30 s).
    pub ack_wait: Duration,
    /// First retry delay after a transient failure (default 1 s), doubling
    /// up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    /// Longest retry delay (default 60 s).
    pub max_backoff: Duration,
    /// Whether retry delays get random jitter (default true).
    pub jitter: bool,
    /// How long a delivery waits when the message is busy elsewhere or the
    /// store is unavailable (default 1 s, or the rest of a live lease if
    /// shorter).
    pub retry_delay: Duration,
    /// How long an envelope of a newer format version is put back before it
    /// is tried again (default 30 s); it is dead-lettered when its attempts
    /// run out.
    pub future_version_delay: Duration,
    /// Consecutive failed tasks that open a role's breaker (default 3; the
    /// hierarchy's circuit breakers).
    pub breaker_threshold: u32,
    /// How long a breaker stays open before it lets a probe through
    /// (default 60 s).
    pub breaker_cooldown: Duration,
    /// How long a probe may take before another probe is allowed (default
    /// 10 min).
    pub probe_timeout: Duration,
    /// How often the outbox is swept for messages a crash left unpublished
    /// (default 30 s); entries younger than `outbox_grace` are left to the
    /// process that wrote them.
    pub sweep_interval: Duration,
    /// See `sweep_interval` (default 10 s).
    pub outbox_grace: Duration,
    /// How long a settled claim (done or dead-lettered) is kept, so that a
    /// replay of its message is recognised (default 7 days). Each sweep
    /// deletes up to a page of expired claims.
    pub claim_retention: Duration,
    /// How long graceful shutdown waits for in-flight handlers (default 30 s).
    pub drain_timeout: Duration,
    /// Unacknowledged deliveries per inbox consumer (default 64).
    pub max_ack_pending: usize,
    /// Whether `start` creates the consumers it needs (default true). Turn it
    /// off when an admin identity provisions them
    /// ([`OrgConsumers::provision`](super::OrgConsumers::provision)) and roles may not.
    pub provision: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            lease: Duration::from_secs(30),
            ack_wait: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: true,
            retry_delay: Duration::from_secs(1),
            future_version_delay: Duration::from_secs(30),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(30),
            outbox_grace: Duration::from_secs(10),
            claim_retention: Duration::from_secs(7 * 24 * 3600),
            drain_timeout: Duration::from_secs(30),
            max_ack_pending: 64,
            provision: true,
        }
    }
}

impl RuntimeConfig {
    /// Sets the attempts before dead-lettering.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the lease.
    pub fn with_lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// Sets the inbox consumers' ack wait.
    pub fn with_ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Sets the backoff bounds.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// Turns retry jitter on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the busy/unavailable retry delay.
    pub fn with_retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }

    /// Sets the delay for envelopes of a newer format version.
    pub fn with_future_version_delay(mut self, d: Duration) -> Self {
        self.future_version_delay = d;
        self
    }

    /// Sets the breaker threshold and cool-down.
    pub fn with_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Sets the probe timeout.
    pub fn with_probe_timeout(mut self, d: Duration) -> Self {
        self.probe_timeout = d;
        self
    }

    /// Sets the outbox sweep interval and grace.
    pub fn with_sweep(mut self, interval: Duration, grace: Duration) -> Self {
        self.sweep_interval = interval;
        self.outbox_grace = grace;
        self
    }

    /// Sets how long settled claims are kept.
    pub fn with_claim_retention(mut self, d: Duration) -> Self {
        self.claim_retention = d;
        self
    }

    /// Sets the drain timeout.
    pub fn with_drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Sets whether `start` provisions consumers.
    pub fn with_provision(mut self, provision: bool) -> Self {
        self.provision = provision;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), OrgError> {
        let bad = |m: &str| {
            Err(OrgError::InvalidConfig {
                message: m.to_owned(),
            })
        };
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1");
        }
        if self.lease < Duration::from_millis(30) || self.ack_wait.is_zero() {
            return bad("lease must be at least 30 ms and ack_wait positive");
        }
        if self.breaker_threshold == 0 {
            return bad("breaker_threshold must be at least 1");
        }
        if self.max_ack_pending == 0 || self.sweep_interval.is_zero() {
            return bad("max_ack_pending and sweep_interval must be positive");
        }
        Ok(())
    }
}

/// How one hosted role runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentOptions {
    /// Deliveries handled at once (default 1). With 1, messages of one
    /// sender are handled in the order sent, as long as none is retried.
    pub concurrency: usize,
    /// Give up on a handler call after this long, as a transient failure
    /// (default: no limit — a hung handler keeps its lease, and its role's
    /// slot, until its process stops).
    pub handler_timeout: Option<Duration>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            handler_timeout: None,
        }
    }
}

impl AgentOptions {
    /// Sets the concurrency (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the handler timeout.
    pub fn handler_timeout(mut self, limit: Duration) -> Self {
        self.handler_timeout = Some(limit);
        self
    }
}

/// Building or running an org failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrgError {
    /// An agent was registered for a role the chart does not have.
    #[error("role `{role}` is not in the chart")]
    UnknownRole {
        /// The role.
        role: String,
    },
    /// An agent was registered for the principal, who is a person.
    #[error("`{role}` is the principal: the application acts for it through `Org::principal`, it cannot host an agent")]
    PrincipalHosted {
        /// The principal.
        role: String,
    },
    /// Two agents were registered for one role.
    #[error("role `{role}` has two agents")]
    DuplicateAgent {
        /// The role.
        role: String,
    },
    /// The configuration is unusable.
    #[error("invalid runtime configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}
