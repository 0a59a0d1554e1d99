//! A bound durable consumer: the delivery stream that survives server
//! restarts, and the acker of each delivery.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentorg_core::codec::Codec;
use agentorg_core::subject::Subject;
use agentorg_core::transport::{Acker, Delivery, DeliveryStream, TransportError};
use agentorg_core::Name;
use async_nats::jetstream::consumer::{pull, Consumer, FromConsumer as _};
use async_nats::jetstream::{self, consumer, AckKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use crate::consumers::max_message_bytes;
use crate::error::Error;
use crate::layout::StreamKind;
use crate::transport::Inner;
use crate::violations::{Op, Watch};

/// The longest pause between two attempts to re-bind.
const MAX_PAUSE: Duration = Duration::from_secs(5);
const MIN_PAUSE: Duration = Duration::from_millis(100);

/// One binder of a durable consumer.
///
/// It owns one async-nats pull subscription at a time (which asks for
/// `batch` messages per pull request and expects idle heartbeats). When that
/// subscription reports an error or ends — a missed heartbeat after a server
/// restart, a failed pull, a deleted consumer — the binder drops it and binds
/// again (consumer info, then a new pull subscription), pausing 100 ms
/// doubling to 5 s between failed attempts, until it succeeds or the consumer
/// is gone (`NotFound`, after which the stream ends) or the user may not read
/// it or pull from it (`Forbidden`, likewise). The caller never
/// re-subscribes.
struct Binder {
    inner: Arc<Inner>,
    name: Name,
    kind: StreamKind,
    codec: Codec,
    messages: Option<pull::Stream>,
    pause: Duration,
    ended: bool,
    /// Refusals of this consumer's pull requests (`$JS.API.CONSUMER.MSG.NEXT…`):
    /// a user allowed to read the consumer's info but not to pull from it
    /// would otherwise wait forever.
    refused: Watch,
    next_subject: String,
    /// The consumer's ack wait, as last read from the server.
    ack_wait: Duration,
    /// Stream sequences this binder's deliveries acknowledged late.
    late: Arc<Mutex<LateAcks>>,
}

/// The stream sequences of the last [`LateAcks::CAPACITY`] deliveries
/// acknowledged (or terminated) late. A late ack is confirmed, but the
/// server may have queued the message again before it arrived, into the
/// pull request already waiting (a binder asks for the next messages before
/// it hands the last one out); such a redelivery is acknowledged again and
/// not handed out.
#[derive(Debug, Default)]
struct LateAcks {
    order: std::collections::VecDeque<u64>,
    seqs: std::collections::HashSet<u64>,
}

impl LateAcks {
    const CAPACITY: usize = 1024;

    fn insert(&mut self, seq: u64) {
        if self.seqs.insert(seq) {
            self.order.push_back(seq);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seqs.remove(&old);
            }
        }
    }
}

/// Binds `name` (already located on `kind`, with `info`) and returns its
/// deliveries.
pub(crate) async fn bind(
    inner: Arc<Inner>,
    name: Name,
    kind: StreamKind,
    info: consumer::Info,
) -> Result<DeliveryStream, Error> {
    let codec = Codec::with_max_bytes(max_message_bytes(&info));
    let next_subject = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
        inner.stream_name(kind)
    );
    let mut binder = Binder {
        refused: inner.violations.watch(),
        inner,
        name,
        kind,
        codec,
        messages: None,
        pause: MIN_PAUSE,
        ended: false,
        next_subject,
        ack_wait: info.config.ack_wait,
        late: Arc::default(),
    };
    binder.messages = Some(binder.pull(info).await?);
    Ok(Box::pin(futures::stream::unfold(
        binder,
        |mut b| async move {
            let item = b.next().await?;
            Some((item, b))
        },
    )))
}

impl Binder {
    /// A pull subscription to the consumer described by `info`.
    async fn pull(&self, info: consumer::Info) -> Result<pull::Stream, Error> {
        let config = pull::Config::try_from_consumer_config(info.config.clone()).map_err(|e| {
            Error::Invalid {
                message: format!("consumer `{}` is not a pull consumer: {e}", self.name),
            }
        })?;
        let o = &self.inner.options;
        Consumer::new(config, info, self.inner.js.clone())
            .stream()
            .max_messages_per_batch(o.batch)
            .expires(o.pull_expiry)
            .heartbeat(o.heartbeat)
            .messages()
            .await
            .map_err(|source| Error::Bind {
                consumer: self.name.to_string(),
                source,
            })
    }

    async fn rebind(&mut self) -> Result<pull::Stream, Error> {
        let info = self.inner.consumer_info(self.kind, &self.name).await?;
        self.ack_wait = info.config.ack_wait;
        // What the old pull request held is gone with it; and a stream
        // created again numbers its messages from 1.
        *self.late.lock().unwrap_or_else(PoisonError::into_inner) = LateAcks::default();
        self.pull(info).await
    }

    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        loop {
            if self.ended {
                return None;
            }
            let messages = match &mut self.messages {
                Some(m) => m,
                None => match self.rebind().await.map_err(TransportError::from) {
                    Ok(m) => {
                        tracing::info!(consumer = %self.name, "consumer bound again");
                        self.pause = MIN_PAUSE;
                        self.messages.insert(m)
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(consumer = %self.name, error = %e, retry_in = ?self.pause, "cannot bind the consumer yet");
                        tokio::time::sleep(self.pause).await;
                        self.pause = (self.pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                    // Deleted, refused, or unusable: say so once, then end.
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                },
            };
            let next = tokio::select! {
                biased;
                m = messages.next() => m,
                v = self.refused.refused(Op::Publish, &self.next_subject) => {
                    self.ended = true;
                    return Some(Err(Error::Forbidden {
                        operation: format!("pull from consumer `{}`", self.name),
                        violation: v,
                    }
                    .into()));
                }
            };
            match next {
                Some(Ok(m)) => {
                    if let Some(d) = self.delivery(m).await {
                        return Some(Ok(d));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(consumer = %self.name, error = %e, "pull subscription failed; binding again");
                    self.messages = None;
                }
                None => {
                    tracing::warn!(consumer = %self.name, "pull subscription ended; binding again");
                    self.messages = None;
                }
            }
        }
    }

    async fn delivery(&self, m: jetstream::Message) -> Option<Delivery> {
        // The delivery count and stream sequence are in the reply subject;
        // attempt 1 if they cannot be read.
        let (attempt, seq) = m
            .info()
            .map(|i| {
                (
                    u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX),
                    Some(i.stream_sequence),
                )
            })
            .unwrap_or((1, None));
        let m = m.message;
        let Some(reply) = m.reply.clone() else {
            tracing::error!(consumer = %self.name, subject = %m.subject, "a delivery without a reply subject cannot be acknowledged; skipped");
            return None;
        };
        let acker = NatsAcker {
            client: self.inner.client.clone(),
            reply,
            confirm: self.inner.options.confirm_acks,
            timeout: self.inner.options.request_timeout,
            ack_wait: self.ack_wait,
            touched: Mutex::new(Instant::now()),
            seq,
            late: Arc::clone(&self.late),
        };
        let acked_late = seq.is_some_and(|seq| {
            self.late
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .seqs
                .contains(&seq)
        });
        if acked_late {
            tracing::debug!(consumer = %self.name, subject = %m.subject, "a redelivery of a message acknowledged late: acknowledged again, not handed out");
            if let Err(e) = acker.send("ack", AckKind::Ack, false).await {
                tracing::debug!(consumer = %self.name, error = %e, "acknowledging the redelivery again failed");
            }
            return None;
        }
        match Subject::parse(m.subject.as_str()) {
            Ok(subject) => Some(Delivery::new(
                subject,
                m.payload,
                attempt,
                &self.codec,
                Box::new(acker),
            )),
            Err(e) => {
                // The streams capture only the org's subjects, whose tokens
                // parse; a subject longer than we accept is the one way here.
                tracing::error!(consumer = %self.name, subject = %m.subject, error = %e, "a stored message whose subject is not valid here is terminated");
                let _ = acker.term().await;
                None
            }
        }
    }
}

/// Settles one delivery by publishing to its reply subject
/// (`$JS.ACK.<stream>.<consumer>.…`).
///
/// Fire-and-forget by default, as the runtime's claims make a lost ack
/// harmless (the message comes again and is acknowledged without running);
/// with confirmed acks, `ack` and `term` wait for the server's answer.
///
/// A *late* `ack` or `term` — three quarters of the ack wait or more since
/// the delivery or its last progress — is confirmed either way: the server
/// may already have queued the message for redelivery, and it handles acks
/// and pull requests on separate queues, so the binder's next pull could
/// otherwise overtake the ack and get the message again. Waiting for the
/// confirmation settles it first; a redelivery the server had already put
/// into the binder's waiting pull request is recognised by its stream
/// sequence and acknowledged again instead of handed out.
#[derive(Debug)]
struct NatsAcker {
    client: async_nats::Client,
    reply: async_nats::Subject,
    confirm: bool,
    timeout: Duration,
    ack_wait: Duration,
    /// The delivery, or its last progress report. A std Mutex: held only to
    /// read or write an `Instant`.
    touched: Mutex<Instant>,
    /// The message's stream sequence, if known.
    seq: Option<u64>,
    /// Where a late ack records it (the binder's [`LateAcks`]).
    late: Arc<Mutex<LateAcks>>,
}

impl NatsAcker {
    fn late(&self) -> bool {
        let touched = *self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        touched.elapsed() >= self.ack_wait.mul_f64(0.75)
    }

    /// After a late ack or term: its redelivery, if the server had queued
    /// one, is passed over by the binder.
    fn note_late(&self, late: bool) {
        if let (true, Some(seq)) = (late, self.seq) {
            self.late
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(seq);
        }
    }

    async fn send(&self, what: &'static str, kind: AckKind, confirm: bool) -> Result<(), Error> {
        let body: Bytes = kind.into();
        let sent = if confirm {
            let request = async_nats::Request::new()
                .payload(body)
                .timeout(Some(self.timeout));
            self.client
                .send_request(self.reply.clone(), request)
                .await
                .map(|_| ())
                .map_err(async_nats::Error::from)
        } else {
            self.client
                .publish(self.reply.clone(), body)
                .await
                .map_err(async_nats::Error::from)
        };
        sent.map_err(|source| Error::Ack { what, source })
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        let late = self.late();
        self.send("ack", AckKind::Ack, self.confirm || late).await?;
        self.note_late(late);
        Ok(())
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        Ok(self.send("nak", AckKind::Nak(delay), false).await?)
    }
    async fn term(&self) -> Result<(), TransportError> {
        let late = self.late();
        self.send("term", AckKind::Term, self.confirm || late)
            .await?;
        self.note_late(late);
        Ok(())
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.send("progress", AckKind::Progress, false).await?;
        *self.touched.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }
}
