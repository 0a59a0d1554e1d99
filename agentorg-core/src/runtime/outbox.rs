//! The transactional outbox: messages are committed with the state that
//! caused them, then published, then their outbox entries are deleted. A
//! crash in between leaves the entry, and a sweep republishes it; the
//! receiver deduplicates by envelope id (and its claims make a second
//! delivery harmless).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::kernel::Kernel;
use super::records::{from_doc, to_value, ClaimDoc, ClaimState, OutboxDoc};
use crate::envelope::Envelope;
use crate::name::Name;
use crate::store::{
    DocKey, ListOptions, Precondition, StateStore, StateStoreExt, StoreError, Write,
};
use crate::subject::Subject;
use crate::transport::{PublishOptions, Transport};

/// An outbox entry: its document, and what to publish.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    key: DocKey,
    subject: Subject,
    bytes: Bytes,
    msg_id: String,
}

/// The write that records `envelope` in its sender's outbox (only a process
/// hosting the sender republishes it), and the entry to publish once it is
/// committed.
pub(crate) fn entry(
    shared: &Kernel,
    subject: Subject,
    envelope: &Envelope,
) -> Result<(Write, Entry), StoreError> {
    let bytes = shared
        .codec
        .encode(envelope)
        .map_err(|e| StoreError::InvalidInput {
            key: None,
            message: format!("cannot encode outgoing message: {e}"),
        })?;
    let key = shared.layout.outbox().doc(envelope.id.as_str())?;
    let doc = OutboxDoc {
        role: envelope.from.clone(),
        subject: subject.to_string(),
        envelope: String::from_utf8_lossy(&bytes).into_owned(),
        created_at: shared.now(),
    };
    let write = Write::put(key.clone(), to_value(&doc)?, Precondition::None);
    Ok((
        write,
        Entry {
            key,
            subject,
            bytes,
            msg_id: envelope.id.to_string(),
        },
    ))
}

/// Publishes committed entries and deletes them. A failure leaves the entry
/// for the sweep; nothing is lost.
pub(crate) async fn flush(shared: &Kernel, entries: Vec<Entry>) {
    for e in entries {
        publish_one(&*shared.transport, &*shared.store, e).await;
    }
}

async fn publish_one(transport: &dyn Transport, store: &dyn StateStore, e: Entry) {
    match transport
        .publish(
            &e.subject,
            e.bytes,
            PublishOptions::with_msg_id(e.msg_id.clone()),
        )
        .await
    {
        Ok(_) => {
            if let Err(err) = store.delete(&e.key, Precondition::None).await {
                tracing::warn!(entry = %e.key, error = %err, "published, but the outbox entry stays; the sweep will republish it (deduplicated)");
            }
        }
        Err(err) => {
            tracing::warn!(subject = %e.subject, msg_id = %e.msg_id, error = %err, "publish failed; the outbox sweep will retry");
        }
    }
}

/// Publishes the outbox entries of `roles` older than `older_than` (all of
/// them when `None`, at start-up). One listing of the org's outbox, which
/// holds only messages not yet published, however many roles are hosted.
/// Stops early when `stop` is cancelled.
pub(crate) async fn sweep(
    shared: &Kernel,
    roles: &HashSet<Name>,
    older_than: Option<Duration>,
    stop: &CancellationToken,
) {
    let result: Result<(), StoreError> = async {
        let now = shared.now();
        for doc in shared.store.list_all(shared.layout.outbox()).await? {
            if stop.is_cancelled() {
                break;
            }
            let (entry, _): (OutboxDoc, _) = match from_doc(&doc) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(entry = %doc.key, error = %e, "unreadable outbox entry left in place");
                    continue;
                }
            };
            if !roles.contains(&entry.role) {
                continue;
            }
            let age = (now - entry.created_at).to_std().unwrap_or_default();
            if older_than.is_some_and(|min| age < min) {
                continue;
            }
            let Ok(subject) = Subject::parse(entry.subject.clone()) else {
                tracing::error!(entry = %doc.key, subject = %entry.subject, "outbox entry with an invalid subject left in place");
                continue;
            };
            tracing::info!(entry = %doc.key, role = %entry.role, age = ?age, "republishing an outbox entry");
            let entry = Entry {
                msg_id: doc.key.id().to_owned(),
                key: doc.key,
                subject,
                bytes: Bytes::from(entry.envelope),
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = publish_one(&*shared.transport, &*shared.store, entry) => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "outbox sweep failed; it runs again later");
    }
}

/// How many pages of claims one sweep looks at for expiry (so at most 10,000
/// claims per sweep interval and process; use a TTL policy on `expires_at`
/// in Firestore for more).
const CLAIM_PAGES_PER_SWEEP: usize = 10;

/// Deletes expired claims, a few pages at a time, resuming after `page`
/// (so the whole collection is covered over time); returns where to resume.
pub(crate) async fn expire_claims_some(
    shared: &Kernel,
    mut page: Option<String>,
    stop: &CancellationToken,
) -> Option<String> {
    for _ in 0..CLAIM_PAGES_PER_SWEEP {
        if stop.is_cancelled() {
            return page;
        }
        match expire_claims(shared, page.take()).await {
            Ok(Some(next)) => page = Some(next),
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "claim expiry failed; it runs again later");
                return None;
            }
        }
    }
    page
}

/// Deletes the expired settled claims of one page; returns the next page.
async fn expire_claims(
    shared: &Kernel,
    page: Option<String>,
) -> Result<Option<String>, StoreError> {
    let listed = shared
        .store
        .list(
            shared.layout.claims(),
            ListOptions::default()
                .with_page_size(ListOptions::MAX_PAGE_SIZE)
                .with_page_token(page),
        )
        .await?;
    let now = shared.now();
    for doc in &listed.documents {
        let Ok((claim, version)) = from_doc::<ClaimDoc>(doc) else {
            continue;
        };
        let settled = matches!(claim.state, ClaimState::Done | ClaimState::DeadLettered);
        if settled && claim.expires_at.is_some_and(|t| t <= now) {
            // Conditional: a claim that moved meanwhile is left alone.
            match shared
                .store
                .delete(&doc.key, Precondition::Version(version))
                .await
            {
                Ok(()) => tracing::debug!(claim = %doc.key, "expired claim deleted"),
                Err(e) if e.is_precondition_failure() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(listed.next_page_token)
}
