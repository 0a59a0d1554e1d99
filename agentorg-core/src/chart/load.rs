//! Loading an org chart from TOML, keeping the line of every value that
//! validation may refuse.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::builder::{At, OrgChartBuilder, PeerSpec, RoleSpec, ShortcutSpec};
use super::{ChartError, GateSpec, OrgChart, SagaSpec, StepSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChartFile {
    org: Spanned<String>,
    principal: Option<Spanned<String>>,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RoleFile>,
    #[serde(default)]
    peers: Vec<PeerFile>,
    #[serde(default)]
    shortcuts: Vec<ShortcutFile>,
    #[serde(default)]
    events: BTreeMap<Spanned<String>, EventFile>,
    #[serde(default)]
    sagas: BTreeMap<Spanned<String>, SagaFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SagaFile {
    #[serde(default)]
    description: String,
    steps: Vec<StepFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: Spanned<String>,
    role: Spanned<String>,
    #[serde(default)]
    compensate: bool,
    rollback_event: Option<Spanned<String>>,
    #[serde(default)]
    irreversible: bool,
    gate: Option<GateFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateFile {
    event: String,
    quorum: Option<u32>,
    within_secs: f64,
    #[serde(default)]
    on_timeout: super::GateTimeout,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    /// A JSON Schema, written as a TOML table.
    schema: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    reports_to: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    alternate: Option<Spanned<String>>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    publishes: Vec<Spanned<String>>,
    #[serde(default)]
    subscribes: Vec<Spanned<String>>,
    #[serde(default)]
    meets: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    between: Spanned<[Spanned<String>; 2]>,
    purpose: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortcutFile {
    from: Spanned<String>,
    to: Spanned<String>,
    task_types: Vec<Spanned<String>>,
}

/// The 1-based line of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

impl OrgChart {
    /// Parses and validates a chart written in TOML.
    ///
    /// Unknown fields are refused, and every error carries the line of the
    /// offending value (see [`ChartError`]); the module docs show the format.
    pub fn from_toml_str(src: &str) -> Result<Self, ChartError> {
        let file: ChartFile = toml::from_str(src).map_err(|e| ChartError::Toml {
            message: e.message().to_owned(),
            line: e.span().map(|s| line_of(src, s.start)),
        })?;
        let at = |s: Spanned<String>| At {
            line: Some(line_of(src, s.span().start)),
            value: s.into_inner(),
        };
        let mut builder = OrgChartBuilder::new("");
        builder.org = at(file.org);
        builder.principal = file.principal.map(at);
        // Validate roles in the order they are written, not by name.
        let mut roles: Vec<_> = file.roles.into_iter().collect();
        roles.sort_by_key(|(name, _)| name.span().start);
        builder.roles = roles
            .into_iter()
            .map(|(name, role)| RoleSpec {
                name: at(name),
                reports_to: role.reports_to.map(at),
                description: role.description,
                tools: role.tools.into_iter().map(at).collect(),
                alternate: role.alternate.map(at),
                capabilities: role.capabilities,
                publishes: role.publishes.into_iter().map(at).collect(),
                subscribes: role.subscribes.into_iter().map(at).collect(),
                meets: role.meets.into_iter().map(at).collect(),
            })
            .collect();
        builder.peers = file
            .peers
            .into_iter()
            .map(|p| {
                let line = Some(line_of(src, p.between.span().start));
                let [a, b] = p.between.into_inner();
                PeerSpec {
                    a: at(a),
                    b: at(b),
                    purpose: p.purpose,
                    line,
                }
            })
            .collect();
        builder.shortcuts = file
            .shortcuts
            .into_iter()
            .map(|s| ShortcutSpec {
                from: at(s.from),
                to: at(s.to),
                task_types: s.task_types.into_iter().map(at).collect(),
            })
            .collect();
        let mut events: Vec<_> = file.events.into_iter().collect();
        events.sort_by_key(|(name, _)| name.span().start);
        for (name, event) in events {
            let name = at(name);
            if let Some(schema) = event.schema {
                let schema =
                    serde_json::to_value(schema).map_err(|e| ChartError::InvalidEvent {
                        role: None,
                        event: name.value.clone(),
                        reason: format!("its schema is not JSON: {e}"),
                        line: name.line,
                    })?;
                builder.event_schemas.push((name, schema));
            }
        }
        let mut sagas: Vec<_> = file.sagas.into_iter().collect();
        sagas.sort_by_key(|(name, _)| name.span().start);
        for (name, saga) in sagas {
            let name = at(name);
            let mut spec = SagaSpec::new(name.value.clone()).description(saga.description);
            spec.name = name.clone();
            for step in saga.steps {
                let mut s = StepSpec::new("", "");
                s.name = at(step.name);
                s.role = at(step.role);
                s.compensate = step.compensate || step.rollback_event.is_some();
                s.rollback_event = step.rollback_event.map(at);
                s.irreversible = step.irreversible;
                if let Some(g) = step.gate {
                    let within =
                        std::time::Duration::try_from_secs_f64(g.within_secs).map_err(|e| {
                            ChartError::InvalidSaga {
                                saga: name.value.clone(),
                                reason: format!("step `{}`: gate `within_secs`: {e}", s.name.value),
                                line: s.name.line,
                            }
                        })?;
                    let mut gate = GateSpec::new(g.event, within).on_timeout(g.on_timeout);
                    gate.quorum = g.quorum;
                    s.gate = Some(gate);
                }
                spec.steps.push(s);
            }
            builder.sagas.push(spec);
        }
        builder.build()
    }

    /// Reads a TOML chart file and parses it with [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ChartError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|source| ChartError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&src)
    }
}
