//! One watch target's bookkeeping: what the server said since the last
//! snapshot, and what the target's watch has been given.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agentorg_core::store::{Change, DocKey, Version, WatchTarget};
use firestore::gcloud_sdk::google::firestore::v1 as fs;

use super::Slot;
use crate::path::{self, Names};
use crate::store;

/// One target's protocol state and what its watch has been given.
pub(super) struct TargetState {
    pub(super) target: WatchTarget,
    pub(super) slot: Arc<Slot>,
    /// `CURRENT` since it was (re-)added or last reset.
    pub(super) current: bool,
    /// What follows is the target's whole state (added, or `RESET`).
    pub(super) reset: bool,
    /// Changes since the last snapshot, by document name: the newest state.
    pending: BTreeMap<String, Heard>,
    /// The version last yielded for each document that exists as yielded.
    seen: HashMap<DocKey, Version>,
    /// The latest time the stream gave for any state of the target's
    /// documents: an update time, a deletion's read time, or the read time
    /// of a snapshot that found a document gone. A read no newer than this
    /// has nothing the stream has not said.
    newest: Option<Version>,
}

/// A document's newest state heard since the last snapshot.
struct Heard {
    /// `None`: deleted, or no longer in the target.
    doc: Option<fs::Document>,
    /// When it was so: the document's update time (also when it left the
    /// target), or the read time of its deletion (`None` if the server gave
    /// none). A deletion's read time is taken to be at or after its commit,
    /// as Firestore's are.
    at: Option<Version>,
}

impl TargetState {
    pub(super) fn new(target: WatchTarget, slot: Arc<Slot>) -> Self {
        Self {
            target,
            slot,
            current: false,
            reset: true,
            pending: BTreeMap::new(),
            seen: HashMap::new(),
            newest: None,
        }
    }

    /// Its whole state is about to be sent again.
    pub(super) fn restart(&mut self) {
        self.current = false;
        self.reset = true;
        self.pending.clear();
    }

    /// How many documents the target holds as seen so far.
    pub(super) fn view_len(&self, names: &Names) -> usize {
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
    pub(super) fn heard(&mut self, name: String, doc: Option<fs::Document>, at: Option<Version>) {
        let older = self
            .pending
            .get(&name)
            .and_then(|h| h.at)
            .zip(at)
            .is_some_and(|(noted, new)| new < noted);
        self.newest = self.newest.max(at);
        if !older {
            self.pending.insert(name, Heard { doc, at });
        }
    }

    /// Hands the watch what changed since the last snapshot, read at `at`.
    pub(super) fn flush(&mut self, names: &Names, at: Option<Version>) {
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
                self.newest = self.newest.max(at);
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

    /// Applies a read of a document target's document: yielded if newer
    /// than any state the stream gave (a read that went by a deletion must
    /// not bring the document back), and a noted change older than it is
    /// dropped (the read holds what followed it). Ignored while the
    /// target's whole state is being sent again.
    pub(super) fn read(&mut self, names: &Names, document: fs::Document) {
        let WatchTarget::Document(key) = &self.target else {
            return;
        };
        let Some(version) = document.update_time.as_ref().and_then(path::version) else {
            return;
        };
        if self.reset || !self.current || self.newest.is_some_and(|n| version <= n) {
            return;
        }
        let key = key.clone();
        let name = names.doc(&key);
        if self
            .pending
            .get(&name)
            .and_then(|h| h.at)
            .is_some_and(|noted| noted < version)
        {
            self.pending.remove(&name);
        }
        if let Some(c) = self.offer(key, document) {
            self.slot.push(vec![c]);
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
