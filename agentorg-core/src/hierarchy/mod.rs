//! Hierarchical delegation: task trees, roll-up, escalation, SLAs, batches.
//!
//! The first pattern of GenBrain's write-ups, and most of an org's work
//! (70% of theirs). A manager delegates tasks down the chart
//! ([`Context::delegate`]) — to a direct report, or to any role a chart
//! shortcut declares for the task's type — and anything else is refused
//! before it reaches the transport, with an error naming the rule.
//! Each task is a document ([`TaskRecord`]) written before its message is
//! sent; status changes are conditional writes that never leave a terminal
//! state. A manager that returns [`Outcome::AwaitSubtasks`] is called again
//! ([`Agent::on_subtasks_done`]) when every subtask has ended, and its result
//! rolls up to its own delegator; the whole tree reads back as GenBrain's
//! task-tree JSON ([`Principal::task_tree`]).
//!
//! * **Handles**: [`Principal::delegate`] returns a [`TaskHandle`] to await
//!   the result (with a timeout) or cancel the task and its open subtree. An
//!   idempotency key ([`TaskSpec::idempotency_key`]) never creates a second
//!   task.
//! * **Batches**: [`Context::delegate_batch`] delegates many tasks with at most
//!   `n` in flight; [`gather`] completes with every result, failures
//!   included.
//! * **Escalation**: [`Context::escalate`] goes to the manager; each level's
//!   [`Agent::on_escalation`] decides or passes it up, and the principal's
//!   [`inbox`][`Principal::inbox`] shows what reached the top. A decision
//!   ([`Principal::answer`]) flows back down to the agent that escalated
//!   ([`Agent::on_decision`]).
//! * **SLAs**: a task past its `sla_minutes` emits a
//!   `<org>.events.sla.breach` event (when a role of the chart subscribes to
//!   it) and escalates once to its delegator's manager (reason
//!   `sla_breach`).
//! * **Breakers**: a role's breaker opening escalates once to its manager,
//!   as an [`Escalation`] like any other (reason `breaker_open`; details:
//!   `role`, `consecutive_failures`, `until`, `alternate`).
//! * **Dead letters** are records to [list][`Principal::dead_letter_records`],
//!   [requeue][`Principal::requeue`] or [discard][`Principal::discard`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use agentorg_core::chart::OrgChart;
//! use agentorg_core::hierarchy::Decision;
//! use agentorg_core::hierarchy::TaskStatus;
//! use agentorg_core::runtime::Org;
//! use async_trait::async_trait;
//! use futures::StreamExt;
//!
//! /// The CEO splits the founder's request and escalates a budget question.
//! struct Ceo;
//! #[async_trait]
//! impl Agent for Ceo {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.delegate("cto", TaskSpec::new(format!("Technical part of {}", task.title)).sla_minutes(120)).await?;
//!         cx.escalate("budget above my limit", serde_json::json!({"usd": 25_000}))?;
//!         Ok(Outcome::AwaitSubtasks)
//!     }
//!     async fn on_decision(&self, _cx: &Context, decision: Decision) -> Result<(), AgentError> {
//!         assert_eq!(decision.decision["approved"], true);
//!         Ok(())
//!     }
//! }
//!
//! let chart = OrgChart::from_toml_str(r#"
//!     org = "demo"
//!     principal = "founder"
//!     roles.ceo.reports_to = "founder"
//!     roles.cto.reports_to = "ceo"
//! "#)?;
//! let org = Org::builder(chart)
//!     .agent("ceo", Ceo)
//!     .agent("cto", agent_fn(|_| async { Ok(Outcome::Complete(serde_json::json!("done"))) }))
//!     .start()
//!     .await?;
//! let founder = org.principal();
//! let task = founder.delegate("ceo", TaskSpec::new("Ship the dashboard")).await?;
//! // The escalation reaches the founder, who answers it.
//! let mut inbox = founder.inbox().await?;
//! let escalation = loop {
//!     let env = inbox.next().await.unwrap()?;
//!     if env.kind == agentorg_core::envelope::Kind::Escalation { break env }
//! };
//! founder.answer(&escalation, serde_json::json!({"approved": true})).await?;
//! assert_eq!(task.wait(Duration::from_secs(5)).await?.status, TaskStatus::Completed);
//! org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # In the kernel
//!
//! The pattern ([`Hierarchy`]) registers one handler of every role's inbox
//! (tasks, results, escalations, decisions, direct messages) and the timer
//! kind `sla`; it calls into a role's code through [`HierarchyCallbacks`],
//! which the agent layer implements for every `Agent`. Its operations join
//! the runtime's `Context` and `Principal` from this module.
//!
//! [`Context::delegate`]: crate::runtime::Context::delegate
//! [`Context::delegate_batch`]: crate::runtime::Context::delegate_batch
//! [`Context::escalate`]: crate::runtime::Context::escalate
//! [`Agent::on_subtasks_done`]: crate::agent::Agent::on_subtasks_done
//! [`Agent::on_escalation`]: crate::agent::Agent::on_escalation
//! [`Agent::on_decision`]: crate::agent::Agent::on_decision
//! [`Principal::delegate`]: crate::runtime::Principal::delegate
//! [`Principal::task_tree`]: crate::runtime::Principal::task_tree
//! [`Principal::answer`]: crate::runtime::Principal::answer
//! [`Principal::inbox`]: crate::runtime::Principal::inbox
//! [`Principal::dead_letter_records`]: crate::runtime::Principal::dead_letter_records
//! [`Principal::requeue`]: crate::runtime::Principal::requeue
//! [`Principal::discard`]: crate::runtime::Principal::discard

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::name::Name;
use crate::runtime::{to_value, Kernel, Pattern, Registry};
use crate::store::StoreError;
use crate::subject::Subject;

mod breaker;
mod delegate;
mod error;
mod handler;
mod ops;
mod principal;
mod records;
mod sla;
mod task;
mod tasks;
mod tree;

#[cfg(test)]
pub(crate) use breaker::BREAKER_OPEN_EVENT;
#[cfg(test)]
pub(crate) use sla::BREACH_EVENT;

/// The task `role` delegated with idempotency key `key`, if any (for
/// another pattern: a meeting's action items, taken with keys of their
/// own).
pub(crate) async fn task_by_key(
    kernel: &crate::runtime::Kernel,
    role: &crate::name::Name,
    key: &str,
) -> Result<Option<TaskRecord>, crate::store::StoreError> {
    let layout = records::Layout::of(kernel)?;
    let Some((entry, _)) = kernel
        .read::<records::IdempotencyEntry>(&layout.idempotency(role, key)?)
        .await?
    else {
        return Ok(None);
    };
    Ok(records::read_task(kernel, &entry.task_id)
        .await?
        .map(|(t, _)| t))
}

pub use delegate::Delegation;
pub use error::DelegateError;
pub use principal::{TaskHandle, WaitError};
pub use records::{BreakerRecord, BreakerState, TaskRecord, TaskStatus};
pub use task::{default_roll_up, HierarchyCallbacks, Outcome, SubtaskResult, Task, TaskSpec};
pub use tree::TaskTree;

/// The hierarchy pattern, as registered with the kernel: the handler of
/// every role's inbox and the SLA timers. `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Hierarchy;

impl Pattern for Hierarchy {
    fn name(&self) -> &'static str {
        "hierarchy"
    }

    fn register(&self, registry: &mut Registry) {
        registry
            .handler(handler::InboxHandler)
            .timer(sla::KIND, sla::SlaTimers);
    }
}

/// An escalation as a manager receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Escalation {
    /// Its id: the id of the first envelope that raised it; decisions carry
    /// it back.
    pub escalation_id: MessageId,
    /// The role that raised it.
    pub origin: Name,
    /// The roles it passed through, from the origin up to the sender.
    pub path: Vec<Name>,
    /// Why.
    pub reason: String,
    /// What the origin attached.
    #[serde(default)]
    pub details: Value,
    /// The task it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
}

/// What a manager does with an escalation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EscalationOutcome {
    /// Decide it: the decision flows back down to the role that raised it.
    Decide(Value),
    /// This level cannot decide: pass it to this role's manager (the
    /// principal at the top).
    PassUp,
}

/// A decision on an escalation, as the role that raised it receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// The escalation decided.
    pub escalation_id: MessageId,
    /// Who decided (a manager's role, or the principal).
    pub decided_by: Name,
    /// The decision.
    pub decision: Value,
    /// The escalation's reason.
    pub reason: String,
    /// The task it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The roles the escalation went up through, from the origin.
    pub path: Vec<Name>,
}

/// The decision `decided_by` makes on `escalation`, which came in the
/// envelope `received`: the envelope back to its sender, and the subject it
/// goes on. The decision flows down the path the escalation went up.
pub(crate) fn decision_back(
    kernel: &Kernel,
    escalation: Escalation,
    received: &Envelope,
    decided_by: &Name,
    decision: Value,
) -> Result<(Subject, Envelope), StoreError> {
    let down = Decision {
        escalation_id: escalation.escalation_id,
        decided_by: decided_by.clone(),
        decision,
        reason: escalation.reason,
        task_id: escalation.task_id,
        path: escalation.path,
    };
    let env = kernel
        .envelope(decided_by.clone(), Kind::Decision, to_value(&down)?)
        .with_to(received.from.clone())
        .with_causation(received.id.clone());
    Ok((kernel.subjects().inbox(&received.from, decided_by), env))
}

/// Completes with every subtask's outcome, failures included — for batches,
/// where one failure must not lose the others' results:
/// `{"completed": [{task_id, title, result}…], "failed": [{task_id, title,
/// status, error}…]}`.
///
/// ```
/// use agentorg_core::agent::{Outcome, SubtaskResult};
/// use agentorg_core::hierarchy::gather;
///
/// let Outcome::Complete(v) = gather(Vec::<SubtaskResult>::new()) else { unreachable!() };
/// assert_eq!(v["completed"].as_array().unwrap().len(), 0);
/// ```
pub fn gather(results: Vec<SubtaskResult>) -> Outcome {
    let (done, failed): (Vec<_>, Vec<_>) = results
        .into_iter()
        .partition(|r| r.status == TaskStatus::Completed);
    Outcome::Complete(json!({
        "completed": done.into_iter().map(|r| json!({
            "task_id": r.task_id, "title": r.title, "result": r.result,
        })).collect::<Vec<_>>(),
        "failed": failed.into_iter().map(|r| json!({
            "task_id": r.task_id, "title": r.title, "status": r.status, "error": r.error,
        })).collect::<Vec<_>>(),
    }))
}
