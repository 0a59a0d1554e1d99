//! The runtime and pattern conformance suites on the seeds' whole stack:
//! NATS JetStream (a real nats-server per case) for messaging and Firestore
//! (the emulator, a fresh project per case) for state. Every case of
//! `runtime::CASES` and of `patterns::CASES`; the pattern suite's
//! paused-clock-only cases run on the memory backends (agentorg-core's
//! tests/patterns.rs). Needs `--features nats,firestore`.
#![cfg(all(feature = "nats", feature = "firestore"))]

/// A module `$suite` that runs each listed case of
/// `agentorg_core::conformance::$suite` on a fresh NATS + Firestore pair, and
/// checks that the list is the suite's whole `CASES`, in its order.
macro_rules! suite {
    ($suite:ident: $($name:ident),* $(,)?) => {
        mod $suite {
            use std::sync::Arc;

            use agentorg::firestore::FirestoreStore;
            use agentorg::nats::NatsTransportBuilder;
            use agentorg_core::conformance::{$suite as suite, unique_org};
            use agentorg_testkit::{firestore_or_skip, nats_or_skip};

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

            /// No case of the suite is left out here.
            #[test]
            fn every_case_of_the_suite_runs_here() {
                let cases: Vec<&str> = suite::CASES.iter().map(|(name, _)| *name).collect();
                assert_eq!(HERE, cases.as_slice());
            }
        }
    };
}

// Every case of `runtime::CASES`, in its order.
suite!(
    runtime:
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

// Every case of `patterns::CASES`, in its order.
suite!(
    patterns:
    seed_tree_built_by_delegation,
    delegation_up_or_sideways_refused,
    shortcut_honoured_for_its_task_type,
    escalation_reaches_the_principal_and_decisions_come_back,
    breaker_reroutes_to_the_alternate_and_half_opens,
    seed_tree_once_under_redelivery,
    poison_task_dead_lettered_requeued_or_discarded,
    peer_messages_only_on_declared_channels,
    thousand_concurrent_delegations_each_once,
    batch_of_ten_gathered_three_in_flight,
    cancel_ends_the_open_subtree,
    idempotency_key_creates_one_task,
    registry_and_liveness,
);
