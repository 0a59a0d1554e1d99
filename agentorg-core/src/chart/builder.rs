//! Building and validating an org chart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{ChartError, Inner, OrgChart, PeerChannel, Role, Shortcut};
use crate::name::Name;
use crate::tools::ToolGrant;

/// A value as written, with the line it came from (TOML only).
#[derive(Debug, Clone)]
pub(crate) struct At {
    pub(crate) value: String,
    pub(crate) line: Option<usize>,
}

impl At {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            line: None,
        }
    }

    pub(crate) fn name(&self) -> Result<Name, ChartError> {
        Name::new(&self.value).map_err(|source| ChartError::InvalidName {
            source,
            line: self.line,
        })
    }
}

/// One role as declared, before validation; see [`OrgChartBuilder::role`].
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub(crate) name: At,
    pub(crate) reports_to: Option<At>,
    pub(crate) description: String,
    pub(crate) tools: Vec<At>,
    pub(crate) alternate: Option<At>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) publishes: Vec<At>,
    pub(crate) subscribes: Vec<At>,
    pub(crate) meets: Vec<At>,
}

impl RoleSpec {
    /// A role called `name`, so far with no manager, tools or alternate.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: At::new(name),
            reports_to: None,
            description: String::new(),
            tools: Vec::new(),
            alternate: None,
            capabilities: Vec::new(),
            publishes: Vec::new(),
            subscribes: Vec::new(),
            meets: Vec::new(),
        }
    }

    /// Sets the role or principal this role reports to.
    pub fn reports_to(mut self, manager: impl Into<String>) -> Self {
        self.reports_to = Some(At::new(manager));
        self
    }

    /// Sets the tool grants (`server.tool` or `server.*`), parsed in `build`.
    pub fn tools(mut self, grants: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tools = grants.into_iter().map(At::new).collect();
        self
    }

    /// Sets the role that takes this role's delegations while its circuit
    /// breaker is open.
    pub fn alternate(mut self, alternate: impl Into<String>) -> Self {
        self.alternate = Some(At::new(alternate));
        self
    }

    /// Sets the free-text description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the free-text capabilities.
    pub fn capabilities(
        mut self,
        capabilities: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// The event names this role may publish (`deploy.complete`). Anything
    /// else it publishes is refused before the transport.
    pub fn publishes(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.publishes = names.into_iter().map(At::new).collect();
        self
    }

    /// The events this role subscribes to: names, or patterns with `*` for
    /// one token and, last, `>` for the rest (`deploy.*`, `ci.>`). The role
    /// gets one durable subscription to all of them.
    pub fn subscribes(mut self, patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.subscribes = patterns.into_iter().map(At::new).collect();
        self
    }

    /// The roles this role may call into a meeting it facilitates (not
    /// itself, not the principal).
    pub fn meets(mut self, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.meets = roles.into_iter().map(At::new).collect();
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PeerSpec {
    pub(crate) a: At,
    pub(crate) b: At,
    pub(crate) purpose: Option<String>,
    pub(crate) line: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct ShortcutSpec {
    pub(crate) from: At,
    pub(crate) to: At,
    pub(crate) task_types: Vec<At>,
}

/// Builds an [`OrgChart`] in code; nothing is checked until [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct OrgChartBuilder {
    pub(crate) org: At,
    pub(crate) principal: Option<At>,
    pub(crate) roles: Vec<RoleSpec>,
    pub(crate) peers: Vec<PeerSpec>,
    pub(crate) shortcuts: Vec<ShortcutSpec>,
    pub(crate) event_schemas: Vec<(At, serde_json::Value)>,
    pub(crate) sagas: Vec<super::SagaSpec>,
}

impl OrgChartBuilder {
    /// A builder for the org called `org`.
    pub fn new(org: impl Into<String>) -> Self {
        Self {
            org: At::new(org),
            principal: None,
            roles: Vec::new(),
            peers: Vec::new(),
            shortcuts: Vec::new(),
            event_schemas: Vec::new(),
            sagas: Vec::new(),
        }
    }

    /// Sets the human principal: reports to no one, receives escalations.
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(At::new(principal));
        self
    }

    /// Adds a role.
    pub fn role(mut self, role: RoleSpec) -> Self {
        self.roles.push(role);
        self
    }

    /// Declares a peer channel between `a` and `b`.
    pub fn peer(mut self, a: impl Into<String>, b: impl Into<String>) -> Self {
        self.peers.push(PeerSpec {
            a: At::new(a),
            b: At::new(b),
            purpose: None,
            line: None,
        });
        self
    }

    /// Declares a peer channel between `a` and `b`, saying what it is for.
    pub fn peer_with_purpose(
        self,
        a: impl Into<String>,
        b: impl Into<String>,
        purpose: impl Into<String>,
    ) -> Self {
        let mut this = self.peer(a, b);
        if let Some(p) = this.peers.last_mut() {
            p.purpose = Some(purpose.into());
        }
        this
    }

    /// Lets `from` delegate tasks of the given types straight to `to`.
    pub fn shortcut(
        mut self,
        from: impl Into<String>,
        to: impl Into<String>,
        task_types: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.shortcuts.push(ShortcutSpec {
            from: At::new(from),
            to: At::new(to),
            task_types: task_types.into_iter().map(At::new).collect(),
        });
        self
    }

    /// Declares a chain or saga (see [`SagaSpec`](super::SagaSpec) and
    /// [`crate::saga`]): its steps' roles must be roles of the chart, a
    /// rollback event must be in its step role's `publishes`, and a gate's
    /// event in the previous step role's.
    pub fn saga(mut self, saga: super::SagaSpec) -> Self {
        self.sagas.push(saga);
        self
    }

    /// Declares a JSON Schema for the payload of the event `name`: a
    /// publish whose payload fails it is refused before the transport. (The
    /// principal may publish every event the chart declares, in a role's
    /// `publishes` or this way.)
    pub fn event_schema(mut self, name: impl Into<String>, schema: serde_json::Value) -> Self {
        self.event_schemas.push((At::new(name), schema));
        self
    }

    /// Validates the chart and returns it, or the first error found, checking
    /// in this order: the org and principal names; each role in order of
    /// declaration (name, duplicates, manager, tools, alternate, events);
    /// the references of each role; reporting cycles; peer channels;
    /// shortcuts; event schemas.
    pub fn build(self) -> Result<OrgChart, ChartError> {
        let org = self.org.name()?;
        let principal = self
            .principal
            .as_ref()
            .ok_or(ChartError::MissingPrincipal)?
            .name()?;

        // Names, grants and own fields of each role.
        let mut roles = BTreeMap::<Name, Role>::new();
        let mut declared = Vec::with_capacity(self.roles.len());
        for spec in &self.roles {
            let name = spec.name.name()?;
            let role = || name.to_string();
            if name == principal {
                return Err(ChartError::PrincipalReports {
                    role: role(),
                    line: spec.name.line,
                });
            }
            if roles.contains_key(&name) {
                return Err(ChartError::Duplicate {
                    what: "role",
                    name: role(),
                    line: spec.name.line,
                });
            }
            let manager = spec
                .reports_to
                .as_ref()
                .ok_or_else(|| ChartError::NoManager {
                    role: role(),
                    line: spec.name.line,
                })?;
            let reports_to = manager.name()?;
            let tools = spec
                .tools
                .iter()
                .map(|g| {
                    g.value
                        .parse::<ToolGrant>()
                        .map_err(|source| ChartError::InvalidToolGrant {
                            role: role(),
                            source,
                            line: g.line,
                        })
                })
                .collect::<Result<_, _>>()?;
            let alternate = spec.alternate.as_ref().map(At::name).transpose()?;
            let invalid_event = |at: &At, reason: String| ChartError::InvalidEvent {
                role: Some(role()),
                event: at.value.clone(),
                reason,
                line: at.line,
            };
            let mut publishes = Vec::with_capacity(spec.publishes.len());
            for at in &spec.publishes {
                super::events::check_name(&at.value).map_err(|r| invalid_event(at, r))?;
                publishes.push(at.value.clone());
            }
            publishes.sort();
            publishes.dedup();
            let mut subscribes = Vec::with_capacity(spec.subscribes.len());
            for at in &spec.subscribes {
                super::events::check_pattern(&at.value).map_err(|r| invalid_event(at, r))?;
                subscribes.push(at.value.clone());
            }
            let subscribes = super::events::normalize(&subscribes);
            let mut meets = spec
                .meets
                .iter()
                .map(At::name)
                .collect::<Result<Vec<_>, _>>()?;
            meets.sort();
            meets.dedup();
            declared.push((name.clone(), spec));
            roles.insert(
                name.clone(),
                Role {
                    name,
                    reports_to: Some(reports_to),
                    description: spec.description.clone(),
                    tools,
                    alternate,
                    capabilities: spec.capabilities.clone(),
                    publishes,
                    subscribes,
                    meets,
                },
            );
        }
        let known = |n: &Name| *n == principal || roles.contains_key(n);

        // References from each role.
        for (name, spec) in &declared {
            let Some(role) = roles.get(name) else {
                continue;
            };
            if let (Some(manager), Some(at)) = (&role.reports_to, &spec.reports_to) {
                if !known(manager) {
                    return Err(ChartError::UnknownRole {
                        role: manager.to_string(),
                        referenced_by: format!("reports_to of `{name}`"),
                        line: at.line,
                    });
                }
            }
            for at in &spec.meets {
                let participant = at.name()?;
                if &participant == name {
                    return Err(ChartError::SelfChannel {
                        role: name.to_string(),
                        line: at.line,
                    });
                }
                if participant == principal {
                    return Err(ChartError::MeetsPrincipal {
                        role: name.to_string(),
                        line: at.line,
                    });
                }
                if !known(&participant) {
                    return Err(ChartError::UnknownRole {
                        role: participant.to_string(),
                        referenced_by: format!("meets of `{name}`"),
                        line: at.line,
                    });
                }
            }
            if let (Some(alt), Some(at)) = (&role.alternate, &spec.alternate) {
                let line = at.line;
                if alt == name {
                    return Err(ChartError::SelfChannel {
                        role: name.to_string(),
                        line,
                    });
                }
                if *alt == principal {
                    return Err(ChartError::InvalidAlternate {
                        role: name.to_string(),
                        alternate: alt.to_string(),
                        reason: "it is the principal, who takes no tasks",
                        line,
                    });
                }
                if !known(alt) {
                    return Err(ChartError::UnknownRole {
                        role: alt.to_string(),
                        referenced_by: format!("alternate of `{name}`"),
                        line,
                    });
                }
            }
        }

        // Every reporting line must reach the principal. `rooted` holds the
        // roles known to reach it, so each role is walked once.
        let mut rooted = BTreeSet::<&Name>::new();
        for (name, _) in &declared {
            let mut path = Vec::new();
            let mut cur = name;
            while *cur != principal && !rooted.contains(cur) {
                if path.contains(&cur) {
                    let line = declared
                        .iter()
                        .find(|(n, _)| n == cur)
                        .and_then(|(_, s)| s.reports_to.as_ref())
                        .and_then(|at| at.line);
                    return Err(ChartError::Cycle {
                        role: cur.to_string(),
                        line,
                    });
                }
                path.push(cur);
                match roles.get(cur).and_then(|r| r.reports_to.as_ref()) {
                    Some(manager) => cur = manager,
                    None => break,
                }
            }
            rooted.extend(path);
        }

        // Peer channels.
        let mut channels = BTreeMap::<(Name, Name), PeerChannel>::new();
        for spec in &self.peers {
            let (a, b) = (spec.a.name()?, spec.b.name()?);
            if a == b {
                return Err(ChartError::SelfChannel {
                    role: a.to_string(),
                    line: spec.line,
                });
            }
            for (n, other, at) in [(&a, &b, &spec.a), (&b, &a, &spec.b)] {
                if !known(n) {
                    return Err(ChartError::UnknownRole {
                        role: n.to_string(),
                        referenced_by: format!("peer channel with `{other}`"),
                        line: at.line,
                    });
                }
            }
            let (a, b) = if a < b { (a, b) } else { (b, a) };
            if channels.contains_key(&(a.clone(), b.clone())) {
                return Err(ChartError::Duplicate {
                    what: "peer channel",
                    name: format!("{a} <-> {b}"),
                    line: spec.line,
                });
            }
            let channel = PeerChannel {
                a: a.clone(),
                b: b.clone(),
                purpose: spec.purpose.clone(),
            };
            channels.insert((a, b), channel);
        }

        // Shortcuts.
        let mut shortcuts = BTreeMap::<Name, BTreeMap<Name, Shortcut>>::new();
        for spec in &self.shortcuts {
            let (from, to) = (spec.from.name()?, spec.to.name()?);
            if from == to {
                return Err(ChartError::SelfChannel {
                    role: from.to_string(),
                    line: spec.to.line,
                });
            }
            if !known(&from) {
                return Err(ChartError::UnknownRole {
                    role: from.to_string(),
                    referenced_by: format!("shortcut to `{to}`"),
                    line: spec.from.line,
                });
            }
            if to == principal {
                return Err(ChartError::DelegatesToPrincipal {
                    role: from.to_string(),
                    line: spec.to.line,
                });
            }
            if !known(&to) {
                return Err(ChartError::UnknownRole {
                    role: to.to_string(),
                    referenced_by: format!("shortcut from `{from}`"),
                    line: spec.to.line,
                });
            }
            let task_types = spec
                .task_types
                .iter()
                .map(At::name)
                .collect::<Result<_, _>>()?;
            let targets = shortcuts.entry(from.clone()).or_default();
            if targets.contains_key(&to) {
                return Err(ChartError::Duplicate {
                    what: "shortcut",
                    name: format!("{from} -> {to}"),
                    line: spec.from.line,
                });
            }
            targets.insert(
                to.clone(),
                Shortcut {
                    from,
                    to,
                    task_types,
                },
            );
        }

        // Event schemas: valid names, valid schemas, one per name.
        let mut event_schemas = BTreeMap::<String, serde_json::Value>::new();
        for (at, schema) in &self.event_schemas {
            let invalid = |reason: String| ChartError::InvalidEvent {
                role: None,
                event: at.value.clone(),
                reason,
                line: at.line,
            };
            super::events::check_name(&at.value).map_err(invalid)?;
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(invalid(format!(
                    "its schema is not a valid JSON Schema: {e}"
                )));
            }
            if event_schemas
                .insert(at.value.clone(), schema.clone())
                .is_some()
            {
                return Err(ChartError::Duplicate {
                    what: "event schema",
                    name: at.value.clone(),
                    line: at.line,
                });
            }
        }

        let mut reports = BTreeMap::<Name, Vec<Name>>::new();
        for role in roles.values() {
            if let Some(manager) = &role.reports_to {
                reports
                    .entry(manager.clone())
                    .or_default()
                    .push(role.name.clone());
            }
        }
        let mut peers = BTreeMap::<Name, BTreeMap<Name, usize>>::new();
        let channels: Vec<PeerChannel> = channels.into_values().collect();
        for (i, c) in channels.iter().enumerate() {
            peers.entry(c.a.clone()).or_default().insert(c.b.clone(), i);
            peers.entry(c.b.clone()).or_default().insert(c.a.clone(), i);
        }
        let mut inner = Inner {
            org,
            principal: Role {
                name: principal,
                reports_to: None,
                description: String::new(),
                tools: Vec::new(),
                alternate: None,
                capabilities: Vec::new(),
                publishes: Vec::new(),
                subscribes: Vec::new(),
                meets: Vec::new(),
            },
            roles,
            reports,
            channels,
            peers,
            shortcuts,
            event_schemas,
            sagas: BTreeMap::new(),
        };
        inner.sagas = super::sagas::validate(&self.sagas, &inner)?;
        Ok(OrgChart {
            inner: Arc::new(inner),
        })
    }
}
