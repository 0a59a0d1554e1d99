//! The blackboard through a seat: a ready artifact is a turn
//! (`artifact_ready`) in which the client updates its artifact (the org
//! actions `update_artifact`, `claim_artifact`, …); a rework is a notice
//! (`artifact_rework`).

use agentorg_core::agent::actions::artifact_ready_id;
use agentorg_core::agent::{AgentError, Context};
use agentorg_core::blackboard::{Artifact, ReadyArtifact, ReworkArtifact};
use serde_json::{json, Value};

use super::{fail, End, SeatAgent, TurnKind};

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
        let id = artifact_ready_id(&ready);
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
