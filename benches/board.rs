//! A blackboard artifact update's round trip beside a bare conditional
//! write to the same store, in the same run: on the memory store, and (with
//! `--features firestore`) on the Firestore emulator. The transport is the
//! memory one in both, so the Firestore figures are the store's.
//!
//! * `board_<store>/bare_conditional_write`: the baseline, the least a
//!   read-modify-write of one document does — `get` it, then `put` it at the
//!   version read (`Precondition::Version`).
//! * `board_<store>/delegation_round_trip`: `Principal::delegate` → the
//!   owner's handler completes at once → the result in the principal's
//!   inbox.
//! * `board_<store>/update_round_trip`: the same, and the handler updates
//!   its artifact (`Context::update_artifact_with`: the artifact read, then
//!   compared-and-set with a history record, in the commit of the
//!   handler's outcome).
//!
//! **Paired.** Every iteration runs all three, back to back, in an order
//! that rotates, and each bench's clock runs for its own path only; after
//! the three benches of a store the bench prints the paired means and
//! medians over all their iterations, and the ratios to read: the update's
//! round trip ÷ the bare write, and what the update adds to a delegation
//! (update − delegation) ÷ the bare write. (The emulator slows down as a
//! document's history grows, and this machine's load moves; pairing keeps
//! the three paths on the same emulator at the same moment.)
//!
//! ```text
//! cargo bench --bench board -- --warm-up-time 1 --measurement-time 5
//! cargo bench --bench board --features firestore -- --warm-up-time 2 --measurement-time 10
//! ```
//!
//! The Firestore part uses the emulator at `AGENTORG_FIRESTORE_EMULATOR` if
//! set, else starts one (agentorg-testkit); without one it says so and
//! measures only memory. Results: `BENCHMARKS.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg::blackboard::{ArtifactSpec, ArtifactUpdate, ProjectSpec};
use agentorg::prelude::*;
use agentorg::runtime::PrincipalStream;
use agentorg::store::{DocKey, MemoryStore, Precondition, StateStore, StateStoreExt, Write};
use agentorg::transport::MemoryTransport;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

const PATHS: [&str; 3] = [
    "bare_conditional_write",
    "delegation_round_trip",
    "update_round_trip",
];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// founder → owner.
fn chart() -> OrgChart {
    OrgChart::builder("bench")
        .principal("founder")
        .role(RoleSpec::new("owner").reports_to("founder"))
        .build()
        .expect("a valid chart")
}

/// Completes at once; with input `"update"`, after counting in its
/// artifact's content.
struct Owner;

#[async_trait]
impl Agent for Owner {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        if task.input == "update" {
            cx.update_artifact_with("p", "doc", |a| {
                let n = a.content.as_ref().and_then(|c| c["n"].as_u64());
                ArtifactUpdate::content(json!({ "n": n.unwrap_or(0) + 1 }))
            })
            .await?;
        }
        Ok(Outcome::Complete(json!(null)))
    }
}

/// One store's three paths, and every iteration's times.
struct Bench {
    org: Org,
    inbox: Mutex<PrincipalStream>,
    store: Arc<dyn StateStore>,
    /// The baseline's own document.
    key: DocKey,
    /// Per iteration, the three paths' times (in `PATHS` order).
    times: std::sync::Mutex<Vec<[Duration; 3]>>,
    rotation: std::sync::atomic::AtomicUsize,
}

impl Bench {
    async fn new(store: Arc<dyn StateStore>) -> Self {
        let org = Org::builder(chart())
            .transport(Arc::new(MemoryTransport::new()))
            .store(Arc::clone(&store))
            .agent("owner", Owner)
            .start()
            .await
            .expect("the org starts");
        let founder = org.principal();
        founder
            .create_project(&ProjectSpec::new("p").artifact(ArtifactSpec::new("doc", "owner")))
            .await
            .expect("the project");
        let inbox = founder.inbox().await.expect("the principal's inbox");
        let key = DocKey::new("bench/baseline/docs", "doc").expect("a key");
        store
            .put(&key, json!({ "n": 0 }), Precondition::MustNotExist)
            .await
            .expect("the baseline's document");
        Self {
            org,
            inbox: Mutex::new(inbox),
            store,
            key,
            times: std::sync::Mutex::new(Vec::new()),
            rotation: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The baseline: get, then put at the version read.
    async fn bare(&self) -> Duration {
        let start = Instant::now();
        let doc = self
            .store
            .get(&self.key)
            .await
            .expect("a get")
            .expect("there");
        let n = doc.value["n"].as_u64().unwrap_or(0);
        let write = Write::put(
            self.key.clone(),
            json!({ "n": n + 1 }),
            Precondition::Version(doc.version),
        );
        self.store
            .commit(vec![write])
            .await
            .expect("a conditional write");
        start.elapsed()
    }

    /// A delegation to the owner, its input `input`, until its result is in.
    async fn round_trip(&self, input: &str) -> Duration {
        let mut inbox = self.inbox.lock().await;
        let start = Instant::now();
        let task = self
            .org
            .principal()
            .delegate("owner", TaskSpec::new("work").input(json!(input)))
            .await
            .expect("delegated");
        while let Some(env) = inbox.next().await {
            let env = env.expect("a readable result");
            if env.correlation_id.as_ref() == Some(&task.task_id) {
                break;
            }
        }
        start.elapsed()
    }

    /// All three paths once, in a rotating order: their times.
    async fn iteration(&self) -> [Duration; 3] {
        let first = self
            .rotation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = [Duration::ZERO; 3];
        for k in 0..3 {
            let path = (first + k) % 3;
            out[path] = match path {
                0 => self.bare().await,
                1 => self.round_trip("ping").await,
                _ => self.round_trip("update").await,
            };
        }
        self.times.lock().expect("times").push(out);
        out
    }

    /// The paired figures over every iteration so far.
    fn report(&self, name: &str) {
        let times = self.times.lock().expect("times").clone();
        if times.is_empty() {
            return;
        }
        let stat = |i: usize| {
            let mut v: Vec<f64> = times.iter().map(|t| t[i].as_secs_f64() * 1e6).collect();
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (mean, v[v.len() / 2])
        };
        let [bare, delegation, update] = [stat(0), stat(1), stat(2)];
        for (path, (mean, median)) in PATHS.iter().zip([bare, delegation, update]) {
            println!("paired {name}/{path}: mean {mean:.1} µs, median {median:.1} µs");
        }
        println!(
            "paired {name} over {} iterations: update ÷ bare {:.2} (means) / {:.2} (medians); \
             (update − delegation) ÷ bare {:.2} / {:.2}",
            times.len(),
            update.0 / bare.0,
            update.1 / bare.1,
            (update.0 - delegation.0) / bare.0,
            (update.1 - delegation.1) / bare.1,
        );
    }
}

fn bench_store(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn StateStore>) {
    let bench = Arc::new(rt.block_on(Bench::new(store)));
    let mut group = c.benchmark_group(name);
    for (i, path) in PATHS.iter().enumerate() {
        group.bench_function(*path, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let bench = Arc::clone(&bench);
                async move {
                    let mut own = Duration::ZERO;
                    for _ in 0..iters {
                        own += bench.iteration().await[i];
                    }
                    own
                }
            });
        });
    }
    group.finish();
    bench.report(name);
    if let Ok(bench) = Arc::try_unwrap(bench) {
        rt.block_on(bench.org.shutdown());
    }
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    bench_store(c, &rt, "board_memory", Arc::new(MemoryStore::new()));
}

#[cfg(feature = "firestore")]
fn firestore(c: &mut Criterion) {
    let emulator = match agentorg_testkit::FirestoreEmulator::shared() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("board_firestore: no Firestore emulator ({e}); measuring memory only");
            return;
        }
    };
    let rt = runtime();
    let store = rt.block_on(async {
        agentorg::firestore::FirestoreStore::builder()
            .with_project_id(emulator.unique_project())
            .with_emulator(emulator.host_port())
            .build()
            .await
            .expect("a store on the emulator")
    });
    bench_store(c, &rt, "board_firestore", Arc::new(store));
}

#[cfg(not(feature = "firestore"))]
fn firestore(_c: &mut Criterion) {
    eprintln!(
        "board_firestore: rebuild with `--features firestore` to measure the Firestore emulator"
    );
}

criterion_group!(benches, memory, firestore);
criterion_main!(benches);
