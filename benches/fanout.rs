//! Event fan-out: one event to 100 durable subscribers, each iteration
//! publishing one and waiting until all 100 have handled it — each path
//! beside its raw baseline in the same run. Criterion's throughput is in
//! deliveries (100 per iteration).
//!
//! * `fanout_memory/runtime`: `Principal::publish_event` → 100 roles'
//!   durable subscriptions → each role's `on_event` (claimed, receipted,
//!   committed), on the memory transport and store; beside
//!   `fanout_memory/tokio_broadcast`, a tokio `broadcast` channel with 100
//!   receiver tasks.
//! * with `--features nats`, `fanout_nats/runtime`: the same on NATS
//!   JetStream with the memory store, beside `fanout_nats/raw_jetstream`:
//!   one publish (with a message id, its ack awaited, as the runtime's
//!   outbox does) on a limits stream read by 100 durable pull consumers with
//!   explicit acks, each a long-lived `messages()` stream (async-nats's
//!   default prefetch) on a task of its own that acks what it gets.
//!
//! Every path signals each handled delivery the same way (an atomic count
//! and a `Notify`), so the signalling costs all paths alike.
//!
//! ```text
//! cargo bench --bench fanout -- --warm-up-time 1 --measurement-time 10
//! cargo bench --bench fanout --features nats -- --warm-up-time 1 --measurement-time 10
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg::events::Event;
use agentorg::prelude::*;
use agentorg::store::MemoryStore;
use agentorg::transport::{MemoryTransport, Transport};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Subscribers per event.
const SUBSCRIBERS: u64 = 100;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Handled deliveries, counted; the bench waits on it.
#[derive(Default)]
struct Tally {
    count: AtomicU64,
    notify: Notify,
}

impl Tally {
    fn one(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Waits until `n` deliveries were handled in all.
    async fn reach(&self, n: u64) {
        while self.count.load(Ordering::Acquire) < n {
            self.notify.notified().await;
        }
    }

    fn now(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// The chart: `devops` publishes `deploy.complete`; `sub000` … `sub099`
/// subscribe to it.
fn chart(org: &str) -> OrgChart {
    let mut b = OrgChart::builder(org).principal("founder").role(
        RoleSpec::new("devops")
            .reports_to("founder")
            .publishes(["deploy.complete"]),
    );
    for i in 0..SUBSCRIBERS {
        b = b.role(
            RoleSpec::new(format!("sub{i:03}"))
                .reports_to("founder")
                .subscribes(["deploy.complete"]),
        );
    }
    b.build().expect("a valid chart")
}

/// A subscriber that counts each event it handles.
struct Counter(Arc<Tally>);

#[async_trait]
impl Agent for Counter {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(serde_json::Value::Null))
    }
    async fn on_event(&self, _cx: &Context, _event: Event) -> Result<(), AgentError> {
        self.0.one();
        Ok(())
    }
}

/// An org of the 100 subscribers on `transport` and a memory store, ready.
async fn org(transport: Arc<dyn Transport>, name: &str, tally: &Arc<Tally>) -> Org {
    let mut b = Org::builder(chart(name))
        .transport(transport)
        .store(Arc::new(MemoryStore::new()));
    for i in 0..SUBSCRIBERS {
        b = b.agent(format!("sub{i:03}"), Counter(Arc::clone(tally)));
    }
    let org = b.start().await.expect("the org starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !org.is_ready() {
        assert!(Instant::now() < deadline, "the org was not ready in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    org
}

/// Publishes one event per iteration through the principal and waits for
/// its 100 deliveries.
async fn runtime_loop(iters: u64, org: &Org, tally: &Tally) -> Duration {
    let principal = org.principal();
    let start = Instant::now();
    for i in 0..iters {
        let target = tally.now() + SUBSCRIBERS;
        principal
            .publish_event("deploy.complete", &json!({ "version": i }))
            .await
            .expect("published");
        tally.reach(target).await;
    }
    start.elapsed()
}

/// `<group>/runtime` on `org`, then the group's end and the org's shutdown.
fn runtime_then_finish(
    mut group: BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    org: Org,
    tally: Arc<Tally>,
) {
    let org = Arc::new(org);
    group.bench_function("runtime", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (org, tally) = (Arc::clone(&org), Arc::clone(&tally));
            async move { runtime_loop(iters, &org, &tally).await }
        });
    });
    group.finish();
    rt.block_on(org.shutdown());
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout_memory");
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    group.sample_size(20);
    group.bench_function("tokio_broadcast", |b| {
        let tally = Arc::new(Tally::default());
        let (tx, _) = tokio::sync::broadcast::channel::<serde_json::Value>(16);
        for _ in 0..SUBSCRIBERS {
            let mut rx = tx.subscribe();
            let tally = Arc::clone(&tally);
            rt.spawn(async move {
                while rx.recv().await.is_ok() {
                    tally.one();
                }
            });
        }
        b.to_async(&rt).iter_custom(|iters| {
            let (tx, tally) = (tx.clone(), Arc::clone(&tally));
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    let target = tally.now() + SUBSCRIBERS;
                    tx.send(json!({ "version": i })).expect("receivers");
                    tally.reach(target).await;
                }
                start.elapsed()
            }
        });
    });
    let tally = Arc::new(Tally::default());
    let org = rt.block_on(org(Arc::new(MemoryTransport::new()), "bench", &tally));
    runtime_then_finish(group, &rt, org, tally);
}

#[cfg(feature = "nats")]
fn nats(c: &mut Criterion) {
    use agentorg::envelope::MessageId;
    use agentorg::nats::async_nats;
    use agentorg::nats::async_nats::jetstream::message::PublishMessage as Publish;
    use agentorg::nats::NatsTransportBuilder;
    use futures::StreamExt;

    let rt = runtime();
    let Some(server) = agentorg_testkit::nats_or_skip!() else {
        return;
    };
    let mut group = c.benchmark_group("fanout_nats");
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    group.sample_size(10);

    // Raw JetStream: a limits stream, 100 durable pull consumers with
    // explicit acks, each acking on a task of its own.
    {
        let tally = Arc::new(Tally::default());
        let js = rt.block_on(async {
            let client = async_nats::connect(server.url()).await.expect("connects");
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "RAWFAN".to_owned(),
                    subjects: vec!["rawfan.>".to_owned()],
                    ..Default::default()
                })
                .await
                .expect("a stream");
            for i in 0..SUBSCRIBERS {
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some(format!("sub{i:03}")),
                        filter_subject: "rawfan.deploy.complete".to_owned(),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                        deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .expect("a consumer");
                let mut messages = consumer.messages().await.expect("a message stream");
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    while let Some(Ok(m)) = messages.next().await {
                        if m.ack().await.is_err() {
                            break;
                        }
                        tally.one();
                    }
                });
            }
            js
        });
        // The same bytes as the runtime's event envelope would be (near
        // enough: a small JSON event).
        let payload = bytes::Bytes::from(
            serde_json::to_vec(&json!({ "name": "deploy.complete", "payload": { "version": 1 } }))
                .expect("json"),
        );
        group.bench_function("raw_jetstream", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (js, tally, payload) = (js.clone(), Arc::clone(&tally), payload.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let target = tally.now() + SUBSCRIBERS;
                        js.send_publish(
                            "rawfan.deploy.complete",
                            Publish::build()
                                .payload(payload.clone())
                                .message_id(MessageId::new()),
                        )
                        .await
                        .expect("published")
                        .await
                        .expect("stored");
                        tally.reach(target).await;
                    }
                    start.elapsed()
                }
            });
        });
    }

    let tally = Arc::new(Tally::default());
    let org = rt.block_on(async {
        let transport: Arc<dyn Transport> = Arc::new(
            NatsTransportBuilder::new()
                .with_server(server.url())
                .with_org("fan")
                .build()
                .await
                .expect("a NATS transport"),
        );
        org(transport, "fan", &tally).await
    });
    runtime_then_finish(group, &rt, org, tally);
    drop(server);
}

#[cfg(feature = "nats")]
criterion_group!(benches, memory, nats);
#[cfg(not(feature = "nats"))]
criterion_group!(benches, memory);
criterion_main!(benches);
