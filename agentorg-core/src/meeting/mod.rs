//! Meetings: the fifth coordination pattern, for decisions that need
//! several agents' input (GenBrain's `schedule_agent_meeting`).
//!
//! * **A meeting is a document**, `agentorg/<org>/meetings/<id>`
//!   ([`MeetingRecord`]), and a state machine: scheduled → a speaking turn
//!   per participant per agenda item → the facilitator's proposal → the
//!   vote → the tally → the record. It is scheduled by its facilitator
//!   ([`Context::schedule_meeting`](crate::runtime::Context::schedule_meeting))
//!   or by the principal for a facilitator
//!   ([`Principal::schedule_meeting`](crate::runtime::Principal::schedule_meeting)),
//!   and every other participant must be in the facilitator's `meets` in
//!   the chart ([`MeetingError::NotAllowed`]). It moves by messages on each
//!   role's meeting channel (`<org>.agent.<role>.meeting.<from>`) and by
//!   kernel timers: every move is committed with the document, compared
//!   and set, so each turn is recorded once and each vote counted once,
//!   and a facilitator's process that dies resumes the meeting from its
//!   document when the role is hosted again.
//! * **Turns.** Each participant speaks once per agenda item, item by
//!   item, in the order the participants are given
//!   ([`Agent::on_meeting_turn`](crate::agent::Agent::on_meeting_turn), with
//!   the item and the transcript so far). A participant that does not
//!   answer within the turn timeout is recorded absent for that turn (a
//!   timer moves the meeting on; an answer after it is dropped); one whose
//!   code fails is absent at once. A contribution longer than
//!   [`INLINE_CONTRIBUTION`] characters is kept in a document of its own
//!   (up to [`MAX_CONTRIBUTION`] bytes; a longer one is cut there) and by
//!   its beginning in the transcript.
//! * **The vote.** The facilitator proposes
//!   ([`Agent::on_meeting_proposal`](crate::agent::Agent::on_meeting_proposal):
//!   a [`Proposal`], its rationale and action items); every participant,
//!   the facilitator included, votes
//!   ([`Agent::on_meeting_ballot`](crate::agent::Agent::on_meeting_ballot)
//!   or [`Context::vote`](crate::runtime::Context::vote)): `approve`,
//!   `approve_with_conditions`, `reject` or `abstain` ([`Vote`]). **Ballots
//!   are sealed**: each is written once by its voter's own process into a
//!   document of its own, and what travels to the facilitator is only that
//!   it voted; nothing reads a ballot before the tally (the meeting shows
//!   who has voted, not how), and a second vote is refused
//!   ([`MeetingError::AlreadyVoted`]). The vote closes when everyone voted
//!   or its timeout runs out. The declared [`VotingRule`] counts it: a
//!   quorum (abstentions count toward it, absences do not), a simple
//!   majority or unanimity, veto roles, and a tie broken by the
//!   facilitator's vote or escalated.
//! * **The record** ([`MeetingRecord::to_json`]): the write-up's shape
//!   (`meeting_id`, `decision`, `votes`, `conditions`, `action_items`)
//!   plus the minutes, the absences, the rule and the tally. Each condition
//!   is linked to an action item of its voter, or becomes one. Without a
//!   quorum, on a tie the rule escalates, or when a required decision was
//!   never put to the vote (no proposal, or `max_duration` first), there is
//!   no decision and the facilitator's manager hears of it
//!   ([`Agent::on_meeting_escalation`](crate::agent::Agent::on_meeting_escalation);
//!   the principal reads the record). When the meeting names a project, the
//!   decision goes into the project's decision log. **Action items become
//!   tasks**: each participant takes its own from the record, as a task of
//!   its own ([`ACTION_TASK_TYPE`], its input naming the meeting), which
//!   runs and completes like any task
//!   ([`Principal::meeting_actions`](crate::runtime::Principal::meeting_actions)).
//! * **`max_duration`** bounds the whole meeting: it then closes with what
//!   it has (the ballots cast, if it was voting; no decision otherwise).
//! * [`Principal::meetings`](crate::runtime::Principal::meetings) lists
//!   them.
//!
//! Sealing holds on the wire (the NATS permissions let a participant send
//! only to the facilitators that meet it, and no vote travels) and in the
//! library's API; the store itself is shared by the org's processes, which
//! hold one credential to it: a process that reads the store directly can
//! read a ballot document.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::meeting::{MeetingBallot, MeetingRecord, MeetingSpec, MeetingTurn, Proposal, Vote};
//! use agentorg_core::runtime::Org;
//! use async_trait::async_trait;
//! use serde_json::Value;
//!
//! struct Member;
//! #[async_trait]
//! impl Agent for Member {
//!     async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         Ok(Outcome::Complete(Value::Null)) // an action item, done
//!     }
//!     // A participant's turn: its contribution on the agenda item.
//!     async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
//!         Ok(format!("{} on {}", cx.role(), turn.agenda_item))
//!     }
//!     // The facilitator's proposal, after every turn.
//!     async fn on_meeting_proposal(&self, _cx: &Context, m: MeetingRecord) -> Result<Option<Proposal>, AgentError> {
//!         let backend = "backend".parse().map_err(|_| AgentError::permanent("bad name"))?;
//!         Ok(Some(Proposal::new("Use ClickHouse").action_item(backend, "Write the schema")))
//!     }
//!     async fn on_meeting_ballot(&self, _cx: &Context, _b: MeetingBallot) -> Result<Vote, AgentError> {
//!         Ok(Vote::Approve)
//!     }
//! }
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("cto").reports_to("founder").meets(["backend"]))
//!     .role(RoleSpec::new("backend").reports_to("cto"))
//!     .build()?;
//! let org = Org::builder(chart).agent("cto", Member).agent("backend", Member).start().await?;
//! let founder = org.principal();
//! let spec = MeetingSpec::new("Architecture review")
//!     .participants(["cto", "backend"])
//!     .agenda(["Storage for analytics events"])
//!     .turn_timeout(Duration::from_secs(30));
//! let id = founder.schedule_meeting("cto", &spec).await?;
//! let record = founder.wait_meeting(&id, Duration::from_secs(10)).await?;
//! let json = record.to_json();
//! assert_eq!(json["decision"], "Use ClickHouse");
//! assert_eq!(json["votes"]["backend"], "approve");
//! assert_eq!(json["minutes"][1]["said"], "backend on Storage for analytics events");
//! assert_eq!(json["action_items"][0]["agent"], "backend");
//! # for _ in 0..200 { if founder.meeting_actions(&id).await?[0].as_ref().is_some_and(|t| t.status.is_terminal()) { break } tokio::time::sleep(Duration::from_millis(10)).await; }
//! let action = founder.meeting_actions(&id).await?.remove(0);
//! assert_eq!(action.map(|t| t.title), Some("Write the schema".to_owned()));
//! org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The vote alone: [`VotingRule::tally`] counts [`Vote`]s into a [`Tally`].
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

mod api;
mod handler;
mod limits;
mod ops;
mod records;
mod rules;

pub use limits::{MAX_ACTION_ITEMS, MAX_CONDITIONS, MAX_CONTRIBUTION, MAX_PARTICIPANTS, MAX_TEXT};

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
    /// decision and escalated here (no quorum, a tie the rule escalates,
    /// or a required decision never put to the vote: no proposal, or
    /// `max_duration` before the vote).
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
