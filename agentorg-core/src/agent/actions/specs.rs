//! The org actions' definitions: name, description, JSON Schema of the
//! arguments, the turns each acts in, and the chart's checks that need no
//! turn.

use serde_json::{json, Value};

use super::{ActionError, TurnKind};
use crate::chart::OrgChart;
use crate::tools::ToolSpec;

/// The longest claim of an artifact, in seconds.
pub const MAX_LEASE_SECS: u64 = 24 * 3600;

/// Every turn kind.
const ALL: &[TurnKind] = &[
    TurnKind::Task,
    TurnKind::Escalation,
    TurnKind::PeerRequest,
    TurnKind::SagaStep,
    TurnKind::Compensation,
    TurnKind::SagaEscalation,
    TurnKind::ArtifactReady,
    TurnKind::MeetingTurn,
    TurnKind::MeetingProposal,
    TurnKind::MeetingBallot,
];
const TASK: &[TurnKind] = &[TurnKind::Task];
const OUTCOME: &[TurnKind] = &[
    TurnKind::Task,
    TurnKind::SagaStep,
    TurnKind::Compensation,
    TurnKind::ArtifactReady,
];
const ESCALATIONS: &[TurnKind] = &[TurnKind::Escalation, TurnKind::SagaEscalation];
const BOARD: &[TurnKind] = &[TurnKind::Task, TurnKind::ArtifactReady];

/// One org action.
struct Action {
    name: &'static str,
    description: &'static str,
    kinds: &'static [TurnKind],
    ends: bool,
    schema: fn() -> Value,
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

const ACTIONS: &[Action] = &[
    Action {
        name: "complete_task",
        description: "Complete the task in hand with a result (the result goes to whoever delegated it), or report a saga step done (its result goes to the saga and its later steps), a compensation done, or a ready artifact's turn done (its changes are written). Ends the turn.",
        kinds: OUTCOME,
        ends: true,
        schema: || object(json!({"result": {"description": "The result (any JSON)"}}), &["result"]),
    },
    Action {
        name: "fail_task",
        description: "Fail what is in hand (a task, escalation, peer request, saga step, compensation, ready artifact, or a meeting's turn: absent). Retryable failures are retried later (a saga step whose attempts run out is in doubt and escalates); others fail it at once and the delegator sees the reason (a failed saga step compensates the steps before it). Ends the turn.",
        kinds: ALL,
        ends: true,
        schema: || {
            object(
                json!({
                    "reason": {"type": "string"},
                    "retryable": {"type": "boolean", "default": false}
                }),
                &["reason"],
            )
        },
    },
    Action {
        name: "await_subtasks",
        description: "End this turn of the task in hand and wait for the subtasks delegated in it; their results come back in a later turn of the task (`subtasks_done`).",
        kinds: TASK,
        ends: true,
        schema: || object(json!({}), &[]),
    },
    Action {
        name: "delegate",
        description: "Delegate a subtask of the task in hand to a direct report (or a role a chart shortcut allows for the task type). Refused, naming the chart's rule, when the chart does not allow it. Created when the turn ends.",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({
                    "to": string("The role to delegate to"),
                    "title": {"type": "string"},
                    "task_type": {"type": "string"},
                    "input": {"description": "The subtask's input (any JSON)"},
                    "sla_minutes": {"type": "integer", "minimum": 0},
                    "idempotency_key": {"type": "string"}
                }),
                &["to", "title"],
            )
        },
    },
    Action {
        name: "escalate",
        description: "Escalate to this role's manager, with a reason; a decision comes back later (`decision`).",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({"reason": {"type": "string"}, "details": {"description": "Any JSON"}}),
                &["reason"],
            )
        },
    },
    Action {
        name: "send_peer",
        description: "Send a message to a peer on a channel the chart declares (sent when the turn ends).",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({"to": {"type": "string"}, "message": {"description": "Any JSON"}}),
                &["to", "message"],
            )
        },
    },
    Action {
        name: "publish_event",
        description: "Publish an event this role declares in the chart (`publishes`) to every role that subscribes to it; its payload must fit the schema the chart declares for the name, if any (published when the turn ends).",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({
                    "name": string("The event's name, e.g. deploy.complete"),
                    "payload": {"description": "Any JSON"}
                }),
                &["name"],
            )
        },
    },
    Action {
        name: "decide_escalation",
        description: "Decide the escalation in hand; the decision goes back to the role that raised it. For a `saga_escalation` (a report's saga step in doubt, a failed compensation, a blocked saga) the decision is {\"decision\": \"retry\"}, {\"decision\": \"compensate\"} or {\"decision\": \"accept\", \"result\": …}. Ends the turn.",
        kinds: ESCALATIONS,
        ends: true,
        schema: || object(json!({"decision": {"description": "Any JSON"}}), &["decision"]),
    },
    Action {
        name: "pass_up_escalation",
        description: "Pass the escalation in hand up to this role's manager. Ends the turn.",
        kinds: ESCALATIONS,
        ends: true,
        schema: || object(json!({}), &[]),
    },
    Action {
        name: "answer_peer_request",
        description: "Answer the peer's request in hand. Ends the turn.",
        kinds: &[TurnKind::PeerRequest],
        ends: true,
        schema: || object(json!({"answer": {"description": "Any JSON"}}), &["answer"]),
    },
    Action {
        name: "read_task_tree",
        description: "Read the tree of a task this role was assigned or delegated (default: the task in hand), with each task's status.",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({"task_id": string("The root of the tree (default: the task in hand)")}),
                &[],
            )
        },
    },
    Action {
        name: "report_usage",
        description: "Report what working on the task in hand used (an LLM's tokens and cost).",
        kinds: TASK,
        ends: false,
        schema: || {
            object(
                json!({
                    "tokens": {"type": "integer", "minimum": 0},
                    "cost_usd": {"type": "number", "minimum": 0}
                }),
                &["tokens", "cost_usd"],
            )
        },
    },
    Action {
        name: "call_granted_tool",
        description: "Call a tool this role is granted, by its qualified name (`server.tool`).",
        kinds: ALL,
        ends: false,
        schema: || {
            object(
                json!({"name": {"type": "string"}, "arguments": {"type": "object"}}),
                &["name"],
            )
        },
    },
    Action {
        name: "read_project",
        description: "Read a blackboard project: its artifacts (owner, status, path, blocked_by, updated_at), its decision log, and `ready`: the artifacts not started whose blockers are all complete, by owner. Each artifact is as it is now (not a snapshot across artifacts).",
        kinds: BOARD,
        ends: false,
        schema: || object(json!({"project_id": string("The project")}), &["project_id"]),
    },
    Action {
        name: "update_artifact",
        description: "Change an artifact this role owns: its status (pending, in_progress, complete, rework), path or content (written when the turn ends; completing it tells the owners of what it unblocks). Refused for an artifact another role owns.",
        kinds: BOARD,
        ends: false,
        schema: || {
            object(
                json!({
                    "project_id": string("The project"),
                    "artifact": string("The artifact"),
                    "status": {"type": "string", "enum": ["pending", "in_progress", "complete", "rework"]},
                    "path": {"type": "string"},
                    "content": {"description": "Any JSON kept with the artifact"}
                }),
                &["project_id", "artifact"],
            )
        },
    },
    Action {
        name: "claim_artifact",
        description: "Claim a ready artifact this role owns for a lease, so that no other replica of the role starts it (taken at once; it moves to in_progress). Refused while another holds it, naming when its lease runs out.",
        kinds: BOARD,
        ends: false,
        schema: || {
            object(
                json!({
                    "project_id": string("The project"),
                    "artifact": string("The artifact"),
                    "lease_secs": {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECS}
                }),
                &["project_id", "artifact", "lease_secs"],
            )
        },
    },
    Action {
        name: "record_decision",
        description: "Append a decision to a project's log (recorded when the turn ends); a decision is never edited, only superseded by a later one that names it.",
        kinds: BOARD,
        ends: false,
        schema: || {
            object(
                json!({
                    "project_id": string("The project"),
                    "decision": {"type": "string"},
                    "rationale": {"type": "string"},
                    "artifacts": {"type": "array", "items": {"type": "string"}},
                    "meeting": {"type": "string"},
                    "supersedes": string("The id of the decision it replaces")
                }),
                &["project_id", "decision", "rationale"],
            )
        },
    },
    Action {
        name: "speak",
        description: "Your contribution in a meeting's speaking turn: what you say on its agenda item (ends the turn; the facilitator records it in the transcript).",
        kinds: &[TurnKind::MeetingTurn],
        ends: true,
        schema: || object(json!({"text": {"type": "string"}}), &["text"]),
    },
    Action {
        name: "propose",
        description: "The proposal of a meeting you facilitate: the decision put to the vote, why, and its action items — each for a participant (ends the turn; to propose nothing, fail_task).",
        kinds: &[TurnKind::MeetingProposal],
        ends: true,
        schema: || {
            object(
                json!({
                    "decision": {"type": "string"},
                    "rationale": {"type": "string"},
                    "action_items": {"type": "array", "items": {"type": "object", "properties": {
                        "agent": {"type": "string"}, "task": {"type": "string"}
                    }, "required": ["agent", "task"]}}
                }),
                &["decision"],
            )
        },
    },
    Action {
        name: "vote",
        description: "Your vote on a meeting's ballot: approve, approve_with_conditions (with `conditions`), reject (with a `reason`) or abstain. Sealed: nobody sees it before the tally; it ends the turn and cannot be changed.",
        kinds: &[TurnKind::MeetingBallot],
        ends: true,
        schema: || {
            object(
                json!({
                    "vote": {"type": "string", "enum": ["approve", "approve_with_conditions", "reject", "abstain"]},
                    "conditions": {"type": "array", "items": {"type": "string"}},
                    "reason": {"type": "string"}
                }),
                &["vote"],
            )
        },
    },
];

fn find(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

fn spec(a: &Action) -> ToolSpec {
    ToolSpec::new(a.name, a.description, (a.schema)())
}

/// Every org action, in the order listed.
pub fn org_actions() -> Vec<ToolSpec> {
    ACTIONS.iter().map(spec).collect()
}

/// The org actions a turn of `kind` may use.
pub fn actions_for(kind: TurnKind) -> Vec<ToolSpec> {
    ACTIONS
        .iter()
        .filter(|a| a.kinds.contains(&kind))
        .map(spec)
        .collect()
}

/// Whether `name` is an org action.
pub fn is_org_action(name: &str) -> bool {
    find(name).is_some()
}

/// The turns the org action `name` acts in (`None`: not an action).
pub fn acts_in(name: &str) -> Option<&'static [TurnKind]> {
    find(name).map(|a| a.kinds)
}

/// Whether the org action `name` ends the turn it is called in.
pub fn ends_turn(name: &str) -> bool {
    find(name).is_some_and(|a| a.ends)
}

/// The chart's checks of the org action `name` that need no turn in hand,
/// so a refusal names the rule first: delegating where the chart leads
/// nowhere, escalating without a manager, a peer channel the chart does
/// not declare, an event the role does not publish.
///
/// # Errors
/// [`ActionError::NotAllowed`] naming the rule.
pub fn precheck(chart: &OrgChart, role: &str, name: &str, args: &Value) -> Result<(), ActionError> {
    let text = |field: &str| args.get(field).and_then(Value::as_str);
    let refuse = |message: String| Err(ActionError::NotAllowed { message });
    match name {
        "delegate" => match text("to") {
            Some(to) => chart
                .delegation_route(role, to, text("task_type"))
                .map(|_| ())
                .map_err(|e| ActionError::NotAllowed {
                    message: e.to_string(),
                }),
            None => Ok(()),
        },
        "escalate" if chart.manager_of(role).is_none() => {
            refuse(format!("`{role}` has no manager to escalate to"))
        }
        "send_peer" => match text("to") {
            Some(to) if !chart.are_peers(role, to) => refuse(format!(
                "the chart declares no peer channel between `{role}` and `{to}`"
            )),
            _ => Ok(()),
        },
        "publish_event" => match text("name") {
            Some(event) if !chart.may_publish(role, event) => refuse(format!(
                "`{role}` may not publish event `{event}`: not in its `publishes` in the chart"
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
