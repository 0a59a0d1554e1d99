//! The durable consumers an org binds.

use std::collections::BTreeMap;

use super::config::RuntimeConfig;
use super::seam::{Handler, INBOX};
use crate::chart::OrgChart;
use crate::name::Name;
use crate::subject::{SubjectPattern, Subjects};
use crate::transport::{ConsumerConfig, Transport, TransportError};

/// The durable consumers the runtime of an org binds: for every role (and
/// the principal) one per consumer key its patterns' handlers use — its
/// inbox (`in-…`), and any a pattern adds — and the principal's alerts and
/// dead letters.
///
/// `Org::start` creates the ones it needs unless
/// [`RuntimeConfig::provision`] is off; then an admin identity creates them
/// all up front with [`provision`](OrgConsumers::provision), and a backend
/// that enforces least privilege (NATS) grants each role its own consumers
/// by name from the same list.
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
/// // The consumers of the default patterns (hierarchy and peers).
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
    /// The consumers of every role and of the principal, by role (the inbox
    /// first).
    pub roles: BTreeMap<Name, Vec<ConsumerConfig>>,
    /// The principal's consumer of `<org>.alerts`.
    pub alerts: ConsumerConfig,
    /// The principal's consumer of `<org>.deadletter`.
    pub dead_letters: ConsumerConfig,
    org: Name,
}

impl OrgConsumers {
    /// The consumers the runtime binds for `chart` under `config` when
    /// `handlers` are registered (names, filters, ack wait, pending limits).
    pub fn with_handlers(
        chart: &OrgChart,
        config: &RuntimeConfig,
        handlers: &[std::sync::Arc<dyn Handler>],
    ) -> Self {
        let subjects = Subjects::new(chart.org().clone());
        let roles = chart
            .roles()
            .map(|r| r.name())
            .chain(std::iter::once(chart.principal()))
            .map(|role| {
                (
                    role.clone(),
                    role_consumers(chart, &subjects, config, handlers, role),
                )
            })
            .collect();
        Self {
            roles,
            alerts: principal_consumer(chart, config, "alerts", subjects.alerts().into()),
            dead_letters: principal_consumer(chart, config, "dead", subjects.deadletter().into()),
            org: chart.org().clone(),
        }
    }

    /// The inbox consumer of `role` (or of the principal).
    pub fn inbox(&self, role: &str) -> Option<&ConsumerConfig> {
        let name = Name::new(role).ok()?;
        let inbox = consumer_name(INBOX, &self.org, &name);
        self.roles.get(role)?.iter().find(|c| c.name == inbox)
    }

    /// Every consumer of `role` (or of the principal).
    pub fn of_role(&self, role: &str) -> &[ConsumerConfig] {
        self.roles.get(role).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every consumer: the roles', by role, then alerts and dead letters.
    pub fn all(&self) -> impl Iterator<Item = &ConsumerConfig> + '_ {
        self.roles
            .values()
            .flatten()
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

/// `role`'s consumers: one per key its handlers use, in registration order,
/// filtered by their subjects.
pub(crate) fn role_consumers(
    chart: &OrgChart,
    subjects: &Subjects,
    config: &RuntimeConfig,
    handlers: &[std::sync::Arc<dyn Handler>],
    role: &Name,
) -> Vec<ConsumerConfig> {
    let mut out: Vec<ConsumerConfig> = Vec::new();
    for h in handlers {
        let patterns = h.subjects(subjects, chart, role);
        if patterns.is_empty() {
            continue;
        }
        let config =
            consumer_config(chart, config, h.consumer(), role, &patterns).with_deliver(h.deliver());
        match out.iter_mut().find(|c| c.name == config.name) {
            Some(c) => c.filters.extend(patterns),
            None => out.push(config),
        }
    }
    out
}

/// The consumer of `role` for key `key` with these filters.
pub(crate) fn consumer_config(
    chart: &OrgChart,
    config: &RuntimeConfig,
    key: &str,
    role: &Name,
    patterns: &[SubjectPattern],
) -> ConsumerConfig {
    let mut filters = patterns.iter().cloned();
    let first = filters
        .next()
        .unwrap_or_else(|| Subjects::new(chart.org().clone()).inbox_any(role));
    let mut c = ConsumerConfig::new(consumer_name(key, chart.org(), role), first)
        .with_ack_wait(config.ack_wait)
        .with_max_ack_pending(config.max_ack_pending);
    for f in filters {
        c = c.with_filter(f);
    }
    c
}

pub(crate) fn principal_consumer(
    chart: &OrgChart,
    config: &RuntimeConfig,
    key: &str,
    filter: SubjectPattern,
) -> ConsumerConfig {
    ConsumerConfig::new(consumer_name(key, chart.org(), chart.principal()), filter)
        .with_ack_wait(config.ack_wait)
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
    let hex = crate::hex::hex(&h.finalize(), 8);
    let head: String = name.chars().take(40).collect();
    // Prefixes are short fixed words and the rest is name characters, so
    // this is a valid name; fall back to the bare hash if it ever is not.
    Name::new(format!("{prefix}-{head}-{hex}"))
        .or_else(|_| Name::new(format!("c-{hex}")))
        .unwrap_or_else(|_| name.clone())
}
