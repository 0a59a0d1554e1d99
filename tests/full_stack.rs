//! The runtime conformance suite on the seeds' whole stack: NATS JetStream
//! (a real nats-server per case) for messaging and Firestore (the emulator, a
//! fresh project per case) for state. Needs `--features nats,firestore`.
#![cfg(all(feature = "nats", feature = "firestore"))]

use std::sync::Arc;

use agentorg::firestore::FirestoreStore;
use agentorg::nats::NatsTransportBuilder;
use agentorg_core::conformance::{runtime as suite, unique_org};
use agentorg_testkit::{firestore_or_skip, nats_or_skip};

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(nats) = nats_or_skip!() else { return };
                let Some(firestore) = firestore_or_skip!() else { return };
                let org = unique_org();
                let transport = NatsTransportBuilder::new()
                    .with_server(nats.url())
                    .with_org(org.as_str())
                    .build()
                    .await
                    .expect("a NATS transport on the test server");
                let store = FirestoreStore::builder()
                    .with_project_id(firestore.unique_project())
                    .with_emulator(firestore.host_port())
                    .build()
                    .await
                    .expect("a Firestore store on the emulator");
                suite::$name(Arc::new(transport), Arc::new(store), org).await;
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
