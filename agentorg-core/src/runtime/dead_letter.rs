//! Dead letters: a delivery that can never be processed, or whose attempts
//! are spent, becomes a *new* envelope on `<org>.deadletter` with one alert
//! to the principal, a record to requeue or discard, and a settled claim —
//! all in one commit, with what its pattern commits along (a task marked
//! dead-lettered, say). Then the original is terminated.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::Fault;
use super::host::HostedRole;
use super::kernel::Effects;
use super::records::{
    from_doc, to_value, ClaimDoc, ClaimState, DeadLetterRecord, DeadLetterStatus,
};
use super::retry::optimistic;
use super::seam::{Handler, Reason, Settle};
use crate::envelope::{Envelope, Kind, MessageId};
use crate::store::{DocKey, Precondition, Write, MAX_DOCUMENT_BYTES};
use crate::subject::{Route, Subject};
use crate::transport::{Delivery, TransportExt};

/// The name of the runtime's event about each dead letter.
pub(crate) const DEAD_LETTER_EVENT: &str = "dead_letter";

/// A delivery to dead-letter, and how its claim stands.
pub(crate) struct DeadLetter<'a> {
    pub(crate) delivery: &'a Delivery,
    /// The original, if it could be decoded.
    pub(crate) envelope: Option<&'a Envelope>,
    /// The handler it was routed to, asked what to commit along.
    pub(crate) handler: Option<&'a dyn Handler>,
    /// The claim to settle as dead-lettered, and what it must be now.
    pub(crate) claim: DocKey,
    pub(crate) claim_pre: Precondition,
    pub(crate) reason: Reason,
    pub(crate) attempts: u32,
    /// The work item it was about, as its handler names it.
    pub(crate) item: Option<&'a MessageId>,
}

impl HostedRole {
    /// Dead-letters a delivery, once: the claim becomes `dead_lettered` in
    /// the same commit as the dead-letter record, its envelope and the alert
    /// (in the outbox), and what its handler commits along. Then the
    /// original is terminated.
    pub(crate) async fn dead_letter(&self, dl: DeadLetter<'_>) -> Result<Settle, Fault> {
        let d = dl.delivery;
        let reason = &dl.reason;
        let (letter, alert, original) =
            self.dead_letter_envelopes(d, dl.envelope, reason, dl.attempts, dl.item);
        let record = DeadLetterRecord {
            dead_letter_id: letter.id.clone(),
            original_id: dl.envelope.map(|e| e.id.clone()),
            subject: d.subject().to_string(),
            role: self.role.clone(),
            sender: dl.envelope.map(|e| e.from.clone()),
            task_id: dl.item.cloned(),
            reason_code: reason.code.to_owned(),
            reason: reason.message.clone(),
            attempts: dl.attempts,
            status: DeadLetterStatus::Open,
            created_at: self.kernel.now(),
            original,
        };
        let record_write = Write::put(
            self.kernel.layout.deadletter(&letter.id)?,
            to_value(&record)?,
            Precondition::MustNotExist,
        );
        let claim_pre = Mutex::new(dl.claim_pre);
        let pre = || {
            *claim_pre
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let settled = optimistic(|| async {
            let doc = self.claim_doc(
                ClaimState::DeadLettered,
                dl.attempts,
                Duration::ZERO,
                Some(reason.message.clone()),
            );
            let writes = vec![
                Write::put(dl.claim.clone(), to_value(&doc)?, pre()),
                record_write.clone(),
            ];
            let mut effects = Effects::new();
            effects.send(self.kernel.subjects.deadletter(), letter.clone());
            effects.send(self.kernel.subjects.alerts(), alert.clone());
            if let Some((subject, event)) = self.dead_letter_event(d, &letter, &alert) {
                effects.send(subject, event);
            }
            let mut failed_item = None;
            if let (Some(handler), Some(item)) = (dl.handler, dl.item) {
                if let Some(along) = handler
                    .dead_lettered(&self.kernel, &self.role, item, reason)
                    .await?
                {
                    effects.extend(along);
                    failed_item = Some(item);
                }
            }
            let (writes, entries) = self.kernel.outbox_writes(effects, writes)?;
            let armed = self.kernel.timers.arms_any(&writes);
            match self.kernel.commit_writes(writes).await {
                Ok(_) => {
                    tracing::warn!(code = reason.code, reason = %reason.message, attempts = dl.attempts, dead_letter = %letter.id, "dead-lettered");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    if let Some(item) = failed_item {
                        self.stats
                            .record_work(item, false, Duration::ZERO, self.kernel.now());
                    }
                    self.kernel.after_commit(entries, armed).await;
                    Ok(Some(Settle::Term))
                }
                Err(e) if e.is_precondition_failure() => {
                    // Someone else settled the claim, or a document the
                    // handler's writes depend on moved, or our claim version
                    // was stale.
                    let current = match self.kernel.store.get(&dl.claim).await? {
                        Some(doc) => Some(from_doc::<ClaimDoc>(&doc)?),
                        None => None,
                    };
                    match (current, pre()) {
                        (Some((c, _)), _) if c.state == ClaimState::DeadLettered => {
                            Ok(Some(Settle::Term))
                        }
                        (Some((c, _)), _) if c.state == ClaimState::Done => Ok(Some(Settle::Ack)),
                        (Some((_, v)), Precondition::Version(pv)) if v == pv => Ok(None),
                        (Some((c, v)), Precondition::Version(_))
                            if c.state == ClaimState::Running
                                && c.owner == self.kernel.instance
                                && c.attempts == dl.attempts =>
                        {
                            *claim_pre
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Precondition::Version(v);
                            Ok(None)
                        }
                        (None, Precondition::MustNotExist) => Ok(None),
                        _ => Ok(Some(Settle::Nak(self.kernel.config.retry_delay))),
                    }
                }
                Err(e) => Err(Fault::from(e)),
            }
        })
        .await?;
        Ok(settled.unwrap_or(Settle::Nak(self.kernel.config.retry_delay)))
    }

    /// Dead-letters a message that cannot even be claimed (the store refuses
    /// its key): publishes the dead letter and the alert directly, then
    /// terminates it. Without a claim, a redelivery before the termination
    /// lands could dead-letter it twice; that is the price of not losing it.
    pub(crate) async fn dead_letter_direct(&self, d: &Delivery, why: &str) -> Settle {
        let reason = Reason::new("store_refused", why.to_owned());
        let env = d.message().ok();
        let (dl, alert, _) = self.dead_letter_envelopes(d, env, &reason, 0, None);
        let t = &self.kernel.transport;
        let published = async {
            t.publish_envelope(&self.kernel.subjects.deadletter(), &dl)
                .await?;
            t.publish_envelope(&self.kernel.subjects.alerts(), &alert)
                .await?;
            // Best effort: the dead letter and its alert are out, and
            // failing here would publish them again.
            if let Some((subject, event)) = self.dead_letter_event(d, &dl, &alert) {
                if let Err(e) = t.publish_envelope(&subject, &event).await {
                    tracing::warn!(error = %e, "publishing the dead_letter event failed; it is not sent");
                }
            }
            Ok::<_, crate::transport::TransportError>(())
        }
        .await;
        match published {
            Ok(_) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Settle::Term
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish the dead letter yet; the delivery comes back");
                Settle::Nak(self.kernel.config.retry_delay)
            }
        }
    }

    /// The runtime's `dead_letter` event about a dead letter (from this
    /// role, with the alert's details), so a role may subscribe to dead
    /// letters: none when no role of the chart subscribes to it (no one
    /// would take it), nor for a dead-lettered `dead_letter` event (a
    /// subscriber failing them would feed itself).
    fn dead_letter_event(
        &self,
        d: &Delivery,
        letter: &Envelope,
        alert: &Envelope,
    ) -> Option<(Subject, Envelope)> {
        if let Some(Route::Event { name }) = self.kernel.subjects.route(d.subject()) {
            if name.len() == 1 && name[0].as_str() == DEAD_LETTER_EVENT {
                return None;
            }
        }
        let mut details = alert.payload.clone();
        if let Some(map) = details.as_object_mut() {
            map.remove("alert");
        }
        let (subject, event) =
            self.kernel
                .org_event(self.role.clone(), DEAD_LETTER_EVENT, &details)?;
        let mut event = event.with_causation(letter.id.clone());
        if let Some(c) = &letter.correlation_id {
            event = event.with_correlation(c.clone());
        }
        Some((subject, event))
    }

    /// The dead-letter envelope (a new message, caused by the original, whose
    /// body it keeps whole when it fits and else a prefix and a hash) and the
    /// principal's alert.
    fn dead_letter_envelopes(
        &self,
        d: &Delivery,
        env: Option<&Envelope>,
        reason: &Reason,
        attempts: u32,
        item: Option<&MessageId>,
    ) -> (Envelope, Envelope, Value) {
        let raw = d.raw();
        let make = |original: &Value| {
            let mut e = self.kernel.envelope(
                self.role.clone(),
                Kind::DeadLetter,
                json!({
                    "reason": { "code": reason.code, "message": reason.message },
                    "attempts": attempts,
                    "role": self.role,
                    "subject": d.subject().as_str(),
                    "original_id": env.map(|e| e.id.to_string()),
                    "original": original,
                }),
            );
            if let Some(env) = env {
                e = e.with_causation(env.id.clone());
            }
            if let Some(t) = item {
                e = e.with_correlation(t.clone());
            }
            e
        };
        // Whole if the dead letter still fits a document (its outbox entry,
        // and its record).
        let budget = MAX_DOCUMENT_BYTES - 16 * 1024;
        let whole = original_body(raw, true);
        let full = make(&whole);
        let (dl, original) = match self.kernel.codec.encode(&full) {
            Ok(bytes) if bytes.len() <= budget => (full, whole),
            _ => {
                let cut = original_body(raw, false);
                (make(&cut), cut)
            }
        };
        let alert = self
            .kernel
            .envelope(
                self.role.clone(),
                Kind::Alert,
                json!({
                    "alert": "dead_letter",
                    "dead_letter_id": dl.id,
                    "original_id": env.map(|e| e.id.to_string()),
                    "role": self.role,
                    "reason": { "code": reason.code, "message": reason.message },
                    "attempts": attempts,
                }),
            )
            .with_to(self.kernel.chart.principal().clone())
            .with_causation(dl.id.clone());
        (dl, alert, original)
    }
}

/// A dead letter's `original` field: the body whole when it fits the
/// budget, else a prefix and a hash.
fn original_body(raw: &Bytes, whole: bool) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if whole {
        return match std::str::from_utf8(raw) {
            Ok(s) => json!({ "body": s }),
            Err(_) => json!({ "body_base64": b64.encode(raw) }),
        };
    }
    let digest = crate::hex::hex(&Sha256::digest(raw), 64);
    json!({
        "truncated": true,
        "prefix_base64": b64.encode(&raw[..raw.len().min(4096)]),
        "sha256": digest,
        "size": raw.len(),
    })
}
