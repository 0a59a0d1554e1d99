//! Operations on dead letters that the principal (or an operator) performs,
//! and the liveness view.
//!
//! What a dead letter's work item needs along with its requeue or discard
//! (a task made `pending` again, or failed with its delegator told) comes
//! from the handler its subject routes to, committed in the same commit.

use super::kernel::{Effects, Kernel};
use super::records::{from_doc, to_value, DeadLetterRecord, DeadLetterStatus, ProcessRecord};
use super::retry::optimistic;
use super::seam::Handler;
use crate::envelope::MessageId;
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

async fn read_dead_letter(
    kernel: &Kernel,
    id: &MessageId,
) -> Result<(DeadLetterRecord, Version), OperationError> {
    match kernel.read(&kernel.layout.deadletter(id)?).await? {
        Some(found) => Ok(found),
        None => Err(OperationError::NotFound {
            what: format!("dead letter {id}"),
        }),
    }
}

/// An open dead letter with its version, or why it cannot be operated on.
async fn open_dead_letter(
    kernel: &Kernel,
    id: &MessageId,
) -> Result<(DeadLetterRecord, Version), OperationError> {
    let (record, v) = read_dead_letter(kernel, id).await?;
    if record.status != DeadLetterStatus::Open {
        return Err(OperationError::InvalidState {
            message: format!("dead letter {id} is {:?}, not open", record.status),
        });
    }
    Ok((record, v))
}

/// The handler a dead letter's subject routes to, for its role.
fn handler_of<'k>(kernel: &'k Kernel, record: &DeadLetterRecord) -> Option<&'k dyn Handler> {
    let subject = Subject::parse(record.subject.clone()).ok()?;
    kernel
        .handler_for(&record.role, &subject)
        .map(AsRef::as_ref)
}

fn kept_changing(id: &MessageId) -> OperationError {
    OperationError::InvalidState {
        message: format!("dead letter {id} kept changing"),
    }
}

/// Publishes a dead letter's original message again, as a new envelope
/// (a reused id would be swallowed by the broker's dedupe window) on its
/// original subject, with what its handler commits along. Returns the new
/// envelope's id.
pub(crate) async fn requeue(kernel: &Kernel, id: &MessageId) -> Result<MessageId, OperationError> {
    let requeued = optimistic(|| async {
        let (mut record, v) = open_dead_letter(kernel, id).await?;
        let invalid = |m: &str| OperationError::InvalidState {
            message: format!("dead letter {id}: {m}"),
        };
        let body = record.original["body"]
            .as_str()
            .ok_or_else(|| invalid("its original was not kept whole (too large, or not text)"))?;
        let original = kernel
            .codec
            .decode(body.as_bytes())
            .map_err(|e| invalid(&format!("its original is not a readable envelope ({e})")))?;
        let subject =
            Subject::parse(record.subject.clone()).map_err(|e| invalid(&e.to_string()))?;
        let mut fresh = original
            .clone()
            .with_id(MessageId::new())
            .with_header("agentorg-requeue-of", id.as_str());
        // An envelope addressed to no one went to every taker of its
        // subject (an event, to each subscriber): its requeue is for the
        // role that dead-lettered it only, and the others' handlers pass it
        // over.
        if fresh.to.is_none() {
            fresh = fresh.with_to(record.role.clone());
        }
        let mut effects = match handler_of(kernel, &record) {
            Some(h) => h.requeued(kernel, &record).await?,
            None => Effects::new(),
        };
        record.status = DeadLetterStatus::Requeued;
        effects.write(Write::put(
            kernel.layout.deadletter(id)?,
            to_value(&record)?,
            Precondition::Version(v),
        ));
        effects.send(subject, fresh.clone());
        match kernel.commit(effects).await {
            Ok(()) => Ok::<_, OperationError>(Some(fresh.id)),
            Err(e) if e.is_precondition_failure() => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    requeued.ok_or_else(|| kept_changing(id))
}

/// Gives a dead letter up, with what its handler commits along (its task
/// failed, and its delegator told).
pub(crate) async fn discard(kernel: &Kernel, id: &MessageId) -> Result<(), OperationError> {
    let discarded = optimistic(|| async {
        let (mut record, v) = open_dead_letter(kernel, id).await?;
        let mut effects = match handler_of(kernel, &record) {
            Some(h) => h.discarded(kernel, &record).await?,
            None => Effects::new(),
        };
        record.status = DeadLetterStatus::Discarded;
        effects.write(Write::put(
            kernel.layout.deadletter(id)?,
            to_value(&record)?,
            Precondition::Version(v),
        ));
        match kernel.commit(effects).await {
            Ok(()) => Ok::<_, OperationError>(Some(())),
            Err(e) if e.is_precondition_failure() => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    discarded.ok_or_else(|| kept_changing(id))
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
pub(crate) async fn liveness(kernel: &Kernel) -> Result<Vec<RoleLiveness>, StoreError> {
    let now = kernel.now();
    let fresh_within = chrono::TimeDelta::from_std(kernel.config.sweep_interval * 3)
        .unwrap_or(chrono::TimeDelta::MAX);
    let mut processes = Vec::new();
    for doc in kernel.store.list_all(kernel.layout.processes()).await? {
        if let Ok((p, _)) = from_doc::<ProcessRecord>(&doc) {
            processes.push(p);
        }
    }
    Ok(kernel
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
