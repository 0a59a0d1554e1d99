//! The runtime conformance suite with its state in Firestore (the emulator,
//! a fresh project per case), in real time.
//!
//! The transport is the in-memory one here; [`transport`] is the one place
//! to swap in another (NATS JetStream runs the same cases over both real
//! servers).

mod common;

use std::sync::Arc;

use agentorg_core::conformance::runtime as suite;
use agentorg_core::conformance::unique_org;
use agentorg_core::transport::{MemoryTransport, Transport};

/// The transport the cases run over.
fn transport() -> Arc<dyn Transport> {
    Arc::new(MemoryTransport::new())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(store) = fresh_store!() else { return };
            suite::$name(transport(), store, unique_org()).await;
        }
    )*
        const HERE: &[&str] = &[$(stringify!($name)),*];
    };
}

/// No case of the suite is left out here.
#[test]
fn every_case_of_the_suite_runs_here() {
    let cases: Vec<&str> = suite::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(HERE, cases.as_slice());
}

// Every case of `runtime::CASES`, in its order.
cases!(
    delegation_rolls_up,
    roles_split_across_processes,
    outbox_survives_a_failed_publish,
    processed_once_under_redelivery,
    replay_after_completion_not_rerun,
    lease_expiry_redelivers,
    long_handler_keeps_its_lease,
    backoff_between_attempts,
    dead_letter_after_max_attempts,
    permanent_failure_fails_at_once,
    breaker_opens_reroutes_and_half_opens,
    probe_slot_taken_only_with_the_probe,
    conflicting_staged_writes_rerun_without_spending_attempts,
    a_failed_commit_does_not_spend_an_attempt,
    sender_mismatch_refused,
    undecodable_input_dead_lettered,
    future_version_retried_then_dead_lettered,
    drain_on_shutdown,
);
