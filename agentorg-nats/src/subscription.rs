//! Ephemeral subscriptions: core NATS, at-most-once, with a bounded buffer
//! whose overflow is reported as `Lagged`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use agentorg_core::subject::{Subject, SubjectPattern};
use agentorg_core::transport::{Message, Subscription, TransportError};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::transport::Inner;
use crate::violations::Op;

/// Subscribes to `pattern`.
///
/// A forwarding task (owned by the returned stream: it ends when the stream
/// is dropped, which unsubscribes) reads the async-nats subscription as fast
/// as it can into a bounded buffer; a message that does not fit is counted
/// and reported to the subscriber as `Lagged` before its next message, as the
/// memory transport does. If the server refuses the subscription (permission
/// violation), the stream yields `Forbidden` once and ends.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    pattern: &SubjectPattern,
) -> Result<Subscription, Error> {
    let mut refused = inner.violations.watch();
    let mut sub = inner
        .client
        .subscribe(pattern.as_str().to_owned())
        .await
        .map_err(|source| Error::Subscribe {
            pattern: pattern.to_string(),
            source,
        })?;
    // One round trip, so that the server has the subscription when this
    // returns (a publish from another connection right after is seen).
    inner
        .client
        .flush()
        .await
        .map_err(|source| Error::Flush { source })?;
    let (tx, rx) = mpsc::channel(inner.options.subscriber_buffer);
    let missed = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&missed);
    let text = pattern.to_string();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => break,
                v = refused.refused(Op::Subscribe, &text) => {
                    let e = TransportError::from(Error::Forbidden {
                        operation: format!("subscribe to {text}"),
                        violation: v,
                    });
                    let _ = tx.send(Err(e)).await;
                    break;
                }
                m = sub.next() => {
                    let Some(m) = m else { break };
                    let subject = match Subject::parse(m.subject.as_str()) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(subject = %m.subject, error = %e, "skipping a message on a subject not valid here");
                            continue;
                        }
                    };
                    let reply = m.reply.as_ref().and_then(|r| Subject::parse(r.as_str()).ok());
                    match tx.try_send(Ok(Message::new(subject, m.payload, reply))) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
        }
    });
    Ok(Box::pin(Receiver { rx, missed }))
}

struct Receiver {
    rx: mpsc::Receiver<Result<Message, TransportError>>,
    missed: Arc<AtomicU64>,
}

impl Stream for Receiver {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let missed = self.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Poll::Ready(Some(Err(TransportError::Lagged { missed })));
        }
        self.rx.poll_recv(cx)
    }
}
