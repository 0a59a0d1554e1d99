//! A chain's overhead per step, beside a delegation round trip and a raw
//! baseline, in the same run, on the memory transport and store.
//!
//! * `chain_memory/runtime_per_step`: the principal starts a 5-step chain
//!   (each step on its own role, each completing at once) and the fifth
//!   step's agent is called; the time of one run divided by 5: what moving
//!   a chain one step costs (the step's message claimed, the agent called,
//!   the run document compared-and-set with the next step's message in the
//!   same commit, published from the outbox).
//! * `chain_memory/mpsc_per_hop`: the raw baseline, a JSON value passed
//!   along 5 `mpsc` channels by 4 tokio tasks; one pass divided by its 4
//!   task-to-task hops.
//! * `chain_memory/delegation_round_trip`: `Principal::delegate` → the
//!   worker's handler → the result in the principal's inbox (two hops, as
//!   in `benches/delegation.rs`).
//!
//! ```text
//! cargo bench --bench chain -- --warm-up-time 1 --measurement-time 5
//! ```

use std::sync::Arc;
use std::time::Instant;

use agentorg::chart::{SagaSpec, StepSpec};
use agentorg::prelude::*;
use agentorg::runtime::PrincipalStream;
use agentorg::store::MemoryStore;
use agentorg::transport::MemoryTransport;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex};

const STEPS: u32 = 5;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// founder → worker, s1 … s5; the chain `five` runs one step on each of
/// s1 … s5.
fn chart() -> OrgChart {
    let mut b = OrgChart::builder("bench")
        .principal("founder")
        .role(RoleSpec::new("worker").reports_to("founder"));
    let mut saga = SagaSpec::new("five");
    for i in 1..=STEPS {
        b = b.role(RoleSpec::new(format!("s{i}")).reports_to("founder"));
        saga = saga.step(StepSpec::new(format!("step{i}"), format!("s{i}")));
    }
    b.saga(saga).build().expect("a valid chart")
}

/// A step that completes at once; the last one says so.
struct Step(Option<mpsc::UnboundedSender<()>>);

#[async_trait]
impl Agent for Step {
    async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(json!({ "done": task.title })))
    }

    async fn on_saga_step(&self, _cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        if let Some(tx) = &self.0 {
            let _ = tx.send(());
        }
        Ok(json!({ "step": step.index }))
    }
}

async fn org() -> (Org, PrincipalStream, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut builder = Org::builder(chart())
        .transport(Arc::new(MemoryTransport::new()))
        .store(Arc::new(MemoryStore::new()))
        .agent("worker", Step(None));
    for i in 1..=STEPS {
        let last = (i == STEPS).then(|| tx.clone());
        builder = builder.agent(format!("s{i}"), Step(last));
    }
    let org = builder.start().await.expect("the org starts");
    let inbox = org
        .principal()
        .inbox()
        .await
        .expect("the principal's inbox");
    (org, inbox, rx)
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("chain_memory");

    group.bench_function("mpsc_per_hop", |b| {
        // 5 tasks in a line; the first channel's sender and the last
        // channel's receiver stay with the bench.
        let (first_tx, mut rx) = mpsc::channel::<Value>(1);
        for _ in 1..STEPS {
            let (tx, next_rx) = mpsc::channel::<Value>(1);
            rt.spawn(async move {
                while let Some(v) = rx.recv().await {
                    if tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            rx = next_rx;
        }
        let last = Arc::new(Mutex::new(rx));
        b.to_async(&rt).iter_custom(|iters| {
            let (first_tx, last) = (first_tx.clone(), Arc::clone(&last));
            async move {
                let mut last = last.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    first_tx.send(json!({ "run": 1 })).await.expect("sent");
                    last.recv().await.expect("passed along");
                }
                start.elapsed() / (STEPS - 1)
            }
        });
    });

    let (org, inbox, done) = rt.block_on(org());
    let org = Arc::new(org);
    let (inbox, done) = (Arc::new(Mutex::new(inbox)), Arc::new(Mutex::new(done)));
    group.bench_function("runtime_per_step", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (org, done) = (Arc::clone(&org), Arc::clone(&done));
            async move {
                let mut done = done.lock().await;
                let founder = org.principal();
                let start = Instant::now();
                for _ in 0..iters {
                    founder
                        .start_saga("five", &json!({}))
                        .await
                        .expect("started");
                    done.recv().await.expect("the last step ran");
                }
                start.elapsed() / STEPS
            }
        });
    });
    group.bench_function("delegation_round_trip", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (org, inbox) = (Arc::clone(&org), Arc::clone(&inbox));
            async move {
                let mut inbox = inbox.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    let task = org
                        .principal()
                        .delegate("worker", TaskSpec::new("ping"))
                        .await
                        .expect("delegated");
                    while let Some(env) = inbox.next().await {
                        let env = env.expect("a readable result");
                        if env.correlation_id.as_ref() == Some(&task.task_id) {
                            break;
                        }
                    }
                }
                start.elapsed()
            }
        });
    });
    group.finish();
    if let Ok(org) = Arc::try_unwrap(org) {
        rt.block_on(org.shutdown());
    }
}

criterion_group!(benches, memory);
criterion_main!(benches);
