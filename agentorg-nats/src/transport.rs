//! [`NatsTransport`]: the [`Transport`] over NATS JetStream.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{
    ConsumerConfig, ConsumerLag, DeliveryStream, PublishAck, PublishOptions, Subscription,
    Transport, TransportError,
};
use agentorg_core::Name;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::builder::NatsTransportBuilder;
use crate::deliveries;
use crate::error::Error;
use crate::layout::{StreamKind, StreamLayout};
use crate::subscription;
use crate::violations::{Op, Violations};

/// The consumer metadata key holding [`ConsumerConfig::max_message_bytes`],
/// so that every process binding the consumer decodes with the same limit.
pub(crate) const META_MAX_MESSAGE_BYTES: &str = "agentorg_max_message_bytes";

/// How this transport behaves (set on the builder).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Messages asked for per pull request.
    pub(crate) batch: usize,
    /// How long a pull request waits on the server.
    pub(crate) pull_expiry: Duration,
    /// The idle heartbeat of a pull request.
    pub(crate) heartbeat: Duration,
    /// JetStream API requests and each publish acknowledgement.
    pub(crate) request_timeout: Duration,
    /// A whole durable publish, retries included.
    pub(crate) publish_timeout: Duration,
    /// Acks and terminations wait for the server's confirmation.
    pub(crate) confirm_acks: bool,
    /// Each ephemeral subscription's buffer.
    pub(crate) subscriber_buffer: usize,
}

/// A [`Transport`] over NATS JetStream for one org.
///
/// Durable subjects live in three streams per org (see the [crate
/// docs](crate#stream-layout)); consumers are JetStream pull consumers with
/// explicit acks; ephemeral subscriptions and requests are core NATS. Build
/// one with [`NatsTransport::builder`]. Cloning is cheap and shares the
/// connection.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agentorg_core::subject::Subjects;
/// use agentorg_core::transport::{Transport, TransportExt};
/// use agentorg_core::Name;
/// use agentorg_nats::NatsTransport;
///
/// let t = NatsTransport::builder()
///     .with_server("nats://127.0.0.1:4222")
///     .with_org("genbrain")
///     .build()
///     .await?; // connects, and creates the org's streams if missing
/// let s = Subjects::new(Name::new("genbrain")?);
/// let subject = s.alerts();
/// t.publish(&subject, "hello".into(), Default::default()).await?; // stored once this returns
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) layout: StreamLayout,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) violations: Violations,
    /// How many times the client has connected (binders are told from the
    /// second time on): a binder asks the server again after a
    /// reconnection, which may have lost its pull requests.
    pub(crate) connects: tokio::sync::watch::Sender<u64>,
    pub(crate) options: Options,
    pub(crate) servers: String,
    /// Which stream each consumer seen so far lives on. A std Mutex: held
    /// only to read or insert, never across an await.
    pub(crate) located: Mutex<HashMap<Name, StreamKind>>,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("org", self.inner.layout.org())
            .field("servers", &self.inner.servers)
            .field("state", &self.inner.client.connection_state())
            .field("replicas", &self.inner.layout.replicas())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NatsTransport({} on {})",
            self.inner.layout.org(),
            self.inner.servers
        )
    }
}

/// A message read back from a stream by sequence
/// ([`NatsTransport::stored_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// The subject it was published to.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its bytes.
    pub payload: Bytes,
}

#[derive(Deserialize)]
struct RawStored {
    message: RawMessage,
}

#[derive(Deserialize)]
struct RawMessage {
    subject: String,
    seq: u64,
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct Success {
    #[serde(default)]
    success: bool,
}

impl NatsTransport {
    /// A builder: servers, credentials, org, replicas, limits.
    pub fn builder() -> NatsTransportBuilder {
        NatsTransportBuilder::new()
    }

    pub(crate) fn from_parts(
        layout: StreamLayout,
        client: async_nats::Client,
        violations: Violations,
        connects: tokio::sync::watch::Sender<u64>,
        options: Options,
        servers: String,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        Self {
            inner: Arc::new(Inner {
                layout,
                client,
                js,
                violations,
                connects,
                options,
                servers,
                located: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The org whose subjects this transport carries.
    pub fn org(&self) -> &Name {
        self.inner.layout.org()
    }

    /// The org's streams: names, subjects, limits.
    pub fn layout(&self) -> &StreamLayout {
        &self.inner.layout
    }

    /// The underlying async-nats client (shared; for tools and tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Creates the org's streams if they are missing, and brings their limits
    /// and replicas to this transport's configuration if they differ.
    /// Idempotent; an admin operation ([`build`](NatsTransportBuilder::build)
    /// calls it unless provisioning is off).
    ///
    /// A stream that exists with other subjects or another retention is a
    /// [`TransportError::Conflict`]: those cannot be changed in place.
    pub async fn provision_streams(&self) -> Result<(), TransportError> {
        for kind in StreamKind::ALL {
            self.inner.provision_stream(kind).await?;
        }
        Ok(())
    }

    /// The state of one of the org's streams, as the server reports it
    /// (messages, bytes, cluster leader and replicas).
    pub async fn stream_info(&self, kind: StreamKind) -> Result<stream::Info, TransportError> {
        let name = self.inner.layout.stream_name(kind);
        Ok(self
            .inner
            .api(
                || format!("stream info {name}"),
                format!("STREAM.INFO.{name}"),
                &json!({}),
            )
            .await?)
    }

    /// Reads a stored message by its sequence (`$JS.API.STREAM.MSG.GET`): for
    /// inspection by an admin identity; roles may not.
    pub async fn stored_message(
        &self,
        kind: StreamKind,
        sequence: u64,
    ) -> Result<StoredMessage, TransportError> {
        use base64::Engine as _;
        let name = self.inner.layout.stream_name(kind);
        let raw: RawStored = self
            .inner
            .api(
                || format!("read message {sequence} of stream {name}"),
                format!("STREAM.MSG.GET.{name}"),
                &json!({ "seq": sequence }),
            )
            .await?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(raw.message.data.as_bytes())
            .map_err(|e| TransportError::Other {
                backend: "nats",
                source: Box::new(e),
            })?;
        Ok(StoredMessage {
            subject: raw.message.subject,
            sequence: raw.message.seq,
            payload: payload.into(),
        })
    }

    /// Sends a raw JetStream API request (`$JS.API.<api>`) and returns the
    /// answer's bytes, with this transport's error mapping (a refused subject
    /// is [`TransportError::Forbidden`], an error answer its kind). For tools.
    pub async fn jetstream_request(&self, api: &str, body: Bytes) -> Result<Bytes, TransportError> {
        let subject = format!("$JS.API.{api}");
        let timeout = self.inner.options.request_timeout;
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(timeout));
        let msg = self
            .inner
            .violations
            .guard(
                Op::Publish,
                &subject,
                self.inner.client.send_request(subject.clone(), request),
            )
            .await
            .map_err(|g| {
                Error::guarded(
                    || format!("JetStream API {api}"),
                    g,
                    |source| Error::Request {
                        subject: subject.clone(),
                        size: 0,
                        limit: self.inner.client.max_payload(),
                        timeout,
                        source,
                    },
                )
            })?;
        if let Ok(Response::<serde_json::Value>::Err { error }) =
            serde_json::from_slice(&msg.payload)
        {
            return Err(Error::JetStream {
                operation: format!("JetStream API {api}"),
                source: error,
            }
            .into());
        }
        Ok(msg.payload)
    }
}

impl Inner {
    pub(crate) fn stream_name(&self, kind: StreamKind) -> String {
        self.layout.stream_name(kind)
    }

    /// A JetStream API request (`$JS.API.<subject>`), refused fast if the
    /// user may not send it.
    pub(crate) async fn api<T: DeserializeOwned>(
        &self,
        operation: impl Fn() -> String,
        subject: String,
        body: &(impl Serialize + ?Sized + Sync),
    ) -> Result<T, Error> {
        let full = format!("$JS.API.{subject}");
        let r = self
            .violations
            .guard(
                Op::Publish,
                &full,
                self.js.request::<_, _, Response<T>>(subject, body),
            )
            .await;
        match r {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Err { error }) => Err(Error::JetStream {
                operation: operation(),
                source: error,
            }),
            Err(g) => Err(Error::guarded(&operation, g, |source| Error::Api {
                operation: operation(),
                timeout: self.options.request_timeout,
                source,
            })),
        }
    }

    async fn provision_stream(&self, kind: StreamKind) -> Result<(), Error> {
        let name = self.stream_name(kind);
        let want = self.layout.stream_config(kind);
        let info: Result<stream::Info, Error> = self
            .api(
                || format!("stream info {name}"),
                format!("STREAM.INFO.{name}"),
                &json!({}),
            )
            .await;
        let have = match info {
            Ok(info) => info,
            Err(e) if e.jetstream_code() == Some(jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                let created: Result<stream::Info, Error> = self
                    .api(
                        || format!("create stream {name}"),
                        format!("STREAM.CREATE.{name}"),
                        &want,
                    )
                    .await;
                match created {
                    Ok(_) => {
                        tracing::info!(stream = %name, "created stream");
                        return Ok(());
                    }
                    // Another process created it meanwhile: check it below.
                    Err(e)
                        if e.jetstream_code() == Some(jetstream::ErrorCode::STREAM_NAME_EXIST) =>
                    {
                        self.api(
                            || format!("stream info {name}"),
                            format!("STREAM.INFO.{name}"),
                            &json!({}),
                        )
                        .await?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let diff = self.layout.differences(kind, &have.config);
        if diff.is_empty() {
            return Ok(());
        }
        if diff.contains(&"subjects") || diff.contains(&"retention") {
            return Err(Error::Conflict {
                message: format!(
                    "stream {name} exists with other {}: subjects {:?}, retention {:?}; \
                     delete it or use another org name",
                    diff.join(", "),
                    have.config.subjects,
                    have.config.retention
                ),
            });
        }
        tracing::info!(stream = %name, changed = ?diff, "updating stream limits");
        let _: stream::Info = self
            .api(
                || format!("update stream {name}"),
                format!("STREAM.UPDATE.{name}"),
                &want,
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let inner = &*self.inner;
        if inner.layout.stream_of(subject).is_none() {
            return Err(TransportError::InvalidInput {
                message: format!(
                    "{subject} is not a durable subject of org `{}` (no stream captures it; \
                     requests go to <org>.rpc.*, ephemeral messages via publish_ephemeral)",
                    inner.layout.org()
                ),
            });
        }
        let deduplicated = options.msg_id.is_some();
        let deadline = Instant::now() + inner.options.publish_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut message = PublishMessage::build().payload(payload.clone());
            if let Some(id) = &options.msg_id {
                message = message.message_id(id);
            }
            let attempt = inner
                .violations
                .guard(Op::Publish, subject.as_str(), async {
                    inner
                        .js
                        .send_publish(async_nats::Subject::from(subject.as_str()), message)
                        .await?
                        .await
                })
                .await;
            let error = match attempt {
                Ok(ack) => return Ok(PublishAck::new(ack.sequence, ack.duplicate)),
                Err(g) => Error::guarded(
                    || format!("publish to {subject}"),
                    g,
                    |source| Error::Publish {
                        subject: subject.to_string(),
                        size: payload.len(),
                        limit: inner.client.max_payload(),
                        timeout: inner.options.request_timeout,
                        source,
                    },
                ),
            };
            // Retry what is safe to retry while the budget lasts: the stream
            // did not answer (not stored), or the ack was lost but the
            // message id makes a second copy a duplicate.
            if error.publish_retryable(deduplicated) && Instant::now() + pause < deadline {
                tracing::debug!(%subject, error = %error, retry_in = ?pause, "publish failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            return Err(error.into());
        }
    }

    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }

    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let (kind, info) = self.inner.locate(name).await?;
        Ok(deliveries::bind(Arc::clone(&self.inner), name.clone(), kind, info).await?)
    }

    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        let inner = &*self.inner;
        let (kind, _) = inner.locate(name).await?;
        let stream = inner.stream_name(kind);
        let deleted: Success = inner
            .api(
                || format!("delete consumer `{name}` on {stream}"),
                format!("CONSUMER.DELETE.{stream}.{name}"),
                &json!({}),
            )
            .await?;
        inner.forget(name);
        if !deleted.success {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}` (the server did not delete it)"),
            });
        }
        Ok(())
    }

    async fn consumer_lag(&self, name: &Name) -> Result<ConsumerLag, TransportError> {
        let (_, info) = self.inner.locate(name).await?;
        Ok(ConsumerLag::new(
            info.num_pending,
            u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        ))
    }

    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let size = payload.len();
        self.inner
            .client
            .publish(subject.as_str().to_owned(), payload)
            .await
            .map_err(|source| {
                Error::CorePublish {
                    subject: subject.to_string(),
                    size,
                    limit: self.inner.client.max_payload(),
                    source,
                }
                .into()
            })
    }

    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        Ok(subscription::subscribe(&self.inner, pattern).await?)
    }

    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let inner = &*self.inner;
        if inner.layout.stream_of(subject).is_some() {
            return Err(TransportError::InvalidInput {
                message: format!(
                    "{subject} is captured by a stream: a request there would get the \
                     stream's acknowledgement as its reply; use <org>.rpc.<role>"
                ),
            });
        }
        let size = payload.len();
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let reply = inner
            .violations
            .guard(
                Op::Publish,
                subject.as_str(),
                inner
                    .client
                    .send_request(subject.as_str().to_owned(), request),
            )
            .await
            .map_err(|g| {
                Error::guarded(
                    || format!("request to {subject}"),
                    g,
                    |source| Error::Request {
                        subject: subject.to_string(),
                        size,
                        limit: inner.client.max_payload(),
                        timeout,
                        source,
                    },
                )
            })?;
        Ok(reply.payload)
    }
}
