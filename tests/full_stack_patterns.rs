//! The pattern conformance suite (hierarchy and peers on the seed's chart)
//! on the seeds' whole stack: NATS JetStream (a real nats-server per case)
//! for messaging and Firestore (the emulator, a fresh project per case) for
//! state. Every case of `patterns::CASES`; the paused-clock-only cases run
//! on the memory backends (agentorg-core's tests/patterns.rs). Needs
//! `--features nats,firestore`.
#![cfg(all(feature = "nats", feature = "firestore"))]

use std::sync::Arc;

use agentorg::firestore::FirestoreStore;
use agentorg::nats::NatsTransportBuilder;
use agentorg_core::conformance::{patterns as suite, unique_org};
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

// Every case of `patterns::CASES`, in its order.
cases!(
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
