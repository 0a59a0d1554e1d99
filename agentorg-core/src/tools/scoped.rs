//! A role's view of a tool host.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{CallOptions, ToolError, ToolGrant, ToolHost, ToolOutput, ToolSpec};
use crate::name::Name;

/// A [`ToolHost`] that shows and allows only the tools a role is granted.
///
/// Tool names are checked with [`ToolGrant::allows`], so the inner host is
/// normally a [`ToolRouter`](super::ToolRouter) with `server.tool` names.
/// [`list_tools`](ToolHost::list_tools) leaves out what is not granted;
/// calling it is [`ToolError::Forbidden`] and never reaches the inner host —
/// whether or not such a tool exists, so the view does not leak what else
/// is there.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use agentorg_core::tools::{LocalToolHost, ScopedToolHost, ToolError, ToolHost, ToolHostExt, ToolOutput, ToolRouter};
/// use serde_json::json;
///
/// let git = LocalToolHost::new();
/// for tool in ["log", "push"] {
///     git.register(tool, "git", json!({"type": "object"}), |_| async { Ok(ToolOutput::default()) })?;
/// }
/// let router = ToolRouter::new().mount("git".parse()?, Arc::new(git))?;
/// let intern = ScopedToolHost::new(Arc::new(router), "intern".parse()?, vec!["git.log".parse()?]);
///
/// let names: Vec<_> = intern.list_tools().await?.into_iter().map(|t| t.name).collect();
/// assert_eq!(names, ["git.log"]);
/// intern.call_tool("git.log", json!({})).await?;
/// let push = intern.call_tool("git.push", json!({})).await;
/// assert!(matches!(push, Err(ToolError::Forbidden { role, .. }) if role == "intern"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ScopedToolHost {
    inner: Arc<dyn ToolHost>,
    role: Name,
    grants: Vec<ToolGrant>,
}

impl ScopedToolHost {
    /// `role`'s view of `inner`, limited to `grants`.
    pub fn new(inner: Arc<dyn ToolHost>, role: Name, grants: Vec<ToolGrant>) -> Self {
        Self {
            inner,
            role,
            grants,
        }
    }

    fn allows(&self, name: &str) -> bool {
        self.grants.iter().any(|g| g.allows(name))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for ScopedToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        let mut tools = self.inner.list_tools().await?;
        tools.retain(|t| self.allows(&t.name));
        Ok(tools)
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        if !self.allows(name) {
            return Err(ToolError::Forbidden {
                tool: name.to_owned(),
                role: self.role.to_string(),
            });
        }
        self.inner.call_tool_opts(name, arguments, options).await
    }
}

impl fmt::Display for ScopedToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopedToolHost({} over {})", self.role, self.inner)
    }
}
