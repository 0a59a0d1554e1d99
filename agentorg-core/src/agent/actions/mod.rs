//! The org's actions as tools: one definition of what a role may do in a
//! turn — delegate, escalate, send to a peer, publish an event, read its
//! task tree, work on a blackboard, speak, propose and vote in a meeting,
//! call a granted tool, and end the turn (complete, fail, await its
//! subtasks, decide or pass up an escalation, answer a peer) — for any
//! caller that drives a role by tool calls: an LLM (`agentorg-llm`'s
//! agent) or an MCP client seated in the org (`agentorg-mcp`'s seat).
//!
//! [`org_actions`] lists them as [`ToolSpec`]s (name, description, JSON
//! Schema); [`actions_for`] those a [`TurnKind`] may use. An
//! [`ActionHost`] runs them with the turn's [`Context`]: each call's
//! arguments are parsed and checked, the chart's rules enforced (a refusal,
//! [`ActionError::NotAllowed`], names the rule), and the work done through
//! the context — staged with the turn's outcome like any agent's, except
//! what acts at once: `claim_artifact`, `report_usage` and
//! `call_granted_tool`.
//! The actions that end a turn do not end it themselves: the host records
//! the chosen [`End`] for its caller to return from the handler.
//!
//! ```
//! use agentorg_core::agent::actions::{actions_for, ends_turn, TurnKind};
//!
//! let names: Vec<String> = actions_for(TurnKind::Task).into_iter().map(|t| t.name).collect();
//! assert!(names.contains(&"delegate".to_string()));
//! assert!(names.contains(&"await_subtasks".to_string()));
//! assert!(!names.contains(&"vote".to_string()));
//! assert!(ends_turn("complete_task") && !ends_turn("delegate"));
//! ```

use serde_json::Value;

use crate::blackboard::BoardError;
use crate::events::EventError;
use crate::hierarchy::DelegateError;
use crate::meeting::{MeetingError, Proposal, Vote};
use crate::peer::PeerError;
use crate::runtime::{AgentError, Context};
use crate::store::StoreError;
use crate::tools::{ToolError, ToolSpec};

mod ids;
mod run;
mod specs;

pub use ids::{artifact_ready_id, ballot_id, meeting_turn_id, proposal_id, saga_turn_id};

pub use run::{check_args, saga_decision};
pub use specs::{
    actions_for, acts_in, ends_turn, is_org_action, org_actions, precheck, MAX_LEASE_SECS,
};

/// How many delegations one turn may make.
pub const MAX_DELEGATIONS_PER_TURN: usize = 100;

/// The most tokens one `report_usage` may report.
pub const MAX_USAGE_TOKENS: u64 = 1_000_000_000;

/// What a turn is for: which actions may end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TurnKind {
    /// A task (or its subtasks' results): `complete_task`, `fail_task`,
    /// `await_subtasks`.
    Task,
    /// An escalation from a report: `decide_escalation`, `pass_up_escalation`.
    Escalation,
    /// A peer's request: `answer_peer_request`, `fail_task`.
    PeerRequest,
    /// A saga step: `complete_task` (its result), `fail_task`.
    SagaStep,
    /// A saga step's compensation: `complete_task`, `fail_task`.
    Compensation,
    /// A saga of a report waiting for a decision: `decide_escalation`
    /// (`{"decision": "retry" | "compensate"}` or `{"decision": "accept",
    /// "result": …}`), `pass_up_escalation`.
    SagaEscalation,
    /// An artifact of this role that became ready on a blackboard:
    /// `complete_task`, `fail_task`.
    ArtifactReady,
    /// A speaking turn in a meeting: `speak`, `fail_task` (absent).
    MeetingTurn,
    /// The facilitator's proposal: `propose`, `fail_task` (none).
    MeetingProposal,
    /// A ballot: `vote`, `fail_task` (absent).
    MeetingBallot,
}

impl TurnKind {
    /// Its name (`task`, `escalation`, `peer_request`, `saga_step`,
    /// `saga_compensation`, `saga_escalation`, `artifact_ready`,
    /// `meeting_turn`, `meeting_proposal`, `meeting_ballot`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Escalation => "escalation",
            Self::PeerRequest => "peer_request",
            Self::SagaStep => "saga_step",
            Self::Compensation => "saga_compensation",
            Self::SagaEscalation => "saga_escalation",
            Self::ArtifactReady => "artifact_ready",
            Self::MeetingTurn => "meeting_turn",
            Self::MeetingProposal => "meeting_proposal",
            Self::MeetingBallot => "meeting_ballot",
        }
    }

    /// Its noun, for messages (`task`, `peer request`, `ballot`, …).
    pub fn noun(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Escalation => "escalation",
            Self::PeerRequest => "peer request",
            Self::SagaStep => "saga step",
            Self::Compensation => "compensation",
            Self::SagaEscalation => "saga escalation",
            Self::ArtifactReady => "ready artifact",
            Self::MeetingTurn => "meeting turn",
            Self::MeetingProposal => "meeting proposal",
            Self::MeetingBallot => "ballot",
        }
    }
}

/// How a turn was ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum End {
    /// `complete_task`: the result.
    Complete(Value),
    /// `await_subtasks`.
    AwaitSubtasks,
    /// `fail_task`.
    Fail {
        /// Why.
        message: String,
        /// Whether to retry later.
        retryable: bool,
    },
    /// `decide_escalation`: the decision.
    Decide(Value),
    /// `pass_up_escalation`.
    PassUp,
    /// `answer_peer_request`: the answer.
    Answer(Value),
    /// `speak`: what was said.
    Speak(String),
    /// `propose`: the proposal, checked against the meeting.
    Propose(Proposal),
    /// `vote`: the vote, checked.
    Vote(Vote),
}

impl End {
    /// The action that ends a turn this way.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Complete(_) => "complete_task",
            Self::AwaitSubtasks => "await_subtasks",
            Self::Fail { .. } => "fail_task",
            Self::Decide(_) => "decide_escalation",
            Self::PassUp => "pass_up_escalation",
            Self::Answer(_) => "answer_peer_request",
            Self::Speak(_) => "speak",
            Self::Propose(_) => "propose",
            Self::Vote(_) => "vote",
        }
    }

    /// A `fail_task` end as the handler's error (transient if retryable);
    /// `None` for any other end.
    pub fn as_error(&self) -> Option<AgentError> {
        match self {
            Self::Fail {
                message,
                retryable: true,
            } => Some(AgentError::transient(message.clone())),
            Self::Fail { message, .. } => Some(AgentError::permanent(message.clone())),
            _ => None,
        }
    }
}

/// An org action refused or failed. Its message is what the caller (an
/// LLM, an MCP client) reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The chart does not let this role do it (delegate there, use that peer
    /// channel, publish that event, change that artifact, read that tree);
    /// the message names the rule.
    #[error("not allowed: {message}")]
    NotAllowed {
        /// The rule that refused it.
        message: String,
    },
    /// The arguments are unusable, the action is not one of this turn's, or
    /// it cannot end this turn.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// No such action.
    #[error("unknown action `{name}`")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The turn has already been ended: nothing more can be done in it.
    #[error("the turn has ended (with {action})")]
    Ended {
        /// The action that ended it.
        action: &'static str,
    },
    /// The turn ended, but too late to count: the meeting moved on (its
    /// turn timed out, its vote closed).
    #[error("too late: {message}")]
    TooLate {
        /// What moved on.
        message: String,
    },
    /// A granted tool failed (its own failure, a timeout, …).
    #[error(transparent)]
    Tool(ToolError),
    /// The org's backends failed. Retryable.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
}

impl ActionError {
    /// A short name of the kind: `not_allowed`, `invalid_input`, `unknown`,
    /// `ended`, `too_late`, `tool_failed`, `unavailable`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } => "not_allowed",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Unknown { .. } => "unknown",
            Self::Ended { .. } => "ended",
            Self::TooLate { .. } => "too_late",
            Self::Tool(_) => "tool_failed",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Tool(e) => e.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }

    /// A delegation's refusal or failure.
    pub fn from_delegate(e: DelegateError) -> Self {
        match e {
            DelegateError::NotAllowed(r) => Self::NotAllowed {
                message: r.to_string(),
            },
            DelegateError::InvalidInput { message } => Self::InvalidInput { message },
            other => Self::Unavailable {
                message: other.to_string(),
            },
        }
    }

    /// A peer message's refusal or failure.
    pub fn from_peer(e: PeerError) -> Self {
        match e {
            e @ PeerError::NotDeclared { .. } => Self::NotAllowed {
                message: e.to_string(),
            },
            e @ PeerError::Decode { .. } => Self::InvalidInput {
                message: e.to_string(),
            },
            other => Self::Unavailable {
                message: other.to_string(),
            },
        }
    }

    /// An event's refusal or failure.
    pub fn from_event(e: EventError) -> Self {
        match e {
            e @ EventError::NotDeclared { .. } => Self::NotAllowed {
                message: e.to_string(),
            },
            e @ (EventError::InvalidName { .. }
            | EventError::Schema { .. }
            | EventError::Encode { .. }) => Self::InvalidInput {
                message: e.to_string(),
            },
            e if !e.is_retryable() => Self::InvalidInput {
                message: e.to_string(),
            },
            other => Self::Unavailable {
                message: other.to_string(),
            },
        }
    }

    /// A store failure (retryable).
    pub fn from_store(e: StoreError) -> Self {
        Self::Unavailable {
            message: e.to_string(),
        }
    }

    /// A granted tool's refusal or failure.
    pub fn from_tool(e: ToolError) -> Self {
        match e {
            e @ ToolError::Forbidden { .. } => Self::NotAllowed {
                message: e.to_string(),
            },
            other => Self::Tool(other),
        }
    }

    /// A blackboard refusal or failure: the chart's rule (`NotAllowed`);
    /// what may succeed later (a claim held, blockers not complete yet:
    /// `Unavailable`); bad input (a blocker changed under the turn's work
    /// too: this turn cannot do it, and the change's notice offers it
    /// again); or the store.
    pub fn from_board(e: BoardError) -> Self {
        match e {
            e @ BoardError::NotOwner { .. } => Self::NotAllowed {
                message: e.to_string(),
            },
            BoardError::Store(e) => Self::from_store(e),
            e @ BoardError::Claimed { .. } => Self::Unavailable {
                message: e.to_string(),
            },
            // Blockers not complete yet (not: complete already).
            e if matches!(&e, BoardError::NotReady { waiting_on, .. } if !waiting_on.is_empty()) => {
                Self::Unavailable {
                    message: e.to_string(),
                }
            }
            e => Self::InvalidInput {
                message: e.to_string(),
            },
        }
    }

    /// A meeting's refusal or failure.
    pub fn from_meeting(e: MeetingError) -> Self {
        match e {
            MeetingError::Store(e) => Self::from_store(e),
            MeetingError::InvalidInput { message } => Self::InvalidInput { message },
            e => Self::InvalidInput {
                message: e.to_string(),
            },
        }
    }
}

/// Runs the org actions of one turn with its [`Context`]: built per
/// delivery (it borrows the handler's context), called once per tool call,
/// then asked how the turn ended.
///
/// ```
/// # async fn example(cx: &agentorg_core::agent::Context) {
/// use agentorg_core::agent::actions::{ActionHost, End, TurnKind};
/// use serde_json::json;
///
/// let mut host = ActionHost::new(cx, TurnKind::Task, "t1");
/// // A model's tool calls, one by one:
/// match host.call("delegate", json!({"to": "cso", "title": "audit"})).await {
///     Ok(result) => { /* back to the model */ }
///     Err(refused) => { /* back to the model too: it names the rule */ }
/// }
/// host.call("complete_task", json!({"result": {"ok": true}})).await.ok();
/// assert!(matches!(host.end(), Some(End::Complete(_))));
/// # }
/// ```
#[derive(Debug)]
pub struct ActionHost<'a> {
    cx: &'a Context,
    kind: TurnKind,
    id: String,
    delegated: usize,
    end: Option<End>,
}

impl<'a> ActionHost<'a> {
    /// The host of a turn of `kind` (`id`: the delivery's — a task id, an
    /// escalation id, a meeting turn's `meeting/turn/n`, `meeting/proposal`
    /// or `meeting/ballot`) with the handler's `cx`.
    pub fn new(cx: &'a Context, kind: TurnKind, id: impl Into<String>) -> Self {
        Self {
            cx,
            kind,
            id: id.into(),
            delegated: 0,
            end: None,
        }
    }

    /// The turn's kind.
    pub fn kind(&self) -> TurnKind {
        self.kind
    }

    /// The turn's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actions this turn may use ([`actions_for`] its kind).
    pub fn tools(&self) -> Vec<ToolSpec> {
        actions_for(self.kind)
    }

    /// How many delegations this turn made.
    pub fn delegated(&self) -> usize {
        self.delegated
    }

    /// How the turn was ended, once it was.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// How the turn was ended, taken.
    pub fn into_end(self) -> Option<End> {
        self.end
    }

    /// Runs the action `name` with `args` (a JSON object; unknown fields
    /// are ignored). `Ok`: what it did, for the caller to read; an action
    /// that ends the turn records its [`End`] (see [`end`](Self::end)).
    ///
    /// # Errors
    /// [`ActionError`]: `Unknown`, `InvalidInput` (bad arguments, not an
    /// action of this turn, cannot end it), `NotAllowed` (the chart's rule),
    /// `Ended` (the turn is over), `TooLate` (ended, but not counted),
    /// `Tool`, `Unavailable` (retryable).
    pub async fn call(&mut self, name: &str, args: Value) -> Result<Value, ActionError> {
        if let Some(end) = &self.end {
            return Err(ActionError::Ended {
                action: end.action(),
            });
        }
        let Some(kinds) = acts_in(name) else {
            return Err(ActionError::Unknown { name: name.into() });
        };
        self.dispatch(name, kinds, args).await
    }
}
