//! The [`Agent`] trait: the application's code, one delivery at a time.
//!
//! The runtime calls an agent for each task delegated to its role
//! ([`Agent::on_task`]), when every subtask it delegated for a task has
//! finished ([`Agent::on_subtasks_done`]), for results of tasks it delegated
//! outside any task ([`Agent::on_result`]), and for other messages addressed
//! to it ([`Agent::on_message`]). Each call gets a [`Context`] with the
//! role's identity, the chart, and the handles of the patterns.
//!
//! An agent returns `Ok` (the delivery is acknowledged and its staged effects
//! are committed together with the completion record, exactly once) or an
//! [`AgentError`]: a *transient* one is retried with backoff and
//! dead-lettered when the attempts run out; a *permanent* one fails the task
//! at once and the delegator sees why.
//!
//! ```
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use async_trait::async_trait;
//! use serde_json::json;
//!
//! /// The CTO splits a feature into two subtasks and completes when both are done.
//! struct Cto;
//!
//! #[async_trait]
//! impl Agent for Cto {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.delegate("backend", TaskSpec::new(format!("API for: {}", task.title)).sla_minutes(120)).await?;
//!         cx.delegate("frontend", TaskSpec::new(format!("UI for: {}", task.title))).await?;
//!         Ok(Outcome::AwaitSubtasks)
//!     }
//! }
//!
//! /// A leaf agent does the work itself.
//! struct Backend;
//!
//! #[async_trait]
//! impl Agent for Backend {
//!     async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         if task.input.get("spec").is_none() {
//!             return Err(AgentError::permanent("no API spec given"));
//!         }
//!         Ok(Outcome::Complete(json!({"endpoints": ["/api/v2/analytics"]})))
//!     }
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{Envelope, TaskId};
use crate::hierarchy::{Decision, Escalation, EscalationOutcome};
use crate::name::Name;
use crate::peer::PeerMessage;

pub use crate::runtime::context::{Context, DelegateError, Delegation};

/// A boxed error, kept as the source of an [`AgentError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether an agent's failure may go away on retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Retried with backoff; dead-lettered when the attempts run out.
    Transient,
    /// Fails the task at once; the delegator sees the message.
    Permanent,
}

/// An agent's failure: transient (retried with backoff, dead-lettered when
/// the attempts run out) or permanent (fails the task at once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A failure that may go away on retry (an unavailable dependency, a rate
    /// limit). Retried with backoff; dead-lettered when the attempts run out.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure that retrying will not fix (bad input, a refused
    /// delegation). Fails the task at once; the delegator sees the message.
    #[error("{message}")]
    Permanent {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl AgentError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, error: impl Into<BoxError>) -> Self {
        match &mut self {
            Self::Transient { source, .. } | Self::Permanent { source, .. } => {
                *source = Some(error.into());
            }
        }
        self
    }

    /// Whether the failure is transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transient { .. } => ErrorKind::Transient,
            Self::Permanent { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the runtime retries it.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The message (without the source).
    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. } | Self::Permanent { message, .. } => message,
        }
    }
}

macro_rules! agent_error_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for AgentError {
            /// Retryable backend errors are transient, the rest permanent.
            fn from(e: $ty) -> Self {
                let message = e.to_string();
                if e.is_retryable() {
                    Self::Transient { message, source: Some(Box::new(e)) }
                } else {
                    Self::Permanent { message, source: Some(Box::new(e)) }
                }
            }
        }
    )*};
}

agent_error_from!(
    crate::store::StoreError,
    crate::transport::TransportError,
    crate::tools::ToolError,
    crate::peer::PeerError,
    DelegateError
);

/// What a task handler decided.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The task is done with this result; it goes to the delegator.
    Complete(Value),
    /// The task waits for the subtasks delegated in this call (at least one);
    /// [`Agent::on_subtasks_done`] decides when they have all finished.
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
    pub created_at: DateTime<Utc>,
}

/// How to delegate a task: title, input, type, SLA.
///
/// ```
/// use agentorg_core::agent::TaskSpec;
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
    pub status: crate::runtime::TaskStatus,
    /// Its result, if it completed.
    pub result: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The application's code for one role. See the [module docs](self).
///
/// Object-safe; hosted as `Arc<dyn Agent>`. Handlers may run concurrently
/// (per-role concurrency is an option of the runtime).
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// A task delegated to this role.
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError>;

    /// Every subtask delegated for `task` has finished. The default completes
    /// the task with the subtasks' results, or fails it if any subtask did not
    /// complete.
    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let _ = (cx, task);
        default_roll_up(results)
    }

    /// The result of a task this role delegated outside any task of its own.
    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        let _ = (cx, result);
        Ok(())
    }

    /// An escalation from a report (or passed up through one). The default
    /// passes it up to this role's manager; the principal sees what reaches
    /// the top and can answer it.
    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        let _ = (cx, escalation);
        Ok(EscalationOutcome::PassUp)
    }

    /// A decision on an escalation this role raised. The default accepts it.
    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        let _ = (cx, decision);
        Ok(())
    }

    /// A message from a declared peer. Exactly once, like a task; the default
    /// accepts and ignores it.
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let _ = (cx, message);
        Ok(())
    }

    /// A request from a declared peer, answered with the returned value (at
    /// most once: a request is not retried). The default refuses.
    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        let _ = cx;
        Err(AgentError::permanent(format!(
            "`{}` does not answer peer requests",
            request.to
        )))
    }

    /// Any other message addressed to this role. The default accepts and
    /// ignores it.
    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError> {
        let _ = (cx, message);
        Ok(())
    }
}

/// The default roll-up: complete with `{ "<task id>": result, … }` when every
/// subtask completed, else fail naming the first that did not.
pub fn default_roll_up(results: Vec<SubtaskResult>) -> Result<Outcome, AgentError> {
    use crate::runtime::TaskStatus;
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

#[async_trait]
impl<T: Agent + ?Sized> Agent for Arc<T> {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        (**self).on_task(cx, task).await
    }
    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        (**self).on_subtasks_done(cx, task, results).await
    }
    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        (**self).on_result(cx, result).await
    }
    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        (**self).on_escalation(cx, escalation).await
    }
    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        (**self).on_decision(cx, decision).await
    }
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        (**self).on_peer(cx, message).await
    }
    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        (**self).on_peer_request(cx, request).await
    }
    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError> {
        (**self).on_message(cx, message).await
    }
}

/// An agent made of one async function over the task, for leaf roles that
/// neither delegate nor need the context.
///
/// ```
/// use agentorg_core::agent::{agent_fn, Outcome};
/// use serde_json::json;
///
/// let writer = agent_fn(|task| async move {
///     Ok(Outcome::Complete(json!({"post": format!("Announcing: {}", task.title)})))
/// });
/// # let _ = writer;
/// ```
pub fn agent_fn<F, Fut>(f: F) -> FnAgent<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
{
    FnAgent(f)
}

/// The agent made by [`agent_fn`].
pub struct FnAgent<F>(F);

impl<F> fmt::Debug for FnAgent<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnAgent")
    }
}

#[async_trait]
impl<F, Fut> Agent for FnAgent<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
{
    async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        (self.0)(task).await
    }
}
