//! NatsTransport beside raw async-nats doing the same JetStream operations,
//! in the same run, against one test-kit nats-server.
//!
//! * `round_trip`: one durable publish (with a `Nats-Msg-Id`, awaiting the
//!   stream's ack) → the pull consumer delivers it → ack, sequentially in
//!   one task. Raw: `publish_with_headers(..).await?.await?`, the pull
//!   stream's `next()`, `ack()`. NatsTransport: `publish`, the delivery
//!   stream's `next()` (which also decodes the envelope), `ack`.
//! * `throughput_256`: 256 publishes in flight at once (each awaiting its
//!   ack), while a consumer task takes and acks them; one iteration is all
//!   256 published and acknowledged. Pull batches of 64 and at most 256
//!   unacknowledged deliveries, raw and NatsTransport alike.
//!
//! Both sides use a consumer on the same work-queue stream with the same
//! configuration (explicit ack, deliver all, 30 s ack wait), pull batches of
//! the same size with the same expiry and heartbeat, and the same 2-worker
//! multi-thread tokio runtime; setup is outside the timed region
//! (`iter_custom`).
//!
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/agentorg/target
//! export AGENTORG_NATS_SERVER=$PWD/.tools/venv/bin/nats-server
//! cargo bench -p agentorg-nats --bench nats -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Without a nats-server the bench prints why and measures nothing.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg_core::codec::Codec;
use agentorg_core::envelope::{Envelope, Kind, MessageId};
use agentorg_core::subject::{Subject, Subjects};
use agentorg_core::transport::{ConsumerConfig, DeliveryStream, PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_nats::NatsTransport;
use agentorg_testkit::NatsServer;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{mpsc, Mutex};

const IN_FLIGHT: usize = 256;
const PULL_EXPIRY: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(5);
const ACK_WAIT: Duration = Duration::from_secs(30);

fn name(s: &str) -> Name {
    Name::new(s).expect("a valid name")
}

/// A task envelope shaped as the runtime's delegations (as `benches/main.rs`
/// of the facade carries), encoded.
fn payload() -> Bytes {
    let id = MessageId::new();
    let mut env = Envelope::new(name("bench"), name("founder"), Kind::Task, json!(null))
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
    Codec::default().encode(&env).expect("the envelope encodes")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Fresh message ids across every iteration of a run.
static IDS: AtomicU64 = AtomicU64::new(0);

fn next_id(prefix: &str) -> String {
    format!("{prefix}{:025}", IDS.fetch_add(1, Ordering::Relaxed))
}

/// One side of the comparison: a publisher and a consumer on `subject`.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // two values per bench, made once
enum Side {
    Raw {
        js: jetstream::Context,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        subject: String,
        batch: usize,
    },
    Agentorg {
        t: NatsTransport,
        consumer: Name,
        subject: Subject,
    },
}

/// A delivery stream of either side, reduced to "next, then ack".
enum Deliveries {
    Raw(Box<pull::Stream>),
    Agentorg(DeliveryStream),
}

impl Deliveries {
    async fn next_and_ack(&mut self) {
        match self {
            Deliveries::Raw(s) => loop {
                // The raw stream reports a late idle heartbeat as an error
                // item and goes on (NatsTransport binds again instead).
                match s.next().await.expect("open") {
                    Ok(m) => {
                        m.ack().await.expect("ack");
                        black_box(m);
                        break;
                    }
                    Err(e) => eprintln!("raw pull stream: {e}"),
                }
            },
            Deliveries::Agentorg(s) => {
                let d = s.next().await.expect("open").expect("a delivery");
                d.ack().await.expect("ack");
                black_box(d);
            }
        }
    }
}

impl Side {
    async fn deliveries(&self) -> Deliveries {
        match self {
            Side::Raw {
                consumer, batch, ..
            } => Deliveries::Raw(Box::new(
                consumer
                    .stream()
                    .max_messages_per_batch(*batch)
                    .expires(PULL_EXPIRY)
                    .heartbeat(HEARTBEAT)
                    .messages()
                    .await
                    .expect("pull stream"),
            )),
            Side::Agentorg { t, consumer, .. } => {
                Deliveries::Agentorg(t.consume(consumer).await.expect("bind"))
            }
        }
    }

    async fn publish(&self, payload: Bytes) {
        match self {
            Side::Raw { js, subject, .. } => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", next_id("r").as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
                black_box(ack);
            }
            Side::Agentorg { t, subject, .. } => {
                let ack = t
                    .publish(subject, payload, PublishOptions::with_msg_id(next_id("a")))
                    .await
                    .expect("stored");
                black_box(ack);
            }
        }
    }
}

/// Both sides for one org on `url`: consumers on inboxes `raw` and `ours`
/// of the org's work-queue stream, configured alike.
async fn sides(url: &str, batch: usize, max_ack_pending: usize) -> (Side, Side) {
    let org = agentorg_core::conformance::unique_org();
    let s = Subjects::new(org.clone());
    let t = NatsTransport::builder()
        .with_server(url)
        .with_org(org.as_str())
        .with_batch(batch)
        .with_pull_expiry(PULL_EXPIRY, HEARTBEAT)
        .build()
        .await
        .expect("NatsTransport");
    let ours = ConsumerConfig::new(name("ours"), s.inbox_any(&name("ours")))
        .with_ack_wait(ACK_WAIT)
        .with_max_ack_pending(max_ack_pending);
    t.ensure_consumer(&ours).await.expect("consumer");
    let js = jetstream::new(t.client().clone());
    let stream = js
        .get_stream(t.layout().stream_name(agentorg_nats::StreamKind::Inbox))
        .await
        .expect("the inbox stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".to_owned()),
            filter_subject: s.inbox_any(&name("raw")).to_string(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_wait: ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: i64::try_from(max_ack_pending).expect("small"),
            ..Default::default()
        })
        .await
        .expect("raw consumer");
    (
        Side::Raw {
            js,
            consumer,
            subject: s.inbox(&name("raw"), &name("p")).to_string(),
            batch,
        },
        Side::Agentorg {
            t,
            consumer: ours.name,
            subject: s.inbox(&name("ours"), &name("p")),
        },
    )
}

/// Publish → next → ack, `iters` times, in one task. The delivery stream
/// lives across calls (a dropped one would leave a pull request behind).
async fn round_trip(
    side: Side,
    deliveries: Arc<Mutex<Deliveries>>,
    payload: Bytes,
    iters: u64,
) -> Duration {
    let mut deliveries = deliveries.lock().await;
    let start = Instant::now();
    for _ in 0..iters {
        side.publish(payload.clone()).await;
        deliveries.next_and_ack().await;
    }
    start.elapsed()
}

/// A consumer task that takes and acks everything, reporting each 256; it
/// lives for the whole bench.
fn spawn_consumer(rt: &tokio::runtime::Runtime, side: &Side) -> Arc<Mutex<mpsc::Receiver<()>>> {
    let mut deliveries = rt.block_on(side.deliveries());
    let (done_tx, done) = mpsc::channel(1);
    rt.spawn(async move {
        loop {
            for _ in 0..IN_FLIGHT {
                deliveries.next_and_ack().await;
            }
            if done_tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Arc::new(Mutex::new(done))
}

/// `iters` rounds of 256 concurrent publishes, each round done when the
/// consumer task has taken and acked all 256.
async fn throughput(
    side: Side,
    done: Arc<Mutex<mpsc::Receiver<()>>>,
    payload: Bytes,
    iters: u64,
) -> Duration {
    let mut done = done.lock().await;
    let side = Arc::new(side);
    let start = Instant::now();
    for _ in 0..iters {
        futures::future::join_all((0..IN_FLIGHT).map(|_| {
            let side = Arc::clone(&side);
            let payload = payload.clone();
            async move { side.publish(payload).await }
        }))
        .await;
        done.recv().await.expect("consumer alive");
    }
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let nats = match NatsServer::start() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED agentorg-nats benches: {e}");
            return;
        }
    };
    let rt = runtime();
    let payload = payload();
    eprintln!(
        "agentorg-nats benches: nats-server at {}, payload {} bytes",
        nats.url(),
        payload.len()
    );

    let (raw, ours) = rt.block_on(sides(&nats.url(), agentorg_nats::DEFAULT_BATCH, 64));
    let mut g = c.benchmark_group("nats_round_trip");
    g.throughput(Throughput::Elements(1));
    for (label, side) in [("raw_async_nats", raw), ("nats_transport", ours)] {
        let deliveries = Arc::new(Mutex::new(rt.block_on(side.deliveries())));
        g.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (side, payload) = (side.clone(), payload.clone());
                let deliveries = Arc::clone(&deliveries);
                async move {
                    tokio::spawn(round_trip(side, deliveries, payload, iters))
                        .await
                        .expect("bench task")
                }
            });
        });
    }
    g.finish();

    let (raw, ours) = rt.block_on(sides(&nats.url(), 64, IN_FLIGHT));
    let mut g = c.benchmark_group("nats_throughput_256");
    g.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (label, side) in [("raw_async_nats", raw), ("nats_transport", ours)] {
        let done = spawn_consumer(&rt, &side);
        g.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (side, payload) = (side.clone(), payload.clone());
                let done = Arc::clone(&done);
                async move {
                    tokio::spawn(throughput(side, done, payload, iters))
                        .await
                        .expect("bench task")
                }
            });
        });
    }
    g.finish();
}

criterion_group!(nats_benches, benches);
criterion_main!(nats_benches);
