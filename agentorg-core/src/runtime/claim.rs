//! Claims: who processes a message, which attempt, until when — a record per
//! message and role, changed only by conditional writes.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::dead_letter::DeadLetter;
use super::error::Fault;
use super::host::HostedRole;
use super::records::{add, clip, to_value, ClaimDoc, ClaimState};
use super::retry::optimistic;
use super::seam::{Handler, Reason, Settle};
use crate::envelope::{Envelope, MessageId};
use crate::store::{DocKey, Precondition, StateStoreExt, StoreError, Version, Write};
use crate::transport::Delivery;

/// A claim this process holds: which attempt, and its current version
/// (moved on by lease extensions).
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) key: DocKey,
    pub(crate) attempt: u32,
    version: AtomicU64,
    lost: AtomicBool,
}

impl Claim {
    fn new(key: DocKey, attempt: u32, version: Version) -> Self {
        Self {
            key,
            attempt,
            version: AtomicU64::new(version.raw()),
            lost: AtomicBool::new(false),
        }
    }

    pub(crate) fn version(&self) -> Version {
        Version::from_raw(self.version.load(Ordering::SeqCst))
    }

    /// Whether another attempt took the message over (seen by a lease
    /// extension).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn set_version(&self, v: Version) {
        self.version.store(v.raw(), Ordering::SeqCst);
    }
}

/// What a handler prepared, once committed with the claim (see
/// [`Handler::prepare`]).
pub(crate) struct Note {
    pub(crate) note: Box<dyn Any + Send + Sync>,
    /// The versions of the prepared writes, in order.
    pub(crate) versions: Vec<Option<Version>>,
}

/// What trying to claim a message found.
pub(crate) enum Acquire {
    /// Claimed: run the handler (with what it prepared).
    Run(Claim, Option<Note>),
    /// Already processed.
    Done,
    /// Already dead-lettered.
    DeadLettered,
    /// A live claim elsewhere: try again after this long.
    Busy(Duration),
    /// The attempts are spent: dead-letter it.
    Exhausted {
        version: Version,
        attempts: u32,
        last_error: Option<String>,
    },
}

impl Acquire {
    /// The disposition of a claim that is not ours to run.
    pub(crate) fn settle(&self, retry_delay: Duration) -> Settle {
        match self {
            Acquire::Done => Settle::Ack,
            Acquire::DeadLettered => Settle::Term,
            Acquire::Busy(d) => Settle::Nak(*d),
            Acquire::Run(..) | Acquire::Exhausted { .. } => Settle::Nak(retry_delay),
        }
    }
}

impl HostedRole {
    pub(crate) fn claim_key(&self, id: &str) -> Result<DocKey, StoreError> {
        self.kernel.layout.claim(&self.role, id)
    }

    pub(crate) fn claim_doc(
        &self,
        state: ClaimState,
        attempts: u32,
        lease: Duration,
        error: Option<String>,
    ) -> ClaimDoc {
        let now = self.kernel.now();
        let settled = matches!(state, ClaimState::Done | ClaimState::DeadLettered);
        ClaimDoc {
            state,
            owner: self.kernel.instance.clone(),
            attempts,
            deferrals: 0,
            lease_until: add(now, lease),
            updated_at: now,
            last_error: error.map(clip),
            expires_at: settled.then(|| add(now, self.kernel.config.claim_retention)),
        }
    }

    /// The write that settles `claim` as processed.
    pub(crate) fn done_write(&self, claim: &Claim) -> Result<Write, StoreError> {
        let doc = self.claim_doc(ClaimState::Done, claim.attempt, Duration::ZERO, None);
        Ok(Write::put(
            claim.key.clone(),
            to_value(&doc)?,
            Precondition::Version(claim.version()),
        ))
    }

    /// Claims message `env` for a run, with what `handler` prepares
    /// committed alongside, or says why not. On a first delivery
    /// (`first`) the claim is expected not to exist and is not read first;
    /// if it does, the conflict has it read.
    pub(crate) async fn acquire(
        &self,
        env: &Envelope,
        first: bool,
        handler: &dyn Handler,
    ) -> Result<Acquire, Fault> {
        let key = self.claim_key(env.id.as_str())?;
        let cfg = &self.kernel.config;
        let unread = AtomicBool::new(first);
        let claimed = optimistic(|| async {
            let now = self.kernel.now();
            let current = if unread.swap(false, Ordering::SeqCst) {
                None
            } else {
                self.kernel.read::<ClaimDoc>(&key).await?
            };
            let (attempts, pre, last_error, deferrals) = match current {
                None => (1, Precondition::MustNotExist, None, 0),
                Some((c, v)) => match c.state {
                    ClaimState::Done => return Ok(Some(Acquire::Done)),
                    ClaimState::DeadLettered => return Ok(Some(Acquire::DeadLettered)),
                    ClaimState::Running if c.lease_until > now => {
                        let left = (c.lease_until - now).to_std().unwrap_or_default();
                        return Ok(Some(Acquire::Busy(
                            left.clamp(Duration::from_millis(10), cfg.lease),
                        )));
                    }
                    _ if c.attempts >= cfg.max_attempts => {
                        return Ok(Some(Acquire::Exhausted {
                            version: v,
                            attempts: c.attempts,
                            last_error: c.last_error,
                        }))
                    }
                    _ => (
                        c.attempts + 1,
                        Precondition::Version(v),
                        c.last_error,
                        c.deferrals,
                    ),
                },
            };
            let prepared = handler.prepare(&self.kernel, &self.role, env).await?;
            let doc = ClaimDoc {
                deferrals,
                ..self.claim_doc(ClaimState::Running, attempts, cfg.lease, last_error)
            };
            let mut writes = vec![Write::put(key.clone(), to_value(&doc)?, pre)];
            writes.extend(prepared.writes);
            match self.kernel.commit_writes(writes).await {
                Ok(mut versions) => {
                    let Some(version) = versions.first().copied().flatten() else {
                        return Err(Fault::from(StoreError::Other {
                            backend: "store",
                            source: format!("commit of the claim {key} returned no version").into(),
                        }));
                    };
                    versions.remove(0);
                    let note = prepared.note.map(|note| Note { note, versions });
                    Ok(Some(Acquire::Run(
                        Claim::new(key.clone(), attempts, version),
                        note,
                    )))
                }
                Err(e) if e.is_precondition_failure() => Ok(None),
                Err(e) => Err(Fault::from(e)),
            }
        })
        .await?;
        Ok(claimed.unwrap_or(Acquire::Busy(cfg.retry_delay)))
    }

    /// An envelope of a newer format version: put back, counting deferrals
    /// apart from the handler's attempts, and dead-lettered when they run out.
    pub(crate) async fn future_version(
        &self,
        d: &Delivery,
        id: &MessageId,
    ) -> Result<Settle, Fault> {
        let key = self.claim_key(id.as_str())?;
        let cfg = &self.kernel.config;
        let settled = optimistic(|| async {
            let now = self.kernel.now();
            let (current, pre) = match self.kernel.read::<ClaimDoc>(&key).await? {
                None => (None, Precondition::MustNotExist),
                Some((c, v)) => (Some(c), Precondition::Version(v)),
            };
            let (attempts, deferrals) = match &current {
                Some(c) if c.state == ClaimState::Done => return Ok(Some(Settle::Ack)),
                Some(c) if c.state == ClaimState::DeadLettered => return Ok(Some(Settle::Term)),
                Some(c) if c.state == ClaimState::Running && c.lease_until > now => {
                    // A newer process is running it.
                    return Ok(Some(Settle::Nak(cfg.future_version_delay)));
                }
                Some(c) => (c.attempts, c.deferrals),
                None => (0, 0),
            };
            if deferrals >= cfg.max_attempts {
                let reason = Reason::new(
                    "future_version",
                    d.message()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
                return self
                    .dead_letter(DeadLetter {
                        delivery: d,
                        envelope: None,
                        handler: None,
                        claim: key.clone(),
                        claim_pre: pre,
                        reason,
                        attempts: deferrals,
                        item: None,
                    })
                    .await
                    .map(Some);
            }
            let doc = ClaimDoc {
                deferrals: deferrals + 1,
                ..self.claim_doc(
                    ClaimState::Released,
                    attempts,
                    Duration::ZERO,
                    Some("envelope of a newer format version".to_owned()),
                )
            };
            match self.kernel.store.put(&key, to_value(&doc)?, pre).await {
                Ok(_) => {
                    tracing::info!(
                        deferrals = deferrals + 1,
                        "envelope of a newer format version; putting it back"
                    );
                    Ok(Some(Settle::Nak(cfg.future_version_delay)))
                }
                Err(e) if e.is_precondition_failure() => Ok(None),
                Err(e) => Err(Fault::from(e)),
            }
        })
        .await?;
        Ok(settled.unwrap_or(Settle::Nak(cfg.retry_delay)))
    }

    /// Whether `claim` is still ours (a commit conflict may come from
    /// another document, or an earlier write's outcome was unknown);
    /// refreshes its version if so.
    pub(crate) async fn still_mine(&self, claim: &Claim) -> Result<bool, Fault> {
        let Some((c, v)) = self.kernel.read::<ClaimDoc>(&claim.key).await? else {
            return Ok(false);
        };
        let mine = c.state == ClaimState::Running
            && c.owner == self.kernel.instance
            && c.attempts == claim.attempt;
        if mine {
            claim.set_version(v);
        }
        Ok(mine)
    }

    /// Extends the lease every third of it, in the store and with the
    /// transport, for as long as it is polled; completes when the claim is
    /// lost (another attempt owns the message now).
    pub(crate) async fn keep_lease(&self, d: &Delivery, claim: &Claim) {
        let lease = self.kernel.config.lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            if claim.is_lost() {
                return;
            }
            let doc = self.claim_doc(ClaimState::Running, claim.attempt, lease, None);
            let Ok(value) = to_value(&doc) else {
                continue;
            };
            match self
                .kernel
                .store
                .put(&claim.key, value, Precondition::Version(claim.version()))
                .await
            {
                Ok(v) => claim.set_version(v),
                // An earlier extension whose answer was lost may have landed:
                // look before giving the claim up.
                Err(e) if e.is_precondition_failure() => match self.still_mine(claim).await {
                    Ok(true) => {}
                    Ok(false) => {
                        claim.lost.store(true, Ordering::SeqCst);
                        tracing::warn!(
                            "lost the claim (the lease ran out); cancelling this attempt"
                        );
                        return;
                    }
                    // Unknown: look again at the next extension.
                    Err(e) => tracing::warn!(error = %e, "reading the claim failed; retrying"),
                },
                Err(e) => tracing::warn!(error = %e, "extending the lease failed; retrying"),
            }
            if let Err(e) = d.progress().await {
                tracing::debug!(error = %e, "progress acknowledgement failed");
            }
        }
    }

    /// Releases the claim so the next delivery may run it. `spent`: whether
    /// this attempt counts (a handler failure) or not (an infrastructure
    /// problem or a stale outcome).
    pub(crate) async fn release(
        &self,
        claim: &Claim,
        error: &str,
        spent: bool,
    ) -> Result<(), Fault> {
        let attempts = if spent {
            claim.attempt
        } else {
            claim.attempt.saturating_sub(1)
        };
        for _ in 0..2 {
            let doc = self.claim_doc(
                ClaimState::Released,
                attempts,
                Duration::ZERO,
                Some(error.to_owned()),
            );
            match self
                .kernel
                .store
                .put(
                    &claim.key,
                    to_value(&doc)?,
                    Precondition::Version(claim.version()),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Our version may be stale (a lease extension's answer was
                // lost); if someone else owns it now, they decide.
                Err(e) if e.is_precondition_failure() => {
                    if !self.still_mine(claim).await? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Releases this process's running claim on message `id`, uncounted
    /// (after an infrastructure fault).
    pub(crate) async fn give_back(&self, id: &str) -> Result<(), StoreError> {
        let key = self.claim_key(id)?;
        let Some((c, v)) = self.kernel.read::<ClaimDoc>(&key).await? else {
            return Ok(());
        };
        if c.state != ClaimState::Running || c.owner != self.kernel.instance {
            return Ok(());
        }
        let doc = ClaimDoc {
            attempts: c.attempts.saturating_sub(1),
            ..self.claim_doc(
                ClaimState::Released,
                c.attempts,
                Duration::ZERO,
                c.last_error,
            )
        };
        self.kernel
            .store
            .put(&key, to_value(&doc)?, Precondition::Version(v))
            .await
            .map(drop)
    }
}
