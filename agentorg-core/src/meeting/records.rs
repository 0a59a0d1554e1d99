//! A meeting's document: where it stands (the state machine), its
//! transcript, its proposal, who has voted (not how), and once closed its
//! outcome; and the record in the write-up's shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rules::{Tally, TallyResult, Vote, VotingRule};
use crate::name::Name;

/// The longest contribution kept whole in the transcript, in characters: a
/// longer one is kept in a document of its own (up to
/// [`MAX_CONTRIBUTION`](super::MAX_CONTRIBUTION) bytes), and the
/// transcript holds its beginning and the reference.
pub const INLINE_CONTRIBUTION: usize = 400;

/// Where a meeting stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MeetingStatus {
    /// Scheduled: the facilitator has not opened it yet.
    Scheduled,
    /// Speaking turns, one participant at a time, item by item.
    Turns,
    /// The facilitator is drafting its proposal.
    Proposing,
    /// The participants vote on the proposal (sealed ballots).
    Voting,
    /// Over: the outcome is recorded.
    Closed,
}

impl MeetingStatus {
    /// Its name in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Turns => "turns",
            Self::Proposing => "proposing",
            Self::Voting => "voting",
            Self::Closed => "closed",
        }
    }
}

impl std::fmt::Display for MeetingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One speaking turn, as the transcript keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TranscriptEntry {
    /// The agenda item (its index).
    pub item: usize,
    /// Who had the turn.
    pub role: Name,
    /// What it said (its first [`INLINE_CONTRIBUTION`] characters when
    /// longer); `None`: absent (no answer in time, or it could not answer).
    pub said: Option<String>,
    /// Where the whole contribution is kept, when it is longer than the
    /// transcript keeps: `contributions/t<turn>`, under the meeting's
    /// document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// When the turn ended.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub at: DateTime<Utc>,
}

impl TranscriptEntry {
    /// Whether the participant was absent for this turn.
    pub fn is_absent(&self) -> bool {
        self.said.is_none()
    }
}

/// An action item: a task for one participant, which it takes as a task of
/// its own when the meeting closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionItem {
    /// The participant who does it.
    pub agent: Name,
    /// What to do.
    pub task: String,
}

impl ActionItem {
    /// `agent` does `task`.
    pub fn new(agent: Name, task: impl Into<String>) -> Self {
        Self {
            agent,
            task: task.into(),
        }
    }
}

/// The facilitator's proposal, put to the vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The decision proposed.
    pub decision: String,
    /// Why (the synthesis of the turns).
    #[serde(default)]
    pub rationale: String,
    /// What follows if it is approved.
    #[serde(default)]
    pub action_items: Vec<ActionItem>,
}

impl Proposal {
    /// Proposes `decision`, with no rationale and no action items so far.
    pub fn new(decision: impl Into<String>) -> Self {
        Self {
            decision: decision.into(),
            rationale: String::new(),
            action_items: Vec::new(),
        }
    }

    /// Why.
    pub fn rationale(mut self, rationale: impl Into<String>) -> Self {
        self.rationale = rationale.into();
        self
    }

    /// Adds an action item: `agent` (a participant) does `task`.
    pub fn action_item(mut self, agent: Name, task: impl Into<String>) -> Self {
        self.action_items.push(ActionItem::new(agent, task));
        self
    }
}

/// A condition of an `approve_with_conditions` vote, and the action item
/// that satisfies it: the first of its voter's, or one made of it for the
/// voter when the proposal gave it none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Condition {
    /// Who set it.
    pub by: Name,
    /// The condition.
    pub condition: String,
    /// The index of the action item that satisfies it.
    pub action_item: usize,
}

/// Why a meeting closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Closed {
    /// Every step ran: the turns, and the vote if a decision was required.
    Completed,
    /// `max_duration` ran out: it closed with what it had.
    MaxDuration,
    /// A decision was required and the facilitator proposed none.
    NoProposal,
}

/// What a closed meeting came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MeetingOutcome {
    /// Why it closed.
    pub closed: Closed,
    /// The decision taken; `None`: no decision.
    pub decision: Option<String>,
    /// The votes cast, by participant (revealed at the tally).
    pub votes: BTreeMap<Name, Vote>,
    /// The count under the rule, when there was a vote.
    pub tally: Option<Tally>,
    /// The conditions of the votes, each linked to its action item.
    pub conditions: Vec<Condition>,
    /// The action items (the proposal's, and any made of a condition); none
    /// without a decision.
    pub action_items: Vec<ActionItem>,
    /// Whom it escalated to (no quorum, a tie the rule escalates, or a
    /// required decision never put to the vote): the facilitator's
    /// manager.
    pub escalated_to: Option<Name>,
    /// The decision's id in the project's log, when it names a project.
    pub decision_id: Option<String>,
}

/// A meeting, as stored: `agentorg/<org>/meetings/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MeetingRecord {
    /// Its id.
    pub meeting_id: String,
    /// Its title.
    pub title: String,
    /// Who runs it (and proposes).
    pub facilitator: Name,
    /// Who takes part, in turn order (the facilitator among them).
    pub participants: Vec<Name>,
    /// The agenda, in order.
    pub agenda: Vec<String>,
    /// Whether it ends in a vote on a proposal.
    pub decision_required: bool,
    /// The project whose decision log gets the decision.
    pub project: Option<String>,
    /// The rule the vote is taken by.
    pub rule: VotingRule,
    /// How long a turn (or the vote) waits for an answer, in milliseconds.
    pub turn_timeout_ms: u64,
    /// When it closes at the latest, with what it has.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub deadline: DateTime<Utc>,
    /// Where it stands.
    pub status: MeetingStatus,
    /// The turn under way (or next): an index over agenda × participants.
    pub turn: usize,
    /// When the turn (or the vote) under way times out.
    #[serde(default, serialize_with = "crate::timefmt::option")]
    pub waiting_until: Option<DateTime<Utc>>,
    /// The turns taken, in order.
    pub transcript: Vec<TranscriptEntry>,
    /// The proposal put to the vote.
    pub proposal: Option<Proposal>,
    /// Who has voted (not how: the ballots are sealed until the tally).
    pub voted: Vec<Name>,
    /// What it came to, once closed.
    pub outcome: Option<MeetingOutcome>,
    /// When it was scheduled.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it closed.
    #[serde(default, serialize_with = "crate::timefmt::option")]
    pub closed_at: Option<DateTime<Utc>>,
}

impl MeetingRecord {
    /// How many turns the meeting has: each participant once per item.
    pub fn turns(&self) -> usize {
        self.agenda.len() * self.participants.len()
    }

    /// The (item, participant) of turn `turn`, if it is one.
    pub fn turn_of(&self, turn: usize) -> Option<(usize, &Name)> {
        let n = self.participants.len();
        if n == 0 || turn >= self.turns() {
            return None;
        }
        Some((turn / n, &self.participants[turn % n]))
    }

    /// Whether it is closed.
    pub fn is_closed(&self) -> bool {
        self.status == MeetingStatus::Closed
    }

    /// The turns each participant missed, by participant (agenda items,
    /// in order).
    pub fn absences(&self) -> BTreeMap<Name, Vec<usize>> {
        let mut out: BTreeMap<Name, Vec<usize>> = BTreeMap::new();
        for e in self.transcript.iter().filter(|e| e.is_absent()) {
            out.entry(e.role.clone()).or_default().push(e.item);
        }
        out
    }

    /// The record in the shape of GenBrain's meeting record — `meeting_id`,
    /// `decision` (`null`: no decision), `votes` (`{role: approve |
    /// approve_with_conditions | reject | abstain}`), `conditions`,
    /// `action_items` (`[{agent, task}]`) — plus `title`, `status`,
    /// `closed`, the `minutes` (each turn: `item`, `agenda_item`, `agent`,
    /// `said` or `absent`), the `absences`, the `rule` applied, the
    /// `tally`, each condition's link (`condition_links`), `rationale`,
    /// `escalated_to` and `decision_id`.
    pub fn to_json(&self) -> Value {
        let empty = MeetingOutcome {
            closed: Closed::Completed,
            decision: None,
            votes: BTreeMap::new(),
            tally: None,
            conditions: Vec::new(),
            action_items: Vec::new(),
            escalated_to: None,
            decision_id: None,
        };
        let o = self.outcome.as_ref().unwrap_or(&empty);
        let votes: serde_json::Map<String, Value> = o
            .votes
            .iter()
            .map(|(r, v)| (r.to_string(), json!(v.as_str())))
            .collect();
        let minutes: Vec<Value> = self
            .transcript
            .iter()
            .map(|e| {
                let mut m = json!({
                    "item": e.item,
                    "agenda_item": self.agenda.get(e.item),
                    "agent": e.role,
                });
                match &e.said {
                    Some(s) => m["said"] = json!(s),
                    None => m["absent"] = json!(true),
                }
                if let Some(full) = &e.full {
                    m["full"] = json!(full);
                }
                m
            })
            .collect();
        let absences: serde_json::Map<String, Value> = self
            .absences()
            .into_iter()
            .map(|(r, items)| {
                let titles: Vec<Value> = items.iter().map(|i| json!(self.agenda.get(*i))).collect();
                (r.to_string(), Value::Array(titles))
            })
            .collect();
        json!({
            "meeting_id": self.meeting_id,
            "title": self.title,
            "status": self.status,
            "closed": self.outcome.as_ref().map(|o| o.closed),
            "decision": o.decision,
            "rationale": self.proposal.as_ref().map(|p| p.rationale.clone()),
            "votes": votes,
            "conditions": o.conditions.iter().map(|c| c.condition.clone()).collect::<Vec<_>>(),
            "condition_links": o.conditions,
            "action_items": o.action_items,
            "minutes": minutes,
            "absences": absences,
            "rule": self.rule,
            "tally": o.tally,
            "escalated_to": o.escalated_to,
            "decision_id": o.decision_id,
        })
    }
}

/// The outcome of a vote on `proposal` under `rule`: the decision if
/// approved, the conditions linked to action items (the first of the
/// voter's, or a new one for it), and whom it escalates to.
pub(crate) fn outcome_of(
    rec: &MeetingRecord,
    votes: BTreeMap<Name, Vote>,
    manager: Option<&Name>,
    closed: Closed,
) -> MeetingOutcome {
    let tally = rec.rule.tally(&rec.participants, &rec.facilitator, &votes);
    let approved = tally.result == TallyResult::Approved;
    let escalates = matches!(tally.result, TallyResult::NoQuorum | TallyResult::Tied);
    let mut action_items = Vec::new();
    let mut conditions = Vec::new();
    if approved {
        if let Some(p) = &rec.proposal {
            action_items.clone_from(&p.action_items);
        }
        for (by, vote) in &votes {
            let Vote::ApproveWithConditions { conditions: cs } = vote else {
                continue;
            };
            for c in cs {
                let existing = action_items.iter().position(|a| &a.agent == by);
                let action_item = existing.unwrap_or_else(|| {
                    action_items.push(ActionItem::new(by.clone(), c.clone()));
                    action_items.len() - 1
                });
                conditions.push(Condition {
                    by: by.clone(),
                    condition: c.clone(),
                    action_item,
                });
            }
        }
    }
    MeetingOutcome {
        closed,
        decision: approved
            .then(|| rec.proposal.as_ref().map(|p| p.decision.clone()))
            .flatten(),
        votes,
        tally: Some(tally),
        conditions,
        action_items,
        escalated_to: if escalates { manager.cloned() } else { None },
        decision_id: None,
    }
}
