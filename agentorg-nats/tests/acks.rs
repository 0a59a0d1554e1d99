//! Acknowledgements on a real nats-server.

mod common;

use std::time::Duration;

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::{SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_testkit::nats_or_skip;
use futures::StreamExt;

/// An ack sent after the ack wait ran out (the caller held the delivery
/// too long) still settles the message before the binder asks for more:
/// the next pull does not get it again. (JetStream processes acks and pull
/// requests on separate queues, so a late fire-and-forget ack could lose the
/// race against the pull that follows it; late acks are confirmed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_is_not_followed_by_a_redelivery() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let s = Subjects::new(org.clone());
    for round in 0..5 {
        let name = Name::new(format!("late{round}")).unwrap();
        let subject = s.event(std::slice::from_ref(&name));
        let c = ConsumerConfig::new(name.clone(), SubjectPattern::from(&subject))
            .with_ack_wait(Duration::from_millis(500));
        t.ensure_consumer(&c).await.unwrap();
        let mut deliveries = t.consume(&c.name).await.unwrap();
        t.publish(&subject, "once".into(), PublishOptions::default())
            .await
            .unwrap();
        let d = deliveries.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        d.ack().await.unwrap();
        if let Ok(Some(again)) =
            tokio::time::timeout(Duration::from_millis(1500), deliveries.next()).await
        {
            panic!(
                "round {round}: delivered again after a late ack: attempt {:?}",
                again.map(|d| d.attempt())
            );
        }
    }
}
