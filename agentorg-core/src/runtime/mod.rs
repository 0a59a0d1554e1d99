//! The runtime: hosts agents, and keeps the org's delivery semantics.
//!
//! An [`Org`] hosts any subset of the chart's roles in this process; the
//! others are reached through the transport, possibly in other processes.
//! Each hosted role is a durable consumer of its inbox with a per-agent
//! concurrency limit. For every delivery the runtime:
//!
//! 1. refuses what must not be processed — undecodable input, an envelope
//!    whose `from` differs from its subject's sender, a task the chart does
//!    not allow — by dead-lettering it with its reason;
//! 2. **claims** the message in the StateStore by a conditional write (owner,
//!    attempt, lease): a live claim held elsewhere means *nak with a delay*;
//!    a completion record means *acknowledge without running*. Attempts are
//!    counted in the claim, never taken from the broker's delivery count.
//!    Settled claims are kept for a retention (7 days by default) so that a
//!    replay is recognised, then swept;
//! 3. runs the agent while extending the lease (in the store and with the
//!    transport);
//! 4. commits the outcome together with the completion record in one atomic
//!    commit — task status, subtasks, the agent's staged writes, the breaker,
//!    and the messages to send (an outbox) — then publishes the messages and
//!    acknowledges. State changes exactly once; messages are at-least-once
//!    and deduplicated by id;
//! 5. on a transient failure, releases the claim and naks with backoff; when
//!    the attempts are spent (3 by default) it dead-letters: a *new* envelope
//!    on `<org>.deadletter`, one alert on `<org>.alerts`, and the original is
//!    terminated. A permanent failure fails the task at once.
//!
//! A per-role circuit breaker lives in the store: after 3 consecutive failed
//! or dead-lettered tasks (across all replicas) it opens, escalates to the
//! role's manager, and delegations to the role are refused or rerouted to the
//! alternate the chart declares; after a cool-down one probe task is let
//! through.
//!
//! A delegation writes the task document and an outbox entry first, then
//! publishes; a sweep at start and periodically republishes what a crash left
//! in the outbox.
//!
//! Failures of the org's own infrastructure (the store or transport briefly
//! unreachable, a commit that keeps conflicting, a document of a newer
//! version) release the claim *without* spending an attempt and put the
//! delivery back: an outage never dead-letters work. A handler whose staged
//! writes conflict with another's runs again on the same attempt, since its
//! outcome was computed from stale state.
//!
//! # Known limits (this version)
//!
//! * A dead-lettered subtask keeps its parent waiting until the dead letter
//!   is [requeued](Principal::requeue) or [discarded](Principal::discard)
//!   (the principal is alerted once per dead letter).
//! * Only a process hosting a role republishes that role's outbox entries
//!   (and the principal's only the provisioning process): a role scaled to
//!   zero holds its unpublished messages until it runs again.
//! * Concurrency 1 keeps one sender's messages in order only until one is
//!   retried; retries and deliveries put back while busy come later.
//! * The principal's streams may hand over a message twice (after a crash,
//!   or an outbox republish outside the broker's dedupe window); envelope
//!   ids tell duplicates apart.
//! * Settled claims are kept for `claim_retention` and then swept, up to
//!   10,000 per sweep interval and process; a replay of a message older
//!   than the retention would run again.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::runtime::{Org, TaskStatus};
//! use serde_json::json;
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("ceo").reports_to("founder"))
//!     .build()?;
//! let org = Org::builder(chart)
//!     .agent("ceo", agent_fn(|task| async move { Ok(Outcome::Complete(json!({"done": task.title}))) }))
//!     .start()
//!     .await?;
//! let founder = org.principal();
//! let task = founder.delegate("ceo", TaskSpec::new("Ship it")).await?;
//! let record = founder.wait_for(&task.task_id, Duration::from_secs(5)).await?;
//! assert_eq!(record.status, TaskStatus::Completed);
//! org.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::chart::OrgChart;
use crate::clock::{Clock, MonotonicClock};
use crate::codec::Codec;
use crate::name::Name;
use crate::store::{MemoryStore, StateStore, StoreError};
use crate::subject::Subjects;
use crate::tools::{ToolHost, ToolRouter};
use crate::transport::{ConsumerConfig, MemoryTransport, Transport, TransportError};

mod breaker;
pub(crate) mod context;
mod docs;
mod ops;
mod outbox;
mod principal;
mod registry;
mod sla;
mod worker;

pub use docs::{
    AgentRecord, BreakerRecord, BreakerState, DeadLetterRecord, DeadLetterStatus, ProcessRecord,
    TaskRecord, TaskStatus,
};
pub use ops::{OperationError, RoleLiveness};
pub use principal::{InboxError, Principal, PrincipalStream, TaskHandle, TaskTree, WaitError};

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
    /// Consecutive failed tasks that open a role's breaker (default 3).
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
    /// ([`OrgConsumers::provision`]) and roles may not.
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

    fn validate(&self) -> Result<(), OrgError> {
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

/// How one hosted agent runs.
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

/// Builds an [`Org`]: chart, backends, agents, configuration.
pub struct OrgBuilder {
    chart: OrgChart,
    transport: Option<Arc<dyn Transport>>,
    store: Option<Arc<dyn StateStore>>,
    tools: Option<Arc<dyn ToolHost>>,
    clock: Option<Arc<dyn Clock>>,
    config: RuntimeConfig,
    agents: Vec<(String, Arc<dyn Agent>, AgentOptions)>,
}

impl fmt::Debug for OrgBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgBuilder")
            .field("org", self.chart.org())
            .field(
                "agents",
                &self.agents.iter().map(|a| &a.0).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrgBuilder {
    /// Sets the transport (default: a new [`MemoryTransport`]).
    pub fn transport(mut self, t: Arc<dyn Transport>) -> Self {
        self.transport = Some(t);
        self
    }

    /// Sets the state store (default: a new [`MemoryStore`]).
    pub fn store(mut self, s: Arc<dyn StateStore>) -> Self {
        self.store = Some(s);
        self
    }

    /// Sets the org's tools; each agent sees only its role's grants (default:
    /// none).
    pub fn tools(mut self, t: Arc<dyn ToolHost>) -> Self {
        self.tools = Some(t);
        self
    }

    /// Sets the clock (default: a [`MonotonicClock`] anchored at start).
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = Some(c);
        self
    }

    /// Sets the runtime configuration.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Hosts `agent` for `role` in this process, with default options.
    pub fn agent(self, role: impl Into<String>, agent: impl Agent) -> Self {
        self.agent_with(role, Arc::new(agent), AgentOptions::default())
    }

    /// Hosts `agent` for `role` in this process.
    pub fn agent_with(
        mut self,
        role: impl Into<String>,
        agent: Arc<dyn Agent>,
        options: AgentOptions,
    ) -> Self {
        self.agents.push((role.into(), agent, options));
        self
    }

    /// Validates, provisions the consumers (unless configured not to),
    /// republishes what a previous run left in the outboxes, and starts the
    /// hosted agents.
    pub async fn start(self) -> Result<Org, OrgError> {
        self.config.validate()?;
        let mut hosted: BTreeMap<Name, (Arc<dyn Agent>, AgentOptions)> = BTreeMap::new();
        for (role, agent, options) in self.agents {
            if self.chart.is_principal(&role) {
                return Err(OrgError::PrincipalHosted { role });
            }
            let Some(r) = self.chart.role(&role) else {
                return Err(OrgError::UnknownRole { role });
            };
            if hosted.insert(r.name().clone(), (agent, options)).is_some() {
                return Err(OrgError::DuplicateAgent { role });
            }
        }
        let org = self.chart.org().clone();
        // This process republishes the outbox entries of its roles, and
        // watches the SLAs they delegated; the principal's too when it is the
        // admin (provisioning) process: under per-role broker permissions
        // only the admin may send as the principal.
        let mut senders: std::collections::HashSet<Name> = hosted.keys().cloned().collect();
        if self.config.provision {
            senders.insert(self.chart.principal().clone());
        }
        let shared = Arc::new(Shared {
            sla: sla::Watcher::new(senders.clone()),
            subjects: Subjects::new(org.clone()),
            layout: docs::Layout::new(&org)?,
            transport: self
                .transport
                .unwrap_or_else(|| Arc::new(MemoryTransport::new())),
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            tools: self.tools.unwrap_or_else(|| Arc::new(ToolRouter::new())),
            clock: self
                .clock
                .unwrap_or_else(|| Arc::new(MonotonicClock::new())),
            config: self.config,
            codec: Codec::default(),
            instance: format!("p{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
            chart: self.chart,
        });
        if shared.config.provision {
            for role in hosted.keys() {
                shared
                    .transport
                    .ensure_consumer(&shared.inbox_consumer(role))
                    .await?;
            }
            shared.provision_principal().await?;
        }
        let kill = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut roles = Vec::with_capacity(hosted.len());
        let shutdown = CancellationToken::new();
        outbox::sweep(&shared, &senders, None, &shutdown).await;
        for (role, (agent, options)) in hosted {
            let stats = Arc::new(RoleStats::default());
            roles.push((role.clone(), Arc::clone(&stats)));
            let w = worker::Worker::new(Arc::clone(&shared), role, agent, options, stats);
            tracker.spawn(w.run(shutdown.clone(), kill.clone(), tracker.clone()));
        }
        let started_at = shared.now();
        let hosted_roles: Vec<Name> = roles.iter().map(|(r, _)| r.clone()).collect();
        if let Err(e) = registry::heartbeat(&shared, &hosted_roles, started_at).await {
            tracing::warn!(error = %e, "writing this process's heartbeat failed; retried on the next sweep");
        }
        tracker.spawn(sla::run(Arc::clone(&shared), shutdown.clone()));
        tracker.spawn(maintenance(
            Arc::clone(&shared),
            senders,
            roles.clone(),
            started_at,
            shutdown.clone(),
        ));
        Ok(Org {
            shared,
            roles,
            shutdown,
            kill,
            tracker,
        })
    }
}

/// What every part of a running org shares.
pub(crate) struct Shared {
    pub(crate) chart: OrgChart,
    pub(crate) subjects: Subjects,
    pub(crate) layout: docs::Layout,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: RuntimeConfig,
    pub(crate) codec: Codec,
    /// This process's claim owner id.
    pub(crate) instance: String,
    /// The SLA timers of the delegators this process watches.
    pub(crate) sla: sla::Watcher,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("org", self.chart.org())
            .field("transport", &self.transport.to_string())
            .field("store", &self.store.to_string())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn org(&self) -> &Name {
        self.chart.org()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The durable consumer of a role's inbox (see [`OrgConsumers`]).
    pub(crate) fn inbox_consumer(&self, role: &Name) -> ConsumerConfig {
        inbox_consumer(self.org(), &self.subjects, &self.config, role)
    }

    pub(crate) fn alerts_consumer(&self) -> ConsumerConfig {
        alerts_consumer(&self.chart, &self.subjects, &self.config)
    }

    pub(crate) fn deadletter_consumer(&self) -> ConsumerConfig {
        deadletter_consumer(&self.chart, &self.subjects, &self.config)
    }

    async fn provision_principal(&self) -> Result<(), TransportError> {
        let principal = self.chart.principal().clone();
        self.transport
            .ensure_consumer(&self.inbox_consumer(&principal))
            .await?;
        self.transport
            .ensure_consumer(&self.alerts_consumer())
            .await?;
        self.transport
            .ensure_consumer(&self.deadletter_consumer())
            .await
    }
}

fn inbox_consumer(
    org: &Name,
    subjects: &Subjects,
    config: &RuntimeConfig,
    role: &Name,
) -> ConsumerConfig {
    ConsumerConfig::new(consumer_name("in", org, role), subjects.inbox_any(role))
        .with_filter(subjects.peer_any(role))
        .with_ack_wait(config.ack_wait)
        .with_max_ack_pending(config.max_ack_pending)
}

fn alerts_consumer(
    chart: &OrgChart,
    subjects: &Subjects,
    config: &RuntimeConfig,
) -> ConsumerConfig {
    ConsumerConfig::new(
        consumer_name("alerts", chart.org(), chart.principal()),
        crate::subject::SubjectPattern::from(subjects.alerts()),
    )
    .with_ack_wait(config.ack_wait)
}

fn deadletter_consumer(
    chart: &OrgChart,
    subjects: &Subjects,
    config: &RuntimeConfig,
) -> ConsumerConfig {
    ConsumerConfig::new(
        consumer_name("dead", chart.org(), chart.principal()),
        crate::subject::SubjectPattern::from(subjects.deadletter()),
    )
    .with_ack_wait(config.ack_wait)
}

/// The durable consumers the runtime of an org binds: one inbox per role and
/// one for the principal, and the principal's alerts and dead letters.
///
/// `Org::start` creates the ones it needs unless
/// [`RuntimeConfig::provision`] is off; then an admin identity creates them
/// all up front with [`provision`](OrgConsumers::provision), and a backend
/// that enforces least privilege (NATS) grants each role its own consumer by
/// name from the same list.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agentorg_core::chart::{OrgChart, RoleSpec};
/// use agentorg_core::runtime::{OrgConsumers, RuntimeConfig};
/// use agentorg_core::transport::MemoryTransport;
///
/// let chart = OrgChart::builder("demo")
///     .principal("founder")
///     .role(RoleSpec::new("ceo").reports_to("founder"))
///     .build()?;
/// let consumers = OrgConsumers::new(&chart, &RuntimeConfig::default());
/// let ceo = consumers.inbox("ceo").unwrap();
/// assert_eq!(ceo.filters[0].as_str(), "demo.agent.ceo.inbox.*");
/// assert_eq!(consumers.all().count(), 4); // ceo's and founder's inboxes, alerts, dead letters
/// consumers.provision(&MemoryTransport::new()).await?; // as an admin
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrgConsumers {
    /// The inbox consumer of every role and of the principal, by role.
    pub inboxes: BTreeMap<Name, ConsumerConfig>,
    /// The principal's consumer of `<org>.alerts`.
    pub alerts: ConsumerConfig,
    /// The principal's consumer of `<org>.deadletter`.
    pub dead_letters: ConsumerConfig,
}

impl OrgConsumers {
    /// The consumers the runtime binds for `chart` under `config` (names,
    /// filters, ack wait, pending limits).
    pub fn new(chart: &OrgChart, config: &RuntimeConfig) -> Self {
        let subjects = Subjects::new(chart.org().clone());
        let inboxes = chart
            .roles()
            .map(|r| r.name())
            .chain(std::iter::once(chart.principal()))
            .map(|role| {
                (
                    role.clone(),
                    inbox_consumer(chart.org(), &subjects, config, role),
                )
            })
            .collect();
        Self {
            inboxes,
            alerts: alerts_consumer(chart, &subjects, config),
            dead_letters: deadletter_consumer(chart, &subjects, config),
        }
    }

    /// The inbox consumer of `role` (or of the principal).
    pub fn inbox(&self, role: &str) -> Option<&ConsumerConfig> {
        self.inboxes.get(role)
    }

    /// Every consumer: the inboxes by role, then alerts and dead letters.
    pub fn all(&self) -> impl Iterator<Item = &ConsumerConfig> + '_ {
        self.inboxes
            .values()
            .chain([&self.alerts, &self.dead_letters])
    }

    /// Creates (or checks) every consumer on `transport`. Idempotent; an
    /// admin operation.
    pub async fn provision(&self, transport: &dyn Transport) -> Result<(), TransportError> {
        for c in self.all() {
            transport.ensure_consumer(c).await?;
        }
        Ok(())
    }
}

/// A durable consumer's name: `<prefix>-<name>-<hash of org and name>`, so
/// orgs sharing one transport never share a consumer, and the name stays
/// readable (long names are cut to 40 characters before the hash).
pub(crate) fn consumer_name(prefix: &str, org: &Name, name: &Name) -> Name {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(org.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let head: String = name.chars().take(40).collect();
    // Prefixes are short fixed words and the rest is name characters, so
    // this is a valid name; fall back to the bare hash if it ever is not.
    Name::new(format!("{prefix}-{head}-{hex}"))
        .or_else(|_| Name::new(format!("c-{hex}")))
        .unwrap_or_else(|_| name.clone())
}

/// Every `sweep_interval` until `shutdown`: republishes what `senders` left
/// in the outbox, deletes expired claims, writes the heartbeat, folds the
/// registry counters, and re-arms SLA timers from the store.
async fn maintenance(
    shared: Arc<Shared>,
    senders: std::collections::HashSet<Name>,
    roles: Vec<(Name, Arc<RoleStats>)>,
    started_at: DateTime<Utc>,
    shutdown: CancellationToken,
) {
    let hosted: Vec<Name> = roles.iter().map(|(r, _)| r.clone()).collect();
    let mut claims_page = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(shared.config.sweep_interval) => {}
        }
        outbox::sweep(
            &shared,
            &senders,
            Some(shared.config.outbox_grace),
            &shutdown,
        )
        .await;
        claims_page = outbox::expire_claims_some(&shared, claims_page, &shutdown).await;
        if let Err(e) = registry::heartbeat(&shared, &hosted, started_at).await {
            tracing::warn!(error = %e, "writing this process's heartbeat failed; retried on the next sweep");
        }
        flush_registry(&shared, &roles).await;
        shared.sla.rescan(&shared).await;
    }
    // Shutting down: the last counters, and this process leaves the
    // liveness view.
    flush_registry(&shared, &roles).await;
    if let Err(e) = registry::farewell(&shared).await {
        tracing::debug!(error = %e, "removing this process's heartbeat failed");
    }
}

async fn flush_registry(shared: &Shared, roles: &[(Name, Arc<RoleStats>)]) {
    for (role, stats) in roles {
        if let Err(e) = registry::flush(shared, role, stats).await {
            tracing::warn!(role = %role, error = %e, "updating the registry failed; retried on the next sweep");
        }
    }
}

/// A hosted agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AgentState {
    /// Binding its consumer.
    Starting,
    /// Taking deliveries.
    Ready,
    /// No longer taking deliveries; finishing those in flight.
    Draining,
    /// Stopped.
    Stopped,
}

/// One hosted agent's readiness and counters.
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
}

#[derive(Debug, Default)]
pub(crate) struct RoleStats {
    pub(crate) state: AtomicU8,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) completed: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// Milliseconds since the epoch, 0 for never.
    pub(crate) last_active_ms: AtomicU64,
    /// Registry counters not flushed yet.
    pub(crate) pending: std::sync::Mutex<registry::Delta>,
    pub(crate) dirty: std::sync::atomic::AtomicBool,
}

impl RoleStats {
    pub(crate) fn set_state(&self, s: AgentState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn touch(&self, now: DateTime<Utc>) {
        let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn snapshot(&self, role: &Name) -> AgentHealth {
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
        }
    }
}

/// A running org: the hosted agents of this process, and the principal's
/// handle. Cheap operations take `&self`; drop it only after
/// [`shutdown`](Org::shutdown) (dropping it without one stops nothing until
/// the tokio runtime ends).
pub struct Org {
    shared: Arc<Shared>,
    roles: Vec<(Name, Arc<RoleStats>)>,
    // Who owns what: `shutdown` stops intake (role loops stop pulling) and the
    // sweeper; `kill` cancels in-flight handlers too (a crash, for tests and
    // a drain that timed out). Every task the org starts is spawned on
    // `tracker`, so shutdown can wait for all of them.
    shutdown: CancellationToken,
    kill: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Org")
            .field("org", self.shared.org())
            .field(
                "hosted",
                &self.roles.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Org {
    /// Starts building an org of `chart`.
    pub fn builder(chart: OrgChart) -> OrgBuilder {
        OrgBuilder {
            chart,
            transport: None,
            store: None,
            tools: None,
            clock: None,
            config: RuntimeConfig::default(),
            agents: Vec::new(),
        }
    }

    /// The chart.
    pub fn chart(&self) -> &OrgChart {
        &self.shared.chart
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.shared.store
    }

    /// The subjects of this org.
    pub fn subjects(&self) -> &Subjects {
        &self.shared.subjects
    }

    /// The application's handle to act as the principal: delegate, read task
    /// trees, receive results, escalations and alerts.
    pub fn principal(&self) -> Principal {
        Principal::new(Arc::clone(&self.shared))
    }

    /// The hosted agents' states and counters.
    pub fn health(&self) -> Vec<AgentHealth> {
        self.roles.iter().map(|(r, s)| s.snapshot(r)).collect()
    }

    /// Whether every hosted agent is taking deliveries.
    pub fn is_ready(&self) -> bool {
        self.health().iter().all(|h| h.state == AgentState::Ready)
    }

    /// Graceful shutdown: stops taking deliveries, lets in-flight handlers
    /// finish (up to the drain timeout, after which they are cancelled and
    /// their messages come back after their lease), and waits for every task
    /// of the org. Idempotent: a second call waits for the first to finish.
    pub async fn shutdown(&self) {
        if !self.shutdown.is_cancelled() {
            self.shutdown.cancel();
            self.tracker.close();
            if tokio::time::timeout(self.shared.config.drain_timeout, self.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(org = %self.shared.org(), "drain timed out; cancelling in-flight handlers");
                self.kill.cancel();
            }
        }
        self.finish().await;
    }

    /// Stops everything at once, as a crash would: no acknowledgement, no
    /// claim released. Messages in flight come back when their lease ends.
    /// For tests of crash recovery.
    pub async fn abort(&self) {
        self.kill.cancel();
        self.shutdown.cancel();
        self.tracker.close();
        self.finish().await;
    }

    /// Waits for every task of the org (the tracker is closed, so this ends
    /// once they have; a second caller waits as long as the first).
    async fn finish(&self) {
        self.tracker.wait().await;
    }
}
