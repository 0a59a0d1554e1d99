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
pub fn builder(urls: &[String], org: &Name) -> NatsTransportBuilder {
    NatsTransport::builder()
        .with_servers(urls.iter().cloned())
        .with_org(org.as_str())
        .with_request_timeout(Duration::from_secs(3))
}

/// A transport for `org` on `url`, with the org's streams created.
pub async fn transport(url: &str, org: &Name) -> NatsTransport {
    builder(&[url.to_owned()], org)
        .build()
        .await
        .unwrap_or_else(|e| panic!("NatsTransport on {url} for {org}: {e}"))
}

/// The same, as the runtime takes it.
pub async fn dyn_transport(url: &str, org: &Name) -> Arc<dyn Transport> {
    Arc::new(transport(url, org).await)
}
