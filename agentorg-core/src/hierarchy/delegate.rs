//! Delegation: planning a task (chart, breaker, idempotency, SLA) and the
//! `Context` operations that stage it with the handler's outcome.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::breaker;
use super::error::DelegateError;
use super::records::{
    BreakerRecord, IdempotencyEntry, Layout, TaskPayload, TaskRecord, TaskStatus,
};
use super::sla;
use super::task::TaskSpec;
use super::tree::{self, TaskTree};
use super::Escalation;
use crate::envelope::{Envelope, Kind, MessageId, TaskId, TraceContext, TRACESTATE};
use crate::name::Name;
use crate::runtime::{to_value, Context, Kernel};
use crate::store::{validate_document, Precondition, StoreError, Write};
use crate::subject::Subject;

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

/// A planned delegation: the records to create (the task, and with it the
/// breaker's probe slot, the idempotency index entry and the SLA timer as
/// they apply) and the envelope that carries the task.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) record: TaskRecord,
    pub(crate) envelope: Envelope,
    /// The envelope, encoded (once: it is sent as encoded here).
    pub(crate) encoded: bytes::Bytes,
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
    kernel: &Kernel,
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
        kernel.org().clone(),
        record.assigned_by.clone(),
        Kind::Task,
        to_value(&payload)?,
    )
    .with_id(record.task_id.clone())
    .with_to(record.assigned_to.clone())
    .with_created_at(kernel.now());
    if let Some(c) = causation {
        env = env.with_causation(c);
    }
    if let Some(tp) = &record.traceparent {
        env.headers
            .insert(crate::envelope::TRACEPARENT.to_owned(), tp.clone());
    }
    Ok(env)
}

/// The closed breakers one handler call has read, by role: its further
/// delegations to those roles go by them (a call's delegations are one
/// decision; an open or half-open breaker is always read afresh).
#[derive(Debug, Default, Clone)]
pub(crate) struct BreakersSeen(std::collections::HashMap<Name, Option<BreakerRecord>>);

/// Plans a delegation from `from` to `to`: checks the chart, looks up the
/// idempotency key, picks the target (breaker, alternate), builds the task's
/// documents and envelope. Nothing is written: the caller commits them.
/// `probing` names roles this caller already plans a probe for; `seen`
/// holds the closed breakers this caller has read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    kernel: &Kernel,
    from: &Name,
    to: &str,
    spec: TaskSpec,
    parent: Option<TaskId>,
    causation: Option<MessageId>,
    trace: Option<(&TraceContext, Option<&str>)>,
    probing: &[Name],
    seen: &mut BreakersSeen,
) -> Result<Plan, DelegateError> {
    kernel
        .chart()
        .delegation_route(from, to, spec.task_type.as_deref())?;
    let requested = Name::new(to).map_err(|e| DelegateError::InvalidInput {
        message: e.to_string(),
    })?;
    let layout = Layout::of(kernel)?;
    let mut writes = Vec::new();
    if let Some(key) = &spec.idempotency_key {
        let index = layout.idempotency(from, key)?;
        if let Some((entry, _)) = kernel.read::<IdempotencyEntry>(&index).await? {
            return Ok(Plan::Existing(Delegation {
                task_id: entry.task_id,
                assigned_to: entry.assigned_to,
                rerouted_from: None,
            }));
        }
    }
    let task_id = MessageId::new();
    let breaker::Target {
        role: target,
        probe: probe_write,
        clear: breaker_clear,
        closed,
    } = if &requested == from {
        // A task of its own (a meeting's action item): no breaker reroutes
        // it to another role.
        breaker::Target {
            role: requested.clone(),
            probe: None,
            clear: false,
            closed: None,
        }
    } else {
        breaker::choose_target(
            kernel,
            &requested,
            &task_id,
            probing.contains(&requested),
            seen.0.get(&requested).cloned(),
        )
        .await?
    };
    match closed {
        Some(rec) => {
            seen.0.insert(requested.clone(), rec);
        }
        None => {
            seen.0.remove(&requested);
        }
    }
    let contended = probe_write.is_some() || spec.idempotency_key.is_some();
    let now = kernel.now();
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
        breaker_clear,
        traceparent: None,
        queued_children: Vec::new(),
        sla_deadline,
    };
    let mut trace_env = Envelope::new(kernel.org().clone(), from.clone(), Kind::Task, Value::Null);
    if let Some((t, state)) = trace {
        trace_env = trace_env.with_trace_parent(t, state);
    }
    record.traceparent = trace_env.headers.get(crate::envelope::TRACEPARENT).cloned();
    let mut envelope = task_envelope(kernel, &record, causation)?;
    if let Some(state) = trace_env.headers.get(TRACESTATE) {
        envelope
            .headers
            .insert(TRACESTATE.to_owned(), state.clone());
    }
    let key = layout.task(&task_id)?;
    let value = to_value(&record)?;
    validate_document(&key, &value).map_err(|e| DelegateError::InvalidInput {
        message: format!("the task cannot be stored: {e}"),
    })?;
    let encoded = kernel
        .codec()
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
            layout.idempotency(from, key)?,
            to_value(&entry)?,
            Precondition::MustNotExist,
        ));
    }
    if let Some(timer) = sla::timer(&record) {
        writes.push(kernel.arm_timer(&timer)?);
    }
    let subject = kernel.subjects().inbox(&target, from);
    Ok(Plan::New(Box::new(Planned {
        record,
        envelope,
        encoded,
        subject,
        writes,
        contended,
        queued: false,
    })))
}

/// The delegations a handler call staged, in order (kept in its
/// `Context`'s extensions until its outcome is committed).
#[derive(Debug, Default)]
pub(crate) struct Delegations(pub(crate) Vec<Staged>);

/// A delegation staged with a handler's effects.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) task_id: TaskId,
    pub(crate) assigned_to: Name,
    /// Whether it is its target's breaker probe.
    pub(crate) probe: bool,
    /// Whether it waits for a batch slot (created, not sent).
    pub(crate) queued: bool,
}

/// The hierarchy's operations of a handler's [`Context`].
impl Context {
    /// Reads one task of the org as stored now (reads are not limited by the
    /// chart; the application decides what to show).
    pub async fn task_record(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(super::records::read_task(self.kernel(), id)
            .await?
            .map(|(t, _)| t))
    }

    /// The tree under `root`, as [`Principal::task_tree`] reads it (for
    /// agents that report on their work, such as the MCP seat of
    /// `agentorg-mcp`).
    ///
    /// [`Principal::task_tree`]: crate::runtime::Principal::task_tree
    pub async fn task_tree(&self, root: &TaskId) -> Result<TaskTree, StoreError> {
        tree::read(self.kernel(), root).await
    }

    async fn plan_here(&self, to: &str, spec: TaskSpec) -> Result<Plan, DelegateError> {
        let state = self.envelope.headers.get(TRACESTATE).cloned();
        let (probing, mut seen): (Vec<Name>, BreakersSeen) = self.with_effects(|_, ext| {
            let probing = ext
                .get::<Delegations>()
                .map(|d| {
                    d.0.iter()
                        .filter(|p| p.probe)
                        .map(|p| p.assigned_to.clone())
                        .collect()
                })
                .unwrap_or_default();
            (probing, ext.remove::<BreakersSeen>().unwrap_or_default())
        });
        let planned = plan(
            self.kernel(),
            &self.role,
            to,
            spec,
            self.task.clone(),
            Some(self.envelope.id.clone()),
            Some((&self.trace, state.as_deref())),
            &probing,
            &mut seen,
        )
        .await;
        self.with_effects(|_, ext| {
            ext.insert(seen);
        });
        planned
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
                self.stage_delegation(*planned);
                Ok(delegation)
            }
        }
    }

    /// Delegates a batch of tasks to `to` (GenBrain's ten parallel
    /// sub-agents: a role's replicas, or a pool role), with at most
    /// `max_in_flight` sent at once: the rest wait, in order, and each is
    /// sent as an earlier one ends. Return [`AwaitSubtasks`] and use
    /// [`gather`] in `on_subtasks_done` to keep every result, failures
    /// included.
    ///
    /// [`AwaitSubtasks`]: super::Outcome::AwaitSubtasks
    /// [`gather`]: super::gather
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
                    self.stage_delegation(*planned);
                }
            }
        }
        Ok(out)
    }

    /// Escalates to this role's manager (the principal, at the top), with a
    /// reason and details; each level's `on_escalation` decides or passes it
    /// up, and a decision comes back to `on_decision`. Sent when the
    /// handler's outcome is committed — also when a task's handler then
    /// fails it (a permanent error): the manager hears why, while the
    /// task's other staged effects are dropped.
    pub fn escalate(&self, reason: impl Into<String>, details: Value) -> Result<(), DelegateError> {
        let Some(manager) = self.kernel().chart().manager_of(&self.role).cloned() else {
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
            self.org().clone(),
            self.role.clone(),
            Kind::Escalation,
            to_value(&escalation).map_err(DelegateError::Store)?,
        )
        .with_id(id)
        .with_to(manager.clone())
        .with_causation(self.envelope.id.clone())
        .with_created_at(self.now())
        .with_trace_parent(&self.trace, None);
        let subject = self.kernel().subjects().inbox(&manager, &self.role);
        self.effects().send(subject, env);
        Ok(())
    }

    /// Stages a planned delegation: its records (and its message, unless it
    /// waits for a batch slot) with the effects, and the plan itself for the
    /// hierarchy's handler to add to the task tree once committed.
    fn stage_delegation(&self, planned: Planned) {
        let staged = Staged {
            task_id: planned.record.task_id.clone(),
            assigned_to: planned.record.assigned_to.clone(),
            probe: planned.record.probe,
            queued: planned.queued,
        };
        self.with_effects(|effects, ext| {
            for w in planned.writes {
                if planned.contended {
                    effects.contended_write(w);
                } else {
                    effects.write(w);
                }
            }
            if !planned.queued {
                // Queued ones are sent when a slot frees up (see the result
                // handler).
                effects.send_encoded(planned.subject, planned.envelope, planned.encoded);
            }
            ext.get_or_default::<Delegations>().0.push(staged);
        });
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
