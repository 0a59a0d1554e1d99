//! `FirestoreStore` beside the raw `firestore` crate, on the Firestore
//! emulator, in the same run, so its overhead reads as a ratio.
//!
//! * `get`: read one task-sized document — `FirestoreStore::get` (JSON out)
//!   beside a bare `GetDocument` through the crate's gRPC client (Firestore
//!   values out).
//! * `conditional_put`: replace it on condition that it is at the version
//!   last written — `put(…, Precondition::Version(v))` (JSON in, checked
//!   against the document limits, mapped) beside a `Commit` of one update
//!   with an `update_time` precondition, built from ready Firestore values.
//! * `commit_10`: the same for ten documents in one atomic commit.
//!
//! The raw side does the least a client of the crate can do for the same
//! effect (its request is prepared before the clock starts, its answer is
//! not converted), so the ratio is the whole cost of the store: validation,
//! JSON ↔ Firestore mapping, and its bookkeeping.
//!
//! **Pairing.** The emulator slows down as a document's history grows (a
//! conditional write takes ~0.9 ms at first and ~1.3 ms after 3000 writes),
//! so benches run one after the other would compare different emulators.
//! Each iteration therefore does both sides, on documents of their own, and
//! the clock runs only for the side the bench is named after: both benches
//! of a pair see the emulator in the same state. Each bench runs on a fresh
//! project (single puts take the ten documents in turn), and after the two
//! benches of an operation it prints the paired figures over all their
//! iterations (`paired get over N iterations: …
//! store/raw …`): every iteration timed both sides back to back, so that
//! ratio does not drift with the machine's load the way two criterion
//! estimates taken a minute apart can. Iterations run one after the other as a task of a 2-worker
//! runtime; setup stays outside the timed part (`iter_custom`).
//!
//! ```text
//! cargo bench -p agentorg-firestore --bench store -- --warm-up-time 2 --measurement-time 10
//! ```
//!
//! Uses the emulator at `AGENTORG_FIRESTORE_EMULATOR` if set, else starts
//! one (agentorg-testkit); without an emulator installed it says so and
//! measures nothing. Results: `BENCHMARKS.md` at the root.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg_core::store::{DocKey, Precondition, StateStore, StateStoreExt, Version, Write};
use agentorg_firestore::firestore::gcloud_sdk::google::firestore::v1 as fs;
use agentorg_firestore::firestore::gcloud_sdk::prost_types::Timestamp;
use agentorg_firestore::firestore::gcloud_sdk::GoogleAuthMiddleware;
use agentorg_firestore::FirestoreStore;
use agentorg_testkit::FirestoreEmulator;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// A task document as the runtime writes them (about 700 bytes of JSON).
fn task(n: u64) -> Value {
    json!({
        "task_id": "01M80XC7J534XW8YK74EBKY4KS",
        "parent": "01M80XC7H73QM12MMFJ1PM3Q7C",
        "children": [],
        "open_children": [],
        "title": "Create /api/v2/analytics endpoints with ClickHouse queries",
        "task_type": "api_change",
        "input": {
            "store": "clickhouse",
            "endpoints": ["/api/v2/analytics/events", "/api/v2/analytics/funnels"],
            "notes": "Keep v1 until the dashboard has migrated."
        },
        "assigned_by": "cto",
        "assigned_to": "backend",
        "status": "in_progress",
        "sla_minutes": 120,
        "created_at": "2026-11-22T05:58:59.350252907Z",
        "started_at": "2026-11-22T05:58:59.412345678Z",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "revision": n,
    })
}

/// The same document as ready Firestore fields (what a raw client holds).
fn task_fields(n: u64) -> std::collections::HashMap<String, fs::Value> {
    use fs::value::ValueType as T;
    fn to_fs(v: &Value) -> fs::Value {
        let t = match v {
            Value::Null => T::NullValue(0),
            Value::Bool(b) => T::BooleanValue(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => T::IntegerValue(i),
                None => T::DoubleValue(n.as_f64().unwrap()),
            },
            Value::String(s) => T::StringValue(s.clone()),
            Value::Array(a) => T::ArrayValue(fs::ArrayValue {
                values: a.iter().map(to_fs).collect(),
            }),
            Value::Object(m) => T::MapValue(fs::MapValue {
                fields: m.iter().map(|(k, v)| (k.clone(), to_fs(v))).collect(),
            }),
        };
        fs::Value {
            value_type: Some(t),
        }
    }
    match to_fs(&task(n)).value_type {
        Some(T::MapValue(m)) => m.fields,
        _ => unreachable!(),
    }
}

fn timestamp(v: Version) -> Timestamp {
    Timestamp {
        seconds: (v.raw() / 1_000_000_000) as i64,
        nanos: (v.raw() % 1_000_000_000) as i32,
    }
}

fn version(ts: &Timestamp) -> Version {
    Version::from_raw(ts.seconds as u64 * 1_000_000_000 + ts.nanos as u64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Both sides of a comparison on one fresh project, over one connection:
/// the store, and the crate's gRPC client it is built on.
struct Pair {
    store: FirestoreStore,
    client: fs::firestore_client::FirestoreClient<GoogleAuthMiddleware>,
    /// The raw side's documents and their versions.
    raw: Vec<(DocKey, Version)>,
    /// The store's documents and their versions.
    stored: Vec<(DocKey, Version)>,
    revision: u64,
    /// Every iteration's (raw, store) times, timed or not.
    pairs: Vec<(Duration, Duration)>,
}

impl Pair {
    async fn new(emulator: &FirestoreEmulator, docs: usize) -> Pair {
        let store = FirestoreStore::builder()
            .with_project_id(emulator.unique_project())
            .with_emulator(emulator.host_port())
            .build()
            .await
            .expect("connect");
        let client = store.db().client().get();
        let mut sides = [Vec::new(), Vec::new()];
        for (side, prefix) in sides.iter_mut().zip(["raw", "store"]) {
            for i in 0..docs {
                let k = DocKey::new("agentorg/bench/tasks", format!("{prefix}{i}")).unwrap();
                let v = store.put(&k, task(0), Precondition::None).await.unwrap();
                side.push((k, v));
            }
        }
        let [raw, stored] = sides;
        Pair {
            store,
            client,
            raw,
            stored,
            revision: 0,
            pairs: Vec::new(),
        }
    }

    async fn raw_get(&mut self) -> Duration {
        let request = fs::GetDocumentRequest {
            name: self.store.document_name(&self.raw[0].0),
            ..Default::default()
        };
        let start = Instant::now();
        let doc = self.client.get_document(request).await.unwrap();
        let elapsed = start.elapsed();
        black_box(doc);
        elapsed
    }

    async fn store_get(&mut self) -> Duration {
        let start = Instant::now();
        let doc = self.store.get(&self.stored[0].0).await.unwrap().unwrap();
        let elapsed = start.elapsed();
        black_box(doc);
        elapsed
    }

    /// Which documents the next commit of `n` writes: all ten for ten, else
    /// the next in turn (so no single document's history grows too long).
    fn targets(&self, n: usize) -> std::ops::Range<usize> {
        if n >= self.raw.len() {
            0..self.raw.len()
        } else {
            let first = (self.pairs.len() * n) % self.raw.len();
            first..(first + n).min(self.raw.len())
        }
    }

    /// One commit of conditional puts to `n` raw documents.
    async fn raw_puts(&mut self, n: usize) -> Duration {
        self.revision += 1;
        let targets = self.targets(n);
        let request = fs::CommitRequest {
            database: self.store.database_path().to_owned(),
            writes: self.raw[targets.clone()]
                .iter()
                .map(|(k, v)| fs::Write {
                    current_document: Some(fs::Precondition {
                        condition_type: Some(fs::precondition::ConditionType::UpdateTime(
                            timestamp(*v),
                        )),
                    }),
                    operation: Some(fs::write::Operation::Update(fs::Document {
                        name: self.store.document_name(k),
                        fields: task_fields(self.revision),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let start = Instant::now();
        let out = self.client.commit(request).await.unwrap().into_inner();
        let elapsed = start.elapsed();
        for ((_, v), w) in self.raw[targets].iter_mut().zip(&out.write_results) {
            *v = version(w.update_time.as_ref().unwrap());
        }
        elapsed
    }

    /// The same through the store (`put` for one, `commit` for several).
    async fn store_puts(&mut self, n: usize) -> Duration {
        self.revision += 1;
        let targets = self.targets(n);
        let values: Vec<Value> = (0..n).map(|_| task(self.revision)).collect();
        if n == 1 {
            let (k, v) = &self.stored[targets.start];
            let value = values.into_iter().next().unwrap();
            let start = Instant::now();
            let new = self
                .store
                .put(k, value, Precondition::Version(*v))
                .await
                .unwrap();
            let elapsed = start.elapsed();
            self.stored[targets.start].1 = new;
            return elapsed;
        }
        let writes: Vec<Write> = self.stored[targets.clone()]
            .iter()
            .zip(values)
            .map(|((k, v), value)| Write::put(k.clone(), value, Precondition::Version(*v)))
            .collect();
        let start = Instant::now();
        let out = self.store.commit(writes).await.unwrap();
        let elapsed = start.elapsed();
        for ((_, v), new) in self.stored[targets].iter_mut().zip(out) {
            *v = new.unwrap();
        }
        elapsed
    }
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Puts(usize),
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Raw,
    Store,
}

/// `iters` iterations, each doing the operation on both sides (in turn
/// first), timing `timed` only.
async fn paired(pair: Arc<Mutex<Pair>>, op: Op, timed: Side, iters: u64) -> Duration {
    let mut pair = pair.lock().await;
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let sides = if i % 2 == 0 {
            [Side::Raw, Side::Store]
        } else {
            [Side::Store, Side::Raw]
        };
        let mut times = (Duration::ZERO, Duration::ZERO);
        for side in sides {
            let took = match (op, side) {
                (Op::Get, Side::Raw) => pair.raw_get().await,
                (Op::Get, Side::Store) => pair.store_get().await,
                (Op::Puts(n), Side::Raw) => pair.raw_puts(n).await,
                (Op::Puts(n), Side::Store) => pair.store_puts(n).await,
            };
            match side {
                Side::Raw => times.0 = took,
                Side::Store => times.1 = took,
            }
            if side == timed {
                total += took;
            }
        }
        pair.pairs.push(times);
    }
    total
}

/// The paired comparison over every iteration of both benches of an
/// operation: mean and median of each side, and their ratios.
fn report(name: &str, pairs: &[(Duration, Duration)]) {
    let n = pairs.len();
    if n == 0 {
        return;
    }
    let mean = |f: fn(&(Duration, Duration)) -> Duration| {
        pairs.iter().map(f).sum::<Duration>().as_secs_f64() / n as f64
    };
    let median = |f: fn(&(Duration, Duration)) -> Duration| {
        let mut v: Vec<Duration> = pairs.iter().map(f).collect();
        v.sort();
        v[n / 2].as_secs_f64()
    };
    let (raw_mean, store_mean) = (mean(|p| p.0), mean(|p| p.1));
    let (raw_median, store_median) = (median(|p| p.0), median(|p| p.1));
    println!(
        "paired {name} over {n} iterations: raw mean {:.1} µs, median {:.1} µs; \
         store mean {:.1} µs, median {:.1} µs; store/raw {:.3} (means), {:.3} (medians)",
        raw_mean * 1e6,
        raw_median * 1e6,
        store_mean * 1e6,
        store_median * 1e6,
        store_mean / raw_mean,
        store_median / raw_median,
    );
}

fn bench(c: &mut Criterion) {
    let emulator = match FirestoreEmulator::shared() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIPPED the Firestore benches: {e}");
            return;
        }
    };
    let rt = runtime();
    let mut g = c.benchmark_group("firestore");
    for (name, op) in [
        ("get", Op::Get),
        ("conditional_put", Op::Puts(1)),
        ("commit_10", Op::Puts(10)),
    ] {
        let mut pairs = Vec::new();
        for (side_name, side) in [("raw", Side::Raw), ("store", Side::Store)] {
            // A fresh project for each bench: documents without history.
            let pair = Arc::new(Mutex::new(rt.block_on(Pair::new(&emulator, 10))));
            g.bench_function(format!("{name}/{side_name}"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let pair = Arc::clone(&pair);
                    async move {
                        tokio::spawn(paired(pair, op, side, iters))
                            .await
                            .expect("the bench task panicked")
                    }
                });
            });
            pairs.append(&mut rt.block_on(pair.lock()).pairs);
        }
        report(name, &pairs);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
