//! The runtime conformance suite of agentorg-core over NatsTransport and the
//! memory store, against a real nats-server started by the test kit.
//!
//! A NatsTransport carries one org and every case starts orgs of its own
//! name, so each case gets its own server, org and transport (and runs in
//! parallel with the others).

mod common;

use std::sync::Arc;

use agentorg_core::store::MemoryStore;
use agentorg_testkit::nats_or_skip;

// Every case of `runtime::CASES`, each on its own server, org and transport.
agentorg_core::conformance_tests!(runtime, #[tokio::test(flavor = "multi_thread", worker_threads = 2)], |org| {
    common::init_tracing();
    let nats = nats_or_skip!()?;
    let t = common::dyn_transport(&nats.url(), &org).await;
    Some((t, Arc::new(MemoryStore::new()), nats))
});
