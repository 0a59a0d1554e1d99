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
//! application agents (impl Agent)                        agent
//!         │
//! coordination patterns, one module each, each          hierarchy, peer,
//!                                                       events, saga,
//!                                                       blackboard
//! registered with the kernel as handlers
//!         │
//! runtime kernel: hosts roles, binds consumers,         runtime
//! admission, claims, commit + outbox, retries, dead
//! letters, durable timers, registry, health, shutdown
//!         │
//! traits: Transport · StateStore · ToolHost              transport, store, tools
//!         │
//! backends: memory (here) · NATS · Firestore · MCP (their own crates)
//! ```
//!
//! The kernel names no pattern: a pattern registers its handlers, timers and
//! services ([`runtime::Pattern`]), and adds its operations to the runtime's
//! `Context` and `Principal` from its own module. A pattern never names a
//! backend: everything here works unchanged on the memory backends and on the
//! real ones, and one conformance suite per trait (feature `conformance`)
//! proves it for each backend.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::hierarchy::TaskStatus;
//! use agentorg_core::runtime::Org;
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
//! * [`runtime`]: the kernel that hosts roles and keeps the delivery
//!   semantics; the seam patterns plug into.
//! * [`hierarchy`], [`peer`], [`events`], [`saga`], [`blackboard`]: the
//!   coordination patterns (delegation, peer channels, event choreography,
//!   chains and sagas, a shared project of owned artifacts).
//! * [`agent`]: the application's trait, with a method per pattern.
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
pub mod blackboard;
pub mod chart;
pub mod clock;
pub mod codec;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
#[allow(clippy::panic)] // the suites assert by panicking, like any test
pub mod conformance;
pub mod env;
pub mod envelope;
pub mod events;
mod hex;
pub mod hierarchy;
pub mod meeting;
pub mod name;
mod panics;
pub mod peer;
pub mod runtime;
pub mod saga;
pub mod store;
pub mod subject;
mod timefmt;
pub mod tools;
pub mod transport;

pub use async_trait::async_trait;
pub use chart::{ChartError, OrgChart};
pub use name::{Name, NameError};
