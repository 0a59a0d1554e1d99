//! The deliveries other than tasks, each one turn of the model with the
//! org actions of its kind ([`TurnKind`]): events, escalations from
//! reports, peers' messages and requests, meeting turns, proposals and
//! ballots, artifacts that became ready, saga steps and compensations. Each starts a
//! conversation of its own (nothing is kept after it), with the same role
//! prompt, tools, `max_turns`, usage reporting and role budget as a task.

use agentorg_core::agent::actions::{
    artifact_ready_id, ballot_id, meeting_turn_id, proposal_id, saga_turn_id, End, TurnKind,
};
use agentorg_core::agent::{AgentError, Context};
use agentorg_core::blackboard::ReadyArtifact;
use agentorg_core::events::Event;
use agentorg_core::hierarchy::{Escalation, EscalationOutcome};
use agentorg_core::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use agentorg_core::peer::PeerMessage;
use agentorg_core::saga::SagaStep;
use serde_json::{json, Value};

use super::{LlmAgent, Tally, EVENT_WITHHELD};

/// The error a turn that ended with `fail_task` (or wrongly) fails with.
pub(super) fn failed(end: End, what: &str) -> AgentError {
    end.as_error()
        .unwrap_or_else(|| AgentError::permanent(format!("the {what} turn ended wrongly")))
}

impl LlmAgent {
    /// One turn of `kind` (`id`: the delivery's, as
    /// [`ActionHost::new`](agentorg_core::agent::actions::ActionHost::new)
    /// names it) on a new conversation opened with `message`.
    pub(super) async fn single_turn(
        &self,
        cx: &Context,
        kind: TurnKind,
        id: String,
        message: String,
    ) -> Result<End, AgentError> {
        let mut conversation = self.opening(cx, message);
        self.turn(
            cx,
            kind,
            &id,
            EVENT_WITHHELD,
            &mut conversation,
            &mut Tally::default(),
        )
        .await
    }

    /// An event's turn (what
    /// [`Agent::on_event`](agentorg_core::agent::Agent::on_event) runs): the
    /// model handles `event` and ends with `complete_task`, whose result is
    /// returned — for a caller that keeps it (a wrapping agent staging it,
    /// say).
    pub async fn event_turn(&self, cx: &Context, event: Event) -> Result<Value, AgentError> {
        let message = format!(
            "An event you subscribe to: `{}` from `{}`:\n{}\nHandle it with the tools, then end the turn with complete_task (a short note of what you did).",
            event.name, event.from, event.payload
        );
        match self
            .single_turn(cx, TurnKind::Task, event.id.to_string(), message)
            .await?
        {
            End::Complete(v) => Ok(v),
            other => Err(failed(other, "event")),
        }
    }

    pub(super) async fn escalation_turn(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        let message = format!(
            "An escalation for you to decide or pass up to your manager:\n{}\nEnd the turn with decide_escalation (your decision) or pass_up_escalation.",
            serde_json::to_value(&escalation).unwrap_or(Value::Null)
        );
        let id = escalation.escalation_id.to_string();
        match self
            .single_turn(cx, TurnKind::Escalation, id, message)
            .await?
        {
            End::Decide(decision) => Ok(EscalationOutcome::Decide(decision)),
            End::PassUp => Ok(EscalationOutcome::PassUp),
            other => Err(failed(other, "escalation")),
        }
    }

    pub(super) async fn peer_turn(
        &self,
        cx: &Context,
        message: PeerMessage,
    ) -> Result<(), AgentError> {
        let text = format!(
            "A message from your peer `{}` (id {}):\n{}\nAct on it with the tools if it needs it, then end the turn with complete_task (a short note of what you did).",
            message.from, message.id, message.payload
        );
        match self
            .single_turn(cx, TurnKind::Task, message.id.to_string(), text)
            .await?
        {
            End::Complete(_) => Ok(()),
            other => Err(failed(other, "peer message")),
        }
    }

    pub(super) async fn peer_request_turn(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        let text = format!(
            "A request from your peer `{}` (id {}):\n{}\nAnswer it with answer_peer_request (or refuse with fail_task).",
            request.from, request.id, request.payload
        );
        match self
            .single_turn(cx, TurnKind::PeerRequest, request.id.to_string(), text)
            .await?
        {
            End::Answer(answer) => Ok(answer),
            other => Err(failed(other, "peer request")),
        }
    }

    pub(super) async fn meeting_turn(
        &self,
        cx: &Context,
        turn: MeetingTurn,
    ) -> Result<String, AgentError> {
        let id = meeting_turn_id(&turn);
        let text = format!(
            "Your turn to speak in the meeting `{}` ({}), on agenda item {}: {}\nThe turns so far:\n{}\nSay your piece with speak (or fail_task to stay silent).",
            turn.meeting_id,
            turn.title,
            turn.item,
            turn.agenda_item,
            serde_json::to_value(&turn.transcript).unwrap_or(Value::Null)
        );
        match self
            .single_turn(cx, TurnKind::MeetingTurn, id, text)
            .await?
        {
            End::Speak(said) => Ok(said),
            other => Err(failed(other, "meeting")),
        }
    }

    pub(super) async fn proposal_turn(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        let id = proposal_id(&meeting.meeting_id);
        let text = format!(
            "You facilitate the meeting `{}` ({}); its turns are over. Agenda: {:?}. Participants: {}.\nThe transcript:\n{}\nMake the proposal the meeting votes on with propose (or fail_task to make none).",
            meeting.meeting_id,
            meeting.title,
            meeting.agenda,
            meeting
                .participants
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::to_value(&meeting.transcript).unwrap_or(Value::Null)
        );
        match self
            .single_turn(cx, TurnKind::MeetingProposal, id, text)
            .await?
        {
            End::Propose(proposal) => Ok(Some(proposal)),
            // No proposal: the meeting closes without a decision.
            End::Fail { .. } => Ok(None),
            other => Err(failed(other, "proposal")),
        }
    }

    pub(super) async fn ballot_turn(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        let id = ballot_id(&ballot.meeting_id);
        let text = format!(
            "Vote in the meeting `{}` ({}) on this proposal:\n{}\nThe transcript:\n{}\nCast your vote with vote (sealed: the others do not see it until the tally).",
            ballot.meeting_id,
            ballot.title,
            serde_json::to_value(&ballot.proposal).unwrap_or(Value::Null),
            serde_json::to_value(&ballot.transcript).unwrap_or(Value::Null)
        );
        match self
            .single_turn(cx, TurnKind::MeetingBallot, id, text)
            .await?
        {
            End::Vote(vote) => Ok(vote),
            other => Err(failed(other, "ballot")),
        }
    }

    pub(super) async fn artifact_turn(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        let id = artifact_ready_id(&ready);
        let text = format!(
            "Your artifact `{}` of project `{}` is ready: every artifact it is blocked by is complete:\n{}\nDo it with the tools (update_artifact), then end the turn with complete_task.",
            ready.artifact,
            ready.project,
            serde_json::to_value(&ready.blockers).unwrap_or(Value::Null)
        );
        match self
            .single_turn(cx, TurnKind::ArtifactReady, id, text)
            .await?
        {
            End::Complete(_) => Ok(()),
            other => Err(failed(other, "artifact")),
        }
    }

    /// A saga step (`kind` `SagaStep`) or its compensation: the result of
    /// `complete_task`.
    pub(super) async fn saga_turn(
        &self,
        cx: &Context,
        step: SagaStep,
        kind: TurnKind,
    ) -> Result<Value, AgentError> {
        let id = saga_turn_id(&step);
        let what = if matches!(kind, TurnKind::Compensation) {
            "Undo the step of this saga (its result is `result`)"
        } else {
            "Run the step of this saga"
        };
        let text = format!(
            "{what}:\n{}\nEnd the turn with complete_task (the step's result) or fail_task.",
            json!({
                "saga_id": step.saga_id,
                "saga": step.saga,
                "step": step.step,
                "input": step.input,
                "results": step.results,
                "result": step.result,
                "idempotency_key": step.idempotency_key,
            })
        );
        match self.single_turn(cx, kind, id, text).await? {
            End::Complete(result) => Ok(result),
            other => Err(failed(other, "saga step")),
        }
    }
}
