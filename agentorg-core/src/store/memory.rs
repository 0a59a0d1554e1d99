//! The in-process state store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    validate_writes, Change, ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage,
    Precondition, StateStore, StoreError, Version, WatchTarget, Write,
};

/// An in-process [`StateStore`]: the embedded default, and the reference the
/// conformance suite is written against.
///
/// Versions come from one counter, so every write — a delete too — gets a
/// version greater than any before it. It refuses exactly what the contract's
/// document limits exclude, so code that runs here runs on Firestore.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agentorg_core::store::StoreError> {
/// use agentorg_core::store::{DocKey, MemoryStore, Precondition, StateStoreExt};
/// use serde_json::json;
///
/// let store = MemoryStore::new();
/// let key = DocKey::new("tasks", "t1")?;
/// let v1 = store.create(&key, json!({"status": "pending"})).await?;
/// // A writer holding an old version loses:
/// store.put(&key, json!({"status": "in_progress"}), Precondition::Version(v1)).await?;
/// let stale = store.put(&key, json!({"status": "failed"}), Precondition::Version(v1)).await;
/// assert!(stale.unwrap_err().is_precondition_failure());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

// One std Mutex guards all documents: critical sections are short and never
// await. Changes are sent to the watches that cover them while the lock is
// held, so each watch sees them in version order, and a write wakes only the
// watches of its document and collection.
struct Inner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    collections: HashMap<CollectionPath, BTreeMap<Arc<str>, Stored>>,
    last_version: u64,
    watches: Watches,
    next_watch: u64,
}

/// The open watches, by what they follow.
#[derive(Default)]
struct Watches {
    documents: HashMap<DocKey, Vec<Slot>>,
    collections: HashMap<CollectionPath, Vec<Slot>>,
}

/// Where one watch's changes go. A watch that falls `CHANGE_BUFFER` changes
/// behind is marked lagged and re-reads its target.
struct Slot {
    id: u64,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

impl Watches {
    fn slots(&mut self, target: &WatchTarget) -> &mut Vec<Slot> {
        match target {
            WatchTarget::Document(k) => self.documents.entry(k.clone()).or_default(),
            WatchTarget::Collection(c) => self.collections.entry(c.clone()).or_default(),
        }
    }

    fn remove(&mut self, target: &WatchTarget, id: u64) {
        let emptied = {
            let slots = self.slots(target);
            slots.retain(|s| s.id != id);
            slots.is_empty()
        };
        if emptied {
            match target {
                WatchTarget::Document(k) => self.documents.remove(k),
                WatchTarget::Collection(c) => self.collections.remove(c),
            };
        }
    }

    /// Sends `event` to the watches that cover its document.
    fn send(&self, event: &Event) {
        if self.documents.is_empty() && self.collections.is_empty() {
            return;
        }
        let by_doc = self.documents.get(&event.key).into_iter().flatten();
        let by_collection = self
            .collections
            .get(event.key.collection())
            .into_iter()
            .flatten();
        for slot in by_doc.chain(by_collection) {
            // Closed: the watch is being dropped and removes itself.
            if let Err(mpsc::error::TrySendError::Full(_)) = slot.tx.try_send(event.clone()) {
                slot.lagged.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[derive(Clone)]
struct Stored {
    value: Arc<Value>,
    version: Version,
}

/// A change as broadcast to watchers: deletes carry a version too, so a
/// watcher can order them against puts.
#[derive(Clone)]
struct Event {
    key: DocKey,
    stored: Option<Stored>,
    version: Version,
}

const CHANGE_BUFFER: usize = 1024;

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Number of documents held (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner.state)
            .collections
            .values()
            .map(BTreeMap::len)
            .sum()
    }

    /// Whether the store holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("documents", &self.len())
            .finish()
    }
}

impl fmt::Display for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl State {
    fn get(&self, key: &DocKey) -> Option<&Stored> {
        self.collections.get(key.collection())?.get(key.id())
    }

    fn check(&self, w: &Write) -> Result<(), StoreError> {
        let key = w.key();
        let current = self.get(key);
        match (w.precondition(), current) {
            (Precondition::None, _) => Ok(()),
            (Precondition::MustNotExist, Some(s)) => Err(StoreError::Conflict {
                key: key.to_string(),
                message: format!("document exists (at {})", s.version),
            }),
            (Precondition::MustNotExist, None) => Ok(()),
            (Precondition::MustExist | Precondition::Version(_), None) => {
                Err(StoreError::NotFound {
                    key: key.to_string(),
                })
            }
            (Precondition::MustExist, Some(_)) => Ok(()),
            (Precondition::Version(v), Some(s)) if s.version == v => Ok(()),
            (Precondition::Version(v), Some(s)) => Err(StoreError::Conflict {
                key: key.to_string(),
                message: format!("expected {v}, found {}", s.version),
            }),
        }
    }

    fn snapshot(&self, target: &WatchTarget) -> Vec<(DocKey, Stored)> {
        match target {
            WatchTarget::Document(key) => self
                .get(key)
                .map(|s| vec![(key.clone(), s.clone())])
                .unwrap_or_default(),
            WatchTarget::Collection(c) => self
                .collections
                .get(c)
                .map(|docs| {
                    docs.iter()
                        .filter_map(|(id, s)| Some((c.doc(id).ok()?, s.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        Ok(lock(&self.inner.state)
            .get(key)
            .map(|s| Document::new(key.clone(), (*s.value).clone(), s.version)))
    }

    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError> {
        if options.page_size == 0 || options.page_size > ListOptions::MAX_PAGE_SIZE {
            return Err(StoreError::invalid(
                Some(collection),
                format!(
                    "page size {} is outside 1..={}",
                    options.page_size,
                    ListOptions::MAX_PAGE_SIZE
                ),
            ));
        }
        let st = lock(&self.inner.state);
        let Some(docs) = st.collections.get(collection) else {
            return Ok(ListPage::new(Vec::new(), None));
        };
        let after = options.page_token.as_deref();
        let mut iter = docs
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| &***id > a));
        let mut documents = Vec::with_capacity(options.page_size.min(docs.len()));
        for (id, s) in iter.by_ref().take(options.page_size) {
            documents.push(Document::new(
                collection.doc(id)?,
                (*s.value).clone(),
                s.version,
            ));
        }
        let next = if iter.next().is_some() {
            documents.last().map(|d| d.key.id().to_owned())
        } else {
            None
        };
        Ok(ListPage::new(documents, next))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        validate_writes(&writes)?;
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        for w in &writes {
            st.check(w)?;
        }
        let mut versions = Vec::with_capacity(writes.len());
        // What the writes replace or delete is freed after the lock is
        // released: dropping a document is a walk over its whole tree.
        let mut replaced = Vec::with_capacity(writes.len());
        for w in writes {
            st.last_version += 1;
            let version = Version::from_raw(st.last_version);
            match w {
                Write::Put { key, value, .. } => {
                    let stored = Stored {
                        value: Arc::new(value),
                        version,
                    };
                    let docs = match st.collections.get_mut(key.collection()) {
                        Some(docs) => docs,
                        None => st.collections.entry(key.collection().clone()).or_default(),
                    };
                    replaced.extend(docs.insert(Arc::from(key.id()), stored.clone()));
                    st.watches.send(&Event {
                        key,
                        stored: Some(stored),
                        version,
                    });
                    versions.push(Some(version));
                }
                Write::Delete { key, .. } => {
                    let removed = st
                        .collections
                        .get_mut(key.collection())
                        .and_then(|docs| docs.remove(key.id()));
                    if let Some(removed) = removed {
                        replaced.push(removed);
                        st.watches.send(&Event {
                            key,
                            stored: None,
                            version,
                        });
                    }
                    versions.push(None);
                }
            }
        }
        drop(guard);
        drop(replaced);
        Ok(versions)
    }

    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
        // Subscribe and snapshot under one lock: no change falls between them.
        let (tx, rx) = mpsc::channel(CHANGE_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let (id, initial) = {
            let mut st = lock(&self.inner.state);
            st.next_watch += 1;
            let id = st.next_watch;
            st.watches.slots(&target).push(Slot {
                id,
                tx,
                lagged: Arc::clone(&lagged),
            });
            (id, st.snapshot(&target))
        };
        let mut watcher = Watcher {
            inner: Arc::clone(&self.inner),
            target,
            id,
            rx,
            lagged,
            seen: HashMap::new(),
            queue: VecDeque::new(),
        };
        for (key, stored) in initial {
            watcher.offer(key, Some(stored), None);
        }
        let stream = futures::stream::unfold(watcher, |mut w| async move {
            let change = w.next().await?;
            Some((Ok(change), w))
        });
        Ok(Box::pin(stream))
    }
}

/// One watch: remembers the last version it yielded per document, so nothing
/// goes backwards or repeats, and after falling behind it re-reads the target
/// and yields only what is newer.
struct Watcher {
    inner: Arc<Inner>,
    target: WatchTarget,
    id: u64,
    rx: mpsc::Receiver<Event>,
    /// Set when a change could not be queued for it.
    lagged: Arc<AtomicBool>,
    /// Per document: the last version accounted for (a delete's own version
    /// for a deleted document) and whether it exists in what was yielded.
    seen: HashMap<DocKey, (Version, bool)>,
    queue: VecDeque<Change>,
}

impl Watcher {
    /// Queues a change unless something at least as new was accounted for.
    /// `version` is the event's version (a delete's own version), else the
    /// stored document's.
    fn offer(&mut self, key: DocKey, stored: Option<Stored>, version: Option<Version>) {
        let Some(version) = version.or(stored.as_ref().map(|s| s.version)) else {
            return;
        };
        let last = self.seen.get(&key).copied();
        if last.is_some_and(|(v, _)| v >= version) {
            return;
        }
        let existed = last.is_some_and(|(_, exists)| exists);
        self.seen.insert(key.clone(), (version, stored.is_some()));
        match stored {
            Some(s) => self.queue.push_back(Change::Put(Document::new(
                key,
                (*s.value).clone(),
                s.version,
            ))),
            // A delete of something not yielded as existing is not news.
            None if existed => self.queue.push_back(Change::Deleted { key }),
            None => {}
        }
    }

    /// After lagging: yield the current state of whatever changed.
    fn resync(&mut self) {
        let (current, watermark) = {
            let st = lock(&self.inner.state);
            (
                st.snapshot(&self.target),
                Version::from_raw(st.last_version),
            )
        };
        let present: std::collections::HashSet<DocKey> =
            current.iter().map(|(k, _)| k.clone()).collect();
        let gone: Vec<DocKey> = self
            .seen
            .iter()
            .filter(|(k, (_, exists))| *exists && !present.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            // Deleted while we lagged: its delete version is at most the
            // watermark, and anything later has a greater version.
            self.offer(key, None, Some(watermark));
        }
        for (key, stored) in current {
            self.offer(key, Some(stored), None);
        }
    }

    async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(c) = self.queue.pop_front() {
                return Some(c);
            }
            if self.lagged.swap(false, Ordering::SeqCst) {
                // What is still queued is older than the re-read, and
                // `offer` passes over it.
                self.resync();
                continue;
            }
            let ev = self.rx.recv().await?;
            self.offer(ev.key, ev.stored, Some(ev.version));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        lock(&self.inner.state)
            .watches
            .remove(&self.target, self.id);
    }
}
