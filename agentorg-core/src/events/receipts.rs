//! Delivery receipts: the subscribers an event was published to, and what
//! each of them did with it.
//!
//! An event's record (`agentorg/<org>/events/<id>`) is written with its
//! publish and names the subscribers the publisher's chart gave it then.
//! Each subscriber writes its own receipt
//! (`agentorg/<org>/events/<id>/receipts/<role>`) in the commit that settles
//! its handling — processed with the outcome, dead-lettered with the dead
//! letter, a failed attempt in a commit of its own before the retry — so
//! subscribers never write the same document. A timer deletes the record
//! and its receipts after [`RECEIPT_RETENTION`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::EventError;
use crate::envelope::{Envelope, MessageId};
use crate::name::Name;
use crate::runtime::{
    from_json, org_collection, to_value, Effects, Fault, Kernel, Principal, TimerHandler,
    TimerRecord,
};
use crate::store::{CollectionPath, DocKey, Precondition, StateStoreExt, StoreError, Write};

/// How long an event's record and receipts are kept after its publish.
pub const RECEIPT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The timer kind that deletes an event's record and receipts.
pub(crate) const RETENTION_TIMER: &str = "event-receipts";

/// The header that carries an event's id through a requeue (which gives
/// the envelope a new id): receipts are about the event as published.
pub(crate) const EVENT_ID_HEADER: &str = "agentorg-event-id";

/// An event as recorded at its publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub(crate) name: String,
    pub(crate) from: Name,
    /// The subscribers the publisher's chart gave it, sorted.
    pub(crate) subscribers: Vec<Name>,
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub(crate) published_at: DateTime<Utc>,
}

/// What a subscriber did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReceiptStatus {
    /// Handled: its outcome is committed.
    Processed,
    /// The last attempt failed with a transient error; it is retried.
    Failed,
    /// Dead-lettered: it will not be handled unless requeued.
    DeadLettered,
}

/// One subscriber's receipt of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// The subscribing role.
    pub subscriber: Name,
    /// What it did with the event.
    pub status: ReceiptStatus,
    /// The attempt this receipt is about (1 for the first; 0 on a
    /// dead-letter receipt, whose dead letter records the attempts).
    pub attempts: u32,
    /// From the publish to this receipt, in milliseconds.
    pub latency_ms: u64,
    /// Why it failed or was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was recorded.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub at: DateTime<Utc>,
}

/// An event's receipts, as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Receipts {
    /// The event's id.
    pub event: MessageId,
    /// Its name.
    pub name: String,
    /// The subscribers it was published to (fixed at its publish).
    pub subscribers: Vec<Name>,
    /// The receipts recorded, by subscriber.
    pub receipts: Vec<Receipt>,
    /// The subscribers that have not processed it (no receipt yet, a
    /// failed attempt, or dead-lettered).
    pub not_processed: Vec<Name>,
}

impl Receipts {
    /// Whether every subscriber has processed it.
    pub fn all_processed(&self) -> bool {
        self.not_processed.is_empty()
    }

    /// Whether every subscriber has come to an end with it (processed or
    /// dead-lettered).
    fn settled(&self) -> bool {
        self.subscribers.iter().all(|s| {
            self.receipts.iter().any(|r| {
                &r.subscriber == s
                    && matches!(
                        r.status,
                        ReceiptStatus::Processed | ReceiptStatus::DeadLettered
                    )
            })
        })
    }
}

/// The collection of the org's event records.
fn events(kernel: &Kernel) -> Result<CollectionPath, StoreError> {
    org_collection(kernel.org(), "events")
}

/// The record of event `id`.
pub(crate) fn record_key(kernel: &Kernel, id: &MessageId) -> Result<DocKey, StoreError> {
    events(kernel)?.doc(id.as_str())
}

/// The receipts of event `id`.
fn receipts_of(kernel: &Kernel, id: &MessageId) -> Result<CollectionPath, StoreError> {
    CollectionPath::new(format!("{}/receipts", record_key(kernel, id)?))
}

/// The id of the event an envelope carries (its own id, unless it is a
/// requeue).
pub(crate) fn event_id(env: &Envelope) -> MessageId {
    env.headers
        .get(EVENT_ID_HEADER)
        .and_then(|h| MessageId::parse(h.clone()).ok())
        .unwrap_or_else(|| env.id.clone())
}

/// The writes that go with the publish of `env` (an event named `name`):
/// its record, naming its subscribers, and the timer that deletes it (and
/// `key_doc`, the principal's record of its idempotency key, if any).
pub(crate) fn at_publish(
    kernel: &Kernel,
    env: &Envelope,
    name: &str,
    key_doc: Option<&DocKey>,
) -> Result<Vec<Write>, StoreError> {
    let mut subscribers: Vec<Name> = kernel.chart().subscribers_of(name).cloned().collect();
    subscribers.sort();
    let record = EventRecord {
        name: name.to_owned(),
        from: env.from.clone(),
        subscribers,
        published_at: env.created_at,
    };
    let due = chrono::TimeDelta::from_std(RECEIPT_RETENTION)
        .ok()
        .and_then(|d| env.created_at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let timer = TimerRecord::new(
        Name::new(RETENTION_TIMER).map_err(|e| StoreError::invalid(None, e.to_string()))?,
        env.from.clone(),
        env.id.as_str(),
        due,
        match key_doc {
            Some(k) => json!({ "event": env.id, "key_doc": k.to_string() }),
            None => json!({ "event": env.id }),
        },
    );
    // Armed unconditionally: the same event published again (an
    // idempotency key) arms the same timer.
    let arm = match kernel.arm_timer(&timer)? {
        Write::Put { key, value, .. } => Write::put(key, value, Precondition::None),
        other => other,
    };
    Ok(vec![
        Write::put(
            record_key(kernel, &env.id)?,
            to_value(&record)?,
            Precondition::None,
        ),
        arm,
    ])
}

/// The write of `role`'s receipt of the event `id`, published at
/// `published_at`.
pub(crate) fn receipt_write(
    kernel: &Kernel,
    role: &Name,
    id: &MessageId,
    published_at: DateTime<Utc>,
    status: ReceiptStatus,
    attempts: u32,
    reason: Option<String>,
) -> Result<Write, StoreError> {
    let now = kernel.now();
    let latency_ms = u64::try_from((now - published_at).num_milliseconds()).unwrap_or(0);
    let receipt = Receipt {
        subscriber: role.clone(),
        status,
        attempts,
        latency_ms,
        reason,
        at: now,
    };
    Ok(Write::put(
        receipts_of(kernel, id)?.doc(role.as_str())?,
        to_value(&receipt)?,
        Precondition::None,
    ))
}

/// Commits `failed` (a failed attempt's receipt by `role`) unless the
/// receipt already there is final (processed or dead-lettered), by a
/// conditional write on what was read.
pub(crate) async fn record_failure(
    kernel: &Kernel,
    role: &Name,
    id: &MessageId,
    failed: Write,
) -> Result<(), StoreError> {
    let key = receipts_of(kernel, id)?.doc(role.as_str())?;
    let precondition = match kernel.store().get(&key).await? {
        Some(doc) => match from_json::<Receipt>(&doc.value) {
            Ok(r) if r.status != ReceiptStatus::Failed => return Ok(()),
            _ => Precondition::Version(doc.version),
        },
        None => Precondition::MustNotExist,
    };
    let Write::Put { value, .. } = failed else {
        return Ok(());
    };
    let mut effects = Effects::new();
    effects.write(Write::put(key, value, precondition));
    match kernel.commit(effects).await {
        Err(e) if e.is_precondition_failure() => Ok(()),
        other => other,
    }
}

/// When the event `id` was published, from its record (`None` if it has
/// none: published before receipts existed, or past its retention).
pub(crate) async fn published_at(
    kernel: &Kernel,
    id: &MessageId,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let Some(doc) = kernel.store().get(&record_key(kernel, id)?).await? else {
        return Ok(None);
    };
    Ok(from_json::<EventRecord>(&doc.value)
        .ok()
        .map(|r| r.published_at))
}

/// Deletes an event's record and receipts (and the record of its
/// idempotency key) when their retention ends.
#[derive(Debug)]
pub(crate) struct Retention;

#[async_trait::async_trait]
impl TimerHandler for Retention {
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let mut effects = Effects::new();
        let Some(id) = timer.payload["event"]
            .as_str()
            .and_then(|s| MessageId::parse(s).ok())
        else {
            return Ok(effects);
        };
        for doc in kernel.store().list_all(&receipts_of(kernel, &id)?).await? {
            effects.write(Write::delete(doc.key, Precondition::None));
        }
        effects.write(Write::delete(record_key(kernel, &id)?, Precondition::None));
        if let Some(key_doc) = timer.payload["key_doc"]
            .as_str()
            .and_then(|k| DocKey::parse(k).ok())
        {
            effects.write(Write::delete(key_doc, Precondition::None));
        }
        Ok(effects)
    }
}

/// Reads an event's receipts now.
pub(super) async fn read(kernel: &Kernel, id: &MessageId) -> Result<Receipts, EventError> {
    let Some(doc) = kernel.store().get(&record_key(kernel, id)?).await? else {
        return Err(EventError::Unknown { event: id.clone() });
    };
    let record: EventRecord = from_json(&doc.value).map_err(|e| EventError::Encode {
        message: format!("event record {id}: {e}"),
    })?;
    let mut receipts = Vec::new();
    for doc in kernel.store().list_all(&receipts_of(kernel, id)?).await? {
        match from_json::<Receipt>(&doc.value) {
            Ok(r) => receipts.push(r),
            Err(e) => tracing::warn!(receipt = %doc.key, error = %e, "unreadable receipt skipped"),
        }
    }
    receipts.sort_by(|a, b| a.subscriber.cmp(&b.subscriber));
    let not_processed = record
        .subscribers
        .iter()
        .filter(|s| {
            !receipts
                .iter()
                .any(|r| &r.subscriber == *s && r.status == ReceiptStatus::Processed)
        })
        .cloned()
        .collect();
    Ok(Receipts {
        event: id.clone(),
        name: record.name,
        subscribers: record.subscribers,
        receipts,
        not_processed,
    })
}

/// The receipts of one event, to read or wait for
/// ([`Principal::receipts`]).
#[derive(Debug, Clone)]
pub struct EventReceipts {
    principal: Principal,
    event: MessageId,
}

impl EventReceipts {
    /// The receipts as recorded now.
    pub async fn now(&self) -> Result<Receipts, EventError> {
        read(&self.principal.kernel, &self.event).await
    }

    /// Waits until every subscriber has processed the event or
    /// dead-lettered it, or until `timeout`, and returns the receipts then:
    /// [`Receipts::not_processed`] names who has not processed it. An
    /// unknown event (never published, or past its retention) is
    /// [`EventError::Unknown`].
    pub async fn wait(&self, timeout: Duration) -> Result<Receipts, EventError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.now().await?;
            if r.settled() || tokio::time::Instant::now() >= deadline {
                return Ok(r);
            }
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
            )
            .await;
        }
    }
}

/// The event pattern's receipts, for the principal.
impl Principal {
    /// The receipts of the event `event` (an id [`publish_event`](Self::publish_event)
    /// or [`Context::publish_event`](crate::runtime::Context::publish_event)
    /// returned).
    pub fn receipts(&self, event: &MessageId) -> EventReceipts {
        EventReceipts {
            principal: self.clone(),
            event: event.clone(),
        }
    }
}
