//! Conformance suites every backend runs (feature `conformance`).
//!
//! Each suite is a set of public async functions, one per behaviour, taking
//! the backend as a trait object and asserting with a message that names the
//! behaviour. A backend runs them from its own tests — the memory backends
//! from `agentorg-core/tests/`, NATS, Firestore and MCP from their crates,
//! against real servers. Backend differences are parameters, never copies of
//! the suite.
//!
//! Suites that may run against real servers use short real durations and
//! assert only "not before" bounds and eventual outcomes; on the memory
//! backends they also run on tokio's paused clock.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::sync::Arc;
//! use agentorg_core::conformance;
//! use agentorg_core::store::MemoryStore;
//! use agentorg_core::transport::MemoryTransport;
//!
//! conformance::transport::run_all(Arc::new(MemoryTransport::new()), conformance::unique_org()).await;
//! conformance::store::run_all(Arc::new(MemoryStore::new())).await;
//! # }
//! ```

use std::time::Duration;

use crate::name::Name;

pub mod patterns;
pub mod runtime;
pub mod store;
pub mod tools;
pub mod transport;

/// A fresh org name (`t` + a lowercase ULID), so runs never share subjects,
/// consumers or documents.
pub fn unique_org() -> Name {
    unique_name("t")
}

/// A fresh name with a prefix (at most 37 characters long).
pub fn unique_name(prefix: &str) -> Name {
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let prefix: String = prefix.chars().take(10).collect();
    match Name::new(format!("{prefix}{id}")) {
        Ok(n) => n,
        Err(e) => panic!("conformance: bad name prefix {prefix:?}: {e}"),
    }
}

/// How long the suites wait for something that must happen (generous: real
/// servers on a loaded 2-core machine).
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// Fails the calling behaviour with its name and what was expected.
#[track_caller]
pub(crate) fn fail(behaviour: &str, what: impl std::fmt::Display) -> ! {
    panic!("conformance `{behaviour}`: {what}")
}
