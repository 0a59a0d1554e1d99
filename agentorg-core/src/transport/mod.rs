//! The [`Transport`] trait: subjects and envelopes, durable and ephemeral.
//!
//! A transport offers four things, each with its own guarantee:
//!
//! | operation | guarantee |
//! |---|---|
//! | [`publish`](Transport::publish) | durable: returns once stored; deduplicated by message id within a window |
//! | [`consume`](Transport::consume) a named consumer | at-least-once, explicit ack / nak with delay / terminate / progress, attempt number visible |
//! | [`subscribe`](Transport::subscribe) | ephemeral fan-out, at-most-once; a slow subscriber is told how much it missed |
//! | [`request`](Transport::request) | core request/reply with a timeout |
//!
//! Ordering is guaranteed per subject (first deliveries of one subject arrive
//! in publish order), not across subjects.
//!
//! # Back-pressure
//!
//! Nothing grows without bound and nothing is dropped silently:
//!
//! * a durable publish into a full store fails with the retryable
//!   [`TransportError::Full`] (the message is not stored);
//! * a consumer hands out at most
//!   [`max_ack_pending`](ConsumerConfig::max_ack_pending) unacknowledged
//!   messages and waits for acks before handing out more;
//! * an ephemeral subscriber has a bounded buffer; when it overflows, newer
//!   messages are not queued and the subscriber's next item is
//!   [`TransportError::Lagged`] with the number it missed.
//!
//! # Implementations
//!
//! * [`MemoryTransport`]: in process, the embedded default.
//! * `agentorg-nats`: NATS JetStream (facade feature `nats`).

use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::codec::{Codec, DecodeError, DecodeFailure, EncodeError};
use crate::envelope::Envelope;
use crate::name::Name;
use crate::subject::{Subject, SubjectPattern};

mod index;
mod memory;

pub use memory::{MemoryTransport, MemoryTransportBuilder};

/// A boxed error from a backend, kept as the source of [`TransportError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a transport operation.
///
/// Retryable kinds (see [`TransportError::is_retryable`]) may succeed if the
/// same operation is tried again later: `Timeout`, `Unavailable`, `Full`,
/// `NoResponders`. The others will fail the same way again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The request is invalid (bad subject, bad configuration).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What was wrong.
        message: String,
    },
    /// The payload is larger than the transport accepts.
    #[error("payload of {size} bytes exceeds the transport's limit of {limit} bytes")]
    TooLarge {
        /// The payload size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A named thing (consumer, stream) does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was missing, e.g. "consumer `inbox-cto`".
        what: String,
    },
    /// A named thing exists with an incompatible configuration.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// The broker refused the operation for this identity.
    #[error("forbidden: {operation}")]
    Forbidden {
        /// The refused operation, e.g. "publish to genbrain.agent.cso.inbox.ceo".
        operation: String,
        /// The broker's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The operation did not finish in time. Retryable; a timed-out publish may
    /// have been stored, which is why publishes carry a dedupe id.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The operation.
        operation: String,
        /// How long it waited.
        after: Duration,
    },
    /// No one is listening on the request subject. Retryable (a responder may
    /// be restarting).
    #[error("no responders on {subject}")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// The transport cannot reach its backend right now. Retryable.
    #[error("transport unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The store is full and refuses new messages rather than forgetting old
    /// ones. Retryable once consumers catch up.
    #[error("transport full: {message}")]
    Full {
        /// Which limit was hit.
        message: String,
    },
    /// An ephemeral subscriber fell behind; `missed` messages were not queued
    /// for it.
    #[error("subscriber lagged and missed {missed} messages")]
    Lagged {
        /// How many messages it missed.
        missed: u64,
    },
    /// The transport or the consumer was shut down.
    #[error("transport closed")]
    Closed,
    /// An envelope could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Any other backend error.
    #[error("{backend} error: {source}")]
    Other {
        /// The backend's name.
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl TransportError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Unavailable { .. }
                | Self::Full { .. }
                | Self::NoResponders { .. }
        )
    }
}

/// Options of a durable publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// The dedupe id: a second publish with the same id within the
    /// transport's window is acknowledged without being stored again. Use the
    /// envelope id ([`TransportExt::publish_envelope`] does).
    pub msg_id: Option<String>,
}

impl PublishOptions {
    /// Options with a dedupe id.
    pub fn with_msg_id(id: impl Into<String>) -> Self {
        Self {
            msg_id: Some(id.into()),
        }
    }
}

/// The acknowledgement of a durable publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishAck {
    /// The stream sequence of the stored message.
    pub sequence: u64,
    /// Whether this publish was a duplicate of one already stored.
    pub duplicate: bool,
}

impl PublishAck {
    /// A new acknowledgement.
    pub fn new(sequence: u64, duplicate: bool) -> Self {
        Self {
            sequence,
            duplicate,
        }
    }
}

/// How far a durable consumer is behind, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerLag {
    /// Messages it matches that it has not delivered yet.
    pub undelivered: u64,
    /// Messages it delivered that are not acknowledged yet (being handled,
    /// or waiting to be delivered again).
    pub unacknowledged: u64,
}

impl ConsumerLag {
    /// A lag of `undelivered` and `unacknowledged` messages.
    pub fn new(undelivered: u64, unacknowledged: u64) -> Self {
        Self {
            undelivered,
            unacknowledged,
        }
    }

    /// Messages not processed yet: undelivered and unacknowledged.
    pub fn total(&self) -> u64 {
        self.undelivered.saturating_add(self.unacknowledged)
    }
}

/// A durable consumer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The durable name; binders of the same name share its work.
    pub name: Name,
    /// The subjects it takes (at least one).
    pub filters: Vec<SubjectPattern>,
    /// How long a delivery may go unacknowledged (without progress) before it
    /// is delivered again.
    pub ack_wait: Duration,
    /// At most this many deliveries may be unacknowledged at once.
    pub max_ack_pending: usize,
    /// Deliveries larger than this are handed over as
    /// [`DecodeError::Oversized`] with their raw bytes.
    pub max_message_bytes: usize,
    /// Where the consumer starts in the messages already stored when it is
    /// created (default [`DeliverFrom::All`]). Applies at creation only; see
    /// [`Transport::ensure_consumer`].
    pub deliver: DeliverFrom,
}

/// Where a durable consumer starts: which of the messages stored before it
/// was created it takes. Every matching message stored after its creation is
/// delivered whatever the start position.
///
/// The position is fixed when the consumer is created; ensuring the consumer
/// again with another position neither moves it nor fails (see
/// [`Transport::ensure_consumer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliverFrom {
    /// Every matching message the transport still holds (the default): a
    /// role that starts late finds its inbox.
    #[default]
    All,
    /// Only messages stored after the consumer is first created: a
    /// subscription added later does not get what was published before it
    /// existed.
    New,
    /// Matching messages from the first one stored at or after this time,
    /// by the transport's clock (the broker's, on a server). A time in the
    /// future takes none of the stored messages, so it acts as
    /// [`New`](Self::New): messages stored after the consumer is created are
    /// delivered even if stored before that time.
    Since(chrono::DateTime<chrono::Utc>),
}

impl ConsumerConfig {
    /// A consumer named `name` taking `filter`, with a 30 s ack wait, at most
    /// 64 pending deliveries, the default 1 MiB message limit, starting at
    /// every message stored ([`DeliverFrom::All`]).
    pub fn new(name: Name, filter: SubjectPattern) -> Self {
        Self {
            name,
            filters: vec![filter],
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 64,
            max_message_bytes: Codec::DEFAULT_MAX_BYTES,
            deliver: DeliverFrom::All,
        }
    }

    /// Adds another filter.
    pub fn with_filter(mut self, filter: SubjectPattern) -> Self {
        self.filters.push(filter);
        self
    }

    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets the most unacknowledged deliveries.
    pub fn with_max_ack_pending(mut self, n: usize) -> Self {
        self.max_ack_pending = n;
        self
    }

    /// Sets the largest message decoded.
    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Sets where the consumer starts when it is created.
    pub fn with_deliver(mut self, deliver: DeliverFrom) -> Self {
        self.deliver = deliver;
        self
    }

    /// Whether a subject is taken by this consumer.
    pub fn matches(&self, subject: &Subject) -> bool {
        self.filters.iter().any(|f| f.matches(subject))
    }

    /// Checks the configuration for values no backend accepts.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |message: &str| {
            Err(TransportError::InvalidInput {
                message: format!("consumer `{}`: {message}", self.name),
            })
        };
        if self.filters.is_empty() {
            return bad("needs at least one filter");
        }
        if self.ack_wait.is_zero() {
            return bad("ack_wait must be positive");
        }
        if self.max_ack_pending == 0 {
            return bad("max_ack_pending must be positive");
        }
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes must be positive");
        }
        Ok(())
    }
}

/// How a delivery is settled with the transport. Implemented by backends;
/// applications use the methods on [`Delivery`].
#[async_trait]
pub trait Acker: Debug + Send + Sync {
    /// Acknowledges: the message is done and will not be delivered again.
    async fn ack(&self) -> Result<(), TransportError>;
    /// Negative acknowledgement: deliver again after `delay` (at once if `None`).
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError>;
    /// Terminates: never deliver this message again, to this consumer.
    async fn term(&self) -> Result<(), TransportError>;
    /// Work in progress: restart the ack-wait timer.
    async fn progress(&self) -> Result<(), TransportError>;
}

/// One delivery from a durable consumer: the decoded envelope, or the decode
/// error together with the raw bytes, and the delivery attempt number.
#[derive(Debug)]
pub struct Delivery {
    subject: Subject,
    payload: Bytes,
    // Shared with the handler's `Context` rather than copied for it.
    message: Result<Arc<Envelope>, DecodeError>,
    attempt: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// Decodes `payload` with `codec` and wraps it. Backends call this.
    pub fn new(
        subject: Subject,
        payload: Bytes,
        attempt: u32,
        codec: &Codec,
        acker: Box<dyn Acker>,
    ) -> Self {
        let message = codec.decode(&payload).map(Arc::new);
        Self {
            subject,
            payload,
            message,
            attempt,
            acker,
        }
    }

    /// Wraps the acker, for transport middleware (metrics, fault injection).
    pub fn map_acker(mut self, f: impl FnOnce(Box<dyn Acker>) -> Box<dyn Acker>) -> Self {
        self.acker = f(self.acker);
        self
    }

    /// Replaces the attempt number, for transport middleware.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The subject it was published to.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The raw bytes as delivered.
    pub fn raw(&self) -> &Bytes {
        &self.payload
    }

    /// The envelope, or why it could not be decoded.
    pub fn message(&self) -> Result<&Envelope, &DecodeError> {
        self.message.as_deref()
    }

    /// The envelope, or the decode failure with the raw bytes.
    pub fn to_message(&self) -> Result<Envelope, DecodeFailure> {
        match &self.message {
            Ok(env) => Ok(Envelope::clone(env)),
            Err(error) => Err(DecodeFailure {
                error: error.clone(),
                raw: self.payload.clone(),
            }),
        }
    }

    /// The envelope as this delivery holds it, shared (no copy), or why it
    /// could not be decoded.
    pub(crate) fn shared_message(&self) -> Result<&Arc<Envelope>, &DecodeError> {
        self.message.as_ref()
    }

    /// The subject, the envelope (or the decode failure with the raw bytes)
    /// and the acker, for a consumer that settles after handing the
    /// envelope on: the envelope is moved out, not copied, when nothing else
    /// holds it.
    pub(crate) fn into_parts(self) -> (Subject, Result<Envelope, DecodeFailure>, Box<dyn Acker>) {
        let message = match self.message {
            Ok(env) => Ok(Arc::try_unwrap(env).unwrap_or_else(|shared| Envelope::clone(&shared))),
            Err(error) => Err(DecodeFailure {
                error,
                raw: self.payload,
            }),
        };
        (self.subject, message, self.acker)
    }

    /// The broker's delivery attempt number, starting at 1. Informational:
    /// it can go back to 1 after a broker crash, so the runtime counts
    /// attempts in its claims instead.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Acknowledges the delivery.
    pub async fn ack(&self) -> Result<(), TransportError> {
        self.acker.ack().await
    }

    /// Asks for redelivery after `delay` (at once if `None`).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        self.acker.nak(delay).await
    }

    /// Never deliver this message to this consumer again.
    pub async fn term(&self) -> Result<(), TransportError> {
        self.acker.term().await
    }

    /// Restarts the ack-wait timer while work goes on.
    pub async fn progress(&self) -> Result<(), TransportError> {
        self.acker.progress().await
    }
}

/// A message from an ephemeral subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The subject it was published to.
    pub subject: Subject,
    /// Its bytes.
    pub payload: Bytes,
    /// Where to send a reply, for requests.
    pub reply: Option<Subject>,
}

impl Message {
    /// A new message.
    pub fn new(subject: Subject, payload: Bytes, reply: Option<Subject>) -> Self {
        Self {
            subject,
            payload,
            reply,
        }
    }

    /// Decodes the payload as an envelope.
    pub fn envelope(&self, codec: &Codec) -> Result<Envelope, DecodeError> {
        codec.decode(&self.payload)
    }
}

/// The deliveries of a bound durable consumer. Ends with an error item when
/// the consumer is deleted or the transport closes.
pub type DeliveryStream = BoxStream<'static, Result<Delivery, TransportError>>;

/// The messages of an ephemeral subscription; an `Err(Lagged)` item reports
/// messages the subscriber missed.
pub type Subscription = BoxStream<'static, Result<Message, TransportError>>;

/// Subjects and envelopes between the roles of an org. See the [module
/// docs](self) for the guarantees.
///
/// Object-safe; used as `Arc<dyn Transport>`. Conveniences live in
/// [`TransportExt`].
#[async_trait]
pub trait Transport: Debug + Display + Send + Sync + 'static {
    /// Durable publish: returns once the message is stored. With a
    /// [`msg_id`](PublishOptions::msg_id), a repeat within the dedupe window
    /// is acknowledged as a duplicate and not stored again.
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError>;

    /// Creates the durable consumer, or checks that an existing one of the
    /// same name is compatible. Idempotent; an admin operation.
    ///
    /// # Start position
    ///
    /// [`ConsumerConfig::deliver`] applies when the consumer is *created*:
    /// it decides which of the messages already stored the new consumer
    /// takes. Ensuring an existing consumer again never moves its position —
    /// what it has delivered and what was acknowledged stay as they are —
    /// and a different start position on an existing consumer is not an
    /// error: it is kept as it was (JetStream cannot change it). Other
    /// settings (ack wait, pending limit, message limit) are updated, and so
    /// are the filters: from then on it takes the messages published that
    /// the new filters match, and no longer those only the old ones matched
    /// (what it delivered and was not acknowledged stays its own until
    /// settled). Whether a message stored *before* the change, that only the
    /// new filters match, is delivered depends on the backend (JetStream
    /// delivers those past the consumer's position; the memory transport
    /// does not). To start over from another position, delete the consumer
    /// and create it again.
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError>;

    /// Binds to an existing durable consumer. Several binders of one consumer
    /// share its messages (each goes to one of them).
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError>;

    /// Deletes a durable consumer; `NotFound` if it does not exist.
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError>;

    /// How far a durable consumer is behind now; `NotFound` if it does not
    /// exist. A snapshot: it may have moved by the time it is read.
    async fn consumer_lag(&self, name: &Name) -> Result<ConsumerLag, TransportError>;

    /// Core publish: fire-and-forget, at-most-once, not stored; reaches
    /// ephemeral subscribers only.
    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError>;

    /// Ephemeral subscription to every message published to a matching
    /// subject from now on (durable publishes included).
    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError>;

    /// Sends a request to `subject` and waits up to `timeout` for one reply.
    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError>;
}

/// Conveniences over any [`Transport`].
#[async_trait]
pub trait TransportExt: Transport {
    /// Encodes `envelope` with the default codec and publishes it durably with
    /// its id as the dedupe id.
    async fn publish_envelope(
        &self,
        subject: &Subject,
        envelope: &Envelope,
    ) -> Result<PublishAck, TransportError> {
        let bytes = Codec::default().encode(envelope)?;
        self.publish(
            subject,
            bytes,
            PublishOptions::with_msg_id(envelope.id.as_str()),
        )
        .await
    }

    /// Replies to a request received on a subscription.
    async fn respond(&self, request: &Message, payload: Bytes) -> Result<(), TransportError> {
        let reply = request
            .reply
            .as_ref()
            .ok_or_else(|| TransportError::InvalidInput {
                message: format!("message on {} expects no reply", request.subject),
            })?;
        self.publish_ephemeral(reply, payload).await
    }
}

impl<T: Transport + ?Sized> TransportExt for T {}

/// The transport as a trait object.
pub type DynTransport = dyn Transport;

macro_rules! forward_transport {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Transport + ?Sized> Transport for $ty {
            async fn publish(
                &self,
                subject: &Subject,
                payload: Bytes,
                options: PublishOptions,
            ) -> Result<PublishAck, TransportError> {
                (**self).publish(subject, payload, options).await
            }
            async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
                (**self).ensure_consumer(config).await
            }
            async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
                (**self).consume(name).await
            }
            async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
                (**self).delete_consumer(name).await
            }
            async fn consumer_lag(&self, name: &Name) -> Result<ConsumerLag, TransportError> {
                (**self).consumer_lag(name).await
            }
            async fn publish_ephemeral(
                &self,
                subject: &Subject,
                payload: Bytes,
            ) -> Result<(), TransportError> {
                (**self).publish_ephemeral(subject, payload).await
            }
            async fn subscribe(
                &self,
                pattern: &SubjectPattern,
            ) -> Result<Subscription, TransportError> {
                (**self).subscribe(pattern).await
            }
            async fn request(
                &self,
                subject: &Subject,
                payload: Bytes,
                timeout: Duration,
            ) -> Result<Bytes, TransportError> {
                (**self).request(subject, payload, timeout).await
            }
        }
    };
}

forward_transport!(Arc<T>);
forward_transport!(Box<T>);
