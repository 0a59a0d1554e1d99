//! Failover across equivalent tool hosts.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};

/// A [`ToolHost`] over equivalent hosts (say, replicas of one MCP server),
/// trying the next when one is unavailable.
///
/// # Failover
///
/// A request (call or listing) goes to the *current* host, at first the
/// first one. On a retryable error ([`ToolError::is_retryable`]:
/// `Unavailable`, `Timeout`) the next host is tried, wrapping around, until
/// each has been tried once; if all fail, the last error is returned. Any
/// other result — success, the tool's own `Failed`, `InvalidInput`, … — is
/// returned at once: another host would answer the same.
///
/// The host that answered becomes the current one (sticky), so once a host
/// is down, later requests go straight to the one that worked. Concurrent
/// requests may race to set it; any of their answers is a fine choice.
///
/// Each attempt gets the call's full timeout, so a call may take up to
/// `hosts × timeout` in total.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agentorg_core::tools::ToolError> {
/// use std::sync::Arc;
/// use agentorg_core::tools::{FailoverToolHost, LocalToolHost, ToolError, ToolHostExt, ToolOutput};
/// use serde_json::json;
///
/// let down = LocalToolHost::new();
/// down.register("ping", "ping", json!({}), |_| async {
///     Err(ToolError::Unavailable { server: "a".into(), message: "down".into(), source: None })
/// })?;
/// let up = LocalToolHost::new();
/// up.register("ping", "ping", json!({}), |_| async { Ok(ToolOutput::text_block("pong")) })?;
///
/// let host = FailoverToolHost::new(vec![Arc::new(down), Arc::new(up)])?;
/// assert_eq!(host.call_tool("ping", json!({})).await?.text(), Some("pong"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FailoverToolHost {
    hosts: Vec<Arc<dyn ToolHost>>,
    /// Index of the host to try first.
    current: AtomicUsize,
}

impl FailoverToolHost {
    /// Fails over across `hosts`, in order. Fails with
    /// [`ToolError::InvalidInput`] if `hosts` is empty.
    pub fn new(hosts: Vec<Arc<dyn ToolHost>>) -> Result<Self, ToolError> {
        if hosts.is_empty() {
            return Err(ToolError::InvalidInput {
                tool: String::new(),
                message: "a failover host needs at least one host".into(),
            });
        }
        Ok(Self {
            hosts,
            current: AtomicUsize::new(0),
        })
    }

    async fn with_failover<'a, T, F, Fut>(&'a self, mut request: F) -> Result<T, ToolError>
    where
        F: FnMut(&'a Arc<dyn ToolHost>) -> Fut + Send,
        Fut: Future<Output = Result<T, ToolError>> + Send,
        T: Send,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        let hosts = self.hosts.iter().enumerate().cycle().skip(start);
        for (i, host) in hosts.take(self.hosts.len()) {
            match request(host).await {
                Err(e) if e.is_retryable() => last = Some(e),
                answer => {
                    self.current.store(i, Ordering::Relaxed);
                    return answer;
                }
            }
        }
        // `hosts` is not empty, so at least one error was recorded.
        Err(last.unwrap_or_else(|| ToolError::Other {
            backend: "failover",
            source: "no host to try".into(),
        }))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for FailoverToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        self.with_failover(|host| host.list_tools()).await
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        self.with_failover(|host| host.call_tool_opts(name, arguments.clone(), options.clone()))
            .await
    }
}

impl fmt::Display for FailoverToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FailoverToolHost(")?;
        for (i, host) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{host}")?;
        }
        f.write_str(")")
    }
}
