//! Operations on the task tree, and what goes with a task's dead letter
//! being requeued or discarded.
//!
//! A task's result always goes to its delegator from its assignee (the
//! sender a broker would enforce). When an operator cancels or discards a
//! task, the notice is written to the outbox *as the assignee*: the
//! operator's process publishes it at once if it may, and otherwise the
//! assignee's process does on its next sweep. The notice's id is derived
//! from the task, so however many times it is sent, it is handled once.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};

use super::records::{read_task, Layout, ResultPayload, TaskRecord, TaskStatus};
use super::sla;
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::runtime::{optimistic, to_value, DeadLetterRecord, Effects, Kernel, OperationError};
use crate::store::{Precondition, StoreError, Version, Write};

/// A deterministic message id for the notice `what` about `task`.
pub(crate) fn notice_id(task: &TaskId, what: &str) -> MessageId {
    let hash = crate::hex::hex(&Sha256::digest(format!("{what}:{task}").as_bytes()), 26);
    MessageId::parse(format!("n{hash}")).unwrap_or_else(|_| MessageId::new())
}

/// The result envelope of `task` (ended), from its assignee to its
/// delegator.
pub(crate) fn result_envelope(
    kernel: &Kernel,
    task: &TaskRecord,
    id: Option<MessageId>,
) -> Result<Envelope, StoreError> {
    let payload = ResultPayload {
        task_id: task.task_id.clone(),
        status: task.status,
        result: task.result.clone(),
        error: task.error.clone(),
    };
    let mut env = kernel
        .envelope(task.assigned_to.clone(), Kind::Result, to_value(&payload)?)
        .with_to(task.assigned_by.clone())
        .with_correlation(task.task_id.clone());
    if let Some(id) = id {
        env = env.with_id(id);
    }
    Ok(env)
}

/// Sends `task`'s result (as its assignee) with `effects`.
pub(crate) fn send_result(
    kernel: &Kernel,
    task: &TaskRecord,
    id: Option<MessageId>,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let env = result_envelope(kernel, task, id)?;
    let subject = kernel
        .subjects()
        .inbox(&task.assigned_by, &task.assigned_to);
    effects.send(subject, env);
    Ok(())
}

/// Cancels `task`'s SLA timer, if it has one, with `effects`.
pub(crate) fn cancel_sla(
    kernel: &Kernel,
    task: &TaskRecord,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    if let Some(timer) = sla::timer(task) {
        effects.write(kernel.cancel_timer(&timer)?);
    }
    Ok(())
}

/// Cancels `root` and its open subtree: every task of it not yet ended
/// becomes `cancelled` (each by a conditional write). The root's delegator
/// is told with a `cancelled` result. Returns how many tasks were
/// cancelled.
pub(crate) async fn cancel_subtree(
    kernel: &Kernel,
    root: &TaskId,
) -> Result<usize, OperationError> {
    /// What became of one task of the subtree, with its children.
    enum Step {
        Missing,
        Ended(Vec<TaskId>),
        Cancelled(Vec<TaskId>),
    }
    let layout = Layout::of(kernel)?;
    let mut cancelled = 0;
    let mut queue = VecDeque::from([root.clone()]);
    let mut first = true;
    while let Some(id) = queue.pop_front() {
        let step = optimistic(|| async {
            let Some((mut task, v)) = read_task(kernel, &id).await? else {
                return Ok::<_, StoreError>(Some(Step::Missing));
            };
            let children = task.children.clone();
            if task.status.is_terminal() {
                return Ok(Some(Step::Ended(children)));
            }
            task.status = TaskStatus::Cancelled;
            task.completed_at = Some(kernel.now());
            task.open_children.clear();
            task.queued_children.clear();
            let mut effects = Effects::new();
            effects.write(Write::put(
                layout.task(&id)?,
                to_value(&task)?,
                Precondition::Version(v),
            ));
            cancel_sla(kernel, &task, &mut effects)?;
            if first {
                // Within the subtree every delegator is cancelled too; only
                // the root's needs telling.
                send_result(
                    kernel,
                    &task,
                    Some(notice_id(&id, "cancelled")),
                    &mut effects,
                )?;
            }
            match kernel.commit(effects).await {
                Ok(()) => Ok(Some(Step::Cancelled(children))),
                // It moved: read again (its children may have grown).
                Err(e) if e.is_precondition_failure() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        match step {
            Some(Step::Missing) if first => {
                return Err(OperationError::NotFound {
                    what: format!("task {id}"),
                })
            }
            Some(Step::Ended(children)) => queue.extend(children),
            Some(Step::Cancelled(children)) => {
                cancelled += 1;
                queue.extend(children);
            }
            Some(Step::Missing) | None => {}
        }
        first = false;
    }
    Ok(cancelled)
}

/// The task a dead letter is about, if it is still dead-lettered: what
/// its requeue or discard changes.
async fn dead_lettered_task(
    kernel: &Kernel,
    record: &DeadLetterRecord,
) -> Result<Option<(TaskRecord, Version)>, StoreError> {
    let Some(task_id) = &record.task_id else {
        return Ok(None);
    };
    Ok(read_task(kernel, task_id)
        .await?
        .filter(|(task, _)| task.status == TaskStatus::DeadLettered))
}

/// The conditional write of `task`, as read at version `v`.
fn task_write(kernel: &Kernel, task: &TaskRecord, v: Version) -> Result<Write, StoreError> {
    Ok(Write::put(
        Layout::of(kernel)?.task(&task.task_id)?,
        to_value(task)?,
        Precondition::Version(v),
    ))
}

/// What goes with a task's dead letter being requeued: the task is pending
/// again.
pub(crate) async fn requeued(
    kernel: &Kernel,
    record: &DeadLetterRecord,
) -> Result<Effects, StoreError> {
    let mut effects = Effects::new();
    if let Some((mut task, v)) = dead_lettered_task(kernel, record).await? {
        task.status = TaskStatus::Pending;
        task.error = None;
        effects.write(task_write(kernel, &task, v)?);
    }
    Ok(effects)
}

/// What goes with a task's dead letter being discarded: the task fails, and
/// its delegator is told (so a parent waiting for it rolls up).
pub(crate) async fn discarded(
    kernel: &Kernel,
    record: &DeadLetterRecord,
) -> Result<Effects, StoreError> {
    let mut effects = Effects::new();
    if let Some((mut task, v)) = dead_lettered_task(kernel, record).await? {
        task.status = TaskStatus::Failed;
        task.error = Some(format!(
            "discarded after dead-lettering ({}: {})",
            record.reason_code, record.reason
        ));
        task.completed_at = Some(kernel.now());
        effects.write(task_write(kernel, &task, v)?);
        cancel_sla(kernel, &task, &mut effects)?;
        let notice = notice_id(&task.task_id, "discarded");
        send_result(kernel, &task, Some(notice), &mut effects)?;
    }
    Ok(effects)
}
