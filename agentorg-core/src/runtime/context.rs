//! The context a handler runs with, and delegation planning.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::docs::{from_doc, to_value, SlaRecord, TaskRecord, TaskStatus};
use super::{breaker, RoleStats, Shared};
use crate::agent::TaskSpec;
use crate::chart::{DelegationRefused, OrgChart};
use crate::codec::Codec;
use crate::envelope::{Envelope, Kind, MessageId, TaskId, TraceContext, TRACESTATE};
use crate::hierarchy::Escalation;
use crate::name::Name;
use crate::peer::PeerError;
use crate::store::{validate_document, Precondition, StateStore, StoreError, Write};
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

/// A planned delegation: the documents to create (the task, and with it
/// the breaker's probe slot, the idempotency index entry and the SLA record
/// as they apply) and the envelope that carries the task.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) record: TaskRecord,
    pub(crate) envelope: Envelope,
    pub(crate) subject: Subject,
    /// The writes that create the task, committed together.
    pub(crate) writes: Vec<Write>,
    /// Whether those writes can conflict with another delegator's (a probe
    /// slot or an idempotency key): a conflict then makes the plan stale.
    pub(crate) contended: bool,
    /// Created but not sent yet: a batch's task waiting for a slot.
    pub(crate) queued: bool,
}

/// What planning found.
pub(crate) enum Plan {
    /// A new task, to commit.
    New(Box<Planned>),
    /// The idempotency key already created this task.
    Existing(Delegation),
}

/// The envelope that carries `record` to its assignee (for a batch's task
/// released from the queue; the first send's envelope is built by [`plan`]
/// the same way).
pub(crate) fn task_envelope(
    shared: &Shared,
    record: &TaskRecord,
    causation: Option<MessageId>,
) -> Result<Envelope, StoreError> {
    let payload = TaskPayload {
        task_id: record.task_id.clone(),
        title: record.title.clone(),
        task_type: record.task_type.clone(),
        input: record.input.clone(),
        parent: record.parent.clone(),
        sla_minutes: record.sla_minutes,
    };
    let mut env = Envelope::new(
        shared.org().clone(),
        record.assigned_by.clone(),
        Kind::Task,
        to_value(&payload)?,
    )
    .with_id(record.task_id.clone())
    .with_to(record.assigned_to.clone())
    .with_created_at(shared.now());
    if let Some(c) = causation {
        env = env.with_causation(c);
    }
    if let Some(tp) = &record.traceparent {
        env.headers
            .insert(crate::envelope::TRACEPARENT.to_owned(), tp.clone());
    }
    Ok(env)
}

/// Plans a delegation from `from` to `to`: checks the chart, looks up the
/// idempotency key, picks the target (breaker, alternate), builds the task's
/// documents and envelope. Nothing is written: the caller commits them.
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
) -> Result<Plan, DelegateError> {
    shared
        .chart
        .delegation_route(from, to, spec.task_type.as_deref())?;
    let requested = Name::new(to).map_err(|e| DelegateError::InvalidInput {
        message: e.to_string(),
    })?;
    let mut writes = Vec::new();
    if let Some(key) = &spec.idempotency_key {
        let index = shared.layout.idempotency(from, key)?;
        if let Some(doc) = shared.store.get(&index).await? {
            let (entry, _): (IdempotencyEntry, _) = from_doc(&doc)?;
            return Ok(Plan::Existing(Delegation {
                task_id: entry.task_id,
                assigned_to: entry.assigned_to,
                rerouted_from: None,
            }));
        }
    }
    let task_id = MessageId::new();
    let (target, probe_write) =
        breaker::choose_target(shared, &requested, &task_id, probing.contains(&requested)).await?;
    let contended = probe_write.is_some() || spec.idempotency_key.is_some();
    let now = shared.now();
    let sla_deadline = spec.sla_minutes.map(|m| {
        chrono::TimeDelta::try_minutes(i64::try_from(m).unwrap_or(i64::MAX))
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    });
    let mut record = TaskRecord {
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
        traceparent: None,
        queued_children: Vec::new(),
        sla_deadline,
    };
    let mut trace_env = Envelope::new(shared.org().clone(), from.clone(), Kind::Task, Value::Null);
    if let Some((t, state)) = trace {
        trace_env = trace_env.with_trace_parent(t, state);
    }
    record.traceparent = trace_env.headers.get(crate::envelope::TRACEPARENT).cloned();
    let mut envelope = task_envelope(shared, &record, causation)?;
    if let Some(state) = trace_env.headers.get(TRACESTATE) {
        envelope
            .headers
            .insert(TRACESTATE.to_owned(), state.clone());
    }
    let key = shared.layout.task(&task_id)?;
    let value = to_value(&record)?;
    validate_document(&key, &value).map_err(|e| DelegateError::InvalidInput {
        message: format!("the task cannot be stored: {e}"),
    })?;
    Codec::default()
        .encode(&envelope)
        .map_err(|e| DelegateError::InvalidInput {
            message: format!("the task cannot be sent: {e}"),
        })?;
    writes.push(Write::put(key, value, Precondition::MustNotExist));
    writes.extend(probe_write);
    if let Some(key) = &spec.idempotency_key {
        let entry = IdempotencyEntry {
            task_id: task_id.clone(),
            assigned_to: target.clone(),
        };
        writes.push(Write::put(
            shared.layout.idempotency(from, key)?,
            to_value(&entry)?,
            Precondition::MustNotExist,
        ));
    }
    if let Some(deadline) = sla_deadline {
        let sla = SlaRecord {
            task_id: task_id.clone(),
            delegator: from.clone(),
            assignee: target.clone(),
            deadline,
            breached: false,
        };
        writes.push(Write::put(
            shared.layout.sla(&task_id)?,
            to_value(&sla)?,
            Precondition::MustNotExist,
        ));
    }
    let subject = shared.subjects.inbox(&target, from);
    Ok(Plan::New(Box::new(Planned {
        record,
        envelope,
        subject,
        writes,
        contended,
        queued: false,
    })))
}

/// The index entry of an idempotency key: the task it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IdempotencyEntry {
    task_id: TaskId,
    assigned_to: Name,
}

/// What a handler asked for, committed with its outcome.
#[derive(Debug, Default, Clone)]
pub(crate) struct Effects {
    pub(crate) delegations: Vec<Planned>,
    pub(crate) writes: Vec<Write>,
    pub(crate) messages: Vec<(Subject, Envelope)>,
}

impl Effects {
    /// Whether committing these can conflict with someone else's writes: the
    /// handler's staged writes, a probe slot, an idempotency key.
    pub(crate) fn contended(&self) -> bool {
        !self.writes.is_empty() || self.delegations.iter().any(|p| p.contended)
    }
}

/// What a handler runs with: its identity, the chart, the delivery, and the
/// handles of the patterns.
///
/// Delegations, escalations, peer messages and [staged](Context::stage)
/// writes take effect only if the handler succeeds: they are committed
/// atomically with the completion record, then the messages are published.
/// A handler that fails leaves no trace of them, so a retry does not
/// delegate twice.
pub struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Name,
    pub(crate) envelope: Envelope,
    pub(crate) task: Option<TaskId>,
    pub(crate) attempt: u32,
    pub(crate) trace: TraceContext,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) stats: Arc<RoleStats>,
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

    /// Reads one task of the org as stored now (reads are not limited by the
    /// chart; the application decides what to show).
    pub async fn task_record(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        super::principal::read_task(&*self.shared.store, &self.shared, id).await
    }

    /// The tree under `root`, as [`Principal::task_tree`] reads it (for
    /// agents that report on their work, such as the MCP seat of
    /// `agentorg-mcp`).
    ///
    /// [`Principal::task_tree`]: super::Principal::task_tree
    pub async fn task_tree(&self, root: &TaskId) -> Result<super::TaskTree, StoreError> {
        let mut seen = std::collections::HashSet::new();
        super::principal::tree(&self.shared, root, &mut seen, 0).await
    }

    /// Reports what this call used (e.g. an LLM's tokens and cost), for the
    /// role's registry entry. Counted per call, so a retried call counts
    /// again. Tokens saturate at `u64::MAX`; a cost that is not a finite,
    /// non-negative number is ignored.
    pub fn report_usage(&self, tokens: u64, cost_usd: f64) {
        self.stats.add_usage(tokens, cost_usd);
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn plan_here(&self, to: &str, spec: TaskSpec) -> Result<Plan, DelegateError> {
        let state = self.envelope.headers.get(TRACESTATE).cloned();
        let probing: Vec<Name> = self
            .effects()
            .delegations
            .iter()
            .filter(|p| p.record.probe)
            .map(|p| p.record.assigned_to.clone())
            .collect();
        plan(
            &self.shared,
            &self.role,
            to,
            spec,
            self.task.clone(),
            Some(self.envelope.id.clone()),
            Some((&self.trace, state.as_deref())),
            &probing,
        )
        .await
    }

    /// Delegates a task to `to`: a direct report of this role, or a role a
    /// chart shortcut allows for the task's type. Refused at once when the
    /// chart does not allow it, or when `to`'s breaker is open and it has no
    /// usable alternate (else the task goes to the alternate). With an
    /// idempotency key that already created a task, that task is returned.
    ///
    /// The task is created and sent when the handler's outcome is committed.
    pub async fn delegate(&self, to: &str, spec: TaskSpec) -> Result<Delegation, DelegateError> {
        match self.plan_here(to, spec).await? {
            Plan::Existing(d) => Ok(d),
            Plan::New(planned) => {
                let delegation = planned.delegation();
                self.effects().delegations.push(*planned);
                Ok(delegation)
            }
        }
    }

    /// Delegates a batch of tasks to `to` (the seed's ten parallel
    /// sub-agents: a role's replicas, or a pool role), with at most
    /// `max_in_flight` sent at once: the rest wait, in order, and each is
    /// sent as an earlier one ends. Return [`AwaitSubtasks`] and use
    /// [`gather`] in `on_subtasks_done` to keep every result, failures
    /// included.
    ///
    /// [`AwaitSubtasks`]: crate::agent::Outcome::AwaitSubtasks
    /// [`gather`]: crate::hierarchy::gather
    pub async fn delegate_batch(
        &self,
        to: &str,
        specs: Vec<TaskSpec>,
        max_in_flight: usize,
    ) -> Result<Vec<Delegation>, DelegateError> {
        let mut out = Vec::with_capacity(specs.len());
        let mut sent = 0;
        for spec in specs {
            match self.plan_here(to, spec).await? {
                Plan::Existing(d) => out.push(d),
                Plan::New(mut planned) => {
                    planned.queued = sent >= max_in_flight.max(1);
                    sent += 1;
                    out.push(planned.delegation());
                    self.effects().delegations.push(*planned);
                }
            }
        }
        Ok(out)
    }

    /// Escalates to this role's manager (the principal, at the top), with a
    /// reason and details; each level's `on_escalation` decides or passes it
    /// up, and a decision comes back to `on_decision`. Sent when the
    /// handler's outcome is committed.
    pub fn escalate(&self, reason: impl Into<String>, details: Value) -> Result<(), DelegateError> {
        let Some(manager) = self.shared.chart.manager_of(&self.role).cloned() else {
            return Err(DelegateError::InvalidInput {
                message: format!("`{}` has no manager to escalate to", self.role),
            });
        };
        let id = MessageId::new();
        let escalation = Escalation {
            escalation_id: id.clone(),
            origin: self.role.clone(),
            path: vec![self.role.clone()],
            reason: reason.into(),
            details,
            task_id: self.task.clone(),
        };
        let env = Envelope::new(
            self.shared.org().clone(),
            self.role.clone(),
            Kind::Escalation,
            to_value(&escalation).map_err(DelegateError::Store)?,
        )
        .with_id(id)
        .with_to(manager.clone())
        .with_causation(self.envelope.id.clone())
        .with_created_at(self.shared.now())
        .with_trace_parent(&self.trace, None);
        let subject = self.shared.subjects.inbox(&manager, &self.role);
        self.effects().messages.push((subject, env));
        Ok(())
    }

    /// Sends `message` to the peer `to` on their declared channel. Refused at
    /// once if the chart declares none. Sent, exactly once, when the
    /// handler's outcome is committed.
    pub fn send_peer<T: Serialize + ?Sized>(&self, to: &str, message: &T) -> Result<(), PeerError> {
        let (to, env) = self.peer_envelope(to, message)?;
        let subject = self.shared.subjects.peer(&self.role, &to);
        self.effects().messages.push((subject, env));
        Ok(())
    }

    /// Asks the peer `to` and waits up to `timeout` for its answer (core
    /// request/reply, at most once: not part of the handler's commit).
    /// Refused at once if the chart declares no channel.
    pub async fn request_peer<T, R>(
        &self,
        to: &str,
        request: &T,
        timeout: std::time::Duration,
    ) -> Result<R, PeerError>
    where
        T: Serialize + ?Sized + Sync,
        R: serde::de::DeserializeOwned,
    {
        let (to, env) = self.peer_envelope(to, request)?;
        let bytes = Codec::default()
            .encode(&env)
            .map_err(|e| PeerError::Decode {
                message: e.to_string(),
            })?;
        let answer = self
            .shared
            .transport
            .request(&self.shared.subjects.rpc(&to), bytes, timeout)
            .await?;
        let reply: PeerReply = serde_json::from_slice(&answer).map_err(|e| PeerError::Decode {
            message: format!("unreadable answer from `{to}`: {e}"),
        })?;
        match reply {
            PeerReply::Ok(v) => serde_json::from_value(v).map_err(|e| PeerError::Decode {
                message: e.to_string(),
            }),
            PeerReply::Error { retryable, message } => Err(PeerError::Remote {
                peer: to,
                retryable,
                message,
            }),
        }
    }

    fn peer_envelope<T: Serialize + ?Sized>(
        &self,
        to: &str,
        message: &T,
    ) -> Result<(Name, Envelope), PeerError> {
        let not_declared = || PeerError::NotDeclared {
            from: self.role.to_string(),
            to: to.to_owned(),
        };
        let to = Name::new(to).map_err(|_| not_declared())?;
        if !self.shared.chart.are_peers(&self.role, &to) {
            return Err(not_declared());
        }
        let payload = serde_json::to_value(message).map_err(|e| PeerError::Decode {
            message: e.to_string(),
        })?;
        let env = Envelope::new(
            self.shared.org().clone(),
            self.role.clone(),
            Kind::Peer,
            payload,
        )
        .with_to(to.clone())
        .with_causation(self.envelope.id.clone())
        .with_created_at(self.shared.now())
        .with_trace_parent(&self.trace, None);
        Ok((to, env))
    }

    /// Stages a write to commit atomically with this delivery's completion
    /// record: it happens exactly once, and only if the handler succeeds.
    pub fn stage(&self, write: Write) {
        self.effects().writes.push(write);
    }

    /// Adds a message to send with the outcome (the runtime's own, such as
    /// an escalation passed up).
    pub(crate) fn push_message(&self, subject: Subject, env: Envelope) {
        self.effects().messages.push((subject, env));
    }

    pub(crate) fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects())
    }
}

impl Planned {
    pub(crate) fn delegation(&self) -> Delegation {
        Delegation {
            task_id: self.record.task_id.clone(),
            assigned_to: self.record.assigned_to.clone(),
            rerouted_from: self.record.requested_to.clone(),
        }
    }
}

/// The answer to a peer request, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PeerReply {
    /// The handler's value.
    Ok(Value),
    /// The handler's error.
    Error {
        /// Whether it was transient.
        retryable: bool,
        /// Its message.
        message: String,
    },
}
