//! The transport conformance suite of agentorg-core, against a real
//! nats-server started by the test kit.

mod common;

use agentorg_core::conformance::{transport, unique_org};
use agentorg_testkit::nats_or_skip;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_transport_suite() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::dyn_transport(&nats.url(), &org).await;
    transport::run_all(t, org).await;
}
