//! The tool host conformance suite.
//!
//! Every [`ToolHost`] — the in-process hosts of this crate and the MCP host
//! of `agentorg-mcp` against real MCP servers — runs these functions from its
//! tests. Each takes the host and the names under which it offers the
//! fixture tools, and panics with a message saying what broke.
//!
//! # Fixture contract
//!
//! The host under test offers two tools (under any names; pass them in, such
//! as `fx.echo` behind a router):
//!
//! * **echo** — input schema: an object with a required string property
//!   `text`; returns that text, as structured content `{"text": …}` or as
//!   its first text block.
//! * **fail** — accepts an empty object and always fails with
//!   [`ToolError::Failed`] whose output has a non-empty text block.
//!
//! The host validates arguments against the schema (`InvalidInput`), and a
//! sibling of echo, `<echo>_no_such_tool`, does not exist (`NotFound`: a
//! scoped view must grant it, so that it is not `Forbidden`). Errors name the
//! tool as the caller named it.
//!
//! [`fixture_host`] is that fixture in-process, with the tools [`ECHO`] and
//! [`FAIL`]; an MCP fixture server implements the same two tools.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use agentorg_core::conformance::tools::{self, fixture_host, ECHO, FAIL};
//!
//! tools::run_all(Arc::new(fixture_host()), ECHO, FAIL).await;
//! # }
//! ```

// Conformance checks report by panicking, like assertions in a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::tools::{CallOptions, LocalToolHost, ToolError, ToolHost, ToolHostExt, ToolOutput};

/// The name of the echo tool in [`fixture_host`].
pub const ECHO: &str = "echo";
/// The name of the failing tool in [`fixture_host`].
pub const FAIL: &str = "fail";

/// A [`LocalToolHost`] offering the fixture tools [`ECHO`] and [`FAIL`] (see
/// the [module docs](self)).
pub fn fixture_host() -> LocalToolHost {
    let host = LocalToolHost::new();
    host.register(
        ECHO,
        "Returns the text it is given",
        json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"]
        }),
        |args| async move { Ok(ToolOutput::structured(json!({"text": args["text"]}))) },
    )
    .expect("register the echo fixture")
    .register(FAIL, "Always fails", json!({"type": "object"}), |_| async {
        Err(ToolError::Failed {
            tool: FAIL.to_owned(),
            output: ToolOutput::text_block("the fail tool always fails"),
        })
    })
    .expect("register the fail fixture");
    host
}

/// Runs every check of this suite.
pub async fn run_all(host: Arc<dyn ToolHost>, echo: &str, fail: &str) {
    lists_tools_with_schemas(Arc::clone(&host), echo).await;
    calls_tool(Arc::clone(&host), echo).await;
    concurrent_calls_are_independent(Arc::clone(&host), echo).await;
    unknown_tool_is_not_found(Arc::clone(&host), echo).await;
    bad_arguments_are_invalid_input(Arc::clone(&host), echo).await;
    tool_failure_is_failed(host, fail).await;
}

/// The echo text of an output: structured `{"text": …}` or the first text
/// block.
fn echoed(out: &ToolOutput) -> Option<&str> {
    out.structured
        .as_ref()
        .and_then(|v| v.get("text"))
        .and_then(Value::as_str)
        .or_else(|| out.text())
}

/// The host lists `echo` with its schema; names are unique and non-empty,
/// and every schema is a JSON object.
pub async fn lists_tools_with_schemas(host: Arc<dyn ToolHost>, echo: &str) {
    let tools = host
        .list_tools()
        .await
        .unwrap_or_else(|e| panic!("{host}: list_tools failed: {e}"));
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        tools.len(),
        "{host}: duplicate tool names in {names:?}"
    );
    for tool in &tools {
        assert!(!tool.name.is_empty(), "{host}: a tool without a name");
        assert!(
            tool.input_schema.is_object(),
            "{host}: schema of `{}` is not an object: {}",
            tool.name,
            tool.input_schema
        );
    }
    let spec = host
        .tool_spec(echo)
        .await
        .unwrap_or_else(|e| panic!("{host}: `{echo}` not listed ({names:?}): {e}"));
    assert_eq!(
        spec.input_schema.pointer("/properties/text/type"),
        Some(&json!("string")),
        "{host}: `{echo}` schema lacks a string `text`: {}",
        spec.input_schema
    );
    assert!(
        spec.input_schema["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("text"))),
        "{host}: `{echo}` schema does not require `text`: {}",
        spec.input_schema
    );
}

/// Calling `echo` returns the text, with default options and with a
/// generous timeout.
pub async fn calls_tool(host: Arc<dyn ToolHost>, echo: &str) {
    let text = "hello, tools — ünïcode too";
    let out = host
        .call_tool(echo, json!({"text": text}))
        .await
        .unwrap_or_else(|e| panic!("{host}: calling `{echo}` failed: {e}"));
    assert_eq!(
        echoed(&out),
        Some(text),
        "{host}: `{echo}` returned {out:?}"
    );

    let opts = CallOptions::with_timeout(Duration::from_secs(30));
    let out = host
        .call_tool_opts(echo, json!({"text": "with a timeout"}), opts)
        .await
        .unwrap_or_else(|e| panic!("{host}: calling `{echo}` with a timeout failed: {e}"));
    assert_eq!(
        echoed(&out),
        Some("with a timeout"),
        "{host}: `{echo}` returned {out:?}"
    );
}

/// Concurrent calls each get their own answer.
pub async fn concurrent_calls_are_independent(host: Arc<dyn ToolHost>, echo: &str) {
    let calls = (0..16).map(|i| {
        let host = Arc::clone(&host);
        async move {
            (
                i,
                host.call_tool(echo, json!({"text": format!("call {i}")}))
                    .await,
            )
        }
    });
    for (i, result) in join_all(calls).await {
        let out = result.unwrap_or_else(|e| panic!("{host}: concurrent call {i} failed: {e}"));
        assert_eq!(
            echoed(&out),
            Some(format!("call {i}").as_str()),
            "{host}: concurrent call {i} got another call's answer: {out:?}"
        );
    }
}

/// Calling `<echo>_no_such_tool` is `NotFound`, naming it; so is looking up
/// its spec.
pub async fn unknown_tool_is_not_found(host: Arc<dyn ToolHost>, echo: &str) {
    let missing = format!("{echo}_no_such_tool");
    match host.call_tool(&missing, json!({"text": "x"})).await {
        Err(ToolError::NotFound { tool }) => {
            assert_eq!(tool, missing, "{host}: NotFound names the wrong tool");
        }
        other => panic!("{host}: calling unknown `{missing}`: expected NotFound, got {other:?}"),
    }
    match host.tool_spec(&missing).await {
        Err(ToolError::NotFound { .. }) => {}
        other => panic!("{host}: spec of unknown `{missing}`: expected NotFound, got {other:?}"),
    }
}

/// Arguments that do not match `echo`'s schema are `InvalidInput`, naming
/// the tool.
pub async fn bad_arguments_are_invalid_input(host: Arc<dyn ToolHost>, echo: &str) {
    for (what, args) in [
        ("missing `text`", json!({})),
        ("a number as `text`", json!({"text": 42})),
        ("a string instead of an object", json!("hello")),
    ] {
        match host.call_tool(echo, args).await {
            Err(ToolError::InvalidInput { tool, .. }) => {
                assert_eq!(tool, echo, "{host}: InvalidInput names the wrong tool");
            }
            other => panic!("{host}: `{echo}` with {what}: expected InvalidInput, got {other:?}"),
        }
    }
}

/// A tool's own failure is `Failed`, naming the tool, with the tool's text.
pub async fn tool_failure_is_failed(host: Arc<dyn ToolHost>, fail: &str) {
    match host.call_tool(fail, json!({})).await {
        Err(ToolError::Failed { tool, output }) => {
            assert_eq!(tool, fail, "{host}: Failed names the wrong tool");
            assert!(
                output.text().is_some_and(|t| !t.is_empty()),
                "{host}: Failed carries no text: {output:?}"
            );
        }
        other => panic!("{host}: calling `{fail}`: expected Failed, got {other:?}"),
    }
}
