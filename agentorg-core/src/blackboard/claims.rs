//! Claims on artifacts: one replica of an owner works on a ready artifact
//! until its lease runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ops::{
    artifact_key, basis, change_writes, check_seen, read_artifact, remember, seen, staged,
};
use super::records::{ArtifactStatus, Lease};
use super::{ArtifactClaim, BoardError};
use crate::runtime::{Context, Effects};

/// How many times a claim re-reads an artifact that changed under it.
const CLAIM_TRIES: usize = 16;

/// What work claimed now starts from: what `cx`'s call saw of the blockers
/// (its ready notice), refused if one changed since; else the blockers as
/// they are `now`.
fn started_from(
    cx: &Context,
    project: &str,
    name: &str,
    now: BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, BoardError> {
    match seen(cx, project, name) {
        Some(seen) => {
            check_seen(cx, project, name, &seen, &now)?;
            Ok(seen)
        }
        None => Ok(now),
    }
}

/// Claims artifact `name` of `project` for `cx`'s delivery (its role must
/// own it), committed now: a ready one (not started, every blocker
/// complete), one whose lease ran out, or one this delivery holds already
/// (a handler that runs again for the same message); with `renew`, only
/// the last.
async fn claim(
    cx: &Context,
    project: &str,
    name: &str,
    lease: Duration,
    renew: bool,
) -> Result<ArtifactClaim, BoardError> {
    let (kernel, role) = (cx.kernel(), cx.role());
    let lease = chrono::TimeDelta::from_std(lease).map_err(|e| BoardError::InvalidInput {
        message: format!("lease {lease:?}: {e}"),
    })?;
    let holder = cx.envelope().id.to_string();
    // Committed now: after a change staged in this call, its version check
    // would fail, and the call run again, for ever.
    if staged(cx, &artifact_key(kernel, project, name)?) {
        return Err(BoardError::InvalidInput {
            message: format!(
                "artifact `{name}` is already changed in this call: claim it before changing it"
            ),
        });
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let (mut a, version) = read_artifact(kernel, project, name).await?;
        if &a.owner != role {
            return Err(BoardError::NotOwner {
                role: role.to_string(),
                artifact: name.to_owned(),
                owner: a.owner.to_string(),
            });
        }
        let now = kernel.now();
        let from = a.status;
        let held = a
            .claim
            .as_ref()
            .filter(|l| l.holder != holder && l.until > now);
        if let Some(l) = held {
            return Err(BoardError::Claimed {
                artifact: name.to_owned(),
                holder: l.holder.clone(),
                until: l.until,
            });
        }
        let mine = a.claim.as_ref().is_some_and(|l| l.holder == holder);
        let lapsed = a.claim.as_ref().is_some_and(|l| l.until <= now);
        match from {
            s if !s.is_started() && !renew => {
                // Each blocker read once: its status, and its revision.
                let mut basis = BTreeMap::new();
                let mut waiting = Vec::new();
                for b in &a.blocked_by {
                    let (blocker, _) = read_artifact(kernel, project, b).await?;
                    if blocker.status != ArtifactStatus::Complete {
                        waiting.push(b.clone());
                    }
                    basis.insert(b.clone(), blocker.revision);
                }
                if !waiting.is_empty() {
                    return Err(BoardError::NotReady {
                        artifact: name.to_owned(),
                        status: from,
                        waiting_on: waiting,
                    });
                }
                a.basis = started_from(cx, project, name, basis)?;
            }
            ArtifactStatus::InProgress if mine => {}
            // Taken over: the work starts again, on the blockers as they are.
            ArtifactStatus::InProgress if lapsed && !renew => {
                let now = basis(kernel, project, &a.blocked_by).await?;
                a.basis = started_from(cx, project, name, now)?;
            }
            _ => {
                return Err(BoardError::NotReady {
                    artifact: name.to_owned(),
                    status: from,
                    waiting_on: Vec::new(),
                })
            }
        }
        let Some(until) = now.checked_add_signed(lease) else {
            return Err(BoardError::InvalidInput {
                message: format!("a lease of {lease} runs past the last date"),
            });
        };
        a.status = ArtifactStatus::InProgress;
        a.claim = Some(Lease {
            holder: holder.clone(),
            process: kernel.instance().to_owned(),
            until,
        });
        let (write, record) = change_writes(kernel, role, project, &mut a, version, from)?;
        let mut effects = Effects::new();
        effects.write(write).write(record);
        match kernel.commit(effects).await {
            Ok(()) => {
                remember(cx, project, name, a.basis.clone());
                return Ok(ArtifactClaim {
                    project: project.to_owned(),
                    artifact: name.to_owned(),
                    holder,
                    process: kernel.instance().to_owned(),
                    until,
                    revision: a.revision,
                });
            }
            // Changed meanwhile (another replica's claim, say): read again.
            Err(e) if e.is_precondition_failure() && tries < CLAIM_TRIES => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The blackboard's claims of a handler's [`Context`].
impl Context {
    /// Claims artifact `name` of `project` (this role must own it) for
    /// `lease`, so that of several replicas of the role exactly one starts
    /// it: it must be ready (not started, every blocker complete), or
    /// `in_progress` under a lease that ran out. It moves to `in_progress`.
    /// **Committed now**, not with the handler's outcome (the claim is what
    /// lets this replica start); a claim held by another replica is
    /// refused ([`BoardError::Claimed`], with when it runs out). The claim
    /// is held by this delivery: a handler that runs again for the same
    /// message (a retry, or another process's after a crash) claims it
    /// again at once. Renew it for longer work
    /// ([`renew_claim`](Self::renew_claim)); changing the artifact out of
    /// `in_progress` (completing it, say) ends it. The lease governs who
    /// starts: it does not lock the artifact against its owner's other
    /// changes.
    pub async fn claim_artifact(
        &self,
        project: &str,
        name: &str,
        lease: Duration,
    ) -> Result<ArtifactClaim, BoardError> {
        claim(self, project, name, lease, false).await
    }

    /// Extends this delivery's claim on artifact `name` of `project` to
    /// `lease` from now (committed now); refused if it was lost
    /// ([`BoardError::Claimed`] when another replica took it after it ran
    /// out, [`BoardError::NotReady`] when the artifact left `in_progress`).
    pub async fn renew_claim(
        &self,
        project: &str,
        name: &str,
        lease: Duration,
    ) -> Result<ArtifactClaim, BoardError> {
        claim(self, project, name, lease, true).await
    }
}
