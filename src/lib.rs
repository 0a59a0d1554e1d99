//! # agentorg
//!
//! Agent organizations in Rust: agents with roles and reporting lines that
//! delegate down the chart, escalate up it, talk on declared peer channels,
//! and share durable state — with the delivery semantics of a production
//! system (claims, leases, retries with backoff, dead letters, circuit
//! breakers, a transactional outbox) kept the same on every backend.
//!
//! This crate is the facade: it re-exports [`agentorg_core`] and, behind
//! cargo features, the real backends. The in-memory backends are the
//! default, so an org runs in one process with no server.
//!
//! ```
//! use std::time::Duration;
//! use agentorg::prelude::*;
//! use serde_json::json;
//!
//! struct Cto;
//!
//! #[async_trait]
//! impl Agent for Cto {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.delegate("backend", TaskSpec::new(format!("API for {}", task.title)).sla_minutes(120)).await?;
//!         Ok(Outcome::AwaitSubtasks) // completes when the backend's result rolls up
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chart = OrgChart::builder("genbrain")
//!     .principal("founder")
//!     .role(RoleSpec::new("cto").reports_to("founder"))
//!     .role(RoleSpec::new("backend").reports_to("cto"))
//!     .build()?;
//! let org = Org::builder(chart)
//!     .agent("cto", Cto)
//!     .agent("backend", agent_fn(|task| async move {
//!         Ok(Outcome::Complete(json!({ "shipped": task.title })))
//!     }))
//!     .start()
//!     .await?;
//!
//! let founder = org.principal();
//! let task = founder.delegate("cto", TaskSpec::new("analytics dashboard")).await?;
//! let done = founder.wait_for(&task.task_id, Duration::from_secs(10)).await?;
//! assert_eq!(done.status, TaskStatus::Completed);
//! let tree = founder.task_tree(&task.task_id).await?;
//! assert!(tree.all_completed());
//! println!("{}", serde_json::to_string_pretty(&tree)?);
//! org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | what it adds | status |
//! |---|---|---|
//! | (none) | in-memory transport, store and tools; the runtime | available |
//! | `nats` | NATS JetStream transport and broker permissions from the chart (`agentorg-nats`, re-exported as `agentorg::nats`) | available |
//! | `firestore` | Firestore state store (`agentorg::firestore::FirestoreStore`, crate `agentorg-firestore`) | available |
//! | `mcp` | MCP tool host over rmcp with a catalog, per-role grants, failover and pinning, and the org MCP server (`agentorg-mcp`, re-exported as `agentorg::mcp`) | available |
//! | `llm` | one `Model` trait for chat calls to LLMs over OpenAI-compatible servers, Anthropic and Gemini, a TOML catalog of models, and `Failover` over several with a breaker per model (`agentorg-llm`, re-exported as `agentorg::llm`) | available (agents that use it: not yet) |
//!
//! # Where to read on
//!
//! * [`agent`]: the [`Agent`](agent::Agent) trait, with a method per
//!   pattern, and its context.
//! * [`hierarchy`], [`peer`]: the coordination patterns — delegation, task
//!   trees, escalation, SLAs and breakers; declared peer channels.
//! * [`runtime`]: the kernel — what happens to every delivery (claims,
//!   retries, dead letters, outbox, durable timers) — the
//!   [`Org`](runtime::Org) builder, and the seam a pattern of your own plugs
//!   into.
//! * [`chart`]: roles, reporting lines, peers, shortcuts, tool grants.
//! * [`transport`], [`store`], [`tools`]: the three backend traits and their
//!   guarantees.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use agentorg_core;
pub use agentorg_core::{
    agent, async_trait, blackboard, chart, clock, codec, envelope, events, hierarchy, meeting,
    name, peer, runtime, saga, store, subject, tools, transport, ChartError, Name, NameError,
    OrgChart,
};

/// The NATS JetStream transport ([`agentorg_nats`]): `NatsTransport`, its
/// builder, and the broker permissions derived from the chart.
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use agentorg_nats as nats;

/// The Firestore state store: [`FirestoreStore`](firestore::FirestoreStore)
/// (crate `agentorg-firestore`).
#[cfg(feature = "firestore")]
#[cfg_attr(docsrs, doc(cfg(feature = "firestore")))]
pub use agentorg_firestore as firestore;

/// MCP ([`agentorg_mcp`]): role-scoped MCP tools over rmcp, with pinning, and
/// the org MCP server.
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub use agentorg_mcp as mcp;

/// Models ([`agentorg_llm`]): one `Model` trait for a chat call to any LLM
/// (OpenAI-compatible servers, Anthropic, Gemini), a TOML catalog of
/// models, and `Failover` over several with a breaker per provider.
#[cfg(feature = "llm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llm")))]
pub use agentorg_llm as llm;

// The README's examples are compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The names most agent code needs: `use agentorg::prelude::*;` — every
/// type an [`Agent`](agent::Agent)'s methods take or return, and what it
/// takes to start an org and act as its principal.
pub mod prelude {
    pub use agentorg_core::agent::{
        agent_fn, agent_fn_cx, Agent, AgentError, Context, DelegateError, Delegation, Outcome,
        SubtaskResult, Task, TaskSpec,
    };
    pub use agentorg_core::async_trait;
    pub use agentorg_core::chart::{OrgChart, RoleSpec};
    pub use agentorg_core::envelope::Envelope;
    pub use agentorg_core::events::{Event, EventError};
    pub use agentorg_core::hierarchy::{
        gather, Decision, Escalation, EscalationOutcome, TaskHandle, TaskRecord, TaskStatus,
        TaskTree,
    };
    pub use agentorg_core::peer::{PeerError, PeerMessage};
    pub use agentorg_core::runtime::{AgentOptions, Org, Principal, RuntimeConfig};
    pub use agentorg_core::saga::{
        SagaDecision, SagaError, SagaEscalation, SagaRecord, SagaStatus, SagaStep,
    };
    pub use agentorg_core::Name;
}
