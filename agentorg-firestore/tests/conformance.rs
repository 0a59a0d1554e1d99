//! The state store conformance suite on the Firestore emulator, one case per
//! test, each on its own project.

mod common;

use std::time::Instant;

use agentorg_core::conformance::store as suite;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(store) = fresh_store!() else { return };
            suite::$name(store).await;
        }
    )*};
}

cases!(
    put_get_delete,
    conditional_writes,
    atomic_commit_all_or_nothing,
    list_pages,
    values_round_trip,
    document_limits,
    watch_document,
    watch_collection,
);

/// 8 tasks × 100 read / conditional write / retry-on-conflict increments of
/// one document: nothing lost. Prints how long it took (run with
/// `--nocapture` to see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments() {
    let Some(store) = fresh_store!() else { return };
    let started = Instant::now();
    suite::concurrent_increments(store).await;
    println!(
        "concurrent_increments (8 tasks x 100 conditional increments) on the emulator: {:?}",
        started.elapsed()
    );
}

/// A watcher under a burst of 100 writes: versions strictly increase, never
/// repeat, and end at the 100th write's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_burst_of_100() {
    let Some(store) = fresh_store!() else { return };
    suite::watch_burst(store, 100).await;
}

/// The whole suite in one go on one store, as `run_all` lists it (so a case
/// added to the suite runs here even before it gets its own test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite() {
    let Some(store) = fresh_store!() else { return };
    suite::run_all(store).await;
}
