//! The runtime conformance suite with its state in Firestore (the emulator,
//! a fresh project per case), in real time.
//!
//! The transport is the in-memory one here; [`transport`] is the one place
//! to swap in another (NATS JetStream runs the same cases over both real
//! servers).

mod common;

use std::sync::Arc;

use agentorg_core::transport::{MemoryTransport, Transport};

/// The transport the cases run over.
fn transport() -> Arc<dyn Transport> {
    Arc::new(MemoryTransport::new())
}

// Every case of `runtime::CASES`, each in a fresh project.
agentorg_core::conformance_tests!(runtime, #[tokio::test(flavor = "multi_thread", worker_threads = 2)], |org| {
    let _ = &org;
    let store = fresh_store!()?;
    Some((transport(), store, ()))
});
