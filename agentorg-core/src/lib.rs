//! The core of [agentorg](https://docs.rs/agentorg): the traits, the
//! envelope and subjects, the org chart, the runtime, the in-memory backends
//! and the conformance suites.
//!
//! Applications usually depend on the `agentorg` facade, which re-exports
//! this crate and adds the real backends behind cargo features.
//!
//! # Layers
//!
//! ```text
//! application agents (impl Agent)
//!         │
//! runtime: hosts agents; claims, leases, retries, dead letters,
//!          breakers, outbox, shutdown                      runtime, agent
//!         │
//! traits: Transport · StateStore · ToolHost                transport, store, tools
//!         │
//! backends: memory (here) · NATS · Firestore · MCP (their own crates)
//! ```
//!
//! A pattern never names a backend: everything here works unchanged on the
//! memory backends and on the real ones, and one conformance suite per trait
//! (feature `conformance`) proves it for each backend.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::runtime::{Org, TaskStatus};
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("marketing").reports_to("founder"))
//!     .build()?;
//! let org = Org::builder(chart) // memory transport and store by default
//!     .agent("marketing", agent_fn(|task| async move {
//!         Ok(Outcome::Complete(serde_json::json!({ "post": format!("Announcing {}", task.title) })))
//!     }))
//!     .start()
//!     .await?;
//! let task = org.principal().delegate("marketing", TaskSpec::new("the dashboard")).await?;
//! let done = org.principal().wait_for(&task.task_id, Duration::from_secs(5)).await?;
//! assert_eq!(done.status, TaskStatus::Completed);
//! assert_eq!(done.result.unwrap()["post"], "Announcing the dashboard");
//! org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! * [`name`], [`subject`], [`envelope`], [`codec`]: validated names, the
//!   subject scheme, the envelope and its JSON codec.
//! * [`transport`], [`store`], [`tools`]: the backend traits, their error
//!   kinds, and the in-memory implementations.
//! * [`chart`]: the org chart and its rules.
//! * [`agent`], [`runtime`]: the application's trait and the runtime that
//!   hosts it.
//! * `conformance` (feature `conformance`): the suites every backend runs.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::future_not_send,
    clippy::clone_on_ref_ptr
)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
pub mod chart;
pub mod clock;
pub mod codec;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
#[allow(clippy::panic)] // the suites assert by panicking, like any test
pub mod conformance;
pub mod envelope;
pub mod hierarchy;
pub mod name;
pub mod peer;
pub mod runtime;
pub mod store;
pub mod subject;
pub mod tools;
pub mod transport;

pub use async_trait::async_trait;
pub use chart::{ChartError, OrgChart};
pub use name::{Name, NameError};
