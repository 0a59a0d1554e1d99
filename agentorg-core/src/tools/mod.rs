//! Tools: the [`ToolHost`] trait and its in-process hosts.
//!
//! A tool host lists tools (name, description, JSON Schema of the arguments)
//! and calls them with JSON arguments. Hosts compose:
//!
//! * [`LocalToolHost`] registers async Rust functions as tools and validates
//!   arguments against their schemas;
//! * [`ToolRouter`] mounts several hosts under server names, so `git.commit`
//!   is tool `commit` of the host mounted as `git`;
//! * [`ScopedToolHost`] shows and allows only a role's [`ToolGrant`]s
//!   (anything else is `Forbidden`, and invisible in the list);
//! * [`FailoverToolHost`] tries equivalent hosts in order when one is
//!   unavailable.
//!
//! The MCP host of `agentorg-mcp` (facade feature `mcp`) plugs into the same
//! router.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agentorg_core::tools::{
//!     LocalToolHost, ScopedToolHost, ToolError, ToolHost, ToolHostExt, ToolOutput, ToolRouter,
//! };
//! use serde_json::json;
//!
//! let clock = LocalToolHost::new();
//! clock.register(
//!     "now",
//!     "The current time in a time zone",
//!     json!({"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}),
//!     |args| async move { Ok(ToolOutput::structured(json!({"tz": args["tz"], "time": "12:00"}))) },
//! )?;
//! let router = ToolRouter::new().mount("time".parse()?, Arc::new(clock))?;
//!
//! let out = router.call_tool("time.now", json!({"tz": "UTC"})).await?;
//! assert_eq!(out.structured.unwrap()["time"], "12:00");
//! // Arguments are checked against the schema before the tool runs:
//! let bad = router.call_tool("time.now", json!({})).await;
//! assert!(matches!(bad, Err(ToolError::InvalidInput { .. })));
//!
//! // A role sees and calls only what it is granted:
//! let scoped = ScopedToolHost::new(Arc::new(router), "marketing".parse()?, vec!["git.*".parse()?]);
//! assert!(scoped.list_tools().await?.is_empty());
//! assert!(matches!(scoped.call_tool("time.now", json!({"tz": "UTC"})).await, Err(ToolError::Forbidden { .. })));
//! # Ok(()) }
//! ```

use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod failover;
mod grant;
mod local;
mod router;
mod scoped;

pub use failover::FailoverToolHost;
pub use grant::{ToolGrant, ToolGrantError};
pub use local::LocalToolHost;
pub use router::ToolRouter;
pub use scoped::ScopedToolHost;

/// What `value` breaks of the schema `validator` holds, one line per
/// violation with its JSON path (empty if it conforms): the message of a
/// refused tool call's arguments or event payload.
pub(crate) fn schema_violations(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| match e.instance_path().as_str() {
            "" => e.to_string(),
            path => format!("{path}: {e}"),
        })
        .collect()
}

/// A boxed error from a backend, kept as the source of [`ToolError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong calling a tool.
///
/// `Timeout` and `Unavailable` are retryable
/// ([`is_retryable`](Self::is_retryable)), and are what
/// [`FailoverToolHost`] fails over on. `Failed` is the tool's own answer —
/// calling again with the same arguments will likely fail the same way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool of that name.
    #[error("unknown tool `{tool}`")]
    NotFound {
        /// The name asked for.
        tool: String,
    },
    /// The tool exists but the caller may not use it.
    #[error("role `{role}` is not granted tool `{tool}`")]
    Forbidden {
        /// The tool.
        tool: String,
        /// The role that asked.
        role: String,
    },
    /// The arguments do not match the tool's input schema (or the schema
    /// itself is unusable, when registering).
    #[error("invalid input for tool `{tool}`: {message}")]
    InvalidInput {
        /// The tool.
        tool: String,
        /// What was wrong.
        message: String,
    },
    /// The tool ran and reported a failure; its output says why.
    #[error("tool `{tool}` failed: {}", output.text().unwrap_or("(no text)"))]
    Failed {
        /// The tool.
        tool: String,
        /// What the tool returned.
        output: ToolOutput,
    },
    /// The call did not finish in time. Retryable.
    #[error("tool `{tool}` timed out after {after:?}")]
    Timeout {
        /// The tool.
        tool: String,
        /// How long it waited.
        after: Duration,
    },
    /// The tool's server cannot be reached right now. Retryable.
    #[error("tool server `{server}` unavailable: {message}")]
    Unavailable {
        /// The server.
        server: String,
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The result is larger than the host accepts.
    #[error("result of tool `{tool}` is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The tool.
        tool: String,
        /// The result size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The tool's definition (description or input schema) is not the one
    /// pinned for it (a lock file of tool definitions, as `agentorg-mcp`
    /// writes): calls are refused until the change is reviewed and the pin
    /// renewed. `reason` names what changed. Not retryable.
    #[error("tool `{tool}` refused: {reason}")]
    DefinitionChanged {
        /// The tool.
        tool: String,
        /// What changed, e.g. "description changed since it was pinned".
        reason: String,
    },
    /// Any other backend error.
    #[error("{backend} error: {source}")]
    Other {
        /// The backend's name.
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl ToolError {
    /// Whether the same call may succeed if tried again (or on an
    /// equivalent host).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

/// A tool as listed by a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// Its name (qualified as `server.tool` when listed by a router).
    pub name: String,
    /// What it does, for people and LLMs.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
}

impl ToolSpec {
    /// A tool spec.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
        }
    }
}

/// What a tool returned: structured content when the tool gives it, and text
/// blocks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolOutput {
    /// Structured (JSON) content.
    pub structured: Option<Value>,
    /// Text content blocks, in order.
    pub text: Vec<String>,
}

impl ToolOutput {
    /// Output with structured content.
    pub fn structured(value: Value) -> Self {
        Self {
            structured: Some(value),
            text: Vec::new(),
        }
    }

    /// Output with one text block.
    pub fn text_block(text: impl Into<String>) -> Self {
        Self {
            structured: None,
            text: vec![text.into()],
        }
    }

    /// The first text block, if any.
    pub fn text(&self) -> Option<&str> {
        self.text.first().map(String::as_str)
    }

    /// The structured content, or else the text blocks joined as a JSON
    /// string (`null` when there is neither).
    pub fn into_json(self) -> Value {
        match self.structured {
            Some(v) => v,
            None if self.text.is_empty() => Value::Null,
            None => Value::String(self.text.join("\n")),
        }
    }
}

/// Options of one tool call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Give up after this long (`Timeout`); the host's default if `None`.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}

/// Lists and calls tools. See the [module docs](self).
///
/// Object-safe; used as `Arc<dyn ToolHost>`. Conveniences live in
/// [`ToolHostExt`].
#[async_trait]
pub trait ToolHost: Debug + Display + Send + Sync + 'static {
    /// The tools this host offers (to this caller).
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError>;

    /// Calls tool `name` with JSON `arguments`.
    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError>;
}

/// Conveniences over any [`ToolHost`].
#[async_trait]
pub trait ToolHostExt: ToolHost {
    /// Calls a tool with default options.
    async fn call_tool(&self, name: &str, arguments: Value) -> Result<ToolOutput, ToolError> {
        self.call_tool_opts(name, arguments, CallOptions::default())
            .await
    }

    /// Looks up one tool's spec.
    async fn tool_spec(&self, name: &str) -> Result<ToolSpec, ToolError> {
        self.list_tools()
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ToolError::NotFound {
                tool: name.to_owned(),
            })
    }
}

impl<T: ToolHost + ?Sized> ToolHostExt for T {}

/// The tool host as a trait object.
pub type DynToolHost = dyn ToolHost;

macro_rules! forward_tool_host {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: ToolHost + ?Sized> ToolHost for $ty {
            async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
                (**self).list_tools().await
            }
            async fn call_tool_opts(
                &self,
                name: &str,
                arguments: Value,
                options: CallOptions,
            ) -> Result<ToolOutput, ToolError> {
                (**self).call_tool_opts(name, arguments, options).await
            }
        }
    };
}

forward_tool_host!(Arc<T>);
forward_tool_host!(Box<T>);
