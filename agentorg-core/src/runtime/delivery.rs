//! What happens to each delivery: decode, route, admit, claim, hand to the
//! pattern's handler, settle.
//!
//! Failures are of three kinds, each with its own way back:
//!
//! * the handler's own (an [`AgentError`](super::AgentError)): transient
//!   ones spend an attempt and are retried with backoff until the attempts
//!   run out, permanent ones end the work;
//! * the org's infrastructure ([`Fault`]): the store or transport is down, a
//!   commit kept conflicting, a record is of a newer version. The claim is
//!   released *without* spending an attempt and the delivery comes back
//!   later — an outage never dead-letters work;
//! * what can never be processed (undecodable input, a refusal, a key the
//!   store refuses): dead-lettered at once, with its reason.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::claim::Acquire;
use super::claimed::Claimed;
use super::dead_letter::DeadLetter;
use super::error::Fault;
use super::host::HostedRole;
use super::seam::{Handler, Reason, Settle};
use crate::codec::DecodeError;
use crate::envelope::{Envelope, TraceContext};
use crate::name::Name;
use crate::store::Precondition;
use crate::subject::Route;
use crate::transport::Delivery;

impl HostedRole {
    /// Handles one delivery to its end and settles it with the transport.
    pub(crate) async fn process(self: Arc<Self>, d: Delivery) {
        tracing::trace!(
            target: super::STEPS,
            step = "delivered",
            msg_id = d.message().ok().map(|m| tracing::field::display(&m.id)),
            role = %self.role,
            subject = %d.subject(),
        );
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let (span, trace) = self.span(&d);
        let disposition = async {
            match self.handle(&d, trace).await {
                Ok(x) => x,
                Err(fault) => self.recover(&d, fault).await,
            }
        }
        .instrument(span.clone())
        .await;
        let settled = match disposition {
            Settle::Ack => d.ack().await,
            Settle::Nak(delay) => d.nak(Some(delay)).await,
            Settle::Term => d.term().await,
        };
        tracing::trace!(
            target: super::STEPS,
            step = "settled",
            msg_id = d.message().ok().map(|m| tracing::field::display(&m.id)),
            role = %self.role,
            subject = %d.subject(),
            ok = settled.is_ok(),
        );
        if let Err(e) = settled {
            span.in_scope(|| tracing::warn!(error = %e, ?disposition, "settling the delivery failed; it may come again"));
        }
        if matches!(disposition, Settle::Ack | Settle::Term) {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.touch(self.kernel.now());
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A span per delivery, carrying the trace of its envelope on.
    fn span(&self, d: &Delivery) -> (tracing::Span, TraceContext) {
        let incoming = d.message().ok().and_then(Envelope::trace);
        let own = incoming.map_or_else(TraceContext::new_root, |t| t.child());
        let span = tracing::info_span!(
            "agentorg.delivery",
            org = %self.kernel.org(),
            role = %self.role,
            subject = %d.subject(),
            msg_id = tracing::field::Empty,
            kind = tracing::field::Empty,
            delivery_attempt = d.attempt(),
            trace_id = %own.trace_id_hex(),
            span_id = %own.span_id_hex(),
            parent_span_id = incoming.map(|t| t.span_id_hex()).unwrap_or_default(),
        );
        // Recorded only when the span is on (nothing is formatted otherwise).
        if !span.is_disabled() {
            match d.message() {
                Ok(env) => {
                    span.record("msg_id", tracing::field::display(&env.id));
                    span.record("kind", tracing::field::display(&env.kind));
                }
                Err(e) => {
                    span.record("msg_id", "");
                    span.record(
                        "kind",
                        tracing::field::display(format_args!("undecodable:{}", e.kind_str())),
                    );
                }
            }
        }
        (span, own)
    }

    async fn handle(&self, d: &Delivery, trace: TraceContext) -> Result<Settle, Fault> {
        let shared = match d.shared_message() {
            Ok(env) => env,
            Err(DecodeError::FutureVersion { id: Some(id), .. }) => {
                return self.future_version(d, id).await;
            }
            Err(e) => {
                let hash = crate::hex::hex(&Sha256::digest(d.raw()), 16);
                let reason = Reason::new(e.kind_str(), e.to_string());
                return self
                    .dead_letter(DeadLetter {
                        delivery: d,
                        envelope: None,
                        handler: None,
                        claim: self.claim_key(&format!("raw-{hash}"))?,
                        claim_pre: Precondition::MustNotExist,
                        reason,
                        attempts: 0,
                        item: None,
                    })
                    .await;
            }
        };
        let env: &Envelope = shared;
        let handler = match self.admission(d, env) {
            Ok(handler) => handler,
            Err((handler, reason)) => {
                tracing::warn!(code = reason.code, reason = %reason.message, "refused");
                return self.refuse_unclaimed(d, env, handler, reason).await;
            }
        };
        let (claim, prepared) = match self
            .acquire(env, d.attempt() <= 1, handler.as_ref())
            .await?
        {
            Acquire::Run(claim, prepared) => (claim, prepared),
            Acquire::Exhausted {
                version,
                attempts,
                last_error,
            } => {
                let item = handler.work_item(&self.kernel, env).await?;
                let reason = Reason::new(
                    "attempts_exhausted",
                    last_error.unwrap_or_else(|| {
                        "attempts spent (the handler never finished)".to_owned()
                    }),
                );
                return self
                    .dead_letter(DeadLetter {
                        delivery: d,
                        envelope: Some(env),
                        handler: Some(handler.as_ref()),
                        claim: self.claim_key(env.id.as_str())?,
                        claim_pre: Precondition::Version(version),
                        reason,
                        attempts,
                        item: item.as_ref(),
                    })
                    .await;
            }
            other => return Ok(other.settle(self.kernel.config.retry_delay)),
        };
        handler
            .handle(Claimed {
                host: self,
                delivery: d,
                envelope: shared,
                claim,
                prepared,
                trace,
                handler: handler.as_ref(),
            })
            .await
    }

    /// The handler of a delivery if it may be processed; else why not (and
    /// the handler it was routed to, if any).
    #[allow(clippy::type_complexity)]
    fn admission(
        &self,
        d: &Delivery,
        env: &Envelope,
    ) -> Result<Arc<dyn Handler>, (Option<Arc<dyn Handler>>, Reason)> {
        let subject = d.subject();
        let (Some(route), Some(handler)) =
            (self.kernel.subjects.route(subject), self.route(subject))
        else {
            return Err((
                None,
                Reason::new(
                    "unroutable",
                    format!("no handler of `{}` takes {subject}", self.role),
                ),
            ));
        };
        let handler = Arc::clone(handler);
        if let Some(reason) = self.kernel_refusal(&route, env, subject.as_str()) {
            return Err((Some(handler), reason));
        }
        match handler.admit(self, env, &route) {
            Ok(()) => Ok(handler),
            Err(reason) => Err((Some(handler), reason)),
        }
    }

    /// What the subject scheme forbids whatever the pattern: an envelope of
    /// another org, on another role's subject or addressed to another role,
    /// or whose `from` differs from the sender its subject names (which a
    /// broker can enforce).
    fn kernel_refusal(&self, route: &Route, env: &Envelope, subject: &str) -> Option<Reason> {
        let receiver = route.receiver();
        if receiver.is_some_and(|r| r != &self.role) {
            return Some(Reason::new(
                "wrong_recipient",
                format!("{subject} is not addressed to `{}`", self.role),
            ));
        }
        if let Some(from) = route.sender() {
            if &env.from != from {
                return Some(Reason::new(
                    "sender_mismatch",
                    format!(
                        "envelope from `{}` on a subject whose sender is `{from}`",
                        env.from
                    ),
                ));
            }
        }
        if &env.org != self.kernel.org() {
            return Some(Reason::new(
                "wrong_org",
                format!("envelope of org `{}`", env.org),
            ));
        }
        if receiver.is_some() && env.to.as_ref() != Some(&self.role) {
            return Some(Reason::new(
                "wrong_recipient",
                format!(
                    "envelope addressed to {:?}",
                    env.to.as_ref().map(Name::as_str)
                ),
            ));
        }
        None
    }

    /// Dead-letters `env` for `reason` before any claim was taken (refused
    /// input): no attempt is spent on it.
    pub(crate) async fn refuse_unclaimed(
        &self,
        d: &Delivery,
        env: &Envelope,
        handler: Option<Arc<dyn Handler>>,
        reason: Reason,
    ) -> Result<Settle, Fault> {
        self.dead_letter(DeadLetter {
            delivery: d,
            envelope: Some(env),
            handler: handler.as_deref(),
            claim: self.claim_key(env.id.as_str())?,
            claim_pre: Precondition::MustNotExist,
            reason,
            attempts: 0,
            item: None,
        })
        .await
    }

    /// After an infrastructure fault: give the claim back without spending
    /// an attempt (if this process holds it) and put the delivery back; or,
    /// if the message can never be processed here, dead-letter it.
    async fn recover(&self, d: &Delivery, fault: Fault) -> Settle {
        let cfg = &self.kernel.config;
        let delay = match &fault {
            Fault::Transient(_) => cfg.retry_delay,
            Fault::Unreadable(_) => cfg.future_version_delay,
            Fault::Permanent(why) => {
                tracing::error!(error = %why, "the store or transport refused this message for good; dead-lettering it");
                return self.dead_letter_direct(d, why).await;
            }
        };
        tracing::warn!(error = %fault, retry_in = ?delay, "interrupted by an infrastructure failure; the delivery comes back without spending an attempt");
        let id = match d.message() {
            Ok(env) => Some(env.id.clone()),
            Err(DecodeError::FutureVersion { id, .. }) => id.clone(),
            Err(_) => None,
        };
        if let Some(id) = id {
            if let Err(e) = self.give_back(id.as_str()).await {
                tracing::debug!(error = %e, "could not give the claim back; it frees itself when its lease ends");
            }
        }
        Settle::Nak(delay)
    }
}
