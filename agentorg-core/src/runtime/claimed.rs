//! A claimed delivery, as the kernel hands it to a pattern's handler: run
//! the application's code while the lease is kept, then commit the outcome
//! with the completion record, retry, or dead-letter.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::claim::{Claim, Note};
use super::context::Context;
use super::dead_letter::DeadLetter;
use super::error::{describe, panic_message, AgentError, Fault};
use super::host::HostedRole;
use super::kernel::{Effects, Kernel};
use super::retry::{backoff, optimistic};
use super::seam::{Handler, Reason, Settle};
use crate::envelope::{Envelope, MessageId, TraceContext};
use crate::name::Name;
use crate::store::{Precondition, StoreError, Version};
use crate::transport::Delivery;

/// A delivery the kernel has claimed for this process, handed to the
/// handler it was routed to (see [`Handler::handle`]).
///
/// The claim is settled exactly once: by a commit of the outcome with the
/// completion record ([`commit`](Self::commit) and its loops), a retry
/// ([`retry_or_dead_letter`](Self::retry_or_dead_letter),
/// [`rerun`](Self::rerun)) or a dead letter ([`dead_letter`](Self::dead_letter)).
pub struct Claimed<'a> {
    pub(crate) host: &'a HostedRole,
    pub(crate) delivery: &'a Delivery,
    /// The delivery's own envelope (shared with the handler's `Context`).
    pub(crate) envelope: &'a Arc<Envelope>,
    pub(crate) claim: Claim,
    pub(crate) prepared: Option<Note>,
    pub(crate) trace: TraceContext,
    pub(crate) handler: &'a dyn Handler,
}

impl std::fmt::Debug for Claimed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("role", &self.host.role)
            .field("message", &self.envelope.id)
            .field("attempt", &self.claim.attempt)
            .finish_non_exhaustive()
    }
}

/// What one try of [`Claimed::commit`] came to.
#[derive(Debug)]
#[non_exhaustive]
pub enum Committed {
    /// Committed; the messages are published (or left to the outbox sweep).
    Yes,
    /// A record the outcome depends on moved: read again and recompute.
    Again,
    /// Not ours to commit any more (the claim is gone), or stale (the
    /// handler's own writes conflicted and it must run again): settle so.
    Settled(Settle),
    /// The store refused the outcome for good (a record outside its
    /// limits), or one of its messages cannot be encoded (over the codec's
    /// size limit).
    Refused(StoreError),
}

impl Claimed<'_> {
    /// The kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.host.kernel
    }

    /// The hosted role.
    pub fn host(&self) -> &HostedRole {
        self.host
    }

    /// The role.
    pub fn role(&self) -> &Name {
        &self.host.role
    }

    /// The delivered envelope.
    pub fn envelope(&self) -> &Envelope {
        self.envelope
    }

    /// The subject it was delivered on.
    pub fn subject(&self) -> &crate::subject::Subject {
        self.delivery.subject()
    }

    /// This attempt's number, from the claim (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.claim.attempt
    }

    /// What the handler's [`prepare`](Handler::prepare) noted, if it is a
    /// `T`, with the versions its writes got when committed with the claim
    /// (in order).
    pub fn prepared<T: 'static>(&self) -> Option<(&T, &[Option<Version>])> {
        let p = self.prepared.as_ref()?;
        Some((p.note.downcast_ref::<T>()?, &p.versions))
    }

    /// The trace context of this delivery's span.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// The context for the application's code, about work item `task`.
    pub fn context(&self, task: Option<MessageId>) -> Context {
        // The delivery's envelope is shared with the context, not copied.
        Context::new(
            self.host,
            Arc::clone(self.envelope),
            task,
            self.claim.attempt,
            self.trace,
        )
    }

    /// Runs the application's code while keeping the lease (in the store and
    /// with the transport), within the role's handler timeout; a panic or a
    /// timeout becomes a transient error. When the lease is lost (another
    /// attempt owns the message now) the code is cancelled — dropped, with
    /// whatever it awaits, a model call say — and the result is a transient
    /// error that settles without spending an attempt.
    pub async fn run<T, F>(&self, fut: F) -> Result<T, AgentError>
    where
        F: std::future::Future<Output = Result<T, AgentError>> + Send,
    {
        let limit = self.host.options.handler_timeout;
        let fut = async {
            match limit {
                Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                    Err(AgentError::transient(format!(
                        "handler timed out after {t:?}"
                    )))
                }),
                None => fut.await,
            }
        };
        let fut = AssertUnwindSafe(fut).catch_unwind();
        tokio::pin!(fut);
        let keeper = self.host.keep_lease(self.delivery, &self.claim);
        tokio::pin!(keeper);
        let outcome = tokio::select! {
            biased;
            r = &mut fut => r,
            () = &mut keeper => {
                return Err(AgentError::transient(
                    "the lease was lost: another attempt owns the message; this one was cancelled",
                ));
            }
        };
        match outcome {
            Ok(r) => r,
            Err(panic) => Err(AgentError::transient(format!(
                "handler panicked: {}",
                panic_message(&*panic)
            ))),
        }
    }

    /// Tries once to commit `effects` with the completion record.
    pub async fn commit(&self, effects: Effects) -> Result<Committed, Fault> {
        self.commit_versioned(effects).await.map(|(c, _)| c)
    }

    /// [`commit`](Self::commit), with the versions the writes of `effects`
    /// got when committed (in order; empty unless [`Committed::Yes`]).
    pub async fn commit_versioned(
        &self,
        effects: Effects,
    ) -> Result<(Committed, Vec<Option<Version>>), Fault> {
        let kernel = self.kernel();
        let contended = effects.contended;
        let own = effects.writes.len();
        let done = self.host.done_write(&self.claim)?;
        // A message that cannot be encoded (too big, say) is refused like a
        // document the store cannot hold.
        let (writes, entries) = match kernel.outbox_writes(effects, vec![done]) {
            Ok(built) => built,
            Err(e @ StoreError::InvalidInput { .. }) => {
                return Ok((Committed::Refused(e), Vec::new()))
            }
            Err(e) => return Err(e.into()),
        };
        let armed = kernel.timers.arms_any(&writes);
        match kernel.commit_writes(writes).await {
            Ok(versions) => {
                kernel.after_commit(entries, armed).await;
                let versions = versions.into_iter().skip(1).take(own).collect();
                Ok((Committed::Yes, versions))
            }
            Err(e) if e.is_precondition_failure() => {
                Ok((self.after_conflict(contended).await?, Vec::new()))
            }
            Err(e @ StoreError::InvalidInput { .. }) => Ok((Committed::Refused(e), Vec::new())),
            Err(e) => Err(e.into()),
        }
    }

    /// After a commit conflict: if the claim is gone, another attempt owns
    /// the message; if the handler's own writes may be what conflicted, its
    /// outcome is stale and it runs again; else the runtime's records moved
    /// and the commit is recomputed.
    async fn after_conflict(&self, contended: bool) -> Result<Committed, Fault> {
        if !self.host.still_mine(&self.claim).await? {
            tracing::warn!("lost the claim before committing; another attempt owns the message");
            return Ok(Committed::Settled(Settle::Nak(
                self.kernel().config.retry_delay,
            )));
        }
        if contended {
            return self
                .rerun("a write of the handler conflicted")
                .await
                .map(Committed::Settled);
        }
        Ok(Committed::Again)
    }

    /// Commits `effects` with the completion record, trying again while
    /// runtime records conflict; an outcome the store refuses is
    /// dead-lettered (`unstorable_outcome`).
    pub async fn commit_all(&self, effects: Effects) -> Result<Settle, Fault> {
        let settled = optimistic(|| async {
            match self.commit(effects.clone()).await? {
                Committed::Yes => Ok(Some(Settle::Ack)),
                Committed::Again => Ok(None),
                Committed::Settled(d) => Ok(Some(d)),
                Committed::Refused(e) => {
                    let message = match e {
                        StoreError::InvalidInput { message, .. } => message,
                        other => other.to_string(),
                    };
                    let reason = Reason::new(
                        "unstorable_outcome",
                        format!("the outcome cannot be stored: {message}"),
                    );
                    self.dead_letter(reason, None).await.map(Some)
                }
            }
        })
        .await?;
        match settled {
            Some(d) => Ok(d),
            None => self.rerun("the commit kept conflicting").await,
        }
    }

    /// Commits the completion record alone: processed, nothing else changes.
    pub async fn done(&self) -> Result<Settle, Fault> {
        self.commit_all(Effects::new()).await
    }

    /// Ends a call of the application's code that returns no value: commits
    /// what it staged in `cx` on success, retries a transient failure, and
    /// dead-letters a permanent one (`rejected`).
    pub async fn settle_call(
        &self,
        cx: &Context,
        r: Result<(), AgentError>,
    ) -> Result<Settle, Fault> {
        let (effects, _) = cx.take_effects();
        match r {
            Ok(()) => self.commit_all(effects).await,
            Err(e) if e.is_retryable() => self.retry_or_dead_letter(e, None).await,
            Err(e) => {
                self.count_failure();
                self.dead_letter(Reason::new("rejected", describe(&e)), None)
                    .await
            }
        }
    }

    /// A transient failure of the application's code: retry with backoff,
    /// or dead-letter (about `item`) when this was the last attempt.
    pub async fn retry_or_dead_letter(
        &self,
        err: AgentError,
        item: Option<&MessageId>,
    ) -> Result<Settle, Fault> {
        if self.claim.is_lost() {
            // Not this attempt's to settle: the owner decides.
            tracing::info!(error = %err, "lost the claim; leaving the message to its owner");
            return Ok(Settle::Nak(self.kernel().config.retry_delay));
        }
        self.count_failure();
        let config = &self.kernel().config;
        if self.claim.attempt >= config.max_attempts {
            tracing::warn!(attempt = self.claim.attempt, error = %err, "transient failure on the last attempt: dead-lettering");
            let reason = Reason::new("attempts_exhausted", describe(&err));
            return self.dead_letter(reason, item).await;
        }
        let delay = backoff(config, self.claim.attempt);
        tracing::info!(attempt = self.claim.attempt, error = %err, retry_in = ?delay, "transient failure; retrying");
        self.host
            .release(&self.claim, &describe(&err), true)
            .await?;
        Ok(Settle::Nak(delay))
    }

    /// The outcome went stale (what it was computed from changed, or the
    /// commit kept conflicting): runs the handler again soon, on the same
    /// attempt.
    pub async fn rerun(&self, why: &str) -> Result<Settle, Fault> {
        tracing::info!(reason = why, "outcome stale; running the handler again");
        self.host.release(&self.claim, why, false).await?;
        Ok(Settle::Nak(self.kernel().config.retry_delay))
    }

    /// Dead-letters the delivery for `reason`, about `item` (the handler's
    /// [`dead_lettered`](Handler::dead_lettered) says what goes along).
    pub async fn dead_letter(
        &self,
        reason: Reason,
        item: Option<&MessageId>,
    ) -> Result<Settle, Fault> {
        self.host
            .dead_letter(DeadLetter {
                delivery: self.delivery,
                envelope: Some(self.envelope),
                handler: Some(self.handler),
                claim: self.claim.key.clone(),
                claim_pre: Precondition::Version(self.claim.version()),
                reason,
                attempts: self.claim.attempt,
                item,
            })
            .await
    }

    /// Counts a failed run of the application's code in the role's health.
    pub fn count_failure(&self) {
        self.host.stats.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a work item of the role that ended (in its registry entry):
    /// completed or not, and how long the application's code ran on it.
    pub fn record_work(&self, item: &MessageId, success: bool, ran: Duration) {
        self.host
            .stats
            .record_work(item, success, ran, self.kernel().now());
    }
}
