//! A task's life at its assignee: started, run, ended (completed, failed, or
//! waiting for its subtasks), and rolled up as its subtasks' results come
//! back.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::breaker::breaker_after_task;
use super::delegate::{task_envelope, Delegations};
use super::ops::{cancel_sla, notice_id, send_result};
use super::records::{
    kept_or_read, read_task, Layout, ResultPayload, RollupLocks, TaskRecord, TaskStatus,
};
use super::task::{HierarchyCallbacks, Outcome};
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::name::Name;
use crate::runtime::{
    clip, describe, optimistic, to_value, AgentError, Claimed, Committed, Context, Effects, Fault,
    Kernel, Prepared, Reason, Settle,
};
use crate::store::{Precondition, StoreError, Version, Write};

/// How a task handler ended, as it will be recorded.
#[derive(Debug, Clone)]
enum TaskEnd {
    Completed(Value),
    Failed(String),
    AwaitingSubtasks,
}

/// A task read as its delivery is claimed (see [`prepare_task`]).
#[derive(Debug)]
pub(crate) struct ReadTask {
    record: TaskRecord,
    version: Version,
    /// Whether the claim's commit also marked it started.
    started: bool,
}

/// As a task's delivery is claimed: reads the task, and marks it started in
/// the claim's commit when it is this role's and not started or ended.
pub(crate) async fn prepare_task(
    kernel: &Kernel,
    role: &Name,
    env: &Envelope,
) -> Result<Prepared, Fault> {
    let task_id = task_id_of(env);
    let Some((mut record, version)) = read_task(kernel, &task_id).await? else {
        return Ok(Prepared::none());
    };
    let started = record.status.is_terminal()
        || &record.assigned_to != role
        || (record.status == TaskStatus::InProgress && record.started_at.is_some());
    if started {
        let read = ReadTask {
            record,
            version,
            started: false,
        };
        return Ok(Prepared::new(read, Vec::new()));
    }
    record.status = TaskStatus::InProgress;
    record.started_at.get_or_insert(kernel.now());
    let write = Write::put(
        Layout::of(kernel)?.task(&task_id)?,
        to_value(&record)?,
        Precondition::Version(version),
    );
    let read = ReadTask {
        record,
        version,
        started: true,
    };
    Ok(Prepared::new(read, vec![write]))
}

/// A task delegated to this role: mark it started (done with the claim,
/// unless the task changed meanwhile), run the role's code, record how it
/// ended.
pub(crate) async fn on_task(d: &Claimed<'_>, cb: &dyn HierarchyCallbacks) -> Result<Settle, Fault> {
    let kernel = d.kernel();
    let task_id = task_id_of(d.envelope());
    let layout = Layout::of(kernel)?;
    // What the claim read (and wrote), if it read this task.
    let known = Mutex::new(d.prepared::<ReadTask>().and_then(|(read, versions)| {
        let version = if read.started {
            versions.first().copied().flatten()?
        } else {
            read.version
        };
        (read.record.task_id == task_id).then(|| (read.record.clone(), version))
    }));
    let started = optimistic(|| async {
        let current = kept_or_read(kernel, take(&known), &task_id).await?;
        let Some((mut rec, v)) = current else {
            let reason = Reason::new("unknown_task", "no task record for this task message");
            return d.dead_letter(reason, None).await.map(|s| Some(Err(s)));
        };
        if rec.status.is_terminal() {
            return commit_already_ended(d, &rec).await.map(|s| Some(Err(s)));
        }
        if &rec.assigned_to != d.role() {
            let reason = Reason::new(
                "not_assigned",
                format!("the task is assigned to `{}`", rec.assigned_to),
            );
            return d.dead_letter(reason, None).await.map(|s| Some(Err(s)));
        }
        if rec.status == TaskStatus::InProgress && rec.started_at.is_some() {
            return Ok(Some(Ok((rec, v))));
        }
        rec.status = TaskStatus::InProgress;
        rec.started_at.get_or_insert(kernel.now());
        let write = Write::put(
            layout.task(&task_id)?,
            to_value(&rec)?,
            Precondition::Version(v),
        );
        match kernel.commit_writes(vec![write]).await {
            Ok(versions) => match versions.first().copied().flatten() {
                Some(v) => Ok(Some(Ok((rec, v)))),
                None => Ok(None),
            },
            Err(e) if e.is_precondition_failure() => Ok(None),
            Err(e) => Err(Fault::from(e)),
        }
    })
    .await?;
    let (record, version) = match started {
        Some(Ok(rec)) => rec,
        Some(Err(settled)) => return Ok(settled),
        None => return d.rerun("the task kept changing").await,
    };
    let cx = d.context(Some(task_id.clone()));
    let clock = tokio::time::Instant::now();
    let outcome = d.run(cb.on_task(&cx, to_task(&record))).await;
    let run = Run {
        task_id: &task_id,
        rollup_child: None,
        known: Some((record, version)),
        ran: Some(clock.elapsed()),
    };
    record_outcome(d, &cx, run, outcome).await
}

/// Commits the completion record for a task that had already ended
/// (cancelled, say): nothing to run; a cancelled task's delegator is told
/// (with the notice's fixed id, so once however often it is sent).
async fn commit_already_ended(d: &Claimed<'_>, task: &TaskRecord) -> Result<Settle, Fault> {
    if task.status != TaskStatus::Cancelled {
        return d.done().await;
    }
    let mut effects = Effects::new();
    send_result(
        d.kernel(),
        task,
        Some(notice_id(&task.task_id, "cancelled")),
        &mut effects,
    )?;
    d.commit_all(effects).await
}

/// Which run of the role's code on a task is being recorded.
struct Run<'a> {
    /// The task.
    task_id: &'a TaskId,
    /// For a roll-up (`on_subtasks_done`): the subtask whose result ended
    /// the wait.
    rollup_child: Option<&'a TaskId>,
    /// The task as last read or written by this delivery, with its version.
    known: Option<(TaskRecord, Version)>,
    /// How long the role's code ran on it (not for roll-ups).
    ran: Option<Duration>,
}

/// Records a task handler's outcome: a transient failure is retried, the
/// rest ends or parks the task.
async fn record_outcome(
    d: &Claimed<'_>,
    cx: &Context,
    run: Run<'_>,
    outcome: Result<Outcome, AgentError>,
) -> Result<Settle, Fault> {
    let task_id = run.task_id;
    let (effects, mut ext) = cx.take_effects();
    let delegations = ext.remove::<Delegations>().unwrap_or_default();
    let end = match outcome {
        Ok(Outcome::Complete(v)) => TaskEnd::Completed(v),
        Ok(Outcome::AwaitSubtasks) if delegations.0.is_empty() => TaskEnd::Failed(
            "the handler returned AwaitSubtasks without delegating a subtask".to_owned(),
        ),
        Ok(Outcome::AwaitSubtasks) => TaskEnd::AwaitingSubtasks,
        Err(e) if e.is_retryable() => {
            return d.retry_or_dead_letter(e, Some(task_id)).await;
        }
        Err(e) => {
            d.count_failure();
            tracing::info!(error = %e, "task failed permanently");
            TaskEnd::Failed(clip(describe(&e)))
        }
    };
    commit_outcome(d, run, end, effects, delegations).await
}

/// The escalations among `staged`'s messages.
fn escalations_of(staged: &Effects) -> Effects {
    let mut out = Effects::new();
    for (subject, env) in &staged.messages {
        if env.kind == Kind::Escalation {
            out.send(subject.clone(), env.clone());
        }
    }
    out
}

/// Commits a task's end with the completion record, retrying on conflicts
/// with other writers of the task and breaker records.
async fn commit_outcome(
    d: &Claimed<'_>,
    run: Run<'_>,
    end: TaskEnd,
    staged: Effects,
    delegations: Delegations,
) -> Result<Settle, Fault> {
    let kernel = d.kernel();
    let layout = Layout::of(kernel)?;
    let Run {
        task_id,
        rollup_child,
        known,
        ran,
    } = run;
    // The first try commits on what this delivery knows; a conflict reads.
    let known = Mutex::new(known);
    // Becomes `Failed` if the store refuses the outcome.
    let current_end = Mutex::new(end);
    // Whether a failure sends the escalations the handler staged (not if
    // the store refused them).
    let take_escalations = Mutex::new(true);
    let settled = optimistic(|| async {
        let end = current_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let current = kept_or_read(kernel, take(&known), task_id).await?;
        let Some((mut task, task_v)) = current else {
            return d.done().await.map(Some);
        };
        if task.status.is_terminal() {
            // Cancelled (or ended) meanwhile: the outcome is dropped.
            return commit_already_ended(d, &task).await.map(Some);
        }
        if let Some(child) = rollup_child {
            if !task.open_children.contains(child) {
                return d.done().await.map(Some);
            }
            task.open_children.retain(|c| c != child);
        }
        let now = kernel.now();
        let mut effects = Effects::new();
        let keep_effects = !matches!(end, TaskEnd::Failed(_));
        if keep_effects {
            // Subtasks join the tree; while the task waits they are open
            // (queued ones too, until they end).
            for p in &delegations.0 {
                task.children.push(p.task_id.clone());
                if matches!(end, TaskEnd::AwaitingSubtasks) {
                    task.open_children.push(p.task_id.clone());
                    if p.queued {
                        task.queued_children.push(p.task_id.clone());
                    }
                }
            }
        }
        let ended = match &end {
            TaskEnd::Completed(v) => {
                task.status = TaskStatus::Completed;
                task.result = Some(v.clone());
                Some(true)
            }
            TaskEnd::Failed(m) => {
                task.status = TaskStatus::Failed;
                task.error = Some(m.clone());
                Some(false)
            }
            TaskEnd::AwaitingSubtasks => {
                task.status = TaskStatus::InProgress;
                None
            }
        };
        if let Some(success) = ended {
            task.completed_at = Some(now);
            let start = task.started_at.unwrap_or(task.created_at);
            let secs = u64::try_from((now - start).num_seconds()).unwrap_or(0);
            task.actual_minutes = Some((secs + 30) / 60);
            // The breaker judges the role by its own handler's outcomes: a
            // roll-up that fails because a subtask failed says nothing about
            // this role.
            // A completion with no failure counted before its delegation
            // has nothing to reset (see the breaker's module).
            let nothing_to_reset = success && task.breaker_clear && !task.probe;
            if rollup_child.is_none() && !nothing_to_reset {
                breaker_after_task(kernel, d.role(), success, task.probe, &mut effects).await?;
            }
            cancel_sla(kernel, &task, &mut effects)?;
            send_result(kernel, &task, None, &mut effects)?;
        }
        effects.write(Write::put(
            layout.task(task_id)?,
            to_value(&task)?,
            Precondition::Version(task_v),
        ));
        let escalations = if keep_effects {
            effects.extend(staged.clone());
            false
        } else if *take_escalations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            // A failing task's escalations still go up: the manager hears
            // why (a spent budget, say). Nothing else it staged happens.
            let escalations = escalations_of(&staged);
            let any = !escalations.is_empty();
            effects.extend(escalations);
            any
        } else {
            false
        };
        match d.commit(effects).await? {
            Committed::Yes => {
                if let (Some(success), Some(ran), None) = (ended, ran, rollup_child) {
                    d.record_work(task_id, success, ran);
                }
                Ok(Some(Settle::Ack))
            }
            Committed::Again => Ok(None),
            Committed::Settled(s) => Ok(Some(s)),
            Committed::Refused(StoreError::InvalidInput { message, .. }) if keep_effects => {
                tracing::warn!(error = %message, "the outcome cannot be stored; failing the task");
                *current_end
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    TaskEnd::Failed(clip(format!("the outcome cannot be stored: {message}")));
                Ok(None)
            }
            Committed::Refused(StoreError::InvalidInput { message, .. }) if escalations => {
                // What the store refused may be an escalation (its details
                // too big, say): the failure goes without them.
                tracing::warn!(error = %message, "the failed task's escalations cannot be stored; failing it without them");
                *take_escalations
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
                Ok(None)
            }
            // Not even the failure can be stored (the task's own record is
            // at the limit, say): dead-lettered, about the task.
            Committed::Refused(e) => {
                let reason = Reason::new(
                    "unstorable_outcome",
                    clip(format!("the outcome cannot be stored: {e}")),
                );
                d.dead_letter(reason, Some(task_id)).await.map(Some)
            }
        }
    })
    .await?;
    match settled {
        Some(s) => Ok(s),
        None => d.rerun("the task kept changing under the commit").await,
    }
}

/// A result of a task this role delegated: rolls it up into its parent —
/// the last open subtask's result has the role's code decide the parent's
/// outcome — or, for a task delegated outside any task, hands it over.
pub(crate) async fn on_result(
    d: &Claimed<'_>,
    cb: &dyn HierarchyCallbacks,
) -> Result<Settle, Fault> {
    let kernel = d.kernel();
    let env = d.envelope();
    let role = d.role();
    let payload: ResultPayload = match crate::runtime::from_json(&env.payload) {
        Ok(p) => p,
        Err(e) => {
            return d
                .dead_letter(Reason::new("malformed_result", e.to_string()), None)
                .await
        }
    };
    let child_id = payload.task_id;
    let Some((child, _)) = read_task(kernel, &child_id).await? else {
        let reason = Reason::new("unknown_task", format!("no task {child_id}"));
        return d.dead_letter(reason, None).await;
    };
    let refusal = if &child.assigned_by != role || child.assigned_to != env.from {
        Some(Reason::new(
            "not_allowed",
            format!(
                "task {child_id} was not delegated by `{role}` to `{}`",
                env.from
            ),
        ))
    } else if !child.status.is_terminal() {
        Some(Reason::new(
            "premature_result",
            format!("task {child_id} is {}, not finished", child.status),
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        return d.dead_letter(reason, None).await;
    }
    let Some(parent_id) = child.parent.clone() else {
        let cx = d.context(None);
        let r = d.run(cb.on_result(&cx, subtask_result(&child))).await;
        return d.settle_call(&cx, r).await;
    };
    let layout = Layout::of(kernel)?;
    // The roll-ups into one parent, one at a time in this process, each on
    // the record the previous one committed.
    let rolling_up = Mutex::new(RollupLocks::of(kernel).lock(&parent_id).await);
    let settled = optimistic(|| async {
        let last = rolling_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // The kept record is trusted only where a conditional write on it
        // follows (this child open, others left); every other decision —
        // done, refused, the last child — is made on the record as read.
        let usable = last.filter(|(p, _)| {
            !p.status.is_terminal()
                && &p.assigned_to == role
                && p.open_children.len() > 1
                && p.open_children.contains(&child_id)
        });
        let current = kept_or_read(kernel, usable, &parent_id).await?;
        let Some((parent, parent_v)) = current else {
            return d.done().await.map(Some);
        };
        if &parent.assigned_to != role {
            let reason = Reason::new("not_allowed", format!("task {parent_id} is not `{role}`'s"));
            return d.dead_letter(reason, None).await.map(Some);
        }
        if parent.status.is_terminal() || !parent.open_children.contains(&child_id) {
            return d.done().await.map(Some);
        }
        if parent.open_children.len() == 1 {
            // The last subtask: the role's code decides the parent's outcome.
            let mut results = Vec::with_capacity(parent.children.len());
            for c in &parent.children {
                if let Some((rec, _)) = read_task(kernel, c).await? {
                    results.push(subtask_result(&rec));
                }
            }
            let cx = d.context(Some(parent_id.clone()));
            let outcome = d
                .run(cb.on_subtasks_done(&cx, to_task(&parent), results))
                .await;
            let run = Run {
                task_id: &parent_id,
                rollup_child: Some(&child_id),
                known: Some((parent, parent_v)),
                ran: None,
            };
            return record_outcome(d, &cx, run, outcome).await.map(Some);
        }
        let mut updated = parent;
        updated.open_children.retain(|c| *c != child_id);
        let mut effects = Effects::new();
        // A batch: the slot this subtask held goes to the next queued one.
        if !updated.queued_children.is_empty() {
            let next = updated.queued_children.remove(0);
            if let Some((queued, _)) = read_task(kernel, &next).await? {
                let task_env = task_envelope(kernel, &queued, Some(env.id.clone()))?;
                let subject = kernel.subjects().inbox(&queued.assigned_to, role);
                effects.send(subject, task_env);
            }
        }
        effects.write(Write::put(
            layout.task(&parent_id)?,
            to_value(&updated)?,
            Precondition::Version(parent_v),
        ));
        match d.commit_versioned(effects).await? {
            (Committed::Yes, versions) => {
                if let Some(v) = versions.last().copied().flatten() {
                    rolling_up
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .keep(updated, v);
                }
                Ok(Some(Settle::Ack))
            }
            (Committed::Again, _) => Ok(None),
            (Committed::Settled(s), _) => Ok(Some(s)),
            (Committed::Refused(e), _) => Err(Fault::from(e)),
        }
    })
    .await?;
    match settled {
        Some(s) => Ok(s),
        None => d.rerun("the parent task kept changing").await,
    }
}

/// Takes what `slot` holds (a record kept for a first try).
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// The task a task envelope carries (its payload's id, else the envelope's).
pub(crate) fn task_id_of(env: &Envelope) -> MessageId {
    /// Only the id: the rest of the payload is not read here.
    #[derive(serde::Deserialize)]
    struct TaskIdOnly {
        task_id: TaskId,
    }
    crate::runtime::from_json::<TaskIdOnly>(&env.payload)
        .map(|p| p.task_id)
        .unwrap_or_else(|_| env.id.clone())
}

/// Rebuilds a task as its assignee sees it.
pub(crate) fn to_task(rec: &TaskRecord) -> super::Task {
    super::Task {
        id: rec.task_id.clone(),
        title: rec.title.clone(),
        task_type: rec.task_type.clone(),
        input: rec.input.clone(),
        parent: rec.parent.clone(),
        assigned_by: rec.assigned_by.clone(),
        assigned_to: rec.assigned_to.clone(),
        sla_minutes: rec.sla_minutes,
        created_at: rec.created_at,
    }
}

/// A subtask's end, as its delegator sees it.
pub(crate) fn subtask_result(rec: &TaskRecord) -> super::SubtaskResult {
    super::SubtaskResult {
        task_id: rec.task_id.clone(),
        title: rec.title.clone(),
        assigned_to: rec.assigned_to.clone(),
        status: rec.status,
        result: rec.result.clone(),
        error: rec.error.clone(),
    }
}
