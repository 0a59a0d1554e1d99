//! The in-process transport.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{
    Acker, ConsumerConfig, Delivery, DeliveryStream, Message, PublishAck, PublishOptions,
    Subscription, Transport, TransportError,
};
use crate::codec::Codec;
use crate::name::Name;
use crate::subject::{Subject, SubjectPattern};

/// An in-process [`Transport`]: the embedded default, and the reference the
/// conformance suite is written against.
///
/// All durable subjects share one log. A message stays in the log until every
/// durable consumer whose filter matches it has acknowledged or terminated it;
/// a message that no consumer matches yet waits for the first one (so a role
/// that starts late still finds its inbox). A new consumer starts at the
/// oldest message still in the log.
///
/// Limits keep memory bounded (see [`MemoryTransportBuilder`]): a publish into
/// a full log fails with [`TransportError::Full`] and stores nothing; a
/// consumer hands out at most `max_ack_pending` unacknowledged deliveries; an
/// ephemeral subscriber's buffer is bounded and overflow is reported to it as
/// [`TransportError::Lagged`].
///
/// Time (ack wait, nak delays, the dedupe window) follows tokio's clock, so
/// tests can run it on a paused clock.
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
}

#[derive(Debug, Clone)]
struct Config {
    max_messages: usize,
    max_bytes: usize,
    max_payload: usize,
    duplicate_window: Duration,
    subscriber_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_payload: Codec::DEFAULT_MAX_BYTES,
            duplicate_window: Duration::from_secs(120),
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

    /// Each ephemeral subscriber's buffer (default 1024 messages).
    pub fn subscriber_buffer(mut self, n: usize) -> Self {
        self.config.subscriber_buffer = n;
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
                state: Mutex::new(State::default()),
            }),
        })
    }
}

// One std Mutex guards all state: every critical section is short and never
// awaits, so an async mutex would only add cost. Waiting happens outside the
// lock, on each consumer's `Notify`.
struct Inner {
    config: Config,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    log: BTreeMap<u64, Stored>,
    bytes: usize,
    dedupe: HashMap<String, u64>,
    dedupe_order: VecDeque<(Instant, String)>,
    consumers: HashMap<Name, Consumer>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
}

struct Stored {
    subject: Subject,
    payload: Bytes,
    /// Consumers that match the message and have not let go of it yet.
    interest: usize,
}

struct Consumer {
    config: ConsumerConfig,
    codec: Codec,
    /// The next sequence to consider for a first delivery.
    cursor: u64,
    /// Delivered and not yet settled, by sequence.
    pending: BTreeMap<u64, InFlight>,
    notify: Arc<Notify>,
}

struct InFlight {
    deliveries: u32,
    /// When the message becomes deliverable again: the ack deadline while it
    /// is out, or the end of a nak delay.
    due: Instant,
    /// Out with a binder (true) or nak'ed and waiting (false).
    out: bool,
}

struct Subscriber {
    id: u64,
    pattern: SubjectPattern,
    tx: mpsc::Sender<Message>,
    missed: Arc<AtomicU64>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-updated in a
    // way later calls would trip over more than the panic itself did.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

impl State {
    /// Fans a message out to the ephemeral subscribers; returns how many
    /// matched. Never blocks: a full buffer counts as missed.
    fn fan_out(&mut self, subject: &Subject, payload: &Bytes, reply: Option<&Subject>) -> usize {
        let mut matched = 0;
        self.subscribers.retain(|s| {
            if s.tx.is_closed() {
                return false;
            }
            if s.pattern.matches(subject) {
                matched += 1;
                let msg = Message::new(subject.clone(), payload.clone(), reply.cloned());
                match s.tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.missed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        matched
    }

    fn prune_dedupe(&mut self, window: Duration, now: Instant) {
        while let Some((at, _)) = self.dedupe_order.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
    }

    /// One consumer lets go of `seq`; the message leaves the log when no
    /// consumer holds it any more.
    fn release(&mut self, seq: u64) {
        if let Some(stored) = self.log.get_mut(&seq) {
            stored.interest = stored.interest.saturating_sub(1);
            if stored.interest == 0 {
                if let Some(stored) = self.log.remove(&seq) {
                    self.bytes -= stored.payload.len();
                }
            }
        }
    }
}

enum Pick {
    Ready(Box<Delivery>),
    Wait(Option<Instant>),
}

impl Inner {
    fn settle(&self, consumer: &Name, seq: u64, how: Settle) -> Result<(), TransportError> {
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(c) = st.consumers.get_mut(consumer) else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{consumer}`"),
            });
        };
        let now = Instant::now();
        match how {
            Settle::Done => {
                // Acking a message that is no longer pending (already acked, or
                // the consumer was recreated) is a no-op, as on JetStream.
                if c.pending.remove(&seq).is_some() {
                    c.notify.notify_waiters();
                    st.release(seq);
                }
            }
            Settle::Nak(delay) => {
                if let Some(f) = c.pending.get_mut(&seq) {
                    f.out = false;
                    f.due = now + delay.unwrap_or_default();
                    c.notify.notify_waiters();
                }
            }
            Settle::Progress => {
                if let Some(f) = c.pending.get_mut(&seq) {
                    if f.out {
                        f.due = now + c.config.ack_wait;
                    }
                }
            }
        }
        Ok(())
    }

    fn pick(self: &Arc<Self>, name: &Name) -> Result<Pick, TransportError> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(c) = st.consumers.get_mut(name) else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        };
        let now = Instant::now();
        // Redeliveries first, oldest sequence first: a message whose ack
        // deadline passed, or whose nak delay ended.
        let due = c
            .pending
            .iter()
            .find(|(_, f)| f.due <= now)
            .map(|(seq, _)| *seq);
        let seq = match due {
            Some(seq) => Some(seq),
            None if c.pending.len() < c.config.max_ack_pending => {
                let mut found = None;
                for (seq, stored) in st.log.range(c.cursor..) {
                    if c.config.matches(&stored.subject) {
                        found = Some(*seq);
                        break;
                    }
                }
                // Everything before `found` (or the whole tail) did not match.
                c.cursor = found.map_or(st.next_seq, |s| s + 1);
                if let Some(seq) = found {
                    c.pending.insert(
                        seq,
                        InFlight {
                            deliveries: 0,
                            due: now,
                            out: false,
                        },
                    );
                }
                found
            }
            None => None,
        };
        let Some(seq) = seq else {
            return Ok(Pick::Wait(c.pending.values().map(|f| f.due).min()));
        };
        let Some(stored) = st.log.get(&seq) else {
            // Cannot happen: a pending message keeps its interest in the log.
            c.pending.remove(&seq);
            return Ok(Pick::Wait(Some(now)));
        };
        let Some(f) = c.pending.get_mut(&seq) else {
            return Ok(Pick::Wait(Some(now)));
        };
        f.deliveries += 1;
        f.out = true;
        f.due = now + c.config.ack_wait;
        let acker = MemoryAcker {
            inner: Arc::clone(self),
            consumer: name.clone(),
            seq,
        };
        Ok(Pick::Ready(Box::new(Delivery::new(
            stored.subject.clone(),
            stored.payload.clone(),
            f.deliveries,
            &c.codec,
            Box::new(acker),
        ))))
    }

    async fn next_delivery(self: &Arc<Self>, name: &Name) -> Result<Delivery, TransportError> {
        let notify = {
            let st = lock(&self.state);
            match st.consumers.get(name) {
                Some(c) => Arc::clone(&c.notify),
                None => {
                    return Err(TransportError::NotFound {
                        what: format!("consumer `{name}`"),
                    })
                }
            }
        };
        loop {
            // Register for wake-ups before looking, so a publish or ack that
            // lands between the look and the wait is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick(name)? {
                Pick::Ready(d) => return Ok(*d),
                Pick::Wait(Some(at)) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                Pick::Wait(None) => notified.await,
            }
        }
    }
}

enum Settle {
    Done,
    Nak(Option<Duration>),
    Progress,
}

#[derive(Debug)]
struct MemoryAcker {
    inner: Arc<Inner>,
    consumer: Name,
    seq: u64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryTransport")
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        self.inner.settle(&self.consumer, self.seq, Settle::Done)
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        self.inner
            .settle(&self.consumer, self.seq, Settle::Nak(delay))
    }
    async fn term(&self) -> Result<(), TransportError> {
        self.inner.settle(&self.consumer, self.seq, Settle::Done)
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.inner
            .settle(&self.consumer, self.seq, Settle::Progress)
    }
}

/// An ephemeral subscription: the receiver plus the count of messages that
/// did not fit its buffer, reported before the next message.
struct SubscriptionStream {
    rx: mpsc::Receiver<Message>,
    missed: Arc<AtomicU64>,
}

impl Stream for SubscriptionStream {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let missed = self.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Poll::Ready(Some(Err(TransportError::Lagged { missed })));
        }
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl MemoryTransport {
    fn add_subscriber(&self, pattern: SubjectPattern, buffer: usize) -> (u64, SubscriptionStream) {
        let (tx, rx) = mpsc::channel(buffer);
        let missed = Arc::new(AtomicU64::new(0));
        let mut st = lock(&self.inner.state);
        st.next_subscriber += 1;
        let id = st.next_subscriber;
        st.subscribers.push(Subscriber {
            id,
            pattern,
            tx,
            missed: Arc::clone(&missed),
        });
        (id, SubscriptionStream { rx, missed })
    }

    fn remove_subscriber(&self, id: u64) {
        lock(&self.inner.state).subscribers.retain(|s| s.id != id);
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
        let mut st = lock(&self.inner.state);
        st.prune_dedupe(config.duplicate_window, now);
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
        let mut interest = 0;
        for c in st.consumers.values() {
            if c.config.matches(subject) {
                interest += 1;
                c.notify.notify_waiters();
            }
        }
        st.bytes += payload.len();
        st.fan_out(subject, &payload, None);
        st.log.insert(
            seq,
            Stored {
                subject: subject.clone(),
                payload,
                interest,
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
            if c.config.filters != config.filters {
                return Err(TransportError::Conflict {
                    message: format!(
                        "consumer `{}` exists with filters {:?}, not {:?}",
                        config.name, c.config.filters, config.filters
                    ),
                });
            }
            c.config = config.clone();
            c.codec = Codec::with_max_bytes(config.max_message_bytes);
            c.notify.notify_waiters();
            return Ok(());
        }
        // A new consumer takes every message still in the log that it matches.
        let mut cursor = st.next_seq.max(1);
        for (seq, stored) in st.log.iter_mut() {
            if config.matches(&stored.subject) {
                stored.interest += 1;
                cursor = cursor.min(*seq);
            }
        }
        st.consumers.insert(
            config.name.clone(),
            Consumer {
                config: config.clone(),
                codec: Codec::with_max_bytes(config.max_message_bytes),
                cursor,
                pending: BTreeMap::new(),
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(())
    }

    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        if !lock(&self.inner.state).consumers.contains_key(name) {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        }
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        let stream = futures::stream::unfold(Some((inner, name)), |state| async move {
            let (inner, name) = state?;
            match inner.next_delivery(&name).await {
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
        // Give back its hold on everything it had not settled.
        let held: Vec<u64> = st
            .log
            .range(c.cursor..)
            .filter(|(_, s)| c.config.matches(&s.subject))
            .map(|(seq, _)| *seq)
            .chain(c.pending.keys().copied())
            .collect();
        for seq in held {
            st.release(seq);
        }
        // Wake its binders so they see it is gone.
        c.notify.notify_waiters();
        Ok(())
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
        let (_, stream) = self.add_subscriber(pattern.clone(), self.inner.config.subscriber_buffer);
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
        let (id, mut replies) = self.add_subscriber(SubjectPattern::from(&reply), 1);
        let matched = lock(&self.inner.state).fan_out(subject, &payload, Some(&reply));
        let outcome = if matched == 0 {
            Err(TransportError::NoResponders {
                subject: subject.to_string(),
            })
        } else {
            match tokio::time::timeout(timeout, replies.rx.recv()).await {
                Ok(Some(m)) => Ok(m.payload),
                Ok(None) => Err(TransportError::Closed),
                Err(_) => Err(TransportError::Timeout {
                    operation: format!("request to {subject}"),
                    after: timeout,
                }),
            }
        };
        self.remove_subscriber(id);
        outcome
    }
}
