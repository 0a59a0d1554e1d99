//! `watch` over Firestore's `Listen` stream.
//!
//! One `Listen` stream per watch, with one target: the document's name, or a
//! query for the collection's direct documents. The server sends document
//! changes and deletes, then marks a *consistent snapshot* (a target change
//! with no target ids and a read time, once the target is `CURRENT`). Only
//! then are the changes gathered since the last snapshot offered to the
//! caller, each document's newest state once: so a watcher never sees a
//! half-applied commit, and a burst of writes may be coalesced.
//!
//! Every change is de-duplicated by version: a document is yielded only with
//! a version greater than the last one yielded for it. That absorbs the
//! emulator's habit of resending a collection's whole result set after each
//! write (`RESET`, every document again, `CURRENT`), and makes resuming
//! simple: after a `RESET`, or on a new stream, the server sends the target's
//! whole state, and a document yielded as existing that is not in it has been
//! deleted.
//!
//! # Resuming
//!
//! When the stream fails with a transient status (the connection dropped,
//! the server went away, `UNAVAILABLE`…) or ends, the watch opens a new one —
//! at once, then with a doubling pause up to 5 s while that keeps failing —
//! and diffs the state it receives against what it has yielded: newer
//! versions are yielded, unchanged documents are not repeated, and documents
//! gone meanwhile are yielded as deleted. It does not send resume tokens: a
//! resumed watch re-reads its target once, which keeps the server's
//! existence filters out of the protocol. A permanent failure (permission
//! denied, an invalid target) is yielded as an error, and the stream ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::store::{Change, ChangeStream, DocKey, StoreError, Version, WatchTarget};
use firestore::gcloud_sdk::google::firestore::v1::{
    self as fs, listen_request, listen_response::ResponseType, structured_query, target,
    target_change::TargetChangeType,
};
use firestore::gcloud_sdk::tonic::{codec::Streaming, Code, Status};
use futures::StreamExt as _;
use tokio::time::Instant;

use crate::error::{from_status, is_transient};
use crate::path;
use crate::store::Inner;

/// The one target of each stream.
const TARGET_ID: i32 = 1;
/// The longest pause between attempts to re-open a failing stream.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Opens a watch and waits for the target's initial state, which the stream
/// yields first. Transient failures are retried within the request timeout.
pub(crate) async fn start(
    inner: Arc<Inner>,
    target: WatchTarget,
) -> Result<ChangeStream, StoreError> {
    let deadline = Instant::now() + inner.request_timeout();
    let mut w = Watcher::new(inner, target);
    while !w.synced {
        let step = tokio::time::timeout_at(deadline, w.step()).await;
        match step {
            Ok(Ok(())) => {}
            Ok(Err(s)) if is_transient(s.code()) => {
                w.stream = None;
                tokio::time::sleep_until((Instant::now() + w.pause).min(deadline)).await;
                w.pause = (w.pause * 2).clamp(Watcher::FIRST_PAUSE, MAX_PAUSE);
                if Instant::now() >= deadline {
                    return Err(from_status(s, "watch", None));
                }
            }
            Ok(Err(s)) => return Err(from_status(s, "watch", None)),
            Err(_) => {
                return Err(StoreError::Timeout {
                    operation: "watch (initial state)".to_owned(),
                })
            }
        }
    }
    w.pause = Duration::ZERO;
    let stream = futures::stream::unfold(w, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    });
    Ok(Box::pin(stream))
}

/// One watch: the stream, the protocol state of its target, and what has
/// been yielded. Owned by the caller's stream; dropping it cancels `Listen`.
struct Watcher {
    inner: Arc<Inner>,
    target: WatchTarget,
    stream: Option<Streaming<fs::ListenResponse>>,
    /// The target is `CURRENT` (since it was added or last reset).
    current: bool,
    /// What follows is the target's whole state (a new stream, or `RESET`).
    reset: bool,
    /// Changes since the last snapshot, by document name: the newest state
    /// (`None`: deleted, or no longer in the target).
    pending: BTreeMap<String, Option<fs::Document>>,
    /// The version last yielded for each document that exists as yielded.
    seen: HashMap<DocKey, Version>,
    queue: VecDeque<Change>,
    /// At least one snapshot was taken.
    synced: bool,
    /// The pause before re-opening a failed stream.
    pause: Duration,
    done: bool,
}

impl Watcher {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);

    fn new(inner: Arc<Inner>, target: WatchTarget) -> Self {
        Self {
            inner,
            target,
            stream: None,
            current: false,
            reset: true,
            pending: BTreeMap::new(),
            seen: HashMap::new(),
            queue: VecDeque::new(),
            synced: false,
            pause: Duration::ZERO,
            done: false,
        }
    }

    fn listen_target(&self) -> fs::Target {
        let names = &self.inner.names;
        let target_type = match &self.target {
            WatchTarget::Document(key) => target::TargetType::Documents(target::DocumentsTarget {
                documents: vec![names.doc(key)],
            }),
            WatchTarget::Collection(c) => {
                let (parent, collection_id) = names.parent_and_id(c);
                target::TargetType::Query(target::QueryTarget {
                    parent,
                    query_type: Some(target::query_target::QueryType::StructuredQuery(
                        fs::StructuredQuery {
                            from: vec![structured_query::CollectionSelector {
                                collection_id,
                                all_descendants: false,
                            }],
                            ..Default::default()
                        },
                    )),
                })
            }
            // `WatchTarget` is non-exhaustive: an unknown target matches no
            // document.
            _ => target::TargetType::Documents(target::DocumentsTarget {
                documents: Vec::new(),
            }),
        };
        fs::Target {
            target_id: TARGET_ID,
            target_type: Some(target_type),
            ..Default::default()
        }
    }

    /// Opens a new `Listen` stream; the target's whole state follows.
    async fn open(&mut self) -> Result<(), Status> {
        let request = fs::ListenRequest {
            database: self.inner.names.database.clone(),
            target_change: Some(listen_request::TargetChange::AddTarget(
                self.listen_target(),
            )),
            ..Default::default()
        };
        // The request stream stays open (never ends) for as long as the
        // watch: closing it would half-close the call.
        let requests = futures::stream::iter([request]).chain(futures::stream::pending());
        let mut client = self.inner.client();
        let timeout = self.inner.request_timeout();
        let response = tokio::time::timeout(timeout, client.listen(requests))
            .await
            .map_err(|_| Status::deadline_exceeded("Listen did not start in time"))??;
        self.stream = Some(response.into_inner());
        self.current = false;
        self.reset = true;
        self.pending.clear();
        Ok(())
    }

    /// Receives and applies one message (opening the stream first if there
    /// is none). A stream that ends is a transient failure.
    async fn step(&mut self) -> Result<(), Status> {
        if self.stream.is_none() {
            self.open().await?;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Status::internal("no listen stream"));
        };
        match stream.message().await? {
            Some(response) => self.apply(response),
            None => Err(Status::unavailable("the listen stream ended")),
        }
    }

    fn apply(&mut self, response: fs::ListenResponse) -> Result<(), Status> {
        let ours = |ids: &[i32]| ids.is_empty() || ids.contains(&TARGET_ID);
        match response.response_type {
            Some(ResponseType::TargetChange(tc)) => {
                if ours(&tc.target_ids) {
                    match TargetChangeType::try_from(tc.target_change_type) {
                        Ok(TargetChangeType::Current) => self.current = true,
                        Ok(TargetChangeType::Reset) => {
                            self.current = false;
                            self.reset = true;
                            self.pending.clear();
                        }
                        Ok(TargetChangeType::Remove) => {
                            return Err(match tc.cause {
                                Some(cause) => Status::new(Code::from(cause.code), cause.message),
                                None => Status::unavailable("the server removed the listen target"),
                            });
                        }
                        Ok(TargetChangeType::Add | TargetChangeType::NoChange) | Err(_) => {}
                    }
                }
                // A consistent snapshot of the whole stream.
                if tc.target_ids.is_empty() && tc.read_time.is_some() && self.current {
                    self.flush();
                }
            }
            Some(ResponseType::DocumentChange(dc)) => {
                if let Some(doc) = dc.document {
                    if dc.target_ids.contains(&TARGET_ID) {
                        self.pending.insert(doc.name.clone(), Some(doc));
                    } else if dc.removed_target_ids.contains(&TARGET_ID) {
                        self.pending.insert(doc.name, None);
                    }
                }
            }
            Some(ResponseType::DocumentDelete(dd)) if ours(&dd.removed_target_ids) => {
                self.pending.insert(dd.document, None);
            }
            Some(ResponseType::DocumentRemove(dr)) if ours(&dr.removed_target_ids) => {
                self.pending.insert(dr.document, None);
            }
            // Only sent to resumed targets, which this watch never asks for;
            // if one comes and disagrees with what was seen, start over.
            Some(ResponseType::Filter(f)) if f.target_id == TARGET_ID && !self.reset => {
                let count = usize::try_from(f.count).unwrap_or(usize::MAX);
                if count != self.view_len() {
                    return Err(Status::aborted("existence filter mismatch"));
                }
            }
            Some(
                ResponseType::DocumentDelete(_)
                | ResponseType::DocumentRemove(_)
                | ResponseType::Filter(_),
            )
            | None => {}
        }
        Ok(())
    }

    /// How many documents the target holds as seen so far.
    fn view_len(&self) -> usize {
        let names = &self.inner.names;
        let mut n = self
            .seen
            .keys()
            .filter(|k| !self.pending.contains_key(&names.doc(k)))
            .count();
        n += self.pending.values().filter(|d| d.is_some()).count();
        n
    }

    /// Offers what changed since the last snapshot.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let inner = Arc::clone(&self.inner);
        let names = &inner.names;
        if self.reset {
            // The target's whole state was sent: whatever was yielded as
            // existing and is not in it has gone.
            let mut gone: Vec<DocKey> = self
                .seen
                .keys()
                .filter(|k| !matches!(pending.get(&names.doc(k)), Some(Some(_))))
                .cloned()
                .collect();
            gone.sort();
            for key in gone {
                self.seen.remove(&key);
                self.queue.push_back(Change::Deleted { key });
            }
        }
        for (name, doc) in pending {
            let Some(key) = names.key(&name).filter(|k| self.target.covers(k)) else {
                continue;
            };
            match doc {
                Some(doc) => self.offer(key, doc),
                None => {
                    if self.seen.remove(&key).is_some() {
                        self.queue.push_back(Change::Deleted { key });
                    }
                }
            }
        }
        self.reset = false;
        self.synced = true;
        self.pause = Duration::ZERO;
    }

    /// Queues a document's state unless a version at least as new was
    /// yielded.
    fn offer(&mut self, key: DocKey, doc: fs::Document) {
        let Some(version) = doc.update_time.as_ref().and_then(path::version) else {
            tracing::warn!(%key, "firestore watch: a document without a valid update time");
            return;
        };
        if self.seen.get(&key).is_some_and(|last| *last >= version) {
            return;
        }
        match self.inner.document(key.clone(), doc) {
            Ok(d) => {
                self.seen.insert(key, version);
                self.queue.push_back(Change::Put(d));
            }
            Err(e) => tracing::warn!(%key, error = %e, "firestore watch: unreadable document"),
        }
    }

    /// The next change: re-opens the stream after transient failures, ends
    /// after a permanent one (yielded as an error).
    async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        loop {
            if let Some(c) = self.queue.pop_front() {
                return Some(Ok(c));
            }
            if self.done {
                return None;
            }
            match self.step().await {
                Ok(()) => {}
                Err(s) if is_transient(s.code()) => {
                    tracing::debug!(
                        code = ?s.code(),
                        message = s.message(),
                        pause = ?self.pause,
                        "firestore watch: stream failed, listening again"
                    );
                    self.stream = None;
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).clamp(Self::FIRST_PAUSE, MAX_PAUSE);
                }
                Err(s) => {
                    self.done = true;
                    self.stream = None;
                    return Some(Err(from_status(s, "watch", None)));
                }
            }
        }
    }
}
