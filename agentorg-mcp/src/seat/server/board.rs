//! The seat's blackboard tools: read a project, change or claim an
//! artifact this role owns, record a decision — each in a turn this seat
//! holds (a task, or a ready artifact), held to the chart.

use std::time::Duration;

use agentorg_core::blackboard::{ArtifactStatus, ArtifactUpdate, DecisionSpec};
use rmcp::model::Tool;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse, tool, SeatServer};
use crate::seat::bridge::{BoardOp, Command, TurnKind};
use crate::seat::SeatError;

/// The turns a board tool acts in.
const KINDS: [TurnKind; 2] = [TurnKind::Task, TurnKind::ArtifactReady];

/// The longest claim a seat may take.
const MAX_LEASE_SECS: u64 = 24 * 3600;

/// The blackboard's tools, listed after the others.
pub(crate) fn board_tools() -> Vec<Tool> {
    let id = |what: &str| json!({"type": "string", "description": what});
    let turn = || id("The task or ready artifact in hand (optional when only one is held)");
    vec![
        tool(
            "read_project",
            "Read a blackboard project: its artifacts (owner, status, path, blocked_by, updated_at), its decision log, and `ready`: the artifacts not started whose blockers are all complete, by owner. Each artifact is as it is now (not a snapshot across artifacts).",
            json!({"type": "object", "properties": {
                "project_id": id("The project"),
                "task_id": turn()
            }, "required": ["project_id"]}),
        ),
        tool(
            "update_artifact",
            "Change an artifact this role owns: its status (pending, in_progress, complete, rework), path or content (written when the turn ends; completing it tells the owners of what it unblocks). Refused for an artifact another role owns.",
            json!({"type": "object", "properties": {
                "project_id": id("The project"),
                "artifact": id("The artifact"),
                "status": {"type": "string", "enum": ["pending", "in_progress", "complete", "rework"]},
                "path": {"type": "string"},
                "content": {"description": "Any JSON kept with the artifact"},
                "task_id": turn()
            }, "required": ["project_id", "artifact"]}),
        ),
        tool(
            "claim_artifact",
            "Claim a ready artifact this role owns for a lease, so that no other replica of the role starts it (taken at once; it moves to in_progress). Refused while another holds it, naming when its lease runs out.",
            json!({"type": "object", "properties": {
                "project_id": id("The project"),
                "artifact": id("The artifact"),
                "lease_secs": {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECS},
                "task_id": turn()
            }, "required": ["project_id", "artifact", "lease_secs"]}),
        ),
        tool(
            "record_decision",
            "Append a decision to a project's log (recorded when the turn ends); a decision is never edited, only superseded by a later one that names it.",
            json!({"type": "object", "properties": {
                "project_id": id("The project"),
                "decision": {"type": "string"},
                "rationale": {"type": "string"},
                "artifacts": {"type": "array", "items": {"type": "string"}},
                "meeting": {"type": "string"},
                "supersedes": id("The id of the decision it replaces"),
                "task_id": turn()
            }, "required": ["project_id", "decision", "rationale"]}),
        ),
    ]
}

#[derive(Deserialize)]
struct ReadArgs {
    project_id: String,
    task_id: Option<String>,
}

#[derive(Deserialize)]
struct UpdateArgs {
    project_id: String,
    artifact: String,
    status: Option<ArtifactStatus>,
    path: Option<String>,
    content: Option<Value>,
    task_id: Option<String>,
}

#[derive(Deserialize)]
struct ClaimArgs {
    project_id: String,
    artifact: String,
    lease_secs: u64,
    task_id: Option<String>,
}

#[derive(Deserialize)]
struct DecisionArgs {
    project_id: String,
    decision: String,
    rationale: String,
    #[serde(default)]
    artifacts: Vec<String>,
    meeting: Option<String>,
    supersedes: Option<String>,
    task_id: Option<String>,
}

impl SeatServer {
    /// Runs blackboard tool `name`; `None`: not one.
    pub(crate) async fn board(&self, name: &str, args: Value) -> Option<Result<Value, SeatError>> {
        let op = match name {
            "read_project" => parse::<ReadArgs>(name, args).map(|a| {
                let op = BoardOp::Read {
                    project: a.project_id,
                };
                (a.task_id, op)
            }),
            "update_artifact" => parse::<UpdateArgs>(name, args).and_then(|a| {
                if a.status.is_none() && a.path.is_none() && a.content.is_none() {
                    return Err(SeatError::InvalidInput {
                        message: "update_artifact: give a status, a path or content".to_owned(),
                    });
                }
                let mut update = ArtifactUpdate::default();
                update.status = a.status;
                update.path = a.path;
                update.content = a.content;
                let op = BoardOp::Update {
                    project: a.project_id,
                    artifact: a.artifact,
                    update,
                };
                Ok((a.task_id, op))
            }),
            "claim_artifact" => parse::<ClaimArgs>(name, args).and_then(|a| {
                if a.lease_secs == 0 || a.lease_secs > MAX_LEASE_SECS {
                    return Err(SeatError::InvalidInput {
                        message: format!(
                            "lease_secs must be 1 to {MAX_LEASE_SECS}, not {}",
                            a.lease_secs
                        ),
                    });
                }
                let op = BoardOp::Claim {
                    project: a.project_id,
                    artifact: a.artifact,
                    lease: Duration::from_secs(a.lease_secs),
                };
                Ok((a.task_id, op))
            }),
            "record_decision" => parse::<DecisionArgs>(name, args).map(|a| {
                let mut decision =
                    DecisionSpec::new(a.decision, a.rationale).artifacts(a.artifacts);
                decision.meeting = a.meeting;
                decision.supersedes = a.supersedes;
                let op = BoardOp::Decide {
                    project: a.project_id,
                    decision,
                };
                (a.task_id, op)
            }),
            _ => return None,
        };
        Some(match op {
            Ok((turn_id, op)) => self.board_op(turn_id.as_deref(), op).await,
            Err(e) => Err(e),
        })
    }

    async fn board_op(&self, turn_id: Option<&str>, op: BoardOp) -> Result<Value, SeatError> {
        let (id, turn) = self.pick(turn_id, &KINDS)?;
        self.ask(&id, &turn, |reply| Command::Board { op, reply })
            .await
    }
}
