//! An rmcp server of ours for the MCP host tests and bench, served over
//! streamable HTTP on a loopback port (or over any transport).
//!
//! Tools: `add` (structured result), `slow` (waits, and counts the
//! cancellations it sees), `big` (a text result of the asked size), `fail`
//! (an `is_error` result whose text says "not found"), `echo` (its
//! description depends on [`TestServer::start_with_description`], for
//! pinning). `tools/list` is paginated, two tools per page. Unknown tools
//! are answered as rmcp's own tool router does: error -32602 "tool not found".
//! Setting [`Probe::extra`] adds a tool `extra` to the listing without
//! notifying `list_changed`. [`TestServer::start_with_bearer`] refuses
//! requests without the right `Authorization: Bearer` header.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

pub const ECHO_DESCRIPTION: &str = "Echoes its text back";

#[derive(Debug, Default)]
pub struct Probe {
    /// Calls of `slow` that saw their request cancelled.
    pub cancelled: AtomicUsize,
    /// Calls of `slow` that started.
    pub slow_started: AtomicUsize,
    /// Calls of `slow` that ran to the end (not cancelled).
    pub slow_completed: AtomicUsize,
    /// Whether `extra` is listed (changed silently: no `list_changed`).
    pub extra: AtomicBool,
    /// Requests refused for a missing or wrong bearer token.
    pub unauthorized: AtomicUsize,
    /// Calls of any tool.
    pub calls: AtomicUsize,
}

#[derive(Clone)]
pub struct Server {
    pub probe: Arc<Probe>,
    echo_description: Arc<str>,
}

impl Server {
    pub fn new(echo_description: &str) -> Self {
        Self {
            probe: Arc::default(),
            echo_description: echo_description.into(),
        }
    }

    fn tools(&self) -> Vec<Tool> {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut tools = vec![
            Tool::new(
                "add",
                "Adds two numbers",
                obj(
                    json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
                ),
            ),
            Tool::new(
                "slow",
                "Waits `ms` milliseconds",
                obj(
                    json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]}),
                ),
            ),
            Tool::new(
                "big",
                "Returns a text of `bytes` bytes",
                obj(
                    json!({"type": "object", "properties": {"bytes": {"type": "integer", "minimum": 0}}, "required": ["bytes"]}),
                ),
            ),
            Tool::new("fail", "Always fails", obj(json!({"type": "object"}))),
            Tool::new(
                "echo",
                self.echo_description.to_string(),
                obj(
                    json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
                ),
            ),
        ];
        if self.probe.extra.load(Ordering::SeqCst) {
            tools.push(Tool::new(
                "extra",
                "Added later, without notice",
                obj(json!({"type": "object"})),
            ));
        }
        tools
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        const PAGE: usize = 2;
        let tools = self.tools();
        let start: usize = request
            .and_then(|r| r.cursor)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let page: Vec<Tool> = tools.iter().skip(start).take(PAGE).cloned().collect();
        let mut result = ListToolsResult::with_all_items(page);
        if start + PAGE < tools.len() {
            result.next_cursor = Some((start + PAGE).to_string());
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.probe.calls.fetch_add(1, Ordering::SeqCst);
        let args = request.arguments.unwrap_or_default();
        let num = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let result = match request.name.as_ref() {
            // A listed tool refusing arguments its schema allows.
            "add" if num("a") > 1e12 => {
                return Err(ErrorData::invalid_params("a is too large", None))
            }
            // A listed tool failing with a JSON-RPC error.
            "big" if args.get("bytes").and_then(Value::as_u64) == Some(13) => {
                return Err(ErrorData::internal_error("unlucky size", None))
            }
            "add" => {
                let sum = num("a") + num("b");
                let mut r = CallToolResult::structured(json!({ "sum": sum }));
                r.content = vec![ContentBlock::text(format!("{sum}"))];
                r
            }
            "slow" => {
                self.probe.slow_started.fetch_add(1, Ordering::SeqCst);
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::select! {
                    _ = context.ct.cancelled() => {
                        self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
                        CallToolResult::error(vec![ContentBlock::text("cancelled")])
                    }
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                        self.probe.slow_completed.fetch_add(1, Ordering::SeqCst);
                        CallToolResult::success(vec![ContentBlock::text(format!("slept {ms} ms"))])
                    }
                }
            }
            "big" => {
                let n = args.get("bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
                CallToolResult::success(vec![ContentBlock::text("x".repeat(n))])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text(
                "the tool failed on purpose: record not found",
            )]),
            "extra" if self.probe.extra.load(Ordering::SeqCst) => {
                CallToolResult::success(vec![ContentBlock::text("extra ran")])
            }
            "echo" => CallToolResult::success(vec![ContentBlock::text(
                args.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )]),
            _ => return Err(ErrorData::invalid_params("tool not found", None)),
        };
        Ok(result.into())
    }
}

/// Our rmcp server on `http://127.0.0.1:PORT/mcp`; stops on drop.
pub struct TestServer {
    pub url: String,
    pub probe: Arc<Probe>,
    ct: CancellationToken,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with_description(ECHO_DESCRIPTION).await
    }

    pub async fn start_with_description(echo_description: &str) -> Self {
        Self::serve(echo_description, None).await
    }

    /// A server that answers only requests bearing `Authorization: Bearer <token>`.
    pub async fn start_with_bearer(token: &str) -> Self {
        Self::serve(ECHO_DESCRIPTION, Some(token.to_owned())).await
    }

    async fn serve(echo_description: &str, bearer: Option<String>) -> Self {
        let server = Server::new(echo_description);
        let probe = Arc::clone(&server.probe);
        let ct = CancellationToken::new();
        let config =
            StreamableHttpServerConfig::default().with_cancellation_token(ct.child_token());
        let service: StreamableHttpService<Server, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
        let mut router = axum::Router::new().nest_service("/mcp", service);
        if let Some(token) = bearer {
            let expected = format!("Bearer {token}");
            let probe = Arc::clone(&probe);
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let ok = request
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        == Some(expected.as_str());
                    let probe = Arc::clone(&probe);
                    async move {
                        if ok {
                            next.run(request).await
                        } else {
                            probe.unauthorized.fetch_add(1, Ordering::SeqCst);
                            axum::http::StatusCode::UNAUTHORIZED.into_response()
                        }
                    }
                },
            ));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let stop = ct.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled_owned().await })
                .await;
        });
        Self {
            url: format!("http://{addr}/mcp"),
            probe,
            ct,
        }
    }

    pub fn stop(&self) {
        self.ct.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.ct.cancel();
    }
}
