//! The transport conformance suite and the memory transport's own limits,
//! on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::clock::{Clock, MonotonicClock};
use agentorg_core::conformance::{self, transport as suite, unique_name, unique_org};
use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{
    ConsumerConfig, DeliverFrom, MemoryTransport, PublishOptions, Transport, TransportError,
};
use bytes::Bytes;
use chrono::TimeDelta;
use futures::StreamExt;

fn t() -> Arc<dyn Transport> {
    Arc::new(MemoryTransport::new())
}

#[tokio::test(start_paused = true)]
async fn conformance_suite() {
    suite::run_all(t(), unique_org()).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_suite_through_arc_and_box_wrappers() {
    let boxed: Box<dyn Transport> = Box::new(MemoryTransport::new());
    suite::publish_consume_ack(Arc::new(boxed), unique_org()).await;
    let arc: Arc<dyn Transport> = Arc::new(Arc::new(MemoryTransport::new()));
    suite::redelivery_attempts(arc, unique_org()).await;
}

fn subject(s: &str) -> Subject {
    Subject::parse(s).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_log_refuses_publishes_until_consumers_catch_up() {
    let t = MemoryTransport::builder().max_messages(3).build().unwrap();
    let name = unique_name("c");
    t.ensure_consumer(&ConsumerConfig::new(
        name.clone(),
        SubjectPattern::parse("a.>").unwrap(),
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        t.publish(
            &subject("a.x"),
            Bytes::from_static(b"m"),
            PublishOptions::default(),
        )
        .await
        .unwrap();
    }
    let full = t
        .publish(
            &subject("a.x"),
            Bytes::from_static(b"m"),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(full, TransportError::Full { .. }), "{full:?}");
    assert!(full.is_retryable());
    assert_eq!(t.stored_messages(), 3, "nothing was dropped to make room");
    let mut c = t.consume(&name).await.unwrap();
    c.next().await.unwrap().unwrap().ack().await.unwrap();
    assert_eq!(
        t.stored_messages(),
        2,
        "an acknowledged message leaves the log"
    );
    t.publish(
        &subject("a.x"),
        Bytes::from_static(b"m"),
        PublishOptions::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn byte_limits_refuse_rather_than_forget() {
    let t = MemoryTransport::builder()
        .max_bytes(10)
        .max_payload(8)
        .build()
        .unwrap();
    let big = t
        .publish(
            &subject("a"),
            Bytes::from_static(b"123456789"),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        big,
        TransportError::TooLarge { size: 9, limit: 8 }
    ));
    t.publish(
        &subject("a"),
        Bytes::from_static(b"12345678"),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    let full = t
        .publish(
            &subject("a"),
            Bytes::from_static(b"123"),
            PublishOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(full, TransportError::Full { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_is_told_what_it_missed() {
    let t = MemoryTransport::builder()
        .subscriber_buffer(2)
        .build()
        .unwrap();
    let mut sub = t
        .subscribe(&SubjectPattern::parse("e.>").unwrap())
        .await
        .unwrap();
    for i in 0..5u8 {
        t.publish_ephemeral(&subject("e.x"), Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    match sub.next().await.unwrap() {
        Err(TransportError::Lagged { missed }) => assert_eq!(missed, 3),
        other => panic!("expected Lagged first, got {other:?}"),
    }
    assert_eq!(&sub.next().await.unwrap().unwrap().payload[..], &[0]);
    assert_eq!(&sub.next().await.unwrap().unwrap().payload[..], &[1]);
}

#[tokio::test(start_paused = true)]
async fn every_matching_consumer_gets_a_message_before_it_leaves_the_log() {
    let t = MemoryTransport::new();
    let (a, b) = (unique_name("a"), unique_name("b"));
    for n in [&a, &b] {
        t.ensure_consumer(&ConsumerConfig::new(
            n.clone(),
            SubjectPattern::parse("ev.>").unwrap(),
        ))
        .await
        .unwrap();
    }
    t.publish(
        &subject("ev.x"),
        Bytes::from_static(b"1"),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    let mut ca = t.consume(&a).await.unwrap();
    ca.next().await.unwrap().unwrap().ack().await.unwrap();
    assert_eq!(t.stored_messages(), 1, "b has not had it yet");
    let mut cb = t.consume(&b).await.unwrap();
    cb.next().await.unwrap().unwrap().ack().await.unwrap();
    assert_eq!(t.stored_messages(), 0);
}

#[tokio::test(start_paused = true)]
async fn consumer_management_errors() {
    let t = MemoryTransport::new();
    let n = unique_name("c");
    let config = ConsumerConfig::new(n.clone(), SubjectPattern::parse("x.>").unwrap());
    t.ensure_consumer(&config).await.unwrap();
    // Other filters are updated in place: an undelivered message only the
    // old ones matched is let go (and leaves the log: no one else holds it).
    t.publish(
        &Subject::parse("x.1").unwrap(),
        "x".into(),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(t.stored_messages(), 1);
    let other = ConsumerConfig::new(n.clone(), SubjectPattern::parse("y.>").unwrap());
    t.ensure_consumer(&other).await.unwrap();
    assert_eq!(t.stored_messages(), 0, "x.1 let go with the x filter");
    let bad = ConsumerConfig::new(unique_name("c"), SubjectPattern::parse("x").unwrap())
        .with_max_ack_pending(0);
    assert!(matches!(
        t.ensure_consumer(&bad).await,
        Err(TransportError::InvalidInput { .. })
    ));
    let mut bound = t.consume(&n).await.unwrap();
    t.delete_consumer(&n).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(1), bound.next()).await {
        Ok(Some(Err(TransportError::NotFound { .. }))) => {}
        other => panic!("a bound stream of a deleted consumer: {other:?}"),
    }
    assert!(bound.next().await.is_none(), "then it ends");
    assert!(matches!(
        t.delete_consumer(&n).await,
        Err(TransportError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn dedupe_window_expires() {
    let t = MemoryTransport::builder()
        .duplicate_window(Duration::from_secs(10))
        .build()
        .unwrap();
    let opts = PublishOptions::with_msg_id("same");
    assert!(
        !t.publish(&subject("a"), Bytes::new(), opts.clone())
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        t.publish(&subject("a"), Bytes::new(), opts.clone())
            .await
            .unwrap()
            .duplicate
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        !t.publish(&subject("a"), Bytes::new(), opts)
            .await
            .unwrap()
            .duplicate
    );
    let _ = conformance::EVENTUALLY;
}

#[tokio::test(start_paused = true)]
async fn dedupe_ids_are_bounded_by_count_too() {
    let t = MemoryTransport::builder()
        .max_dedupe_ids(3)
        .build()
        .unwrap();
    let publish = |id: &str| {
        let t = t.clone();
        let id = id.to_owned();
        async move {
            t.publish(&subject("a"), Bytes::new(), PublishOptions::with_msg_id(id))
                .await
                .unwrap()
                .duplicate
        }
    };
    for id in ["1", "2", "3", "4"] {
        assert!(!publish(id).await);
    }
    assert!(publish("4").await, "recent ids are remembered");
    assert!(
        !publish("1").await,
        "the oldest id was forgotten past the cap"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_subscription_stops_receiving_and_is_forgotten() {
    let t = MemoryTransport::new();
    let sub = t
        .subscribe(&SubjectPattern::parse("r.>").unwrap())
        .await
        .unwrap();
    assert!(format!("{t:?}").contains("subscribers: 1"), "{t:?}");
    drop(sub);
    assert!(format!("{t:?}").contains("subscribers: 0"), "{t:?}");
    let nobody = t
        .request(&subject("r.x"), Bytes::new(), Duration::from_secs(1))
        .await;
    assert!(matches!(nobody, Err(TransportError::NoResponders { .. })));
}

/// A consumer deleted and created again under the same name: the old binder
/// learns it is gone (and does not wait forever), old acks do nothing, and a
/// new binder gets the new consumer's messages.
#[tokio::test(start_paused = true)]
async fn a_recreated_consumer_is_a_new_consumer() {
    let t = MemoryTransport::new();
    let name = unique_name("c");
    let config = ConsumerConfig::new(name.clone(), SubjectPattern::parse("q.>").unwrap());
    t.ensure_consumer(&config).await.unwrap();
    t.publish(
        &subject("q.a"),
        Bytes::from_static(b"1"),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    let mut old = t.consume(&name).await.unwrap();
    let stale = old.next().await.unwrap().unwrap();
    t.delete_consumer(&name).await.unwrap();
    t.ensure_consumer(&config).await.unwrap();
    assert!(matches!(
        old.next().await,
        Some(Err(TransportError::NotFound { .. }))
    ));
    assert!(matches!(
        stale.ack().await,
        Err(TransportError::NotFound { .. })
    ));
    t.publish(
        &subject("q.a"),
        Bytes::from_static(b"2"),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    let mut new = t.consume(&name).await.unwrap();
    let d = new.next().await.unwrap().unwrap();
    assert_eq!(
        &d.raw()[..],
        b"2",
        "the deleted consumer's message is not the new one's"
    );
    d.ack().await.unwrap();
}

/// Publishes `body` to `q.a`.
async fn put(t: &MemoryTransport, body: &'static [u8]) {
    t.publish(
        &subject("q.a"),
        Bytes::from_static(body),
        PublishOptions::default(),
    )
    .await
    .unwrap();
}

/// The raw bodies a consumer created now with `deliver` gets, acknowledged,
/// until it has been quiet for a second.
async fn taken(t: &MemoryTransport, deliver: DeliverFrom) -> Vec<Bytes> {
    let name = unique_name("c");
    let config = ConsumerConfig::new(name.clone(), SubjectPattern::parse("q.>").unwrap())
        .with_deliver(deliver);
    t.ensure_consumer(&config).await.unwrap();
    let mut c = t.consume(&name).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), c.next()).await {
        let d = d.unwrap();
        got.push(d.raw().clone());
        d.ack().await.unwrap();
    }
    got
}

#[tokio::test(start_paused = true)]
async fn since_starts_at_the_first_message_stored_at_or_after_the_time() {
    // The transport stamps messages with the clock the test reads.
    let clock = Arc::new(MonotonicClock::new());
    let t = MemoryTransport::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .build()
        .unwrap();
    // A consumer that holds everything, so nothing leaves the log.
    let keep = ConsumerConfig::new(unique_name("keep"), SubjectPattern::parse("q.>").unwrap());
    t.ensure_consumer(&keep).await.unwrap();
    put(&t, b"a").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let at_b = clock.now();
    put(&t, b"b").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    put(&t, b"c").await;

    let from_b = taken(&t, DeliverFrom::Since(at_b)).await;
    assert_eq!(from_b, ["b", "c"], "at the time counts, earlier does not");
    let after_b = taken(&t, DeliverFrom::Since(at_b + TimeDelta::nanoseconds(1))).await;
    assert_eq!(after_b, ["c"]);
    let all = taken(&t, DeliverFrom::All).await;
    assert_eq!(all, ["a", "b", "c"]);
    assert!(taken(&t, DeliverFrom::New).await.is_empty());
    let future = DeliverFrom::Since(clock.now() + TimeDelta::hours(1));
    assert!(
        taken(&t, future).await.is_empty(),
        "a future time takes none"
    );
}

#[tokio::test(start_paused = true)]
async fn ensuring_again_keeps_the_start_position_and_the_acknowledged_state() {
    let t = MemoryTransport::new();
    put(&t, b"before").await;
    let name = unique_name("c");
    let config = ConsumerConfig::new(name.clone(), SubjectPattern::parse("q.>").unwrap())
        .with_deliver(DeliverFrom::New);
    t.ensure_consumer(&config).await.unwrap();
    put(&t, b"1").await;
    let mut c = t.consume(&name).await.unwrap();
    let d = c.next().await.unwrap().unwrap();
    assert_eq!(&d.raw()[..], b"1");
    d.ack().await.unwrap();
    // Another start position on the existing consumer: accepted, and neither
    // the earlier message nor the acknowledged one comes.
    t.ensure_consumer(&config.clone().with_deliver(DeliverFrom::All))
        .await
        .unwrap();
    put(&t, b"2").await;
    let d = c.next().await.unwrap().unwrap();
    assert_eq!(&d.raw()[..], b"2");
    d.ack().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .is_err(),
        "nothing else is delivered"
    );
}
