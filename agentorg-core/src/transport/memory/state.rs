//! The memory transport's state: streams, consumers with their queues and
//! in-flight deliveries, subscribers, and the acknowledgements of deliveries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::*;
use crate::codec::Codec;
use crate::name::Name;
use crate::subject::{Subject, SubjectPattern};
use crate::transport::index::SubjectIndex;
use crate::transport::{Acker, ConsumerConfig, Delivery, Message, TransportError};

pub(super) struct Inner {
    pub(super) config: Config,
    /// Stamps stored messages, for `DeliverFrom::Since`.
    pub(super) clock: Arc<dyn Clock>,
    pub(super) state: Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) log: BTreeMap<u64, Stored>,
    pub(super) bytes: usize,
    pub(super) dedupe: HashMap<String, u64>,
    pub(super) dedupe_order: VecDeque<(Instant, String)>,
    pub(super) consumers: HashMap<Name, Consumer>,
    /// Which consumers' filters match a subject.
    pub(super) consumer_index: SubjectIndex<Name>,
    pub(super) subscribers: HashMap<u64, Subscriber>,
    /// Which subscribers' patterns match a subject.
    pub(super) subscriber_index: SubjectIndex<u64>,
    pub(super) next_subscriber: u64,
    /// Numbers consumers as they are created, so a binder or an acker of a
    /// deleted consumer never acts on a new one of the same name.
    pub(super) next_generation: u64,
}

pub(super) struct Stored {
    pub(super) subject: Subject,
    pub(super) payload: Bytes,
    /// Consumers that match the message and have not let go of it yet.
    pub(super) interest: usize,
    /// When it was stored, by the transport's clock.
    pub(super) stored_at: DateTime<Utc>,
}

pub(super) struct Consumer {
    pub(super) generation: u64,
    pub(super) config: ConsumerConfig,
    pub(super) codec: Codec,
    /// Matching messages not delivered yet, oldest first.
    pub(super) ready: VecDeque<u64>,
    /// Delivered and not yet settled, by sequence.
    pub(super) pending: BTreeMap<u64, InFlight>,
    pub(super) notify: Arc<Notify>,
}

pub(super) struct InFlight {
    pub(super) deliveries: u32,
    /// When the message becomes deliverable again: the ack deadline while it
    /// is out, or the end of a nak delay.
    pub(super) due: Instant,
    /// Out with a binder (true) or nak'ed and waiting (false).
    pub(super) out: bool,
}

pub(super) struct Subscriber {
    pub(super) pattern: SubjectPattern,
    pub(super) tx: mpsc::Sender<Message>,
    pub(super) missed: Arc<AtomicU64>,
}

/// `now + d`, saturating far in the future instead of overflowing.
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-updated in a
    // way later calls would trip over more than the panic itself did.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    /// Fans a message out to the matching ephemeral subscribers; returns how
    /// many matched. Never blocks: a full buffer counts as missed.
    pub(super) fn fan_out(
        &mut self,
        subject: &Subject,
        payload: &Bytes,
        reply: Option<&Subject>,
    ) -> usize {
        let mut matched = 0;
        for id in self.subscriber_index.matches(subject) {
            let Some(s) = self.subscribers.get(&id) else {
                continue;
            };
            let msg = Message::new(subject.clone(), payload.clone(), reply.cloned());
            match s.tx.try_send(msg) {
                Ok(()) => matched += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    matched += 1;
                    s.missed.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.remove_subscriber(id),
            }
        }
        matched
    }

    pub(super) fn remove_subscriber(&mut self, id: u64) {
        if let Some(s) = self.subscribers.remove(&id) {
            self.subscriber_index.remove(&s.pattern, &id);
        }
    }

    pub(super) fn prune_dedupe(&mut self, window: Duration, max: usize, now: Instant) {
        while let Some((at, _)) = self.dedupe_order.front() {
            if now.saturating_duration_since(*at) < window && self.dedupe_order.len() <= max {
                break;
            }
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
    }

    /// One consumer lets go of `seq`; the message leaves the log when no
    /// consumer holds it any more.
    pub(super) fn release(&mut self, seq: u64) {
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

/// A delivery picked under the lock, decoded after it is released.
pub(super) struct Picked {
    pub(super) generation: u64,
    pub(super) subject: Subject,
    pub(super) payload: Bytes,
    pub(super) attempt: u32,
    pub(super) codec: Codec,
    pub(super) seq: u64,
}

pub(super) enum Pick {
    Ready(Picked),
    Wait(Option<Instant>),
}

impl Inner {
    pub(super) fn settle(
        &self,
        consumer: &Name,
        generation: u64,
        seq: u64,
        how: Settle,
    ) -> Result<(), TransportError> {
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(c) = st
            .consumers
            .get_mut(consumer)
            .filter(|c| c.generation == generation)
        else {
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
                    f.due = later(now, delay.unwrap_or_default());
                    c.notify.notify_waiters();
                }
            }
            Settle::Progress => {
                if let Some(f) = c.pending.get_mut(&seq) {
                    if f.out {
                        f.due = later(now, c.config.ack_wait);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn pick(&self, name: &Name, generation: u64) -> Result<Pick, TransportError> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(c) = st
            .consumers
            .get_mut(name)
            .filter(|c| c.generation == generation)
        else {
            return Err(TransportError::NotFound {
                what: format!("consumer `{name}`"),
            });
        };
        let now = Instant::now();
        // Redeliveries first, oldest sequence first: a message whose ack
        // deadline passed, or whose nak delay ended. Then the next new one,
        // while fewer than `max_ack_pending` are unsettled.
        let due = c
            .pending
            .iter()
            .find(|(_, f)| f.due <= now)
            .map(|(seq, _)| *seq);
        let seq = match due {
            Some(seq) => seq,
            None if c.pending.len() < c.config.max_ack_pending => match c.ready.pop_front() {
                Some(seq) => {
                    c.pending.insert(
                        seq,
                        InFlight {
                            deliveries: 0,
                            due: now,
                            out: false,
                        },
                    );
                    seq
                }
                None => return Ok(Pick::Wait(c.pending.values().map(|f| f.due).min())),
            },
            None => return Ok(Pick::Wait(c.pending.values().map(|f| f.due).min())),
        };
        // A message a consumer holds (ready or pending) keeps its interest, so
        // it is in the log.
        let (Some(stored), Some(f)) = (st.log.get(&seq), c.pending.get_mut(&seq)) else {
            c.pending.remove(&seq);
            return Ok(Pick::Wait(Some(now)));
        };
        f.deliveries += 1;
        f.out = true;
        f.due = later(now, c.config.ack_wait);
        Ok(Pick::Ready(Picked {
            generation: c.generation,
            subject: stored.subject.clone(),
            payload: stored.payload.clone(),
            attempt: f.deliveries,
            codec: c.codec,
            seq,
        }))
    }

    /// The next delivery of the consumer `name` of this `generation` (the
    /// one bound); `NotFound` once it is deleted, even if a consumer of the
    /// same name is created again.
    pub(super) async fn next_delivery(
        self: &Arc<Self>,
        name: &Name,
        generation: u64,
    ) -> Result<Delivery, TransportError> {
        let notify = {
            let st = lock(&self.state);
            match st
                .consumers
                .get(name)
                .filter(|c| c.generation == generation)
            {
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
            match self.pick(name, generation)? {
                Pick::Ready(p) => {
                    let acker = MemoryAcker {
                        inner: Arc::clone(self),
                        consumer: name.clone(),
                        generation: p.generation,
                        seq: p.seq,
                    };
                    return Ok(Delivery::new(
                        p.subject,
                        p.payload,
                        p.attempt,
                        &p.codec,
                        Box::new(acker),
                    ));
                }
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

pub(super) enum Settle {
    Done,
    Nak(Option<Duration>),
    Progress,
}

#[derive(Debug)]
pub(super) struct MemoryAcker {
    pub(super) inner: Arc<Inner>,
    pub(super) consumer: Name,
    pub(super) generation: u64,
    pub(super) seq: u64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryTransport")
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        self.inner
            .settle(&self.consumer, self.generation, self.seq, Settle::Done)
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        self.inner.settle(
            &self.consumer,
            self.generation,
            self.seq,
            Settle::Nak(delay),
        )
    }
    async fn term(&self) -> Result<(), TransportError> {
        self.inner
            .settle(&self.consumer, self.generation, self.seq, Settle::Done)
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.inner
            .settle(&self.consumer, self.generation, self.seq, Settle::Progress)
    }
}

/// An ephemeral subscription: the receiver plus the count of messages that
/// did not fit its buffer, reported before the next message. Dropping it
/// unsubscribes.
pub(super) struct SubscriptionStream {
    pub(super) rx: mpsc::Receiver<Message>,
    pub(super) missed: Arc<AtomicU64>,
    pub(super) id: u64,
    pub(super) inner: Arc<Inner>,
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

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        lock(&self.inner.state).remove_subscriber(self.id);
    }
}
