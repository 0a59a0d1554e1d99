//! A view of a store limited to one part of it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage, StateStore, StoreError,
    Version, WatchTarget, Write,
};

/// A view of a store that reaches only the collections under one path
/// (`<root>/…`); anything else is refused with
/// [`StoreError::Forbidden`] before the inner store is called.
///
/// A role's [`Context::store`](crate::runtime::Context::store) is one,
/// rooted at the role's own namespace (`agentorg/<org>/roles/<role>`), so a
/// role's code reads and writes only its own state; shared state is reached
/// through the patterns, which check the chart.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agentorg_core::store::StoreError> {
/// use std::sync::Arc;
/// use agentorg_core::store::{CollectionPath, MemoryStore, ScopedStore, StateStore, StateStoreExt, StoreError};
///
/// let store = ScopedStore::new(Arc::new(MemoryStore::new()), "agentorg/demo/roles/backend");
/// let mine = CollectionPath::new("agentorg/demo/roles/backend/notes")?.doc("a")?;
/// store.create(&mine, serde_json::json!({"n": 1})).await?;
/// let theirs = CollectionPath::new("agentorg/demo/roles/cto/notes")?.doc("a")?;
/// assert!(matches!(store.get(&theirs).await, Err(StoreError::Forbidden { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ScopedStore {
    inner: Arc<dyn StateStore>,
    /// `<root>/`: every reachable collection path starts with it.
    prefix: String,
}

impl ScopedStore {
    /// A view of `inner` limited to the collections under `root` (a
    /// document path such as `agentorg/<org>/roles/<role>`, without a
    /// trailing `/`).
    pub fn new(inner: Arc<dyn StateStore>, root: impl Into<String>) -> Self {
        let mut prefix = root.into();
        prefix.push('/');
        Self { inner, prefix }
    }

    /// The root this view is limited to.
    pub fn root(&self) -> &str {
        &self.prefix[..self.prefix.len() - 1]
    }

    fn check(&self, collection: &CollectionPath) -> Result<(), StoreError> {
        if collection.as_str().starts_with(&self.prefix) {
            return Ok(());
        }
        Err(StoreError::Forbidden {
            message: format!(
                "{collection} is outside this view of the store (only {}/… is reachable: \
                 a role reaches its own namespace, and shared state through the patterns)",
                self.root()
            ),
            source: None,
        })
    }
}

impl fmt::Debug for ScopedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedStore")
            .field("inner", &self.inner.to_string())
            .field("root", &self.root())
            .finish()
    }
}

impl fmt::Display for ScopedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (scoped to {}/…)", self.inner, self.root())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StateStore for ScopedStore {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        self.check(key.collection())?;
        self.inner.get(key).await
    }

    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError> {
        self.check(collection)?;
        self.inner.list(collection, options).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        for w in &writes {
            self.check(w.key().collection())?;
        }
        self.inner.commit(writes).await
    }

    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
        match &target {
            WatchTarget::Document(key) => self.check(key.collection())?,
            WatchTarget::Collection(c) => self.check(c)?,
        }
        self.inner.watch(target).await
    }
}
