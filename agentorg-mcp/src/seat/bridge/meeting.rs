//! Meetings through a seat: a speaking turn (`meeting_turn`, ended by
//! `speak`), the facilitator's proposal (`meeting_proposal`, ended by
//! `propose`), a ballot (`meeting_ballot`, ended by `vote`: sealed, and
//! never changed — the turn is over once it is cast), and a meeting that
//! escalated to this role (`meeting_escalation`, a notice).

use agentorg_core::agent::actions::{ballot_id, meeting_turn_id, proposal_id};
use agentorg_core::agent::{AgentError, Context};
use agentorg_core::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use serde_json::{json, Value};

use super::{fail, End, SeatAgent, TurnKind};

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
        let id = meeting_turn_id(&turn);
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
        let id = proposal_id(&meeting.meeting_id);
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
        let id = ballot_id(&ballot.meeting_id);
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
