//! Meetings: the fifth coordination pattern, for decisions that need
//! several agents' input (GenBrain's "schedule_agent_meeting").
//!
//! **Built so far: the vote.** A meeting's decision is taken by a declared
//! [`VotingRule`]: a quorum (votes cast, abstentions included; by default
//! more than half the participants), a simple majority or unanimity, veto
//! roles whose rejection rejects, and what a tie does (the facilitator's
//! own vote decides, or the meeting escalates). [`VotingRule::tally`]
//! counts the [`Vote`]s — `approve`, `approve_with_conditions`, `reject`,
//! `abstain`, as in the meeting record — into a [`Tally`]. The chart
//! declares whom a role may call into a meeting it facilitates
//! (`meets`, [`OrgChart::may_meet`](crate::chart::OrgChart::may_meet)).
//!
//! Not yet: the meeting itself (the durable state machine of agenda,
//! speaking turns, sealed ballots and the stored record), its action items
//! as tasks, the MCP seat's turns and ballots, `genbrain --meeting`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use agentorg_core::meeting::{TallyResult, Vote, VotingRule};
//! use agentorg_core::Name;
//!
//! let n = |s: &str| Name::new(s).unwrap();
//! let people = ["cto", "backend", "frontend", "devops", "cso"].map(n);
//! let votes = BTreeMap::from([
//!     (n("cto"), Vote::Approve),
//!     (n("backend"), Vote::Approve),
//!     (n("frontend"), Vote::Abstain),
//!     (n("devops"), Vote::Approve),
//!     (n("cso"), Vote::ApproveWithConditions {
//!         conditions: vec!["Encryption-at-rest audit before production launch".into()],
//!     }),
//! ]);
//! let tally = VotingRule::majority().tally(&people, &n("cto"), &votes);
//! assert_eq!(tally.result, TallyResult::Approved);
//! assert_eq!((tally.approve, tally.approve_with_conditions, tally.abstain), (3, 1, 1));
//! // The CSO holds a veto, and rejects instead:
//! let mut votes = votes;
//! votes.insert(n("cso"), Vote::Reject { reason: "PII unencrypted".into() });
//! let tally = VotingRule::majority().veto([n("cso")]).tally(&people, &n("cto"), &votes);
//! assert_eq!(tally.result, TallyResult::Vetoed { by: n("cso") });
//! ```

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::name::Name;
use crate::runtime::{agent_error_from, AgentError, Context, Pattern, Registry};

mod handler;
mod ops;
mod records;
mod rules;

pub use records::{
    ActionItem, Closed, Condition, MeetingOutcome, MeetingRecord, MeetingStatus, Proposal,
    TranscriptEntry, INLINE_CONTRIBUTION,
};
pub use rules::{Majority, Tally, TallyResult, TieBreak, Vote, VotingRule};

/// The channel of each role that a meeting's messages come on:
/// `<org>.agent.<role>.meeting.<from>` (turns and ballot notices from the
/// facilitator; answers and "voted" notices from the participants).
pub const CHANNEL: &str = "meeting";

/// The task type of an action item a participant takes as a task of its
/// own when the meeting closes (its input names the meeting).
pub const ACTION_TASK_TYPE: &str = "meeting_action";

/// The most agenda items a meeting has.
pub const MAX_AGENDA: usize = 20;

/// The meeting pattern, as registered with the kernel: the handler of each
/// role's meeting channel, and the timers of turns, votes and deadlines.
/// `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Meetings;

impl Pattern for Meetings {
    fn name(&self) -> &'static str {
        "meetings"
    }

    fn register(&self, registry: &mut Registry) {
        registry.handler(handler::MeetingHandler);
        registry.timer(ops::TURN_TIMER, handler::TurnTimer);
        registry.timer(ops::END_TIMER, handler::EndTimer);
    }
}

/// The meetings' calls into a role's code.
///
/// Implemented for every `Agent` by the agent layer (implement `Agent`).
#[async_trait]
pub trait MeetingCallbacks: Send + Sync + 'static {
    /// This role's speaking turn: its contribution.
    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError>;

    /// The facilitator's proposal, after the turns (`None`: no proposal).
    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError>;

    /// This role's vote on the proposal.
    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError>;

    /// A meeting facilitated by a report of this role closed without a
    /// decision and escalated here (no quorum, or a tie the rule
    /// escalates).
    async fn on_meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError>;
}

/// A speaking turn, as its participant hears it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MeetingTurn {
    /// The meeting.
    pub meeting_id: String,
    /// Its title.
    pub title: String,
    /// The agenda item (its index).
    pub item: usize,
    /// The agenda item.
    pub agenda_item: String,
    /// The turns so far (long contributions by their beginning).
    pub transcript: Vec<TranscriptEntry>,
}

/// A ballot, as its participant gets it: the proposal to vote on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MeetingBallot {
    /// The meeting.
    pub meeting_id: String,
    /// Its title.
    pub title: String,
    /// What is proposed.
    pub proposal: Proposal,
    /// The turns that led to it.
    pub transcript: Vec<TranscriptEntry>,
}

/// A meeting to schedule (GenBrain's `schedule_agent_meeting`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MeetingSpec {
    /// Its id (a [`Name`]); default: `meeting-<ulid>`.
    pub meeting_id: Option<String>,
    /// Its title.
    pub title: String,
    /// Who takes part, in turn order: the facilitator, and roles its
    /// `meets` lists.
    pub participants: Vec<String>,
    /// The agenda, in order (at most [`MAX_AGENDA`] items).
    pub agenda: Vec<String>,
    /// Whether it ends in a vote on the facilitator's proposal.
    pub decision_required: bool,
    /// The longest it lasts: it then closes with what it has.
    pub max_duration: Duration,
    /// How long each turn (and the vote) waits for answers.
    pub turn_timeout: Duration,
    /// The rule of the vote.
    pub rule: VotingRule,
    /// The project whose decision log gets the decision.
    pub project: Option<String>,
}

impl MeetingSpec {
    /// A meeting called `title`, with no participants or agenda so far, a
    /// decision required, 15 minutes at most, a minute per turn, a simple
    /// majority.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            meeting_id: None,
            title: title.into(),
            participants: Vec::new(),
            agenda: Vec::new(),
            decision_required: true,
            max_duration: Duration::from_secs(15 * 60),
            turn_timeout: Duration::from_secs(60),
            rule: VotingRule::majority(),
            project: None,
        }
    }

    /// GenBrain's meeting request: `title`, `participants`, `agenda`,
    /// `decision_required`, `max_duration_minutes` (as
    /// `../shared/fixtures/meeting-request.json`); the rest as
    /// [`new`](Self::new).
    pub fn from_request(request: &Value) -> Result<Self, MeetingError> {
        let bad = |what: &str| MeetingError::InvalidInput {
            message: format!("meeting request: {what}"),
        };
        let strings = |key: &str| -> Result<Vec<String>, MeetingError> {
            request[key]
                .as_array()
                .ok_or_else(|| bad(&format!("`{key}` is not a list")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(&format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let title = request["title"].as_str().ok_or_else(|| bad("no `title`"))?;
        let mut spec = Self::new(title)
            .participants(strings("participants")?)
            .agenda(strings("agenda")?);
        if let Some(d) = request.get("decision_required") {
            spec.decision_required = d
                .as_bool()
                .ok_or_else(|| bad("`decision_required` is not a boolean"))?;
        }
        if let Some(m) = request.get("max_duration_minutes") {
            let m = m
                .as_u64()
                .filter(|m| *m > 0)
                .ok_or_else(|| bad("`max_duration_minutes` is not a positive integer"))?;
            spec.max_duration = Duration::from_secs(m.saturating_mul(60));
        }
        Ok(spec)
    }

    /// Its id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.meeting_id = Some(id.into());
        self
    }

    /// Who takes part, in turn order.
    pub fn participants(mut self, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.participants = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The agenda, in order.
    pub fn agenda(mut self, items: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.agenda = items.into_iter().map(Into::into).collect();
        self
    }

    /// Whether it ends in a vote.
    pub fn decision_required(mut self, required: bool) -> Self {
        self.decision_required = required;
        self
    }

    /// The longest it lasts.
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = d;
        self
    }

    /// How long each turn (and the vote) waits.
    pub fn turn_timeout(mut self, d: Duration) -> Self {
        self.turn_timeout = d;
        self
    }

    /// The rule of the vote.
    pub fn rule(mut self, rule: VotingRule) -> Self {
        self.rule = rule;
        self
    }

    /// The project whose decision log gets the decision.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }
}

/// A meeting operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeetingError {
    /// The chart does not let the facilitator call this role into a
    /// meeting (its `meets`).
    #[error("`{facilitator}` may not call `{participant}` into a meeting: the chart's `meets` of `{facilitator}` does not list it")]
    NotAllowed {
        /// The facilitator.
        facilitator: Name,
        /// The role refused.
        participant: String,
    },
    /// A meeting with this id exists already.
    #[error("meeting `{meeting}` exists already")]
    Exists {
        /// The id given.
        meeting: String,
    },
    /// No such meeting.
    #[error("no meeting `{meeting}`")]
    UnknownMeeting {
        /// The id given.
        meeting: String,
    },
    /// This role has voted in this meeting already: a vote is never
    /// changed.
    #[error("`{role}` has voted in meeting `{meeting}` already; a vote is never changed")]
    AlreadyVoted {
        /// The meeting.
        meeting: String,
        /// Who tried again.
        role: Name,
    },
    /// The meeting is not voting (not yet, or no more), or this role is
    /// not one of its participants.
    #[error("meeting `{meeting}` takes no vote from `{role}` now: it is {status}")]
    NotVoting {
        /// The meeting.
        meeting: String,
        /// Who tried.
        role: Name,
        /// Where it stands.
        status: MeetingStatus,
    },
    /// Bad input (no agenda, a participant twice, a facilitator not among
    /// the participants, …).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The meeting did not close in the time waited.
    #[error("meeting `{meeting}` did not close within {waited:?}")]
    Timeout {
        /// The meeting.
        meeting: String,
        /// How long was waited.
        waited: Duration,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl MeetingError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable() || e.is_precondition_failure(),
            Self::Timeout { .. } => true,
            _ => false,
        }
    }
}

agent_error_from!(MeetingError);

/// Who meets whom: the roles the chart lets `role` send meeting messages
/// to (see [`OrgChart::meeting_contacts`](crate::chart::OrgChart::meeting_contacts)).
pub(crate) fn serves(chart: &crate::chart::OrgChart, role: &Name) -> bool {
    !chart.is_principal(role)
        && (chart
            .roles()
            .any(|r| chart.meeting_contacts(r.name()).contains(role)))
}
