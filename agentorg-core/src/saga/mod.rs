//! Chains and sagas: declared sequences of steps, each run by a role; step
//! *n + 1* starts on step *n*'s completion (never on the order in which
//! events of different subjects arrive), and a saga's failure compensates
//! the completed steps in reverse.
//!
//! The chart declares them ([`SagaSpec`](crate::chart::SagaSpec), or
//! `[sagas.<name>]` in TOML): the steps in order, the role of each, whether
//! a step has a compensation (and the rollback event its compensation
//! publishes), whether it is irreversible, and a step's gate on its
//! predecessor's event receipts. A saga whose steps declare no compensation
//! is a chain.
//!
//! * **A run is a document**, `agentorg/<org>/sagas/<id>` ([`SagaRecord`]):
//!   each step's status, runs, result or error; the compensations in the
//!   order they ran; the rollback events published; the decision it waits
//!   for. Started by
//!   [`Principal::start_saga`](crate::runtime::Principal::start_saga) or a
//!   role's [`Context::start_saga`](crate::runtime::Context::start_saga)
//!   (the principal, or the role of the first step), it moves by messages
//!   on each role's saga channel (`<org>.agent.<role>.saga.<from>`): the
//!   commit that settles a step changes the document (compare-and-set)
//!   and sends the next step in the same commit, through the kernel's
//!   outbox. So every step and compensation is claimed, retried and
//!   dead-lettered like a task, its committed state changes once, and a
//!   process killed mid-saga resumes it — forward or compensating — when
//!   the role is hosted again.
//! * **Steps** run in the role's
//!   [`Agent::on_saga_step`](crate::agent::Agent::on_saga_step), with the
//!   saga's input, the results of the steps before, and a stable
//!   idempotency key per (saga, step, run or compensate) for side effects
//!   outside the store, which are at-least-once.
//! * **Failure.** A permanent error fails the step: its compensation (if it
//!   has one: a step can partly happen and still fail) and then every
//!   completed step's, in reverse, run in the roles'
//!   [`Agent::on_compensate`](crate::agent::Agent::on_compensate); each
//!   successful compensation publishes its rollback event
//!   (`deploy.rollback`), which any role may subscribe to. An irreversible
//!   step stops the compensation: the saga is [`Blocked`](SagaStatus::Blocked)
//!   and escalates.
//! * **In doubt.** A step whose attempts ran out (transient errors, handler
//!   timeouts, lost leases) has an unknown outcome: it is not compensated
//!   blindly but escalated up its role's reporting line — the manager's
//!   [`Agent::on_saga_escalation`](crate::agent::Agent::on_saga_escalation)
//!   decides ([`SagaDecision`]: retry, compensate or accept) or passes it
//!   up (as does a manager whose decision does not apply or who fails), and
//!   at the top the principal decides
//!   ([`Principal::decide_saga`](crate::runtime::Principal::decide_saga)).
//! * **A failing compensation** is retried, then dead-lettered: the saga
//!   shows [`CompensationFailed`](SagaStatus::CompensationFailed) and
//!   escalates; requeuing its (latest) dead letter, or a decision, resumes
//!   it. A requeued dead letter of an in-doubt step runs it again the same
//!   way.
//! * **Gates.** A step may wait until the events its predecessor published
//!   under the gate's name are processed by all their subscribers (or a
//!   quorum), with a deadline (a kernel timer) and a branch for the
//!   timeout: run anyway, skip the step, or compensate.
//! * **Visible.** [`Principal::sagas`](crate::runtime::Principal::sagas)
//!   lists the runs (running, compensating, in doubt, …) with their steps.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task};
//! use agentorg_core::chart::{OrgChart, RoleSpec, SagaSpec, StepSpec};
//! use agentorg_core::runtime::Org;
//! use agentorg_core::saga::{SagaStatus, SagaStep};
//! use async_trait::async_trait;
//! use serde_json::{json, Value};
//!
//! struct Devops;
//! #[async_trait]
//! impl Agent for Devops {
//!     async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         Ok(Outcome::Complete(Value::Null))
//!     }
//!     async fn on_saga_step(&self, _cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
//!         match step.step.as_str() {
//!             "build" => Ok(json!({ "built": step.input["version"] })),
//!             "deploy" => Ok(json!({ "deployed": step.input["version"] })),
//!             _ => Err(AgentError::permanent("smoke test failed: /health returns 503")),
//!         }
//!     }
//!     async fn on_compensate(&self, _cx: &Context, step: SagaStep) -> Result<(), AgentError> {
//!         // Undo `deploy` (step.result holds what it did); safe to repeat
//!         // with step.idempotency_key.
//!         assert_eq!(step.step.as_str(), "deploy");
//!         Ok(())
//!     }
//! }
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("devops").reports_to("founder").publishes(["deploy.rollback"]))
//!     // A chain: no step has a compensation.
//!     .saga(SagaSpec::new("build").step(StepSpec::new("build", "devops")).step(StepSpec::new("deploy", "devops")))
//!     // A saga: the deploy is undone if the smoke test fails.
//!     .saga(SagaSpec::new("cicd")
//!         .step(StepSpec::new("deploy", "devops").compensate_with("deploy.rollback"))
//!         .step(StepSpec::new("smoke_test", "devops")))
//!     .build()?;
//! let org = Org::builder(chart).agent("devops", Devops).start().await?;
//! let founder = org.principal();
//! let chain = founder.start_saga("build", &json!({ "version": "v2.3.1" })).await?;
//! let chain = founder.saga(&chain).wait(Duration::from_secs(5)).await?;
//! assert_eq!(chain.status, SagaStatus::Completed);
//! assert_eq!(chain.steps[1].result, Some(json!({ "deployed": "v2.3.1" })));
//! let id = founder.start_saga("cicd", &json!({ "version": "v2.3.1" })).await?;
//! let saga = founder.saga(&id).wait(Duration::from_secs(5)).await?;
//! assert_eq!(saga.status, SagaStatus::Compensated);
//! assert_eq!(saga.compensations, ["deploy"]);
//! assert_eq!(saga.rollback_events[0].event, "deploy.rollback");
//! org.shutdown().await;
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{agent_error_from, AgentError, Context, Pattern, Registry};

mod handler;
mod ops;
mod records;

pub use ops::SagaWatch;

/// The channel of each role that saga messages come on:
/// `<org>.agent.<role>.saga.<from>`.
pub const CHANNEL: &str = "saga";
pub use records::{
    GateState, PendingDecision, RollbackRecord, SagaRecord, SagaStatus, StepRecord, StepStatus,
};

/// The saga pattern, as registered with the kernel: the handler of every
/// role's saga channel, and the gates' timer. `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Sagas;

impl Pattern for Sagas {
    fn name(&self) -> &'static str {
        "sagas"
    }

    fn register(&self, registry: &mut Registry) {
        registry
            .handler(handler::SagaHandler)
            .timer(ops::GATE_TIMER, ops::GateTimer);
    }
}

/// The saga pattern's calls into a role's code.
///
/// Implemented for every `Agent` by the agent layer (implement `Agent`);
/// the pattern's handler finds it among a hosted role's application objects
/// as `Arc<dyn SagaCallbacks>`.
#[async_trait]
pub trait SagaCallbacks: Send + Sync + 'static {
    /// Runs a step: its result goes to the saga document (and to the later
    /// steps). A permanent error fails the step (the saga compensates); a
    /// transient one is retried, and when the attempts run out the step is
    /// in doubt.
    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError>;

    /// Undoes a step (`step.result` is what it returned, if it completed).
    /// Retried on failure, then dead-lettered and escalated.
    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError>;

    /// A saga of a role under this one waits for a decision: `Some`
    /// decides, `None` passes it up the chain of command (to the principal
    /// at the top).
    async fn on_saga_escalation(
        &self,
        cx: &Context,
        escalation: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError>;
}

/// A step or compensation, as its role receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaStep {
    /// The run's id.
    pub saga_id: MessageId,
    /// The chart's saga.
    pub saga: Name,
    /// The step's name.
    pub step: Name,
    /// Its index (0-based).
    pub index: usize,
    /// The saga's input.
    pub input: Value,
    /// The results of the completed steps before it, by step name.
    pub results: serde_json::Map<String, Value>,
    /// For a compensation: what the step returned, if it completed.
    pub result: Option<Value>,
    /// The same for every attempt and run of this step's work (or of its
    /// compensation): `<saga>/<step>/run` or `<saga>/<step>/compensate`.
    pub idempotency_key: String,
    /// Which run of the step this is (a decision to retry runs it again).
    pub run: u32,
}

/// A saga waiting for a decision, as a manager receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaEscalation {
    /// The run's id.
    pub saga_id: MessageId,
    /// The step concerned.
    pub step: Name,
    /// The role that runs it.
    pub role: Name,
    /// What the saga waits on (in doubt, compensation failed, blocked).
    pub status: SagaStatus,
    /// Why.
    pub reason: String,
    /// The whole document.
    pub record: SagaRecord,
}

/// A decision on a saga that waits for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "result")]
#[non_exhaustive]
pub enum SagaDecision {
    /// Run the step in doubt, or the failed compensation, again (not for a
    /// blocked saga: its compensations ran already).
    Retry,
    /// Compensate: the step in doubt (it may have happened) and the
    /// completed ones before it, in reverse.
    Compensate,
    /// Accept: the step in doubt as completed with this result; a failed
    /// compensation as done by other means; a blocked saga as failed (the
    /// only decision a blocked saga takes).
    Accept(Value),
}

/// A saga operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The chart declares no saga by this name.
    #[error("the chart declares no saga `{saga}`")]
    UnknownSaga {
        /// The name given.
        saga: String,
    },
    /// No run with this id is recorded.
    #[error("no saga run {saga} is recorded")]
    Unknown {
        /// The run's id.
        saga: MessageId,
    },
    /// The chart does not let this role do it (start: the principal and
    /// the first step's role; decide: the principal and the managers above
    /// the step's role).
    #[error("`{role}` may not {action}: {rule}")]
    NotAllowed {
        /// Who asked.
        role: String,
        /// What it asked.
        action: String,
        /// The chart's rule.
        rule: String,
    },
    /// The run waits for no decision.
    #[error("saga {saga} waits for no decision")]
    NoDecisionPending {
        /// The run's id.
        saga: MessageId,
    },
    /// This decision does not apply to what the run waits for.
    #[error("saga {saga}: {reason}")]
    InvalidDecision {
        /// The run's id.
        saga: MessageId,
        /// Why.
        reason: String,
    },
    /// The input could not be encoded.
    #[error("saga input does not encode: {message}")]
    Encode {
        /// The serializer's message.
        message: String,
    },
    /// The store refused or failed (a conflict: another decision or step
    /// moved the run first — read it again).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl SagaError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable() || e.is_precondition_failure(),
            _ => false,
        }
    }
}

agent_error_from!(SagaError);
