//! The blackboard's handler of each role's notices: an artifact not started
//! whose blockers are complete now is ready (its owner told once per set of
//! blocker revisions); one started on an earlier revision of the blocker
//! that changed goes to rework.

use std::sync::Arc;

use async_trait::async_trait;

use super::ops::{self, Notice};
use super::records::{Artifact, ArtifactStatus};
use super::{ArtifactUpdate, BoardCallbacks, ReadyArtifact, ReworkArtifact};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::runtime::{from_json, Claimed, Fault, Handler, HostedRole, Reason, Settle};
use crate::store::{Precondition, Write};
use crate::subject::{Route, SubjectPattern, Subjects};

fn callbacks(host: &HostedRole) -> Option<&Arc<dyn BoardCallbacks>> {
    host.app::<Arc<dyn BoardCallbacks>>()
}

fn notice(env: &Envelope) -> Option<Notice> {
    from_json(&env.payload).ok()
}

/// Takes every role's ready notices (on its inbox consumer).
#[derive(Debug)]
pub(crate) struct BoardHandler;

#[async_trait]
impl Handler for BoardHandler {
    fn name(&self) -> &'static str {
        "blackboard"
    }

    fn subjects(&self, subjects: &Subjects, chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        if chart.is_principal(role) {
            return Vec::new();
        }
        ops::channel()
            .map(|c| vec![subjects.channel_any(role, &c)])
            .unwrap_or_default()
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, _route: &Route) -> Result<(), Reason> {
        if env.kind != Kind::Message || notice(env).is_none() {
            return Err(Reason::new("malformed", "not a ready notice"));
        }
        let chart = host.kernel().chart();
        if !chart.contains(&env.from) || chart.is_principal(&env.from) {
            return Err(Reason::new(
                "not_allowed",
                format!("`{}` owns no artifact: not a role of the chart", env.from),
            ));
        }
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{}` hosts no code for the blackboard", host.role()),
            ));
        }
        Ok(())
    }

    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let (Some(cb), Some(n)) = (
            callbacks(delivery.host()).cloned(),
            notice(delivery.envelope()),
        ) else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no blackboard callbacks"), None)
                .await;
        };
        let kernel = delivery.kernel();
        // The artifact must be this role's: started, it may go to rework;
        // not started, it may be ready (read below).
        let artifacts = match ops::read_artifacts(kernel, &n.project).await {
            Ok(a) => a,
            Err(super::BoardError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(Fault::Permanent(e.to_string())),
        };
        let Some(artifact) = artifacts.iter().find(|a| a.name == n.artifact) else {
            return delivery.done().await;
        };
        if &artifact.owner != delivery.role() {
            return delivery.done().await;
        }
        if artifact.status.is_started() {
            return rework(delivery, cb, n, artifact, &artifacts).await;
        }
        let blockers: Vec<Artifact> = artifacts
            .iter()
            .filter(|a| artifact.blocked_by.contains(&a.name))
            .cloned()
            .collect();
        // From the owner of a blocker, or from the owner itself (after a
        // rework: is it ready again?).
        let from = &delivery.envelope().from;
        let sender_blocks = blockers.iter().any(|b| &b.owner == from) || from == delivery.role();
        if !sender_blocks
            || blockers
                .iter()
                .any(|b| b.status != ArtifactStatus::Complete)
        {
            return delivery.done().await;
        }
        // Once per set of blocker revisions: two blockers completing at
        // once send two notices, and both may find it ready.
        let refs: Vec<_> = blockers.iter().collect();
        let marker = ops::ready_marker(kernel, &n.project, artifact, &refs)?;
        if kernel.store().get(&marker).await?.is_some() {
            return delivery.done().await;
        }
        let cx = delivery.context(None);
        // What a change in this call starts from: these revisions.
        let seen = blockers.iter().map(|b| (b.name.clone(), b.revision));
        ops::remember(&cx, &n.project, &n.artifact, seen.collect());
        let ready = ReadyArtifact {
            project: n.project.clone(),
            artifact: n.artifact.clone(),
            blockers,
        };
        let r = delivery.run(cb.on_artifact_ready(&cx, ready)).await;
        // Told, unless the work found a blocker changed under it: then the
        // change's own notice tells again.
        if !ops::is_stale(&cx, &n.project, &n.artifact) {
            cx.with_effects(|effects, _| {
                effects.contended_write(Write::put(
                    marker,
                    serde_json::json!({ "artifact": n.artifact, "role": delivery.role() }),
                    Precondition::MustNotExist,
                ));
            });
        }
        delivery.settle_call(&cx, r).await
    }
}

/// A notice for a started artifact: if the blocker named changed after it
/// started (a revision above the one it started on), its owner moves it to
/// `rework` and is told, in one call. Once: it is then not started. The
/// same commit sends the owner a notice of its own, to hear that it is
/// ready again once its blockers are complete.
async fn rework(
    delivery: Claimed<'_>,
    cb: Arc<dyn BoardCallbacks>,
    n: Notice,
    artifact: &Artifact,
    artifacts: &[Artifact],
) -> Result<Settle, Fault> {
    let (Some(blocker), Some(revision)) = (n.blocker.as_deref(), n.revision) else {
        return delivery.done().await;
    };
    let changed = artifacts
        .iter()
        .find(|a| a.name == blocker && artifact.blocked_by.contains(&a.name));
    let Some(changed) = changed.cloned() else {
        return delivery.done().await;
    };
    let started_on = artifact.basis.get(blocker).copied().unwrap_or(0);
    if changed.owner != delivery.envelope().from || revision <= started_on {
        return delivery.done().await;
    }
    let cx = delivery.context(None);
    let rework = ReworkArtifact {
        project: n.project.clone(),
        artifact: n.artifact.clone(),
        changed,
    };
    let r = delivery
        .run(async {
            let to_rework = ArtifactUpdate::status(ArtifactStatus::Rework);
            cx.update_artifact(&n.project, &n.artifact, to_rework)
                .await?;
            cb.on_artifact_rework(&cx, rework).await
        })
        .await;
    if r.is_ok() {
        let role = delivery.role();
        let again = Notice {
            project: n.project.clone(),
            artifact: n.artifact.clone(),
            blocker: None,
            revision: None,
        };
        cx.with_effects(|effects, _| {
            ops::send_notice(delivery.kernel(), effects, role, role, &again)
        })?;
    }
    delivery.settle_call(&cx, r).await
}
