//! Several tool hosts under server names.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;
use serde_json::Value;

use super::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};
use crate::name::Name;

/// A [`ToolHost`] that mounts other hosts under server names: tool `commit`
/// of the host mounted as `git` is `git.commit`.
///
/// A call is split at the *first* `.`: `fs.read.lines` is tool `read.lines`
/// of server `fs`. A name whose server is not mounted is `NotFound` (naming
/// the full name). Errors from a mounted host that name a tool carry the
/// qualified name, so a caller sees the name it used.
///
/// # Listing
///
/// [`list_tools`](ToolHost::list_tools) asks every host at once and returns
/// their tools qualified, by server name, each host's tools in its own order.
/// If any host fails to list, the listing fails with that host's error (the
/// first in server order): a partial list would silently hide tools. Calls
/// to the other servers keep working.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use agentorg_core::tools::{LocalToolHost, ToolError, ToolHost, ToolHostExt, ToolOutput, ToolRouter};
/// use serde_json::json;
///
/// let fs = LocalToolHost::new();
/// fs.register("read.lines", "Reads lines", json!({"type": "object"}), |_| async {
///     Ok(ToolOutput::text_block("line 1"))
/// })?;
/// let router = ToolRouter::new().mount("fs".parse()?, Arc::new(fs))?;
///
/// assert_eq!(router.list_tools().await?[0].name, "fs.read.lines");
/// let out = router.call_tool("fs.read.lines", json!({})).await?;
/// assert_eq!(out.text(), Some("line 1"));
/// let missing = router.call_tool("fs.write", json!({})).await;
/// assert!(matches!(missing, Err(ToolError::NotFound { tool }) if tool == "fs.write"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ToolRouter {
    hosts: BTreeMap<Name, Arc<dyn ToolHost>>,
}

impl ToolRouter {
    /// A router with nothing mounted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mounts `host` as `server`. Fails with [`ToolError::InvalidInput`] if
    /// `server` is already mounted.
    pub fn mount(mut self, server: Name, host: Arc<dyn ToolHost>) -> Result<Self, ToolError> {
        if self.hosts.contains_key(&server) {
            return Err(ToolError::InvalidInput {
                message: format!("server `{server}` is already mounted"),
                tool: server.to_string(),
            });
        }
        self.hosts.insert(server, host);
        Ok(self)
    }
}

/// Prefixes `server.` to the tool an error names.
fn qualify(server: &str, mut err: ToolError) -> ToolError {
    match &mut err {
        ToolError::NotFound { tool }
        | ToolError::Forbidden { tool, .. }
        | ToolError::InvalidInput { tool, .. }
        | ToolError::Failed { tool, .. }
        | ToolError::Timeout { tool, .. }
        | ToolError::TooLarge { tool, .. }
        | ToolError::DefinitionChanged { tool, .. } => *tool = format!("{server}.{tool}"),
        ToolError::Unavailable { .. } | ToolError::Other { .. } => {}
    }
    err
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for ToolRouter {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        let lists = join_all(self.hosts.iter().map(|(server, host)| async move {
            let specs = host.list_tools().await.map_err(|e| qualify(server, e))?;
            Ok::<_, ToolError>(specs.into_iter().map(move |mut spec| {
                spec.name = format!("{server}.{}", spec.name);
                spec
            }))
        }))
        .await;
        let lists = lists.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(lists.into_iter().flatten().collect())
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        let Some((server, host, tool)) = name
            .split_once('.')
            .and_then(|(server, tool)| Some((server, self.hosts.get(server)?, tool)))
        else {
            return Err(ToolError::NotFound {
                tool: name.to_owned(),
            });
        };
        host.call_tool_opts(tool, arguments, options)
            .await
            .map_err(|e| qualify(server, e))
    }
}

impl fmt::Display for ToolRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ToolRouter(")?;
        for (i, server) in self.hosts.keys().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(server)?;
        }
        f.write_str(")")
    }
}
