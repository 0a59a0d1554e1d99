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
//! # A change while a watch starts
//!
//! The emulator, for a target added while its document changes, can send
//! the change first and then the state it read at the add; and now and then
//! it loses the change altogether (it read, the commit went by, then it
//! listened). Two defences:
//!
//! - between two snapshots a document's older state never replaces a newer
//!   one (update times, or a deletion's read time, decide);
//! - a document watch reads its document once more after the initial state
//!   (in the background: `watch` returns at the initial state) and yields
//!   it if it is newer than any state the stream gave for it (update times,
//!   and deletions' read times); noted changes older than it are dropped.
//!
//! A watch started during an update of its document then always hears of
//! it (`tests/watch_starts.rs`). Not covered: a *deletion* the emulator loses
//! so (a read cannot tell whether the document's absence is older or newer
//! than what was yielded: the emulator's read times and its snapshots' do
//! not compare); the same loss when a stream is re-opened and every target
//! added again (no read follows); and collection watches (the read would be
//! a second read of the whole collection; on the emulator they catch up at
//! the collection's next write, which resends its whole result set).
//!
//! A watch that is not read keeps its changes queued in its slot, where a
//! newer state of a document replaces an older one not yet taken, so a slow
//! watcher costs at most about one entry per document and catches up with
//! the latest state.
//!
//! # A lost initial state
//!
//! Now and then (once in tens of thousands of starts in
//! `tests/watch_starts.rs`) the emulator never sends a newly added target
//! its initial state, and the watch's start waited for it until the
//! request timeout. A start that has waited 10 s ([`RESYNC`]) asks the hub
//! to open the stream again, as after a failure (below): every target is
//! added again and diffed against what its watch has yielded. The hub does
//! so only for a target still without its initial state, and not within
//! 5 s of the stream's last opening; the start asks again every 10 s, until
//! the request timeout, which still ends it with `Timeout`. The price, paid
//! only then: the old stream is dropped, not half-closed (which the
//! emulator can answer by failing another client's commit with `CANCELLED`,
//! a transient error), every target re-reads its state, and the other
//! watches are exposed to the loss listed above for a re-opened stream.
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agentorg_core::store::{Change, ChangeStream, DocKey, StoreError, WatchTarget};
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
use crate::store::{Client, Inner};

mod targets;
use targets::TargetState;

/// The longest pause between attempts to re-open a failing stream.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// The first pause after a failed attempt (the first re-open is at once).
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// How long a stream with no target stays open for the next watch.
const IDLE: Duration = Duration::from_secs(30);
/// How long a starting watch waits for its target's initial state before
/// the hub opens the stream again (see "A lost initial state").
const RESYNC: Duration = Duration::from_secs(10);

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
    /// A document target's document as read after its initial state.
    Read {
        id: i32,
        document: fs::Document,
    },
    /// Target `id` has waited [`RESYNC`] for its initial state: if it
    /// still has none, open the stream again.
    Resync {
        id: i32,
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
pub(crate) async fn start(
    inner: &Arc<Inner>,
    target: WatchTarget,
) -> Result<ChangeStream, StoreError> {
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
    initial_state(&watch, inner.request_timeout()).await?;
    if let WatchTarget::Document(key) = target {
        tokio::spawn(read_again(
            Arc::clone(inner),
            key,
            id,
            watch.commands.clone(),
        ));
    }
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    });
    Ok(Box::pin(stream))
}

/// Waits for `watch`'s initial state, asking the hub to open the stream
/// again each [`RESYNC`] it does not come, until `timeout` (then
/// `Timeout`).
async fn initial_state(watch: &Watch, timeout: Duration) -> Result<(), StoreError> {
    // A timeout too far to represent waits without a deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map_or(RESYNC, |d| d.saturating_duration_since(Instant::now()));
        let wait = RESYNC.min(left);
        match tokio::time::timeout(wait, watch.slot.synced()).await {
            Ok(result) => return result,
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(StoreError::Timeout {
                    operation: "watch (initial state)".to_owned(),
                })
            }
            Err(_) => {
                // The hub may be gone; then the slot fails, or the deadline
                // comes.
                let _ = watch.commands.send(Command::Resync { id: watch.id });
            }
        }
    }
}

/// Reads a document watch's document once more after its initial state and
/// hands the read to the hub (see "A change while a watch starts"). Best
/// effort: a failed read leaves the watch as it was.
async fn read_again(
    inner: Arc<Inner>,
    key: DocKey,
    id: i32,
    commands: mpsc::UnboundedSender<Command>,
) {
    match inner.get_raw(&key).await {
        Ok(Some(document)) => {
            // The hub may be gone; then the watch has ended anyway.
            let _ = commands.send(Command::Read { id, document });
        }
        Ok(None) => {}
        Err(s) => {
            tracing::debug!(%key, code = ?s.code(), message = s.message(), "firestore watch: the read after the initial state failed");
        }
    }
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
    /// When it was opened.
    opened: Instant,
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
            opened: Instant::now(),
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
            Command::Read { id, document } => {
                if let Some(t) = self.targets.get_mut(&id) {
                    t.read(&self.names, document);
                }
                return;
            }
            Command::Resync { id } => {
                let waiting = self
                    .targets
                    .get(&id)
                    .is_some_and(|t| !lock(&t.slot.state).synced);
                // Not again within half a RESYNC of the last opening (the
                // start that asked for it asks again a RESYNC later): a
                // slow emulator gets its time.
                let settled = self
                    .stream
                    .as_ref()
                    .is_some_and(|o| o.opened.elapsed() >= RESYNC / 2);
                if waiting && settled {
                    tracing::debug!(
                        target_id = id,
                        "firestore watch: no initial state yet; listening again"
                    );
                    self.failed(Status::unavailable("a target's initial state did not come"));
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
                    let at = tc.read_time.as_ref().and_then(path::version);
                    for t in self.targets.values_mut() {
                        if t.current {
                            t.flush(names, at);
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

#[cfg(test)]
mod tests;
