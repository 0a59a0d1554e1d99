//! The [`StateStore`] trait: versioned documents with conditional writes.
//!
//! Documents are JSON objects addressed by a collection path and an id, each
//! with a [`Version`] the store assigns on every write. Writes carry a
//! [`Precondition`]; a failed one is a [`StoreError::Conflict`] (or
//! [`StoreError::NotFound`] when the document must exist and does not). An
//! atomic [`commit`](StateStore::commit) applies several preconditioned writes
//! all or nothing: this is the optimistic transaction every pattern uses —
//! read versions, commit with preconditions, re-read and retry on conflict.
//!
//! # Document limits
//!
//! The contract admits only documents that every backend can hold — those
//! Firestore accepts: a JSON object, at most 1 MiB by Firestore's size rules,
//! no array directly inside an array, nesting at most 20 deep, no empty keys
//! and no keys of the form `__x__`, integers within `i64`. Every backend
//! refuses the rest with [`StoreError::InvalidInput`] before writing, so code
//! that runs on memory runs on Firestore. See [`validate_document`].
//!
//! # Watch semantics
//!
//! [`watch`](StateStore::watch) first yields the current state of every
//! document of the target, then its changes. For each document, the versions
//! yielded strictly increase, none is yielded twice, and the latest state is
//! always delivered eventually; intermediate versions may be coalesced (a
//! watcher that falls behind catches up with the latest state).
//!
//! # Implementations
//!
//! * [`MemoryStore`]: in process, the embedded default.
//! * `agentorg-firestore`: Google Cloud Firestore (facade feature `firestore`).

use std::fmt::{self, Debug, Display};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

mod limits;
mod memory;
mod scoped;

pub use limits::{document_size, validate_document, MAX_DEPTH, MAX_DOCUMENT_BYTES};
pub use memory::MemoryStore;
pub use scoped::ScopedStore;

/// A boxed error from a backend, kept as the source of [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation.
///
/// `Timeout` and `Unavailable` are retryable as they are
/// ([`is_retryable`](Self::is_retryable)). `Conflict` and `NotFound` from a
/// conditional write mean the document changed: re-read it, decide again, and
/// retry with the new version — never blindly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request is invalid: a bad path, or a document outside the limits.
    #[error("invalid input{}: {message}", key.as_ref().map(|k| format!(" for {k}")).unwrap_or_default())]
    InvalidInput {
        /// The document concerned, if any.
        key: Option<String>,
        /// What was wrong.
        message: String,
    },
    /// The document does not exist but the write required it to.
    #[error("document {key} not found")]
    NotFound {
        /// The document.
        key: String,
    },
    /// A precondition failed: the document exists when it must not, or is
    /// not at the required version.
    #[error("conflict on {key}: {message}")]
    Conflict {
        /// The document.
        key: String,
        /// Which precondition failed.
        message: String,
    },
    /// The store refused the operation for this identity.
    #[error("forbidden: {message}")]
    Forbidden {
        /// What was refused.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The operation did not finish in time. Retryable.
    #[error("{operation} timed out")]
    Timeout {
        /// The operation.
        operation: String,
    },
    /// The store cannot be reached right now. Retryable.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other backend error.
    #[error("{backend} error: {source}")]
    Other {
        /// The backend's name.
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again as it is.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }

    /// Whether a precondition failed (`Conflict`, or `NotFound` on a write
    /// that required the document): re-read and decide again.
    pub fn is_precondition_failure(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::NotFound { .. })
    }

    pub(crate) fn invalid(key: Option<&dyn Display>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            key: key.map(ToString::to_string),
            message: message.into(),
        }
    }
}

/// The longest path segment (collection or document id) accepted, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 1500;

/// `path` makes the key the error names (only when there is an error).
fn check_segment(seg: &str, what: &str, path: impl FnOnce() -> String) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidInput {
            key: Some(path()),
            message: format!("{what} {seg:?} {why}"),
        })
    };
    if seg.is_empty() {
        return bad("is empty");
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return bad("is longer than 1500 bytes");
    }
    if seg.contains('/') {
        return bad("contains '/'");
    }
    if seg == "." || seg == ".." {
        return bad("is reserved");
    }
    if seg.len() >= 4 && seg.starts_with("__") && seg.ends_with("__") {
        return bad("matches the reserved form __x__");
    }
    if seg.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// A collection path: `tasks`, or nested below a document, `orgs/genbrain/tasks`
/// (an odd number of `/`-separated segments).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CollectionPath(Arc<str>);

impl CollectionPath {
    /// Validates a collection path.
    pub fn new(path: impl AsRef<str>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let mut n = 0;
        for (i, seg) in path.split('/').enumerate() {
            check_segment(
                seg,
                if i % 2 == 0 {
                    "collection id"
                } else {
                    "document id"
                },
                || path.to_owned(),
            )?;
            n += 1;
        }
        if n % 2 == 0 {
            return Err(StoreError::invalid(
                Some(&path),
                "a collection path has an odd number of segments",
            ));
        }
        Ok(Self(Arc::from(path)))
    }

    /// The key of document `id` in this collection.
    pub fn doc(&self, id: impl AsRef<str>) -> Result<DocKey, StoreError> {
        let id = id.as_ref();
        check_segment(id, "document id", || format!("{}/{id}", self.0))?;
        Ok(DocKey {
            collection: self.clone(),
            id: Arc::from(id),
        })
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl Display for CollectionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Debug for CollectionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Debug::fmt(&*self.0, f)
    }
}

/// A document's address: collection path + id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    collection: CollectionPath,
    id: Arc<str>,
}

impl DocKey {
    /// Validates and builds a key.
    pub fn new(collection: impl AsRef<str>, id: impl AsRef<str>) -> Result<Self, StoreError> {
        CollectionPath::new(collection)?.doc(id)
    }

    /// Parses a full document path `collection/…/id` (even segment count).
    pub fn parse(path: impl AsRef<str>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        match path.rsplit_once('/') {
            Some((collection, id)) => Self::new(collection, id),
            None => Err(StoreError::invalid(
                Some(&path),
                "a document path has an even number of segments",
            )),
        }
    }

    /// The collection it belongs to.
    pub fn collection(&self) -> &CollectionPath {
        &self.collection
    }

    /// Its id within the collection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A collection nested below this document.
    pub fn subcollection(&self, name: impl AsRef<str>) -> Result<CollectionPath, StoreError> {
        CollectionPath::new(format!("{self}/{}", name.as_ref()))
    }
}

impl Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

impl Debug for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A document's version, assigned by the store on every write.
///
/// Opaque and ordered: for one document, a later write has a greater version.
/// Versions of different documents are not comparable. Backends choose the
/// encoding (a counter in memory, the update time in Firestore).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// A version from its backend encoding.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The backend encoding.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The condition a write requires of the document's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precondition {
    /// Write whatever the state.
    #[default]
    None,
    /// The document must not exist (create). Else `Conflict`.
    MustNotExist,
    /// The document must exist. Else `NotFound`.
    MustExist,
    /// The document must be at this version. `Conflict` if it is at another,
    /// `NotFound` if it does not exist.
    Version(Version),
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Write {
    /// Create or replace a document.
    Put {
        /// The document.
        key: DocKey,
        /// Its new content: a JSON object within the document limits.
        value: Value,
        /// The condition on its current state.
        precondition: Precondition,
    },
    /// Delete a document (deleting a missing one without precondition is a
    /// no-op).
    Delete {
        /// The document.
        key: DocKey,
        /// The condition on its current state.
        precondition: Precondition,
    },
}

impl Write {
    /// A put.
    pub fn put(key: DocKey, value: Value, precondition: Precondition) -> Self {
        Self::Put {
            key,
            value,
            precondition,
        }
    }

    /// A delete.
    pub fn delete(key: DocKey, precondition: Precondition) -> Self {
        Self::Delete { key, precondition }
    }

    /// The document written.
    pub fn key(&self) -> &DocKey {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }

    /// The write's precondition.
    pub fn precondition(&self) -> Precondition {
        match self {
            Self::Put { precondition, .. } | Self::Delete { precondition, .. } => *precondition,
        }
    }
}

/// A document with its version.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Document {
    /// Its address.
    pub key: DocKey,
    /// Its content (a JSON object).
    pub value: Value,
    /// Its version.
    pub version: Version,
}

impl Document {
    /// A document.
    pub fn new(key: DocKey, value: Value, version: Version) -> Self {
        Self {
            key,
            value,
            version,
        }
    }
}

/// Options of a list call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// The most documents in one page (1 to 1000; default 100).
    pub page_size: usize,
    /// Where to continue: the token of the previous page.
    pub page_token: Option<String>,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            page_size: 100,
            page_token: None,
        }
    }
}

impl ListOptions {
    /// The largest page size accepted.
    pub const MAX_PAGE_SIZE: usize = 1000;

    /// Options with a page size.
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// Options continuing after a page.
    pub fn with_page_token(mut self, token: Option<String>) -> Self {
        self.page_token = token;
        self
    }
}

/// One page of a collection, in id order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ListPage {
    /// The documents of this page.
    pub documents: Vec<Document>,
    /// The token of the next page, if there may be one.
    pub next_page_token: Option<String>,
}

impl ListPage {
    /// A page.
    pub fn new(documents: Vec<Document>, next_page_token: Option<String>) -> Self {
        Self {
            documents,
            next_page_token,
        }
    }
}

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchTarget {
    /// One document.
    Document(DocKey),
    /// The documents directly in one collection.
    Collection(CollectionPath),
}

impl WatchTarget {
    /// Whether `key` is followed by this target.
    pub fn covers(&self, key: &DocKey) -> bool {
        match self {
            Self::Document(k) => k == key,
            Self::Collection(c) => key.collection() == c,
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// The document exists with this content and version (created or updated,
    /// or its state when the watch started).
    Put(Document),
    /// The document was deleted.
    Deleted {
        /// The document.
        key: DocKey,
    },
}

impl Change {
    /// The document changed.
    pub fn key(&self) -> &DocKey {
        match self {
            Self::Put(d) => &d.key,
            Self::Deleted { key } => key,
        }
    }
}

/// The changes of a watch.
pub type ChangeStream = BoxStream<'static, Result<Change, StoreError>>;

/// Versioned JSON documents with conditional writes and atomic commits. See
/// the [module docs](self) for the contract.
///
/// Object-safe; used as `Arc<dyn StateStore>`. Conveniences live in
/// [`StateStoreExt`].
#[async_trait]
pub trait StateStore: Debug + Display + Send + Sync + 'static {
    /// Reads a document; `None` if it does not exist.
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError>;

    /// Lists one page of a collection's documents, in id order.
    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError>;

    /// Applies `writes` atomically: all preconditions hold and every write is
    /// applied, or none is. Returns each write's new version (`None` for a
    /// delete). Two writes to one document in a commit are refused.
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError>;

    /// Follows a document or a collection; see the module docs.
    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError>;
}

/// Conveniences over any [`StateStore`].
#[async_trait]
pub trait StateStoreExt: StateStore {
    /// Writes one document; returns its new version.
    async fn put(
        &self,
        key: &DocKey,
        value: Value,
        precondition: Precondition,
    ) -> Result<Version, StoreError> {
        let versions = self
            .commit(vec![Write::put(key.clone(), value, precondition)])
            .await?;
        versions
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| StoreError::Other {
                backend: "store",
                source: format!("commit of a put to {key} returned no version").into(),
            })
    }

    /// Creates a document that must not exist yet.
    async fn create(&self, key: &DocKey, value: Value) -> Result<Version, StoreError> {
        self.put(key, value, Precondition::MustNotExist).await
    }

    /// Deletes one document.
    async fn delete(&self, key: &DocKey, precondition: Precondition) -> Result<(), StoreError> {
        self.commit(vec![Write::delete(key.clone(), precondition)])
            .await
            .map(drop)
    }

    /// Reads every document of a collection, page by page.
    async fn list_all(&self, collection: &CollectionPath) -> Result<Vec<Document>, StoreError> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .list(
                    collection,
                    ListOptions::default()
                        .with_page_size(ListOptions::MAX_PAGE_SIZE)
                        .with_page_token(token),
                )
                .await?;
            all.extend(page.documents);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// An optimistic read-modify-write of one document: reads it, calls `f`
    /// with its current content (`None` if missing), writes what `f` returns
    /// on condition that the document did not change meanwhile, and retries
    /// on conflict (at most `max_attempts` times). `f` returning `None` leaves
    /// the document as it is.
    async fn update<F>(
        &self,
        key: &DocKey,
        max_attempts: u32,
        mut f: F,
    ) -> Result<Option<Document>, StoreError>
    where
        F: FnMut(Option<&Value>) -> Option<Value> + Send,
    {
        let mut last = None;
        for _ in 0..max_attempts.max(1) {
            let current = self.get(key).await?;
            let Some(next) = f(current.as_ref().map(|d| &d.value)) else {
                return Ok(current);
            };
            let precondition = current.as_ref().map_or(Precondition::MustNotExist, |d| {
                Precondition::Version(d.version)
            });
            match self.put(key, next.clone(), precondition).await {
                Ok(version) => return Ok(Some(Document::new(key.clone(), next, version))),
                Err(e) if e.is_precondition_failure() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Conflict {
            key: key.to_string(),
            message: "update gave up".to_owned(),
        }))
    }
}

impl<T: StateStore + ?Sized> StateStoreExt for T {}

/// The store as a trait object.
pub type DynStateStore = dyn StateStore;

macro_rules! forward_store {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: StateStore + ?Sized> StateStore for $ty {
            async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
                (**self).get(key).await
            }
            async fn list(
                &self,
                collection: &CollectionPath,
                options: ListOptions,
            ) -> Result<ListPage, StoreError> {
                (**self).list(collection, options).await
            }
            async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
                (**self).commit(writes).await
            }
            async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
                (**self).watch(target).await
            }
        }
    };
}

forward_store!(Arc<T>);
forward_store!(Box<T>);

/// Checks a commit's writes against the contract (document limits, no two
/// writes to one document) before any backend work. Backends call this.
pub fn validate_writes(writes: &[Write]) -> Result<(), StoreError> {
    // Most commits hold a handful of writes: comparing each pair is cheaper
    // than hashing every key.
    const PAIRWISE: usize = 16;
    let twice = |key: &DocKey| {
        Err(StoreError::invalid(
            Some(key),
            "a commit may write each document once",
        ))
    };
    if writes.len() <= PAIRWISE {
        for (i, w) in writes.iter().enumerate() {
            if writes[..i].iter().any(|e| e.key() == w.key()) {
                return twice(w.key());
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(writes.len());
        for w in writes {
            if !seen.insert(w.key()) {
                return twice(w.key());
            }
        }
    }
    for w in writes {
        if let Write::Put { key, value, .. } = w {
            validate_document(key, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_commit_writing_a_document_twice_is_refused_at_any_size() {
        for n in [2, 16, 17, 40] {
            let put = |i: usize| {
                let key = DocKey::new("c", format!("d{i}")).unwrap();
                Write::put(key, json!({ "i": i }), Precondition::None)
            };
            let mut writes: Vec<Write> = (0..n).map(put).collect();
            assert!(validate_writes(&writes).is_ok(), "{n} distinct writes");
            writes.push(Write::delete(
                DocKey::new("c", "d1").unwrap(),
                Precondition::None,
            ));
            let err = validate_writes(&writes).unwrap_err();
            assert!(err.to_string().contains("once"), "{n}: {err}");
        }
    }
}
