//! The context a handler runs with, and delegation planning.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::docs::{TaskRecord, TaskStatus};
use super::{breaker, Shared};
use crate::agent::TaskSpec;
use crate::chart::{DelegationRefused, OrgChart};
use crate::envelope::{Envelope, Kind, MessageId, TaskId, TraceContext, TRACESTATE};
use crate::name::Name;
use crate::store::{validate_document, StateStore, StoreError, Write};
use crate::subject::Subject;
use crate::tools::ToolHost;
use crate::transport::TransportError;

/// A delegation could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelegateError {
    /// The chart does not let this role delegate to that one (for this task
    /// type). Refused before anything reaches the transport.
    #[error(transparent)]
    NotAllowed(#[from] DelegationRefused),
    /// The target's circuit breaker is open and there is no usable alternate.
    /// Retryable: the breaker half-opens after its cool-down.
    #[error("the circuit breaker of `{role}` is open{}{}",
        until.map(|u| format!(" until {u}")).unwrap_or_default(),
        alternate.as_ref().map(|a| format!(" (alternate `{a}` unavailable too)")).unwrap_or_default())]
    BreakerOpen {
        /// The role whose breaker is open.
        role: Name,
        /// When it may let a probe through.
        until: Option<DateTime<Utc>>,
        /// Its alternate, whose breaker is open too.
        alternate: Option<Name>,
    },
    /// The task cannot be stored (its input breaks the document limits) or a
    /// name is invalid.
    #[error("invalid delegation: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl DelegateError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::BreakerOpen { .. } => true,
            Self::Store(e) => e.is_retryable(),
            Self::Transport(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A delegation that was made (or, inside a handler, will be made when the
/// handler's outcome is committed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delegation {
    /// The new task's id.
    pub task_id: TaskId,
    /// The role it went to.
    pub assigned_to: Name,
    /// The role it was meant for, when a breaker rerouted it to an alternate.
    pub rerouted_from: Option<Name>,
}

/// The payload of a task envelope: the task as delegated. The task document
/// in the store is the source of truth; the payload lets a receiver see the
/// task without reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskPayload {
    pub(crate) task_id: TaskId,
    pub(crate) title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_type: Option<String>,
    #[serde(default)]
    pub(crate) input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sla_minutes: Option<u64>,
}

/// The payload of a result envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResultPayload {
    pub(crate) task_id: TaskId,
    pub(crate) status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A planned delegation: the task document to create and the envelope that
/// carries it.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) record: TaskRecord,
    pub(crate) envelope: Envelope,
    pub(crate) subject: Subject,
    /// The half-open breaker's probe slot, taken in the same commit as the
    /// task, when this delegation is the probe.
    pub(crate) probe: Option<Write>,
}

/// Plans a delegation from `from` to `to`: checks the chart, picks the target
/// (breaker, alternate), builds the task document and envelope. Nothing is
/// written: the caller commits the task (with the probe slot, if any).
/// `probing` names roles this caller already plans a probe for.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    shared: &Shared,
    from: &Name,
    to: &str,
    spec: TaskSpec,
    parent: Option<TaskId>,
    causation: Option<MessageId>,
    trace: Option<(&TraceContext, Option<&str>)>,
    probing: &[Name],
) -> Result<Planned, DelegateError> {
    shared
        .chart
        .delegation_route(from, to, spec.task_type.as_deref())?;
    let requested = Name::new(to).map_err(|e| DelegateError::InvalidInput {
        message: e.to_string(),
    })?;
    let task_id = MessageId::new();
    let (target, probe_write) =
        breaker::choose_target(shared, &requested, &task_id, probing.contains(&requested)).await?;
    let now = shared.now();
    let mut envelope = Envelope::new(shared.org().clone(), from.clone(), Kind::Task, Value::Null)
        .with_id(task_id.clone())
        .with_to(target.clone())
        .with_created_at(now);
    if let Some(c) = causation {
        envelope = envelope.with_causation(c);
    }
    if let Some((t, state)) = trace {
        envelope = envelope.with_trace_parent(t, state);
    }
    let payload = TaskPayload {
        task_id: task_id.clone(),
        title: spec.title.clone(),
        task_type: spec.task_type.clone(),
        input: spec.input.clone(),
        parent: parent.clone(),
        sla_minutes: spec.sla_minutes,
    };
    envelope.payload = serde_json::to_value(&payload).map_err(|e| DelegateError::InvalidInput {
        message: e.to_string(),
    })?;
    let record = TaskRecord {
        task_id: task_id.clone(),
        title: spec.title,
        task_type: spec.task_type,
        input: spec.input,
        parent,
        children: Vec::new(),
        open_children: Vec::new(),
        assigned_by: from.clone(),
        assigned_to: target.clone(),
        requested_to: (target != requested).then_some(requested),
        status: TaskStatus::Pending,
        sla_minutes: spec.sla_minutes,
        actual_minutes: None,
        created_at: now,
        started_at: None,
        completed_at: None,
        result: None,
        error: None,
        probe: probe_write.is_some(),
        traceparent: envelope.headers.get(crate::envelope::TRACEPARENT).cloned(),
    };
    let key = shared.layout.task(&task_id)?;
    let value = super::docs::to_value(&record)?;
    validate_document(&key, &value).map_err(|e| DelegateError::InvalidInput {
        message: format!("the task cannot be stored: {e}"),
    })?;
    let subject = shared.subjects.inbox(&target, from);
    Ok(Planned {
        record,
        envelope,
        subject,
        probe: probe_write,
    })
}

/// What a handler asked for, committed with its outcome.
#[derive(Debug, Default, Clone)]
pub(crate) struct Effects {
    pub(crate) delegations: Vec<Planned>,
    pub(crate) writes: Vec<Write>,
    pub(crate) messages: Vec<(Subject, Envelope)>,
}

/// What a handler runs with: its identity, the chart, the delivery, and the
/// handles of the patterns.
///
/// Delegations, escalations and [staged](Context::stage) writes take effect
/// only if the handler succeeds: they are committed atomically with the
/// completion record, then the messages are published. A handler that fails
/// leaves no trace of them, so a retry does not delegate twice.
pub struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Name,
    pub(crate) envelope: Envelope,
    pub(crate) task: Option<TaskId>,
    pub(crate) attempt: u32,
    pub(crate) trace: TraceContext,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) effects: Mutex<Effects>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("role", &self.role)
            .field("message", &self.envelope.id)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// This role.
    pub fn role(&self) -> &Name {
        &self.role
    }

    /// The org.
    pub fn org(&self) -> &Name {
        self.shared.org()
    }

    /// The org chart.
    pub fn chart(&self) -> &OrgChart {
        &self.shared.chart
    }

    /// The envelope being handled.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The task this call is about, if any (the parent of delegations made
    /// here).
    pub fn task_id(&self) -> Option<&TaskId> {
        self.task.as_ref()
    }

    /// This attempt's number, from the claim (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The trace context of this delivery's span.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// The current time of the runtime's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// The org's state store, for reads (stage writes with
    /// [`stage`](Self::stage) to have them committed exactly once).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.shared.store
    }

    /// The tools this role is granted (others are invisible and `Forbidden`).
    pub fn tools(&self) -> &Arc<dyn ToolHost> {
        &self.tools
    }

    /// A key that is the same on every attempt of this delivery, for making
    /// outside side effects idempotent: `<task or message id>-<step>`.
    pub fn idempotency_key(&self, step: &str) -> String {
        let base = self.task.as_ref().unwrap_or(&self.envelope.id);
        format!("{base}-{step}")
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delegates a task to `to`: a direct report of this role, or a role a
    /// chart shortcut allows for the task's type. Refused at once when the
    /// chart does not allow it, or when `to`'s breaker is open and it has no
    /// usable alternate (else the task goes to the alternate).
    ///
    /// The task is created and sent when the handler's outcome is committed.
    pub async fn delegate(&self, to: &str, spec: TaskSpec) -> Result<Delegation, DelegateError> {
        let state = self.envelope.headers.get(TRACESTATE).map(String::as_str);
        let probing: Vec<Name> = self
            .effects()
            .delegations
            .iter()
            .filter(|p| p.probe.is_some())
            .map(|p| p.record.assigned_to.clone())
            .collect();
        let planned = plan(
            &self.shared,
            &self.role,
            to,
            spec,
            self.task.clone(),
            Some(self.envelope.id.clone()),
            Some((&self.trace, state)),
            &probing,
        )
        .await?;
        let delegation = Delegation {
            task_id: planned.record.task_id.clone(),
            assigned_to: planned.record.assigned_to.clone(),
            rerouted_from: planned.record.requested_to.clone(),
        };
        self.effects().delegations.push(planned);
        Ok(delegation)
    }

    /// Escalates to this role's manager (the principal, at the top), with a
    /// reason and details. Sent when the handler's outcome is committed.
    pub fn escalate(&self, reason: impl Into<String>, details: Value) -> Result<(), DelegateError> {
        let Some(manager) = self.shared.chart.manager_of(&self.role).cloned() else {
            return Err(DelegateError::InvalidInput {
                message: format!("`{}` has no manager to escalate to", self.role),
            });
        };
        let env = Envelope::new(
            self.shared.org().clone(),
            self.role.clone(),
            Kind::Escalation,
            json!({ "reason": reason.into(), "details": details, "task_id": self.task }),
        )
        .with_to(manager.clone())
        .with_causation(self.envelope.id.clone())
        .with_created_at(self.shared.now())
        .with_trace_parent(&self.trace, None);
        let subject = self.shared.subjects.inbox(&manager, &self.role);
        self.effects().messages.push((subject, env));
        Ok(())
    }

    /// Stages a write to commit atomically with this delivery's completion
    /// record: it happens exactly once, and only if the handler succeeds.
    pub fn stage(&self, write: Write) {
        self.effects().writes.push(write);
    }

    pub(crate) fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects())
    }
}
