//! The org chart: who reports to whom, who may talk to whom, who may use what.
//!
//! An [`OrgChart`] holds one human **principal** (reports to no one, receives
//! escalations) and the **roles** under it. Each role reports to exactly one
//! role or the principal, so the reporting lines form a tree. The chart also
//! declares **peer channels** (pairs of roles that may message each other),
//! **delegation shortcuts** (a role may hand tasks of listed types straight to
//! a role that is not its direct report), **tool grants** per role and an
//! optional **alternate** per role, which takes its delegations while its
//! circuit breaker is open, and the **events** each role publishes and
//! subscribes to (with an optional JSON Schema per event name; see
//! [`events`](crate::events)), and its **chains and sagas**: named
//! sequences of steps, each run by a role, with compensations and gates
//! ([`SagaSpec`]; see [`saga`](crate::saga)), and whom each role may call
//! into a **meeting** it facilitates (`meets`,
//! [`may_meet`](OrgChart::may_meet)).
//!
//! The chart is the least-privilege policy of the org: the runtime allows
//! delegation only down the chart, by a shortcut, or to itself
//! ([`delegation_route`](OrgChart::delegation_route)), peer messages only on
//! declared channels ([`are_peers`](OrgChart::are_peers)), tools only as
//! granted ([`may_use_tool`](OrgChart::may_use_tool)), events only as
//! declared ([`may_publish`](OrgChart::may_publish)), and the NATS backend
//! derives broker permissions from [`may_address`](OrgChart::may_address).
//!
//! A chart is validated once, when built, and is immutable afterwards; clones
//! share it.
//!
//! # Building a chart in code
//!
//! ```
//! use agentorg_core::chart::{DelegationRoute, OrgChart, RoleSpec};
//!
//! # fn main() -> Result<(), agentorg_core::ChartError> {
//! let engineer = |name: &str| {
//!     RoleSpec::new(name).reports_to("cto").tools(["git.*", "time.*"])
//! };
//! let chart = OrgChart::builder("genbrain")
//!     .principal("founder")
//!     .role(RoleSpec::new("ceo").reports_to("founder").description("Task decomposition, strategic decisions"))
//!     .role(RoleSpec::new("cto").reports_to("ceo").tools(["git.*", "time.*"]).capabilities(["architecture"]))
//!     .role(RoleSpec::new("cso").reports_to("ceo").tools(["time.*"]))
//!     .role(RoleSpec::new("marketing").reports_to("ceo").tools(["time.*"]))
//!     .role(engineer("backend").alternate("frontend"))
//!     .role(engineer("frontend"))
//!     .role(engineer("devops"))
//!     .peer_with_purpose("backend", "frontend", "API contracts")
//!     .peer_with_purpose("devops", "cso", "infrastructure security")
//!     .peer_with_purpose("backend", "devops", "deployment configs")
//!     .peer_with_purpose("frontend", "marketing", "brand assets")
//!     .shortcut("ceo", "backend", ["api_change"])
//!     .build()?;
//!
//! assert_eq!(chart.chain_of_command("backend"), ["cto", "ceo", "founder"]);
//! assert_eq!(chart.delegation_route("cto", "backend", None), Ok(DelegationRoute::DirectReport));
//! assert_eq!(
//!     chart.delegation_route("ceo", "backend", Some("api_change")),
//!     Ok(DelegationRoute::Shortcut)
//! );
//! assert!(chart.delegation_route("ceo", "backend", Some("rewrite")).is_err());
//! assert!(chart.are_peers("frontend", "backend"));
//! assert!(!chart.are_peers("backend", "cso"));
//! assert!(chart.may_use_tool("devops", "git.commit"));
//! assert!(!chart.may_use_tool("cso", "git.commit"));
//! # Ok(())
//! # }
//! ```
//!
//! # Loading a chart from TOML
//!
//! Unknown fields are errors, and every error carries the line of the value
//! it is about.
//!
//! ```
//! use agentorg_core::chart::{ChartError, OrgChart};
//!
//! let chart = OrgChart::from_toml_str(r#"
//! org = "genbrain"
//! principal = "founder"
//!
//! [roles.ceo]
//! reports_to = "founder"
//! description = "Task decomposition, strategic decisions"
//! tools = ["time.*"]
//!
//! [roles.cto]
//! reports_to = "ceo"
//! tools = ["git.*", "time.get_current_time"]
//! capabilities = ["architecture", "code review"]
//! meets = ["backend", "frontend"]
//!
//! [roles.backend]
//! reports_to = "cto"
//! alternate = "frontend"
//!
//! [roles.frontend]
//! reports_to = "cto"
//! publishes = ["deploy.complete"]
//!
//! [roles.marketing]
//! reports_to = "ceo"
//! subscribes = ["deploy.*", "deploy.complete"]   # normalized to ["deploy.*"]
//!
//! [events."deploy.complete"]
//! schema = { type = "object", required = ["version"] }
//!
//! [[peers]]
//! between = ["backend", "frontend"]
//! purpose = "API contracts"
//!
//! [[shortcuts]]
//! from = "ceo"
//! to = "backend"
//! task_types = ["api_change"]
//!
//! [sagas.release]
//! description = "deploy, then announce"
//! steps = [
//!   { name = "deploy", role = "frontend", compensate = true },
//!   { name = "announce", role = "marketing", irreversible = true, gate = { event = "deploy.complete", quorum = 1, within_secs = 30, on_timeout = "skip" } },
//! ]
//! "#).unwrap();
//! assert_eq!(chart.saga("release").unwrap().steps[1].role, "marketing");
//! assert_eq!(chart.manager_of("backend").unwrap(), "cto");
//! assert!(chart.may_receive_task_from("frontend", "ceo", Some("api_change")));
//! assert!(chart.may_publish("frontend", "deploy.complete"));
//! assert!(!chart.may_publish("backend", "deploy.complete"));
//! assert!(chart.may_meet("cto", "backend") && !chart.may_meet("backend", "cto"));
//! assert_eq!(chart.subscriptions_of("marketing"), ["deploy.*"]);
//! assert_eq!(chart.subscribers_of("deploy.complete").collect::<Vec<_>>(), ["marketing"]);
//! assert!(chart.event_schema("deploy.complete").is_some());
//!
//! let err = OrgChart::from_toml_str("org = \"o\"\nprincipal = \"p\"\n[roles.a]\nreports_to = \"nobody\"\n")
//!     .unwrap_err();
//! assert!(matches!(err, ChartError::UnknownRole { ref role, line: Some(4), .. } if role == "nobody"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::name::Name;
use crate::tools::ToolGrant;

mod builder;
mod error;
pub(crate) mod events;
mod load;
mod sagas;

pub use builder::{OrgChartBuilder, RoleSpec};
pub use error::{ChartError, DelegationRefused, RefusalReason};
pub use sagas::{GateSpec, GateTimeout, SagaDef, SagaSpec, StepDef, StepSpec};

/// A validated org chart; immutable, and cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgChart {
    inner: Arc<Inner>,
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    org: Name,
    /// The principal as a role with no manager, tools or alternate.
    principal: Role,
    /// Every role but the principal.
    roles: BTreeMap<Name, Role>,
    /// Direct reports of each manager (principal included), sorted.
    reports: BTreeMap<Name, Vec<Name>>,
    /// Peer channels, sorted.
    channels: Vec<PeerChannel>,
    /// Both ends of each channel, to its index in `channels`.
    peers: BTreeMap<Name, BTreeMap<Name, usize>>,
    /// Shortcuts by `from`, then `to`.
    shortcuts: BTreeMap<Name, BTreeMap<Name, Shortcut>>,
    /// The JSON Schema of each event name that declares one.
    event_schemas: BTreeMap<String, serde_json::Value>,
    /// The chains and sagas, by name.
    sagas: BTreeMap<Name, SagaDef>,
}

/// One role of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    name: Name,
    reports_to: Option<Name>,
    description: String,
    tools: Vec<ToolGrant>,
    alternate: Option<Name>,
    capabilities: Vec<String>,
    /// Event names it may publish, sorted.
    publishes: Vec<String>,
    /// Its subscription patterns, normalized (none covers another), sorted.
    subscribes: Vec<String>,
    /// The roles it may call into a meeting, sorted.
    meets: Vec<Name>,
}

impl Role {
    /// The role's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The role or principal it reports to; `None` only for the principal.
    pub fn reports_to(&self) -> Option<&Name> {
        self.reports_to.as_ref()
    }

    /// The free-text description (empty if none was given).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The tools the role may see and call.
    pub fn tools(&self) -> &[ToolGrant] {
        &self.tools
    }

    /// The role that takes its delegations while its circuit breaker is open.
    pub fn alternate(&self) -> Option<&Name> {
        self.alternate.as_ref()
    }

    /// The free-text capabilities.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// The event names it may publish, sorted.
    pub fn publishes(&self) -> &[String] {
        &self.publishes
    }

    /// Its event subscriptions: names and `*`/`>` patterns, normalized so
    /// that none covers another (`deploy.complete` is dropped beside
    /// `deploy.*`), sorted.
    pub fn subscribes(&self) -> &[String] {
        &self.subscribes
    }

    /// The roles it may call into a meeting it facilitates, sorted.
    pub fn meets(&self) -> &[Name] {
        &self.meets
    }
}

/// A declared peer channel between two roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChannel {
    a: Name,
    b: Name,
    purpose: Option<String>,
}

impl PeerChannel {
    /// Its two ends, in name order.
    pub fn roles(&self) -> (&Name, &Name) {
        (&self.a, &self.b)
    }

    /// What the channel is for, if declared.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }
}

/// A delegation shortcut: `from` may delegate tasks of the listed types
/// straight to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcut {
    from: Name,
    to: Name,
    task_types: Vec<Name>,
}

impl Shortcut {
    /// The delegator.
    pub fn from(&self) -> &Name {
        &self.from
    }

    /// The delegate.
    pub fn to(&self) -> &Name {
        &self.to
    }

    /// The task types it covers.
    pub fn task_types(&self) -> &[Name] {
        &self.task_types
    }

    /// Whether it covers `task_type`.
    pub fn allows(&self, task_type: &str) -> bool {
        self.task_types.iter().any(|t| t == task_type)
    }
}

/// Why a delegation is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelegationRoute {
    /// The delegate is a direct report of the delegator.
    DirectReport,
    /// A shortcut from the delegator to the delegate covers the task type.
    Shortcut,
    /// A role puts a task in its own inbox (a meeting's action item it
    /// takes from the record, say): no rights over any other role's.
    Own,
}

impl OrgChart {
    /// A builder for the org called `org`.
    pub fn builder(org: impl Into<String>) -> OrgChartBuilder {
        OrgChartBuilder::new(org)
    }

    /// The org's name.
    pub fn org(&self) -> &Name {
        &self.inner.org
    }

    /// The human principal.
    pub fn principal(&self) -> &Name {
        &self.inner.principal.name
    }

    /// Whether `name` is the principal.
    pub fn is_principal(&self, name: &str) -> bool {
        self.inner.principal.name == name
    }

    /// Whether `name` is the principal or a role of the chart.
    pub fn contains(&self, name: &str) -> bool {
        self.role(name).is_some()
    }

    /// The role called `name`. The principal has one too, with no manager,
    /// tools or alternate.
    pub fn role(&self, name: &str) -> Option<&Role> {
        if self.is_principal(name) {
            Some(&self.inner.principal)
        } else {
            self.inner.roles.get(name)
        }
    }

    /// Every role but the principal, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> + '_ {
        self.inner.roles.values()
    }

    /// The number of roles, not counting the principal.
    pub fn len(&self) -> usize {
        self.inner.roles.len()
    }

    /// Whether the chart has no roles besides the principal.
    pub fn is_empty(&self) -> bool {
        self.inner.roles.is_empty()
    }

    /// The role or principal that `role` reports to; `None` for the principal
    /// and for unknown roles.
    pub fn manager_of(&self, role: &str) -> Option<&Name> {
        self.inner.roles.get(role)?.reports_to.as_ref()
    }

    /// The direct reports of `role` (or of the principal), by name.
    pub fn reports_of(&self, role: &str) -> impl Iterator<Item = &Name> + '_ {
        self.inner.reports.get(role).into_iter().flatten()
    }

    /// The manager of `role`, its manager, and so on up to the principal;
    /// empty for the principal and for unknown roles.
    pub fn chain_of_command(&self, role: &str) -> Vec<Name> {
        let mut chain = Vec::new();
        let mut cur = role;
        // The tree was validated; the bound only guards the loop.
        while let (Some(manager), true) = (self.manager_of(cur), chain.len() <= self.len()) {
            chain.push(manager.clone());
            cur = manager;
        }
        chain
    }

    /// Whether a peer channel joins `a` and `b` (in either order).
    pub fn are_peers(&self, a: &str, b: &str) -> bool {
        self.peer_channel(a, b).is_some()
    }

    /// The channel joining `a` and `b`, if declared.
    pub fn peer_channel(&self, a: &str, b: &str) -> Option<&PeerChannel> {
        let i = *self.inner.peers.get(a)?.get(b)?;
        self.inner.channels.get(i)
    }

    /// The roles `role` shares a peer channel with, by name.
    pub fn peers_of(&self, role: &str) -> impl Iterator<Item = &Name> + '_ {
        self.inner
            .peers
            .get(role)
            .into_iter()
            .flat_map(BTreeMap::keys)
    }

    /// Every peer channel, sorted by its ends.
    pub fn peer_channels(&self) -> impl Iterator<Item = &PeerChannel> + '_ {
        self.inner.channels.iter()
    }

    /// The shortcut from `from` to `to`, if declared.
    pub fn shortcut(&self, from: &str, to: &str) -> Option<&Shortcut> {
        self.inner.shortcuts.get(from)?.get(to)
    }

    /// Every shortcut, sorted by `from`, then `to`.
    pub fn shortcuts(&self) -> impl Iterator<Item = &Shortcut> + '_ {
        self.inner.shortcuts.values().flat_map(BTreeMap::values)
    }

    /// Whether `from` may delegate a task (of `task_type`, if given) to `to`:
    /// `to` must be a direct report of `from`, or a shortcut from `from` to
    /// `to` must list `task_type`; or `to` is `from` itself (a role, not the
    /// principal: a task of its own, in its own inbox).
    pub fn delegation_route(
        &self,
        from: &str,
        to: &str,
        task_type: Option<&str>,
    ) -> Result<DelegationRoute, DelegationRefused> {
        self.route(from, to, task_type)
            .map_err(|reason| DelegationRefused {
                from: from.to_owned(),
                to: to.to_owned(),
                task_type: task_type.map(str::to_owned),
                reason,
            })
    }

    /// [`delegation_route`](Self::delegation_route) without allocating.
    fn route(
        &self,
        from: &str,
        to: &str,
        task_type: Option<&str>,
    ) -> Result<DelegationRoute, RefusalReason> {
        if !self.contains(from) {
            return Err(RefusalReason::UnknownSender);
        }
        if !self.contains(to) {
            return Err(RefusalReason::UnknownReceiver);
        }
        if self.manager_of(to).is_some_and(|m| m == from) {
            return Ok(DelegationRoute::DirectReport);
        }
        if from == to && !self.is_principal(from) {
            return Ok(DelegationRoute::Own);
        }
        match (task_type, self.shortcut(from, to)) {
            (Some(t), Some(s)) if s.allows(t) => Ok(DelegationRoute::Shortcut),
            _ => Err(RefusalReason::NoRoute),
        }
    }

    /// The receiver's check: whether `to` may accept a task from `from`.
    ///
    /// True if `from` may delegate it to `to`, or `to` is the alternate of a
    /// role that `from` may delegate it to (the delegation was rerouted
    /// because that role's breaker is open).
    pub fn may_receive_task_from(&self, to: &str, from: &str, task_type: Option<&str>) -> bool {
        self.route(from, to, task_type).is_ok()
            || self.roles().any(|r| {
                r.alternate.as_ref().is_some_and(|a| a == to)
                    && self
                        .route(from, &r.name, task_type)
                        .is_ok_and(|route| route != DelegationRoute::Own)
            })
    }

    /// The alternate of `role`, if declared.
    pub fn alternate_of(&self, role: &str) -> Option<&Name> {
        self.inner.roles.get(role)?.alternate.as_ref()
    }

    /// The tools granted to `role`; empty for the principal and unknown roles.
    pub fn tool_grants(&self, role: &str) -> &[ToolGrant] {
        self.role(role).map_or(&[], Role::tools)
    }

    /// Whether `role` may use the qualified tool `server.tool`.
    pub fn may_use_tool(&self, role: &str, qualified_tool: &str) -> bool {
        self.tool_grants(role)
            .iter()
            .any(|g| g.allows(qualified_tool))
    }

    /// Whether `role` may publish the event `name`: a role, when it declares
    /// the name in its `publishes`; the principal, when any role declares
    /// it or the chart declares a schema for it (the principal speaks for
    /// the org, e.g. a webhook from outside).
    pub fn may_publish(&self, role: &str, name: &str) -> bool {
        if self.is_principal(role) {
            return self.is_declared_event(name);
        }
        self.inner
            .roles
            .get(role)
            .is_some_and(|r| r.publishes.iter().any(|p| p == name))
    }

    /// Whether `facilitator` may call `participant` into a meeting: the
    /// chart lists `participant` in the facilitator's `meets`.
    pub fn may_meet(&self, facilitator: &str, participant: &str) -> bool {
        self.inner
            .roles
            .get(facilitator)
            .is_some_and(|r| r.meets.iter().any(|m| m == participant))
    }

    /// Every role whose meeting channel `role` may send on: for a
    /// facilitator (a role whose `meets` is not empty), itself, the roles
    /// it meets and its manager (an undecided meeting escalates to it);
    /// for a participant, each facilitator that meets it (its turns and
    /// ballot notices go back to it). For the principal, every facilitator
    /// (it schedules meetings for them). Empty for unknown roles.
    pub fn meeting_contacts(&self, role: &str) -> BTreeSet<Name> {
        let mut out = BTreeSet::new();
        if self.is_principal(role) {
            out.extend(
                self.roles()
                    .filter(|r| !r.meets.is_empty())
                    .map(|r| r.name.clone()),
            );
            return out;
        }
        let Some(r) = self.inner.roles.get(role) else {
            return out;
        };
        if !r.meets.is_empty() {
            out.insert(r.name.clone());
            out.extend(r.meets.iter().cloned());
            out.extend(
                self.manager_of(role)
                    .filter(|m| !self.is_principal(m))
                    .cloned(),
            );
        }
        out.extend(
            self.roles()
                .filter(|f| f.meets.iter().any(|m| m == role))
                .map(|f| f.name.clone()),
        );
        out
    }

    /// Whether the chart declares the event `name`: a role publishes it, or
    /// it has a schema.
    pub fn is_declared_event(&self, name: &str) -> bool {
        self.inner.event_schemas.contains_key(name)
            || self.roles().any(|r| r.publishes.iter().any(|p| p == name))
    }

    /// Every event name the chart declares (in a role's `publishes` or with
    /// a schema), sorted.
    pub fn declared_events(&self) -> BTreeSet<&str> {
        self.roles()
            .flat_map(|r| r.publishes.iter().map(String::as_str))
            .chain(self.inner.event_schemas.keys().map(String::as_str))
            .collect()
    }

    /// The roles that may publish the event `name` (the principal may
    /// publish every declared event too), by name.
    pub fn publishers_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Name> + 'a {
        self.roles()
            .filter(move |r| r.publishes.iter().any(|p| p == name))
            .map(Role::name)
    }

    /// The roles one of whose subscriptions matches the event `name`, by
    /// name.
    pub fn subscribers_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Name> + 'a {
        self.roles()
            .filter(move |r| r.subscribes.iter().any(|p| events::matches(p, name)))
            .map(Role::name)
    }

    /// The subscriptions of `role` (see [`Role::subscribes`]); empty for
    /// the principal and unknown roles.
    pub fn subscriptions_of(&self, role: &str) -> &[String] {
        self.inner
            .roles
            .get(role)
            .map_or(&[], |r| r.subscribes.as_slice())
    }

    /// The JSON Schema the chart declares for the event `name`'s payload.
    pub fn event_schema(&self, name: &str) -> Option<&serde_json::Value> {
        self.inner.event_schemas.get(name)
    }

    /// The chain or saga `name`, if the chart declares it.
    pub fn saga(&self, name: &str) -> Option<&SagaDef> {
        self.inner.sagas.get(name)
    }

    /// Every chain and saga of the chart, by name.
    pub fn sagas(&self) -> impl Iterator<Item = &SagaDef> + '_ {
        self.inner.sagas.values()
    }

    /// Whether `from` may start the saga `name`: the principal, and the
    /// role of its first step.
    pub fn may_start_saga(&self, from: &str, name: &str) -> bool {
        self.saga(name).is_some_and(|def| {
            self.is_principal(from) || def.steps.first().is_some_and(|s| s.role == from)
        })
    }

    /// Every role whose saga channel (`<org>.agent.<to>.saga.<from>`)
    /// `from` may publish to. A saga's *members* are the roles of its steps
    /// and the managers above them (not the principal): steps go from one
    /// step role to the next, compensations back, escalations up the line,
    /// and a manager's decision to any step role (a retry, the next step,
    /// a compensation). So a member of a saga may reach every member of it;
    /// the principal may reach every member of every saga.
    pub fn saga_contacts(&self, from: &str) -> BTreeSet<Name> {
        let mut out = BTreeSet::new();
        for def in self.sagas() {
            let mut members = BTreeSet::new();
            for role in def.roles() {
                members.insert(role.clone());
                members.extend(
                    self.chain_of_command(role)
                        .into_iter()
                        .filter(|m| !self.is_principal(m)),
                );
            }
            if self.is_principal(from) || members.iter().any(|m| m.as_str() == from) {
                out.extend(members);
            }
        }
        out
    }

    /// Every role whose inbox `from` may publish to: its direct reports and
    /// its manager, the targets and sources of its shortcuts (results flow
    /// back to sources), the alternates of every role it may delegate to, and,
    /// where `from` is an alternate, the delegators of the roles it stands in
    /// for (its results go back to them). Empty for unknown roles.
    pub fn may_address(&self, from: &str) -> BTreeSet<Name> {
        let mut out = BTreeSet::new();
        if !self.contains(from) {
            return out;
        }
        let targets = self
            .inner
            .shortcuts
            .get(from)
            .into_iter()
            .flat_map(BTreeMap::keys);
        for delegate in self.reports_of(from).chain(targets) {
            out.insert(delegate.clone());
            out.extend(self.alternate_of(delegate).cloned());
        }
        // Results go back to whoever may delegate to `from`, or to a role it
        // stands in for.
        let stands_in_for = self
            .roles()
            .filter(|r| r.alternate.as_ref().is_some_and(|a| a == from))
            .map(|r| r.name.as_str());
        for role in std::iter::once(from).chain(stands_in_for) {
            out.extend(self.manager_of(role).cloned());
            out.extend(
                self.shortcuts()
                    .filter(|s| s.to == role)
                    .map(|s| s.from.clone()),
            );
        }
        out
    }
}
