//! The saga document and how it moves: pure transitions that say what to
//! send next, so the handler, the gate timer and decisions share them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SagaDecision, SagaError};
use crate::chart::{GateSpec, SagaDef};
use crate::envelope::MessageId;
use crate::name::Name;

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaStatus {
    /// Running its steps forward (a step may be waiting on its gate).
    Running,
    /// Compensating completed steps, in reverse.
    Compensating,
    /// A step's outcome is unknown: escalated, waiting for a decision.
    InDoubt,
    /// A compensation failed (dead-lettered): escalated, waiting for a
    /// decision (or a requeue of its dead letter).
    CompensationFailed,
    /// Compensation reached an irreversible step: escalated, waiting for a
    /// decision.
    Blocked,
    /// Every step completed (or was skipped).
    Completed,
    /// A step failed and every completed step with a compensation was
    /// compensated.
    Compensated,
    /// Given up by a decision (accepted as failed).
    Failed,
}

impl SagaStatus {
    /// Whether the saga is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// Whether it waits for a decision.
    pub fn needs_decision(self) -> bool {
        matches!(
            self,
            Self::InDoubt | Self::CompensationFailed | Self::Blocked
        )
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Waiting for its gate.
    Waiting,
    /// Sent to its role.
    Running,
    /// Done, with a result.
    Completed,
    /// Failed with a permanent error (or by a decision).
    Failed,
    /// Outcome unknown (its attempts ran out): escalated.
    InDoubt,
    /// Skipped (its gate timed out with the `skip` branch).
    Skipped,
    /// Its compensation is sent to its role.
    Compensating,
    /// Compensated.
    Compensated,
    /// Its compensation failed (dead-lettered).
    CompensationFailed,
}

/// One step of a saga document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepRecord {
    /// The step's name.
    pub name: Name,
    /// The role that runs it.
    pub role: Name,
    /// Where it stands.
    pub status: StepStatus,
    /// Whether it has a compensation: recorded with the saga, before the
    /// step runs.
    pub compensate: bool,
    /// The event its compensation publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_event: Option<String>,
    /// Whether it cannot be undone.
    #[serde(default)]
    pub irreversible: bool,
    /// Its gate, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateState>,
    /// How many times it was sent to its role (a decision to retry sends it
    /// again).
    #[serde(default)]
    pub runs: u32,
    /// How many times its compensation was sent.
    #[serde(default)]
    pub compensation_runs: u32,
    /// Its result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, is in doubt, or its compensation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it last started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When it last finished (completed, failed, compensated, …).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::option"
    )]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A gated step's gate: its declaration, the events it waits on, and its
/// deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GateState {
    /// As declared.
    pub spec: GateSpec,
    /// The ids of the gate's events that the previous step published.
    #[serde(default)]
    pub events: Vec<MessageId>,
    /// When the branch is taken.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::option"
    )]
    pub deadline: Option<DateTime<Utc>>,
    /// Whether the deadline passed before the receipts were in.
    #[serde(default)]
    pub timed_out: bool,
}

/// What the saga waits for someone to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingDecision {
    /// The step concerned.
    pub step: usize,
    /// Why (the step's error, the compensation's, the irreversible step).
    pub reason: String,
    /// Who has it now: a manager up the step role's chain, or the
    /// principal.
    pub escalated_to: Name,
}

/// A rollback event a compensation published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RollbackRecord {
    /// The compensated step.
    pub step: Name,
    /// The event's name.
    pub event: String,
    /// The event's id.
    pub id: MessageId,
}

/// A saga (or chain) run: the document at `agentorg/<org>/sagas/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SagaRecord {
    /// Its id.
    pub saga_id: MessageId,
    /// The chart's saga it runs.
    pub name: Name,
    /// Where it stands.
    pub status: SagaStatus,
    /// Who started it.
    pub started_by: Name,
    /// What it was started with (every step receives it).
    pub input: Value,
    /// Its steps, as declared when it started.
    pub steps: Vec<StepRecord>,
    /// The steps whose compensation completed, in the order they ran.
    #[serde(default)]
    pub compensations: Vec<Name>,
    /// The compensations still to run, in order (step indexes).
    #[serde(default)]
    pub plan: Vec<usize>,
    /// The rollback events its compensations published.
    #[serde(default)]
    pub rollback_events: Vec<RollbackRecord>,
    /// What waits for a decision, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingDecision>,
    /// Why compensation stopped short, if an irreversible step stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<Name>,
    /// The step whose failure started the compensation, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<usize>,
    /// When it started.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// What a transition asks to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send step `i` to its role (run number `runs`).
    Run(usize),
    /// Arm step `i`'s gate timer.
    Gate(usize),
    /// Send step `i`'s compensation to its role.
    Compensate(usize),
    /// Escalate step `i` (the pending decision says to whom).
    Escalate(usize),
    /// Nothing more.
    Nothing,
}

impl SagaRecord {
    /// A new run of `def` with `input`, its first step running.
    pub(crate) fn start(
        id: MessageId,
        def: &SagaDef,
        started_by: Name,
        input: Value,
        now: DateTime<Utc>,
    ) -> (Self, Next) {
        let steps = def
            .steps
            .iter()
            .map(|s| StepRecord {
                name: s.name.clone(),
                role: s.role.clone(),
                status: StepStatus::Pending,
                compensate: s.compensate,
                rollback_event: s.rollback_event.clone(),
                irreversible: s.irreversible,
                gate: s.gate.clone().map(|spec| GateState {
                    spec,
                    events: Vec::new(),
                    deadline: None,
                    timed_out: false,
                }),
                runs: 0,
                compensation_runs: 0,
                result: None,
                error: None,
                started_at: None,
                finished_at: None,
            })
            .collect();
        let mut rec = Self {
            saga_id: id,
            name: def.name.clone(),
            status: SagaStatus::Running,
            started_by,
            input,
            steps,
            compensations: Vec::new(),
            plan: Vec::new(),
            rollback_events: Vec::new(),
            pending: None,
            blocked_by: None,
            failed_step: None,
            created_at: now,
            updated_at: now,
        };
        let next = rec.run(0, now);
        (rec, next)
    }

    /// The step at `i`, if any.
    pub fn step(&self, i: usize) -> Option<&StepRecord> {
        self.steps.get(i)
    }

    /// The step named `name`, with its index.
    pub fn step_named(&self, name: &str) -> Option<(usize, &StepRecord)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.name.as_str() == name)
    }

    /// The results of the steps before `i` that completed, by name.
    pub(crate) fn results_before(&self, i: usize) -> serde_json::Map<String, Value> {
        self.steps
            .iter()
            .take(i)
            .filter_map(|s| Some((s.name.to_string(), s.result.clone()?)))
            .collect()
    }

    /// Sends step `i` to its role.
    fn run(&mut self, i: usize, now: DateTime<Utc>) -> Next {
        let Some(step) = self.steps.get_mut(i) else {
            return Next::Nothing;
        };
        step.status = StepStatus::Running;
        step.runs += 1;
        step.started_at = Some(now);
        step.error = None;
        self.status = SagaStatus::Running;
        self.pending = None;
        self.updated_at = now;
        Next::Run(i)
    }

    /// Moves past step `i - 1`: step `i` runs (or waits on its gate), or
    /// the saga is complete.
    fn advance(&mut self, i: usize, published: &[(String, MessageId)], now: DateTime<Utc>) -> Next {
        self.updated_at = now;
        let Some(step) = self.steps.get_mut(i) else {
            self.status = SagaStatus::Completed;
            self.pending = None;
            return Next::Nothing;
        };
        if let Some(gate) = &mut step.gate {
            gate.events = published
                .iter()
                .filter(|(name, _)| *name == gate.spec.event)
                .map(|(_, id)| id.clone())
                .collect();
            let within = chrono::Duration::from_std(gate.spec.within)
                .unwrap_or_else(|_| chrono::Duration::days(365));
            gate.deadline = Some(now + within);
            step.status = StepStatus::Waiting;
            self.status = SagaStatus::Running;
            return Next::Gate(i);
        }
        self.run(i, now)
    }

    /// Step `i`'s gate opened (its events were processed): it runs.
    pub(crate) fn gate_open(&mut self, i: usize, now: DateTime<Utc>) -> Next {
        self.run(i, now)
    }

    /// Step `i`'s gate passed its deadline: its branch.
    pub(crate) fn gate_timed_out(&mut self, i: usize, now: DateTime<Utc>) -> Next {
        use crate::chart::GateTimeout;
        let Some(step) = self.steps.get_mut(i) else {
            return Next::Nothing;
        };
        let branch = step.gate.as_mut().map(|g| {
            g.timed_out = true;
            g.spec.on_timeout
        });
        match branch.unwrap_or_default() {
            GateTimeout::Continue => self.run(i, now),
            GateTimeout::Skip => {
                step.status = StepStatus::Skipped;
                step.finished_at = Some(now);
                self.advance(i + 1, &[], now)
            }
            GateTimeout::Compensate => {
                self.failed(i, "its gate timed out (branch: compensate)".to_owned(), now)
            }
        }
    }

    /// Step `i` completed with `result`, having published `published`
    /// (event name and id): the next step.
    pub(crate) fn completed(
        &mut self,
        i: usize,
        result: Value,
        published: &[(String, MessageId)],
        now: DateTime<Utc>,
    ) -> Next {
        let Some(step) = self.steps.get_mut(i) else {
            return Next::Nothing;
        };
        step.status = StepStatus::Completed;
        step.result = Some(result);
        step.error = None;
        step.finished_at = Some(now);
        self.advance(i + 1, published, now)
    }

    /// Step `i` failed for good: compensate what is done, in reverse (the
    /// step itself first, if it has a compensation: it may have partly
    /// happened).
    pub(crate) fn failed(&mut self, i: usize, error: String, now: DateTime<Utc>) -> Next {
        let Some(step) = self.steps.get_mut(i) else {
            return Next::Nothing;
        };
        step.status = StepStatus::Failed;
        step.error = Some(error);
        step.finished_at = Some(now);
        self.updated_at = now;
        self.pending = None;
        self.failed_step = Some(i);
        let mut plan = Vec::new();
        // Compensated too if it ran at all (it may have partly happened);
        // not a step whose gate timed out before it ran.
        if self.steps[i].compensate && self.steps[i].runs > 0 {
            plan.push(i);
        }
        for j in (0..i).rev() {
            let s = &self.steps[j];
            if s.status != StepStatus::Completed {
                continue;
            }
            if s.irreversible {
                self.blocked_by = Some(s.name.clone());
                break;
            }
            if s.compensate {
                plan.push(j);
            }
        }
        self.plan = plan;
        self.next_compensation(now)
    }

    /// Sends the next planned compensation, or ends the saga compensated
    /// (or blocked by an irreversible step: escalated).
    fn next_compensation(&mut self, now: DateTime<Utc>) -> Next {
        self.updated_at = now;
        if self.plan.is_empty() {
            if let Some(by) = self.blocked_by.clone() {
                self.status = SagaStatus::Blocked;
                let failed = self.failed_step.unwrap_or(0);
                return self.escalate(
                    failed,
                    format!("compensation stops at irreversible step `{by}`"),
                );
            }
            self.status = SagaStatus::Compensated;
            return Next::Nothing;
        }
        let j = self.plan.remove(0);
        self.status = SagaStatus::Compensating;
        // A plan entry naming no step (a document edited by hand) is skipped.
        let Some(step) = self.steps.get_mut(j) else {
            return self.next_compensation(now);
        };
        step.status = StepStatus::Compensating;
        step.compensation_runs += 1;
        step.started_at = Some(now);
        Next::Compensate(j)
    }

    /// Step `j`'s compensation completed (having published `rollback`).
    pub(crate) fn compensated(
        &mut self,
        j: usize,
        rollback: Option<(String, MessageId)>,
        now: DateTime<Utc>,
    ) -> Next {
        let Some(step) = self.steps.get_mut(j) else {
            return Next::Nothing;
        };
        step.status = StepStatus::Compensated;
        step.error = None;
        step.finished_at = Some(now);
        let name = step.name.clone();
        if let Some((event, id)) = rollback {
            self.rollback_events.push(RollbackRecord {
                step: name.clone(),
                event,
                id,
            });
        }
        self.compensations.push(name);
        self.pending = None;
        self.next_compensation(now)
    }

    /// Step `i`'s outcome is unknown: in doubt, escalated.
    pub(crate) fn in_doubt(&mut self, i: usize, reason: String, now: DateTime<Utc>) -> Next {
        let Some(step) = self.steps.get_mut(i) else {
            return Next::Nothing;
        };
        step.status = StepStatus::InDoubt;
        step.error = Some(reason.clone());
        step.finished_at = Some(now);
        self.status = SagaStatus::InDoubt;
        self.updated_at = now;
        self.escalate(i, reason)
    }

    /// Step `j`'s compensation failed for good: escalated.
    pub(crate) fn compensation_failed(
        &mut self,
        j: usize,
        reason: String,
        now: DateTime<Utc>,
    ) -> Next {
        let Some(step) = self.steps.get_mut(j) else {
            return Next::Nothing;
        };
        step.status = StepStatus::CompensationFailed;
        step.error = Some(reason.clone());
        step.finished_at = Some(now);
        self.status = SagaStatus::CompensationFailed;
        self.updated_at = now;
        self.escalate(j, reason)
    }

    /// A dead-lettered run of in-doubt step `i` was requeued: it is running
    /// again (the same run).
    pub(crate) fn run_requeued(&mut self, i: usize, now: DateTime<Utc>) {
        if let Some(step) = self.steps.get_mut(i) {
            if step.status == StepStatus::InDoubt {
                step.status = StepStatus::Running;
                step.error = None;
                step.started_at = Some(now);
                self.status = SagaStatus::Running;
                self.pending = None;
                self.updated_at = now;
            }
        }
    }

    /// A dead-lettered compensation of step `j` was requeued: it is
    /// compensating again.
    pub(crate) fn compensation_requeued(&mut self, j: usize, now: DateTime<Utc>) {
        if let Some(step) = self.steps.get_mut(j) {
            if step.status == StepStatus::CompensationFailed {
                step.status = StepStatus::Compensating;
                step.started_at = Some(now);
                self.status = SagaStatus::Compensating;
                self.pending = None;
                self.updated_at = now;
            }
        }
    }

    /// Records a decision pending on step `i`. Its `escalated_to` is
    /// `started_by` until the commit sets it to the manager of the step's
    /// role ([`transition`](super::ops::transition) knows the chart).
    fn escalate(&mut self, i: usize, reason: String) -> Next {
        self.pending = Some(PendingDecision {
            step: i,
            reason,
            escalated_to: self.started_by.clone(),
        });
        Next::Escalate(i)
    }

    /// Applies `decision` to the pending decision.
    pub(crate) fn decide(
        &mut self,
        decision: &SagaDecision,
        now: DateTime<Utc>,
    ) -> Result<Next, SagaError> {
        let Some(pending) = self.pending.clone() else {
            return Err(SagaError::NoDecisionPending {
                saga: self.saga_id.clone(),
            });
        };
        let i = pending.step;
        let invalid = |why: &str| SagaError::InvalidDecision {
            saga: self.saga_id.clone(),
            reason: why.to_owned(),
        };
        let Some(step) = self.steps.get(i) else {
            return Err(invalid("the pending decision names no step of the saga"));
        };
        let irreversible = step.irreversible;
        let next = match (self.status, decision) {
            (SagaStatus::InDoubt, SagaDecision::Retry) => self.run(i, now),
            (SagaStatus::InDoubt, SagaDecision::Compensate) => {
                if irreversible {
                    return Err(invalid("the step in doubt is irreversible"));
                }
                self.failed(i, "in doubt; decided: compensate".to_owned(), now)
            }
            (SagaStatus::InDoubt, SagaDecision::Accept(result)) => {
                self.pending = None;
                self.completed(i, result.clone(), &[], now)
            }
            (SagaStatus::CompensationFailed, SagaDecision::Retry | SagaDecision::Compensate) => {
                self.plan.insert(0, i);
                self.pending = None;
                self.next_compensation(now)
            }
            (SagaStatus::CompensationFailed, SagaDecision::Accept(_)) => {
                // Accepted as compensated (undone by other means).
                self.compensated(i, None, now)
            }
            (SagaStatus::Blocked, SagaDecision::Retry | SagaDecision::Compensate) => {
                return Err(invalid(
                    "compensation already ran back to an irreversible step: only `accept` (the saga ends failed) applies",
                ))
            }
            (SagaStatus::Blocked, SagaDecision::Accept(_)) => {
                self.status = SagaStatus::Failed;
                self.pending = None;
                self.updated_at = now;
                Next::Nothing
            }
            _ => return Err(invalid("the saga waits for no such decision")),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::{OrgChart, RoleSpec, SagaSpec, StepSpec};

    fn def(irreversible_first: bool) -> SagaDef {
        let first = if irreversible_first {
            StepSpec::new("a", "x").irreversible()
        } else {
            StepSpec::new("a", "x").compensate()
        };
        let chart = OrgChart::builder("o")
            .principal("p")
            .role(RoleSpec::new("x").reports_to("p"))
            .saga(
                SagaSpec::new("s")
                    .step(first)
                    .step(StepSpec::new("b", "x").compensate())
                    .step(StepSpec::new("c", "x")),
            )
            .build()
            .unwrap();
        chart.saga("s").unwrap().clone()
    }

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn a_failure_compensates_the_completed_steps_in_reverse() {
        let now = Utc::now();
        let (mut r, next) =
            SagaRecord::start(MessageId::new(), &def(false), n("p"), Value::Null, now);
        assert_eq!(next, Next::Run(0));
        assert_eq!(r.completed(0, Value::Null, &[], now), Next::Run(1));
        assert_eq!(r.completed(1, Value::Null, &[], now), Next::Run(2));
        assert_eq!(r.failed(2, "no".into(), now), Next::Compensate(1));
        assert_eq!(r.compensated(1, None, now), Next::Compensate(0));
        assert_eq!(r.compensated(0, None, now), Next::Nothing);
        assert_eq!(r.status, SagaStatus::Compensated);
        assert_eq!(r.compensations, [n("b"), n("a")]);
    }

    #[test]
    fn an_irreversible_step_stops_compensation_and_escalates() {
        let now = Utc::now();
        let (mut r, _) = SagaRecord::start(MessageId::new(), &def(true), n("p"), Value::Null, now);
        r.completed(0, Value::Null, &[], now);
        r.completed(1, Value::Null, &[], now);
        assert_eq!(r.failed(2, "no".into(), now), Next::Compensate(1));
        assert_eq!(r.compensated(1, None, now), Next::Escalate(2));
        assert_eq!(r.status, SagaStatus::Blocked);
        assert_eq!(r.pending.as_ref().map(|p| p.step), Some(2));
        for d in [SagaDecision::Compensate, SagaDecision::Retry] {
            assert!(r
                .decide(&d, now)
                .is_err_and(|e| matches!(e, SagaError::InvalidDecision { .. })));
        }
        assert_eq!(
            r.decide(&SagaDecision::Accept(Value::Null), now).unwrap(),
            Next::Nothing
        );
        assert_eq!(r.status, SagaStatus::Failed);
    }

    /// A gated step whose gate times out with `compensate` never ran: it is
    /// not compensated, the step before it is.
    #[test]
    fn a_gate_timeout_compensates_what_ran() {
        use crate::chart::{GateSpec, GateTimeout};
        let now = Utc::now();
        let chart = OrgChart::builder("o")
            .principal("p")
            .role(RoleSpec::new("x").reports_to("p").publishes(["e"]))
            .saga(
                SagaSpec::new("s")
                    .step(StepSpec::new("a", "x").compensate())
                    .step(
                        StepSpec::new("b", "x").compensate().gate(
                            GateSpec::new("e", std::time::Duration::from_secs(1))
                                .on_timeout(GateTimeout::Compensate),
                        ),
                    ),
            )
            .build()
            .unwrap();
        let def = chart.saga("s").unwrap();
        let (mut r, _) = SagaRecord::start(MessageId::new(), def, n("p"), Value::Null, now);
        assert_eq!(r.completed(0, Value::Null, &[], now), Next::Gate(1));
        assert_eq!(r.gate_timed_out(1, now), Next::Compensate(0));
        assert_eq!(r.compensated(0, None, now), Next::Nothing);
        assert_eq!(r.compensations, [n("a")]);
        assert_eq!(r.steps[1].status, StepStatus::Failed);
    }

    #[test]
    fn an_in_doubt_step_waits_for_a_decision() {
        let now = Utc::now();
        let (mut r, _) = SagaRecord::start(MessageId::new(), &def(false), n("p"), Value::Null, now);
        assert_eq!(r.in_doubt(0, "timed out".into(), now), Next::Escalate(0));
        assert!(r.status.needs_decision());
        assert_eq!(r.decide(&SagaDecision::Retry, now).unwrap(), Next::Run(0));
        assert_eq!(r.steps[0].runs, 2);
        assert!(r.decide(&SagaDecision::Retry, now).is_err());
    }
}
