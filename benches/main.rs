//! Benchmarks of the messaging paths, each beside its raw baseline in the same
//! run, so that overhead reads as a ratio rather than as an absolute figure
//! that depends on the machine.
//!
//! * `round_trip`: one message there and back on the in-process
//!   `MemoryTransport` (publish → durable consumer receives → ack, in each
//!   direction), beside a tokio `mpsc` ping-pong of the same bytes; the same
//!   with a dedupe id on every publish; and one publish → receive → ack
//!   within a single task (no task switch), beside `mpsc` send → receive,
//!   on an empty transport and on one holding the idle inbox consumers of a
//!   10,000-role org.
//! * `throughput`: 1000 messages published and consumed (and acked) by a
//!   concurrent consumer, beside an `mpsc` channel doing the same.
//! * `codec`: the JSON codec alone on the same envelope.
//!
//! Every async bench runs on a multi-thread tokio runtime with 2 workers, and
//! setup (transport, consumers, the spawned echo task) happens outside the
//! timed region (`iter_custom`).
//!
//! ```text
//! cargo bench --bench main -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Results and how to read them: `BENCHMARKS.md` at the root.

use criterion::{criterion_group, criterion_main};

/// What the benches share: the payload and the runtime.
mod fixtures {
    use std::future::Future;
    use std::time::Duration;

    use agentorg::codec::Codec;
    use agentorg::envelope::{Envelope, Kind, MessageId};
    use agentorg::subject::{Subject, SubjectPattern, Subjects};
    use agentorg::transport::{ConsumerConfig, Message, PublishOptions};
    use agentorg::Name;
    use serde_json::json;

    pub(crate) fn name(s: &str) -> Name {
        Name::new(s).expect("a valid name")
    }

    /// A typical task envelope, shaped as the runtime's delegations are (the
    /// task in the payload, a trace context in the headers).
    pub(crate) fn task_envelope() -> Envelope {
        let id = MessageId::new();
        let mut env = Envelope::new(name("genbrain"), name("founder"), Kind::Task, json!(null))
            .with_id(id.clone())
            .with_to(name("ceo"));
        env.payload = json!({
            "task_id": id,
            "title": "Create /api/v2/analytics endpoints backed by ClickHouse",
            "task_type": "api_change",
            "input": {
                "store": "clickhouse",
                "endpoints": ["/api/v2/analytics/events", "/api/v2/analytics/funnels"],
                "notes": "Keep v1 until the dashboard has migrated."
            },
            "sla_minutes": 120
        });
        env
    }

    /// The task envelope, encoded, on the ceo's inbox subject: what travels
    /// on the transport. (Its `payload` is the `Bytes` every bench sends.)
    pub(crate) fn message() -> Message {
        let bytes = Codec::default()
            .encode(&task_envelope())
            .expect("the envelope encodes");
        Message::new(Lines::new().to_ceo, bytes, None)
    }

    /// Subjects and consumers of a founder ↔ ceo exchange.
    pub(crate) struct Lines {
        pub(crate) to_ceo: Subject,
        pub(crate) to_founder: Subject,
        pub(crate) ceo_inbox: ConsumerConfig,
        pub(crate) founder_inbox: ConsumerConfig,
    }

    impl Lines {
        pub(crate) fn new() -> Self {
            let subjects = Subjects::new(name("genbrain"));
            let (founder, ceo) = (name("founder"), name("ceo"));
            let consumer = |n: &str, p: SubjectPattern| ConsumerConfig::new(name(n), p);
            Self {
                to_ceo: subjects.inbox(&ceo, &founder),
                to_founder: subjects.inbox(&founder, &ceo),
                ceo_inbox: consumer("in-ceo", subjects.inbox_any(&ceo)),
                founder_inbox: consumer("in-founder", subjects.inbox_any(&founder)),
            }
        }
    }

    /// Publish options: none, or a fresh dedupe id of a ULID's length (as the
    /// runtime's publishes carry).
    pub(crate) fn publish_options(dedupe: bool, prefix: char, n: u64) -> PublishOptions {
        if dedupe {
            PublishOptions::with_msg_id(format!("{prefix}{n:025}"))
        } else {
            PublishOptions::default()
        }
    }

    /// The runtime of every async bench: multi-thread, 2 workers.
    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }

    /// Runs one timed routine as a task of the runtime (so both sides of an
    /// exchange are runtime tasks, as hosted agents are) and returns the time
    /// it measured itself.
    pub(crate) async fn on_worker<F>(routine: F) -> Duration
    where
        F: Future<Output = Duration> + Send + 'static,
    {
        tokio::spawn(routine)
            .await
            .expect("the bench task panicked")
    }
}

/// One message there and back, sequentially.
mod round_trip {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use agentorg::subject::Subjects;
    use agentorg::transport::{
        ConsumerConfig, MemoryTransport, Message, PublishOptions, Transport,
    };
    use criterion::Criterion;
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::fixtures::{message, name, on_worker, publish_options, runtime, Lines};

    pub(crate) fn bench(c: &mut Criterion) {
        let rt = runtime();
        let msg = message();
        let mut g = c.benchmark_group("round_trip");

        // Baseline: send → the echo task receives → replies on a second
        // channel → received.
        g.bench_function("mpsc_ping_pong", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(mpsc_ping_pong(msg.clone(), iters)));
        });
        // publish → the ceo's consumer delivers → ack → publish the reply →
        // the founder's consumer delivers → ack.
        g.bench_function("memory_transport_ping_pong", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(transport_ping_pong(msg.clone(), iters, false)));
        });
        // The same with a dedupe id on every publish, as the runtime's
        // publishes carry (1 s window, so the dedupe table stays small).
        g.bench_function("memory_transport_ping_pong_dedupe", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(transport_ping_pong(msg.clone(), iters, true)));
        });
        // Within one task, no task switch: the cost of the path itself.
        g.bench_function("mpsc_same_task", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(mpsc_same_task(msg.clone(), iters)));
        });
        g.bench_function("memory_transport_same_task", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                on_worker(transport_same_task(
                    MemoryTransport::new(),
                    msg.clone(),
                    iters,
                ))
            });
        });
        // The same on a transport that also holds the idle inbox consumers of
        // a 10,000-role org (none of which matches the subject).
        let crowded = rt.block_on(crowded(CROWD));
        g.bench_function("memory_transport_same_task_10k_consumers", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                on_worker(transport_same_task(crowded.clone(), msg.clone(), iters))
            });
        });
        g.finish();
    }

    async fn mpsc_ping_pong(msg: Message, iters: u64) -> Duration {
        let (to_echo, mut echo_rx) = mpsc::channel(1);
        let (to_driver, mut driver_rx) = mpsc::channel(1);
        let echo = tokio::spawn(async move {
            while let Some(p) = echo_rx.recv().await {
                if to_driver.send(p).await.is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            to_echo.send(msg.payload.clone()).await.expect("echo alive");
            black_box(driver_rx.recv().await.expect("echo alive"));
        }
        let elapsed = start.elapsed();
        drop(to_echo);
        echo.await.expect("echo task");
        elapsed
    }

    async fn transport_ping_pong(msg: Message, iters: u64, dedupe: bool) -> Duration {
        let lines = Lines::new();
        let t = MemoryTransport::builder()
            .duplicate_window(Duration::from_secs(1))
            .build()
            .expect("a transport");
        t.ensure_consumer(&lines.ceo_inbox).await.expect("consumer");
        t.ensure_consumer(&lines.founder_inbox)
            .await
            .expect("consumer");
        let mut ceo = t.consume(&lines.ceo_inbox.name).await.expect("bind");
        let mut founder = t.consume(&lines.founder_inbox.name).await.expect("bind");
        let echo = tokio::spawn({
            let t = t.clone();
            let to_founder = lines.to_founder.clone();
            async move {
                let mut n = 0;
                while let Some(Ok(d)) = ceo.next().await {
                    d.ack().await.expect("ack");
                    n += 1;
                    let opts = publish_options(dedupe, 'r', n);
                    t.publish(&to_founder, d.raw().clone(), opts)
                        .await
                        .expect("publish reply");
                }
            }
        });
        let start = Instant::now();
        for n in 0..iters {
            let opts = publish_options(dedupe, 'q', n);
            t.publish(&msg.subject, msg.payload.clone(), opts)
                .await
                .expect("publish");
            let d = founder.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
            black_box(d);
        }
        let elapsed = start.elapsed();
        echo.abort();
        let _ = echo.await;
        elapsed
    }

    async fn mpsc_same_task(msg: Message, iters: u64) -> Duration {
        let (tx, mut rx) = mpsc::channel(1);
        let start = Instant::now();
        for _ in 0..iters {
            tx.send(msg.payload.clone()).await.expect("open");
            black_box(rx.recv().await.expect("open"));
        }
        start.elapsed()
    }

    const CROWD: usize = 10_000;

    /// A transport with the inbox consumers of `n` other roles.
    async fn crowded(n: usize) -> MemoryTransport {
        let t = MemoryTransport::new();
        let subjects = Subjects::new(name("genbrain"));
        for i in 0..n {
            let role = name(&format!("r{i:05}"));
            let config =
                ConsumerConfig::new(name(&format!("in-{role}")), subjects.inbox_any(&role));
            t.ensure_consumer(&config).await.expect("consumer");
        }
        t
    }

    async fn transport_same_task(t: MemoryTransport, msg: Message, iters: u64) -> Duration {
        let lines = Lines::new();
        t.ensure_consumer(&lines.ceo_inbox).await.expect("consumer");
        let mut ceo = t.consume(&lines.ceo_inbox.name).await.expect("bind");
        let start = Instant::now();
        for _ in 0..iters {
            t.publish(&msg.subject, msg.payload.clone(), PublishOptions::default())
                .await
                .expect("publish");
            let d = ceo.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
            black_box(d);
        }
        start.elapsed()
    }
}

/// A batch of messages through a concurrent consumer.
mod throughput {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use agentorg::transport::{MemoryTransport, Message, PublishOptions, Transport};
    use criterion::{Criterion, Throughput};
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::fixtures::{message, on_worker, runtime, Lines};

    const BATCH: u64 = 1000;

    pub(crate) fn bench(c: &mut Criterion) {
        let rt = runtime();
        let msg = message();
        let mut g = c.benchmark_group("throughput");
        g.throughput(Throughput::Elements(BATCH));
        g.bench_function("mpsc_1000", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(mpsc_batches(msg.clone(), iters)));
        });
        g.bench_function("memory_transport_1000", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| on_worker(transport_batches(msg.clone(), iters)));
        });
        g.finish();
    }

    /// Sends `BATCH` messages into a channel that holds them all; a consumer
    /// task receives them and reports each whole batch.
    async fn mpsc_batches(msg: Message, iters: u64) -> Duration {
        let (tx, mut rx) = mpsc::channel(BATCH as usize);
        let (done_tx, mut done) = mpsc::channel(1);
        let consumer = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(p) = rx.recv().await {
                black_box(p);
                n += 1;
                if n.is_multiple_of(BATCH) && done_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            for _ in 0..BATCH {
                tx.send(msg.payload.clone()).await.expect("open");
            }
            done.recv().await.expect("consumer alive");
        }
        let elapsed = start.elapsed();
        drop(tx);
        consumer.await.expect("consumer task");
        elapsed
    }

    /// Publishes `BATCH` messages; a consumer task receives and acks them
    /// (64 unacked at most, the default) and reports each whole batch.
    async fn transport_batches(msg: Message, iters: u64) -> Duration {
        let lines = Lines::new();
        let t = MemoryTransport::new();
        t.ensure_consumer(&lines.ceo_inbox).await.expect("consumer");
        let mut ceo = t.consume(&lines.ceo_inbox.name).await.expect("bind");
        let (done_tx, mut done) = mpsc::channel(1);
        let consumer = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(d)) = ceo.next().await {
                d.ack().await.expect("ack");
                n += 1;
                if n.is_multiple_of(BATCH) && done_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            for _ in 0..BATCH {
                t.publish(&msg.subject, msg.payload.clone(), PublishOptions::default())
                    .await
                    .expect("publish");
            }
            done.recv().await.expect("consumer alive");
        }
        let elapsed = start.elapsed();
        consumer.abort();
        let _ = consumer.await;
        elapsed
    }
}

/// The JSON codec alone, on the envelope the other benches carry.
mod codec {
    use std::hint::black_box;

    use agentorg::codec::Codec;
    use criterion::{Criterion, Throughput};

    use super::fixtures::{message, task_envelope};

    pub(crate) fn bench(c: &mut Criterion) {
        let codec = Codec::default();
        let env = task_envelope();
        let bytes = message().payload;
        let mut g = c.benchmark_group("codec");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("encode", |b| {
            b.iter(|| codec.encode(black_box(&env)).expect("encodes"));
        });
        g.bench_function("decode", |b| {
            b.iter(|| codec.decode(black_box(&bytes)).expect("decodes"));
        });
        g.finish();
    }
}

criterion_group!(benches, round_trip::bench, throughput::bench, codec::bench);
criterion_main!(benches);
