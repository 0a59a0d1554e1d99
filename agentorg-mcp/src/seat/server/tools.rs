//! The seat's tools: their definitions and schemas, their arguments, and
//! how results are rendered.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::seat::SeatError;

pub(crate) fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

pub(crate) fn tool(name: &'static str, description: &'static str, input: Value) -> Tool {
    Tool::new(name, description, schema(input))
}

pub(crate) const TURN_ID: &str = "The id of the task in hand (optional when only one is held)";

/// The seat's tools, in the order listed.
pub(crate) fn seat_tools() -> Vec<Tool> {
    let mut tools = core_tools();
    tools.extend(super::board::board_tools());
    tools.extend(super::meeting::meeting_tools());
    tools
}

fn core_tools() -> Vec<Tool> {
    let id = |what: &str| json!({"type": "string", "description": what});
    vec![
        tool(
            "wait_for_event",
            "Wait for the next event of this seat: a task to do (`task`), the results of the subtasks you delegated (`subtasks_done`), an escalation from a report (`escalation`), a peer's request (`peer_request`), or a notice (`decision`, `peer_message`, `result`, or `org_event`: an event this role subscribes to, with its `name`, `from` and `payload`), a saga step (`saga_step`, `saga_compensation`, `saga_escalation`), or a blackboard artifact of this role that became ready (`artifact_ready`, a turn ended by complete_task) or went back to rework (`artifact_rework`, a notice), a meeting's speaking turn (`meeting_turn`, ended by speak), its proposal if you facilitate it (`meeting_proposal`, ended by propose), a ballot (`meeting_ballot`, ended by vote), or a report's meeting that escalated (`meeting_escalation`, a notice). Returns {\"event\": \"none\"} when nothing came in time. A task must then be ended with complete_task, fail_task or await_subtasks before `idle_timeout_secs` pass without a call (and within `max_turn_secs`), or it is released for retry. A notice counts as received once you make any further call; it may come again if not, so dedupe by its id.",
            json!({"type": "object", "properties": {
                "timeout_secs": {"type": "integer", "minimum": 0, "description": "How long to wait (capped by the seat)"}
            }}),
        ),
        tool(
            "complete_task",
            "Complete the task in hand with a result (the result goes to whoever delegated it), or report a saga step done (its result goes to the saga and its later steps), a compensation done, or a ready artifact's turn done (its changes are written).",
            json!({"type": "object", "properties": {
                "task_id": id(TURN_ID),
                "result": {"description": "The result (any JSON)"}
            }, "required": ["result"]}),
        ),
        tool(
            "fail_task",
            "Fail the task (or escalation, peer request, saga step or compensation) in hand. Retryable failures are retried later (a saga step whose attempts run out is in doubt and escalates); others fail the task at once and the delegator sees the reason (a failed saga step compensates the steps before it).",
            json!({"type": "object", "properties": {
                "task_id": id("The id of the task, escalation or peer request in hand (optional when only one is held)"),
                "reason": {"type": "string"},
                "retryable": {"type": "boolean", "default": false}
            }, "required": ["reason"]}),
        ),
        tool(
            "await_subtasks",
            "End this turn of the task in hand and wait for the subtasks delegated in it: their results come back as a `subtasks_done` event of wait_for_event.",
            json!({"type": "object", "properties": {"task_id": id(TURN_ID)}}),
        ),
        tool(
            "delegate",
            "Delegate a subtask of the task in hand to a direct report (or a role a chart shortcut allows for the task type). Refused when the chart does not allow it.",
            json!({"type": "object", "properties": {
                "to": {"type": "string", "description": "The role to delegate to"},
                "title": {"type": "string"},
                "task_type": {"type": "string"},
                "input": {"description": "The subtask's input (any JSON)"},
                "sla_minutes": {"type": "integer", "minimum": 0},
                "idempotency_key": {"type": "string"},
                "task_id": id(TURN_ID)
            }, "required": ["to", "title"]}),
        ),
        tool(
            "escalate",
            "Escalate to this role's manager, with a reason; a decision comes back later as a `decision` event.",
            json!({"type": "object", "properties": {
                "reason": {"type": "string"},
                "details": {"description": "Any JSON"},
                "task_id": id(TURN_ID)
            }, "required": ["reason"]}),
        ),
        tool(
            "send_peer",
            "Send a message to a peer on a channel the chart declares (sent when the turn ends).",
            json!({"type": "object", "properties": {
                "to": {"type": "string"},
                "message": {"description": "Any JSON"},
                "task_id": id(TURN_ID)
            }, "required": ["to", "message"]}),
        ),
        tool(
            "publish_event",
            "Publish an event this role declares in the chart (`publishes`) to every role that subscribes to it; its payload must fit the schema the chart declares for the name, if any (published when the turn ends).",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "description": "The event's name, e.g. deploy.complete"},
                "payload": {"description": "Any JSON"},
                "task_id": id(TURN_ID)
            }, "required": ["name"]}),
        ),
        tool(
            "decide_escalation",
            "Decide an escalation in hand; the decision goes back to the role that raised it. For a `saga_escalation` (a report's saga step in doubt, a failed compensation, a blocked saga) the decision is {\"decision\": \"retry\"}, {\"decision\": \"compensate\"} or {\"decision\": \"accept\", \"result\": …}.",
            json!({"type": "object", "properties": {
                "escalation_id": id("The escalation in hand (optional when only one is held)"),
                "decision": {"description": "Any JSON"}
            }, "required": ["decision"]}),
        ),
        tool(
            "pass_up_escalation",
            "Pass an escalation in hand up to this role's manager.",
            json!({"type": "object", "properties": {
                "escalation_id": id("The escalation in hand (optional when only one is held)")
            }}),
        ),
        tool(
            "answer_peer_request",
            "Answer a peer's request in hand.",
            json!({"type": "object", "properties": {
                "request_id": id("The request in hand (optional when only one is held)"),
                "answer": {"description": "Any JSON"}
            }, "required": ["answer"]}),
        ),
        tool(
            "read_task_tree",
            "Read the tree of a task this role was assigned or delegated (default: the task in hand), with each task's status.",
            json!({"type": "object", "properties": {
                "task_id": id("The root of the tree (default: the task in hand)")
            }}),
        ),
        tool(
            "report_usage",
            "Report what working on the task in hand used (an LLM's tokens and cost).",
            json!({"type": "object", "properties": {
                "tokens": {"type": "integer", "minimum": 0},
                "cost_usd": {"type": "number", "minimum": 0},
                "task_id": id(TURN_ID)
            }, "required": ["tokens", "cost_usd"]}),
        ),
        tool(
            "list_granted_tools",
            "List the tools this role is granted (name, description, input schema).",
            json!({"type": "object", "properties": {}}),
        ),
        tool(
            "call_granted_tool",
            "Call a tool this role is granted, by its qualified name (`server.tool`).",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "arguments": {"type": "object"}
            }, "required": ["name"]}),
        ),
        tool(
            "seat_info",
            "This seat's role, manager, reports, peers, shortcuts, tool grants, and the turns it holds (`held`: id and kind).",
            json!({"type": "object", "properties": {}}),
        ),
    ]
}

#[derive(Deserialize)]
pub(crate) struct WaitArgs {
    pub(crate) timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct CompleteArgs {
    pub(crate) task_id: Option<String>,
    pub(crate) result: Value,
}

#[derive(Deserialize)]
pub(crate) struct FailArgs {
    pub(crate) task_id: Option<String>,
    pub(crate) reason: String,
    #[serde(default)]
    pub(crate) retryable: bool,
}

#[derive(Deserialize)]
pub(crate) struct TurnArgs {
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct DelegateArgs {
    pub(crate) to: String,
    pub(crate) title: String,
    pub(crate) task_type: Option<String>,
    #[serde(default)]
    pub(crate) input: Value,
    pub(crate) sla_minutes: Option<u64>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct EscalateArgs {
    pub(crate) reason: String,
    #[serde(default)]
    pub(crate) details: Value,
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct PeerArgs {
    pub(crate) to: String,
    pub(crate) message: Value,
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct PublishArgs {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) payload: Value,
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct DecideArgs {
    pub(crate) escalation_id: Option<String>,
    pub(crate) decision: Value,
}

#[derive(Deserialize)]
pub(crate) struct PassUpArgs {
    pub(crate) escalation_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AnswerArgs {
    pub(crate) request_id: Option<String>,
    pub(crate) answer: Value,
}

#[derive(Deserialize)]
pub(crate) struct UsageArgs {
    pub(crate) tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) task_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct CallArgs {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) arguments: Option<Value>,
}

pub(crate) fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, SeatError> {
    serde_json::from_value(args).map_err(|e| SeatError::InvalidInput {
        message: format!("arguments of `{tool}`: {e}"),
    })
}

/// The MCP result of a seat tool: structured content on success; on a
/// refusal, an `is_error` result whose text is the reason and whose
/// structured content is `{"error": {"kind", "message", "retryable"}}`.
pub(crate) fn render(r: Result<Value, SeatError>) -> CallToolResult {
    match r {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => {
            let message = e.to_string();
            let mut out = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
            out.structured_content = Some(json!({"error": {
                "kind": e.kind_name(),
                "message": message,
                "retryable": e.is_retryable(),
            }}));
            out
        }
    }
}
