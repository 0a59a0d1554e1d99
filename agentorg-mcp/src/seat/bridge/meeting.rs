//! Meetings through a seat: a speaking turn (`meeting_turn`, ended by
//! `speak`), the facilitator's proposal (`meeting_proposal`, ended by
//! `propose`), a ballot (`meeting_ballot`, ended by `vote`: sealed, and
//! never changed — the turn is over once it is cast), and a meeting that
//! escalated to this role (`meeting_escalation`, a notice).

use agentorg_core::agent::{AgentError, Context};
use agentorg_core::meeting::{
    MeetingBallot, MeetingError, MeetingRecord, MeetingStatus, MeetingTurn, Proposal, Vote,
};
use serde_json::{json, Value};

use super::{fail, End, SeatAgent, TurnKind};
use crate::seat::SeatError;

/// The proposal a `propose` call gives: `{decision, rationale,
/// action_items: [{agent, task}]}`.
pub(crate) fn proposal(v: &Value) -> Result<Proposal, SeatError> {
    serde_json::from_value(v.clone()).map_err(|e| SeatError::InvalidInput {
        message: format!(
            "a proposal is {{\"decision\": …, \"rationale\": …, \"action_items\": [{{\"agent\": a participant, \"task\": …}}]}}: {e}"
        ),
    })
}

/// The vote a `vote` call gives: `{"vote": "approve" | "abstain"}`,
/// `{"vote": "approve_with_conditions", "conditions": […]}` or `{"vote":
/// "reject", "reason": …}`.
pub(crate) fn vote(v: &Value) -> Result<Vote, SeatError> {
    serde_json::from_value(v.clone()).map_err(|e| SeatError::InvalidInput {
        message: format!(
            "a vote is {{\"vote\": \"approve\" | \"abstain\"}}, {{\"vote\": \"approve_with_conditions\", \"conditions\": [...]}} or {{\"vote\": \"reject\", \"reason\": ...}}: {e}"
        ),
    })
}

/// Before a meeting turn ends with `end`: `Err` refuses the end (the turn
/// goes on: a proposal or vote the meeting would refuse); `Ok(Some(why))`
/// ends the turn but tells the client it came too late (the meeting moved
/// on: its vote closed, the turn timed out) and is not counted.
pub(crate) async fn check_finish(
    cx: &Context,
    id: &str,
    kind: TurnKind,
    end: &End,
) -> Result<Option<String>, SeatError> {
    let meeting = match kind {
        TurnKind::MeetingTurn | TurnKind::MeetingProposal | TurnKind::MeetingBallot => {
            id.split('/').next().unwrap_or_default()
        }
        _ => return Ok(None),
    };
    if let End::Fail { .. } = end {
        return Ok(None);
    }
    let rec = cx.meeting(meeting).await.map_err(from_meeting)?;
    let moved = |what: &str| {
        Ok(Some(format!(
            "meeting `{meeting}` moved on ({what}, now {}): not counted",
            rec.status
        )))
    };
    match (kind, end) {
        (TurnKind::MeetingTurn, _) => {
            let n: Option<usize> = id.rsplit('/').next().and_then(|n| n.parse().ok());
            if rec.status != MeetingStatus::Turns || Some(rec.turn) != n {
                return moved("the turn timed out");
            }
        }
        (TurnKind::MeetingProposal, End::Propose(p)) => {
            p.check(&rec.participants).map_err(from_meeting)?;
            if rec.status != MeetingStatus::Proposing {
                return moved("it closed");
            }
        }
        (TurnKind::MeetingBallot, End::Vote(v)) => {
            v.check().map_err(from_meeting)?;
            if rec.status != MeetingStatus::Voting {
                return moved("its vote closed");
            }
        }
        _ => {}
    }
    Ok(None)
}

fn from_meeting(e: MeetingError) -> SeatError {
    match e {
        MeetingError::Store(e) => SeatError::from_store(e),
        MeetingError::InvalidInput { message } => SeatError::InvalidInput { message },
        e => SeatError::InvalidInput {
            message: e.to_string(),
        },
    }
}

fn transcript(entries: &[agentorg_core::meeting::TranscriptEntry]) -> Value {
    serde_json::to_value(entries).unwrap_or(Value::Null)
}

impl SeatAgent {
    /// A speaking turn: the client says its piece with `speak`.
    pub(crate) async fn meeting_turn(
        &self,
        cx: &Context,
        turn: MeetingTurn,
    ) -> Result<String, AgentError> {
        let id = format!("{}/turn/{}", turn.meeting_id, turn.transcript.len());
        let event = json!({
            "event": TurnKind::MeetingTurn.name(),
            "turn_id": id,
            "meeting_id": turn.meeting_id,
            "title": turn.title,
            "item": turn.item,
            "agenda_item": turn.agenda_item,
            "transcript": transcript(&turn.transcript),
        });
        match self.turn(cx, id, TurnKind::MeetingTurn, event).await? {
            End::Speak(said) => Ok(said),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Err(AgentError::permanent(
                "the seat ended a meeting turn wrongly",
            )),
        }
    }

    /// The facilitator's proposal: the client makes it with `propose` (or
    /// makes none with `fail_task`).
    pub(crate) async fn meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        let id = format!("{}/proposal", meeting.meeting_id);
        let event = json!({
            "event": TurnKind::MeetingProposal.name(),
            "turn_id": id,
            "meeting_id": meeting.meeting_id,
            "title": meeting.title,
            "agenda": meeting.agenda,
            "participants": meeting.participants,
            "transcript": transcript(&meeting.transcript),
        });
        match self.turn(cx, id, TurnKind::MeetingProposal, event).await? {
            End::Propose(p) => Ok(Some(p)),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Err(AgentError::permanent(
                "the seat ended a meeting proposal wrongly",
            )),
        }
    }

    /// A ballot: the client votes with `vote`, once.
    pub(crate) async fn meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        let id = format!("{}/ballot", ballot.meeting_id);
        let event = json!({
            "event": TurnKind::MeetingBallot.name(),
            "turn_id": id,
            "meeting_id": ballot.meeting_id,
            "title": ballot.title,
            "proposal": ballot.proposal,
            "transcript": transcript(&ballot.transcript),
        });
        match self.turn(cx, id, TurnKind::MeetingBallot, event).await? {
            End::Vote(v) => Ok(v),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Err(AgentError::permanent("the seat ended a ballot wrongly")),
        }
    }

    /// A meeting of a report that escalated here, as a notice.
    pub(crate) async fn meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        let id = format!("{}/escalation", meeting.meeting_id);
        let event = json!({
            "event": "meeting_escalation",
            "meeting_id": meeting.meeting_id,
            "record": meeting.to_json(),
        });
        self.notice(cx, id, event).await
    }
}
