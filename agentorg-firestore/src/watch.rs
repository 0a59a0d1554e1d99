//! `watch` over Firestore's `Listen` stream.
//!
//! # One stream, many targets
//!
//! All the watches of a store share one `Listen` stream, as Google's client
//! libraries do: each watch is a *target* on it (the document's name, or a
//! query for the collection's direct documents) with its own target id. One
//! stream per watch would not do: Firestore serves at most 100 concurrent
//! streams on a connection, and the store's other requests share that
//! connection, so the 101st watcher (a runtime waiting on 101 tasks) would
//! stall every request of the store.
//!
//! A task, the *hub*, owns the stream: it adds and removes targets as
//! watches start and end, applies what the server sends to each target's
//! state, and hands each watch its changes through a [`Slot`]. It is spawned
//! with the first watch, closes the stream 30 s after the last watch ended
//! (gracefully: a half-close, which the server answers by ending the call),
//! and stops when neither the store nor any watch is left.
//!
//! # Snapshots and de-duplication
//!
//! The server sends document changes and deletes per target, then marks a
//! *consistent snapshot* of the whole stream (a target change with no target
//! ids and a read time). Only then are a target's changes since the last
//! snapshot offered to its watch — if the target is `CURRENT` — each
//! document's newest state once: a watcher never sees a half-applied
//! commit, and a burst of writes may be coalesced.
//!
//! Every change is de-duplicated by version: a document is yielded only with
//! a version greater than the last one yielded for it. That absorbs the
//! emulator's habit of resending a collection's whole result set after each
//! write (`RESET`, every document again, `CURRENT`, and for a deleted
//! document only its absence), and makes resuming simple: after a `RESET`,
//! or on a new stream, the server sends the target's whole state, and a
//! document yielded as existing that is not in it has been deleted.
//!
//! Between two snapshots a document's older state never replaces a newer
//! one (update times, or a deletion's read time, decide). The emulator can
//! send, for a target added while the document changed, the change first
//! and then the state it read at the add; and now and then it loses such a
//! change altogether (it read, the commit went by, then it listened). So a
//! watch reads its target once more after the initial state, and the hub
//! yields what that read found newer than what it yielded: a watch started
//! during a change always hears of it (`tests/watch_start.rs`).
//!
//! A watch that is not read keeps its changes queued in its slot, where a
//! newer state of a document replaces an older one not yet taken, so a slow
//! watcher costs at most about one entry per document and catches up with
//! the latest state.
//!
//! # Resuming
//!
//! When the stream fails with a transient status (the connection dropped,
//! the server went away, `UNAVAILABLE`…) or ends, the hub opens a new one —
//! at once, then with a doubling pause up to 5 s while that keeps failing —
//! adds every target again, and diffs the state it receives against what
//! each watch has yielded: newer versions are yielded, unchanged documents
//! are not repeated, and documents gone meanwhile are yielded as deleted. It
//! sends no resume tokens: a resumed target re-reads its state once, which
//! keeps the server's existence filters out of the protocol. A permanent
//! failure (permission denied, an invalid target) ends the watches it
//! concerns with that error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agentorg_core::store::{Change, ChangeStream, DocKey, StoreError, Version, WatchTarget};
use firestore::gcloud_sdk::google::firestore::v1::{
    self as fs, listen_request, listen_response::ResponseType, structured_query, target,
    target_change::TargetChangeType,
};
use firestore::gcloud_sdk::tonic::{codec::Streaming, Code, Status};
use futures::channel::mpsc as requests;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::{from_status, is_transient};
use crate::path::{self, Names};
use crate::store::{self, Client, Inner};

/// The longest pause between attempts to re-open a failing stream.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// The first pause after a failed attempt (the first re-open is at once).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// How long a stream with no target stays open for the next watch.
const IDLE: Duration = Duration::from_secs(30);

/// The store's side of the hub: starts it on demand.
#[derive(Debug, Default)]
pub(crate) struct Listener {
    /// Commands to the running hub, if one runs. A std Mutex: held only to
    /// clone or replace the sender.
    hub: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_id: AtomicI32,
}

enum Command {
    Add {
        id: i32,
        target: WatchTarget,
        slot: Arc<Slot>,
    },
    Remove {
        id: i32,
    },
    /// What the target held when read after its initial state.
    Read {
        id: i32,
        documents: Vec<fs::Document>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Listener {
    /// A target id no live watch of this store uses: 1, 2, … (positive, as
    /// Firestore wants; starting over after 2^31 - 1 watches).
    fn target_id(&self) -> i32 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        n.rem_euclid(i32::MAX) + 1
    }

    /// Sends `command` to the hub, starting one if none runs (or the one
    /// that ran has stopped, e.g. with the runtime it was spawned on).
    fn send(&self, inner: &Inner, command: Command) -> mpsc::UnboundedSender<Command> {
        let mut hub = lock(&self.hub);
        if let Some(tx) = hub.as_ref() {
            match tx.send(command) {
                Ok(()) => return tx.clone(),
                Err(mpsc::error::SendError(c)) => return self.spawn(inner, &mut hub, c),
            }
        }
        self.spawn(inner, &mut hub, command)
    }

    fn spawn(
        &self,
        inner: &Inner,
        hub: &mut Option<mpsc::UnboundedSender<Command>>,
        first: Command,
    ) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Cannot fail: the receiver is right here.
        let _ = tx.send(first);
        let task = Hub {
            client: inner.client(),
            names: inner.names.clone(),
            timeout: inner.request_timeout(),
            commands: rx,
            targets: HashMap::new(),
            stream: None,
            pause: Duration::ZERO,
            retry_at: None,
            idle_since: None,
        };
        // The hub owns no handle to the store (the store owns this
        // listener): it stops when every sender — the store's and each
        // watch's — is gone.
        tokio::spawn(task.run());
        *hub = Some(tx.clone());
        tx
    }
}

/// Opens a watch and waits for the target's initial state, which the stream
/// yields first (within the request timeout).
pub(crate) async fn start(inner: &Inner, target: WatchTarget) -> Result<ChangeStream, StoreError> {
    let listener = inner.listener();
    let id = listener.target_id();
    let slot = Arc::new(Slot::default());
    let commands = listener.send(
        inner,
        Command::Add {
            id,
            target: target.clone(),
            slot: Arc::clone(&slot),
        },
    );
    // From here on, dropping the watch removes its target.
    let watch = Watch {
        id,
        slot,
        commands,
        ended: false,
    };
    let timeout = inner.request_timeout();
    match tokio::time::timeout(timeout, watch.slot.synced()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(StoreError::Timeout {
                operation: "watch (initial state)".to_owned(),
            })
        }
    }
    // The emulator can lose a change committed while it adds a target: it
    // reads the target's state, the commit goes by, then it listens. Reading
    // the target once more after its initial state catches such a change
    // (the hub yields only states newer than it has yielded).
    let documents = inner
        .read_target(&target)
        .await
        .map_err(|s| from_status(s, "watch", None))?;
    if !documents.is_empty() {
        // The hub may be gone; then the watch ends as it would anyway.
        let _ = watch.commands.send(Command::Read { id, documents });
    }
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    });
    Ok(Box::pin(stream))
}

/// Where the hub leaves a watch's changes.
#[derive(Default)]
struct Slot {
    /// A std Mutex: pushes and pops are short and never await.
    state: Mutex<SlotState>,
    /// One permit per push: the watch is the only waiter.
    notify: Notify,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<Change>,
    /// The initial state has been queued.
    synced: bool,
    /// The error that ends the watch, once it has taken its queue.
    failed: Option<StoreError>,
}

impl Slot {
    /// Queues changes, a newer state of a document replacing an older one
    /// not taken yet; the first push (even of nothing) is the initial state.
    fn push(&self, changes: Vec<Change>) {
        let mut st = lock(&self.state);
        if changes.is_empty() && st.synced {
            return;
        }
        for change in changes {
            if let Change::Put(new) = &change {
                let waiting = st
                    .queue
                    .iter_mut()
                    .rev()
                    .take_while(|c| c.key() != &new.key || matches!(c, Change::Put(_)))
                    .find(|c| c.key() == &new.key);
                if let Some(old) = waiting {
                    *old = change;
                    continue;
                }
            }
            st.queue.push_back(change);
        }
        st.synced = true;
        drop(st);
        self.notify.notify_one();
    }

    fn fail(&self, e: StoreError) {
        lock(&self.state).failed.get_or_insert(e);
        self.notify.notify_one();
    }

    async fn synced(&self) -> Result<(), StoreError> {
        loop {
            {
                let mut st = lock(&self.state);
                if st.synced {
                    return Ok(());
                }
                if let Some(e) = st.failed.take() {
                    return Err(e);
                }
            }
            self.notify.notified().await;
        }
    }
}

/// One watch as its caller holds it.
struct Watch {
    id: i32,
    slot: Arc<Slot>,
    commands: mpsc::UnboundedSender<Command>,
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        loop {
            if self.ended {
                return None;
            }
            {
                let mut st = lock(&self.slot.state);
                if let Some(c) = st.queue.pop_front() {
                    return Some(Ok(c));
                }
                if let Some(e) = st.failed.take() {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
            self.slot.notify.notified().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The hub may be gone already; then there is nothing to remove.
        let _ = self.commands.send(Command::Remove { id: self.id });
    }
}

/// The open stream: where to add and remove targets, and what comes back.
struct Open {
    /// `None` once half-closed.
    requests: Option<requests::UnboundedSender<fs::ListenRequest>>,
    responses: Streaming<fs::ListenResponse>,
}

/// The task that owns the `Listen` stream.
struct Hub {
    client: Client,
    names: Names,
    timeout: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    targets: HashMap<i32, TargetState>,
    stream: Option<Open>,
    /// The pause before the next attempt after a failure.
    pause: Duration,
    /// When to re-open a failed stream.
    retry_at: Option<Instant>,
    /// Since when the open stream has had no target.
    idle_since: Option<Instant>,
}

impl Hub {
    async fn run(mut self) {
        loop {
            if self.targets.is_empty() {
                // Nobody listens: forget any failure, and after a while close
                // the stream gracefully (half-close: the server ends the
                // call). Cancelling it instead can make the emulator fail
                // other clients' commits with CANCELLED.
                self.retry_at = None;
                if let Some(open) = &mut self.stream {
                    let since = *self.idle_since.get_or_insert_with(Instant::now);
                    if open.requests.is_some() && since.elapsed() >= IDLE {
                        open.requests = None;
                    }
                }
            } else {
                self.idle_since = None;
                if self.stream.as_ref().is_some_and(|o| o.requests.is_none()) {
                    // Half-closed: no target can be added. Open another.
                    self.stream = None;
                    self.retry_at = None;
                }
                if self.stream.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
                    if let Err(s) = self.open().await {
                        self.failed(s);
                    }
                    continue;
                }
            }
            let waiting = self.stream.is_none() && self.retry_at.is_some();
            let retry_at = self.retry_at.unwrap_or_else(Instant::now);
            let lingering = self.stream.as_ref().is_some_and(|o| o.requests.is_some())
                && self.idle_since.is_some();
            let close_at = self.idle_since.map_or_else(Instant::now, |t| t + IDLE);
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => return,
                },
                response = next_response(&mut self.stream) => match response {
                    Ok(Some(r)) => {
                        if let Err(s) = self.apply(r) {
                            self.failed(s);
                        }
                    }
                    // An idle or closing stream ended: nothing to resume.
                    Ok(None) | Err(_) if self.targets.is_empty() => self.stream = None,
                    Ok(None) => self.failed(Status::unavailable("the listen stream ended")),
                    Err(s) => self.failed(s),
                },
                () = tokio::time::sleep_until(retry_at), if waiting => {}
                () = tokio::time::sleep_until(close_at), if lingering => {}
            }
        }
    }

    /// Opens a stream with every target on it; each target's whole state
    /// follows.
    async fn open(&mut self) -> Result<(), Status> {
        let (tx, rx) = requests::unbounded();
        for (id, t) in &mut self.targets {
            t.restart();
            // Cannot fail: the receiver is right here.
            let _ = tx.unbounded_send(add_request(&self.names, *id, &t.target));
        }
        // The request stream stays open as long as the stream: closing it
        // would half-close the call.
        let response = tokio::time::timeout(self.timeout, self.client.listen(rx))
            .await
            .map_err(|_| Status::deadline_exceeded("Listen did not start in time"))??;
        self.stream = Some(Open {
            requests: Some(tx),
            responses: response.into_inner(),
        });
        self.retry_at = None;
        Ok(())
    }

    /// The stream failed: re-open it after a pause if the failure is
    /// transient; else end every watch with it.
    fn failed(&mut self, s: Status) {
        self.stream = None;
        if is_transient(s.code()) {
            tracing::debug!(
                code = ?s.code(),
                message = s.message(),
                pause = ?self.pause,
                "firestore watch: stream failed, listening again"
            );
            self.retry_at = Some(Instant::now() + self.pause);
            self.pause = (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
        } else {
            tracing::warn!(code = ?s.code(), message = s.message(), "firestore watch: stream failed");
            for (_, t) in self.targets.drain() {
                t.slot.fail(from_status(s.clone(), "watch", None));
            }
        }
    }

    fn command(&mut self, command: Command) {
        let request = match command {
            Command::Add { id, target, slot } => {
                let request = add_request(&self.names, id, &target);
                self.targets.insert(id, TargetState::new(target, slot));
                request
            }
            Command::Read { id, documents } => {
                if let Some(t) = self.targets.get_mut(&id) {
                    t.read(&self.names, documents);
                }
                return;
            }
            Command::Remove { id } => {
                if self.targets.remove(&id).is_none() {
                    return;
                }
                fs::ListenRequest {
                    database: self.names.database.clone(),
                    target_change: Some(listen_request::TargetChange::RemoveTarget(id)),
                    ..Default::default()
                }
            }
        };
        // A half-closed stream takes no request: `run` replaces it.
        if let Some(requests) = self.stream.as_ref().and_then(|o| o.requests.as_ref()) {
            if requests.unbounded_send(request).is_err() {
                self.failed(Status::unavailable("the listen stream closed"));
            }
        }
    }

    /// The ids a message concerns: the ones it names, or all.
    fn ids(&self, named: &[i32]) -> Vec<i32> {
        if named.is_empty() {
            self.targets.keys().copied().collect()
        } else {
            named.to_vec()
        }
    }

    fn apply(&mut self, response: fs::ListenResponse) -> Result<(), Status> {
        match response.response_type {
            Some(ResponseType::TargetChange(tc)) => {
                let kind = TargetChangeType::try_from(tc.target_change_type);
                for id in self.ids(&tc.target_ids) {
                    match kind {
                        Ok(TargetChangeType::Current) => {
                            if let Some(t) = self.targets.get_mut(&id) {
                                t.current = true;
                            }
                        }
                        Ok(TargetChangeType::Reset) => {
                            if let Some(t) = self.targets.get_mut(&id) {
                                t.restart();
                            }
                        }
                        Ok(TargetChangeType::Remove) => match &tc.cause {
                            // The server refused the target: that watch ends.
                            Some(cause) => {
                                if let Some(t) = self.targets.remove(&id) {
                                    let status =
                                        Status::new(Code::from(cause.code), cause.message.clone());
                                    t.slot.fail(from_status(status, "watch", None));
                                }
                            }
                            // Removed without a reason while still wanted:
                            // start over.
                            None if self.targets.contains_key(&id) => {
                                return Err(Status::unavailable(
                                    "the server removed a listen target",
                                ));
                            }
                            None => {}
                        },
                        Ok(TargetChangeType::Add | TargetChangeType::NoChange) | Err(_) => {}
                    }
                }
                // A consistent snapshot of the whole stream.
                if tc.target_ids.is_empty() && tc.read_time.is_some() {
                    let names = &self.names;
                    for t in self.targets.values_mut() {
                        if t.current {
                            t.flush(names);
                        }
                    }
                    self.pause = Duration::ZERO;
                }
            }
            Some(ResponseType::DocumentChange(dc)) => {
                if let Some(doc) = dc.document {
                    let at = doc.update_time.as_ref().and_then(path::version);
                    for id in &dc.removed_target_ids {
                        if let Some(t) = self.targets.get_mut(id) {
                            t.heard(doc.name.clone(), None, at);
                        }
                    }
                    for id in &dc.target_ids {
                        if let Some(t) = self.targets.get_mut(id) {
                            t.heard(doc.name.clone(), Some(doc.clone()), at);
                        }
                    }
                }
            }
            Some(ResponseType::DocumentDelete(fs::DocumentDelete {
                document,
                removed_target_ids,
                read_time,
                ..
            }))
            | Some(ResponseType::DocumentRemove(fs::DocumentRemove {
                document,
                removed_target_ids,
                read_time,
                ..
            })) => {
                let at = read_time.as_ref().and_then(path::version);
                for id in self.ids(&removed_target_ids) {
                    if let Some(t) = self.targets.get_mut(&id) {
                        t.heard(document.clone(), None, at);
                    }
                }
            }
            // Only sent to resumed targets, which this hub never asks for; if
            // one comes and disagrees with what was seen, start over.
            Some(ResponseType::Filter(f)) => {
                if let Some(t) = self.targets.get(&f.target_id) {
                    let count = usize::try_from(f.count).unwrap_or(usize::MAX);
                    if !t.reset && count != t.view_len(&self.names) {
                        return Err(Status::aborted("existence filter mismatch"));
                    }
                }
            }
            None => {}
        }
        Ok(())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Stopped with watches left (its runtime shut down): end them rather
        // than leave them waiting forever.
        for (_, t) in self.targets.drain() {
            t.slot.fail(StoreError::Unavailable {
                message: "the Firestore listener stopped".to_owned(),
                source: None,
            });
        }
    }
}

async fn next_response(stream: &mut Option<Open>) -> Result<Option<fs::ListenResponse>, Status> {
    match stream {
        Some(open) => open.responses.message().await,
        None => std::future::pending().await,
    }
}

fn add_request(names: &Names, id: i32, target: &WatchTarget) -> fs::ListenRequest {
    let target_type = match target {
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
    fs::ListenRequest {
        database: names.database.clone(),
        target_change: Some(listen_request::TargetChange::AddTarget(fs::Target {
            target_id: id,
            target_type: Some(target_type),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One target's protocol state and what its watch has been given.
struct TargetState {
    target: WatchTarget,
    slot: Arc<Slot>,
    /// `CURRENT` since it was (re-)added or last reset.
    current: bool,
    /// What follows is the target's whole state (added, or `RESET`).
    reset: bool,
    /// Changes since the last snapshot, by document name: the newest state.
    pending: BTreeMap<String, Heard>,
    /// The version last yielded for each document that exists as yielded.
    seen: HashMap<DocKey, Version>,
}

/// A document's newest state heard since the last snapshot.
struct Heard {
    /// `None`: deleted, or no longer in the target.
    doc: Option<fs::Document>,
    /// When it was so: the document's update time, or the read time of its
    /// deletion (`None` if the server gave none).
    at: Option<Version>,
}

impl TargetState {
    fn new(target: WatchTarget, slot: Arc<Slot>) -> Self {
        Self {
            target,
            slot,
            current: false,
            reset: true,
            pending: BTreeMap::new(),
            seen: HashMap::new(),
        }
    }

    /// Its whole state is about to be sent again.
    fn restart(&mut self) {
        self.current = false;
        self.reset = true;
        self.pending.clear();
    }

    /// How many documents the target holds as seen so far.
    fn view_len(&self, names: &Names) -> usize {
        let kept = self
            .seen
            .keys()
            .filter(|k| !self.pending.contains_key(&names.doc(k)))
            .count();
        kept + self.pending.values().filter(|h| h.doc.is_some()).count()
    }

    /// Notes a document's state since the last snapshot, unless the state
    /// already noted is newer. The emulator can send a document's state as
    /// it read it when the target was added *after* a change committed
    /// meanwhile: the older state must not replace the newer one, or the
    /// watch would yield the older and never hear of the newer.
    fn heard(&mut self, name: String, doc: Option<fs::Document>, at: Option<Version>) {
        let older = self
            .pending
            .get(&name)
            .and_then(|h| h.at)
            .zip(at)
            .is_some_and(|(noted, new)| new < noted);
        if !older {
            self.pending.insert(name, Heard { doc, at });
        }
    }

    /// Hands the watch what changed since the last snapshot.
    fn flush(&mut self, names: &Names) {
        let pending = std::mem::take(&mut self.pending);
        let mut changes = Vec::new();
        if self.reset {
            // The target's whole state was sent: whatever was yielded as
            // existing and is not in it has gone.
            let mut gone: Vec<DocKey> = self
                .seen
                .keys()
                .filter(|k| !matches!(pending.get(&names.doc(k)), Some(Heard { doc: Some(_), .. })))
                .cloned()
                .collect();
            gone.sort();
            for key in gone {
                self.seen.remove(&key);
                changes.push(Change::Deleted { key });
            }
        }
        for (name, Heard { doc, .. }) in pending {
            let Some(key) = names.key(&name).filter(|k| self.target.covers(k)) else {
                continue;
            };
            match doc {
                Some(doc) => {
                    if let Some(c) = self.offer(key, doc) {
                        changes.push(c);
                    }
                }
                None => {
                    if self.seen.remove(&key).is_some() {
                        changes.push(Change::Deleted { key });
                    }
                }
            }
        }
        self.reset = false;
        // Pushed even when empty: the first flush is the initial state.
        self.slot.push(changes);
    }

    /// Hands the watch the states of a read of the target that are newer
    /// than it has been given. (What a read misses, a deletion, the stream
    /// tells: a read cannot say whether its absence is older or newer than
    /// what was yielded.)
    fn read(&mut self, names: &Names, documents: Vec<fs::Document>) {
        let changes: Vec<Change> = documents
            .into_iter()
            .filter_map(|doc| {
                let key = names.key(&doc.name).filter(|k| self.target.covers(k))?;
                self.offer(key, doc)
            })
            .collect();
        if !changes.is_empty() {
            self.slot.push(changes);
        }
    }

    /// A document's state as a change, unless a version at least as new was
    /// yielded.
    fn offer(&mut self, key: DocKey, doc: fs::Document) -> Option<Change> {
        let Some(version) = doc.update_time.as_ref().and_then(path::version) else {
            tracing::warn!(%key, "firestore watch: a document without a valid update time");
            return None;
        };
        if self.seen.get(&key).is_some_and(|last| *last >= version) {
            return None;
        }
        match store::document(key.clone(), doc) {
            Ok(d) => {
                self.seen.insert(key, version);
                Some(Change::Put(d))
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "firestore watch: unreadable document");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
