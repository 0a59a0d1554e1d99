//! The binder's pull requests on a real nats-server: they keep coming with
//! the smallest batch, and are renewed when they expire; and its `pulled`
//! step event.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::{Subject, SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, DeliveryStream, PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_nats::{NatsTransport, StreamKind};
use agentorg_testkit::nats_or_skip;
use futures::StreamExt;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

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

/// Consumer `name` of the org's event subject `name`, bound: the subject
/// and its deliveries.
async fn bound(t: &NatsTransport, org: &Name, name: &Name) -> (Subject, DeliveryStream) {
    let subject = Subjects::new(org.clone()).event(std::slice::from_ref(name));
    let c = ConsumerConfig::new(name.clone(), SubjectPattern::from(&subject));
    t.ensure_consumer(&c).await.unwrap();
    (subject, t.consume(&c.name).await.unwrap())
}

/// With one or two messages per pull request, every message is asked for
/// soon after the one before it was taken: thousands in a row, each in
/// well under the heartbeat check (2 × 5 s). async-nats's own pull stream
/// lost count of a request answered before it had counted it, and then
/// stopped asking until that check — every ~10 s of such a loop with one,
/// now and then with two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_keep_pulling() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    for batch in [1, 2] {
        let t = common::builder([nats.url()], &org)
            .with_batch(batch)
            .build()
            .await
            .unwrap();
        let name = Name::new(format!("b{batch}")).unwrap();
        let (subject, mut deliveries) = bound(&t, &org, &name).await;
        for i in 0..3_000u32 {
            t.publish(&subject, i.to_string().into(), PublishOptions::default())
                .await
                .unwrap();
            let d = tokio::time::timeout(Duration::from_secs(8), deliveries.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("batch {batch}: message {i} did not come: the pull stalled")
                })
                .unwrap()
                .unwrap();
            assert_eq!(&d.raw()[..], i.to_string().as_bytes());
            d.ack().await.unwrap();
        }
        assert!(waiting(&t, &name).await <= 1);
    }
}

/// A pull request that expires with nothing to deliver is asked again, and
/// the idle heartbeats of the one waiting keep the binder from binding
/// again: over three expiries (4 s each) about one request each goes out
/// (binding again whenever two heartbeats seem missed would add a
/// consumer-info request and a pull request every 4 s), at most one waits,
/// and a message published then is delivered. Heartbeats every 2 s: one
/// would have to come 2 s late for the binder to bind again, which a loaded
/// machine does not make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_pull_requests_are_renewed() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_pull_expiry(Duration::from_secs(4), Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let name = Name::new("idle").unwrap();
    let (subject, mut deliveries) = bound(&t, &org, &name).await;
    let received = || nats.monitor("/varz").unwrap()["in_msgs"].as_u64().unwrap();
    let before = received();
    // Idle through three expiries: nothing comes, not even an error.
    if let Ok(item) = tokio::time::timeout(Duration::from_secs(12), deliveries.next()).await {
        panic!(
            "an idle consumer yielded {:?}",
            item.map(|r| r.map(|d| d.attempt()))
        );
    }
    let sent = received() - before;
    assert!(sent <= 8, "{sent} messages to the server in 12 s of idling");
    assert!(waiting(&t, &name).await <= 1);
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

/// A server restart loses the pull requests waiting on it: on reconnecting
/// the binder asks again at once, on a new inbox, so each next message comes
/// on its first delivery within seconds — not after the heartbeat check (2 ×
/// 20 s here), which is how a binder that did not hear of the reconnection
/// would find out. (A `force_reconnect` to the same server would not tell
/// them apart: the server can keep the request and deliver to the same
/// inbox once it is subscribed again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_asks_again() {
    common::init_tracing();
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_pull_expiry(Duration::from_secs(60), Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let name = Name::new("again").unwrap();
    let (subject, mut deliveries) = bound(&t, &org, &name).await;
    let connects = || {
        t.client()
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for round in 0..4u32 {
        if (1..3).contains(&round) {
            let before = connects();
            nats.kill9();
            nats.restart().unwrap();
            tokio::time::timeout(Duration::from_secs(20), async {
                while connects() == before {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("reconnected");
        }
        // Retried if its acknowledgement is lost in the reconnection.
        let id = PublishOptions::with_msg_id(format!("r{round}"));
        t.publish(&subject, round.to_string().into(), id)
            .await
            .unwrap();
        let d = loop {
            let d = tokio::time::timeout(Duration::from_secs(15), deliveries.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: not delivered after a reconnection"))
                .unwrap()
                .unwrap();
            if &d.raw()[..] == round.to_string().as_bytes() {
                break d;
            }
            // The server writes its consumer's state behind: a kill -9 can
            // lose an earlier round's (fire-and-forget) ack, and that message
            // then comes again. Acknowledged again; nothing else may come.
            let earlier: u32 = std::str::from_utf8(d.raw())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("round {round}: an unexpected delivery {:?}", d.raw()));
            assert!(earlier < round, "round {round}: delivered {earlier}");
            d.ack().await.unwrap();
        };
        assert_eq!(d.attempt(), 1, "round {round}: delivered before");
        d.ack().await.unwrap();
    }
    // The request the last delivery left partly answered, and the next.
    assert!(waiting(&t, &name).await <= 2);
}

/// The fields of each step event (`agentorg_core::runtime::STEPS`).
#[derive(Clone, Default)]
struct Steps(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl<S: tracing::Subscriber> Layer<S> for Steps {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let text = format!("{value:?}").trim_matches('"').to_owned();
                self.0.insert(field.name().to_owned(), text);
            }
        }
        if event.metadata().target() == agentorg_core::runtime::STEPS {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(fields.0);
        }
    }
}

/// Each message the binder takes off the connection yields one `pulled`
/// step event, before it is decoded, with the consumer, the subject and
/// the message's `Nats-Msg-Id` (none without one).
#[tokio::test(flavor = "current_thread")]
async fn each_message_pulled_is_a_step_event() {
    // The global subscriber first, as in the other tests (callsite interest
    // is cached process-wide), then this thread's, which the test's one
    // thread runs the binder under.
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let steps = Steps::default();
    let _on = tracing_subscriber::registry()
        .with(steps.clone())
        .set_default();
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let name = Name::new("stepped").unwrap();
    let (subject, mut deliveries) = bound(&t, &org, &name).await;
    t.publish(&subject, "one".into(), PublishOptions::with_msg_id("m-1"))
        .await
        .unwrap();
    t.publish(&subject, "two".into(), PublishOptions::default())
        .await
        .unwrap();
    for body in ["one", "two"] {
        let d = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("delivered")
            .unwrap()
            .unwrap();
        assert_eq!(&d.raw()[..], body.as_bytes());
        d.ack().await.unwrap();
    }
    let pulled: Vec<_> = steps
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|f| f.get("step").map(String::as_str) == Some("pulled"))
        .map(|f| {
            (
                f.get("msg_id").cloned(),
                f.get("consumer").cloned(),
                f.get("subject").cloned(),
            )
        })
        .collect();
    let expected = |id: Option<&str>| {
        (
            id.map(str::to_owned),
            Some(name.to_string()),
            Some(subject.to_string()),
        )
    };
    assert_eq!(pulled, [expected(Some("m-1")), expected(None)]);
}
