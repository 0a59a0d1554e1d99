//! The seat's meeting tools: `speak` in a speaking turn, `propose` as the
//! facilitator, `vote` on a ballot — each ending the turn it names.

use rmcp::model::Tool;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse, tool, SeatServer};
use crate::seat::bridge::{parse_proposal, parse_vote, End, TurnKind};
use crate::seat::SeatError;

/// The meetings' tools, listed after the others.
pub(crate) fn meeting_tools() -> Vec<Tool> {
    let turn = || json!({"type": "string", "description": "The meeting turn in hand (optional when only one is held)"});
    vec![
        tool(
            "speak",
            "Your contribution in a `meeting_turn`: what you say on its agenda item (ends the turn; the facilitator records it in the transcript).",
            json!({"type": "object", "properties": {
                "text": {"type": "string"},
                "turn_id": turn()
            }, "required": ["text"]}),
        ),
        tool(
            "propose",
            "The proposal in a `meeting_proposal` (you facilitate the meeting): the decision put to the vote, why, and its action items — each for a participant (ends the turn; to propose nothing, fail_task).",
            json!({"type": "object", "properties": {
                "decision": {"type": "string"},
                "rationale": {"type": "string"},
                "action_items": {"type": "array", "items": {"type": "object", "properties": {
                    "agent": {"type": "string"}, "task": {"type": "string"}
                }, "required": ["agent", "task"]}},
                "turn_id": turn()
            }, "required": ["decision"]}),
        ),
        tool(
            "vote",
            "Your vote in a `meeting_ballot`: approve, approve_with_conditions (with `conditions`), reject (with a `reason`) or abstain. Sealed: nobody sees it before the tally; it ends the turn and cannot be changed.",
            json!({"type": "object", "properties": {
                "vote": {"type": "string", "enum": ["approve", "approve_with_conditions", "reject", "abstain"]},
                "conditions": {"type": "array", "items": {"type": "string"}},
                "reason": {"type": "string"},
                "turn_id": turn()
            }, "required": ["vote"]}),
        ),
    ]
}

#[derive(Deserialize)]
struct SpeakArgs {
    text: String,
    turn_id: Option<String>,
}

#[derive(Deserialize)]
struct ProposeArgs {
    decision: String,
    #[serde(default)]
    rationale: String,
    #[serde(default)]
    action_items: Vec<Value>,
    turn_id: Option<String>,
}

#[derive(Deserialize)]
struct VoteArgs {
    vote: String,
    #[serde(default)]
    conditions: Vec<String>,
    reason: Option<String>,
    turn_id: Option<String>,
}

impl SeatServer {
    /// Runs meeting tool `name`; `None`: not one.
    pub(crate) async fn meeting(
        &self,
        name: &str,
        args: &Value,
    ) -> Option<Result<Value, SeatError>> {
        let (id, kind, end) = match name {
            "speak" => match parse::<SpeakArgs>(name, args.clone()) {
                Ok(a) => (a.turn_id, TurnKind::MeetingTurn, End::Speak(a.text)),
                Err(e) => return Some(Err(e)),
            },
            "propose" => match parse::<ProposeArgs>(name, args.clone()) {
                Ok(a) => {
                    let p = json!({
                        "decision": a.decision,
                        "rationale": a.rationale,
                        "action_items": a.action_items,
                    });
                    match parse_proposal(&p) {
                        Ok(p) => (a.turn_id, TurnKind::MeetingProposal, End::Propose(p)),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) => return Some(Err(e)),
            },
            "vote" => match parse::<VoteArgs>(name, args.clone()) {
                Ok(a) => {
                    let mut v = json!({ "vote": a.vote });
                    match a.vote.as_str() {
                        "approve_with_conditions" => v["conditions"] = json!(a.conditions),
                        "reject" => v["reason"] = json!(a.reason.unwrap_or_default()),
                        _ => {}
                    }
                    match parse_vote(&v) {
                        Ok(v) => (a.turn_id, TurnKind::MeetingBallot, End::Vote(v)),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) => return Some(Err(e)),
            },
            _ => return None,
        };
        Some(self.finish(id.as_deref(), &[kind], end).await)
    }
}
