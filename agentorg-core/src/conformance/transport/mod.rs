//! The transport conformance suite.
//!
//! Every function takes the transport and an org whose durable subjects the
//! transport captures (`<org>.agent.>`, `<org>.events.>`, …; see
//! [`Subjects::durable`]). Each uses fresh subjects and consumer names, so the
//! functions may share one transport and run in any order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::{fail, unique_name, EVENTUALLY};
use crate::codec::{Codec, DecodeError};
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::subject::{Subject, SubjectPattern, Subjects};
use crate::transport::{
    ConsumerConfig, DeliverFrom, Delivery, DeliveryStream, PublishOptions, Subscription, Transport,
    TransportError, TransportExt,
};

/// The ack wait the suite configures: short, for real servers too.
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// How long the suite watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(2500);

/// Runs every behaviour of the suite, one after the other.
pub async fn run_all(t: Arc<dyn Transport>, org: Name) {
    publish_consume_ack(Arc::clone(&t), org.clone()).await;
    redelivery_attempts(Arc::clone(&t), org.clone()).await;
    nak_delay_honoured(Arc::clone(&t), org.clone()).await;
    terminate_stops_redelivery(Arc::clone(&t), org.clone()).await;
    progress_extends_ack_wait(Arc::clone(&t), org.clone()).await;
    wildcard_routing(Arc::clone(&t), org.clone()).await;
    per_subject_order(Arc::clone(&t), org.clone()).await;
    request_reply_and_timeout(Arc::clone(&t), org.clone()).await;
    decode_errors_keep_raw_bytes(Arc::clone(&t), org.clone()).await;
    backpressure_max_ack_pending(Arc::clone(&t), org.clone()).await;
    dedupe_by_message_id(Arc::clone(&t), org.clone()).await;
    shared_consumer_splits_work(Arc::clone(&t), org.clone()).await;
    late_binder_catches_up(Arc::clone(&t), org.clone()).await;
    deliver_from_start_position(Arc::clone(&t), org.clone()).await;
    consumer_lag_counts_unprocessed(Arc::clone(&t), org.clone()).await;
    consumer_filters_updated_in_place(Arc::clone(&t), org.clone()).await;
    ephemeral_fan_out(t, org).await;
}

mod consumers;
pub use consumers::*;

struct Fx {
    t: Arc<dyn Transport>,
    s: Subjects,
    /// A unique event prefix token for this run.
    topic: Name,
}

impl Fx {
    fn new(t: Arc<dyn Transport>, org: Name) -> Self {
        Self {
            t,
            s: Subjects::new(org),
            topic: unique_name("x"),
        }
    }

    fn n(s: &str) -> Name {
        match Name::new(s) {
            Ok(n) => n,
            Err(e) => fail("fixture", e),
        }
    }

    /// `<org>.events.<topic>.<rest…>`
    fn subject(&self, rest: &str) -> Subject {
        let mut parts = vec![self.topic.clone()];
        parts.extend(rest.split('.').map(Self::n));
        self.s.event(&parts)
    }

    fn pattern(&self, rest: &str) -> SubjectPattern {
        match self.s.events_matching(&format!("{}.{rest}", self.topic)) {
            Ok(p) => p,
            Err(e) => fail("fixture", e),
        }
    }

    fn envelope(&self, n: u64) -> Envelope {
        Envelope::new(
            self.s.org().clone(),
            Self::n("suite"),
            Kind::Event,
            json!({ "n": n }),
        )
    }

    async fn consumer(&self, b: &str, config: ConsumerConfig) -> DeliveryStream {
        if let Err(e) = self.t.ensure_consumer(&config).await {
            fail(b, format!("ensure_consumer({}) failed: {e}", config.name));
        }
        match self.t.consume(&config.name).await {
            Ok(s) => s,
            Err(e) => fail(b, format!("consume({}) failed: {e}", config.name)),
        }
    }

    fn config(&self, filter: SubjectPattern) -> ConsumerConfig {
        ConsumerConfig::new(unique_name("c"), filter).with_ack_wait(ACK_WAIT)
    }

    async fn publish(&self, b: &str, subject: &Subject, env: &Envelope) {
        if let Err(e) = self.t.publish_envelope(subject, env).await {
            fail(b, format!("publish to {subject} failed: {e}"));
        }
    }
}

/// Waits up to [`EVENTUALLY`] for the next delivery.
async fn recv(b: &str, stream: &mut DeliveryStream) -> Delivery {
    match tokio::time::timeout(EVENTUALLY, stream.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => fail(b, format!("consumer stream failed: {e}")),
        Ok(None) => fail(b, "consumer stream ended"),
        Err(_) => fail(b, format!("no delivery within {EVENTUALLY:?}")),
    }
}

/// Asserts nothing is delivered for `d`.
async fn quiet(b: &str, stream: &mut DeliveryStream, d: Duration, why: &str) {
    if let Ok(Some(item)) = tokio::time::timeout(d, stream.next()).await {
        let what = match item {
            Ok(d) => format!("a delivery (attempt {}) on {}", d.attempt(), d.subject()),
            Err(e) => format!("an error: {e}"),
        };
        fail(
            b,
            format!("expected no delivery for {d:?} ({why}), got {what}"),
        );
    }
}

async fn settle(b: &str, what: &str, r: Result<(), TransportError>) {
    if let Err(e) = r {
        fail(b, format!("{what} failed: {e}"));
    }
}

fn payload_n(b: &str, d: &Delivery) -> u64 {
    match d.message() {
        Ok(env) => env.payload["n"]
            .as_u64()
            .unwrap_or_else(|| fail(b, format!("unexpected payload {}", env.payload))),
        Err(e) => fail(b, format!("delivery did not decode: {e}")),
    }
}

/// A published envelope is delivered whole, with attempt 1, and not again
/// once acknowledged.
pub async fn publish_consume_ack(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "publish_consume_ack";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    let sent: Vec<Envelope> = (0..3).map(|n| fx.envelope(n)).collect();
    for env in &sent {
        fx.publish(B, &fx.subject("a"), env).await;
    }
    for env in &sent {
        let d = recv(B, &mut c).await;
        if d.attempt() != 1 {
            fail(B, format!("first delivery has attempt {}", d.attempt()));
        }
        match d.message() {
            Ok(got) if got == env => {}
            Ok(got) => fail(B, format!("delivered {got:?}, published {env:?}")),
            Err(e) => fail(B, format!("delivery did not decode: {e}")),
        }
        if d.subject() != &fx.subject("a") {
            fail(B, format!("delivered on {}", d.subject()));
        }
        settle(B, "ack", d.ack().await).await;
    }
    quiet(B, &mut c, ACK_WAIT * 2, "all were acknowledged").await;
}

/// An unacknowledged delivery comes again after the ack wait, and after a
/// nak, with exact attempt numbers 1, 2, 3.
pub async fn redelivery_attempts(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "redelivery_attempts";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    let env = fx.envelope(7);
    // The server starts the ack timer when it sends the delivery, which is
    // before this process sees it: the sound lower bound counts from before
    // the publish.
    let at = Instant::now();
    fx.publish(B, &fx.subject("a"), &env).await;
    let first = recv(B, &mut c).await;
    if first.attempt() != 1 {
        fail(B, format!("first delivery attempt {}", first.attempt()));
    }
    // Not acknowledged: it must come back after the ack wait, as attempt 2.
    let second = recv(B, &mut c).await;
    if at.elapsed() < ACK_WAIT {
        fail(
            B,
            format!("redelivered after {:?}, before the ack wait", at.elapsed()),
        );
    }
    if second.attempt() != 2 {
        fail(
            B,
            format!("redelivery attempt {} (expected 2)", second.attempt()),
        );
    }
    if second.message().ok() != Some(&env) {
        fail(B, "redelivery carries another message");
    }
    settle(B, "nak", second.nak(None).await).await;
    let third = recv(B, &mut c).await;
    if third.attempt() != 3 {
        fail(
            B,
            format!("attempt after nak {} (expected 3)", third.attempt()),
        );
    }
    settle(B, "ack", third.ack().await).await;
    quiet(B, &mut c, ACK_WAIT * 2, "acknowledged").await;
}

/// A nak with a delay is not redelivered before the delay.
pub async fn nak_delay_honoured(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "nak_delay_honoured";
    let fx = Fx::new(t, org);
    let mut c = fx
        .consumer(
            B,
            fx.config(fx.pattern(">"))
                .with_ack_wait(Duration::from_secs(10)),
        )
        .await;
    fx.publish(B, &fx.subject("a"), &fx.envelope(1)).await;
    let d = recv(B, &mut c).await;
    let delay = Duration::from_millis(1500);
    let at = Instant::now();
    settle(B, "nak", d.nak(Some(delay)).await).await;
    let again = recv(B, &mut c).await;
    if at.elapsed() < delay {
        fail(
            B,
            format!(
                "redelivered after {:?}, before the nak delay {delay:?}",
                at.elapsed()
            ),
        );
    }
    if again.attempt() != 2 {
        fail(
            B,
            format!("attempt {} after nak (expected 2)", again.attempt()),
        );
    }
    settle(B, "ack", again.ack().await).await;
}

/// A terminated delivery never comes again.
pub async fn terminate_stops_redelivery(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "terminate_stops_redelivery";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    fx.publish(B, &fx.subject("a"), &fx.envelope(1)).await;
    let d = recv(B, &mut c).await;
    settle(B, "term", d.term().await).await;
    quiet(B, &mut c, ACK_WAIT * 2, "it was terminated").await;
}

/// Progress acknowledgements keep a delivery from being redelivered while
/// work goes on; once they stop, the ack wait applies again.
pub async fn progress_extends_ack_wait(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "progress_extends_ack_wait";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    fx.publish(B, &fx.subject("a"), &fx.envelope(1)).await;
    let d = recv(B, &mut c).await;
    // Report progress every third of the ack wait for three ack waits, while
    // watching the stream: nothing may be redelivered meanwhile.
    let until = Instant::now() + ACK_WAIT * 3;
    while Instant::now() < until {
        settle(B, "progress", d.progress().await).await;
        quiet(B, &mut c, ACK_WAIT / 3, "progress was reported").await;
    }
    let again = recv(B, &mut c).await;
    if again.attempt() != 2 {
        fail(B, format!("attempt {} (expected 2)", again.attempt()));
    }
    settle(B, "ack", again.ack().await).await;
}

/// `*` takes exactly one token and `>` one or more, for durable consumers and
/// ephemeral subscriptions alike.
pub async fn wildcard_routing(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "wildcard_routing";
    let fx = Fx::new(t, org);
    let mut star = fx.consumer(B, fx.config(fx.pattern("*.done"))).await;
    let mut tail = fx.consumer(B, fx.config(fx.pattern("deploy.>"))).await;
    let mut sub = match fx.t.subscribe(&fx.pattern("*.done")).await {
        Ok(s) => s,
        Err(e) => fail(B, format!("subscribe failed: {e}")),
    };
    let cases = [
        ("deploy.done", true, true),
        ("test.done", true, false),
        ("deploy.smoke.done", false, true),
        ("deploy", false, false),
        ("done", false, false),
    ];
    for (i, (subject, _, _)) in cases.iter().enumerate() {
        fx.publish(B, &fx.subject(subject), &fx.envelope(i as u64))
            .await;
    }
    for (name, stream, col) in [("*.done", &mut star, 1), ("deploy.>", &mut tail, 2)] {
        let expected: Vec<u64> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| if col == 1 { c.1 } else { c.2 })
            .map(|(i, _)| i as u64)
            .collect();
        let mut got = Vec::new();
        for _ in &expected {
            let d = recv(B, stream).await;
            got.push(payload_n(B, &d));
            settle(B, "ack", d.ack().await).await;
        }
        got.sort_unstable();
        if got != expected {
            fail(
                B,
                format!("consumer {name} got {got:?}, expected {expected:?}"),
            );
        }
        quiet(B, stream, ACK_WAIT / 2, "no other subject matches").await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(EVENTUALLY, sub.next()).await {
            Ok(Some(Ok(m))) => got.push(m.subject.to_string()),
            other => fail(B, format!("subscription: {other:?}")),
        }
    }
    got.sort();
    let mut expected = vec![
        fx.subject("deploy.done").to_string(),
        fx.subject("test.done").to_string(),
    ];
    expected.sort();
    if got != expected {
        fail(
            B,
            format!("subscription got {got:?}, expected {expected:?}"),
        );
    }
}

/// First deliveries of one subject arrive in publish order.
pub async fn per_subject_order(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "per_subject_order";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    let subjects = ["a", "b", "c"];
    let total = 30u64;
    for n in 0..total {
        let s = subjects[(n % 3) as usize];
        fx.publish(B, &fx.subject(s), &fx.envelope(n)).await;
    }
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..total {
        let d = recv(B, &mut c).await;
        per.entry(d.subject().to_string())
            .or_default()
            .push(payload_n(B, &d));
        settle(B, "ack", d.ack().await).await;
    }
    for (subject, ns) in per {
        if ns.windows(2).any(|w| w[0] >= w[1]) {
            fail(B, format!("{subject} delivered out of order: {ns:?}"));
        }
        if ns.len() != 10 {
            fail(B, format!("{subject} delivered {} of 10", ns.len()));
        }
    }
}

/// A request gets its reply; a request nobody answers times out, not early.
pub async fn request_reply_and_timeout(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "request_reply_and_timeout";
    let fx = Fx::new(Arc::clone(&t), org);
    let rpc = fx.s.rpc(&fx.topic);
    let mut requests: Subscription = match t.subscribe(&SubjectPattern::from(&rpc)).await {
        Ok(s) => s,
        Err(e) => fail(B, format!("subscribe failed: {e}")),
    };
    let responder_t = Arc::clone(&t);
    let responder = tokio::spawn(async move {
        // Answer the first request, ignore the second.
        if let Some(Ok(m)) = requests.next().await {
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&m.payload);
            let _ = responder_t.respond(&m, Bytes::from(reply)).await;
        }
        let _ = requests.next().await;
        requests
    });
    match t
        .request(&rpc, Bytes::from_static(b"ping"), EVENTUALLY)
        .await
    {
        Ok(reply) if &reply[..] == b"re:ping" => {}
        other => fail(B, format!("request got {other:?}")),
    }
    let timeout = Duration::from_millis(1000);
    let at = Instant::now();
    match t.request(&rpc, Bytes::from_static(b"ping"), timeout).await {
        Err(TransportError::Timeout { .. }) if at.elapsed() >= timeout => {}
        other => fail(
            B,
            format!("unanswered request: {other:?} after {:?}", at.elapsed()),
        ),
    }
    responder.abort();
    // Nobody listens on this one: NoResponders (or a timeout, not before it).
    let nobody = fx.s.rpc(&unique_name("r"));
    let at = Instant::now();
    match t.request(&nobody, Bytes::from_static(b"x"), timeout).await {
        Err(TransportError::NoResponders { .. }) => {}
        Err(TransportError::Timeout { .. }) if at.elapsed() >= timeout => {}
        other => fail(B, format!("request without responder: {other:?}")),
    }
}

/// Malformed, oversized and future-version input is delivered as a decode
/// error together with the raw bytes, and does not stop the consumer.
pub async fn decode_errors_keep_raw_bytes(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "decode_errors_keep_raw_bytes";
    let fx = Fx::new(t, org);
    let limit = 2048;
    let mut c = fx
        .consumer(B, fx.config(fx.pattern(">")).with_max_message_bytes(limit))
        .await;
    let mut big = fx.envelope(1);
    big.payload = json!({ "n": 1, "pad": "x".repeat(limit) });
    let big = match Codec::default().encode(&big) {
        Ok(b) => b,
        Err(e) => fail(B, e),
    };
    let future = Bytes::from(format!(
        r#"{{"v": 99, "id": "{}", "shape": "changed"}}"#,
        crate::envelope::MessageId::new()
    ));
    let malformed = Bytes::from_static(b"{\"v\": 1, not json");
    let good = fx.envelope(2);
    for raw in [&malformed, &big, &future] {
        if let Err(e) =
            fx.t.publish(&fx.subject("raw"), raw.clone(), PublishOptions::default())
                .await
        {
            fail(B, format!("raw publish failed: {e}"));
        }
    }
    fx.publish(B, &fx.subject("raw"), &good).await;
    let expect: [(&Bytes, &str); 3] = [
        (&malformed, "malformed"),
        (&big, "oversized"),
        (&future, "future_version"),
    ];
    for (raw, kind) in expect {
        let d = recv(B, &mut c).await;
        match d.message() {
            Err(e) if e.kind_str() == kind => {}
            other => fail(B, format!("expected a {kind} decode error, got {other:?}")),
        }
        if d.raw() != raw {
            fail(B, format!("{kind}: raw bytes not kept whole"));
        }
        if let Err(failure) = d.to_message() {
            if failure.raw != *raw {
                fail(B, "decode failure lost the raw bytes");
            }
        }
        if let Err(DecodeError::FutureVersion { version, .. }) = d.message() {
            if *version != 99 {
                fail(B, format!("future version read as {version}"));
            }
        }
        settle(B, "term", d.term().await).await;
    }
    let d = recv(B, &mut c).await;
    if d.message().ok() != Some(&good) {
        fail(B, "the consumer did not go on after decode errors");
    }
    settle(B, "ack", d.ack().await).await;
}

/// A consumer hands out at most `max_ack_pending` unacknowledged deliveries
/// and goes on once one is acknowledged.
pub async fn backpressure_max_ack_pending(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "backpressure_max_ack_pending";
    let fx = Fx::new(t, org);
    let mut c = fx
        .consumer(
            B,
            fx.config(fx.pattern(">"))
                .with_ack_wait(Duration::from_secs(30))
                .with_max_ack_pending(2),
        )
        .await;
    for n in 0..4 {
        fx.publish(B, &fx.subject("a"), &fx.envelope(n)).await;
    }
    let d0 = recv(B, &mut c).await;
    let d1 = recv(B, &mut c).await;
    quiet(
        B,
        &mut c,
        Duration::from_millis(1500),
        "two deliveries are unacknowledged",
    )
    .await;
    settle(B, "ack", d0.ack().await).await;
    let d2 = recv(B, &mut c).await;
    if payload_n(B, &d2) != 2 {
        fail(B, "the third message did not follow the ack");
    }
    settle(B, "ack", d1.ack().await).await;
    settle(B, "ack", d2.ack().await).await;
    let d3 = recv(B, &mut c).await;
    settle(B, "ack", d3.ack().await).await;
}

/// A second publish with the same message id is acknowledged as a duplicate
/// and not delivered again.
pub async fn dedupe_by_message_id(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "dedupe_by_message_id";
    let fx = Fx::new(t, org);
    let mut c = fx.consumer(B, fx.config(fx.pattern(">"))).await;
    let env = fx.envelope(1);
    let first = fx.t.publish_envelope(&fx.subject("a"), &env).await;
    let second = fx.t.publish_envelope(&fx.subject("a"), &env).await;
    match (first, second) {
        (Ok(a), Ok(b)) if !a.duplicate && b.duplicate => {}
        other => fail(B, format!("publish acks {other:?}")),
    }
    let d = recv(B, &mut c).await;
    settle(B, "ack", d.ack().await).await;
    quiet(B, &mut c, ACK_WAIT, "the repeat was a duplicate").await;
}

/// Two binders of one durable consumer share its messages: each message goes
/// to one of them.
pub async fn shared_consumer_splits_work(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "shared_consumer_splits_work";
    let fx = Fx::new(t, org);
    let config = fx.config(fx.pattern(">"));
    let mut a = fx.consumer(B, config.clone()).await;
    let mut b = match fx.t.consume(&config.name).await {
        Ok(s) => s,
        Err(e) => fail(B, format!("second binder: {e}")),
    };
    let total = 20u64;
    for n in 0..total {
        fx.publish(B, &fx.subject("w"), &fx.envelope(n)).await;
    }
    let mut seen = HashSet::new();
    let deadline = Instant::now() + EVENTUALLY;
    while (seen.len() as u64) < total && Instant::now() < deadline {
        let next = tokio::select! {
            Some(Ok(d)) = a.next() => d,
            Some(Ok(d)) = b.next() => d,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let n = payload_n(B, &next);
        if !seen.insert(n) {
            fail(B, format!("message {n} delivered to both binders"));
        }
        settle(B, "ack", next.ack().await).await;
    }
    if seen.len() as u64 != total {
        fail(B, format!("{} of {total} messages delivered", seen.len()));
    }
}

/// Messages published while no one is bound wait in the durable consumer (a
/// role that was down catches up).
pub async fn late_binder_catches_up(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "late_binder_catches_up";
    let fx = Fx::new(t, org);
    let config = fx.config(fx.pattern(">"));
    if let Err(e) = fx.t.ensure_consumer(&config).await {
        fail(B, format!("ensure_consumer: {e}"));
    }
    if let Err(e) = fx.t.ensure_consumer(&config).await {
        fail(B, format!("ensure_consumer is not idempotent: {e}"));
    }
    for n in 0..3 {
        fx.publish(B, &fx.subject("a"), &fx.envelope(n)).await;
    }
    let mut c = match fx.t.consume(&config.name).await {
        Ok(s) => s,
        Err(e) => fail(B, format!("consume: {e}")),
    };
    for n in 0..3 {
        let d = recv(B, &mut c).await;
        if payload_n(B, &d) != n {
            fail(B, "late binder got messages out of order");
        }
        settle(B, "ack", d.ack().await).await;
    }
    match fx.t.consume(&unique_name("missing")).await {
        Err(TransportError::NotFound { .. }) => {}
        other => fail(
            B,
            format!("binding a missing consumer: {:?}", other.map(|_| ())),
        ),
    }
}

/// A consumer starts where its `deliver` says when it is created: `All`
/// takes a message stored before it, `New` only what is stored after it,
/// `Since` from a time on (an hour ago takes the earlier message; in an hour
/// takes none of the stored ones and then acts as `New`). Ensuring it again
/// with another start position (and another ack wait) is accepted and does
/// not move it.
pub async fn deliver_from_start_position(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "deliver_from_start_position";
    let fx = Fx::new(t, org);
    fx.publish(B, &fx.subject("a"), &fx.envelope(1)).await;
    // Times an hour off, so that the transport's clock (a server's, or the
    // memory transport's on a paused clock) only has to agree roughly.
    let now = chrono::Utc::now();
    let hour = chrono::TimeDelta::hours(1);
    let starts = [
        ("All", DeliverFrom::All, true),
        ("New", DeliverFrom::New, false),
        ("Since(an hour ago)", DeliverFrom::Since(now - hour), true),
        ("Since(in an hour)", DeliverFrom::Since(now + hour), false),
    ];
    // Every consumer exists before anything is acknowledged: a transport may
    // let go of a message once all consumers holding it acknowledged it.
    let mut streams = Vec::new();
    for (what, deliver, _) in starts {
        let config = fx.config(fx.pattern(">")).with_deliver(deliver);
        streams.push(fx.consumer(B, config.clone()).await);
        let again = config
            .with_deliver(DeliverFrom::All)
            .with_ack_wait(ACK_WAIT * 2);
        if let Err(e) = fx.t.ensure_consumer(&again).await {
            fail(
                B,
                format!("ensuring the {what} consumer again with another start position: {e}"),
            );
        }
    }
    fx.publish(B, &fx.subject("a"), &fx.envelope(2)).await;
    for ((what, _, takes_earlier), c) in starts.iter().zip(&mut streams) {
        let expected: &[u64] = if *takes_earlier { &[1, 2] } else { &[2] };
        // First deliveries of one subject come in publish order, so a
        // consumer that got message 1 would see it before message 2.
        for n in expected {
            let d = recv(B, c).await;
            let got = payload_n(B, &d);
            if got != *n {
                fail(
                    B,
                    format!("the {what} consumer got message {got}, expected {n}"),
                );
            }
            settle(B, "ack", d.ack().await).await;
        }
    }
    for ((what, _, _), c) in starts.iter().zip(&mut streams) {
        quiet(
            B,
            c,
            ACK_WAIT / 2,
            &format!("the {what} consumer had all it takes"),
        )
        .await;
    }
}

/// Every ephemeral subscriber of a matching pattern gets each message.
pub async fn ephemeral_fan_out(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "ephemeral_fan_out";
    let fx = Fx::new(t, org);
    let mut subs = Vec::new();
    for _ in 0..2 {
        match fx.t.subscribe(&fx.pattern(">")).await {
            Ok(s) => subs.push(s),
            Err(e) => fail(B, format!("subscribe: {e}")),
        }
    }
    let subject = fx.subject("ping");
    if let Err(e) =
        fx.t.publish_ephemeral(&subject, Bytes::from_static(b"hello"))
            .await
    {
        fail(B, format!("publish_ephemeral: {e}"));
    }
    for s in &mut subs {
        match tokio::time::timeout(EVENTUALLY, s.next()).await {
            Ok(Some(Ok(m))) if &m.payload[..] == b"hello" && m.subject == subject => {}
            other => fail(B, format!("subscriber got {other:?}")),
        }
    }
}
