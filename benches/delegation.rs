//! Delegation round trip: the principal delegates a task, the agent handles
//! it, the result comes back to the principal — each beside its raw baseline
//! in the same run.
//!
//! * `delegation_memory/runtime`: `Principal::delegate` → the agent's
//!   handler → the result envelope read from the principal's inbox, on the
//!   memory transport and store; beside `delegation_memory/mpsc_ping_pong`, a
//!   tokio `mpsc` ping-pong (the task there, the result back).
//! * with `--features nats`, `delegation_nats/runtime`: the same on NATS
//!   JetStream with the memory store, beside `delegation_nats/raw_async_nats`
//!   making the same hops with raw async-nats (publish the task with a
//!   message id and await its ack, consume it from a long-lived `messages()`
//!   stream with async-nats's default prefetch, publish the result the same
//!   way, ack the task once the result is stored, consume the result, ack).
//!   `AGENTORG_BENCH_BATCH` sets the runtime transport's pull batch
//!   (default: the transport's default).
//!
//! After the criterion groups each runtime round trip is measured again,
//! apart from criterion, with CPU times and wire counters; on NATS the
//! runtime and the same-work raw path are also timed in 40 alternating
//! rounds of 100 round trips, and the median of the rounds' ratios printed
//! (the steadiest figure of the ratio: see BENCHMARKS.md), then the p50 of
//! single round trips. All are skipped under `--profile-time`, so that a
//! profiler sees only the benchmark criterion's filter picks.
//!
//! `AGENTORG_BENCH_ON_WORKER` runs each timed loop as a task of the
//! runtime; `AGENTORG_BENCH_WORKERS` sets the runtime's worker threads
//! (default 2). `AGENTORG_BENCH_STEPS=1` then times each round trip step by
//! step (the kernel's step events, `agentorg::runtime::STEPS`, and the raw
//! path's own marks) over a stretch of its own and prints each step's
//! offset from the start (`support/steps.rs`); with
//! `AGENTORG_BENCH_STEPS_DUMP=FILE` it also writes each step event there,
//! for `support/wire_timeline.py` to join with a packet capture.
//!
//! ```text
//! cargo bench --bench delegation -- --warm-up-time 1 --measurement-time 5
//! cargo bench --bench delegation --features nats -- --warm-up-time 1 --measurement-time 5
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg::prelude::*;
use agentorg::runtime::PrincipalStream;
use agentorg::store::MemoryStore;
use agentorg::transport::{MemoryTransport, Transport};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde_json::json;
use tokio::runtime::Runtime;

#[path = "support/meter.rs"]
mod meter;
#[path = "support/steps.rs"]
mod steps;

use meter::{print_spent, Meter};

/// The bench's tokio runtime: 2 worker threads, or
/// `AGENTORG_BENCH_WORKERS`.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::env::var("AGENTORG_BENCH_WORKERS").map_or(2, |w| {
            w.parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .expect("AGENTORG_BENCH_WORKERS: a number of threads, at least 1")
        }))
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn chart(org: &str) -> OrgChart {
    OrgChart::builder(org)
        .principal("founder")
        .role(RoleSpec::new("worker").reports_to("founder"))
        .build()
        .expect("a valid chart")
}

/// An org with one worker that completes every task at once, and the
/// principal's inbox (where results arrive).
async fn org(transport: Arc<dyn Transport>, org: &str) -> (Org, PrincipalStream) {
    let org = Org::builder(chart(org))
        .transport(transport)
        .store(Arc::new(MemoryStore::new()))
        .agent(
            "worker",
            agent_fn(|task| async move { Ok(Outcome::Complete(json!({ "done": task.title }))) }),
        )
        .start()
        .await
        .expect("the org starts");
    let inbox = org
        .principal()
        .inbox()
        .await
        .expect("the principal's inbox");
    (org, inbox)
}

/// One delegation there and back: delegate, then the result envelope.
async fn round_trip(org: &Org, inbox: &mut PrincipalStream) {
    steps::mark("start");
    let task = org
        .principal()
        .delegate("worker", TaskSpec::new("ping"))
        .await
        .expect("delegated");
    steps::mark("delegated");
    loop {
        let env = inbox
            .next()
            .await
            .expect("the inbox goes on")
            .expect("a readable result");
        if env.correlation_id.as_ref() == Some(&task.task_id) {
            break;
        }
    }
    steps::mark("end");
}

/// The runtime's steps, each after the one it follows (see [`steps::table`]).
const RUNTIME_STEPS: &[(&str, &str)] = &[
    ("publish task", "start"),
    ("published task", "publish task"),
    ("delegated", "published task"),
    ("pulled task", "publish task"),
    ("delivered task", "publish task"),
    ("publish result", "delivered task"),
    ("published result", "publish result"),
    ("settled task", "delivered task"),
    ("pulled result", "publish result"),
    ("received result", "publish result"),
    ("end", "received result"),
];

/// Runs a timed loop as a task of the runtime when
/// `AGENTORG_BENCH_ON_WORKER` is set (so the principal, like the agents, is
/// a runtime task, as in `benches/main.rs`), else here; returns what it
/// measured.
async fn on_worker<F, T>(routine: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if std::env::var_os("AGENTORG_BENCH_ON_WORKER").is_some() {
        tokio::spawn(routine)
            .await
            .expect("the bench task panicked")
    } else {
        routine.await
    }
}

/// What `n` runtime round trips spend, the loop where criterion's runs
/// (see [`Meter`]; `server`: nats-server's pid).
fn runtime_spent(
    rt: &Runtime,
    org: &Arc<Org>,
    inbox: &Arc<tokio::sync::Mutex<PrincipalStream>>,
    n: u32,
    server: Option<u32>,
) -> [Option<Duration>; 3] {
    let (org, inbox) = (Arc::clone(org), Arc::clone(inbox));
    rt.block_on(on_worker(async move {
        let mut inbox = inbox.lock().await;
        let meter = Meter::start(server);
        for _ in 0..n {
            round_trip(&org, &mut inbox).await;
        }
        meter.stop(n)
    }))
}

/// Whether criterion runs with `--profile-time` (a profiler watches the
/// benchmark its filter picks): then the measurements made apart from
/// criterion are skipped.
fn profiling() -> bool {
    std::env::args().any(|a| a == "--profile-time" || a.starts_with("--profile-time="))
}

async fn timed(iters: u64, org: &Org, inbox: &mut PrincipalStream) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        round_trip(org, inbox).await;
    }
    start.elapsed()
}

/// One mpsc ping-pong: the task out to the worker task, the result back.
async fn ping_pong(
    tx: &tokio::sync::mpsc::Sender<serde_json::Value>,
    rx: &mut tokio::sync::mpsc::Receiver<serde_json::Value>,
) {
    tx.send(json!({ "title": "ping" }))
        .await
        .expect("the worker is there");
    rx.recv().await.expect("a result");
}

fn memory(c: &mut Criterion) {
    steps::install();
    let rt = runtime();
    let mut group = c.benchmark_group("delegation_memory");
    // The task out to a worker task, the result back.
    let (task_tx, mut task_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(1);
    let (result_tx, result_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(1);
    rt.spawn(async move {
        while let Some(task) = task_rx.recv().await {
            if result_tx
                .send(json!({ "done": task["title"] }))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let result_rx = Arc::new(tokio::sync::Mutex::new(result_rx));
    group.bench_function("mpsc_ping_pong", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let task_tx = task_tx.clone();
            let result_rx = Arc::clone(&result_rx);
            on_worker(async move {
                let mut rx = result_rx.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    ping_pong(&task_tx, &mut rx).await;
                }
                start.elapsed()
            })
        });
    });
    let (org, inbox) = rt.block_on(org(Arc::new(MemoryTransport::new()), "bench"));
    let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
    let org = Arc::new(org);
    group.bench_function("runtime", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let org = Arc::clone(&org);
            let inbox = Arc::clone(&inbox);
            on_worker(async move {
                let mut inbox = inbox.lock().await;
                timed(iters, &org, &mut inbox).await
            })
        });
    });
    group.finish();
    if profiling() {
        rt.block_on(org.shutdown());
        return;
    }
    // What each spends, CPU included, over a fixed number of round trips.
    const N: u32 = 20_000;
    let spent_runtime = runtime_spent(&rt, &org, &inbox, N, None);
    let spent_mpsc = rt.block_on(on_worker(async move {
        let mut rx = result_rx.lock().await;
        let meter = Meter::start(None);
        for _ in 0..N {
            ping_pong(&task_tx, &mut rx).await;
        }
        meter.stop(N)
    }));
    print_spent(
        "delegation_memory",
        N,
        spent_runtime,
        ("mpsc_ping_pong", spent_mpsc),
    );
    if steps::wanted() {
        let (org, inbox) = (Arc::clone(&org), Arc::clone(&inbox));
        let marks = rt.block_on(on_worker(async move {
            let mut inbox = inbox.lock().await;
            steps::record(async {
                timed(5_000, &org, &mut inbox).await;
            })
            .await
        }));
        let table = steps::table(&marks, "start", RUNTIME_STEPS);
        println!("delegation_memory/runtime steps:\n{table}");
    }
    rt.block_on(org.shutdown());
}

#[cfg(feature = "nats")]
fn nats(c: &mut Criterion) {
    use agentorg::codec::Codec;
    use agentorg::envelope::{Kind, MessageId};
    use agentorg::nats::async_nats;
    use agentorg::nats::async_nats::jetstream::message::PublishMessage as Publish;
    use agentorg::nats::NatsTransportBuilder;
    use agentorg::subject::SubjectPattern;

    // `AGENTORG_BENCH_LOG=warn` (a tracing filter) shows what the runtime
    // and the transport log meanwhile.
    steps::install();
    let rt = runtime();
    let Some(server) = agentorg_testkit::nats_or_skip!() else {
        return;
    };
    let mut group = c.benchmark_group("delegation_nats");
    // The runtime's pull batch (`AGENTORG_BENCH_BATCH`, default: the
    // transport's default).
    let batch = std::env::var("AGENTORG_BENCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(agentorg::nats::DEFAULT_BATCH);

    // The runtime's org first: one round trip, watched by an ephemeral
    // subscription, gives the task and result envelopes it sends, and the
    // raw baselines below publish those same bytes.
    let (org, inbox, (task_bytes, result_bytes)) = rt.block_on(async {
        let transport: Arc<dyn Transport> = Arc::new(
            NatsTransportBuilder::new()
                .with_server(server.url())
                .with_org("bench")
                .with_batch(batch)
                .build()
                .await
                .expect("a NATS transport"),
        );
        let mut sent = transport
            .subscribe(&SubjectPattern::parse("bench.>").expect("a pattern"))
            .await
            .expect("a subscription");
        let (org, mut inbox) = org(Arc::clone(&transport), "bench").await;
        round_trip(&org, &mut inbox).await;
        let mut by_kind = std::collections::HashMap::new();
        while by_kind.len() < 2 {
            let m = tokio::time::timeout(Duration::from_secs(30), sent.next())
                .await
                .expect("the round trip's messages")
                .expect("the subscription goes on")
                .expect("a message");
            let env = Codec::default().decode(&m.payload).expect("an envelope");
            if matches!(env.kind, Kind::Task | Kind::Result) {
                by_kind.insert(env.kind, m.payload);
            }
        }
        drop(sent);
        let mut bytes = |k| by_kind.remove(&k).expect("captured");
        let captured = (bytes(Kind::Task), bytes(Kind::Result));
        (org, inbox, captured)
    });
    println!(
        "delegation_nats: the runtime's task envelope is {} bytes, its result envelope {} bytes; \
         the raw baselines publish the same bytes",
        task_bytes.len(),
        result_bytes.len()
    );
    let org = Arc::new(org);
    let inbox = Arc::new(tokio::sync::Mutex::new(inbox));

    // Raw async-nats: the same two hops on one work-queue stream, with the
    // transport's durability (durable pull consumers, explicit acks, every
    // publish's ack awaited, a `Nats-Msg-Id` on every publish as the
    // runtime's outbox sends) and its fire-and-forget consumer acks, a task
    // acked only once its result is stored (see `RawWay`). Each
    // consumer is read as one long-lived `messages()` stream with
    // async-nats's default prefetch (200 per pull request), so a pull
    // request is always waiting on the server: the fastest raw way. (A
    // one-message batch costs a pull round trip per message, and this
    // stream can stall on small batches: see the `agentorg_nats` crate
    // docs, "Delivery".)
    fn publish(payload: &bytes::Bytes, with_id: bool) -> Publish {
        let p = Publish::build().payload(payload.clone());
        if with_id {
            p.message_id(MessageId::new())
        } else {
            p
        }
    }
    /// A raw client's two consumers' message streams, and its subjects.
    struct RawHops {
        js: async_nats::jetstream::Context,
        tasks: async_nats::jetstream::consumer::pull::Stream,
        results: async_nats::jetstream::consumer::pull::Stream,
        task_subject: String,
        result_subject: String,
    }
    let raw_hops = |batch: Option<usize>, tag: &'static str| {
        let url = server.url().to_owned();
        async move {
            let client = async_nats::connect(url).await.expect("connects");
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: format!("RAW{tag}"),
                    subjects: vec![format!("raw{tag}.>")],
                    retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                    ..Default::default()
                })
                .await
                .expect("a stream");
            let consumer = |name: &str, filter: String| {
                let stream = stream.clone();
                let name = name.to_owned();
                async move {
                    let consumer = stream
                        .create_consumer(async_nats::jetstream::consumer::pull::Config {
                            durable_name: Some(name),
                            filter_subject: filter,
                            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        })
                        .await
                        .expect("a consumer");
                    let pull = consumer.stream();
                    let pull = match batch {
                        Some(b) => pull.max_messages_per_batch(b),
                        None => pull,
                    };
                    pull.messages().await.expect("a message stream")
                }
            };
            let (task_subject, result_subject) =
                (format!("raw{tag}.task"), format!("raw{tag}.result"));
            RawHops {
                tasks: consumer("worker", task_subject.clone()).await,
                results: consumer("founder", result_subject.clone()).await,
                js,
                task_subject,
                result_subject,
            }
        }
    };
    /// How a raw round trip is made.
    #[derive(Clone, Copy, PartialEq)]
    struct RawWay {
        /// A `Nats-Msg-Id` on every publish.
        ids: bool,
        /// The task acked as soon as it is received, before its result is
        /// published: a weaker guarantee than the runtime's (a worker that
        /// dies between the ack and the result's PubAck loses the task).
        /// Otherwise the task is acked once its result is stored, as the
        /// runtime's worker acks a delivery only after committing its
        /// outcome with the result in its outbox and publishing it (a
        /// failed publish is left to the outbox's sweep).
        ack_first: bool,
    }
    /// The same work as the runtime's round trip, with the same durability.
    const SAME_WORK: RawWay = RawWay {
        ids: true,
        ack_first: false,
    };
    // One raw round trip in one task: the task published and stored, taken;
    // its result published and stored, the task acked (or acked first, see
    // `RawWay`); the result taken and acked.
    async fn raw_round_trip(
        raw: &mut RawHops,
        (task, result): (&bytes::Bytes, &bytes::Bytes),
        way: RawWay,
    ) {
        steps::mark("raw start");
        raw.js
            .send_publish(raw.task_subject.clone(), publish(task, way.ids))
            .await
            .expect("published")
            .await
            .expect("stored");
        steps::mark("task stored");
        let task = raw.tasks.next().await.expect("a task").expect("readable");
        steps::mark("task received");
        if way.ack_first {
            task.ack().await.expect("acked");
        }
        raw.js
            .send_publish(raw.result_subject.clone(), publish(result, way.ids))
            .await
            .expect("published")
            .await
            .expect("stored");
        steps::mark("result stored");
        if !way.ack_first {
            task.ack().await.expect("acked");
        }
        let result = raw
            .results
            .next()
            .await
            .expect("a result")
            .expect("readable");
        steps::mark("result received");
        result.ack().await.expect("acked");
    }
    // The runtime's round trip against the same-work raw path in
    // alternating rounds (which goes first alternates too): whatever else
    // the machine does drifts over seconds and moves both paths of a round
    // alike, so each round's ratio keeps little of it, where two long
    // stretches one after the other (criterion's, or the measurement below)
    // each catch a different moment. Returns the printout: the median of
    // the rounds' ratios (the upper one: the 21st of 40), their quartiles,
    // and each path's median round.
    async fn paired_rounds(
        org: Arc<Org>,
        inbox: Arc<tokio::sync::Mutex<PrincipalStream>>,
        raw: Arc<tokio::sync::Mutex<RawHops>>,
        (task, result): (bytes::Bytes, bytes::Bytes),
    ) -> String {
        const ROUNDS: usize = 40;
        const PER_ROUND: u32 = 100;
        let mut inbox = inbox.lock().await;
        let mut raw = raw.lock().await;
        let (mut ratios, mut runtime, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut took = [Duration::ZERO; 2];
            for i in [round % 2, 1 - round % 2] {
                let start = Instant::now();
                for _ in 0..PER_ROUND {
                    if i == 0 {
                        round_trip(&org, &mut inbox).await;
                    } else {
                        raw_round_trip(&mut raw, (&task, &result), SAME_WORK).await;
                    }
                }
                took[i] = start.elapsed() / PER_ROUND;
            }
            ratios.push(took[0].as_secs_f64() / took[1].as_secs_f64());
            runtime.push(took[0]);
            base.push(took[1]);
        }
        ratios.sort_by(f64::total_cmp);
        runtime.sort();
        base.sort();
        format!(
            "delegation_nats: paired, {ROUNDS} alternating rounds of {PER_ROUND} round trips each: \
             runtime ÷ raw_async_nats {:.2}× (median; quartiles {:.2}–{:.2}×), \
             median rounds: runtime {} raw_async_nats {}",
            ratios[ROUNDS / 2],
            ratios[ROUNDS / 4],
            ratios[ROUNDS * 3 / 4],
            meter::micros(Some(runtime[ROUNDS / 2])),
            meter::micros(Some(base[ROUNDS / 2])),
        )
    }
    // `raw_async_nats_no_msg_id`: the same without message ids (no
    // deduplication, which the runtime's outbox relies on): less work for
    // the server; `raw_async_nats_ack_first`: each task acked before its
    // result is published (see `RawWay`), as this baseline was made up to
    // b617854. Both are weaker than the runtime, shown for comparison.
    // The first's figures, taken apart from criterion with the runtime's,
    // are printed after the group.
    let mut same_work = None;
    for (way, tag, label) in [
        (SAME_WORK, "p", "raw_async_nats"),
        (
            RawWay {
                ids: false,
                ack_first: false,
            },
            "n",
            "raw_async_nats_no_msg_id",
        ),
        (
            RawWay {
                ids: true,
                ack_first: true,
            },
            "f",
            "raw_async_nats_ack_first",
        ),
    ] {
        let batch = std::env::var("AGENTORG_BENCH_RAW_BATCH")
            .ok()
            .and_then(|b| b.parse().ok());
        let raw = rt.block_on(raw_hops(batch, tag));
        let raw = Arc::new(tokio::sync::Mutex::new(raw));
        group.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let raw = Arc::clone(&raw);
                let (task_bytes, result_bytes) = (task_bytes.clone(), result_bytes.clone());
                on_worker(async move {
                    let mut raw = raw.lock().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        raw_round_trip(&mut raw, (&task_bytes, &result_bytes), way).await;
                    }
                    start.elapsed()
                })
            });
        });
        if way == SAME_WORK {
            same_work = Some(raw);
        }
    }

    // `raw_async_nats_two_tasks`: the same hops with message ids, made by
    // two tasks as the runtime's two parties are: a spawned worker task
    // takes each task, publishes its result and acks the task once the
    // result is stored; the timed task publishes the task and takes the
    // result.
    {
        let RawHops {
            js,
            mut tasks,
            results,
            task_subject,
            result_subject,
        } = rt.block_on(raw_hops(None, "w"));
        let worker_js = js.clone();
        let result_payload = result_bytes.clone();
        rt.spawn(async move {
            while let Some(Ok(task)) = tasks.next().await {
                let stored = async {
                    worker_js
                        .send_publish(result_subject.clone(), publish(&result_payload, true))
                        .await?
                        .await
                };
                if stored.await.is_err() || task.ack().await.is_err() {
                    break;
                }
            }
        });
        let raw = Arc::new(tokio::sync::Mutex::new((js, results)));
        group.bench_function("raw_async_nats_two_tasks", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let raw = Arc::clone(&raw);
                let task_bytes = task_bytes.clone();
                let task_subject = task_subject.clone();
                on_worker(async move {
                    let mut guard = raw.lock().await;
                    let (js, results) = &mut *guard;
                    let start = Instant::now();
                    for _ in 0..iters {
                        js.send_publish(task_subject.clone(), publish(&task_bytes, true))
                            .await
                            .expect("published")
                            .await
                            .expect("stored");
                        let result = results.next().await.expect("a result").expect("readable");
                        result.ack().await.expect("acked");
                    }
                    start.elapsed()
                })
            });
        });
    }

    let mut samples = Vec::new();
    group.bench_function("runtime", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let org = Arc::clone(&org);
            let inbox = Arc::clone(&inbox);
            on_worker(async move {
                let mut inbox = inbox.lock().await;
                timed(iters, &org, &mut inbox).await
            })
        });
    });
    group.finish();
    if profiling() {
        rt.block_on(org.shutdown());
        return;
    }
    // What the runtime and the same-work raw path spend, CPU included (this
    // process's and nats-server's), over a fixed number of round trips.
    if let Some(raw) = same_work {
        const N: u32 = 4_000;
        let pid = server.pid();
        // nats-server's message and byte counters (`/varz`), read around
        // each stretch: what crossed the wire per round trip.
        let counters = || {
            let varz = server.monitor("/varz").ok()?;
            let n = |k: &str| varz[k].as_u64();
            Some([
                n("in_msgs")?,
                n("out_msgs")?,
                n("in_bytes")?,
                n("out_bytes")?,
            ])
        };
        let wire = |before: Option<[u64; 4]>, after: Option<[u64; 4]>| match (before, after) {
            (Some(b), Some(a)) => {
                let per = |i: usize| a[i].saturating_sub(b[i]) as f64 / f64::from(N);
                format!(
                    "{:.2} messages ({:.0} bytes) in, {:.2} ({:.0} bytes) out",
                    per(0),
                    per(2),
                    per(1),
                    per(3)
                )
            }
            _ => "n/a".to_owned(),
        };
        // Paired first, while `raw` is still ours: see `paired_rounds`.
        let paired = rt.block_on(on_worker(paired_rounds(
            Arc::clone(&org),
            Arc::clone(&inbox),
            Arc::clone(&raw),
            (task_bytes.clone(), result_bytes.clone()),
        )));
        if steps::wanted() {
            let (org, inbox, raw) = (Arc::clone(&org), Arc::clone(&inbox), Arc::clone(&raw));
            let (task, result) = (task_bytes.clone(), result_bytes.clone());
            let (runtime, base) = rt.block_on(on_worker(async move {
                let (mut inbox, mut raw) = (inbox.lock().await, raw.lock().await);
                let runtime = steps::record(async {
                    timed(2_000, &org, &mut inbox).await;
                })
                .await;
                let base = steps::record(async {
                    for _ in 0..2_000 {
                        raw_round_trip(&mut raw, (&task, &result), SAME_WORK).await;
                    }
                })
                .await;
                (runtime, base)
            }));
            let raw_steps = [
                ("task stored", "raw start"),
                ("task received", "task stored"),
                ("result stored", "task received"),
                ("result received", "result stored"),
            ];
            println!(
                "delegation_nats/runtime steps:\n{}delegation_nats/raw_async_nats steps:\n{}",
                steps::table(&runtime, "start", RUNTIME_STEPS),
                steps::table(&base, "raw start", &raw_steps)
            );
        }
        let before = counters();
        let spent_runtime = runtime_spent(&rt, &org, &inbox, N, pid);
        let (after, raw_before) = (counters(), counters());
        let runtime_wire = wire(before, after);
        let (task, result) = (task_bytes.clone(), result_bytes.clone());
        let spent_raw = rt.block_on(on_worker(async move {
            let mut raw = raw.lock().await;
            let meter = Meter::start(pid);
            for _ in 0..N {
                raw_round_trip(&mut raw, (&task, &result), SAME_WORK).await;
            }
            meter.stop(N)
        }));
        print_spent(
            "delegation_nats",
            N,
            spent_runtime,
            ("raw_async_nats", spent_raw),
        );
        let raw_wire = wire(raw_before, counters());
        println!("  at nats-server     runtime {runtime_wire}");
        println!("                     raw_async_nats {raw_wire}");
        println!("{paired}");
    }
    // The p50 of single round trips, measured apart from criterion.
    rt.block_on(async {
        let mut inbox = inbox.lock().await;
        for _ in 0..500 {
            let start = Instant::now();
            round_trip(&org, &mut inbox).await;
            samples.push(start.elapsed());
        }
    });
    samples.sort();
    println!(
        "delegation_nats/runtime single round trips: p50 {:?}, p90 {:?}, p99 {:?} (500 samples)",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() * 99 / 100]
    );
    rt.block_on(org.shutdown());
    drop(server);
}

#[cfg(feature = "nats")]
criterion_group!(benches, memory, nats);
#[cfg(not(feature = "nats"))]
criterion_group!(benches, memory);
criterion_main!(benches);
