//! The seat's tools: their definitions and schemas, their arguments, and
//! how results are rendered.

use std::sync::Arc;

use agentorg_core::agent::actions::org_actions;
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

/// The field a seat adds to an org action's arguments to name the turn it
/// acts on (`None`: it names none).
pub(crate) fn turn_field(action: &str) -> Option<(&'static str, &'static str)> {
    match action {
        "read_task_tree" | "call_granted_tool" => None,
        "decide_escalation" | "pass_up_escalation" => Some((
            "escalation_id",
            "The escalation in hand (optional when only one is held)",
        )),
        "answer_peer_request" => Some((
            "request_id",
            "The request in hand (optional when only one is held)",
        )),
        "speak" | "propose" | "vote" => Some((
            "turn_id",
            "The meeting turn in hand (optional when only one is held)",
        )),
        "fail_task" => Some((
            "task_id",
            "The id of what is in hand: a task, escalation, peer request, saga step, ready artifact or meeting turn (optional when only one is held)",
        )),
        "read_project" | "update_artifact" | "claim_artifact" | "record_decision" => Some((
            "task_id",
            "The task or ready artifact in hand (optional when only one is held)",
        )),
        _ => Some(("task_id", TURN_ID)),
    }
}

/// The seat's tools, in the order listed: `wait_for_event`, the org
/// actions (one definition, in agentorg-core, with the field naming the
/// turn added), `list_granted_tools`, `seat_info`.
pub(crate) fn seat_tools() -> Vec<Tool> {
    let mut tools = vec![tool(
        "wait_for_event",
        "Wait for the next event of this seat: a task to do (`task`), the results of the subtasks you delegated (`subtasks_done`), an escalation from a report (`escalation`), a peer's request (`peer_request`), or a notice (`decision`, `peer_message`, `result`, or `org_event`: an event this role subscribes to, with its `name`, `from` and `payload`), a saga step (`saga_step`, `saga_compensation`, `saga_escalation`), or a blackboard artifact of this role that became ready (`artifact_ready`, a turn ended by complete_task) or went back to rework (`artifact_rework`, a notice), a meeting's speaking turn (`meeting_turn`, ended by speak), its proposal if you facilitate it (`meeting_proposal`, ended by propose), a ballot (`meeting_ballot`, ended by vote), or a report's meeting that escalated (`meeting_escalation`, a notice). Returns {\"event\": \"none\"} when nothing came in time. A task must then be ended with complete_task, fail_task or await_subtasks before `idle_timeout_secs` pass without a call (and within `max_turn_secs`), or it is released for retry. A notice counts as received once you make any further call; it may come again if not, so dedupe by its id.",
        json!({"type": "object", "properties": {
            "timeout_secs": {"type": "integer", "minimum": 0, "description": "How long to wait (capped by the seat)"}
        }}),
    )];
    for spec in org_actions() {
        let mut input = spec.input_schema;
        if let Some((field, description)) = turn_field(&spec.name) {
            if let Some(props) = input.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert(
                    field.to_owned(),
                    json!({"type": "string", "description": description}),
                );
            }
        }
        tools.push(Tool::new(spec.name, spec.description, schema(input)));
    }
    tools.push(tool(
        "list_granted_tools",
        "List the tools this role is granted (name, description, input schema).",
        json!({"type": "object", "properties": {}}),
    ));
    tools.push(tool(
        "seat_info",
        "This seat's role, manager, reports, peers, shortcuts, tool grants, and the turns it holds (`held`: id and kind).",
        json!({"type": "object", "properties": {}}),
    ));
    tools
}

#[derive(Deserialize)]
pub(crate) struct WaitArgs {
    pub(crate) timeout_secs: Option<u64>,
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
