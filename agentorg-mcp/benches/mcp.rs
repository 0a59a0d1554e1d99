//! A tool call through a role's view of the MCP catalog beside a raw rmcp
//! call to the same server, in the same run.
//!
//! The server is our rmcp server (`tests/mcp_support`) over streamable HTTP
//! on loopback, in the bench process; the tool is `add` (`{"a": 1, "b": 2}`
//! → structured `{"sum": 3.0}`).
//!
//! * `raw_rmcp`: an rmcp client (`().serve(StreamableHttpClientTransport)`)
//!   calling `client.call_tool(CallToolRequestParams)`.
//! * `role_scoped_host`: `McpTools::for_role(&chart, "devops")` — audit span
//!   (`AuditedToolHost`) → grants (`ScopedToolHost`) → `ToolRouter` →
//!   `McpToolHost` (cached listing, schema check, cancellable request with a
//!   timeout, result size cap, `mcp.call` span) — calling `ours.add`.
//! * `role_scoped_pinned_host`: the same with the catalog started with a
//!   lock of the granted tools (`StartOptions::with_lock`): each call also
//!   checks the tool's definition against its pin inside `McpToolHost`.
//!
//! Both sides run on the same 2-worker multi-thread tokio runtime, one call
//! at a time; sessions are opened (and the listing cached) before timing.
//! After the criterion groups, 3,000 rounds call the three in turn and the
//! medians are printed with their ratios to raw (paired: drift on a shared
//! machine hits every side alike).
//!
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/agentorg/target
//! cargo bench -p agentorg-mcp --bench mcp -- --warm-up-time 1 --measurement-time 5
//! ```

#[path = "../tests/mcp_support/mod.rs"]
mod mcp_support;

use std::hint::black_box;

use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::tools::ToolHostExt;
use agentorg_mcp::{McpCatalog, StartOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use mcp_support::TestServer;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::json;

fn call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (server, raw, role, pinned) = rt.block_on(async {
        let server = TestServer::start().await;
        let raw =
            ().serve(StreamableHttpClientTransport::from_uri(server.url.as_str()))
                .await
                .expect("raw rmcp client");
        let chart = OrgChart::builder("bench")
            .principal("founder")
            .role(
                RoleSpec::new("devops")
                    .reports_to("founder")
                    .tools(["ours.*"]),
            )
            .build()
            .expect("chart");
        let catalog =
            McpCatalog::from_toml_str(&format!("[servers.ours]\nurl = \"{}\"\n", server.url))
                .expect("catalog");
        let tools = catalog.start(StartOptions::default()).expect("tools");
        let role = tools.for_role(&chart, "devops").expect("role view");
        role.call_tool("ours.add", json!({"a": 1, "b": 2}))
            .await
            .expect("warm-up call");
        let lock = tools.lock(&chart).await.expect("lock");
        let pinned_tools = catalog
            .start(StartOptions::default().with_lock(lock))
            .expect("pinned tools");
        let pinned = pinned_tools
            .for_role(&chart, "devops")
            .expect("pinned role view");
        pinned
            .call_tool("ours.add", json!({"a": 1, "b": 2}))
            .await
            .expect("warm-up pinned call");
        (server, raw, role, pinned)
    });
    let args = json!({"a": 1, "b": 2});
    let map = args.as_object().cloned().unwrap_or_default();

    let mut group = c.benchmark_group("mcp_call");
    group.bench_function("raw_rmcp", |b| {
        b.to_async(&rt).iter(|| async {
            let out = raw
                .call_tool(CallToolRequestParams::new("add").with_arguments(map.clone()))
                .await
                .expect("raw call");
            black_box(out);
        })
    });
    group.bench_function("role_scoped_host", |b| {
        b.to_async(&rt).iter(|| async {
            let out = role
                .call_tool("ours.add", args.clone())
                .await
                .expect("host call");
            black_box(out);
        })
    });
    group.bench_function("role_scoped_pinned_host", |b| {
        b.to_async(&rt).iter(|| async {
            let out = pinned
                .call_tool("ours.add", args.clone())
                .await
                .expect("pinned host call");
            black_box(out);
        })
    });
    group.finish();

    // Paired, apart from criterion: the three calls interleaved, so drift
    // on a shared VM hits every side alike; medians and their ratios.
    let rounds = 3000;
    let mut times: [Vec<std::time::Duration>; 3] = Default::default();
    rt.block_on(async {
        for _ in 0..rounds {
            let start = std::time::Instant::now();
            let out = raw
                .call_tool(CallToolRequestParams::new("add").with_arguments(map.clone()))
                .await
                .expect("raw call");
            times[0].push(start.elapsed());
            black_box(out);
            let start = std::time::Instant::now();
            let out = role
                .call_tool("ours.add", args.clone())
                .await
                .expect("host call");
            times[1].push(start.elapsed());
            black_box(out);
            let start = std::time::Instant::now();
            let out = pinned
                .call_tool("ours.add", args.clone())
                .await
                .expect("pinned host call");
            times[2].push(start.elapsed());
            black_box(out);
        }
    });
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let [raw_t, role_t, pinned_t] = &mut times;
    let (r, h, p) = (median(raw_t), median(role_t), median(pinned_t));
    println!(
        "mcp_call paired over {rounds} interleaved rounds: medians raw_rmcp {r:.1} µs, \
         role_scoped_host {h:.1} µs ({:.3}×), role_scoped_pinned_host {p:.1} µs ({:.3}×)",
        h / r,
        p / r
    );
    drop(server);
}

criterion_group!(benches, call);
criterion_main!(benches);
