//! A bound durable consumer: the delivery stream that survives server
//! restarts, and the acker of each delivery.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentorg_core::codec::Codec;
use agentorg_core::subject::Subject;
use agentorg_core::transport::{Acker, Delivery, DeliveryStream, TransportError};
use agentorg_core::Name;
use async_nats::jetstream::consumer::{pull, FromConsumer as _};
use async_nats::jetstream::{consumer, AckKind};
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
/// It owns one [`Pull`] at a time (pull requests of `batch` messages with
/// idle heartbeats, and the inbox they are answered on), and asks again on
/// a new inbox after a reconnection. When that pull fails or ends
/// — no word for two heartbeats (a server restart the reconnection did not
/// cover), a failed or refused request, a deleted consumer — the binder
/// drops it and binds again (consumer info, then a new pull), pausing
/// 100 ms doubling to 5 s after a failed bind or request until the server
/// answers a pull again, until it succeeds or the consumer is gone (`NotFound`, after
/// which the stream ends), the user may not read it or pull from it
/// (`Forbidden`, likewise) or its limits refuse the requests (`Invalid`).
/// The caller never re-subscribes.
struct Binder {
    inner: Arc<Inner>,
    name: Name,
    kind: StreamKind,
    codec: Codec,
    pull: Option<Pull>,
    /// A pull request's body: the batch, its expiry and idle heartbeat.
    request: Bytes,
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
    /// Inboxes of requests written off or given up, read until the given
    /// time (see [`Pull`]).
    draining: Vec<(async_nats::Subscriber, Instant)>,
}

/// A pull subscription to one durable consumer: the inbox the server
/// answers pull requests on, and how many messages the requests sent on it
/// may still bring.
///
/// Run here rather than by async-nats's `messages()` stream. That stream
/// learns that a request went out from another task, and a request answered
/// before that news arrived leaves it counting messages that will never
/// come: it then stops asking, and the consumer stalls until the heartbeat
/// check (2 × the heartbeat, 10 s by default). Seen under steady load with
/// batches of 1 and, more rarely, 2. Here one task sends the requests and
/// reads the answers: a request's batch is counted owed when it is sent, and
/// each message takes one off; a `408` (a request expired) or a `409` that
/// says how many it left undelivered takes that many; a `409` that ends
/// every request of the inbox (a leadership change, a server shutting down)
/// clears the count.
///
/// When what the server still holds cannot be known — after a reconnection,
/// or when a request is overdue without its `408` — the pull moves to a new
/// inbox with nothing owed and asks again at once. The old inbox is still
/// read by the binder (its messages handed out, its statuses ignored) until
/// its last request has surely expired, and so is the inbox of a pull the
/// binder gives up (a refused or failed request, missed heartbeats): a late
/// answer is neither lost nor counted against the new requests. A request
/// the server drops without a word still leaves its count owed until the
/// heartbeat check (2 × the heartbeat).
struct Pull {
    subscriber: async_nats::Subscriber,
    inbox: async_nats::Subject,
    /// Messages the requests sent may still deliver.
    owed: usize,
    /// When the server last said anything on this pull (a message, an idle
    /// heartbeat, a status), or the last request went out.
    heard: Instant,
    /// When the last request went out.
    asked: Instant,
    /// The client's (re)connections, to start a new inbox after one.
    connects: tokio::sync::watch::Receiver<u64>,
}

/// The next message of an inbox left behind (statuses skipped). An inbox is
/// dropped once it has nothing buffered and its time is past, or it ended.
fn poll_draining(
    draining: &mut Vec<(async_nats::Subscriber, Instant)>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<async_nats::Message> {
    use std::task::Poll;
    let now = Instant::now();
    let mut i = 0;
    while i < draining.len() {
        match draining[i].0.poll_next_unpin(cx) {
            Poll::Ready(Some(m)) if m.status.is_none() => return Poll::Ready(m),
            // A status: nothing is counted there any more; look again.
            Poll::Ready(Some(_)) => {}
            Poll::Pending if draining[i].1 > now => i += 1,
            Poll::Ready(None) | Poll::Pending => {
                draining.swap_remove(i);
            }
        }
    }
    Poll::Pending
}

/// What the server said on a pull's inbox.
enum Said {
    /// A message of the stream.
    Message(async_nats::Message),
    /// An idle heartbeat: a request waits, with nothing to deliver.
    Heartbeat,
    /// A request ended with this many of its messages undelivered.
    Ended(usize),
    /// Every request of the inbox ended.
    Cleared,
    /// A request was refused for now (too many requests wait on the
    /// consumer): it never counted; ask again after a pause.
    Busy,
    /// The consumer is gone: bind again (which says so).
    Gone,
    /// Requests of this size can never succeed (the consumer's
    /// `MaxRequest…` limits).
    Refused(String),
    /// Anything else (a consumer being stopped, an unknown status): bind
    /// again, after a pause.
    Other(String),
}

impl Said {
    /// What `m` says, for requests of `batch` messages.
    fn of(m: async_nats::Message, batch: usize) -> Self {
        use async_nats::StatusCode;
        let status = match m.status {
            None => return Self::Message(m),
            Some(s) if s == StatusCode::OK => return Self::Message(m),
            Some(s) => s,
        };
        let description = m.description.clone().unwrap_or_default();
        let left = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Pending-Messages"))
            .and_then(|v| v.as_str().parse().ok());
        if status == StatusCode::IDLE_HEARTBEAT {
            return Self::Heartbeat;
        }
        if status == StatusCode::TIMEOUT {
            return Self::Ended(left.unwrap_or(batch));
        }
        if status != StatusCode::REQUEST_TERMINATED {
            return Self::Other(format!("status {status}: {description}"));
        }
        match description.as_str() {
            "Consumer Deleted" => Self::Gone,
            // Sent once per inbox, for all its requests (with the count of
            // one of them, if any).
            "Leadership Change" | "Server Shutdown" => Self::Cleared,
            d if d.starts_with("Exceeded MaxRequest") => Self::Refused(description),
            d if d.starts_with("Exceeded MaxWaiting") => Self::Busy,
            _ => match left {
                Some(left) => Self::Ended(left),
                None => Self::Other(format!("status {status}: {description}")),
            },
        }
    }
}

/// The stream sequences of the last [`LateAcks::CAPACITY`] deliveries
/// acknowledged (or terminated) late. A late ack is confirmed, but the
/// server may have queued the message again before it arrived, into the
/// pull request already waiting (with batches of 2 or more a binder asks
/// for the next messages before it hands the last one out); such a
/// redelivery is acknowledged again and not handed out.
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
    let o = &inner.options;
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let request = serde_json::json!({
        "batch": o.batch,
        "expires": nanos(o.pull_expiry),
        "idle_heartbeat": nanos(o.heartbeat),
    })
    .to_string()
    .into();
    let mut binder = Binder {
        refused: inner.violations.watch(),
        inner,
        name,
        kind,
        codec,
        pull: None,
        request,
        pause: MIN_PAUSE,
        ended: false,
        next_subject,
        ack_wait: info.config.ack_wait,
        late: Arc::default(),
        draining: Vec::new(),
    };
    binder.pull = Some(binder.pull(info).await?);
    Ok(Box::pin(futures::stream::unfold(
        binder,
        |mut b| async move {
            let item = b.next().await?;
            Some((item, b))
        },
    )))
}

impl Binder {
    /// A pull on the consumer described by `info`: its inbox subscribed
    /// (the first request goes out with the first `next`).
    async fn pull(&self, info: consumer::Info) -> Result<Pull, Error> {
        pull::Config::try_from_consumer_config(info.config).map_err(|e| Error::Invalid {
            message: format!("consumer `{}` is not a pull consumer: {e}", self.name),
        })?;
        self.pull_on_new_inbox().await
    }

    /// A failed subscription or pull request of this binder.
    fn bind_error(&self, source: impl Into<async_nats::Error>) -> Error {
        Error::Bind {
            consumer: self.name.to_string(),
            source: source.into(),
        }
    }

    /// A pull on a new inbox, nothing asked yet.
    async fn pull_on_new_inbox(&self) -> Result<Pull, Error> {
        let client = &self.inner.client;
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.bind_error(e))?;
        let now = Instant::now();
        Ok(Pull {
            subscriber,
            inbox,
            owed: 0,
            heard: now,
            asked: now,
            connects: self.inner.connects.subscribe(),
        })
    }

    /// Moves `pull` to a new inbox with nothing owed, reading the old one
    /// until its last request has surely expired.
    async fn renew(&mut self, pull: &mut Pull, why: &str) -> Result<(), Error> {
        let fresh = self.pull_on_new_inbox().await?;
        tracing::debug!(consumer = %self.name, reason = why, "asking again on a new inbox");
        let old = std::mem::replace(&mut pull.subscriber, fresh.subscriber);
        self.leave(old, pull.asked);
        pull.inbox = fresh.inbox;
        pull.owed = 0;
        pull.heard = Instant::now();
        Ok(())
    }

    /// Reads `inbox`, whose last request went out at `asked`, until that
    /// request has surely expired (and a heartbeat more from now).
    fn leave(&mut self, inbox: async_nats::Subscriber, asked: Instant) {
        let o = &self.inner.options;
        let until = (asked + o.pull_expiry + o.heartbeat).max(Instant::now() + o.heartbeat);
        self.draining.push((inbox, until));
    }

    async fn rebind(&mut self) -> Result<Pull, Error> {
        let info = self.inner.consumer_info(self.kind, &self.name).await?;
        self.ack_wait = info.config.ack_wait;
        // A stream created again numbers its messages from 1. (A
        // redelivery a request left behind still brings is then handed out;
        // the runtime's claims acknowledge it without running.)
        self.forget_late_acks();
        self.pull(info).await
    }

    /// Sends a pull request when half a batch or less is owed (so one is
    /// waiting on the server while a message is handled).
    async fn ask(&self, pull: &mut Pull) -> Result<(), Error> {
        let batch = self.inner.options.batch;
        if pull.owed > batch / 2 {
            return Ok(());
        }
        self.inner
            .client
            .publish_with_reply(
                self.next_subject.clone(),
                pull.inbox.clone(),
                self.request.clone(),
            )
            .await
            .map_err(|e| self.bind_error(e))?;
        let now = Instant::now();
        // The heartbeat clock runs from the last request too: a request
        // sent after a long pause in reading is not already overdue.
        pull.heard = now;
        pull.owed += batch;
        pull.asked = now;
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        let o = &self.inner.options;
        let (heartbeat, expiry, batch) = (o.heartbeat, o.pull_expiry, o.batch);
        loop {
            if self.ended {
                return None;
            }
            let mut pull = match self.pull.take() {
                Some(p) => p,
                None => match self.rebind().await.map_err(TransportError::from) {
                    Ok(p) => {
                        tracing::info!(consumer = %self.name, "consumer bound again");
                        p
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(consumer = %self.name, error = %e, retry_in = ?self.pause, "cannot bind the consumer yet");
                        self.back_off().await;
                        continue;
                    }
                    // Deleted, refused, or unusable: say so once, then end.
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                },
            };
            if let Err(e) = self.ask(&mut pull).await {
                tracing::warn!(consumer = %self.name, error = %e, "pull request failed; binding again");
                self.leave(pull.subscriber, pull.asked);
                self.back_off().await;
                continue;
            }
            // No word for two heartbeats: the server lost the requests (a
            // restart) or the connection is gone. A request that outlived
            // its expiry without the server saying so is asked again.
            let silent = pull.heard + heartbeat * 2;
            let overdue = pull.asked + expiry + heartbeat;
            let said = tokio::select! {
                biased;
                // What an inbox left behind holds came first: hand it out
                // before the new requests' answers.
                m = std::future::poll_fn(|cx| poll_draining(&mut self.draining, cx)) => {
                    // An answer to a request written off: not counted.
                    self.pull = Some(pull);
                    if let Some(d) = self.delivery(m).await {
                        return Some(Ok(d));
                    }
                    continue;
                }
                m = pull.subscriber.next() => m.map(|m| Said::of(m, batch)),
                v = self.refused.refused(Op::Publish, &self.next_subject) => {
                    self.ended = true;
                    return Some(Err(Error::Forbidden {
                        operation: format!("pull from consumer `{}`", self.name),
                        violation: v,
                    }
                    .into()));
                }
                Ok(()) = pull.connects.changed() => {
                    // The server may have lost the requests (a restart); a
                    // restarted one may also have created the stream again,
                    // numbering from 1: forget the sequences acked late.
                    self.forget_late_acks();
                    self.renew_or_rebind(pull, "reconnected").await;
                    continue;
                }
                () = tokio::time::sleep_until(overdue) => {
                    self.renew_or_rebind(pull, "a request overdue without its 408").await;
                    continue;
                }
                () = tokio::time::sleep_until(silent) => {
                    tracing::warn!(consumer = %self.name, "missed the pull's idle heartbeats; binding again");
                    self.leave(pull.subscriber, pull.asked);
                    continue;
                }
            };
            pull.heard = Instant::now();
            match said {
                Some(Said::Message(m)) => {
                    self.pause = MIN_PAUSE;
                    pull.owed = pull.owed.saturating_sub(1);
                    self.pull = Some(pull);
                    if let Some(d) = self.delivery(m).await {
                        return Some(Ok(d));
                    }
                }
                Some(Said::Heartbeat) => {
                    self.pause = MIN_PAUSE;
                    self.pull = Some(pull);
                }
                Some(Said::Ended(left)) => {
                    pull.owed = pull.owed.saturating_sub(left);
                    self.pull = Some(pull);
                }
                Some(Said::Cleared) => {
                    pull.owed = 0;
                    self.pull = Some(pull);
                }
                Some(Said::Busy) => {
                    tracing::debug!(consumer = %self.name, retry_in = ?self.pause, "too many pull requests wait on the consumer; asking again later");
                    pull.owed = pull.owed.saturating_sub(batch);
                    self.pull = Some(pull);
                    self.back_off().await;
                }
                Some(Said::Gone) => {
                    // Binding again finds it gone, and ends the stream.
                    tracing::debug!(consumer = %self.name, "consumer deleted");
                }
                Some(Said::Refused(why)) => {
                    self.ended = true;
                    return Some(Err(Error::Invalid {
                        message: format!(
                            "pulling from consumer `{}`: {why} (the binder asks for {batch} \
                             messages, expiring in {expiry:?}: lower NatsTransportBuilder::with_batch \
                             or with_pull_expiry, or raise the consumer's max_batch or max_expires)",
                            self.name
                        ),
                    }
                    .into()));
                }
                Some(Said::Other(what)) => {
                    tracing::warn!(consumer = %self.name, said = %what, retry_in = ?self.pause, "pull refused for now; binding again");
                    self.leave(pull.subscriber, pull.asked);
                    self.back_off().await;
                }
                None => {
                    tracing::warn!(consumer = %self.name, "pull subscription ended; binding again");
                }
            }
        }
    }

    /// [`renew`](Self::renew)s `pull` and keeps it, or leaves it to be
    /// bound again if no new inbox can be subscribed now.
    async fn renew_or_rebind(&mut self, mut pull: Pull, why: &str) {
        match self.renew(&mut pull, why).await {
            Ok(()) => self.pull = Some(pull),
            Err(e) => {
                tracing::warn!(consumer = %self.name, error = %e, "cannot subscribe a new inbox; binding again");
                self.leave(pull.subscriber, pull.asked);
            }
        }
    }

    /// Forgets the sequences acknowledged late (a stream created again
    /// numbers its messages from 1).
    fn forget_late_acks(&self) {
        *self.late.lock().unwrap_or_else(PoisonError::into_inner) = LateAcks::default();
    }

    /// Pauses before binding again, 100 ms doubling to 5 s (back to 100 ms
    /// once the server answers a pull).
    async fn back_off(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }

    /// The delivery of stream message `m`, or `None` if it is not handed
    /// out (a redelivery of a message acknowledged late, an invalid
    /// subject, no reply subject).
    async fn delivery(&self, m: async_nats::Message) -> Option<Delivery> {
        // The kernel's publishes carry the envelope's id as `Nats-Msg-Id`.
        tracing::trace!(
            target: agentorg_core::runtime::STEPS,
            step = "pulled",
            msg_id = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str()),
            consumer = %self.name,
            subject = %m.subject,
        );
        let Some(reply) = m.reply.clone() else {
            tracing::error!(consumer = %self.name, subject = %m.subject, "a delivery without a reply subject cannot be acknowledged; skipped");
            return None;
        };
        // The delivery count and stream sequence are in the reply subject;
        // attempt 1 if they cannot be read.
        let (attempt, seq) = ack_info(&reply)
            .map(|(delivered, seq)| {
                (
                    u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
                    Some(seq),
                )
            })
            .unwrap_or((1, None));
        let acker = NatsAcker {
            inner: Arc::clone(&self.inner),
            reply,
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

/// The delivery count and stream sequence of a JetStream delivery, from its
/// reply subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.…`
/// (7 tokens after the prefix), or with the domain and account hash first
/// (9 or more; ADR-15). `None` for another prefix, another number of
/// tokens, or either of the two numbers not one; the other tokens are not
/// read (async-nats refuses a subject whose consumer sequence, timestamp or
/// pending count is not a number: the server does not send one).
///
/// async-nats parses the same subject in `jetstream::Message::info`, which
/// needs a `jetstream::Context` cloned into each message; this reads the two
/// numbers the binder uses without one.
fn ack_info(reply: &str) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens: [&str; 9] = [""; 9];
    let mut n = 0;
    for t in rest.split('.') {
        if n < tokens.len() {
            tokens[n] = t;
        }
        n += 1;
    }
    let at = match n {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    Some((tokens[at].parse().ok()?, tokens[at + 1].parse().ok()?))
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
struct NatsAcker {
    /// The transport's connection and options (shared, not a client
    /// cloned per delivery).
    inner: Arc<Inner>,
    reply: async_nats::Subject,
    ack_wait: Duration,
    /// The delivery, or its last progress report. A std Mutex: held only to
    /// read or write an `Instant`.
    touched: Mutex<Instant>,
    /// The message's stream sequence, if known.
    seq: Option<u64>,
    /// Where a late ack records it (the binder's [`LateAcks`]).
    late: Arc<Mutex<LateAcks>>,
}

impl std::fmt::Debug for NatsAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAcker")
            .field("reply", &self.reply)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
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
                .timeout(Some(self.inner.options.request_timeout));
            self.inner
                .client
                .send_request(self.reply.clone(), request)
                .await
                .map(|_| ())
                .map_err(async_nats::Error::from)
        } else {
            self.inner
                .client
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
        let confirm = self.inner.options.confirm_acks;
        self.send("ack", AckKind::Ack, confirm || late).await?;
        self.note_late(late);
        Ok(())
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        Ok(self.send("nak", AckKind::Nak(delay), false).await?)
    }
    async fn term(&self) -> Result<(), TransportError> {
        let late = self.late();
        let confirm = self.inner.options.confirm_acks;
        self.send("term", AckKind::Term, confirm || late).await?;
        self.note_late(late);
        Ok(())
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.send("progress", AckKind::Progress, false).await?;
        *self.touched.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ack_info;

    #[test]
    fn ack_info_reads_both_reply_formats() {
        let ts = "1700000000000000000";
        // The original form: stream, consumer, delivered, stream seq, …
        assert_eq!(
            ack_info(&format!("$JS.ACK.events.durable.3.100.7.{ts}.42")),
            Some((3, 100))
        );
        // ADR-15's: domain (`_` for none) and account hash first, and
        // perhaps a token after.
        assert_eq!(
            ack_info(&format!("$JS.ACK._.szMpdrwD.events.c1.1.2.1.{ts}.1")),
            Some((1, 2))
        );
        assert_eq!(
            ack_info(&format!("$JS.ACK.hub.szMpdrwD.events.c1.2.50.9.{ts}.0.tok")),
            Some((2, 50))
        );
    }

    #[test]
    fn ack_info_refuses_what_is_not_an_ack_subject() {
        for reply in [
            "_INBOX.abc",
            "$JS.ACK.events.durable.3",
            "$JS.ACK.events.durable.x.100.7.1.42",
            "$JS.ACK.events.durable.3.-1.7.1.42",
            "$JS.ACK.a.b.c.d.e.f.g.h",
        ] {
            assert_eq!(ack_info(reply), None, "{reply}");
        }
    }

    #[test]
    fn ack_info_reads_only_the_two_numbers_it_needs() {
        // The consumer sequence, timestamp and pending count are not read.
        assert_eq!(ack_info("$JS.ACK.a.b.3.100.x.y.z"), Some((3, 100)));
    }
}
