//! The runtime and pattern suites on GenBrain's whole stack: NATS JetStream
//! (a real nats-server per case) for messaging and Firestore (the emulator, a
//! fresh project per case) for state. Every case of `runtime::CASES` and of
//! `patterns::CASES`; the pattern suite's paused-clock-only cases run on the
//! memory backends (agentorg-core's tests/patterns.rs). Needs `--features
//! nats,firestore`.
#![cfg(all(feature = "nats", feature = "firestore"))]

use agentorg::firestore::FirestoreStore;
use agentorg::nats::NatsTransportBuilder;
use agentorg::Name;
use agentorg_testkit::{firestore_or_skip, nats_or_skip, FirestoreEmulator, NatsServer};

/// A NATS transport of `org` on a fresh server and a store in a fresh
/// project of the emulator; the server goes with the guard.
async fn stack(
    org: &Name,
) -> Option<(
    agentorg::nats::NatsTransport,
    FirestoreStore,
    (NatsServer, FirestoreEmulator),
)> {
    let nats = nats_or_skip!()?;
    let firestore = firestore_or_skip!()?;
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
    Some((transport, store, (nats, firestore)))
}

mod runtime {
    use std::sync::Arc;

    agentorg_core::conformance_tests!(runtime, #[tokio::test(flavor = "multi_thread", worker_threads = 2)], |org| {
        let (t, s, guard) = super::stack(&org).await?;
        Some((Arc::new(t), Arc::new(s), guard))
    });
}

mod patterns {
    use std::sync::Arc;

    agentorg_core::conformance_tests!(patterns, #[tokio::test(flavor = "multi_thread", worker_threads = 2)], |org| {
        let (t, s, guard) = super::stack(&org).await?;
        Some((Arc::new(t), Arc::new(s), guard))
    });
}
