//! Error kinds and provisioning on a real nats-server: full streams, payload
//! limits, consumer conflicts, deleted consumers, idempotent streams.

mod common;

use std::time::Duration;

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::{SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport, TransportError};
use agentorg_core::Name;
use agentorg_nats::{NatsTransport, StreamKind, StreamLimits};
use agentorg_testkit::nats_or_skip;
use futures::StreamExt;

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn p(s: &str) -> SubjectPattern {
    SubjectPattern::parse(s).unwrap()
}

/// A stream at its message or byte limit refuses the publish with the
/// retryable `Full` (`discard: new`) and keeps what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_with_full() {
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_limits(StreamKind::Events, StreamLimits::new(1 << 20, 3))
        .with_limits(StreamKind::DeadLetter, StreamLimits::new(2048, 1000))
        .build()
        .await
        .unwrap();
    let s = Subjects::new(org.clone());
    let subject = s.event(&[n("e")]);
    for i in 0..3 {
        t.publish(&subject, format!("{i}").into(), PublishOptions::default())
            .await
            .unwrap();
    }
    match t
        .publish(&subject, "3".into(), PublishOptions::default())
        .await
    {
        Err(e @ TransportError::Full { .. }) => assert!(e.is_retryable()),
        other => panic!("4th publish into a 3-message stream: {other:?}"),
    }
    let big = vec![b'x'; 1500];
    t.publish(&s.alerts(), big.clone().into(), PublishOptions::default())
        .await
        .unwrap();
    match t
        .publish(&s.alerts(), big.into(), PublishOptions::default())
        .await
    {
        Err(TransportError::Full { message }) => assert!(message.contains("bytes"), "{message}"),
        other => panic!("publish past max_bytes: {other:?}"),
    }
    assert_eq!(
        t.stream_info(StreamKind::Events)
            .await
            .unwrap()
            .state
            .messages,
        3
    );
}

/// A payload above the server's `max_payload` is `TooLarge`, durable or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_above_max_payload_is_too_large() {
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let s = Subjects::new(org.clone());
    let huge = bytes::Bytes::from(vec![b'x'; 2 << 20]);
    for r in [
        t.publish(&s.alerts(), huge.clone(), PublishOptions::default())
            .await
            .map(|_| ()),
        t.publish_ephemeral(&s.rpc(&n("x")), huge.clone()).await,
        t.request(&s.rpc(&n("x")), huge.clone(), Duration::from_secs(1))
            .await
            .map(|_| ()),
    ] {
        match r {
            Err(TransportError::TooLarge { size, limit }) => {
                assert_eq!(size, 2 << 20);
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The server's info on the inbox stream's consumer `name`.
async fn inbox_consumer_info(t: &NatsTransport, name: &str) -> serde_json::Value {
    let stream = t.layout().stream_name(StreamKind::Inbox);
    let info = t
        .jetstream_request(&format!("CONSUMER.INFO.{stream}.{name}"), "{}".into())
        .await
        .unwrap();
    serde_json::from_slice(&info).unwrap()
}

/// Consumers: filters are checked against the org's streams; a changed
/// filter is updated in place; overlapping work-queue consumers are refused; a
/// consumer may take several filters of one stream; ack wait updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_configuration_is_checked() {
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let o = org.as_str();
    let inbox = ConsumerConfig::new(n("a"), p(&format!("{o}.agent.a.inbox.*")));
    t.ensure_consumer(&inbox).await.unwrap();
    t.ensure_consumer(&inbox.clone().with_ack_wait(Duration::from_secs(7)))
        .await
        .unwrap();
    let info = inbox_consumer_info(&t, "a").await;
    assert_eq!(
        info["config"]["ack_wait"], 7_000_000_000u64,
        "ack wait updated"
    );
    // A changed filter is updated in place.
    t.ensure_consumer(&ConsumerConfig::new(
        n("a"),
        p(&format!("{o}.agent.b.inbox.*")),
    ))
    .await
    .unwrap();
    let info = inbox_consumer_info(&t, "a").await;
    assert_eq!(
        info["config"]["filter_subject"],
        format!("{o}.agent.b.inbox.*"),
        "filter updated: {info}"
    );
    t.ensure_consumer(&inbox).await.unwrap();
    match t
        .ensure_consumer(&ConsumerConfig::new(
            n("a2"),
            p(&format!("{o}.agent.a.inbox.x")),
        ))
        .await
    {
        Err(TransportError::Conflict { .. }) => {}
        other => panic!("overlapping work-queue consumer: {other:?}"),
    }
    for bad in [
        ConsumerConfig::new(n("b"), p(&format!("{o}.events.>")))
            .with_filter(p(&format!("{o}.alerts"))),
        ConsumerConfig::new(n("c"), p(&format!("{o}.rpc.x"))),
        ConsumerConfig::new(n("d"), p("elsewhere.events.>")),
    ] {
        match t.ensure_consumer(&bad).await {
            Err(TransportError::InvalidInput { .. }) => {}
            other => panic!("{:?}: {other:?}", bad.filters),
        }
    }
    let both = ConsumerConfig::new(n("e"), p(&format!("{o}.events.x.>")))
        .with_filter(p(&format!("{o}.meeting.m.>")));
    t.ensure_consumer(&both).await.unwrap();
    t.ensure_consumer(&both).await.unwrap();
    let mut c = t.consume(&both.name).await.unwrap();
    let s = Subjects::new(org.clone());
    t.publish(
        &s.meeting(&n("m"), &[n("turn")]),
        "m".into(),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    t.publish(
        &s.event(&[n("x"), n("y")]),
        "e".into(),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let d = c.next().await.unwrap().unwrap();
        d.ack().await.unwrap();
    }
}

/// Deleting a consumer ends its binders' streams with `NotFound`; deleting
/// or binding a missing one is `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_consumer_ends_its_streams() {
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let c = ConsumerConfig::new(n("gone"), p(&format!("{org}.events.>")));
    t.ensure_consumer(&c).await.unwrap();
    let mut bound = t.consume(&c.name).await.unwrap();
    t.delete_consumer(&c.name).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(30), bound.next()).await {
        Ok(Some(Err(TransportError::NotFound { .. }))) => {}
        other => panic!("a bound stream after delete: {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), bound.next())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        t.delete_consumer(&c.name).await,
        Err(TransportError::NotFound { .. })
    ));
    assert!(matches!(
        t.consume(&c.name).await.map(|_| ()),
        Err(TransportError::NotFound { .. })
    ));
}

/// Streams: building again is a no-op; other limits or replicas are
/// applied in place; a stream of another shape under the name is a conflict.
/// Publishing outside the org's durable subjects and requesting inside them
/// are refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_provisioned_idempotently() {
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let again = common::transport(&nats.url(), &org).await;
    let info = again.stream_info(StreamKind::Inbox).await.unwrap();
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    let wider = common::builder([nats.url()], &org)
        .with_limits(StreamKind::Events, StreamLimits::new(5 << 20, 77))
        .build()
        .await
        .unwrap();
    let info = wider.stream_info(StreamKind::Events).await.unwrap();
    assert_eq!(info.config.max_messages, 77);
    // Someone else's stream under our name.
    let other = unique_org();
    let js = async_nats::jetstream::new(t.client().clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("AGENTORG_{}_EVENTS", other.as_str().to_ascii_uppercase()),
        subjects: vec![format!("{other}.events.>")],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    match common::builder([nats.url()], &other).build().await {
        Err(TransportError::Conflict { message }) => {
            assert!(message.contains("retention"), "{message}")
        }
        other => panic!("a stream of another shape: {:?}", other.map(|_| ())),
    }
    let s = Subjects::new(org.clone());
    assert!(matches!(
        t.publish(&s.rpc(&n("x")), "x".into(), PublishOptions::default())
            .await,
        Err(TransportError::InvalidInput { .. })
    ));
    assert!(matches!(
        t.request(&s.alerts(), "x".into(), Duration::from_secs(1))
            .await,
        Err(TransportError::InvalidInput { .. })
    ));
    match t
        .request(&s.rpc(&n("nobody")), "x".into(), Duration::from_secs(1))
        .await
    {
        Err(TransportError::NoResponders { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// The builder refuses what cannot work before connecting.
#[tokio::test]
async fn builder_validates() {
    let base = || NatsTransport::builder().with_server("nats://127.0.0.1:1");
    for b in [
        NatsTransport::builder().with_org("o"),
        base(),
        base().with_org("Not A Name"),
        base().with_org("o").with_replicas(0),
        base().with_org("o").with_batch(0),
        base()
            .with_org("o")
            .with_pull_expiry(Duration::from_secs(1), Duration::from_secs(1)),
        // Its deadlines would overflow.
        base()
            .with_org("o")
            .with_pull_expiry(Duration::MAX, Duration::from_secs(5)),
        base()
            .with_org("o")
            .with_pull_expiry(Duration::MAX, Duration::MAX / 4),
    ] {
        match b.build().await {
            Err(TransportError::InvalidInput { .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    // Nothing listens on port 1.
    match base()
        .with_org("o")
        .with_connect_timeout(Duration::from_millis(500))
        .build()
        .await
    {
        Err(e @ TransportError::Unavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
