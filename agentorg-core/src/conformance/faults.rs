//! Fault injection for the suites and for backends' own tests: a transport
//! and a store that forward everything to the real one except where a hook
//! steps in, and the faults the suites use built from them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use agentorg_core::conformance::faults::fails_first_publishes;
//! use agentorg_core::subject::Subject;
//! use agentorg_core::transport::{MemoryTransport, PublishOptions, Transport};
//!
//! let t = fails_first_publishes(Arc::new(MemoryTransport::new()), 1);
//! let subject = Subject::parse("o.events.x").unwrap();
//! assert!(t.publish(&subject, "a".into(), PublishOptions::default()).await.is_err());
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::name::Name;
use crate::store::{
    ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage, StateStore, StoreError,
    Version, WatchTarget, Write,
};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{
    Acker, ConsumerConfig, ConsumerLag, Delivery, DeliveryStream, PublishAck, PublishOptions,
    Subscription, Transport, TransportError,
};

/// A durable publish as a hook sees it: the real transport, and the
/// publish's arguments.
pub type PublishHook = Arc<
    dyn Fn(
            Arc<dyn Transport>,
            Subject,
            Bytes,
            PublishOptions,
        ) -> BoxFuture<'static, Result<PublishAck, TransportError>>
        + Send
        + Sync,
>;

/// What becomes of each delivery of every consumer.
pub type DeliveryHook = Arc<dyn Fn(Delivery) -> Delivery + Send + Sync>;

/// A transport that forwards everything to `inner`, except durable
/// publishes (to its publish hook) and deliveries (through its delivery
/// hook) when it has them.
#[derive(Clone)]
pub struct HookedTransport {
    inner: Arc<dyn Transport>,
    name: String,
    publish: Option<PublishHook>,
    delivery: Option<DeliveryHook>,
}

impl HookedTransport {
    /// Forwards everything to `inner`; `name` says what the fault is.
    pub fn new(inner: Arc<dyn Transport>, name: impl Into<String>) -> Self {
        Self {
            inner,
            name: name.into(),
            publish: None,
            delivery: None,
        }
    }

    /// Routes durable publishes through `hook`.
    pub fn on_publish<F>(mut self, hook: F) -> Self
    where
        F: Fn(
                Arc<dyn Transport>,
                Subject,
                Bytes,
                PublishOptions,
            ) -> BoxFuture<'static, Result<PublishAck, TransportError>>
            + Send
            + Sync
            + 'static,
    {
        self.publish = Some(Arc::new(hook));
        self
    }

    /// Passes every delivery of every consumer through `hook`.
    pub fn on_delivery(
        mut self,
        hook: impl Fn(Delivery) -> Delivery + Send + Sync + 'static,
    ) -> Self {
        self.delivery = Some(Arc::new(hook));
        self
    }
}

impl fmt::Debug for HookedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookedTransport")
            .field("name", &self.name)
            .field("inner", &self.inner.to_string())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for HookedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Transport for HookedTransport {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        match &self.publish {
            Some(hook) => hook(Arc::clone(&self.inner), subject.clone(), payload, options).await,
            None => self.inner.publish(subject, payload, options).await,
        }
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let inner = self.inner.consume(name).await?;
        match &self.delivery {
            Some(hook) => {
                let hook = Arc::clone(hook);
                Ok(Box::pin(inner.map(move |d| d.map(|d| hook(d)))))
            }
            None => Ok(inner),
        }
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
    }
    async fn consumer_lag(&self, name: &Name) -> Result<ConsumerLag, TransportError> {
        self.inner.consumer_lag(name).await
    }
    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.inner.publish_ephemeral(subject, payload).await
    }
    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        self.inner.subscribe(pattern).await
    }
    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.inner.request(subject, payload, timeout).await
    }
}

/// A commit as a hook sees it: the real store, and the writes.
pub type CommitHook = Arc<
    dyn Fn(
            Arc<dyn StateStore>,
            Vec<Write>,
        ) -> BoxFuture<'static, Result<Vec<Option<Version>>, StoreError>>
        + Send
        + Sync,
>;

/// How many calls of each kind a store has served (see [`HookedStore::calls`]).
#[derive(Debug, Default)]
pub struct StoreCalls {
    /// Reads of one document.
    pub gets: AtomicU64,
    /// Pages listed.
    pub lists: AtomicU64,
    /// Commits (every write is one).
    pub commits: AtomicU64,
    /// Watches opened.
    pub watches: AtomicU64,
}

impl StoreCalls {
    /// All calls so far.
    pub fn total(&self) -> u64 {
        [&self.gets, &self.lists, &self.commits, &self.watches]
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }
}

/// A store that forwards everything to `inner`, counting calls, except
/// commits when it has a commit hook.
#[derive(Clone)]
pub struct HookedStore {
    inner: Arc<dyn StateStore>,
    name: String,
    commit: Option<CommitHook>,
    calls: Arc<StoreCalls>,
}

impl HookedStore {
    /// Forwards everything to `inner`; `name` says what the fault is.
    pub fn new(inner: Arc<dyn StateStore>, name: impl Into<String>) -> Self {
        Self {
            inner,
            name: name.into(),
            commit: None,
            calls: Arc::default(),
        }
    }

    /// Routes commits through `hook`.
    pub fn on_commit<F>(mut self, hook: F) -> Self
    where
        F: Fn(
                Arc<dyn StateStore>,
                Vec<Write>,
            ) -> BoxFuture<'static, Result<Vec<Option<Version>>, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        self.commit = Some(Arc::new(hook));
        self
    }

    /// The calls it has served so far (shared by its clones).
    pub fn calls(&self) -> Arc<StoreCalls> {
        Arc::clone(&self.calls)
    }
}

impl fmt::Debug for HookedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookedStore")
            .field("name", &self.name)
            .field("inner", &self.inner.to_string())
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for HookedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StateStore for HookedStore {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError> {
        self.calls.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(collection, options).await
    }
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        self.calls.commits.fetch_add(1, Ordering::SeqCst);
        match &self.commit {
            Some(hook) => hook(Arc::clone(&self.inner), writes).await,
            None => self.inner.commit(writes).await,
        }
    }
    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
        self.calls.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(target).await
    }
}

/// `n` → `n - 1` if positive: whether to fail this time.
fn take_one(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// `inner`, whose first `n` durable publishes fail as if the broker were
/// down (nothing stored).
pub fn fails_first_publishes(inner: Arc<dyn Transport>, n: u32) -> Arc<dyn Transport> {
    let left = Arc::new(AtomicU32::new(n));
    Arc::new(
        HookedTransport::new(inner, "FailsFirstPublishes").on_publish(move |inner, s, p, o| {
            let fail_now = take_one(&left);
            Box::pin(async move {
                if fail_now {
                    return Err(TransportError::Unavailable {
                        message: "injected outage".into(),
                        source: None,
                    });
                }
                inner.publish(&s, p, o).await
            })
        }),
    )
}

/// `inner`, losing the first acknowledgement of every delivery (as when a
/// process dies between finishing and acknowledging).
pub fn loses_first_acks(inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
    let lost: Arc<Mutex<HashSet<Bytes>>> = Arc::default();
    Arc::new(
        HookedTransport::new(inner, "LosesFirstAcks").on_delivery(move |d| {
            let raw = d.raw().clone();
            let lost = Arc::clone(&lost);
            d.map_acker(|inner| Box::new(LossyAcker { inner, raw, lost }))
        }),
    )
}

#[derive(Debug)]
struct LossyAcker {
    inner: Box<dyn Acker>,
    raw: Bytes,
    lost: Arc<Mutex<HashSet<Bytes>>>,
}

#[async_trait]
impl Acker for LossyAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        let first = self
            .lost
            .lock()
            .map(|mut l| l.insert(self.raw.clone()))
            .unwrap_or(false);
        if first {
            return Ok(());
        }
        self.inner.ack().await
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        self.inner.nak(delay).await
    }
    async fn term(&self) -> Result<(), TransportError> {
        self.inner.term().await
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.inner.progress().await
    }
}

/// A store whose next `n` commits after [`arm`](Self::arm) fail as if it
/// were unreachable.
#[derive(Debug, Clone)]
pub struct FailsNextCommits {
    store: HookedStore,
    armed: Arc<AtomicU32>,
}

impl FailsNextCommits {
    /// Wraps `inner`, unarmed.
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        let armed = Arc::new(AtomicU32::new(0));
        let left = Arc::clone(&armed);
        let store = HookedStore::new(inner, "FailsNextCommits").on_commit(move |inner, writes| {
            let fail_now = take_one(&left);
            Box::pin(async move {
                if fail_now {
                    return Err(StoreError::Unavailable {
                        message: "injected outage".into(),
                        source: None,
                    });
                }
                inner.commit(writes).await
            })
        });
        Self { store, armed }
    }

    /// Makes the next `n` commits fail.
    pub fn arm(&self, n: u32) {
        self.armed.store(n, Ordering::SeqCst);
    }

    /// The store to hand out.
    pub fn store(&self) -> Arc<dyn StateStore> {
        Arc::new(self.store.clone())
    }
}
