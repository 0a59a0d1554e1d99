//! The ids of turns, as an [`ActionHost`](super::ActionHost) takes them
//! (it reads a meeting turn's meeting and number back from its id): one
//! definition for every caller that builds hosts.

use crate::blackboard::ReadyArtifact;
use crate::meeting::MeetingTurn;
use crate::saga::SagaStep;

/// A meeting's speaking turn: `<meeting>/turn/<n>`, `n` the turns taken
/// before it.
pub fn meeting_turn_id(turn: &MeetingTurn) -> String {
    format!("{}/turn/{}", turn.meeting_id, turn.transcript.len())
}

/// The facilitator's proposal of `meeting`: `<meeting>/proposal`.
pub fn proposal_id(meeting: &str) -> String {
    format!("{meeting}/proposal")
}

/// A ballot of `meeting`: `<meeting>/ballot`.
pub fn ballot_id(meeting: &str) -> String {
    format!("{meeting}/ballot")
}

/// An artifact that became ready: `<project>/<artifact>/ready/<blocker>@<revision>,…`
/// (one turn per set of blocker revisions).
pub fn artifact_ready_id(ready: &ReadyArtifact) -> String {
    let revisions: Vec<String> = ready
        .blockers
        .iter()
        .map(|b| format!("{}@{}", b.name, b.revision))
        .collect();
    format!(
        "{}/{}/ready/{}",
        ready.project,
        ready.artifact,
        revisions.join(",")
    )
}

/// A saga step's run (or its compensation's): `<idempotency key>#<run>`.
pub fn saga_turn_id(step: &SagaStep) -> String {
    format!("{}#{}", step.idempotency_key, step.run)
}
