//! The in-process transport.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{
    ConsumerConfig, ConsumerLag, DeliverFrom, DeliveryStream, PublishAck, PublishOptions,
    Subscription, Transport, TransportError,
};
use crate::clock::{Clock, MonotonicClock};
use crate::codec::Codec;
use crate::name::Name;
use crate::subject::{Subject, SubjectPattern};

mod state;
use state::*;

/// An in-process [`Transport`]: the embedded default, and the reference the
/// conformance suite is written against.
///
/// All durable subjects share one log. A message stays in the log until every
/// durable consumer whose filter matches it has acknowledged or terminated it;
/// a message that no consumer matches yet waits for the first one (so a role
/// that starts late still finds its inbox). A new consumer starts at the
/// oldest message still in the log, or where its
/// [`deliver`](ConsumerConfig::deliver) says: after the last message stored
/// ([`DeliverFrom::New`]), or at the first one stored at or after a time by
/// the transport's [clock](MemoryTransportBuilder::clock)
/// ([`DeliverFrom::Since`]).
///
/// Limits keep memory bounded (see [`MemoryTransportBuilder`]): a publish into
/// a full log fails with [`TransportError::Full`] and stores nothing; a
/// consumer hands out at most `max_ack_pending` unacknowledged deliveries; an
/// ephemeral subscriber's buffer is bounded and overflow is reported to it as
/// [`TransportError::Lagged`].
///
/// Message ids are remembered for deduplication for the duplicate window (2
/// minutes) or the last 100 000 ids, whichever is shorter. Publishing costs
/// the same however many consumers and subscriptions exist: a subject index
/// finds the matching ones, and each consumer keeps its own queue.
///
/// Time (ack wait, nak delays, the dedupe window, and by default the store
/// times [`DeliverFrom::Since`] compares) follows tokio's clock, so tests can
/// run it on a paused clock.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agentorg_core::transport::{ConsumerConfig, MemoryTransport, PublishOptions, Transport};
/// use agentorg_core::subject::{Subject, SubjectPattern};
/// use agentorg_core::Name;
/// use futures::StreamExt;
///
/// let t = MemoryTransport::new();
/// t.ensure_consumer(&ConsumerConfig::new(Name::new("worker")?, SubjectPattern::parse("jobs.>")?)).await?;
/// t.publish(&Subject::parse("jobs.a")?, "not an envelope".into(), PublishOptions::default()).await?;
/// let mut deliveries = t.consume(&Name::new("worker")?).await?;
/// let d = deliveries.next().await.unwrap()?;
/// assert_eq!(d.attempt(), 1);
/// assert!(d.message().is_err(), "raw bytes that are not an envelope arrive as a decode error");
/// d.ack().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

/// Builds a [`MemoryTransport`] with other limits.
#[derive(Debug, Clone)]
pub struct MemoryTransportBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
}

#[derive(Debug, Clone)]
struct Config {
    max_messages: usize,
    max_bytes: usize,
    max_payload: usize,
    duplicate_window: Duration,
    max_dedupe_ids: usize,
    subscriber_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_payload: Codec::DEFAULT_MAX_BYTES,
            duplicate_window: Duration::from_secs(120),
            max_dedupe_ids: 100_000,
            subscriber_buffer: 1024,
        }
    }
}

impl MemoryTransportBuilder {
    /// The most messages the log holds (default 100 000).
    pub fn max_messages(mut self, n: usize) -> Self {
        self.config.max_messages = n;
        self
    }

    /// The most payload bytes the log holds (default 256 MiB).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.config.max_bytes = n;
        self
    }

    /// The largest payload accepted (default 1 MiB, as NATS).
    pub fn max_payload(mut self, n: usize) -> Self {
        self.config.max_payload = n;
        self
    }

    /// How long a message id is remembered for deduplication (default 2 min,
    /// as JetStream).
    pub fn duplicate_window(mut self, d: Duration) -> Self {
        self.config.duplicate_window = d;
        self
    }

    /// The most message ids remembered for deduplication (default 100 000):
    /// past it the oldest are forgotten first, so the dedupe window is the
    /// duplicate window or the last this many ids, whichever is shorter.
    pub fn max_dedupe_ids(mut self, n: usize) -> Self {
        self.config.max_dedupe_ids = n;
        self
    }

    /// Each ephemeral subscriber's buffer (default 1024 messages).
    pub fn subscriber_buffer(mut self, n: usize) -> Self {
        self.config.subscriber_buffer = n;
        self
    }

    /// The clock that stamps each stored message, for
    /// [`DeliverFrom::Since`] (default: a [`MonotonicClock`] anchored when the
    /// transport is built, which follows tokio's paused clock in tests). Give
    /// it the runtime's clock so that times the runtime hands out compare
    /// with store times exactly.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the transport; fails on a zero limit.
    pub fn build(self) -> Result<MemoryTransport, TransportError> {
        let c = &self.config;
        if c.max_messages == 0 || c.max_bytes == 0 || c.max_payload == 0 || c.subscriber_buffer == 0
        {
            return Err(TransportError::InvalidInput {
                message: "memory transport limits must be positive".to_owned(),
            });
        }
        Ok(MemoryTransport {
            inner: Arc::new(Inner {
                config: self.config,
                clock: self
                    .clock
                    .unwrap_or_else(|| Arc::new(MonotonicClock::new())),
                state: Mutex::new(State::default()),
            }),
        })
    }
}

// One std Mutex guards all state: every critical section is short and never
// awaits, so an async mutex would only add cost. Waiting happens outside the
// lock, on each consumer's `Notify`; decoding a delivery happens outside it
// too.

impl MemoryTransport {
    /// A transport with the default limits.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable_defaults())
    }

    /// A builder for other limits.
    pub fn builder() -> MemoryTransportBuilder {
        MemoryTransportBuilder {
            config: Config::default(),
            clock: None,
        }
    }

    /// Number of messages held in the log (for tests and metrics).
    pub fn stored_messages(&self) -> usize {
        lock(&self.inner.state).log.len()
    }
}

#[cold]
fn unreachable_defaults() -> MemoryTransport {
    // The default limits are all positive, so `build` cannot fail on them;
    // this keeps `new` free of panics anyway.
    MemoryTransport {
        inner: Arc::new(Inner {
            config: Config::default(),
            clock: Arc::new(MonotonicClock::new()),
            state: Mutex::new(State::default()),
        }),
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("MemoryTransport")
            .field("messages", &st.log.len())
            .field("bytes", &st.bytes)
            .field("consumers", &st.consumers.len())
            .field("subscribers", &st.subscribers.len())
            .finish()
    }
}

impl fmt::Display for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryTransport")
    }
}

impl MemoryTransport {
    fn add_subscriber(&self, pattern: SubjectPattern, buffer: usize) -> SubscriptionStream {
        let (tx, rx) = mpsc::channel(buffer);
        let missed = Arc::new(AtomicU64::new(0));
        let mut st = lock(&self.inner.state);
        st.next_subscriber += 1;
        let id = st.next_subscriber;
        st.subscriber_index.insert(&pattern, id);
        st.subscribers.insert(
            id,
            Subscriber {
                pattern,
                tx,
                missed: Arc::clone(&missed),
            },
        );
        SubscriptionStream {
            rx,
            missed,
            id,
            inner: Arc::clone(&self.inner),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let config = &self.inner.config;
        if payload.len() > config.max_payload {
            return Err(TransportError::TooLarge {
                size: payload.len(),
                limit: config.max_payload,
            });
        }
        let now = Instant::now();
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        st.prune_dedupe(config.duplicate_window, config.max_dedupe_ids, now);
        if let Some(id) = &options.msg_id {
            if let Some(seq) = st.dedupe.get(id) {
                return Ok(PublishAck::new(*seq, true));
            }
        }
        if st.log.len() >= config.max_messages {
            return Err(TransportError::Full {
                message: format!("{} messages stored (max_messages)", st.log.len()),
            });
        }
        if st.bytes + payload.len() > config.max_bytes {
            return Err(TransportError::Full {
                message: format!("{} bytes stored (max_bytes {})", st.bytes, config.max_bytes),
            });
        }
        st.next_seq = st.next_seq.max(1);
        let seq = st.next_seq;
        st.next_seq += 1;
        let matching = st.consumer_index.matches(subject);
        for name in &matching {
            if let Some(c) = st.consumers.get_mut(name) {
                c.ready.push_back(seq);
                c.notify.notify_waiters();
            }
        }
        st.bytes += payload.len();
        st.fan_out(subject, &payload, None);
        // Stamped under the lock, so store times rise with sequence numbers
        // (for a clock that does not go back) and `Since` finds its start
        // by time as JetStream does.
        let stored_at = self.inner.clock.now();
        st.log.insert(
            seq,
            Stored {
                subject: subject.clone(),
                payload,
                interest: matching.len(),
                stored_at,
            },
        );
        if let Some(id) = options.msg_id {
            st.dedupe.insert(id.clone(), seq);
            st.dedupe_order.push_back((now, id));
        }
        Ok(PublishAck::new(seq, false))
    }

    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        config.validate()?;
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        if let Some(c) = st.consumers.get_mut(&config.name) {
            let old_filters = (c.config.filters != config.filters)
                .then(|| std::mem::replace(&mut c.config.filters, config.filters.clone()));
            // The start position stays as it was created (as on JetStream,
            // which cannot change it); the rest is updated.
            let deliver = c.config.deliver;
            c.config = config.clone();
            c.config.deliver = deliver;
            c.codec = Codec::with_max_bytes(config.max_message_bytes);
            let notify = Arc::clone(&c.notify);
            if let Some(old) = old_filters {
                tracing::info!(consumer = %config.name, old = ?old, new = ?config.filters, "consumer filters changed");
                // New filters: it takes what they match from now on, and
                // lets go of the undelivered messages they no longer match
                // (what it delivered stays its own until settled).
                let mut dropped = Vec::new();
                c.ready.retain(|seq| {
                    let keep = st.log.get(seq).is_some_and(|m| config.matches(&m.subject));
                    if !keep {
                        dropped.push(*seq);
                    }
                    keep
                });
                for seq in dropped {
                    st.release(seq);
                }
                for filter in &old {
                    st.consumer_index.remove(filter, &config.name);
                }
                for filter in &config.filters {
                    st.consumer_index.insert(filter, config.name.clone());
                }
            }
            notify.notify_waiters();
            return Ok(());
        }
        // A new consumer takes the messages still in the log that it matches,
        // from its start position on.
        let first = match config.deliver {
            DeliverFrom::All => Some(0),
            DeliverFrom::New => None,
            // The first message stored at or after `since`, as JetStream
            // picks it; everything after that one matches too.
            DeliverFrom::Since(since) => st
                .log
                .iter()
                .find(|(_, stored)| stored.stored_at >= since)
                .map(|(seq, _)| *seq),
        };
        let mut ready = VecDeque::new();
        if let Some(first) = first {
            for (seq, stored) in st.log.range_mut(first..) {
                if config.matches(&stored.subject) {
                    stored.interest += 1;
                    ready.push_back(*seq);
                }
            }
        }
        for filter in &config.filters {
            st.consumer_index.insert(filter, config.name.clone());
        }
        st.next_generation += 1;
        let generation = st.next_generation;
        st.consumers.insert(
            config.name.clone(),
            Consumer {
                generation,
                config: config.clone(),
                codec: Codec::with_max_bytes(config.max_message_bytes),
                ready,
                pending: BTreeMap::new(),
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(())
    }

    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let Some(generation) = lock(&self.inner.state)
            .consumers
            .get(name)
            .map(|c| c.generation)
        else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        };
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        let stream = futures::stream::unfold(Some((inner, name)), move |state| async move {
            let (inner, name) = state?;
            match inner.next_delivery(&name, generation).await {
                Ok(d) => Some((Ok(d), Some((inner, name)))),
                // The consumer is gone: report it once, then end.
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        let Some(c) = st.consumers.remove(name) else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        };
        for filter in &c.config.filters {
            st.consumer_index.remove(filter, name);
        }
        // Give back its hold on everything it had not settled.
        for seq in c.ready.iter().chain(c.pending.keys()) {
            st.release(*seq);
        }
        // Wake its binders so they see it is gone.
        c.notify.notify_waiters();
        Ok(())
    }

    async fn consumer_lag(&self, name: &Name) -> Result<ConsumerLag, TransportError> {
        let guard = lock(&self.inner.state);
        let Some(c) = guard.consumers.get(name) else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        };
        Ok(ConsumerLag::new(
            c.ready.len() as u64,
            c.pending.len() as u64,
        ))
    }

    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let limit = self.inner.config.max_payload;
        if payload.len() > limit {
            return Err(TransportError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        lock(&self.inner.state).fan_out(subject, &payload, None);
        Ok(())
    }

    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        let stream = self.add_subscriber(pattern.clone(), self.inner.config.subscriber_buffer);
        Ok(Box::pin(stream))
    }

    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let limit = self.inner.config.max_payload;
        if payload.len() > limit {
            return Err(TransportError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        let reply = Subject::parse(format!(
            "_INBOX.{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        ))
        .map_err(|e| TransportError::InvalidInput {
            message: e.to_string(),
        })?;
        // Dropped (unsubscribed) on every way out.
        let mut replies = self.add_subscriber(SubjectPattern::from(&reply), 1);
        let matched = lock(&self.inner.state).fan_out(subject, &payload, Some(&reply));
        if matched == 0 {
            return Err(TransportError::NoResponders {
                subject: subject.to_string(),
            });
        }
        match tokio::time::timeout(timeout, replies.rx.recv()).await {
            Ok(Some(m)) => Ok(m.payload),
            Ok(None) => Err(TransportError::Closed),
            Err(_) => Err(TransportError::Timeout {
                operation: format!("request to {subject}"),
                after: timeout,
            }),
        }
    }
}
