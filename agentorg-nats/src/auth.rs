//! Least privilege on the broker, derived from the org chart.
//!
//! [`OrgAuth`] turns an [`OrgChart`] into a nats-server `authorization`
//! block — an admin user, and one user per role and for the principal — and
//! hands each process its [`RoleCredentials`]. The runtime already refuses
//! what the chart forbids; these permissions make the broker refuse it too,
//! so a compromised or buggy role process cannot read another role's inbox
//! or speak in another role's name.
//!
//! # What each identity may do
//!
//! The **admin** may do anything: it creates the org's streams
//! ([`NatsTransport::provision_streams`](crate::NatsTransport::provision_streams))
//! and every consumer ([`OrgConsumers::provision`]), and may inspect streams.
//!
//! A **role** `r` (and the principal, the same way) may, and may only:
//!
//! | what | subjects |
//! |---|---|
//! | publish to the inbox of each role the chart lets it address ([`OrgChart::may_address`]: reports, manager, shortcut targets and sources, alternates), *as itself* | `<org>.agent.<to>.inbox.<r>` |
//! | publish on the saga channel of each role it may reach in a saga ([`OrgChart::saga_contacts`]: the members of each saga it is a member of — the step roles and their managers), *as itself* | `<org>.agent.<to>.saga.<r>` |
//! | publish on the meeting channel of each role the chart's `meets` joins it with ([`OrgChart::meeting_contacts`]: a facilitator, itself, the roles it meets and its manager; a participant, the facilitators that meet it), *as itself*; and to its own inbox (the tasks it takes from a meeting's action items) | `<org>.agent.<to>.meeting.<r>`, `<org>.agent.<r>.inbox.<r>` |
//! | publish blackboard ready notices, as itself (projects are not in the chart; the receiver checks that the sender owns a blocker) | `<org>.agent.*.board.<r>` |
//! | publish on its declared peer channels, and send requests to those peers | `<org>.peer.<r>.<peer>`, `<org>.rpc.<peer>` |
//! | publish the events the chart lets it publish ([`OrgChart::may_publish`]: a role its `publishes`, the principal every declared event), any granted besides ([`OrgAuthBuilder::with_events`]), and the runtime's own events ([`ORG_EVENTS`](agentorg_core::events::ORG_EVENTS)) | `<org>.events.<name>`, `<org>.events.sla.breach`, `.breaker.open`, `.dead_letter` |
//! | dead-letter and alert | `<org>.deadletter`, `<org>.alerts` |
//! | send requests to the roles it may address; serve its own | `<org>.rpc.<to>` (publish), `<org>.rpc.<r>` (subscribe, and answer: `allow_responses`) |
//! | bind its own durable consumers (its inbox, its event subscription, …), pull and settle their messages | `$JS.API.CONSUMER.INFO.<stream>.<consumer>`, `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, `$JS.ACK.<stream>.<consumer>.>` |
//! | receive replies (publish acks, pulled messages, request replies) | subscribe `_INBOX.<org>.<r>.>`, its own reply prefix |
//!
//! Those three JetStream subjects and the reply prefix are the whole of what a
//! pull consumer needs, found by experiment against nats-server 2.15: binding
//! reads the consumer's info (again after each reconnect), pulling publishes
//! a request on `MSG.NEXT` with a reply subject in the prefix, and acks, naks,
//! terms and progress go to the message's `$JS.ACK…` reply subject. A durable
//! publish needs only the subject itself (its acknowledgement comes back on
//! the reply prefix). Everything else is refused by the server and surfaces
//! as [`TransportError::Forbidden`]: another role's consumer, creating or
//! deleting consumers, stream info, direct or stream message gets, a
//! subscription to another inbox, and publishing under another sender's name.
//!
//! A role process therefore runs with
//! [`RuntimeConfig::with_provision(false)`](agentorg_core::runtime::RuntimeConfig::with_provision)
//! and a transport built
//! [`with_credentials`](crate::NatsTransportBuilder::with_credentials) (which
//! turns stream provisioning off); the admin provisions first.
//!
//! ```
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_nats::auth::OrgAuth;
//!
//! let chart = OrgChart::builder("genbrain")
//!     .principal("founder")
//!     .role(RoleSpec::new("cto").reports_to("founder"))
//!     .role(RoleSpec::new("backend").reports_to("cto"))
//!     .role(RoleSpec::new("frontend").reports_to("cto"))
//!     .peer("backend", "frontend")
//!     .build()
//!     .unwrap();
//! let auth = OrgAuth::builder(&chart)
//!     .with_events("backend", ["deploy.>"])
//!     .build()
//!     .unwrap();
//! let backend = auth.permissions("backend").unwrap();
//! assert!(backend.publish.contains(&"genbrain.agent.cto.inbox.backend".to_owned()));
//! assert!(backend.publish.contains(&"genbrain.peer.backend.frontend".to_owned()));
//! assert!(backend.publish.contains(&"genbrain.events.deploy.>".to_owned()));
//! assert!(!backend.publish.iter().any(|s| s.contains("inbox.cto")));
//! let config = auth.server_config(); // for nats-server's configuration file
//! assert!(config.contains("authorization"));
//! let creds = auth.credentials("backend").unwrap(); // for the backend's process
//! assert_eq!(creds.inbox_prefix, "_INBOX.genbrain.backend");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use agentorg_core::chart::OrgChart;
use agentorg_core::runtime::{OrgConsumers, RuntimeConfig};
use agentorg_core::subject::Subjects;
use agentorg_core::transport::{ConsumerConfig, TransportError};
use agentorg_core::Name;

use crate::layout::{StreamKind, StreamLayout, StreamLimits};

/// Who a process is on the broker: user, password, and the prefix of its
/// reply subjects. Give it to
/// [`NatsTransportBuilder::with_credentials`](crate::NatsTransportBuilder::with_credentials).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleCredentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// The reply-subject prefix its permissions allow.
    pub inbox_prefix: String,
    role: Option<Name>,
}

impl RoleCredentials {
    /// The role these credentials are for; `None` for the admin.
    pub fn role(&self) -> Option<&Name> {
        self.role.as_ref()
    }

    /// Whether these are the admin's credentials.
    pub fn is_admin(&self) -> bool {
        self.role.is_none()
    }
}

impl fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("inbox_prefix", &self.inbox_prefix)
            .field("role", &self.role)
            .finish()
    }
}

/// The broker permissions of one identity, as subject patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (one reply each).
    pub allow_responses: bool,
}

/// Builds an [`OrgAuth`] from a chart.
#[derive(Debug, Clone)]
pub struct OrgAuthBuilder {
    chart: OrgChart,
    admin: Option<(String, String)>,
    passwords: BTreeMap<String, String>,
    events: BTreeMap<String, Vec<String>>,
}

/// The users and permissions of one org, generated from its chart. See the
/// [module docs](self).
#[derive(Clone)]
pub struct OrgAuth {
    org: Name,
    admin: RoleCredentials,
    roles: BTreeMap<Name, (RoleCredentials, Permissions)>,
}

impl fmt::Debug for OrgAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgAuth")
            .field("org", &self.org)
            .field("admin", &self.admin.user)
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn random_password() -> Result<String, TransportError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| TransportError::Other {
        backend: "nats",
        source: format!("no randomness for a password: {e}").into(),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl OrgAuth {
    /// Starts from `chart`: generated passwords, no events granted.
    pub fn builder(chart: &OrgChart) -> OrgAuthBuilder {
        OrgAuthBuilder {
            chart: chart.clone(),
            admin: None,
            passwords: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// The org.
    pub fn org(&self) -> &Name {
        &self.org
    }

    /// The admin's credentials (user `admin@<org>` unless set).
    pub fn admin(&self) -> &RoleCredentials {
        &self.admin
    }

    /// The credentials of a role or the principal (user `<role>@<org>`).
    pub fn credentials(&self, role: &str) -> Option<&RoleCredentials> {
        self.roles.get(role).map(|(c, _)| c)
    }

    /// The permissions of a role or the principal.
    pub fn permissions(&self, role: &str) -> Option<&Permissions> {
        self.roles.get(role).map(|(_, p)| p)
    }

    /// The `authorization { users = [...] }` block for nats-server's
    /// configuration file. Passwords are in clear text: keep the file
    /// private (or replace them with `nats server passwd` bcrypt hashes).
    pub fn server_config(&self) -> String {
        let mut out = format!(
            "# agentorg: users and permissions of org `{}`, generated from its chart.\n\
             authorization {{\n  users = [\n",
            self.org
        );
        out.push_str(&format!(
            "    {{ user: {}, password: {} }}\n",
            quote(&self.admin.user),
            quote(&self.admin.password)
        ));
        for (role, (c, p)) in &self.roles {
            out.push_str(&format!("    # {role}\n"));
            out.push_str(&format!(
                "    {{ user: {}, password: {}, permissions: {{\n        publish: {{ allow: {} }}\n        subscribe: {{ allow: {} }}\n        allow_responses: {}\n    }} }}\n",
                quote(&c.user),
                quote(&c.password),
                list(&p.publish),
                list(&p.subscribe),
                p.allow_responses,
            ));
        }
        out.push_str("  ]\n}\n");
        out
    }
}

/// A double-quoted configuration string (no variable expansion inside).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", inner.join(", "))
}

impl OrgAuthBuilder {
    /// Uses this admin user and password instead of `admin@<org>` and a
    /// generated one.
    pub fn with_admin(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.admin = Some((user.into(), password.into()));
        self
    }

    /// Uses this password for a role (or the principal) instead of a
    /// generated one.
    pub fn with_password(mut self, role: impl Into<String>, password: impl Into<String>) -> Self {
        self.passwords.insert(role.into(), password.into());
        self
    }

    /// Lets a role publish these events besides those the chart declares
    /// for it: each a pattern under `<org>.events.` (`deploy.complete`,
    /// `deploy.*`, `deploy.>`). The runtime still refuses, before the
    /// broker, an event the chart does not declare for the role.
    pub fn with_events(
        mut self,
        role: impl Into<String>,
        patterns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.events
            .entry(role.into())
            .or_default()
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Generates the users and permissions. Fails on a role the chart does
    /// not have, an invalid event pattern, or no randomness for passwords.
    pub fn build(self) -> Result<OrgAuth, TransportError> {
        let chart = &self.chart;
        let org = chart.org().clone();
        let s = Subjects::new(org.clone());
        for role in self.passwords.keys().chain(self.events.keys()) {
            if !chart.contains(role) {
                return Err(TransportError::InvalidInput {
                    message: format!("org auth: `{role}` is not in the chart"),
                });
            }
        }
        // Stream names do not depend on limits or replicas.
        let layout = StreamLayout::new(
            org.clone(),
            1,
            Duration::from_secs(120),
            StreamKind::ALL.map(StreamLimits::default_for),
        );
        // Consumer names do not depend on the runtime configuration.
        let consumers = OrgConsumers::new(chart, &RuntimeConfig::default());
        let (admin_user, admin_password) = match self.admin {
            Some(a) => a,
            None => (format!("admin@{org}"), random_password()?),
        };
        let admin = RoleCredentials {
            user: admin_user,
            password: admin_password,
            inbox_prefix: "_INBOX".to_owned(),
            role: None,
        };
        let everyone = chart
            .roles()
            .map(|r| r.name().clone())
            .chain(std::iter::once(chart.principal().clone()));
        let mut roles = BTreeMap::new();
        for role in everyone {
            let inbox_prefix = format!("_INBOX.{org}.{role}");
            let mut publish = Vec::new();
            let mut subscribe = vec![format!("{inbox_prefix}.>"), s.rpc(&role).to_string()];
            for to in chart.may_address(&role) {
                publish.push(s.inbox(&to, &role).to_string());
                publish.push(s.rpc(&to).to_string());
            }
            // Saga steps, compensations and escalations, as itself.
            let saga = Name::new(agentorg_core::saga::CHANNEL).map_err(|e| {
                TransportError::InvalidInput {
                    message: format!("org auth: {e}"),
                }
            })?;
            for to in chart.saga_contacts(&role) {
                publish.push(s.channel(&to, &saga, &role).to_string());
            }
            // Meeting turns, answers, ballot and "voted" notices, action
            // items and escalations, as itself, between the roles the
            // chart's `meets` joins.
            let meeting = Name::new(agentorg_core::meeting::CHANNEL).map_err(|e| {
                TransportError::InvalidInput {
                    message: format!("org auth: {e}"),
                }
            })?;
            for to in chart.meeting_contacts(&role) {
                publish.push(s.channel(&to, &meeting, &role).to_string());
            }
            // A task of its own (a meeting's action item), in its own inbox.
            if !chart.is_principal(&role) {
                publish.push(s.inbox(&role, &role).to_string());
            }
            // Blackboard ready notices, as itself, to any role (projects
            // are not in the chart; the receiver checks the sender owns a
            // blocker).
            if !chart.is_principal(&role) {
                let board = agentorg_core::blackboard::CHANNEL;
                publish.push(format!("{org}.agent.*.{board}.{role}"));
            }
            for peer in chart.peers_of(&role) {
                publish.push(s.peer(&role, peer).to_string());
                publish.push(s.rpc(peer).to_string());
            }
            // The runtime's own events (a missed SLA, an opened breaker, a
            // dead letter), sent by the role concerned.
            for name in agentorg_core::events::ORG_EVENTS {
                publish.push(format!("{org}.events.{name}"));
            }
            let declared: Vec<&str> = if chart.is_principal(&role) {
                chart.declared_events().into_iter().collect()
            } else {
                chart
                    .role(&role)
                    .map(|r| r.publishes().iter().map(String::as_str).collect())
                    .unwrap_or_default()
            };
            for name in declared {
                publish.push(format!("{org}.events.{name}"));
            }
            for pattern in self.events.get(role.as_str()).into_iter().flatten() {
                let p = s
                    .events_matching(pattern)
                    .map_err(|e| TransportError::InvalidInput {
                        message: format!("org auth: events of `{role}`: {e}"),
                    })?;
                publish.push(p.to_string());
            }
            publish.push(s.deadletter().to_string());
            publish.push(s.alerts().to_string());
            // Every consumer the role's patterns bind (its inbox, and any a
            // pattern adds), and the principal's alerts and dead letters.
            let mut own: Vec<&ConsumerConfig> = consumers.of_role(&role).iter().collect();
            if chart.is_principal(&role) {
                own.push(&consumers.alerts);
                own.push(&consumers.dead_letters);
            }
            for c in own {
                // A consumer's stream follows from its filters; these are the
                // runtime's own, so they always map to one stream.
                let kind = layout
                    .stream_of_filters(&c.filters)
                    .map_err(TransportError::from)?;
                let stream = layout.stream_name(kind);
                publish.push(format!("$JS.API.CONSUMER.INFO.{stream}.{}", c.name));
                publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", c.name));
                publish.push(format!("$JS.ACK.{stream}.{}.>", c.name));
            }
            publish.dedup();
            subscribe.dedup();
            let password = match self.passwords.get(role.as_str()) {
                Some(p) => p.clone(),
                None => random_password()?,
            };
            let credentials = RoleCredentials {
                user: format!("{role}@{org}"),
                password,
                inbox_prefix,
                role: Some(role.clone()),
            };
            roles.insert(
                role,
                (
                    credentials,
                    Permissions {
                        publish,
                        subscribe,
                        allow_responses: true,
                    },
                ),
            );
        }
        Ok(OrgAuth { org, admin, roles })
    }
}
