//! The documents the runtime keeps in the StateStore, and where.
//!
//! ```text
//! agentorg/<org>/tasks/<task id>                 TaskDoc: the task tree, one document per task
//! agentorg/<org>/breakers/<role>                 BreakerDoc: a role's circuit breaker
//! agentorg/<org>/claims/<role>.<msg id>          ClaimDoc: who processes a message, attempt, lease
//! agentorg/<org>/outbox/<msg id>                OutboxDoc: a message committed but maybe not yet published
//! agentorg/<org>/deadletters/<dead letter id>    DeadLetterRecord: a dead letter, to list, requeue or discard
//! agentorg/<org>/slas/<task id>                  SlaRecord: an open task's SLA deadline, watched by its delegator
//! agentorg/<org>/idempotency/<role>.<key hash>   the task a delegator's idempotency key created
//! agentorg/<org>/agents/<role>                   AgentRecord: a role's registry entry
//! agentorg/<org>/processes/<instance>            ProcessRecord: a running process and the roles it hosts
//! ```

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{MessageId, TaskId};
use crate::name::Name;
use crate::store::{CollectionPath, DocKey, Document, StoreError, Version};

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
    pub created_at: DateTime<Utc>,
    /// When its assignee started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// The trace context it was delegated under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Subtasks delegated as a batch, waiting for a slot (published as
    /// earlier ones finish, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_children: Vec<TaskId>,
    /// When its SLA runs out (delegation time plus `sla_minutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_deadline: Option<DateTime<Utc>>,
}

/// What became of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterStatus {
    /// Waiting for someone to requeue or discard it.
    Open,
    /// Published again as a new envelope.
    Requeued,
    /// Given up: its task (if any) failed.
    Discarded,
}

/// A dead letter, as kept in the store for operations: why, after how many
/// attempts, and the original message (whole when it fit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetterRecord {
    /// The id of the dead-letter envelope published on `<org>.deadletter`.
    pub dead_letter_id: MessageId,
    /// The original envelope's id, if it could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<MessageId>,
    /// The subject the original was delivered on.
    pub subject: String,
    /// The role that dead-lettered it (whose inbox it was in).
    pub role: Name,
    /// The original's sender, if it could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Name>,
    /// The task it carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// A short code: `attempts_exhausted`, `malformed`, `sender_mismatch`, …
    pub reason_code: String,
    /// What happened.
    pub reason: String,
    /// Attempts made before it was dead-lettered.
    pub attempts: u32,
    /// Open, requeued or discarded.
    pub status: DeadLetterStatus,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// The original message: `{"body": …}` or `{"body_base64": …}` when
    /// whole, else `{"truncated": true, "prefix_base64", "sha256", "size"}`.
    pub original: Value,
}

/// An open task's SLA, watched by the process hosting its delegator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlaRecord {
    pub(crate) task_id: TaskId,
    pub(crate) delegator: Name,
    pub(crate) assignee: Name,
    pub(crate) deadline: DateTime<Utc>,
    /// Set once the breach was reported (by whichever process saw it first).
    #[serde(default)]
    pub(crate) breached: bool,
}

/// A role's registry entry (the seed's `agents/{id}`), folded from every
/// process hosting it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct AgentRecord {
    /// The role.
    pub agent_id: String,
    /// The task it handled last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<TaskId>,
    /// Tasks it completed.
    #[serde(default)]
    pub tasks_completed: u64,
    /// Tasks that ended failed or dead-lettered.
    #[serde(default)]
    pub tasks_failed: u64,
    /// When it last finished a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<DateTime<Utc>>,
    /// Its capabilities, from the chart.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Time spent in its handlers, in milliseconds.
    #[serde(default)]
    pub execution_ms: u64,
    /// Tokens its handlers reported using.
    #[serde(default)]
    pub tokens: u64,
    /// Cost its handlers reported, in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
}

/// A running process of the org: which roles it hosts, and when it was last
/// seen (its heartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessRecord {
    /// The process's claim-owner id.
    pub instance: String,
    /// The roles it hosts.
    pub roles: Vec<Name>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
}

/// The state of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClaimState {
    /// A process runs the handler until `lease_until`.
    Running,
    /// The last attempt failed transiently; the next delivery may take it.
    Released,
    /// Processed; redeliveries are acknowledged without running.
    Done,
    /// Dead-lettered; redeliveries are terminated.
    DeadLettered,
}

/// Who processes a message, which attempt this is, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClaimDoc {
    pub(crate) state: ClaimState,
    pub(crate) owner: String,
    /// Runs of the handler so far (the last one may be in progress).
    pub(crate) attempts: u32,
    /// Times the message was put back unread because it is of a newer
    /// format version (counted apart, so a rolling update does not spend the
    /// handler's attempts).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) deferrals: u32,
    pub(crate) lease_until: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
    /// For a settled claim: when it may be deleted (the runtime's sweep does;
    /// on Firestore a TTL policy on this field can too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A message committed with state, to be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxDoc {
    /// The role that sends it (only a process hosting that role republishes).
    pub(crate) role: Name,
    pub(crate) subject: String,
    /// The encoded envelope (a string, so any payload fits the limits).
    pub(crate) envelope: String,
    pub(crate) created_at: DateTime<Utc>,
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
    pub opened_at: Option<DateTime<Utc>>,
    /// When the cool-down ends (open) or the probe's time is up (half-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Where the runtime's documents of one org live.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    tasks: CollectionPath,
    breakers: CollectionPath,
    outbox: CollectionPath,
    claims: CollectionPath,
    deadletters: CollectionPath,
    slas: CollectionPath,
    idempotency: CollectionPath,
    agents: CollectionPath,
    processes: CollectionPath,
}

impl Layout {
    pub(crate) fn new(org: &Name) -> Result<Self, StoreError> {
        Ok(Self {
            tasks: CollectionPath::new(format!("agentorg/{org}/tasks"))?,
            breakers: CollectionPath::new(format!("agentorg/{org}/breakers"))?,
            outbox: CollectionPath::new(format!("agentorg/{org}/outbox"))?,
            claims: CollectionPath::new(format!("agentorg/{org}/claims"))?,
            deadletters: CollectionPath::new(format!("agentorg/{org}/deadletters"))?,
            slas: CollectionPath::new(format!("agentorg/{org}/slas"))?,
            idempotency: CollectionPath::new(format!("agentorg/{org}/idempotency"))?,
            agents: CollectionPath::new(format!("agentorg/{org}/agents"))?,
            processes: CollectionPath::new(format!("agentorg/{org}/processes"))?,
        })
    }

    pub(crate) fn task(&self, id: &MessageId) -> Result<DocKey, StoreError> {
        self.tasks.doc(id.as_str())
    }

    pub(crate) fn breaker(&self, role: &Name) -> Result<DocKey, StoreError> {
        self.breakers.doc(role.as_str())
    }

    /// A role's claim on a message: `<role>.<msg id>` (neither a name nor
    /// a message id contains a dot, so the two parts never run together).
    pub(crate) fn claim(&self, role: &Name, msg: &str) -> Result<DocKey, StoreError> {
        self.claims.doc(format!("{role}.{msg}"))
    }

    pub(crate) fn claims(&self) -> &CollectionPath {
        &self.claims
    }

    pub(crate) fn deadletters(&self) -> &CollectionPath {
        &self.deadletters
    }

    pub(crate) fn deadletter(&self, id: &MessageId) -> Result<DocKey, StoreError> {
        self.deadletters.doc(id.as_str())
    }

    pub(crate) fn slas(&self) -> &CollectionPath {
        &self.slas
    }

    pub(crate) fn sla(&self, task: &MessageId) -> Result<DocKey, StoreError> {
        self.slas.doc(task.as_str())
    }

    /// The index entry of `role`'s idempotency `key` (hashed: keys are free
    /// text).
    pub(crate) fn idempotency(&self, role: &Name, key: &str) -> Result<DocKey, StoreError> {
        use sha2::{Digest, Sha256};
        let hash: String = Sha256::digest(key.as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.idempotency.doc(format!("{role}.{hash}"))
    }

    pub(crate) fn agent(&self, role: &Name) -> Result<DocKey, StoreError> {
        self.agents.doc(role.as_str())
    }

    pub(crate) fn processes(&self) -> &CollectionPath {
        &self.processes
    }

    pub(crate) fn process(&self, instance: &str) -> Result<DocKey, StoreError> {
        self.processes.doc(instance)
    }

    pub(crate) fn outbox(&self) -> &CollectionPath {
        &self.outbox
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The backend name of the error for a runtime document this build cannot
/// read (probably written by a newer version during a rolling update).
pub(crate) const UNREADABLE: &str = "agentorg-runtime (unreadable document)";

/// The longest error text kept in a claim, task or dead letter.
pub(crate) const MAX_ERROR_LEN: usize = 4096;

/// `text` cut to [`MAX_ERROR_LEN`] bytes (on a character boundary).
pub(crate) fn clip(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Serializes a stored document.
pub(crate) fn to_value<T: Serialize>(doc: &T) -> Result<Value, StoreError> {
    serde_json::to_value(doc).map_err(|e| StoreError::InvalidInput {
        key: None,
        message: format!("cannot serialize: {e}"),
    })
}

/// Deserializes a stored document; an unreadable one is an error of backend
/// [`UNREADABLE`] naming it.
pub(crate) fn from_doc<T: DeserializeOwned>(doc: &Document) -> Result<(T, Version), StoreError> {
    serde_json::from_value(doc.value.clone())
        .map(|t| (t, doc.version))
        .map_err(|e| StoreError::Other {
            backend: UNREADABLE,
            source: format!("{}: {e}", doc.key).into(),
        })
}
