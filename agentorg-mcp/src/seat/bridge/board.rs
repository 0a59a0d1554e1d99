//! The blackboard through a seat: a ready artifact is a turn
//! (`artifact_ready`) in which the client updates its artifact; a rework is
//! a notice (`artifact_rework`); and the board's operations the client asks
//! for in a turn, run with the turn's [`Context`] (held to the chart: only
//! an artifact's owner changes it).

use std::time::Duration;

use agentorg_core::agent::{AgentError, Context};
use agentorg_core::blackboard::{
    Artifact, ArtifactStatus, ArtifactUpdate, BoardError, DecisionSpec, ReadyArtifact,
    ReworkArtifact,
};
use serde_json::{json, Value};

use super::{fail, End, SeatAgent, TurnKind};
use crate::seat::SeatError;

/// A blackboard operation of a turn.
#[derive(Debug)]
pub(crate) enum BoardOp {
    /// The project in GenBrain's shape, and what is ready by role.
    Read { project: String },
    /// Changes an artifact this role owns (with the turn's outcome).
    Update {
        project: String,
        artifact: String,
        update: ArtifactUpdate,
    },
    /// Claims an artifact this role owns (at once).
    Claim {
        project: String,
        artifact: String,
        lease: Duration,
    },
    /// Appends a decision to a project's log (with the turn's outcome).
    Decide {
        project: String,
        decision: DecisionSpec,
    },
}

impl SeatError {
    /// A blackboard refusal or failure as the seat reports it: the chart's
    /// rule (`not_allowed`); what may succeed later (a claim held, blockers
    /// not complete yet: `unavailable`, retryable); bad input (a blocker
    /// changed under the turn's work too: this turn cannot do it, and the
    /// change's notice offers it again); or the store.
    pub(crate) fn from_board(e: BoardError) -> Self {
        match e {
            e @ BoardError::NotOwner { .. } => Self::NotAllowed {
                message: e.to_string(),
            },
            BoardError::Store(e) => Self::from_store(e),
            e @ BoardError::Claimed { .. } => Self::Unavailable {
                message: e.to_string(),
            },
            // Blockers not complete yet (not: complete already).
            e if matches!(&e, BoardError::NotReady { waiting_on, .. } if !waiting_on.is_empty()) => {
                Self::Unavailable {
                    message: e.to_string(),
                }
            }
            e => Self::InvalidInput {
                message: e.to_string(),
            },
        }
    }
}

/// Runs `op` with the turn's `cx`.
pub(crate) async fn run(cx: &Context, op: BoardOp) -> Result<Value, SeatError> {
    let r = match op {
        BoardOp::Read { project } => match cx.project(&project).await {
            Ok(p) => cx.ready_artifacts(&project).await.map(|ready| {
                let mut doc = p.to_json();
                doc["ready"] = json!(ready);
                doc
            }),
            Err(e) => Err(e),
        },
        BoardOp::Update {
            project,
            artifact,
            update,
        } => cx
            .update_artifact(&project, &artifact, update)
            .await
            .map(|revision| {
                json!({
                    "artifact": artifact,
                    "revision": revision,
                    "note": "written when this turn ends",
                })
            }),
        BoardOp::Claim {
            project,
            artifact,
            lease,
        } => cx
            .claim_artifact(&project, &artifact, lease)
            .await
            .map(|c| {
                json!({
                    "artifact": c.artifact,
                    "holder": c.holder,
                    "until": c.until.to_rfc3339(),
                    "status": ArtifactStatus::InProgress,
                })
            }),
        BoardOp::Decide { project, decision } => cx
            .record_decision(&project, decision)
            .await
            .map(|id| json!({ "decision_id": id, "note": "recorded when this turn ends" })),
    };
    r.map_err(SeatError::from_board)
}

fn artifact_json(a: &Artifact) -> Value {
    json!({
        "name": a.name,
        "owner": a.owner,
        "status": a.status,
        "path": a.path,
        "revision": a.revision,
    })
}

impl SeatAgent {
    /// A ready artifact as a turn (`artifact_ready`): the client changes it
    /// (`update_artifact`, `claim_artifact`) and ends the turn with
    /// `complete_task`, or `fail_task`.
    pub(crate) async fn artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        let revisions: Vec<String> = ready
            .blockers
            .iter()
            .map(|b| format!("{}@{}", b.name, b.revision))
            .collect();
        let id = format!(
            "{}/{}/ready/{}",
            ready.project,
            ready.artifact,
            revisions.join(",")
        );
        let event = json!({
            "event": TurnKind::ArtifactReady.name(),
            "project_id": ready.project,
            "artifact": ready.artifact,
            "blockers": ready.blockers.iter().map(artifact_json).collect::<Vec<_>>(),
            "attempt": cx.attempt(),
        });
        match self.turn(cx, id, TurnKind::ArtifactReady, event).await? {
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Ok(()),
        }
    }

    /// A rework as a notice (`artifact_rework`): the artifact's move to
    /// `rework` commits once the client has acknowledged it (its next
    /// call); the client redoes it in a later turn.
    pub(crate) async fn artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        let id = format!(
            "{}/{}/rework/{}@{}",
            rework.project, rework.artifact, rework.changed.name, rework.changed.revision
        );
        let event = json!({
            "event": "artifact_rework",
            "project_id": rework.project,
            "artifact": rework.artifact,
            "changed": artifact_json(&rework.changed),
        });
        self.notice(cx, id, event).await
    }
}
