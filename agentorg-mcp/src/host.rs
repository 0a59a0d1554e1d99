//! [`McpToolHost`]: one MCP server as a [`ToolHost`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use agentorg_core::tools::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};
use agentorg_core::Name;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ContentBlock, ErrorCode,
    ResourceContents, ServerResult,
};
use rmcp::service::{NotificationContext, Peer, PeerRequestOptions, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::audit::{args_digest, Outcome};
use crate::config::{McpEndpoint, McpServerConfig, RespawnPolicy};

const BACKEND: &str = "mcp";

/// One MCP server (over stdio or streamable HTTP) as a [`ToolHost`], over the
/// [rmcp](https://docs.rs/rmcp) client.
///
/// # Behaviour
///
/// * **Listing**: all pages of `tools/list` (following cursors), cached for
///   the session; the cache is dropped when the server sends
///   `notifications/tools/list_changed`, on reconnection, and by
///   [`refresh`](Self::refresh).
/// * **Calls**: the arguments are checked against the tool's input schema
///   before anything is sent (`InvalidInput`). The result is the structured
///   content when the server gives it, plus the text blocks (and the text of
///   embedded text resources) in order.
/// * **Errors**: a tool the server does not know is `NotFound`, whether the
///   server answers with a JSON-RPC error (rmcp servers: `-32602`) or with
///   an `is_error` result (the TypeScript SDK's servers); an `is_error`
///   result of a tool the server lists is the tool's own failure, `Failed`,
///   carrying its content.
/// * **Timeouts**: each call has a timeout ([`CallOptions::timeout`], else
///   the server's [`call_timeout`](McpServerConfig::call_timeout)); when it
///   expires that one request is cancelled on the server
///   (`notifications/cancelled`) and the session stays up.
/// * **Result size**: a result over
///   [`max_result_bytes`](McpServerConfig::max_result_bytes) is refused
///   (`TooLarge`).
/// * **Crashes**: when the stdio server has exited (or the HTTP session is
///   gone), the next call reconnects — respawning the process — with bounded
///   retries and exponential backoff ([`RespawnPolicy`]); when they are
///   spent the call is `Unavailable` (retryable, so a
///   [`FailoverToolHost`](agentorg_core::tools::FailoverToolHost) moves on).
///   A call in flight when the server died is `Unavailable` and is not sent
///   again (it may have had effects).
/// * **Shutdown**: [`shutdown`](Self::shutdown) closes the session and waits
///   for the child process to exit (stdin closed, then `SIGTERM`, then
///   `SIGKILL`); dropping the host kills the child (`kill_on_drop`).
///
/// Every call is a `tracing` span `mcp.call` with the server, tool, argument
/// hash, duration and outcome (see [`crate::audit`]).
///
/// Cheap to clone (an `Arc`); clones share the session.
#[derive(Clone)]
pub struct McpToolHost {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    /// How to (re)connect; `None` for a host made from a one-shot transport.
    endpoint: Option<McpEndpoint>,
    call_timeout: Duration,
    max_result_bytes: usize,
    respawn: RespawnPolicy,
    /// The live session. A std `RwLock`: held only to clone or swap the
    /// `Arc`, never across an `.await`.
    current: RwLock<Option<Arc<Session>>>,
    /// Serializes (re)connection so that concurrent callers finding the
    /// session gone spawn one process, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// Set by `shutdown`: no reconnection afterwards.
    shut_down: AtomicBool,
}

/// One MCP session: the rmcp client and what was listed on it.
struct Session {
    peer: Peer<RoleClient>,
    /// The rmcp service task; taken by `close`. Dropping it cancels the
    /// service loop, which drops the transport (and kills the child).
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, Handler>>>,
    pid: Option<u32>,
    /// Set by the server's `notifications/tools/list_changed`.
    stale: Arc<AtomicBool>,
    /// The cached listing (std lock: never held across an `.await`).
    index: RwLock<Option<Arc<ToolIndex>>>,
}

/// The listed tools of a session, with their compiled argument validators.
struct ToolIndex {
    specs: Vec<ToolSpec>,
    by_name: HashMap<String, (usize, Option<Arc<jsonschema::Validator>>)>,
}

/// The client side of a session: notes that the tool list changed.
struct Handler {
    stale: Arc<AtomicBool>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.stale.store(true, Ordering::Release);
    }
}

impl McpToolHost {
    /// Connects to the server (spawning it for stdio) and lists its tools.
    ///
    /// # Errors
    /// `Unavailable` when the server cannot be started or reached within the
    /// [respawn policy](McpServerConfig::respawn).
    pub async fn connect(config: McpServerConfig) -> Result<Self, ToolError> {
        let host = Self::unconnected(
            config.name,
            Some(config.endpoint),
            config.call_timeout,
            config.max_result_bytes,
            config.respawn,
        );
        host.session().await?;
        Ok(host)
    }

    /// A host that connects on first use (a catalog uses it so that one
    /// server being down does not stop the others from starting).
    pub fn lazy(config: McpServerConfig) -> Self {
        Self::unconnected(
            config.name,
            Some(config.endpoint),
            config.call_timeout,
            config.max_result_bytes,
            config.respawn,
        )
    }

    /// A host over an already-open rmcp client transport (for example one
    /// half of a `tokio::io::duplex`, or a transport configured by hand).
    /// `config` gives the name and limits; its endpoint is not used, and a
    /// lost session is not re-established.
    ///
    /// # Errors
    /// `Unavailable` when the MCP handshake fails.
    pub async fn from_transport<T, E, A>(
        config: McpServerConfig,
        transport: T,
    ) -> Result<Self, ToolError>
    where
        T: IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let host = Self::unconnected(
            config.name,
            None,
            config.call_timeout,
            config.max_result_bytes,
            config.respawn,
        );
        let session = Session::start(&host.inner.name, transport, None).await?;
        *host.write_current() = Some(Arc::new(session));
        Ok(host)
    }

    fn unconnected(
        name: Name,
        endpoint: Option<McpEndpoint>,
        call_timeout: Duration,
        max_result_bytes: usize,
        respawn: RespawnPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                endpoint,
                call_timeout,
                max_result_bytes,
                respawn,
                current: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// The server's name.
    pub fn name(&self) -> &Name {
        &self.inner.name
    }

    /// The process id of the stdio server of the current session (`None`
    /// for HTTP, or when not connected).
    pub fn pid(&self) -> Option<u32> {
        self.live_session().and_then(|s| s.pid)
    }

    /// Whether a session is open and its transport alive.
    pub fn is_connected(&self) -> bool {
        self.live_session().is_some()
    }

    /// Drops the cached tool listing; the next listing or call asks the
    /// server again.
    pub fn refresh(&self) {
        if let Some(session) = self.live_session() {
            *session
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Closes the session and waits for the server process to exit. Later
    /// calls fail `Unavailable`.
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::Release);
        let _connecting = self.inner.connecting.lock().await;
        let session = self.write_current().take();
        if let Some(session) = session {
            session.close().await;
        }
    }

    fn write_current(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Session>>> {
        self.inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|s| s.is_alive()).map(Arc::clone)
    }

    /// The live session, reconnecting (respawning) if it is gone.
    async fn session(&self) -> Result<Arc<Session>, ToolError> {
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        let _connecting = self.inner.connecting.lock().await;
        // Another caller may have reconnected while this one waited.
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(self.unavailable("the host was shut down", None));
        }
        let Some(endpoint) = self.inner.endpoint.clone() else {
            return Err(self.unavailable("the session is closed and cannot be reopened", None));
        };
        let old = self.write_current().take();
        if let Some(old) = old {
            tracing::warn!(server = %self.inner.name, "MCP session lost; reconnecting");
            old.close().await;
        }
        let policy = self.inner.respawn;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1))
            .with_jitter();
        let name = &self.inner.name;
        let session = (|| Session::open(name, &endpoint))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e, after| {
                tracing::warn!(server = %name, error = %e, ?after, "MCP connect failed; retrying");
            })
            .await?;
        let session = Arc::new(session);
        *self.write_current() = Some(Arc::clone(&session));
        Ok(session)
    }

    fn unavailable(&self, message: &str, source: Option<ServiceError>) -> ToolError {
        ToolError::Unavailable {
            server: self.inner.name.to_string(),
            message: message.to_owned(),
            source: source.map(|e| Box::new(e) as _),
        }
    }

    /// The session's listing, asking the server when not cached.
    async fn index(&self, session: &Session, force: bool) -> Result<Arc<ToolIndex>, ToolError> {
        if !force && !session.stale.load(Ordering::Acquire) {
            if let Some(index) = session
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                return Ok(Arc::clone(index));
            }
        }
        session.stale.store(false, Ordering::Release);
        let tools = session
            .peer
            .list_all_tools()
            .await
            .map_err(|e| self.service_error("", e))?;
        let index = Arc::new(ToolIndex::new(&self.inner.name, tools));
        *session
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&index));
        Ok(index)
    }

    /// Maps an rmcp error of a request about `tool` (empty for listings).
    fn service_error(&self, tool: &str, e: ServiceError) -> ToolError {
        match e {
            ServiceError::McpError(err)
                if !tool.is_empty()
                    && err.code == ErrorCode::INVALID_PARAMS
                    && says_unknown_tool(&err.message) =>
            {
                ToolError::NotFound {
                    tool: tool.to_owned(),
                }
            }
            ServiceError::McpError(err)
                if !tool.is_empty() && err.code == ErrorCode::INVALID_PARAMS =>
            {
                ToolError::InvalidInput {
                    tool: tool.to_owned(),
                    message: err.message.into_owned(),
                }
            }
            ServiceError::Timeout { timeout } => ToolError::Timeout {
                tool: tool.to_owned(),
                after: timeout,
            },
            e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)) => {
                self.unavailable("the session to the server is closed", Some(e))
            }
            e => ToolError::Other {
                backend: BACKEND,
                source: Box::new(e),
            },
        }
    }

    async fn call(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(ToolError::InvalidInput {
                    tool: name.to_owned(),
                    message: format!("arguments must be a JSON object, not {other}"),
                })
            }
        };
        let timeout = options.timeout.unwrap_or(self.inner.call_timeout);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let session = self.session().await?;
            let listed = match self.index(&session, false).await?.lookup(name) {
                Some(found) => Some(found),
                // Not in the cached listing: ask again before deciding.
                None => self.index(&session, true).await?.lookup(name),
            };
            if let Some(Some(validator)) = &listed {
                let arguments = Value::Object(arguments.clone());
                let violations: Vec<String> = validator
                    .iter_errors(&arguments)
                    .map(|e| match e.instance_path().as_str() {
                        "" => e.to_string(),
                        path => format!("{path}: {e}"),
                    })
                    .collect();
                if !violations.is_empty() {
                    return Err(ToolError::InvalidInput {
                        tool: name.to_owned(),
                        message: violations.join("; "),
                    });
                }
            }
            // An unlisted tool is still sent: the server has the last word,
            // and its answer (an error or an `is_error` result) is mapped to
            // `NotFound` below.
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new(name.to_owned()).with_arguments(arguments.clone()),
            ));
            // The cancellable-request handle: on timeout it sends
            // `notifications/cancelled` for this request only; the session
            // (`RunningService::cancel` would close it) stays up.
            let handle = match session
                .peer
                .send_cancellable_request(request, PeerRequestOptions::with_timeout(timeout))
                .await
            {
                Ok(handle) => handle,
                // Not sent: the session died before this call. Reconnect and
                // try again, within the respawn policy.
                Err(e)
                    if self.inner.endpoint.is_some()
                        && attempt < self.inner.respawn.max_attempts.max(1) =>
                {
                    tracing::debug!(server = %self.inner.name, error = %e, "MCP session gone before the call; reconnecting");
                    continue;
                }
                Err(e) => return Err(self.service_error(name, e)),
            };
            let result = match handle.await_response().await {
                Ok(ServerResult::CallToolResult(result)) => result,
                Ok(_) => {
                    return Err(ToolError::Other {
                        backend: BACKEND,
                        source: format!(
                            "tool `{name}` answered with an unsupported result \
                             (input requests and tasks are not supported)"
                        )
                        .into(),
                    })
                }
                Err(ServiceError::Timeout { .. }) => {
                    return Err(ToolError::Timeout {
                        tool: name.to_owned(),
                        after: timeout,
                    })
                }
                Err(e) => return Err(self.service_error(name, e)),
            };
            return self.output(&session, name, listed.is_some(), result).await;
        }
    }

    /// Maps a `tools/call` result.
    async fn output(
        &self,
        session: &Session,
        name: &str,
        listed: bool,
        result: CallToolResult,
    ) -> Result<ToolOutput, ToolError> {
        let output = to_output(result.structured_content, &result.content);
        let size = json_size(&output);
        if size > self.inner.max_result_bytes {
            return Err(ToolError::TooLarge {
                tool: name.to_owned(),
                size,
                limit: self.inner.max_result_bytes,
            });
        }
        if result.is_error != Some(true) {
            return Ok(output);
        }
        // An error result. The server did not know the tool if it does not
        // list it (the TypeScript SDK answers an unknown tool this way). A
        // listed tool that says "not found" is checked against a fresh
        // listing: a tool's own failure can mention "not found" too.
        let unknown = !listed
            || (output.text.iter().any(|t| says_unknown_tool(t))
                && self.index(session, true).await?.lookup(name).is_none());
        if unknown {
            return Err(ToolError::NotFound {
                tool: name.to_owned(),
            });
        }
        Err(ToolError::Failed {
            tool: name.to_owned(),
            output,
        })
    }
}

/// Whether an error message says the tool is unknown, in the words of the
/// SDKs: rmcp "tool not found", TypeScript "Tool x not found", Python
/// "Unknown tool: x".
fn says_unknown_tool(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("tool") && m.contains("not found")) || m.contains("unknown tool")
}

fn to_output(structured: Option<Value>, content: &[ContentBlock]) -> ToolOutput {
    let mut output = ToolOutput::default();
    output.structured = structured;
    output.text = content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.text.clone()),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { text, .. } => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    output
}

/// Serialized size of an output, counted without keeping the bytes.
fn json_size(output: &ToolOutput) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, output) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

impl ToolIndex {
    fn new(server: &Name, tools: Vec<rmcp::model::Tool>) -> Self {
        let mut specs = Vec::with_capacity(tools.len());
        let mut by_name = HashMap::with_capacity(tools.len());
        for tool in tools {
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match jsonschema::validator_for(&schema) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    tracing::warn!(%server, tool = %tool.name, error = %e,
                        "unusable input schema; arguments are not checked before sending");
                    None
                }
            };
            by_name.insert(tool.name.to_string(), (specs.len(), validator));
            specs.push(ToolSpec::new(
                tool.name.into_owned(),
                tool.description.map(|d| d.into_owned()).unwrap_or_default(),
                schema,
            ));
        }
        Self { specs, by_name }
    }

    /// `None` if not listed; `Some(validator)` if listed.
    fn lookup(&self, name: &str) -> Option<Option<Arc<jsonschema::Validator>>> {
        self.by_name.get(name).map(|(_, v)| v.clone())
    }
}

impl Session {
    async fn open(name: &Name, endpoint: &McpEndpoint) -> Result<Self, ToolError> {
        match endpoint {
            McpEndpoint::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                if let Some(cwd) = cwd {
                    cmd.current_dir(cwd);
                }
                let (transport, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| ToolError::Unavailable {
                        server: name.to_string(),
                        message: format!("cannot spawn `{command}`: {e}"),
                        source: Some(Box::new(e)),
                    })?;
                let pid = transport.id();
                Self::start(name, transport, pid).await
            }
            McpEndpoint::Http { url, bearer_token } => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(token) = bearer_token {
                    config = config.auth_header(token.as_str());
                }
                Self::start(
                    name,
                    StreamableHttpClientTransport::from_config(config),
                    None,
                )
                .await
            }
        }
    }

    async fn start<T, E, A>(name: &Name, transport: T, pid: Option<u32>) -> Result<Self, ToolError>
    where
        T: IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let stale = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            stale: Arc::clone(&stale),
        };
        let service = handler
            .serve(transport)
            .await
            .map_err(|e| ToolError::Unavailable {
                server: name.to_string(),
                message: format!("MCP handshake failed: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            peer: service.peer().clone(),
            service: tokio::sync::Mutex::new(Some(service)),
            pid,
            stale,
            index: RwLock::new(None),
        })
    }

    fn is_alive(&self) -> bool {
        !self.peer.is_transport_closed()
    }

    async fn close(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut service) = service {
            // Closes the transport: stdin closed, then SIGTERM, then SIGKILL
            // for a child process (rmcp's graceful shutdown, bounded).
            if let Err(e) = service.close_with_timeout(Duration::from_secs(10)).await {
                tracing::warn!(error = %e, "MCP session task failed while closing");
            }
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for McpToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        let session = self.session().await?;
        Ok(self.index(&session, false).await?.specs.clone())
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        let span = tracing::info_span!(
            "mcp.call",
            server = %self.inner.name,
            tool = %name,
            args_sha256 = %args_digest(&arguments),
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .call(name, arguments, options)
            .instrument(span.clone())
            .await;
        span.record("duration_ms", started.elapsed().as_secs_f64() * 1e3);
        span.record("outcome", Outcome::of(&result).as_str());
        result
    }
}

impl fmt::Debug for McpToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpToolHost")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.endpoint)
            .field("call_timeout", &self.inner.call_timeout)
            .field("max_result_bytes", &self.inner.max_result_bytes)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl fmt::Display for McpToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.endpoint {
            Some(endpoint) => write!(f, "McpToolHost({} at {endpoint})", self.inner.name),
            None => write!(f, "McpToolHost({})", self.inner.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tool_messages_of_the_sdks() {
        assert!(says_unknown_tool("tool not found"));
        assert!(says_unknown_tool("MCP error -32602: Tool nope not found"));
        assert!(says_unknown_tool("Unknown tool: nope"));
        assert!(!says_unknown_tool("file /tmp/x not found"));
        assert!(!says_unknown_tool("division by zero"));
    }

    #[test]
    fn output_keeps_structured_and_text() {
        let out = to_output(
            Some(serde_json::json!({"a": 1})),
            &[ContentBlock::text("one"), ContentBlock::text("two")],
        );
        assert_eq!(out.structured, Some(serde_json::json!({"a": 1})));
        assert_eq!(out.text, vec!["one", "two"]);
        assert!(json_size(&out) > 10);
    }
}
