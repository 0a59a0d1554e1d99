//! Chains and sagas as the chart declares them: a named sequence of steps,
//! each run by a role, some with a compensation, some gated on their
//! predecessor's event receipts (see [`crate::saga`] for how they run).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::builder::At;
use super::{ChartError, Inner};
use crate::name::Name;

/// One chain or saga as declared, before validation; see
/// [`OrgChartBuilder::saga`](super::OrgChartBuilder::saga).
///
/// ```
/// use std::time::Duration;
/// use agentorg_core::chart::{GateSpec, OrgChart, RoleSpec, SagaSpec, StepSpec};
///
/// let chart = OrgChart::builder("demo")
///     .principal("founder")
///     .role(RoleSpec::new("devops").reports_to("founder").publishes(["deploy.complete", "deploy.rollback"]))
///     .role(RoleSpec::new("marketing").reports_to("founder").subscribes(["deploy.*"]))
///     .saga(
///         SagaSpec::new("cicd")
///             .step(StepSpec::new("deploy", "devops").compensate_with("deploy.rollback"))
///             .step(StepSpec::new("smoke_test", "devops"))
///             .step(StepSpec::new("changelog", "marketing")
///                 .gate(GateSpec::new("deploy.complete", Duration::from_secs(30)))),
///     )
///     .build()?;
/// assert_eq!(chart.saga("cicd").unwrap().steps.len(), 3);
/// # Ok::<(), agentorg_core::chart::ChartError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SagaSpec {
    pub(crate) name: At,
    pub(crate) description: String,
    pub(crate) steps: Vec<StepSpec>,
}

impl SagaSpec {
    /// A saga (a chain, while no step declares a compensation) called
    /// `name`, so far with no steps.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: At::new(name),
            description: String::new(),
            steps: Vec::new(),
        }
    }

    /// What it is for.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds the next step.
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }
}

/// One step of a [`SagaSpec`], before validation.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub(crate) name: At,
    pub(crate) role: At,
    pub(crate) compensate: bool,
    pub(crate) rollback_event: Option<At>,
    pub(crate) irreversible: bool,
    pub(crate) gate: Option<GateSpec>,
}

impl StepSpec {
    /// Step `name`, run by `role`, with no compensation.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        Self {
            name: At::new(name),
            role: At::new(role),
            compensate: false,
            rollback_event: None,
            irreversible: false,
            gate: None,
        }
    }

    /// The step has a compensation (its role's `on_compensate`), recorded
    /// with the saga before the step runs.
    pub fn compensate(mut self) -> Self {
        self.compensate = true;
        self
    }

    /// The step has a compensation, and a successful compensation publishes
    /// the event `name` (which the role must declare in `publishes`).
    pub fn compensate_with(mut self, rollback_event: impl Into<String>) -> Self {
        self.compensate = true;
        self.rollback_event = Some(At::new(rollback_event));
        self
    }

    /// Once done, the step cannot be undone: a saga that fails after it
    /// compensates the steps after it, then escalates.
    pub fn irreversible(mut self) -> Self {
        self.irreversible = true;
        self
    }

    /// The step starts only when the event its predecessor published is
    /// processed by its subscribers (see [`GateSpec`]).
    pub fn gate(mut self, gate: GateSpec) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// A step's gate: it starts when every event named `event` that the
/// previous step published has been processed by all its subscribers (or
/// `quorum` of them), or — `within` after the previous step completed —
/// takes the `on_timeout` branch. The gate looks at the receipts every
/// `within / 20` (between 50 ms and 1 s); if the previous step published
/// no such event (it was skipped, or accepted by a decision), the gate
/// opens at its first look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GateSpec {
    /// The event name the previous step publishes.
    pub event: String,
    /// How many subscribers must have processed it (`None`: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// The deadline, from the previous step's completion.
    #[serde(with = "millis")]
    pub within: Duration,
    /// What happens at the deadline.
    #[serde(default)]
    pub on_timeout: GateTimeout,
}

impl GateSpec {
    /// Gated on all subscribers of `event` within `within`; on timeout, the
    /// step runs anyway ([`GateTimeout::Continue`]).
    pub fn new(event: impl Into<String>, within: Duration) -> Self {
        Self {
            event: event.into(),
            quorum: None,
            within,
            on_timeout: GateTimeout::Continue,
        }
    }

    /// Only `n` subscribers need to have processed it.
    pub fn quorum(mut self, n: u32) -> Self {
        self.quorum = Some(n);
        self
    }

    /// The branch taken at the deadline.
    pub fn on_timeout(mut self, branch: GateTimeout) -> Self {
        self.on_timeout = branch;
        self
    }
}

/// The branch a gated step takes when its gate's deadline passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GateTimeout {
    /// Run the step anyway (the step's record says the gate timed out).
    #[default]
    Continue,
    /// Skip the step, and go on with the next.
    Skip,
    /// Fail the step: the saga compensates.
    Compensate,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A validated chain or saga of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaDef {
    /// Its name.
    pub name: Name,
    /// What it is for.
    pub description: String,
    /// Its steps, in order.
    pub steps: Vec<StepDef>,
}

impl SagaDef {
    /// Whether a step declares a compensation (a saga), or none does (a
    /// chain).
    pub fn is_saga(&self) -> bool {
        self.steps.iter().any(|s| s.compensate)
    }

    /// The roles that run its steps.
    pub fn roles(&self) -> BTreeSet<&Name> {
        self.steps.iter().map(|s| &s.role).collect()
    }
}

/// A validated step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepDef {
    /// Its name, unique in the saga.
    pub name: Name,
    /// The role that runs it.
    pub role: Name,
    /// Whether it has a compensation.
    pub compensate: bool,
    /// The event a successful compensation publishes.
    pub rollback_event: Option<String>,
    /// Whether it cannot be undone.
    pub irreversible: bool,
    /// Its gate.
    pub gate: Option<GateSpec>,
}

/// Validates the declared sagas against the rest of the chart.
pub(crate) fn validate(
    specs: &[SagaSpec],
    inner: &Inner,
) -> Result<std::collections::BTreeMap<Name, SagaDef>, ChartError> {
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        let name = spec.name.name()?;
        let invalid = |reason: String, line: Option<usize>| ChartError::InvalidSaga {
            saga: name.to_string(),
            reason,
            line: line.or(spec.name.line),
        };
        if spec.steps.is_empty() {
            return Err(invalid("it has no steps".to_owned(), None));
        }
        let mut steps: Vec<StepDef> = Vec::with_capacity(spec.steps.len());
        for s in &spec.steps {
            let step = s.name.name()?;
            let role = s.role.name()?;
            let line = s.name.line;
            if steps.iter().any(|d| d.name == step) {
                return Err(invalid(format!("step `{step}` is declared twice"), line));
            }
            let Some(declared) = inner.roles.get(&role) else {
                return Err(invalid(
                    format!("step `{step}`: `{role}` is not a role of the chart (the principal runs no steps)"),
                    s.role.line,
                ));
            };
            if s.irreversible && s.compensate {
                return Err(invalid(
                    format!("step `{step}` is irreversible and has a compensation"),
                    line,
                ));
            }
            let publishes = |event: &str| {
                declared
                    .publishes
                    .iter()
                    .any(|p| super::events::matches(p, event))
            };
            if let Some(ev) = &s.rollback_event {
                super::events::check_name(&ev.value).map_err(|r| invalid(r, ev.line))?;
                if !publishes(&ev.value) {
                    return Err(invalid(
                        format!("step `{step}`: its rollback event `{}` is not in `{role}`'s `publishes`", ev.value),
                        ev.line,
                    ));
                }
            }
            if let Some(gate) = &s.gate {
                let Some(prev) = steps.last() else {
                    return Err(invalid(
                        format!("step `{step}` is first and has a gate (a gate waits on the previous step's event)"),
                        line,
                    ));
                };
                super::events::check_name(&gate.event).map_err(|r| invalid(r, line))?;
                let prev_role = &inner.roles[&prev.role];
                if !prev_role
                    .publishes
                    .iter()
                    .any(|p| super::events::matches(p, &gate.event))
                {
                    return Err(invalid(
                        format!(
                            "step `{step}`'s gate waits on `{}`, which `{}` (step `{}`) does not publish",
                            gate.event, prev.role, prev.name
                        ),
                        line,
                    ));
                }
                if gate.quorum == Some(0) || gate.within.is_zero() {
                    return Err(invalid(
                        format!("step `{step}`'s gate needs a quorum and a deadline above zero"),
                        line,
                    ));
                }
            }
            steps.push(StepDef {
                name: step,
                role,
                compensate: s.compensate,
                rollback_event: s.rollback_event.as_ref().map(|e| e.value.clone()),
                irreversible: s.irreversible,
                gate: s.gate.clone(),
            });
        }
        let def = SagaDef {
            name: name.clone(),
            description: spec.description.clone(),
            steps,
        };
        if out.insert(name.clone(), def).is_some() {
            return Err(ChartError::Duplicate {
                what: "saga",
                name: name.to_string(),
                line: spec.name.line,
            });
        }
    }
    Ok(out)
}
