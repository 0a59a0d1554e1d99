//! Consumers' lag and filter changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{recv, settle, Fx};
use crate::conformance::{fail, unique_name, EVENTUALLY};
use crate::name::Name;
use crate::transport::{Transport, TransportError};

/// Waits up to [`EVENTUALLY`] for `name`'s lag to be `want` (total).
async fn lag_becomes(b: &str, t: &Arc<dyn Transport>, name: &Name, want: u64, what: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let lag = match t.consumer_lag(name).await {
            Ok(lag) => lag,
            Err(e) => fail(b, format!("consumer_lag({name}) failed: {e}")),
        };
        if lag.total() == want {
            return;
        }
        if Instant::now() >= deadline {
            fail(b, format!("{what}: lag {lag:?}, not {want} in all"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A consumer's lag counts the messages it matches that are not
/// acknowledged yet: none delivered, all undelivered; then one fewer with
/// each acknowledgement, whether the rest are delivered or not; a consumer
/// that does not exist is `NotFound`.
pub async fn consumer_lag_counts_unprocessed(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "consumer_lag_counts_unprocessed";
    let fx = Fx::new(t, org);
    let config = fx.config(fx.pattern(">"));
    if let Err(e) = fx.t.ensure_consumer(&config).await {
        fail(B, format!("ensure_consumer failed: {e}"));
    }
    lag_becomes(B, &fx.t, &config.name, 0, "before any publish").await;
    for n in 0..3 {
        fx.publish(B, &fx.subject("a"), &fx.envelope(n)).await;
    }
    // Unrelated subjects do not count.
    fx.publish(B, &fx.s.event(&[unique_name("other")]), &fx.envelope(9))
        .await;
    lag_becomes(B, &fx.t, &config.name, 3, "three published, none bound").await;
    match fx.t.consumer_lag(&config.name).await {
        Ok(lag) if lag.undelivered == 3 && lag.unacknowledged == 0 => {}
        other => fail(B, format!("three published, none delivered: {other:?}")),
    }
    let mut c = match fx.t.consume(&config.name).await {
        Ok(c) => c,
        Err(e) => fail(B, format!("consume failed: {e}")),
    };
    for left in (0..3).rev() {
        let d = recv(B, &mut c).await;
        lag_becomes(B, &fx.t, &config.name, left + 1, "a delivery out").await;
        settle(B, "ack", d.ack().await).await;
        lag_becomes(B, &fx.t, &config.name, left, "after an ack").await;
    }
    match fx.t.consumer_lag(&unique_name("missing")).await {
        Err(TransportError::NotFound { .. }) => {}
        other => fail(B, format!("the lag of no consumer: {other:?}")),
    }
}

/// A consumer ensured again with other filters takes, from then on, what the
/// new filters match and no longer what only the old ones matched.
pub async fn consumer_filters_updated_in_place(t: Arc<dyn Transport>, org: Name) {
    const B: &str = "consumer_filters_updated_in_place";
    let fx = Fx::new(t, org);
    let first = fx.config(fx.pattern("a"));
    let mut c = fx.consumer(B, first.clone()).await;
    fx.publish(B, &fx.subject("a"), &fx.envelope(1)).await;
    let d = recv(B, &mut c).await;
    settle(B, "ack", d.ack().await).await;
    // Now `b` instead of `a`.
    let mut second = first.clone();
    second.filters = vec![fx.pattern("b")];
    if let Err(e) = fx.t.ensure_consumer(&second).await {
        fail(B, format!("ensure_consumer with other filters: {e}"));
    }
    fx.publish(B, &fx.subject("a"), &fx.envelope(2)).await;
    fx.publish(B, &fx.subject("b"), &fx.envelope(3)).await;
    let d = recv(B, &mut c).await;
    if super::payload_n(B, &d) != 3 {
        fail(B, format!("after the change, delivered {:?}", d.message()));
    }
    settle(B, "ack", d.ack().await).await;
    // Both.
    let both = first.with_filter(fx.pattern("b"));
    if let Err(e) = fx.t.ensure_consumer(&both).await {
        fail(B, format!("ensure_consumer with both filters: {e}"));
    }
    fx.publish(B, &fx.subject("a"), &fx.envelope(4)).await;
    let d = recv(B, &mut c).await;
    if super::payload_n(B, &d) != 4 {
        fail(B, format!("with both filters, delivered {:?}", d.message()));
    }
    settle(B, "ack", d.ack().await).await;
    super::quiet(B, &mut c, Duration::from_millis(500), "only a4 was due").await;
}
