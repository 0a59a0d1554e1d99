//! Tasks as their assignees see them, what a handler decides about one, and
//! the calls the hierarchy makes into a role's code.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::TaskStatus;
use super::{Decision, Escalation, EscalationOutcome};
use crate::envelope::{Envelope, TaskId};
use crate::name::Name;
use crate::runtime::{AgentError, Context};

/// What a task handler decided.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The task is done with this result; it goes to the delegator.
    Complete(Value),
    /// The task waits for the subtasks delegated in this call (at least one);
    /// `on_subtasks_done` decides when they have all finished.
    AwaitSubtasks,
}

/// A task as its assignee sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Task {
    /// Its id (the id of the envelope that delegated it).
    pub id: TaskId,
    /// What to do.
    pub title: String,
    /// Its type, which delegation shortcuts are declared for.
    pub task_type: Option<String>,
    /// Its input.
    pub input: Value,
    /// The task it is a subtask of.
    pub parent: Option<TaskId>,
    /// Who delegated it.
    pub assigned_by: Name,
    /// Who it is assigned to (this role).
    pub assigned_to: Name,
    /// Its service-level objective, in minutes.
    pub sla_minutes: Option<u64>,
    /// When it was delegated.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
}

/// How to delegate a task: title, input, type, SLA.
///
/// ```
/// use agentorg_core::hierarchy::TaskSpec;
/// use serde_json::json;
///
/// let spec = TaskSpec::new("Create /api/v2/analytics endpoints")
///     .task_type("api_change")
///     .input(json!({"store": "clickhouse"}))
///     .sla_minutes(120);
/// assert_eq!(spec.sla_minutes, Some(120));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskSpec {
    /// What to do.
    pub title: String,
    /// Its type (delegation shortcuts are declared per type).
    pub task_type: Option<String>,
    /// Its input (stored with the task, so within the document limits).
    pub input: Value,
    /// Its service-level objective, in minutes.
    pub sla_minutes: Option<u64>,
    /// A key that makes the delegation idempotent: the same delegator with
    /// the same key never creates a second task (the first one's handle is
    /// returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl TaskSpec {
    /// A task with a title and no input.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            task_type: None,
            input: Value::Null,
            sla_minutes: None,
            idempotency_key: None,
        }
    }

    /// Sets the task type.
    pub fn task_type(mut self, task_type: impl Into<String>) -> Self {
        self.task_type = Some(task_type.into());
        self
    }

    /// Sets the input.
    pub fn input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Sets the SLA in minutes.
    pub fn sla_minutes(mut self, minutes: u64) -> Self {
        self.sla_minutes = Some(minutes);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The final state of a task this role delegated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubtaskResult {
    /// The subtask.
    pub task_id: TaskId,
    /// Its title.
    pub title: String,
    /// Who did it.
    pub assigned_to: Name,
    /// How it ended.
    pub status: TaskStatus,
    /// Its result, if it completed.
    pub result: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The default roll-up: complete with `{ "<task id>": result, … }` when every
/// subtask completed, else fail naming the first that did not.
pub fn default_roll_up(results: Vec<SubtaskResult>) -> Result<Outcome, AgentError> {
    if let Some(bad) = results.iter().find(|r| r.status != TaskStatus::Completed) {
        return Err(AgentError::permanent(format!(
            "subtask {} ({:?}, assigned to {}) ended {}{}",
            bad.task_id,
            bad.title,
            bad.assigned_to,
            bad.status,
            bad.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    let map = results
        .into_iter()
        .map(|r| (r.task_id.to_string(), r.result.unwrap_or(Value::Null)))
        .collect();
    Ok(Outcome::Complete(Value::Object(map)))
}

/// The hierarchy's calls into a role's code: a task delegated to it, its
/// subtasks' end, results, escalations, decisions and direct messages.
///
/// Implemented for every [`Agent`](crate::agent::Agent) by the agent layer
/// (implement `Agent`, which has a default for every method but `on_task`);
/// the hierarchy's handler finds it among a hosted role's application
/// objects as `Arc<dyn HierarchyCallbacks>`.
#[async_trait]
pub trait HierarchyCallbacks: Send + Sync + 'static {
    /// A task delegated to this role.
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError>;

    /// Every subtask delegated for `task` has finished.
    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError>;

    /// The result of a task this role delegated outside any task of its own.
    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError>;

    /// An escalation from a report (or passed up through one).
    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError>;

    /// A decision on an escalation this role raised.
    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError>;

    /// Any other message addressed to this role's inbox.
    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError>;
}
