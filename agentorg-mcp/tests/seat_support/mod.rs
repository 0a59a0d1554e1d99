//! An rmcp client's calls on a seat, shared by the seat tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use agentorg_core::chart::OrgChart;
use agentorg_mcp::seat::{Seat, SeatOptions, SeatServer};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::RunningService;
use rmcp::{RoleClient, RoleServer, ServiceExt};
use serde_json::{json, Value};

/// A client of a seat.
pub type Client = RunningService<RoleClient, ClientConfig>;
/// A test's result.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How long a test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Calls the tool `name` with `args`; a protocol error panics.
pub async fn call(client: &Client, name: &'static str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(name)
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    match client.call_tool(params).await {
        Ok(r) => r,
        Err(e) => panic!("{name}: protocol error {e}"),
    }
}

/// The structured content of a successful call.
pub async fn ok(client: &Client, name: &'static str, args: Value) -> Value {
    let r = call(client, name, args).await;
    assert_ne!(r.is_error, Some(true), "{name} was refused: {r:?}");
    r.structured_content.unwrap_or(Value::Null)
}

/// The kind and message of a refused call.
pub async fn refused(client: &Client, name: &'static str, args: Value) -> (String, String) {
    let r = call(client, name, args).await;
    assert_eq!(r.is_error, Some(true), "{name} should be refused: {r:?}");
    let err = r
        .structured_content
        .as_ref()
        .map(|s| s["error"].clone())
        .unwrap_or(Value::Null);
    let text = r
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    assert_eq!(err["message"].as_str(), Some(text.as_str()));
    (err["kind"].as_str().unwrap_or("").to_owned(), text)
}

/// The next event of the seat, long-polling until one comes (within the
/// deadline).
pub async fn next_event(client: &Client) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let e = ok(client, "wait_for_event", json!({"timeout_secs": 5})).await;
        if e["event"] != "none" {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event within {DEADLINE:?}"
        );
    }
}

/// The seat of `role` in `chart`, with the tests' timeouts: a client has
/// [`DEADLINE`] to take an offer and between calls; `wait_for_event` waits
/// at most 5 s.
pub fn test_seat(chart: OrgChart, role: &str) -> Seat {
    let options = SeatOptions::default()
        .with_pickup_timeout(DEADLINE)
        .with_idle_timeout(DEADLINE)
        .with_max_wait(Duration::from_secs(5));
    match Seat::builder(chart, role).options(options).build() {
        Ok(s) => s,
        Err(e) => panic!("seat: {e}"),
    }
}

/// A client of `seat` over an in-process pipe, and the served session.
pub async fn client_of(seat: &Seat) -> (Client, RunningService<RoleServer, SeatServer>) {
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    let (server, client) = tokio::join!(
        seat.server().serve(server_io),
        ClientConfig::default().serve(client_io)
    );
    match (server, client) {
        (Ok(s), Ok(c)) => (c, s),
        (s, c) => panic!("MCP session: server {:?}, client {:?}", s.err(), c.err()),
    }
}
