//! The conformance suites have teeth: deliberately broken backends, each a
//! thin wrapper over a memory backend, fail the suite case that covers their
//! fault — and the same wrappers configured as "not broken" pass it, so the
//! failures come from the fault and not from the wrapping.
//!
//! | wrapper | fault | caught by |
//! |---|---|---|
//! | [`DroppingTransport`] | acks every 3rd publish but never stores it | `transport::publish_consume_ack`, `runtime::delegation_rolls_up` |
//! | [`RedeliversAsNew`] | reports every redelivery as attempt 1 | `transport::redelivery_attempts` (the runtime rightly does not care) |
//! | [`ReorderingTransport`] | swaps pairs of messages within a subject | `transport::per_subject_order` (and `publish_consume_ack`) |
//! | [`LossyStore`] | acks every Nth conditional commit but does not apply it | `store::concurrent_increments`, `runtime::processed_once_under_redelivery` |
//!
//! Everything runs on tokio's paused clock, so the suites' 15 s "eventually"
//! waits pass in virtual time and every outcome is deterministic.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use agentorg_core::async_trait;
use agentorg_core::conformance::{
    runtime as runtime_suite, store as store_suite, transport as transport_suite, unique_org,
};
use agentorg_core::store::{
    validate_writes, ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage,
    MemoryStore, Precondition, StateStore, StoreError, Version, WatchTarget, Write,
};
use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{
    ConsumerConfig, Delivery, DeliveryStream, MemoryTransport, PublishAck, PublishOptions,
    Subscription, Transport, TransportError,
};
use agentorg_core::Name;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

// ---------------------------------------------------------------------------
// Running a suite case that must fail
// ---------------------------------------------------------------------------

thread_local! {
    /// Set while a suite case that is expected to panic runs on this thread.
    /// The tests run on current-thread runtimes, so the case and every task
    /// it spawns run here.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the expected panics out of the output; any other panic (a control
/// test failing, a panic on another thread) is reported as usual.
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(Cell::get) {
                default(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<a panic payload that is not a string>".to_owned()
    }
}

/// Runs a suite case that must fail, and checks that it failed as the suite
/// reports a failure of `behaviour` ("conformance `<behaviour>`: …").
/// Returns the failure message.
async fn must_fail(behaviour: &str, case: impl Future<Output = ()>) -> String {
    quiet_expected_panics();
    EXPECTING_PANIC.with(|e| e.set(true));
    let outcome = AssertUnwindSafe(case).catch_unwind().await;
    EXPECTING_PANIC.with(|e| e.set(false));
    let payload = match outcome {
        Ok(()) => panic!("suite case `{behaviour}` passed on a broken backend"),
        Err(payload) => payload,
    };
    let message = panic_message(&*payload);
    let prefix = format!("conformance `{behaviour}`: ");
    assert!(
        message.starts_with(&prefix),
        "expected a failure of `{behaviour}`, got: {message}"
    );
    message
}

fn memory_transport() -> Arc<dyn Transport> {
    Arc::new(MemoryTransport::new())
}

fn memory_store() -> Arc<dyn StateStore> {
    Arc::new(MemoryStore::new())
}

// ---------------------------------------------------------------------------
// DroppingTransport
// ---------------------------------------------------------------------------

/// Acknowledges every publish, but silently drops every `every`th durable
/// publish (never when `every` is 0). Everything else is forwarded.
#[derive(Debug)]
struct DroppingTransport {
    inner: Arc<dyn Transport>,
    every: u64,
    publishes: AtomicU64,
    dropped: AtomicU64,
    /// The last sequence the inner transport acknowledged, to make plausible
    /// acknowledgements of dropped messages.
    last_sequence: AtomicU64,
}

impl DroppingTransport {
    fn new(inner: Arc<dyn Transport>, every: u64) -> Self {
        Self {
            inner,
            every,
            publishes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_sequence: AtomicU64::new(0),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl fmt::Display for DroppingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DroppingTransport(every {}, {})", self.every, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)] // forward everything
impl Transport for DroppingTransport {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let n = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.every != 0 && n.is_multiple_of(self.every) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            // "Stored", with the sequence the next message would have had.
            let sequence = self.last_sequence.load(Ordering::SeqCst) + 1;
            return Ok(PublishAck::new(sequence, false));
        }
        let ack = self.inner.publish(subject, payload, options).await?;
        self.last_sequence.fetch_max(ack.sequence, Ordering::SeqCst);
        Ok(ack)
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        self.inner.consume(name).await
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
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

// ---------------------------------------------------------------------------
// RedeliversAsNew
// ---------------------------------------------------------------------------

/// Reports every delivery as attempt 1 when `broken`, so a redelivery looks
/// like a new message; otherwise passes the attempt through (by the same
/// path, `Delivery::with_attempt`).
#[derive(Debug)]
struct RedeliversAsNew {
    inner: Arc<dyn Transport>,
    broken: bool,
}

impl RedeliversAsNew {
    fn new(inner: Arc<dyn Transport>, broken: bool) -> Self {
        Self { inner, broken }
    }
}

impl fmt::Display for RedeliversAsNew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedeliversAsNew(broken {}, {})", self.broken, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)] // forward everything
impl Transport for RedeliversAsNew {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        self.inner.publish(subject, payload, options).await
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let broken = self.broken;
        let inner = self.inner.consume(name).await?;
        Ok(Box::pin(inner.map(move |d| {
            d.map(|d: Delivery| {
                let attempt = if broken { 1 } else { d.attempt() };
                d.with_attempt(attempt)
            })
        })))
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
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

// ---------------------------------------------------------------------------
// ReorderingTransport
// ---------------------------------------------------------------------------

/// Holds each odd-numbered publish of a subject (acknowledging it at once)
/// until the next publish on that subject, then stores the two — swapped
/// when `swap`, in publish order otherwise. A message still held after
/// [`HOLD`] is stored on its own, so nothing is lost: the fault is order only.
#[derive(Debug)]
struct ReorderingTransport {
    inner: Arc<dyn Transport>,
    swap: bool,
    state: Arc<Mutex<Reorder>>,
}

/// How long a message is held when no second message follows it.
const HOLD: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Reorder {
    /// Publishes so far, per subject.
    published: HashMap<Subject, u64>,
    /// The held message of each subject.
    held: HashMap<Subject, Held>,
    next_token: u64,
    last_sequence: u64,
}

#[derive(Debug)]
struct Held {
    token: u64,
    payload: Bytes,
    options: PublishOptions,
    /// The sequence its acknowledgement claimed.
    sequence: u64,
}

fn lock(m: &Mutex<Reorder>) -> std::sync::MutexGuard<'_, Reorder> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReorderingTransport {
    fn new(inner: Arc<dyn Transport>, swap: bool) -> Self {
        Self {
            inner,
            swap,
            state: Arc::default(),
        }
    }

    async fn store(inner: &dyn Transport, state: &Mutex<Reorder>, subject: &Subject, held: Held) {
        // Nobody is waiting for this result: the publisher was answered when
        // the message was held.
        if let Ok(ack) = inner.publish(subject, held.payload, held.options).await {
            let mut st = lock(state);
            st.last_sequence = st.last_sequence.max(ack.sequence);
        }
    }
}

impl fmt::Display for ReorderingTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReorderingTransport(swap {}, {})", self.swap, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)] // forward everything
impl Transport for ReorderingTransport {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let earlier = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            if let (Some(id), Some(h)) = (&options.msg_id, st.held.get(subject)) {
                if h.options.msg_id.as_ref() == Some(id) {
                    return Ok(PublishAck::new(h.sequence, true));
                }
            }
            let n = st.published.entry(subject.clone()).or_default();
            *n += 1;
            if *n % 2 == 1 {
                st.next_token += 1;
                st.last_sequence += 1;
                let (token, sequence) = (st.next_token, st.last_sequence);
                st.held.insert(
                    subject.clone(),
                    Held {
                        token,
                        payload,
                        options,
                        sequence,
                    },
                );
                // Nothing follows within HOLD: store it on its own.
                let (inner, state, subject) = (
                    Arc::clone(&self.inner),
                    Arc::clone(&self.state),
                    subject.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(HOLD).await;
                    let held = {
                        let mut st = lock(&state);
                        match st.held.get(&subject) {
                            Some(h) if h.token == token => st.held.remove(&subject),
                            _ => None,
                        }
                    };
                    if let Some(held) = held {
                        Self::store(&*inner, &state, &subject, held).await;
                    }
                });
                return Ok(PublishAck::new(sequence, false));
            }
            st.held.remove(subject)
        };
        let Some(earlier) = earlier else {
            let ack = self.inner.publish(subject, payload, options).await?;
            let mut st = lock(&self.state);
            st.last_sequence = st.last_sequence.max(ack.sequence);
            return Ok(ack);
        };
        let mut earlier = Some(earlier);
        if !self.swap {
            if let Some(held) = earlier.take() {
                Self::store(&*self.inner, &self.state, subject, held).await;
            }
        }
        let ack = self.inner.publish(subject, payload, options).await;
        if let Ok(ack) = &ack {
            let mut st = lock(&self.state);
            st.last_sequence = st.last_sequence.max(ack.sequence);
        }
        // Swapped: the earlier message is stored after the later one.
        if let Some(held) = earlier {
            Self::store(&*self.inner, &self.state, subject, held).await;
        }
        ack
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        self.inner.consume(name).await
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
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

// ---------------------------------------------------------------------------
// LossyStore
// ---------------------------------------------------------------------------

/// Acknowledges every `every`th conditional commit whose preconditions hold
/// (a commit with at least one write that has a precondition) but does not
/// apply it, answering with plausible versions (the document's current
/// version + 1). Never loses anything when `every` is 0. A commit whose
/// preconditions fail gets the inner store's real error: the fault is a lost
/// write, not a missed conflict.
#[derive(Debug)]
struct LossyStore {
    inner: Arc<dyn StateStore>,
    every: u64,
    conditional_commits: AtomicU64,
    lost: AtomicU64,
}

impl LossyStore {
    fn new(inner: Arc<dyn StateStore>, every: u64) -> Self {
        Self {
            inner,
            every,
            conditional_commits: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// The versions the inner store would return for `writes` if their
    /// preconditions hold now; `None` if one does not.
    async fn plausible_versions(
        &self,
        writes: &[Write],
    ) -> Result<Option<Vec<Option<Version>>>, StoreError> {
        let mut versions = Vec::with_capacity(writes.len());
        for w in writes {
            let current = self.inner.get(w.key()).await?.map(|d| d.version);
            let holds = match (w.precondition(), current) {
                (Precondition::MustNotExist, Some(_))
                | (Precondition::MustExist | Precondition::Version(_), None) => false,
                (Precondition::Version(v), Some(c)) => v == c,
                _ => true,
            };
            if !holds {
                return Ok(None);
            }
            versions.push(match w {
                Write::Put { .. } => Some(Version::from_raw(
                    current.map_or(0, Version::raw).saturating_add(1),
                )),
                _ => None,
            });
        }
        Ok(Some(versions))
    }
}

impl fmt::Display for LossyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LossyStore(every {}, {})", self.every, self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)] // forward everything
impl StateStore for LossyStore {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(collection, options).await
    }
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        let conditional = writes
            .iter()
            .any(|w| w.precondition() != Precondition::None);
        if !conditional {
            return self.inner.commit(writes).await;
        }
        validate_writes(&writes)?;
        let Some(versions) = self.plausible_versions(&writes).await? else {
            return self.inner.commit(writes).await;
        };
        let n = self.conditional_commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.every != 0 && n.is_multiple_of(self.every) {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Ok(versions);
        }
        self.inner.commit(writes).await
    }
    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
        self.inner.watch(target).await
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_transport_fails_publish_consume_ack() {
    let t = Arc::new(DroppingTransport::new(memory_transport(), 3));
    let message = must_fail(
        "publish_consume_ack",
        transport_suite::publish_consume_ack(t.clone(), unique_org()),
    )
    .await;
    // The third of three publishes was "stored" and never delivered.
    assert!(message.contains("no delivery within"), "{message}");
    assert_eq!(t.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_control_passes_publish_consume_ack() {
    let t = Arc::new(DroppingTransport::new(memory_transport(), 0));
    transport_suite::publish_consume_ack(t.clone(), unique_org()).await;
    assert_eq!(t.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_fails_delegation_rolls_up() {
    let t = Arc::new(DroppingTransport::new(memory_transport(), 3));
    let message = must_fail(
        "delegation_rolls_up",
        runtime_suite::delegation_rolls_up(t.clone(), memory_store(), unique_org()),
    )
    .await;
    // The outbox deleted its entry on the (false) acknowledgement, so the
    // sweep cannot bring the message back: the tree never completes.
    assert!(message.contains("still in_progress"), "{message}");
    assert!(t.dropped() >= 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_control_passes_delegation_rolls_up() {
    let t = Arc::new(DroppingTransport::new(memory_transport(), 0));
    runtime_suite::delegation_rolls_up(t.clone(), memory_store(), unique_org()).await;
    assert_eq!(t.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn redelivers_as_new_fails_redelivery_attempts() {
    let t = Arc::new(RedeliversAsNew::new(memory_transport(), true));
    let message = must_fail(
        "redelivery_attempts",
        transport_suite::redelivery_attempts(t, unique_org()),
    )
    .await;
    assert!(
        message.ends_with("redelivery attempt 1 (expected 2)"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn redelivers_as_new_control_passes_redelivery_attempts() {
    let t = Arc::new(RedeliversAsNew::new(memory_transport(), false));
    transport_suite::redelivery_attempts(t, unique_org()).await;
}

/// The runtime counts attempts in its claims, never from the broker (whose
/// count can reset after a crash): a transport that reports every delivery
/// as attempt 1 changes nothing for retries, backoff and dead letters.
#[tokio::test(start_paused = true)]
async fn redelivers_as_new_does_not_fool_the_runtime() {
    let t: Arc<dyn Transport> = Arc::new(RedeliversAsNew::new(memory_transport(), true));
    runtime_suite::backoff_between_attempts(Arc::clone(&t), memory_store(), unique_org()).await;
    runtime_suite::dead_letter_after_max_attempts(Arc::clone(&t), memory_store(), unique_org())
        .await;
    runtime_suite::processed_once_under_redelivery(t, memory_store(), unique_org()).await;
}

#[tokio::test(start_paused = true)]
async fn reordering_transport_fails_per_subject_order() {
    let t = Arc::new(ReorderingTransport::new(memory_transport(), true));
    let message = must_fail(
        "per_subject_order",
        transport_suite::per_subject_order(t, unique_org()),
    )
    .await;
    // Each subject got 10 messages, all delivered, pairwise swapped.
    assert!(message.contains("delivered out of order"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn reordering_transport_control_passes_per_subject_order() {
    let t = Arc::new(ReorderingTransport::new(memory_transport(), false));
    transport_suite::per_subject_order(t, unique_org()).await;
}

/// The reordering loses nothing: a message without a successor is stored
/// once its hold ends, so the suites see a fault of order only.
#[tokio::test(start_paused = true)]
async fn reordering_transport_delivers_everything() {
    let inner = MemoryTransport::new();
    let t = ReorderingTransport::new(Arc::new(inner.clone()), true);
    let name = agentorg_core::conformance::unique_name("c");
    t.ensure_consumer(&ConsumerConfig::new(
        name.clone(),
        SubjectPattern::parse("r.>").unwrap(),
    ))
    .await
    .unwrap();
    let a = Subject::parse("r.a").unwrap();
    for n in 0..3u8 {
        t.publish(&a, Bytes::from(vec![n]), PublishOptions::default())
            .await
            .unwrap();
    }
    let mut c = t.consume(&name).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(HOLD * 10, c.next())
            .await
            .expect("every message is delivered")
            .unwrap()
            .unwrap();
        got.push(d.raw()[0]);
        d.ack().await.unwrap();
    }
    assert_eq!(got, [1, 0, 2], "the first pair swapped, the last released");
}

/// Which case of the whole transport suite stops each broken transport.
#[tokio::test(start_paused = true)]
async fn full_transport_suite_stops_at_the_first_case_that_covers_the_fault() {
    must_fail(
        "publish_consume_ack",
        transport_suite::run_all(
            Arc::new(DroppingTransport::new(memory_transport(), 3)),
            unique_org(),
        ),
    )
    .await;
    // publish_consume_ack sees only first deliveries: attempt 1 is right.
    must_fail(
        "redelivery_attempts",
        transport_suite::run_all(
            Arc::new(RedeliversAsNew::new(memory_transport(), true)),
            unique_org(),
        ),
    )
    .await;
    // publish_consume_ack publishes three envelopes on one subject and checks
    // their order, so it catches the swap before per_subject_order runs.
    let message = must_fail(
        "publish_consume_ack",
        transport_suite::run_all(
            Arc::new(ReorderingTransport::new(memory_transport(), true)),
            unique_org(),
        ),
    )
    .await;
    assert!(message.contains("published"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn lossy_store_fails_concurrent_increments() {
    let s = Arc::new(LossyStore::new(memory_store(), 10));
    let message = must_fail(
        "concurrent_increments",
        store_suite::concurrent_increments(s.clone()),
    )
    .await;
    // The tasks never yield on the memory store, so there are no conflicts:
    // 801 conditional commits (the create, then 800 increments), every
    // tenth acknowledged and lost.
    assert_eq!(s.lost(), 80);
    assert!(
        message.contains("expected count 800") && message.contains("720"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn lossy_store_control_passes_concurrent_increments() {
    let s = Arc::new(LossyStore::new(memory_store(), 0));
    store_suite::concurrent_increments(s.clone()).await;
    assert_eq!(s.lost(), 0);
}

/// Exactly-once state rests on conditional writes: with one in ten lost,
/// the runtime's claim or completion record silently vanishes and a task
/// runs again.
#[tokio::test(start_paused = true)]
async fn lossy_store_fails_processed_once_under_redelivery() {
    let s = Arc::new(LossyStore::new(memory_store(), 10));
    let message = must_fail(
        "processed_once_under_redelivery",
        runtime_suite::processed_once_under_redelivery(memory_transport(), s.clone(), unique_org()),
    )
    .await;
    assert!(message.ends_with("4 runs for 3 tasks"), "{message}");
    assert_eq!(s.lost(), 1);
}

#[tokio::test(start_paused = true)]
async fn lossy_store_control_passes_processed_once_under_redelivery() {
    let s = Arc::new(LossyStore::new(memory_store(), 0));
    runtime_suite::processed_once_under_redelivery(memory_transport(), s.clone(), unique_org())
        .await;
    assert_eq!(s.lost(), 0);
}
