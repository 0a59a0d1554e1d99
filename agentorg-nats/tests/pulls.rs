//! The binder's pull requests on a real nats-server: they keep coming with
//! the smallest batch, and are renewed when they expire.

mod common;

use std::time::Duration;

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::{SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_nats::{NatsTransport, StreamKind};
use agentorg_testkit::nats_or_skip;
use futures::StreamExt;

/// How many pull requests wait on the server for consumer `name` of the
/// events stream.
async fn waiting(t: &NatsTransport, name: &Name) -> u64 {
    let stream = t.layout().stream_name(StreamKind::Events);
    let info = t
        .jetstream_request(&format!("CONSUMER.INFO.{stream}.{name}"), "{}".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    info["num_waiting"].as_u64().unwrap_or_default()
}

/// With one message per pull request, every message is asked for after the
/// one before it was taken: thousands in a row, each in well under the
/// heartbeat check (2 × 5 s). async-nats's own pull stream lost count of a
/// request answered before it had counted it, and then stopped asking
/// until that check — every ~10 s of such a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_one_keeps_pulling() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_batch(1)
        .build()
        .await
        .unwrap();
    let s = Subjects::new(org.clone());
    let name = Name::new("one").unwrap();
    let subject = s.event(std::slice::from_ref(&name));
    let c = ConsumerConfig::new(name.clone(), SubjectPattern::from(&subject));
    t.ensure_consumer(&c).await.unwrap();
    let mut deliveries = t.consume(&c.name).await.unwrap();
    for i in 0..5_000u32 {
        t.publish(&subject, i.to_string().into(), PublishOptions::default())
            .await
            .unwrap();
        let d = tokio::time::timeout(Duration::from_secs(8), deliveries.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} did not come: the pull stalled"))
            .unwrap()
            .unwrap();
        assert_eq!(&d.raw()[..], i.to_string().as_bytes());
        d.ack().await.unwrap();
    }
    assert!(waiting(&t, &name).await <= 1);
}

/// A pull request that expires with nothing to deliver is asked again, and
/// the idle heartbeats of the one waiting keep the binder from binding
/// again: after several expiries one request waits (not one per bind) and a
/// message published then is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_pull_requests_are_renewed() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_pull_expiry(Duration::from_secs(1), Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let s = Subjects::new(org.clone());
    let name = Name::new("idle").unwrap();
    let subject = s.event(std::slice::from_ref(&name));
    let c = ConsumerConfig::new(name.clone(), SubjectPattern::from(&subject));
    t.ensure_consumer(&c).await.unwrap();
    let mut deliveries = t.consume(&c.name).await.unwrap();
    let received = || nats.monitor("/varz").unwrap()["in_msgs"].as_u64().unwrap();
    let before = received();
    // Idle through four expiries: nothing comes, not even an error.
    if let Ok(item) = tokio::time::timeout(Duration::from_secs(4), deliveries.next()).await {
        panic!(
            "an idle consumer yielded {:?}",
            item.map(|r| r.map(|d| d.attempt()))
        );
    }
    // About one request per expiry; binding again at each missed heartbeat
    // (every 500 ms) would add a consumer-info request and a pull request
    // each time: 16 or so.
    let sent = received() - before;
    assert!(sent <= 8, "{sent} messages to the server in 4 s of idling");
    assert!(
        waiting(&t, &name).await <= 2,
        "expired requests were not replaced one for one"
    );
    t.publish(&subject, "late".into(), PublishOptions::default())
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("delivered after the expiries")
        .unwrap()
        .unwrap();
    assert_eq!(&d.raw()[..], b"late");
    d.ack().await.unwrap();
}
