//! The runtime conformance suite on the memory backends, on tokio's paused
//! clock (leases, backoff and cool-downs pass in virtual time).

use std::sync::Arc;

use agentorg_core::conformance::runtime as suite;
use agentorg_core::conformance::unique_org;
use agentorg_core::store::{MemoryStore, StateStore};
use agentorg_core::transport::{MemoryTransport, Transport};

fn backends() -> (Arc<dyn Transport>, Arc<dyn StateStore>) {
    (
        Arc::new(MemoryTransport::new()),
        Arc::new(MemoryStore::new()),
    )
}

macro_rules! paused {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            let (t, s) = backends();
            suite::$name(t, s, unique_org()).await;
        }
    )*};
}

paused!(
    delegation_rolls_up,
    processed_once_under_redelivery,
    replay_after_completion_not_rerun,
    lease_expiry_redelivers,
    long_handler_keeps_its_lease,
    backoff_between_attempts,
    dead_letter_after_max_attempts,
    permanent_failure_fails_at_once,
    breaker_opens_reroutes_and_half_opens,
    sender_mismatch_refused,
    undecodable_input_dead_lettered,
    future_version_retried_then_dead_lettered,
    drain_on_shutdown,
);

/// The whole suite once more on one shared transport and store, in real
/// time and on several threads, as a real deployment runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_in_real_time_on_shared_backends() {
    let (t, s) = backends();
    suite::run_all(t, s, unique_org).await;
}
