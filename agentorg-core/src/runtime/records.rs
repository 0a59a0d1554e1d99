//! The records the kernel keeps in the StateStore, and where.
//!
//! ```text
//! agentorg/<org>/claims/<role>.<msg id>              ClaimDoc: who processes a message, attempt, lease
//! agentorg/<org>/outbox/<msg id>                    OutboxDoc: a message committed but maybe not yet published
//! agentorg/<org>/deadletters/<dead letter id>        DeadLetterRecord: a dead letter, to list, requeue or discard
//! agentorg/<org>/timers/<owner>/due/<due>.<kind>.<key>  TimerRecord: a durable timer, due at <due>
//! agentorg/<org>/agents/<role>                       AgentRecord: a role's registry entry
//! agentorg/<org>/processes/<instance>                ProcessRecord: a running process and the roles it hosts
//! agentorg/<org>/roles/<role>/…                      a role's own namespace (`Context::store`)
//! ```
//!
//! The patterns keep their records beside these (the hierarchy's tasks,
//! breakers and idempotency keys), each in collections of its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{MessageId, TaskId};
use crate::name::Name;
use crate::store::{CollectionPath, DocKey, Document, StoreError, Version};

/// What became of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterStatus {
    /// Waiting for someone to requeue or discard it.
    Open,
    /// Published again as a new envelope.
    Requeued,
    /// Given up: its work item (a task, say) failed.
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
    /// The role that dead-lettered it (whose consumer it came from).
    pub role: Name,
    /// The original's sender, if it could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Name>,
    /// The work item it carried, as its pattern's handler named it (for the
    /// hierarchy, the task).
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
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
    /// The original message: `{"body": …}` or `{"body_base64": …}` when
    /// whole, else `{"truncated": true, "prefix_base64", "sha256", "size"}`.
    pub original: Value,
}

/// A role's registry entry (GenBrain's `agents/{id}` document), folded from
/// every process hosting it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct AgentRecord {
    /// The role.
    pub agent_id: String,
    /// The work item (task) it handled last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<TaskId>,
    /// Work items (tasks) it completed.
    #[serde(default)]
    pub tasks_completed: u64,
    /// Work items (tasks) that ended failed or dead-lettered.
    #[serde(default)]
    pub tasks_failed: u64,
    /// When it last finished a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
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
    /// Model usage by the model that answered (its name: a catalog entry,
    /// say), as reported through
    /// [`Context::report_model_usage`](super::Context::report_model_usage);
    /// also counted in `tokens` and `cost_usd`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, ModelUsage>,
}

/// Tokens and cost spent (a role's, or a task's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct Spent {
    /// Tokens, in and out.
    #[serde(default)]
    pub tokens: u64,
    /// Cost, in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
}

impl Spent {
    /// `tokens` and `cost_usd` spent.
    pub fn new(tokens: u64, cost_usd: f64) -> Self {
        Self { tokens, cost_usd }
    }

    /// Adds a model call's usage (tokens saturate).
    pub fn add(&mut self, used: &ModelUsage) {
        self.tokens = self.tokens.saturating_add(used.tokens());
        self.cost_usd += used.cost_usd;
    }
}

/// What a role's model calls used, for one model of its registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ModelUsage {
    /// Calls answered.
    #[serde(default)]
    pub calls: u64,
    /// Tokens in (prompts).
    #[serde(default)]
    pub input_tokens: u64,
    /// Tokens out (answers).
    #[serde(default)]
    pub output_tokens: u64,
    /// Their cost, in US dollars (0 without a price).
    #[serde(default)]
    pub cost_usd: f64,
}

impl ModelUsage {
    /// One call's usage.
    pub fn call(input_tokens: u64, output_tokens: u64, cost_usd: f64) -> Self {
        Self {
            calls: 1,
            input_tokens,
            output_tokens,
            cost_usd: if cost_usd.is_finite() && cost_usd >= 0.0 {
                cost_usd
            } else {
                0.0
            },
        }
    }

    /// All its tokens, in and out (saturating).
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Adds `other` (counts saturate).
    pub fn add(&mut self, other: &ModelUsage) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
    }
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
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub last_seen: DateTime<Utc>,
}

/// A durable timer: due at `due`, fired once by a process that hosts its
/// `owner`, by the handler registered for its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimerRecord {
    /// The kind, which names the handler (e.g. `sla`).
    pub kind: Name,
    /// The role whose processes fire it (the principal's: the provisioning
    /// process).
    pub owner: Name,
    /// What it is about, unique within the kind and owner (e.g. a task id).
    pub key: String,
    /// When it is due.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub due: DateTime<Utc>,
    /// What its handler needs.
    #[serde(default)]
    pub payload: Value,
}

impl TimerRecord {
    /// A timer of `kind` for `owner` about `key`, due at `due`.
    pub fn new(
        kind: Name,
        owner: Name,
        key: impl Into<String>,
        due: DateTime<Utc>,
        payload: Value,
    ) -> Self {
        Self {
            kind,
            owner,
            key: key.into(),
            due,
            payload,
        }
    }
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
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub(crate) lease_until: DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub(crate) updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
    /// For a settled claim: when it may be deleted (the runtime's sweep does;
    /// on Firestore a TTL policy on this field can too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timefmt::option")]
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A message committed with state, to be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxDoc<'a> {
    /// The role that sends it (only a process hosting that role republishes).
    pub(crate) role: Name,
    pub(crate) subject: String,
    /// The encoded envelope (a string, so any payload fits the limits;
    /// borrowed from the encoding when written, owned when read).
    pub(crate) envelope: std::borrow::Cow<'a, str>,
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub(crate) created_at: DateTime<Utc>,
}

/// Where the kernel's records of one org live.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    org: Name,
    outbox: CollectionPath,
    claims: CollectionPath,
    deadletters: CollectionPath,
    agents: CollectionPath,
    processes: CollectionPath,
}

impl Layout {
    pub(crate) fn new(org: &Name) -> Result<Self, StoreError> {
        Ok(Self {
            org: org.clone(),
            outbox: org_collection(org, "outbox")?,
            claims: org_collection(org, "claims")?,
            deadletters: org_collection(org, "deadletters")?,
            agents: org_collection(org, "agents")?,
            processes: org_collection(org, "processes")?,
        })
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

    /// The timers `owner`'s processes fire, in due order.
    pub(crate) fn timers(&self, owner: &Name) -> Result<CollectionPath, StoreError> {
        CollectionPath::new(format!("agentorg/{}/timers/{owner}/due", self.org))
    }

    /// A timer's key: its id starts with its due time in milliseconds,
    /// zero-padded, so listing the collection yields the earliest first.
    pub(crate) fn timer(&self, t: &TimerRecord) -> Result<DocKey, StoreError> {
        let ms = t.due.timestamp_millis().max(0);
        self.timers(&t.owner)?
            .doc(format!("{ms:015}.{}.{}", t.kind, t.key))
    }
}

/// `agentorg/<org>/<name>`: a collection of the org's records.
pub fn org_collection(org: &Name, name: &str) -> Result<CollectionPath, StoreError> {
    CollectionPath::new(format!("agentorg/{org}/{name}"))
}

/// `agentorg/<org>/roles/<role>/<name>`: a collection in `role`'s own
/// namespace, the only part of the store a role's
/// [`Context::store`](super::Context::store) reaches.
pub fn role_collection(org: &Name, role: &Name, name: &str) -> Result<CollectionPath, StoreError> {
    CollectionPath::new(format!("{}/{name}", role_namespace(org, role)))
}

/// The prefix of `role`'s namespace: `agentorg/<org>/roles/<role>`.
pub(crate) fn role_namespace(org: &Name, role: &Name) -> String {
    format!("agentorg/{org}/roles/{role}")
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The backend name of the error for a runtime document this build cannot
/// read (probably written by a newer version during a rolling update).
pub(crate) const UNREADABLE: &str = "agentorg-runtime (unreadable document)";

/// The longest error text kept in a claim, task or dead letter.
pub const MAX_ERROR_LEN: usize = 4096;

/// `text` cut to [`MAX_ERROR_LEN`] bytes (on a character boundary).
pub fn clip(mut text: String) -> String {
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

/// Serializes a stored record.
pub fn to_value<T: Serialize>(doc: &T) -> Result<Value, StoreError> {
    serde_json::to_value(doc).map_err(|e| StoreError::InvalidInput {
        key: None,
        message: format!("cannot serialize: {e}"),
    })
}

/// Deserializes `value` as a `T` without copying it first (as
/// `serde_json::from_value` of a clone would).
pub(crate) fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(value)
}

/// Deserializes a stored record with its version; an unreadable one is an
/// error ([`Fault::Unreadable`](super::Fault::Unreadable) once converted)
/// naming it.
pub fn from_doc<T: DeserializeOwned>(doc: &Document) -> Result<(T, Version), StoreError> {
    from_json(&doc.value)
        .map(|t| (t, doc.version))
        .map_err(|e| StoreError::Other {
            backend: UNREADABLE,
            source: format!("{}: {e}", doc.key).into(),
        })
}

/// `now + d`, saturating at the end of time.
pub(crate) fn add(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
