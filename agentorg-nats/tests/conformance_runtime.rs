//! The runtime conformance suite of agentorg-core over NatsTransport and the
//! memory store, against a real nats-server started by the test kit.
//!
//! A NatsTransport carries one org and every case starts orgs of its own
//! name, so each case gets its own server, org and transport (and runs in
//! parallel with the others).

mod common;

use std::sync::Arc;

use agentorg_core::conformance::{runtime, unique_org};
use agentorg_core::store::MemoryStore;
use agentorg_testkit::nats_or_skip;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                common::init_tracing();
                let Some(nats) = nats_or_skip!() else { return };
                let org = unique_org();
                let t = common::dyn_transport(&nats.url(), &org).await;
                runtime::$case(t, Arc::new(MemoryStore::new()), org).await;
            }
        )*
        const HERE: &[&str] = &[$(stringify!($case)),*];
    };
}

/// No case of the suite is left out here.
#[test]
fn every_case_of_the_suite_runs_here() {
    let suite: Vec<&str> = runtime::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(HERE, suite.as_slice());
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
