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
//!   stream with async-nats's default prefetch, ack, publish the result the
//!   same way, consume it, ack). `AGENTORG_BENCH_BATCH` sets the runtime
//!   transport's pull batch (default: the transport's default).
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

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    let task = org
        .principal()
        .delegate("worker", TaskSpec::new("ping"))
        .await
        .expect("delegated");
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
}

/// Runs a timed loop as a task of the runtime (so the principal, like the
/// agents, is a runtime task, as in `benches/main.rs`) and returns the time
/// it measured.
async fn on_worker<F>(routine: F) -> Duration
where
    F: std::future::Future<Output = Duration> + Send + 'static,
{
    if std::env::var_os("AGENTORG_BENCH_ON_WORKER").is_some() {
        tokio::spawn(routine)
            .await
            .expect("the bench task panicked")
    } else {
        routine.await
    }
}

async fn timed(iters: u64, org: &Org, inbox: &mut PrincipalStream) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        round_trip(org, inbox).await;
    }
    start.elapsed()
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("delegation_memory");
    group.bench_function("mpsc_ping_pong", |b| {
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
        b.to_async(&rt).iter_custom(|iters| {
            let task_tx = task_tx.clone();
            let result_rx = Arc::clone(&result_rx);
            on_worker(async move {
                let mut rx = result_rx.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    task_tx
                        .send(json!({ "title": "ping" }))
                        .await
                        .expect("the worker is there");
                    rx.recv().await.expect("a result");
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env(
            "AGENTORG_BENCH_LOG",
        ))
        .with_writer(std::io::stderr)
        .try_init();
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
    // runtime's outbox sends) and its fire-and-forget consumer acks. Each
    // consumer is read as one long-lived `messages()` stream with
    // async-nats's default prefetch (200 per pull request), so a pull
    // request is always waiting on the server: the fastest raw way. (A
    // one-message batch costs a pull round trip per message, and async-nats
    // can stall on it: see `NatsTransportBuilder::with_batch`.)
    let publish = |payload: &bytes::Bytes, with_id: bool| {
        let p = Publish::build().payload(payload.clone());
        if with_id {
            p.message_id(MessageId::new())
        } else {
            p
        }
    };
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
            let tasks = consumer("worker", format!("raw{tag}.task")).await;
            let results = consumer("founder", format!("raw{tag}.result")).await;
            (js, tasks, results, tag)
        }
    };
    // `raw_async_nats_no_msg_id`: the same without message ids (no
    // deduplication, which the runtime's outbox relies on): less work for
    // the server, shown for comparison.
    for (with_ids, tag, label) in [
        (true, "p", "raw_async_nats"),
        (false, "n", "raw_async_nats_no_msg_id"),
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
                    let mut guard = raw.lock().await;
                    let (js, tasks, results, tag) = &mut *guard;
                    let (task_subject, result_subject) =
                        (format!("raw{tag}.task"), format!("raw{tag}.result"));
                    let (task, result) = (&task_bytes, &result_bytes);
                    let start = Instant::now();
                    for _ in 0..iters {
                        js.send_publish(task_subject.clone(), publish(task, with_ids))
                            .await
                            .expect("published")
                            .await
                            .expect("stored");
                        let task = tasks.next().await.expect("a task").expect("readable");
                        task.ack().await.expect("acked");
                        js.send_publish(result_subject.clone(), publish(result, with_ids))
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

    // `raw_async_nats_two_tasks`: the same hops with message ids, made by
    // two tasks as the runtime's two parties are: a spawned worker task
    // takes each task, acks it and publishes the result; the timed task
    // publishes the task and takes the result.
    {
        let (js, mut tasks, results, tag) = rt.block_on(raw_hops(None, "w"));
        let result_subject = format!("raw{tag}.result");
        let worker_js = js.clone();
        let result_payload = result_bytes.clone();
        rt.spawn(async move {
            while let Some(Ok(task)) = tasks.next().await {
                if task.ack().await.is_err() {
                    break;
                }
                let stored = async {
                    worker_js
                        .send_publish(result_subject.clone(), publish(&result_payload, true))
                        .await?
                        .await
                };
                if stored.await.is_err() {
                    break;
                }
            }
        });
        let raw = Arc::new(tokio::sync::Mutex::new((js, results)));
        group.bench_function("raw_async_nats_two_tasks", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let raw = Arc::clone(&raw);
                let task_bytes = task_bytes.clone();
                on_worker(async move {
                    let mut guard = raw.lock().await;
                    let (js, results) = &mut *guard;
                    let task_subject = format!("raw{tag}.task");
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
