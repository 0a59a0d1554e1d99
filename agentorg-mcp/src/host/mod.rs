//! [`McpToolHost`]: one MCP server as a [`ToolHost`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use agentorg_core::tools::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};
use agentorg_core::Name;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ErrorCode, ServerResult,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::transport::IntoTransport;
use rmcp::RoleClient;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::audit::{args_digest, Outcome};
use crate::config::{redact_url, scrub_url_secrets, McpEndpoint, McpServerConfig, RespawnPolicy};
use crate::pin::Pins;

mod index;
mod session;
use index::*;
use session::*;

const BACKEND: &str = "mcp";

/// One MCP server (over stdio or streamable HTTP) as a [`ToolHost`], over the
/// [rmcp](https://docs.rs/rmcp) client.
///
/// # Behaviour
///
/// * **Connecting**: each connection attempt (spawn or reach the server, MCP
///   handshake) is bounded by
///   [`connect_timeout`](McpServerConfig::connect_timeout); an attempt that
///   takes longer fails `Unavailable` (retryable, so a
///   [`FailoverToolHost`](agentorg_core::tools::FailoverToolHost) moves on).
/// * **Listing**: all pages of `tools/list` (following cursors), cached for
///   the session; the cache is dropped when the server sends
///   `notifications/tools/list_changed`, on reconnection, and by
///   [`refresh`](Self::refresh). A tool not in the cached listing makes a
///   call list again before deciding. A listing is bounded by the call
///   timeout (`Timeout`).
/// * **Calls**: the arguments are checked against the tool's input schema
///   before anything is sent (`InvalidInput`). The result is the structured
///   content when the server gives it, plus the text blocks (and the text of
///   embedded text resources) in order.
/// * **Errors**: a tool the server does not list (in a fresh listing) is
///   `NotFound`, whether the server answers with a JSON-RPC error (rmcp
///   servers: `-32602`) or with an `is_error` result (the TypeScript SDK's
///   servers). For a tool the server lists, `-32602` is `InvalidInput` (the
///   server refused the arguments), and any other JSON-RPC error or an
///   `is_error` result is the tool's own failure, `Failed`, carrying its
///   content (the error's message for a JSON-RPC error).
/// * **Timeouts**: each call has a timeout ([`CallOptions::timeout`], else
///   the server's [`call_timeout`](McpServerConfig::call_timeout)) bounding
///   the listing it needs and the request, measured from the start of the
///   call; when it expires that one request is cancelled on the server
///   (`notifications/cancelled`) and the session stays up. A call whose
///   future is dropped before the answer (an outer timeout, a lost
///   `select!`) is cancelled on the server the same way.
/// * **Result size**: a result over
///   [`max_result_bytes`](McpServerConfig::max_result_bytes) is refused
///   (`TooLarge`).
/// * **Crashes**: when the stdio server has exited (or the HTTP session is
///   gone), the next call reconnects — respawning the process — with bounded
///   retries and exponential backoff ([`RespawnPolicy`]); when they are
///   spent the call is `Unavailable` (retryable, so a
///   [`FailoverToolHost`](agentorg_core::tools::FailoverToolHost) moves on).
///   A call already sent when the session died is not sent again, here or
///   on an equivalent server (it may have had effects): it fails with
///   [`ToolError::Other`], which is not retryable, saying the outcome is
///   unknown.
/// * **Shutdown**: a stdio server runs as the leader of its own process
///   group, so that its own children (`npx`, `uvx` launchers start the real
///   server as a grandchild) are signalled with it.
///   [`shutdown`](Self::shutdown) closes the session and waits for the
///   child to exit (stdin closed, then `SIGTERM` to the group, then
///   `SIGKILL` to the group), then kills what is left of the group;
///   dropping the host kills the group.
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
    connect_timeout: Duration,
    max_result_bytes: usize,
    respawn: RespawnPolicy,
    /// Pin checks, when the catalog pins this server's tools.
    pins: Option<Arc<Pins>>,
    /// The live session. A std `RwLock`: held only to clone or swap the
    /// `Arc`, never across an `.await`.
    current: RwLock<Option<Arc<Session>>>,
    /// Serializes (re)connection so that concurrent callers finding the
    /// session gone spawn one process, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// Set by `shutdown`: no reconnection afterwards.
    shut_down: AtomicBool,
}

impl McpToolHost {
    /// Connects to the server (spawning it for stdio) and completes the MCP
    /// handshake. Tools are listed on first use.
    ///
    /// # Errors
    /// `Unavailable` when the server cannot be started or reached (each
    /// attempt within [`connect_timeout`](McpServerConfig::connect_timeout))
    /// within the [respawn policy](McpServerConfig::respawn).
    pub async fn connect(config: McpServerConfig) -> Result<Self, ToolError> {
        let host = Self::lazy(config);
        host.session().await?;
        Ok(host)
    }

    /// A host that connects on first use (a catalog uses it so that one
    /// server being down does not stop the others from starting).
    pub fn lazy(config: McpServerConfig) -> Self {
        Self::lazy_pinned(config, None)
    }

    /// A lazy host whose tools are checked against pins (the catalog's).
    pub(crate) fn lazy_pinned(config: McpServerConfig, pins: Option<Arc<Pins>>) -> Self {
        let endpoint = Some(config.endpoint.clone());
        Self::unconnected(config, endpoint, pins)
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
        let host = Self::unconnected(config, None, None);
        let session = tokio::time::timeout(
            host.inner.connect_timeout,
            Session::start(&host.inner.name, transport, None),
        )
        .await
        .map_err(|_| host.connect_timed_out())??;
        *host.write_current() = Some(Arc::new(session));
        Ok(host)
    }

    fn unconnected(
        config: McpServerConfig,
        endpoint: Option<McpEndpoint>,
        pins: Option<Arc<Pins>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: config.name,
                endpoint,
                call_timeout: config.call_timeout,
                connect_timeout: config.connect_timeout,
                max_result_bytes: config.max_result_bytes,
                respawn: config.respawn,
                pins,
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
        let connect_timeout = self.inner.connect_timeout;
        let attempt = || async {
            tokio::time::timeout(connect_timeout, Session::open(name, &endpoint))
                .await
                .map_err(|_| self.connect_timed_out())?
        };
        let session = attempt
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

    fn connect_timed_out(&self) -> ToolError {
        self.unavailable(
            &format!(
                "no MCP session within the connect timeout ({:?})",
                self.inner.connect_timeout
            ),
            None,
        )
    }

    fn unavailable(&self, message: &str, source: Option<ServiceError>) -> ToolError {
        ToolError::Unavailable {
            server: self.inner.name.to_string(),
            message: message.to_owned(),
            source: source.map(|e| self.boxed(e)),
        }
    }

    /// `e` as an error source, its text scrubbed of the URL's secrets when
    /// the server's URL has any (the HTTP client's errors quote the URL).
    fn boxed(&self, e: ServiceError) -> Box<dyn std::error::Error + Send + Sync> {
        match &self.inner.endpoint {
            Some(McpEndpoint::Http { url, .. }) if redact_url(url) != *url => {
                scrub_url_secrets(&e.to_string(), url).into()
            }
            _ => Box::new(e),
        }
    }

    /// The session's listing, asking the server when not cached (or when
    /// `force`), within `deadline`. `tool` names the call it is for (for a
    /// `Timeout`), empty for a listing.
    async fn index(
        &self,
        session: &Session,
        force: bool,
        tool: &str,
        deadline: Deadline,
    ) -> Result<Arc<ToolIndex>, ToolError> {
        let generation = session.changes.load(Ordering::Acquire);
        if !force {
            if let Some(index) = session
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .filter(|index| index.generation == generation)
            {
                return Ok(Arc::clone(index));
            }
        }
        let tools = tokio::time::timeout_at(deadline.at, session.peer.list_all_tools())
            .await
            .map_err(|_| ToolError::Timeout {
                tool: if tool.is_empty() { "tools/list" } else { tool }.to_owned(),
                after: deadline.after,
            })?
            .map_err(|e| self.service_error("", e))?;
        // Kept with the generation seen before asking: a change notified
        // meanwhile makes the next use list again.
        let index = Arc::new(ToolIndex::new(&self.inner.name, generation, tools));
        *session
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&index));
        Ok(index)
    }

    /// Tools of the server with their pins checked (hidden when they do not
    /// match), for `list_tools` and for the catalog's lock.
    async fn listing(&self, pinned: bool) -> Result<Vec<ToolSpec>, ToolError> {
        let deadline = Deadline::after(self.inner.call_timeout);
        let session = self.session().await?;
        let mut specs = self
            .index(&session, false, "", deadline)
            .await?
            .specs
            .clone();
        if let (true, Some(pins)) = (pinned, &self.inner.pins) {
            pins.filter(&mut specs).await;
        }
        Ok(specs)
    }

    /// The tools as the server offers them, pins not applied (what a lock is
    /// written from).
    pub(crate) async fn list_unpinned(&self) -> Result<Vec<ToolSpec>, ToolError> {
        self.listing(false).await
    }

    /// Maps an rmcp error of a request about `tool` (empty for listings).
    /// `listed`: whether a fresh listing has the tool.
    fn service_error(&self, tool: &str, e: ServiceError) -> ToolError {
        match e {
            ServiceError::Timeout { timeout } => ToolError::Timeout {
                tool: tool.to_owned(),
                after: timeout,
            },
            e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)) => {
                self.unavailable("the session to the server is closed", Some(e))
            }
            e => ToolError::Other {
                backend: BACKEND,
                source: self.boxed(e),
            },
        }
    }

    /// Maps a JSON-RPC error answered to a call of `name`, given whether
    /// the tool is listed (asking for a fresh listing when the cached one
    /// has it: the server may have dropped it).
    async fn call_error(
        &self,
        session: &Session,
        name: &str,
        listed: bool,
        err: rmcp::ErrorData,
        deadline: Deadline,
    ) -> ToolError {
        let listed = listed
            && match self.index(session, true, name, deadline).await {
                Ok(index) => index.lookup(name).is_some(),
                // Cannot tell: trust the listing the call was made with.
                Err(_) => true,
            };
        match (listed, err.code) {
            (false, ErrorCode::INVALID_PARAMS) => ToolError::NotFound {
                tool: name.to_owned(),
            },
            (false, _) if says_unknown_tool(&err.message) => ToolError::NotFound {
                tool: name.to_owned(),
            },
            (true, ErrorCode::INVALID_PARAMS) => ToolError::InvalidInput {
                tool: name.to_owned(),
                message: err.message.into_owned(),
            },
            (_, code) => ToolError::Failed {
                tool: name.to_owned(),
                output: ToolOutput::text_block(format!("MCP error {}: {}", code.0, err.message)),
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
        let deadline = Deadline::after(timeout);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let session = self.session().await?;
            let mut index = self.index(&session, false, name, deadline).await?;
            if index.lookup(name).is_none() {
                // Not in the cached listing: ask again before deciding.
                index = self.index(&session, true, name, deadline).await?;
            }
            let listed = index.lookup(name);
            // Pins are checked against the definition the arguments are
            // validated with and the call is sent for; with pins, a tool
            // the server does not list is refused here.
            if let Some(pins) = &self.inner.pins {
                let matched = index
                    .pins_matched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(name);
                if !matched {
                    pins.check_call(name, listed.as_ref().map(|(spec, _)| *spec))
                        .await?;
                    index
                        .pins_matched
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name.to_owned());
                }
            }
            if let Some((_, Some(validator))) = &listed {
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
            let listed = listed.is_some();
            drop(index);
            // Without pins an unlisted tool is still sent: the server has
            // the last word, and its answer (an error or an `is_error`
            // result) is mapped to `NotFound` below.
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new(name.to_owned()).with_arguments(arguments.clone()),
            ));
            let handle = match session
                .peer
                .send_cancellable_request(request, PeerRequestOptions::no_options())
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
            // Armed until the answer arrives: on the timeout below, or when
            // this future is dropped, `notifications/cancelled` is sent for
            // this request only; the session stays up.
            let mut guard = CancelOnDrop {
                peer: session.peer.clone(),
                id: Some(handle.id.clone()),
                reason: "timed out or abandoned by the caller",
            };
            let answer = tokio::time::timeout_at(deadline.at, handle.await_response()).await;
            let answer = match answer {
                Err(_) => {
                    return Err(ToolError::Timeout {
                        tool: name.to_owned(),
                        after: timeout,
                    })
                }
                Ok(answer) => {
                    guard.disarm();
                    answer
                }
            };
            let result = match answer {
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
                Err(ServiceError::McpError(err)) => {
                    return Err(self.call_error(&session, name, listed, err, deadline).await)
                }
                // Sent, and the session died before the answer: the call
                // may have run. Not retryable, so it is not sent again,
                // here or on an equivalent server.
                Err(ServiceError::TransportClosed) => {
                    return Err(ToolError::Other {
                        backend: BACKEND,
                        source: format!(
                            "the session to MCP server `{}` closed while tool `{name}` was \
                             running: its outcome is unknown (not retried)",
                            self.inner.name
                        )
                        .into(),
                    })
                }
                Err(e) => return Err(self.service_error(name, e)),
            };
            return self.output(&session, name, listed, result, deadline).await;
        }
    }

    /// Maps a `tools/call` result.
    async fn output(
        &self,
        session: &Session,
        name: &str,
        listed: bool,
        result: CallToolResult,
        deadline: Deadline,
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
                && self
                    .index(session, true, name, deadline)
                    .await?
                    .lookup(name)
                    .is_none());
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

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for McpToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        self.listing(true).await
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
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("pinned", &self.inner.pins.is_some())
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
