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

use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{
    ConsumerConfig, DeliveryStream, PublishAck, PublishOptions, Subscription, TransportError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

/// What a [`Recording`] transport saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Publishes by message id: how many returned Ok, how many failed.
    pub published: HashMap<String, (u32, u32)>,
    /// Deliveries by envelope id: the attempt numbers, in order.
    pub delivered: HashMap<String, Vec<u32>>,
}

/// Wraps a transport and records publishes and deliveries (by envelope id).
#[derive(Debug)]
pub struct Recording {
    inner: Arc<dyn Transport>,
    pub record: Arc<Mutex<Record>>,
}

impl Recording {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            record: Arc::default(),
        }
    }
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl Transport for Recording {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let id = options.msg_id.clone();
        let r = self.inner.publish(subject, payload, options).await;
        if let Some(id) = id {
            let mut rec = self.record.lock().unwrap();
            let e = rec.published.entry(id).or_default();
            if r.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        r
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let record = Arc::clone(&self.record);
        let inner = self.inner.consume(name).await?;
        Ok(Box::pin(inner.map(move |d| {
            if let Ok(d) = &d {
                if let Ok(env) = d.message() {
                    record
                        .lock()
                        .unwrap()
                        .delivered
                        .entry(env.id.to_string())
                        .or_default()
                        .push(d.attempt());
                }
            }
            d
        })))
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
    }
    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.inner.publish_ephemeral(subject, payload).await
    }
    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        self.inner.subscribe(pattern).await
    }
    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.inner.request(subject, payload, timeout).await
    }
}
