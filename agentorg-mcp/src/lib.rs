//! # agentorg-mcp
//!
//! [MCP](https://modelcontextprotocol.io) for agentorg, over
//! [rmcp](https://docs.rs/rmcp): role-scoped MCP tools with pinning (an
//! [`agentorg_core::tools::ToolHost`] over MCP servers), and an MCP server
//! that gives an LLM client a seat in the org. The facade re-exports it as
//! `agentorg::mcp` behind the feature `mcp`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::clone_on_ref_ptr
)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod catalog;
mod config;
mod host;
pub mod pin;
pub mod seat;

pub use audit::AuditedToolHost;
pub use catalog::{CatalogError, McpCatalog, McpTools, StartOptions};
pub use config::{McpEndpoint, McpServerConfig, RespawnPolicy};
pub use host::McpToolHost;
pub use pin::{AlertSink, OrgAlerts, PinAlert, PinnedToolHost, ToolLock, ToolPin};
