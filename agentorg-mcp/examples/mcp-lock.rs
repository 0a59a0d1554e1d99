//! Writes the lock file of an org's MCP tools: each tool granted to a role of
//! the chart, with the hashes of its description and input schema as the
//! live servers define them now.
//!
//! ```text
//! cargo run -p agentorg-mcp --example mcp-lock -- examples/tools.toml examples/genbrain.toml > tools.lock
//! ```
//!
//! Review the tools' definitions before pinning them. Load the lock with
//! `ToolLock::load` and pass it to `McpCatalog::start` in
//! `StartOptions::with_lock`: a tool whose definition later differs is
//! refused and the principal alerted.
use std::process::ExitCode;

use agentorg_core::chart::OrgChart;
use agentorg_mcp::{McpCatalog, StartOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [catalog, chart] = args.as_slice() else {
        eprintln!("usage: mcp-lock CATALOG.toml CHART.toml > tools.lock");
        return ExitCode::from(2);
    };
    match run(catalog, chart).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-lock: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(catalog: &str, chart: &str) -> Result<(), Box<dyn std::error::Error>> {
    let chart = OrgChart::from_toml_file(chart)?;
    let tools = McpCatalog::load(catalog)?.start(StartOptions::default())?;
    let lock = tools.lock(&chart).await;
    tools.shutdown().await;
    let lock = lock?;
    eprintln!("mcp-lock: pinned {} tools", lock.tools.len());
    print!("{}", lock.to_toml_string());
    Ok(())
}
