//! Operations on the task tree and the dead letters that the principal (or
//! an operator) performs, and the notices the runtime sends for them.
//!
//! A task's result always goes to its delegator from its assignee (the
//! sender a broker would enforce). When an operator cancels or discards a
//! task, the notice is written to the outbox *as the assignee*: the
//! operator's process publishes it at once if it may, and otherwise the
//! assignee's process does on its next sweep. The notice's id is derived
//! from the task, so however many times it is sent, it is handled once.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::context::ResultPayload;
use super::docs::{
    from_doc, to_value, DeadLetterRecord, DeadLetterStatus, ProcessRecord, TaskRecord, TaskStatus,
};
use super::outbox::{self, Entry};
use super::Shared;
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::name::Name;
use crate::store::{Precondition, StateStoreExt, StoreError, Version, Write};
use crate::subject::Subject;

/// An operation on the task tree or the dead letters failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// No such task or dead letter.
    #[error("{what} not found")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// It is not in a state that allows the operation (e.g. a dead letter
    /// already requeued, or one whose body was too large to keep whole).
    #[error("{message}")]
    InvalidState {
        /// Why not.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A deterministic message id for the notice `what` about `task`.
pub(crate) fn notice_id(task: &TaskId, what: &str) -> MessageId {
    let hash: String = Sha256::digest(format!("{what}:{task}").as_bytes())
        .iter()
        .take(13)
        .map(|b| format!("{b:02x}"))
        .collect();
    MessageId::parse(format!("n{hash}")).unwrap_or_else(|_| MessageId::new())
}

/// The result envelope of `task` (ended), from its assignee to its
/// delegator.
pub(crate) fn result_envelope(
    shared: &Shared,
    task: &TaskRecord,
    id: Option<MessageId>,
) -> Result<Envelope, StoreError> {
    let payload = ResultPayload {
        task_id: task.task_id.clone(),
        status: task.status,
        result: task.result.clone(),
        error: task.error.clone(),
    };
    let mut env = Envelope::new(
        shared.org().clone(),
        task.assigned_to.clone(),
        Kind::Result,
        to_value(&payload)?,
    )
    .with_to(task.assigned_by.clone())
    .with_correlation(task.task_id.clone())
    .with_created_at(shared.now());
    if let Some(id) = id {
        env = env.with_id(id);
    }
    Ok(env)
}

/// The outbox write and entry of `task`'s result, sent as its assignee.
pub(crate) fn result_entry(
    shared: &Shared,
    task: &TaskRecord,
    id: Option<MessageId>,
) -> Result<(Write, Entry), StoreError> {
    let env = result_envelope(shared, task, id)?;
    let subject = shared.subjects.inbox(&task.assigned_by, &task.assigned_to);
    outbox::entry(shared, &task.assigned_to, subject, &env)
}

async fn read_task(
    shared: &Shared,
    id: &TaskId,
) -> Result<Option<(TaskRecord, Version)>, StoreError> {
    match shared.store.get(&shared.layout.task(id)?).await? {
        Some(doc) => Ok(Some(from_doc(&doc)?)),
        None => Ok(None),
    }
}

/// Cancels `root` and its open subtree: every task of it not yet ended
/// becomes `cancelled` (each by a conditional write). The root's delegator
/// is told with a `cancelled` result. Returns how many tasks were
/// cancelled.
pub(crate) async fn cancel_subtree(
    shared: &Shared,
    root: &TaskId,
) -> Result<usize, OperationError> {
    let mut cancelled = 0;
    let mut queue = VecDeque::from([root.clone()]);
    let mut first = true;
    while let Some(id) = queue.pop_front() {
        let mut found = false;
        for _ in 0..16 {
            let Some((mut task, v)) = read_task(shared, &id).await? else {
                break;
            };
            found = true;
            queue.extend(task.children.iter().cloned());
            if task.status.is_terminal() {
                break;
            }
            task.status = TaskStatus::Cancelled;
            task.completed_at = Some(shared.now());
            task.open_children.clear();
            task.queued_children.clear();
            let mut writes = vec![Write::put(
                shared.layout.task(&id)?,
                to_value(&task)?,
                Precondition::Version(v),
            )];
            if task.sla_deadline.is_some() {
                writes.push(Write::delete(shared.layout.sla(&id)?, Precondition::None));
            }
            let mut entries = Vec::new();
            if first {
                // Within the subtree every delegator is cancelled too; only
                // the root's needs telling.
                let (w, e) = result_entry(shared, &task, Some(notice_id(&id, "cancelled")))?;
                writes.push(w);
                entries.push(e);
            }
            match shared.store.commit(writes).await {
                Ok(_) => {
                    cancelled += 1;
                    outbox::flush(shared, entries).await;
                    break;
                }
                Err(e) if e.is_precondition_failure() => {
                    // It moved: read again (its children may have grown).
                    queue.retain(|c| !task.children.contains(c));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if first && !found {
            return Err(OperationError::NotFound {
                what: format!("task {id}"),
            });
        }
        first = false;
    }
    Ok(cancelled)
}

async fn read_dead_letter(
    shared: &Shared,
    id: &MessageId,
) -> Result<(DeadLetterRecord, Version), OperationError> {
    match shared.store.get(&shared.layout.deadletter(id)?).await? {
        Some(doc) => Ok(from_doc(&doc)?),
        None => Err(OperationError::NotFound {
            what: format!("dead letter {id}"),
        }),
    }
}

/// Publishes a dead letter's original message again, as a new envelope
/// (a reused id would be swallowed by the broker's dedupe window) on its
/// original subject; its task, if any, becomes `pending` again. Returns the
/// new envelope's id.
pub(crate) async fn requeue(shared: &Shared, id: &MessageId) -> Result<MessageId, OperationError> {
    for _ in 0..16 {
        let (mut record, v) = read_dead_letter(shared, id).await?;
        if record.status != DeadLetterStatus::Open {
            return Err(OperationError::InvalidState {
                message: format!("dead letter {id} is {:?}, not open", record.status),
            });
        }
        let invalid = |m: &str| OperationError::InvalidState {
            message: format!("dead letter {id}: {m}"),
        };
        let body = record.original["body"]
            .as_str()
            .ok_or_else(|| invalid("its original was not kept whole (too large, or not text)"))?;
        let original = shared
            .codec
            .decode(body.as_bytes())
            .map_err(|e| invalid(&format!("its original is not a readable envelope ({e})")))?;
        let subject =
            Subject::parse(record.subject.clone()).map_err(|e| invalid(&e.to_string()))?;
        let fresh = original
            .clone()
            .with_id(MessageId::new())
            .with_header("agentorg-requeue-of", id.as_str());
        let mut writes = Vec::new();
        record.status = DeadLetterStatus::Requeued;
        writes.push(Write::put(
            shared.layout.deadletter(id)?,
            to_value(&record)?,
            Precondition::Version(v),
        ));
        if let Some(task_id) = &record.task_id {
            if let Some((mut task, tv)) = read_task(shared, task_id).await? {
                if task.status == TaskStatus::DeadLettered {
                    task.status = TaskStatus::Pending;
                    task.error = None;
                    writes.push(Write::put(
                        shared.layout.task(task_id)?,
                        to_value(&task)?,
                        Precondition::Version(tv),
                    ));
                }
            }
        }
        let (w, entry) = outbox::entry(shared, &original.from, subject, &fresh)?;
        writes.push(w);
        match shared.store.commit(writes).await {
            Ok(_) => {
                outbox::flush(shared, vec![entry]).await;
                return Ok(fresh.id);
            }
            Err(e) if e.is_precondition_failure() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OperationError::InvalidState {
        message: format!("dead letter {id} kept changing"),
    })
}

/// Gives a dead letter up: its task, if any, fails, and its delegator is
/// told (so a parent waiting for it rolls up).
pub(crate) async fn discard(shared: &Shared, id: &MessageId) -> Result<(), OperationError> {
    for _ in 0..16 {
        let (mut record, v) = read_dead_letter(shared, id).await?;
        if record.status != DeadLetterStatus::Open {
            return Err(OperationError::InvalidState {
                message: format!("dead letter {id} is {:?}, not open", record.status),
            });
        }
        record.status = DeadLetterStatus::Discarded;
        let mut writes = vec![Write::put(
            shared.layout.deadletter(id)?,
            to_value(&record)?,
            Precondition::Version(v),
        )];
        let mut entries = Vec::new();
        if let Some(task_id) = &record.task_id {
            if let Some((mut task, tv)) = read_task(shared, task_id).await? {
                if task.status == TaskStatus::DeadLettered {
                    task.status = TaskStatus::Failed;
                    task.error = Some(format!(
                        "discarded after dead-lettering ({}: {})",
                        record.reason_code, record.reason
                    ));
                    task.completed_at = Some(shared.now());
                    writes.push(Write::put(
                        shared.layout.task(task_id)?,
                        to_value(&task)?,
                        Precondition::Version(tv),
                    ));
                    if task.sla_deadline.is_some() {
                        writes.push(Write::delete(
                            shared.layout.sla(task_id)?,
                            Precondition::None,
                        ));
                    }
                    let (w, e) =
                        result_entry(shared, &task, Some(notice_id(task_id, "discarded")))?;
                    writes.push(w);
                    entries.push(e);
                }
            }
        }
        match shared.store.commit(writes).await {
            Ok(_) => {
                outbox::flush(shared, entries).await;
                return Ok(());
            }
            Err(e) if e.is_precondition_failure() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OperationError::InvalidState {
        message: format!("dead letter {id} kept changing"),
    })
}

/// Whether a role is up: which processes host it and when one was last
/// seen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleLiveness {
    /// The role.
    pub role: Name,
    /// Whether a process hosting it sent a heartbeat recently (within three
    /// sweep intervals).
    pub up: bool,
    /// How many live processes host it (its replicas).
    pub replicas: usize,
    /// The latest heartbeat of a process hosting it.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// The liveness of every role of the chart, from the processes' heartbeats.
pub(crate) async fn liveness(shared: &Shared) -> Result<Vec<RoleLiveness>, StoreError> {
    let now = shared.now();
    let fresh_within = chrono::TimeDelta::from_std(shared.config.sweep_interval * 3)
        .unwrap_or(chrono::TimeDelta::MAX);
    let mut processes = Vec::new();
    for doc in shared.store.list_all(shared.layout.processes()).await? {
        if let Ok((p, _)) = from_doc::<ProcessRecord>(&doc) {
            processes.push(p);
        }
    }
    Ok(shared
        .chart
        .roles()
        .map(|r| {
            let hosts: Vec<&ProcessRecord> = processes
                .iter()
                .filter(|p| p.roles.contains(r.name()))
                .collect();
            let live = hosts
                .iter()
                .filter(|p| now - p.last_seen <= fresh_within)
                .count();
            RoleLiveness {
                role: r.name().clone(),
                up: live > 0,
                replicas: live,
                last_seen: hosts.iter().map(|p| p.last_seen).max(),
            }
        })
        .collect())
}

/// A dead letter's `original` field: the body whole when it fits the
/// budget, else a prefix and a hash.
pub(crate) fn original_body(raw: &Bytes, whole: bool) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if whole {
        return match std::str::from_utf8(raw) {
            Ok(s) => json!({ "body": s }),
            Err(_) => json!({ "body_base64": b64.encode(raw) }),
        };
    }
    let digest: String = Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({
        "truncated": true,
        "prefix_base64": b64.encode(&raw[..raw.len().min(4096)]),
        "sha256": digest,
        "size": raw.len(),
    })
}
