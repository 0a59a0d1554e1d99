//! The conformance suites have teeth: deliberately broken backends, each a
//! hook on the suites' fault-injecting wrappers over a memory backend, fail the suite case that covers their
//! fault — and the same wrappers configured as "not broken" pass it, so the
//! failures come from the fault and not from the wrapping.
//!
//! | wrapper | fault | caught by |
//! |---|---|---|
//! | [`dropping_transport`] | acks every 3rd publish but never stores it | `transport::publish_consume_ack`, `runtime::delegation_rolls_up` |
//! | [`redelivers_as_new`] | reports every redelivery as attempt 1 | `transport::redelivery_attempts` (the runtime rightly does not care) |
//! | [`reordering_transport`] | swaps pairs of messages within a subject | `transport::per_subject_order` (and `publish_consume_ack`) |
//! | [`lossy_store`] | acks every Nth conditional commit but does not apply it | `store::concurrent_increments`, `runtime::processed_once_under_redelivery` |
//!
//! Everything runs on tokio's paused clock, so the suites' 15 s "eventually"
//! waits pass in virtual time and every outcome is deterministic.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use agentorg_core::conformance::faults::{HookedStore, HookedTransport};
use agentorg_core::conformance::{
    runtime as runtime_suite, store as store_suite, transport as transport_suite, unique_org,
};
use agentorg_core::store::{
    validate_writes, MemoryStore, Precondition, StateStore, StoreError, Version, Write,
};
use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{
    ConsumerConfig, Delivery, MemoryTransport, PublishAck, PublishOptions, Transport,
    TransportError,
};
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
// The broken backends: hooks on the suite's fault-injecting wrappers
// ---------------------------------------------------------------------------

/// Acknowledges every publish, but silently drops every `every`th durable
/// publish (never when `every` is 0); counts what it dropped.
fn dropping_transport(every: u64) -> (Arc<dyn Transport>, Arc<AtomicU64>) {
    let dropped = Arc::new(AtomicU64::new(0));
    let publishes = Arc::new(AtomicU64::new(0));
    // The last sequence the inner transport acknowledged, to make plausible
    // acknowledgements of dropped messages.
    let last = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&dropped);
    let t = HookedTransport::new(
        memory_transport(),
        format!("DroppingTransport(every {every})"),
    )
    .on_publish(move |inner, subject, payload, options| {
        let n = publishes.fetch_add(1, Ordering::SeqCst) + 1;
        let (dropped, last) = (Arc::clone(&counted), Arc::clone(&last));
        Box::pin(async move {
            if every != 0 && n.is_multiple_of(every) {
                dropped.fetch_add(1, Ordering::SeqCst);
                // "Stored", with the sequence the next message would have had.
                let sequence = last.load(Ordering::SeqCst) + 1;
                return Ok(PublishAck::new(sequence, false));
            }
            let ack = inner.publish(&subject, payload, options).await?;
            last.fetch_max(ack.sequence, Ordering::SeqCst);
            Ok(ack)
        })
    });
    (Arc::new(t), dropped)
}

/// Reports every delivery as attempt 1 when `broken`, so a redelivery looks
/// like a new message; otherwise passes the attempt through (by the same
/// path, `Delivery::with_attempt`).
fn redelivers_as_new(broken: bool) -> Arc<dyn Transport> {
    Arc::new(
        HookedTransport::new(
            memory_transport(),
            format!("RedeliversAsNew(broken {broken})"),
        )
        .on_delivery(move |d: Delivery| {
            let attempt = if broken { 1 } else { d.attempt() };
            d.with_attempt(attempt)
        }),
    )
}

/// Holds each odd-numbered publish of a subject (acknowledging it at once)
/// until the next publish on that subject, then stores the two — swapped
/// when `swap`, in publish order otherwise. A message still held after
/// [`HOLD`] is stored on its own, so nothing is lost: the fault is order only.
fn reordering_transport(inner: Arc<dyn Transport>, swap: bool) -> Arc<dyn Transport> {
    let state: Arc<Mutex<Reorder>> = Arc::default();
    Arc::new(
        HookedTransport::new(inner, format!("ReorderingTransport(swap {swap})")).on_publish(
            move |inner, subject, payload, options| {
                let state = Arc::clone(&state);
                Box::pin(
                    async move { reorder(inner, state, swap, subject, payload, options).await },
                )
            },
        ),
    )
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

async fn store_held(inner: &dyn Transport, state: &Mutex<Reorder>, subject: &Subject, held: Held) {
    // Nobody is waiting for this result: the publisher was answered when the
    // message was held.
    if let Ok(ack) = inner.publish(subject, held.payload, held.options).await {
        let mut st = lock(state);
        st.last_sequence = st.last_sequence.max(ack.sequence);
    }
}

async fn reorder(
    inner: Arc<dyn Transport>,
    state: Arc<Mutex<Reorder>>,
    swap: bool,
    subject: Subject,
    payload: Bytes,
    options: PublishOptions,
) -> Result<PublishAck, TransportError> {
    let earlier = {
        let mut guard = lock(&state);
        let st = &mut *guard;
        if let (Some(id), Some(h)) = (&options.msg_id, st.held.get(&subject)) {
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
            let (inner, state, subject) = (Arc::clone(&inner), Arc::clone(&state), subject);
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
                    store_held(&*inner, &state, &subject, held).await;
                }
            });
            return Ok(PublishAck::new(sequence, false));
        }
        st.held.remove(&subject)
    };
    let Some(earlier) = earlier else {
        let ack = inner.publish(&subject, payload, options).await?;
        let mut st = lock(&state);
        st.last_sequence = st.last_sequence.max(ack.sequence);
        return Ok(ack);
    };
    let mut earlier = Some(earlier);
    if !swap {
        if let Some(held) = earlier.take() {
            store_held(&*inner, &state, &subject, held).await;
        }
    }
    let ack = inner.publish(&subject, payload, options).await;
    if let Ok(ack) = &ack {
        let mut st = lock(&state);
        st.last_sequence = st.last_sequence.max(ack.sequence);
    }
    // Swapped: the earlier message is stored after the later one.
    if let Some(held) = earlier {
        store_held(&*inner, &state, &subject, held).await;
    }
    ack
}

/// Acknowledges every `every`th conditional commit whose preconditions hold
/// (a commit with at least one write that has a precondition) but does not
/// apply it, answering with plausible versions (the document's current
/// version + 1). Never loses anything when `every` is 0. A commit whose
/// preconditions fail gets the inner store's real error: the fault is a lost
/// write, not a missed conflict. Counts what it lost.
fn lossy_store(every: u64) -> (Arc<dyn StateStore>, Arc<AtomicU64>) {
    let lost = Arc::new(AtomicU64::new(0));
    let conditional_commits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lost);
    let s = HookedStore::new(memory_store(), format!("LossyStore(every {every})")).on_commit(
        move |inner, writes| {
            let (lost, commits) = (Arc::clone(&counted), Arc::clone(&conditional_commits));
            Box::pin(async move {
                let conditional = writes
                    .iter()
                    .any(|w| w.precondition() != Precondition::None);
                if !conditional {
                    return inner.commit(writes).await;
                }
                validate_writes(&writes)?;
                let Some(versions) = plausible_versions(&*inner, &writes).await? else {
                    return inner.commit(writes).await;
                };
                let n = commits.fetch_add(1, Ordering::SeqCst) + 1;
                if every != 0 && n.is_multiple_of(every) {
                    lost.fetch_add(1, Ordering::SeqCst);
                    return Ok(versions);
                }
                inner.commit(writes).await
            })
        },
    );
    (Arc::new(s), lost)
}

/// The versions `inner` would return for `writes` if their preconditions
/// hold now; `None` if one does not.
async fn plausible_versions(
    inner: &dyn StateStore,
    writes: &[Write],
) -> Result<Option<Vec<Option<Version>>>, StoreError> {
    let mut versions = Vec::with_capacity(writes.len());
    for w in writes {
        let current = inner.get(w.key()).await?.map(|d| d.version);
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

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_transport_fails_publish_consume_ack() {
    let (t, dropped) = dropping_transport(3);
    let message = must_fail(
        "publish_consume_ack",
        transport_suite::publish_consume_ack(t.clone(), unique_org()),
    )
    .await;
    // The third of three publishes was "stored" and never delivered.
    assert!(message.contains("no delivery within"), "{message}");
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_control_passes_publish_consume_ack() {
    let (t, dropped) = dropping_transport(0);
    transport_suite::publish_consume_ack(t.clone(), unique_org()).await;
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_fails_delegation_rolls_up() {
    let (t, dropped) = dropping_transport(3);
    let message = must_fail(
        "delegation_rolls_up",
        runtime_suite::delegation_rolls_up(t.clone(), memory_store(), unique_org()),
    )
    .await;
    // The outbox deleted its entry on the (false) acknowledgement, so the
    // sweep cannot bring the message back: the tree never completes.
    assert!(message.contains("still in_progress"), "{message}");
    assert!(dropped.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_transport_control_passes_delegation_rolls_up() {
    let (t, dropped) = dropping_transport(0);
    runtime_suite::delegation_rolls_up(t.clone(), memory_store(), unique_org()).await;
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn redelivers_as_new_fails_redelivery_attempts() {
    let t = redelivers_as_new(true);
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
    let t = redelivers_as_new(false);
    transport_suite::redelivery_attempts(t, unique_org()).await;
}

/// The runtime counts attempts in its claims, never from the broker (whose
/// count can reset after a crash): a transport that reports every delivery
/// as attempt 1 changes nothing for retries, backoff and dead letters.
#[tokio::test(start_paused = true)]
async fn redelivers_as_new_does_not_fool_the_runtime() {
    let t = redelivers_as_new(true);
    runtime_suite::backoff_between_attempts(Arc::clone(&t), memory_store(), unique_org()).await;
    runtime_suite::dead_letter_after_max_attempts(Arc::clone(&t), memory_store(), unique_org())
        .await;
    runtime_suite::processed_once_under_redelivery(t, memory_store(), unique_org()).await;
}

#[tokio::test(start_paused = true)]
async fn reordering_transport_fails_per_subject_order() {
    let t = reordering_transport(memory_transport(), true);
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
    let t = reordering_transport(memory_transport(), false);
    transport_suite::per_subject_order(t, unique_org()).await;
}

/// The reordering loses nothing: a message without a successor is stored
/// once its hold ends, so the suites see a fault of order only.
#[tokio::test(start_paused = true)]
async fn reordering_transport_delivers_everything() {
    let inner = MemoryTransport::new();
    let t = reordering_transport(Arc::new(inner.clone()), true);
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
        transport_suite::run_all(dropping_transport(3).0, unique_org()),
    )
    .await;
    // publish_consume_ack sees only first deliveries: attempt 1 is right.
    must_fail(
        "redelivery_attempts",
        transport_suite::run_all(redelivers_as_new(true), unique_org()),
    )
    .await;
    // publish_consume_ack publishes three envelopes on one subject and checks
    // their order, so it catches the swap before per_subject_order runs.
    let message = must_fail(
        "publish_consume_ack",
        transport_suite::run_all(reordering_transport(memory_transport(), true), unique_org()),
    )
    .await;
    assert!(message.contains("published"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn lossy_store_fails_concurrent_increments() {
    let (s, lost) = lossy_store(10);
    let message = must_fail(
        "concurrent_increments",
        store_suite::concurrent_increments(s.clone()),
    )
    .await;
    // The tasks never yield on the memory store, so there are no conflicts:
    // 801 conditional commits (the create, then 800 increments), every
    // tenth acknowledged and lost.
    assert_eq!(lost.load(Ordering::SeqCst), 80);
    assert!(
        message.contains("expected count 800") && message.contains("720"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn lossy_store_control_passes_concurrent_increments() {
    let (s, lost) = lossy_store(0);
    store_suite::concurrent_increments(s.clone()).await;
    assert_eq!(lost.load(Ordering::SeqCst), 0);
}

/// Exactly-once state rests on conditional writes: with one in six lost,
/// the sixth — the second task's claim, committed with its start — silently
/// vanishes and the task runs again.
#[tokio::test(start_paused = true)]
async fn lossy_store_fails_processed_once_under_redelivery() {
    let (s, lost) = lossy_store(6);
    let message = must_fail(
        "processed_once_under_redelivery",
        runtime_suite::processed_once_under_redelivery(memory_transport(), s.clone(), unique_org()),
    )
    .await;
    assert!(message.ends_with("4 runs for 3 tasks"), "{message}");
    assert_eq!(lost.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn lossy_store_control_passes_processed_once_under_redelivery() {
    let (s, lost) = lossy_store(0);
    runtime_suite::processed_once_under_redelivery(memory_transport(), s.clone(), unique_org())
        .await;
    assert_eq!(lost.load(Ordering::SeqCst), 0);
}
