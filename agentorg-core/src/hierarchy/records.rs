//! The hierarchy's records in the store, and where.
//!
//! ```text
//! agentorg/<org>/tasks/<task id>                 TaskRecord: the task tree, one record per task
//! agentorg/<org>/breakers/<role>                 BreakerRecord: a role's circuit breaker
//! agentorg/<org>/idempotency/<role>.<key hash>   the task a delegator's idempotency key created
//! ```
//!
//! A task's SLA deadline is a kernel timer of kind `sla`, owned by its
//! delegator (see [`sla`](super::sla)).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{MessageId, TaskId};
use crate::name::Name;
use crate::runtime::Kernel;
use crate::store::{CollectionPath, DocKey, StoreError, Version};

/// The status of a task.
///
/// `Completed`, `Failed` and `Cancelled` are terminal: a task never leaves
/// them. `DeadLettered` is not: a requeue makes the task `Pending` again, a
/// discard makes it `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskStatus {
    /// Written, published or about to be, not yet started.
    Pending,
    /// Its assignee is working on it (or waiting for its subtasks).
    InProgress,
    /// Waiting on something outside the org.
    Blocked,
    /// Its message exhausted its attempts; see the dead letters.
    DeadLettered,
    /// Done, with a result.
    Completed,
    /// Ended with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl TaskStatus {
    /// Whether the task can never change status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Blocked => "blocked",
            Self::DeadLettered => "dead_lettered",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as stored: one document per task of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskRecord {
    /// Its id (also the id of the envelope that delegated it).
    pub task_id: TaskId,
    /// What to do.
    pub title: String,
    /// Its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Its input.
    #[serde(default)]
    pub input: Value,
    /// The task it is a subtask of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TaskId>,
    /// Its subtasks, in delegation order.
    #[serde(default)]
    pub children: Vec<TaskId>,
    /// Subtasks that have not reported back yet.
    #[serde(default)]
    pub open_children: Vec<TaskId>,
    /// Who delegated it.
    pub assigned_by: Name,
    /// Who works on it.
    pub assigned_to: Name,
    /// Who it was delegated to, when a breaker rerouted it to an alternate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_to: Option<Name>,
    /// Its status.
    pub status: TaskStatus,
    /// Its SLA in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_minutes: Option<u64>,
    /// Minutes from start to end, rounded to the nearest minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_minutes: Option<u64>,
    /// When it was delegated.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
    /// When its assignee started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Its result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it is the probe of a half-open breaker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    /// Whether its assignee's breaker had counted no failure when it was
    /// delegated (then its completion has no failure to reset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breaker_clear: bool,
    /// The trace context it was delegated under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Subtasks delegated as a batch, waiting for a slot (published as
    /// earlier ones finish, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_children: Vec<TaskId>,
    /// When its SLA runs out (delegation time plus `sla_minutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub sla_deadline: Option<DateTime<Utc>>,
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Delegations flow.
    Closed,
    /// Delegations are refused or rerouted until the cool-down ends.
    Open,
    /// One probe task is out; the rest are refused or rerouted.
    HalfOpen,
}

/// A role's circuit breaker, shared by all its replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerRecord {
    /// Its state.
    pub state: BreakerState,
    /// Tasks in a row that ended failed or dead-lettered.
    pub consecutive_failures: u32,
    /// When it last opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub opened_at: Option<DateTime<Utc>>,
    /// When the cool-down ends (open) or the probe's time is up (half-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub until: Option<DateTime<Utc>>,
    /// The probe task, when half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_task: Option<TaskId>,
}

impl Default for BreakerRecord {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            until: None,
            probe_task: None,
        }
    }
}

/// The payload of a task envelope: the task as delegated. The task document
/// record in the store is the source of truth; the payload lets a receiver see the
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

/// The index entry of an idempotency key: the task it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IdempotencyEntry {
    pub(crate) task_id: TaskId,
    pub(crate) assigned_to: Name,
}

/// Where the hierarchy's records of one org live.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    tasks: CollectionPath,
    breakers: CollectionPath,
    idempotency: CollectionPath,
}

impl Layout {
    /// The layout of `kernel`'s org (made once per org).
    pub(crate) fn of(kernel: &Kernel) -> Result<std::sync::Arc<Self>, StoreError> {
        kernel.cached(|k| {
            Ok(Self {
                tasks: k.collection("tasks")?,
                breakers: k.collection("breakers")?,
                idempotency: k.collection("idempotency")?,
            })
        })
    }

    pub(crate) fn task(&self, id: &MessageId) -> Result<DocKey, StoreError> {
        self.tasks.doc(id.as_str())
    }

    pub(crate) fn breaker(&self, role: &Name) -> Result<DocKey, StoreError> {
        self.breakers.doc(role.as_str())
    }

    /// The index entry of `role`'s idempotency `key` (hashed: keys are free
    /// text).
    pub(crate) fn idempotency(&self, role: &Name, key: &str) -> Result<DocKey, StoreError> {
        use sha2::{Digest, Sha256};
        let hash = crate::hex::hex(&Sha256::digest(key.as_bytes()), 32);
        self.idempotency.doc(format!("{role}.{hash}"))
    }
}

/// Reads a task record with its version.
pub(crate) async fn read_task(
    kernel: &Kernel,
    id: &TaskId,
) -> Result<Option<(TaskRecord, Version)>, StoreError> {
    kernel.read(&Layout::of(kernel)?.task(id)?).await
}

/// `kept` (the task as this delivery last read or wrote it, with its
/// version) if there is one, else the task as stored.
pub(crate) async fn kept_or_read(
    kernel: &Kernel,
    kept: Option<(TaskRecord, Version)>,
    id: &TaskId,
) -> Result<Option<(TaskRecord, Version)>, StoreError> {
    match kept {
        Some(x) => Ok(Some(x)),
        None => read_task(kernel, id).await,
    }
}

/// Serializes, within this process, the roll-ups of subtask results into
/// one parent task: they would otherwise contend on its record (each loser
/// a conflict, a read and a retry). The record as last committed here is
/// kept for the next roll-up into the same parent, so each commits on it
/// without reading it again (for up to [`ROLLUP_CACHE`] parents at a time);
/// across processes its conditional write still decides (a conflict reads
/// it afresh).
#[derive(Debug, Default)]
pub(crate) struct RollupLocks {
    map: std::sync::Mutex<HashMap<TaskId, Arc<Slot>>>,
}

/// How many parents' records the roll-ups of one process keep at most.
pub(crate) const ROLLUP_CACHE: usize = 1024;

type Slot = tokio::sync::Mutex<Option<(TaskRecord, Version)>>;

/// Held while a result rolls up into `parent`: the parent's record as last
/// committed by the roll-up before it, if any.
pub(crate) struct RollupGuard {
    locks: Arc<RollupLocks>,
    parent: TaskId,
    slot: Arc<Slot>,
    guard: Option<tokio::sync::OwnedMutexGuard<Option<(TaskRecord, Version)>>>,
}

impl RollupLocks {
    /// The locks of `kernel`'s org in this process.
    pub(crate) fn of(kernel: &Kernel) -> Arc<Self> {
        match kernel.cached(|_| Ok::<_, std::convert::Infallible>(Self::default())) {
            Ok(locks) => locks,
            Err(never) => match never {},
        }
    }

    /// Waits for the roll-ups into `parent` before this one.
    pub(crate) async fn lock(self: &Arc<Self>, parent: &TaskId) -> RollupGuard {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= ROLLUP_CACHE && !map.contains_key(parent) {
                // Forget the parents nobody is rolling up into now.
                map.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            Arc::clone(map.entry(parent.clone()).or_default())
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        RollupGuard {
            locks: Arc::clone(self),
            parent: parent.clone(),
            slot,
            guard: Some(guard),
        }
    }
}

impl RollupGuard {
    /// The parent's record as the previous roll-up committed it (taken).
    pub(crate) fn take(&mut self) -> Option<(TaskRecord, Version)> {
        self.guard.as_mut().and_then(|g| g.take())
    }

    /// The parent's record as this roll-up committed it, for the next.
    pub(crate) fn keep(&mut self, record: TaskRecord, version: Version) {
        if let Some(g) = self.guard.as_mut() {
            **g = Some((record, version));
        }
    }
}

impl Drop for RollupGuard {
    fn drop(&mut self) {
        let kept = self.guard.take().is_some_and(|g| g.is_some());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nothing kept and nobody waiting (only the map and this guard hold
        // it): forget it.
        if !kept && Arc::strong_count(&self.slot) == 2 {
            map.remove(&self.parent);
        }
    }
}
