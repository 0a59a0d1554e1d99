//! A 3-node nats-server cluster with R3 streams: killing the stream leader
//! in the middle of a run loses nothing.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::Subjects;
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_nats::StreamKind;
use agentorg_testkit::{nats_or_skip, NatsCluster};
use futures::StreamExt;

/// 600 durable publishes (one at a time, each with a message id) into an
/// R3 inbox stream while a consumer takes and acknowledges them; a third of
/// the way in, the stream's leader is killed with SIGKILL. Every message is
/// delivered; publishes pause while a new leader is elected (the pause is
/// printed), none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_nothing() {
    common::init_tracing();
    let Some(mut cluster) = nats_or_skip!(NatsCluster::start(3)) else {
        return;
    };
    let org = unique_org();
    // The R3 streams are created at build time; a loaded machine can take
    // longer than a request's timeout over one (seen: 10 s), so the build
    // is asked again — streams are created idempotently — for up to 90 s.
    let started = std::time::Instant::now();
    let t = loop {
        let built = common::builder(cluster.urls(), &org)
            .with_replicas(3)
            .with_request_timeout(Duration::from_secs(10))
            .with_publish_timeout(Duration::from_secs(60))
            .build()
            .await;
        match built {
            Ok(t) => break t,
            Err(e) if e.is_retryable() && started.elapsed() < Duration::from_secs(90) => {
                eprintln!("building the R3 transport: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("building the R3 transport: {e}"),
        }
    };
    let info = t.stream_info(StreamKind::Inbox).await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let n = |v: &str| Name::new(v).unwrap();
    let s = Subjects::new(org.clone());
    let subject = s.inbox(&n("x"), &n("p"));
    let consumer =
        ConsumerConfig::new(n("in-x"), s.inbox_any(&n("x"))).with_ack_wait(Duration::from_secs(5));
    t.ensure_consumer(&consumer).await.unwrap();
    let mut deliveries = t.consume(&consumer.name).await.unwrap();
    let received: Arc<Mutex<HashSet<String>>> = Arc::default();
    let r = Arc::clone(&received);
    let collector = tokio::spawn(async move {
        let mut redelivered = 0usize;
        while let Some(d) = deliveries.next().await {
            let d = d.expect("the consumer stream goes on");
            let text = String::from_utf8(d.raw().to_vec()).unwrap();
            if !r.lock().unwrap().insert(text) {
                redelivered += 1;
            }
            let _ = d.ack().await;
        }
        redelivered
    });
    const N: usize = 600;
    let published = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&published);
    let publisher = {
        let t = t.clone();
        tokio::spawn(async move {
            let mut acked_at = Vec::with_capacity(N);
            for i in 0..N {
                t.publish(
                    &subject,
                    format!("m{i}").into(),
                    PublishOptions::with_msg_id(format!("m{i}")),
                )
                .await
                .unwrap_or_else(|e| panic!("publish {i}: {e}"));
                acked_at.push(Instant::now());
                p.fetch_add(1, Ordering::SeqCst);
            }
            acked_at
        })
    };
    while published.load(Ordering::SeqCst) < N / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let info = t.stream_info(StreamKind::Inbox).await.unwrap();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");
    let victim = cluster.index_of(&leader).expect("the leader is a node");
    let killed_after = published.load(Ordering::SeqCst);
    let killed = Instant::now();
    cluster.kill9(victim);
    let acked_at = publisher.await.unwrap();
    let (pause_at, pause) = acked_at
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1].duration_since(w[0])))
        .max_by_key(|(_, d)| *d)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} delivered",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !received.lock().unwrap().contains(&format!("m{i}")))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    collector.abort();
    let info = t.stream_info(StreamKind::Inbox).await.unwrap();
    eprintln!(
        "killed stream leader {leader} after {killed_after} publishes; the longest pause between \
         two acknowledged publishes was {pause:?} (before publish {pause_at}); all {N} delivered; \
         new leader {:?}; {:?} after the kill",
        info.cluster.and_then(|c| c.leader),
        killed.elapsed()
    );
}
