//! Memory of idle agents: one org on the memory backends hosting an
//! `agent_fn` agent for every role of a wide chart, measured by the process
//! RSS (`VmRSS` of `/proc/self/status`) before anything is built, after the
//! chart, and once every agent is ready. The goal is at most 100 MB for
//! 10,000 idle agents.
//!
//! ```text
//! cargo bench --bench idle_agents
//! AGENTORG_IDLE_AGENTS=1000 cargo bench --bench idle_agents
//! ```
//!
//! A plain program (`harness = false`), not criterion: it reports figures and
//! asserts nothing about them. It exits non-zero only if the org fails to
//! start or a task fails. Linux only (it reads `/proc`).
//!
//! The chart: the principal `founder` with every role `r00000…` reporting to
//! it directly, so the principal can delegate to any of them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentorg::agent::{agent_fn, Outcome, TaskSpec};
use agentorg::chart::{OrgChart, RoleSpec};
use agentorg::hierarchy::TaskStatus;
use agentorg::runtime::Org;
use serde_json::json;

const DEFAULT_AGENTS: usize = 10_000;
const GOAL_MB: f64 = 100.0;
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const TASK_TIMEOUT: Duration = Duration::from_secs(30);

/// A line of `/proc/self/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn rss_kib() -> u64 {
    status_kib("VmRSS").unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn agents_from_env() -> Result<usize, String> {
    match std::env::var("AGENTORG_IDLE_AGENTS") {
        Err(_) => Ok(DEFAULT_AGENTS),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "AGENTORG_IDLE_AGENTS must be a positive integer, not {v:?}"
            )),
        },
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter) to every bench target;
    // this program takes no arguments and ignores them.
    let agents = match agents_from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = rt.metrics().num_workers();
    match rt.block_on(run(agents, workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_agents: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(agents: usize, workers: usize) -> Result<(), String> {
    let width = agents.saturating_sub(1).to_string().len().max(5);
    let role = |i: usize| format!("r{i:0width$}");
    let rss_before = rss_kib();

    // The chart.
    let t = Instant::now();
    let mut builder = OrgChart::builder("idle").principal("founder");
    for i in 0..agents {
        builder = builder.role(RoleSpec::new(role(i)).reports_to("founder"));
    }
    let chart = builder.build().map_err(|e| format!("chart: {e}"))?;
    let chart_time = t.elapsed();
    let rss_chart = rss_kib();

    // The org: one agent per role, started and ready.
    let t = Instant::now();
    let mut org = Org::builder(chart);
    for i in 0..agents {
        org = org.agent(
            role(i),
            agent_fn(|task| async move { Ok(Outcome::Complete(json!({ "done": task.title }))) }),
        );
    }
    let org = org.start().await.map_err(|e| format!("start: {e}"))?;
    let started = t.elapsed();
    while !org.is_ready() {
        if t.elapsed() > READY_TIMEOUT {
            org.shutdown().await;
            return Err(format!("not every agent was ready after {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = t.elapsed();
    let rss_ready = rss_kib();
    // Idle for a moment: nothing should grow while no message moves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib();

    // A few tasks, to show the agents are live.
    let founder = org.principal();
    let picks: Vec<usize> = {
        let mut p = vec![0, agents / 2, agents - 1];
        p.dedup();
        p
    };
    let mut task_lines = Vec::new();
    let mut failed = Vec::new();
    for &i in &picks {
        let t = Instant::now();
        let outcome = async {
            let d = founder
                .delegate(&role(i), TaskSpec::new(format!("ping {}", role(i))))
                .await
                .map_err(|e| e.to_string())?;
            founder
                .wait_for(&d.task_id, TASK_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match outcome {
            Ok(rec) if rec.status == TaskStatus::Completed => {
                task_lines.push(format!("{} completed in {:?}", role(i), t.elapsed()));
            }
            Ok(rec) => failed.push(format!("{} ended {}", role(i), rec.status)),
            Err(e) => failed.push(format!("{}: {e}", role(i))),
        }
    }
    let rss_tasks = rss_kib();

    let t = Instant::now();
    org.shutdown().await;
    let shutdown = t.elapsed();
    let hwm = status_kib("VmHWM").unwrap_or(0);

    let per_agent = |to: u64, from: u64| to.saturating_sub(from) as f64 * 1024.0 / agents as f64;
    // The goal is judged on the whole process at ready, in MB (10^6 bytes).
    let process_mb = rss_ready as f64 * 1024.0 / 1e6;
    println!(
        "idle agents: {agents} on the memory backends, tokio multi-thread with {workers} workers"
    );
    println!();
    println!("| step | time | RSS (MiB) | RSS growth per agent |");
    println!("|---|---:|---:|---:|");
    println!("| before anything | | {:.1} | |", mib(rss_before));
    println!(
        "| chart built (`build()`) | {chart_time:.2?} | {:.1} | {:.0} B |",
        mib(rss_chart),
        per_agent(rss_chart, rss_before)
    );
    println!("| org started (`start()` returned) | {started:.2?} | | |");
    println!(
        "| every agent ready (`is_ready()`) | {ready:.2?} | {:.1} | {:.0} B |",
        mib(rss_ready),
        per_agent(rss_ready, rss_before)
    );
    println!(
        "| idle 2 s later | | {:.1} | {:.0} B |",
        mib(rss_idle),
        per_agent(rss_idle, rss_before)
    );
    println!(
        "| after {} tasks | | {:.1} | |",
        picks.len(),
        mib(rss_tasks)
    );
    println!("| shutdown | {shutdown:.2?} | | |");
    println!();
    println!(
        "growth at ready: {:.1} MiB for {agents} agents, {:.2} KiB per agent (of which the chart {:.2} KiB); peak RSS (VmHWM) {:.1} MiB",
        mib(rss_ready.saturating_sub(rss_before)),
        per_agent(rss_ready, rss_before) / 1024.0,
        per_agent(rss_chart, rss_before) / 1024.0,
        mib(hwm),
    );
    let goal = GOAL_MB * agents as f64 / DEFAULT_AGENTS as f64;
    println!(
        "goal: process RSS <= {GOAL_MB:.0} MB for {DEFAULT_AGENTS} idle agents ({goal:.1} MB for {agents}); at ready it is {process_mb:.1} MB: {}",
        if process_mb <= goal { "met" } else { "NOT met" }
    );
    for l in &task_lines {
        println!("task: {l}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("tasks failed: {}", failed.join("; ")))
    }
}
