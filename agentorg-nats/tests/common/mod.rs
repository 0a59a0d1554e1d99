//! What the tests share: transports on test-kit servers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::transport::Transport;
use agentorg_core::Name;
use agentorg_nats::{NatsTransport, NatsTransportBuilder};

/// Logs to the test output (`RUST_LOG=agentorg_nats=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A builder for `org` on `urls`, with the short timeouts the tests use.
pub fn builder(
    urls: impl IntoIterator<Item = impl Into<String>>,
    org: &Name,
) -> NatsTransportBuilder {
    NatsTransport::builder()
        .with_servers(urls)
        .with_org(org.as_str())
        .with_request_timeout(Duration::from_secs(3))
}

/// A transport for `org` on `url`, with the org's streams created.
pub async fn transport(url: &str, org: &Name) -> NatsTransport {
    builder([url], org)
        .build()
        .await
        .unwrap_or_else(|e| panic!("NatsTransport on {url} for {org}: {e}"))
}

/// The same, as the runtime takes it.
pub async fn dyn_transport(url: &str, org: &Name) -> Arc<dyn Transport> {
    Arc::new(transport(url, org).await)
}

use std::collections::HashMap;
use std::sync::Mutex;

use agentorg_core::conformance::faults::HookedTransport;

/// What a [`recording`] transport saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Publishes by message id: how many returned Ok, how many failed.
    pub published: HashMap<String, (u32, u32)>,
    /// Deliveries by envelope id: the attempt numbers, in order.
    pub delivered: HashMap<String, Vec<u32>>,
}

/// `inner`, recording its publishes and deliveries (by envelope id) in the
/// returned record.
pub fn recording(inner: Arc<dyn Transport>) -> (Arc<dyn Transport>, Arc<Mutex<Record>>) {
    let record: Arc<Mutex<Record>> = Arc::default();
    let (published, delivered) = (Arc::clone(&record), Arc::clone(&record));
    let t = HookedTransport::new(inner, "Recording")
        .on_publish(move |inner, subject, payload, options| {
            let record = Arc::clone(&published);
            Box::pin(async move {
                let id = options.msg_id.clone();
                let r = inner.publish(&subject, payload, options).await;
                if let Some(id) = id {
                    let mut rec = record.lock().unwrap();
                    let e = rec.published.entry(id).or_default();
                    if r.is_ok() {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
                r
            })
        })
        .on_delivery(move |d| {
            if let Ok(env) = d.message() {
                delivered
                    .lock()
                    .unwrap()
                    .delivered
                    .entry(env.id.to_string())
                    .or_default()
                    .push(d.attempt());
            }
            d
        });
    (Arc::new(t), record)
}
