//! # agentorg-mcp
//!
//! [MCP](https://modelcontextprotocol.io) for agentorg, over
//! [rmcp](https://docs.rs/rmcp): role-scoped MCP tools with pinning (an
//! [`agentorg_core::tools::ToolHost`] over MCP servers), and an MCP server
//! that gives an LLM client a seat in the org. The facade re-exports it as
//! `agentorg::mcp` behind the feature `mcp`.
//!
//! # Tools from MCP servers
//!
//! * [`McpToolHost`]: one MCP server — spawned over stdio or reached over
//!   streamable HTTP — as a [`ToolHost`](agentorg_core::tools::ToolHost):
//!   arguments checked against the tool's schema before sending, unknown
//!   tools `NotFound`, a tool's own failure `Failed` with its content, a
//!   per-call timeout that cancels that request on the server, a result size
//!   cap, a crashed stdio server respawned with backoff.
//! * [`McpCatalog`]: the org's servers from a TOML file (`examples/tools.toml`),
//!   started as [`McpTools`]: one router for the org
//!   (`Org::builder(chart).tools(tools.router())`), each role's view by the
//!   chart's grants ([`McpTools::for_role`]), failover across equivalent
//!   servers.
//! * [`pin`]: a lock file of the granted tools' definitions; a changed tool
//!   is refused ([`ToolError::DefinitionChanged`](agentorg_core::tools::ToolError::DefinitionChanged))
//!   and the principal alerted once ([`OrgAlerts`]).
//! * [`audit`]: a `tracing` span per call (role, server, tool, argument hash,
//!   duration, outcome), optionally a document per call in the store.
//!
//! An MCP server in the same process, over an in-memory pipe, called through
//! a role's grants:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agentorg_core::tools::{ScopedToolHost, ToolError, ToolHost, ToolHostExt, ToolRouter};
//! use agentorg_mcp::{McpServerConfig, McpToolHost};
//! use rmcp::model::{
//!     CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
//!     PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
//! };
//! use rmcp::service::RequestContext;
//! use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
//! use serde_json::json;
//!
//! /// A tiny MCP server with one tool.
//! struct Clock;
//!
//! impl ServerHandler for Clock {
//!     fn get_info(&self) -> ServerConfig {
//!         ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
//!     }
//!     async fn list_tools(
//!         &self,
//!         _: Option<PaginatedRequestParams>,
//!         _: RequestContext<RoleServer>,
//!     ) -> Result<ListToolsResult, ErrorData> {
//!         let schema = json!({"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]});
//!         let schema = schema.as_object().cloned().unwrap_or_default();
//!         Ok(ListToolsResult::with_all_items(vec![Tool::new("now", "The time in a time zone", schema)]))
//!     }
//!     async fn call_tool(
//!         &self,
//!         request: CallToolRequestParams,
//!         _: RequestContext<RoleServer>,
//!     ) -> Result<CallToolResponse, ErrorData> {
//!         let tz = request.arguments.and_then(|a| a.get("tz").cloned());
//!         Ok(CallToolResult::structured(json!({"tz": tz, "time": "12:00"})).into())
//!     }
//! }
//!
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//! tokio::spawn(async move {
//!     if let Ok(server) = Clock.serve(server_io).await {
//!         let _ = server.waiting().await;
//!     }
//! });
//! // Over stdio it would be `McpToolHost::connect(McpServerConfig::stdio(name, "mcp-server-time"))`.
//! let config = McpServerConfig::stdio("clock".parse()?, "(in process)");
//! let clock = McpToolHost::from_transport(config, client_io).await?;
//!
//! let router = ToolRouter::new().mount("clock".parse()?, Arc::new(clock.clone()))?;
//! let devops = ScopedToolHost::new(Arc::new(router), "devops".parse()?, vec!["clock.now".parse()?]);
//! assert_eq!(devops.list_tools().await?[0].name, "clock.now");
//! let out = devops.call_tool("clock.now", json!({"tz": "UTC"})).await?;
//! assert_eq!(out.structured.unwrap()["time"], "12:00");
//! // Checked against the tool's schema before anything is sent:
//! let bad = devops.call_tool("clock.now", json!({"tz": 1})).await;
//! assert!(matches!(bad, Err(ToolError::InvalidInput { .. })));
//! clock.shutdown().await;
//! # Ok(()) }
//! ```

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
