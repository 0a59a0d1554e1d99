//! The transactional outbox: messages are committed with the state that
//! caused them, then published, then their outbox entries are deleted. A
//! crash in between leaves the entry, and a sweep republishes it; the
//! receiver deduplicates by envelope id (and its claims make a second
//! delivery harmless).
//!
//! Deleting a published entry costs no commit of its own: the deletion
//! rides on the next commit this process makes ([`Cleanup`]), or, when no
//! commit comes within [`LINGER`], the cleaner deletes what is left in one
//! commit.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
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
/// committed. `bytes`: its encoding, if already made.
pub(crate) fn entry(
    shared: &Kernel,
    subject: Subject,
    envelope: &Envelope,
    bytes: Option<Bytes>,
) -> Result<(Write, Entry), StoreError> {
    let bytes = match bytes {
        Some(b) => b,
        None => shared
            .codec
            .encode(envelope)
            .map_err(|e| StoreError::InvalidInput {
                key: None,
                message: format!("cannot encode outgoing message: {e}"),
            })?,
    };
    let key = shared.layout.outbox().doc(envelope.id.as_str())?;
    let doc = OutboxDoc {
        role: envelope.from.clone(),
        subject: subject.to_string(),
        // The codec writes JSON, so UTF-8: borrowed, not copied (the
        // document's value is its one copy).
        envelope: match std::str::from_utf8(&bytes) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned().into(),
        },
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

/// How long a published entry waits for a commit to ride on before the
/// cleaner deletes it in a commit of its own (with whatever else is
/// pending then).
pub(crate) const LINGER: Duration = Duration::from_millis(20);

/// The most deletions one commit carries.
const MAX_RIDERS: usize = 64;

/// The most writes a commit with riders may have (Firestore takes 500 in
/// one commit): a commit already this large carries none.
const MAX_COMMIT_WRITES: usize = 400;

/// Published entries whose documents are still to be deleted.
///
/// Each deletion (unconditional, so it can never fail the commit it rides
/// on) is added to the next commit this process makes through
/// [`Kernel::commit_writes`]; if that commit fails, the deletions go back to
/// the queue. An entry left behind by a crash is only republished by a
/// sweep (deduplicated by the transport, and harmless to the receiver's
/// claims), so a late deletion costs nothing but the document meanwhile. A
/// key queued twice (a message with a fixed id sent again, or republished
/// by a sweep) is deleted once.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    pending: Mutex<HashSet<DocKey>>,
    wake: Notify,
}

impl Cleanup {
    /// Queues the deletion of a published entry.
    fn push(&self, key: DocKey) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = pending.is_empty();
        pending.insert(key);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Moves up to [`MAX_RIDERS`] queued deletions into `writes` (none of a
    /// document `writes` already touches, and none when `writes` is near
    /// [`MAX_COMMIT_WRITES`]); returns their keys, to
    /// [`restore`](Self::restore) if the commit fails.
    pub(crate) fn ride(&self, writes: &mut Vec<Write>) -> Vec<DocKey> {
        let room = MAX_RIDERS.min(MAX_COMMIT_WRITES.saturating_sub(writes.len()));
        if room == 0 {
            return Vec::new();
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            return Vec::new();
        }
        let taken: Vec<DocKey> = pending
            .iter()
            .filter(|key| !writes.iter().any(|w| w.key() == *key))
            .take(room)
            .cloned()
            .collect();
        for key in &taken {
            pending.remove(key);
        }
        drop(pending);
        writes.extend(
            taken
                .iter()
                .map(|k| Write::delete(k.clone(), Precondition::None)),
        );
        taken
    }

    /// Puts deletions back after the commit they rode on failed.
    pub(crate) fn restore(&self, keys: Vec<DocKey>) {
        if keys.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = pending.is_empty();
        pending.extend(keys);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// How many deletions wait.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// At shutdown, once the handlers are done: deletes what waits.
    pub(crate) async fn finish(&self, store: &dyn StateStore) {
        if let Err(e) = self.drain(store).await {
            tracing::debug!(error = %e, "published outbox entries stay; the next start's sweep republishes them (deduplicated)");
        }
    }

    /// Deletes what waits, [`MAX_RIDERS`] per commit; a failure puts them
    /// back.
    async fn drain(&self, store: &dyn StateStore) -> Result<(), StoreError> {
        loop {
            let mut writes = Vec::new();
            let keys = self.ride(&mut writes);
            if keys.is_empty() {
                return Ok(());
            }
            if let Err(e) = store.commit(writes).await {
                self.restore(keys);
                return Err(e);
            }
        }
    }
}

/// The cleaner: whenever deletions wait, gives them [`LINGER`] to ride on a
/// commit, then deletes what is left, until `shutdown` (the org's shutdown
/// deletes what the draining handlers leave, [`Cleanup::finish`]).
pub(crate) async fn clean(shared: std::sync::Arc<Kernel>, shutdown: CancellationToken) {
    let cleanup = &shared.cleanup;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = cleanup.wake.notified() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(LINGER) => {}
        }
        if let Err(e) = cleanup.drain(&*shared.store).await {
            tracing::debug!(error = %e, "deleting published outbox entries failed; retried later");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(shared.config.retry_delay) => {}
            }
            cleanup.wake.notify_one();
        }
    }
}

/// Publishes committed entries and queues their deletion. A failure leaves
/// the entry for the sweep; nothing is lost.
pub(crate) async fn flush(shared: &Kernel, entries: Vec<Entry>) {
    for e in entries {
        publish_one(&*shared.transport, &shared.cleanup, e).await;
    }
}

async fn publish_one(transport: &dyn Transport, cleanup: &Cleanup, e: Entry) {
    tracing::trace!(target: super::STEPS, step = "publish", msg_id = %e.msg_id, subject = %e.subject);
    match transport
        .publish(
            &e.subject,
            e.bytes,
            PublishOptions::with_msg_id(e.msg_id.clone()),
        )
        .await
    {
        Ok(_) => {
            tracing::trace!(target: super::STEPS, step = "published", msg_id = %e.msg_id, subject = %e.subject);
            cleanup.push(e.key);
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
                bytes: Bytes::from(entry.envelope.into_owned()),
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = publish_one(&*shared.transport, &shared.cleanup, entry) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CollectionPath;

    fn key(i: usize) -> DocKey {
        CollectionPath::new("o/x/outbox")
            .and_then(|c| c.doc(format!("e{i}")))
            .expect("a key")
    }

    #[test]
    fn deletions_ride_capped_never_beside_their_own_document_and_come_back_on_failure() {
        let cleanup = Cleanup::default();
        for i in 0..MAX_RIDERS + 3 {
            cleanup.push(key(i));
        }
        // Queued twice (a fixed id sent again): deleted once.
        cleanup.push(key(1));
        assert_eq!(cleanup.pending(), MAX_RIDERS + 3);
        // A commit that writes entry 0 itself does not carry its deletion.
        let mut writes = vec![Write::put(
            key(0),
            serde_json::json!({}),
            Precondition::None,
        )];
        let rode = cleanup.ride(&mut writes);
        assert_eq!(rode.len(), MAX_RIDERS);
        assert!(!rode.contains(&key(0)));
        assert_eq!(writes.len(), 1 + MAX_RIDERS);
        assert_eq!(cleanup.pending(), 3);
        // The commit failed: they wait again.
        cleanup.restore(rode);
        assert_eq!(cleanup.pending(), MAX_RIDERS + 3);
        let mut none = Vec::new();
        assert_eq!(cleanup.ride(&mut none).len(), MAX_RIDERS);
        // A commit near the backend's limit carries none.
        let mut large: Vec<Write> = (0..MAX_COMMIT_WRITES)
            .map(|i| Write::put(key(1000 + i), serde_json::json!({}), Precondition::None))
            .collect();
        assert!(cleanup.ride(&mut large).is_empty());
        assert!(none.iter().all(|w| matches!(
            w,
            Write::Delete {
                precondition: Precondition::None,
                ..
            }
        )));
    }
}
