//! The [`Agent`] trait: the application's code, one delivery at a time — the
//! layer above the patterns, with a method per pattern, so a role's code
//! implements one trait.
//!
//! The patterns call an agent for each task delegated to its role
//! ([`Agent::on_task`]), when every subtask it delegated for a task has
//! finished ([`Agent::on_subtasks_done`]), for results of tasks it delegated
//! outside any task ([`Agent::on_result`]), and for other messages addressed
//! to it ([`Agent::on_message`]); and for messages on its declared peer
//! channels ([`Agent::on_peer`], [`Agent::on_peer_request`]). Each call gets
//! a [`Context`] with the role's identity, the chart, and the operations of
//! the patterns.
//!
//! This layer also hosts agents: [`Org::builder`] registers the default
//! patterns and [`OrgBuilder::agent`] hosts an agent for a role.
//!
//! An agent returns `Ok` (the delivery is acknowledged and its staged effects
//! are committed together with the completion record, exactly once) or an
//! [`AgentError`]: a *transient* one is retried with backoff and
//! dead-lettered when the attempts run out; a *permanent* one fails the task
//! at once and the delegator sees why.
//!
//! ```
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use async_trait::async_trait;
//! use serde_json::json;
//!
//! /// The CTO splits a feature into two subtasks and completes when both are done.
//! struct Cto;
//!
//! #[async_trait]
//! impl Agent for Cto {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.delegate("backend", TaskSpec::new(format!("API for: {}", task.title)).sla_minutes(120)).await?;
//!         cx.delegate("frontend", TaskSpec::new(format!("UI for: {}", task.title))).await?;
//!         Ok(Outcome::AwaitSubtasks)
//!     }
//! }
//!
//! /// A leaf agent does the work itself.
//! struct Backend;
//!
//! #[async_trait]
//! impl Agent for Backend {
//!     async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         if task.input.get("spec").is_none() {
//!             return Err(AgentError::permanent("no API spec given"));
//!         }
//!         Ok(Outcome::Complete(json!({"endpoints": ["/api/v2/analytics"]})))
//!     }
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::blackboard::{ReadyArtifact, ReworkArtifact};
use crate::envelope::Envelope;
use crate::events::Event;
use crate::hierarchy::{Decision, Escalation, EscalationOutcome};
use crate::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use crate::peer::PeerMessage;
use crate::saga::{SagaDecision, SagaEscalation, SagaStep};

pub mod actions;
mod hosting;

pub use crate::hierarchy::{
    default_roll_up, DelegateError, Delegation, Outcome, SubtaskResult, Task, TaskSpec,
};
pub use crate::runtime::{AgentError, BoxError, Context, ErrorKind, Org, OrgBuilder};
pub use hosting::default_patterns;

/// The application's code for one role. See the [module docs](self).
///
/// Object-safe; hosted as `Arc<dyn Agent>`. Handlers may run concurrently
/// (per-role concurrency is an option of the runtime). Every method but
/// `on_task` has a default.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// A task delegated to this role.
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError>;

    /// Every subtask delegated for `task` has finished. The default completes
    /// the task with the subtasks' results, or fails it if any subtask did not
    /// complete.
    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let _ = (cx, task);
        default_roll_up(results)
    }

    /// The result of a task this role delegated outside any task of its own.
    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        let _ = (cx, result);
        Ok(())
    }

    /// An escalation from a report (or passed up through one). The default
    /// passes it up to this role's manager; the principal sees what reaches
    /// the top and can answer it.
    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        let _ = (cx, escalation);
        Ok(EscalationOutcome::PassUp)
    }

    /// A decision on an escalation this role raised. The default accepts it.
    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        let _ = (cx, decision);
        Ok(())
    }

    /// A message from a declared peer. Exactly once, like a task; the default
    /// accepts and ignores it.
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let _ = (cx, message);
        Ok(())
    }

    /// A request from a declared peer, answered with the returned value (at
    /// most once: a request is not retried). The default refuses.
    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        let _ = cx;
        Err(AgentError::permanent(format!(
            "`{}` does not answer peer requests",
            request.to
        )))
    }

    /// Any other message addressed to this role. The default accepts and
    /// ignores it.
    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError> {
        let _ = (cx, message);
        Ok(())
    }

    /// An event this role subscribes to in the chart. Once per subscriber,
    /// claimed, retried and dead-lettered like a task; the default accepts
    /// and ignores it.
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        let _ = (cx, event);
        Ok(())
    }

    /// A step of a chain or saga this role runs (see [`crate::saga`]): its
    /// result goes to the saga's document and to the later steps. A
    /// permanent error fails the step and the saga compensates; a transient
    /// one is retried, and when the attempts run out the step is in doubt
    /// and escalates. Default: refused (permanent).
    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        let _ = cx;
        Err(AgentError::permanent(format!(
            "no code for saga step `{}`",
            step.step
        )))
    }

    /// Undoes a step of this role (`step.result` is what it returned):
    /// retried on failure, then dead-lettered and escalated. Use
    /// `step.idempotency_key` to make it safe to repeat. Default: refused
    /// (the saga escalates).
    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        let _ = cx;
        Err(AgentError::permanent(format!(
            "no compensation for saga step `{}`",
            step.step
        )))
    }

    /// An artifact this role owns on a blackboard became ready: every
    /// artifact it is blocked by is complete (see [`crate::blackboard`]).
    /// What it stages is committed once per set of blocker revisions (when
    /// two blockers complete at once it may run twice; the second commit
    /// finds the first). Default: nothing.
    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        let _ = (cx, ready);
        Ok(())
    }

    /// An artifact this role owns went to rework: a blocker changed after
    /// it started (on a blackboard, see [`crate::blackboard`]). The
    /// library has already moved it to `rework` in this call (so it cannot
    /// be changed again in it). Once its blockers are complete,
    /// [`on_artifact_ready`](Self::on_artifact_ready) runs for it again, to
    /// redo it (or redo it from another call: claim it, or move it to
    /// `in_progress`). Default: nothing more.
    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        let _ = (cx, rework);
        Ok(())
    }

    /// This role's speaking turn in a meeting (see [`crate::meeting`]):
    /// its contribution on `turn.agenda_item`, given the transcript so far.
    /// A permanent error is an absence for the turn; a transient one is
    /// retried while the turn lasts. Default: refused (absent).
    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        let _ = (cx, turn);
        Err(AgentError::permanent("no code for meeting turns"))
    }

    /// As the facilitator of `meeting`, after every turn: the proposal put
    /// to the vote (`None`: none, and the meeting closes without a
    /// decision). Default: `None`.
    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        let _ = (cx, meeting);
        Ok(None)
    }

    /// This role's vote on a meeting's proposal: sealed until the tally,
    /// and never changed. A permanent error is an absence. Default:
    /// abstain.
    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        let _ = (cx, ballot);
        Ok(Vote::Abstain)
    }

    /// A meeting facilitated by a report of this role closed without a
    /// decision and escalated here (no quorum, a tie the rule escalates,
    /// or a required decision never put to the vote). Default: nothing.
    async fn on_meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        let _ = (cx, meeting);
        Ok(())
    }

    /// A saga step of a role under this one waits for a decision (in doubt,
    /// a compensation failed, or compensation stopped at an irreversible
    /// step): `Some` decides, `None` passes it up. Default: `None`.
    async fn on_saga_escalation(
        &self,
        cx: &Context,
        escalation: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError> {
        let _ = (cx, escalation);
        Ok(None)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: Agent + ?Sized> Agent for Arc<T> {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        (**self).on_task(cx, task).await
    }
    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        (**self).on_subtasks_done(cx, task, results).await
    }
    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        (**self).on_result(cx, result).await
    }
    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        (**self).on_escalation(cx, escalation).await
    }
    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        (**self).on_decision(cx, decision).await
    }
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        (**self).on_peer(cx, message).await
    }
    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        (**self).on_peer_request(cx, request).await
    }
    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError> {
        (**self).on_message(cx, message).await
    }
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        (**self).on_event(cx, event).await
    }
    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        (**self).on_saga_step(cx, step).await
    }
    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        (**self).on_compensate(cx, step).await
    }
    async fn on_saga_escalation(
        &self,
        cx: &Context,
        escalation: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError> {
        (**self).on_saga_escalation(cx, escalation).await
    }
    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        (**self).on_artifact_ready(cx, ready).await
    }
    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        (**self).on_artifact_rework(cx, rework).await
    }

    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        (**self).on_meeting_turn(cx, turn).await
    }

    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        (**self).on_meeting_proposal(cx, meeting).await
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        (**self).on_meeting_ballot(cx, ballot).await
    }

    async fn on_meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        (**self).on_meeting_escalation(cx, meeting).await
    }
}

/// An agent made of one async function over the task, for leaf roles that
/// neither delegate nor need the context.
///
/// ```
/// use agentorg_core::agent::{agent_fn, Outcome};
/// use serde_json::json;
///
/// let writer = agent_fn(|task| async move {
///     Ok(Outcome::Complete(json!({"post": format!("Announcing: {}", task.title)})))
/// });
/// # let _ = writer;
/// ```
pub fn agent_fn<F, Fut>(f: F) -> FnAgent<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
{
    FnAgent(f)
}

/// The agent made by [`agent_fn`].
pub struct FnAgent<F>(F);

impl<F> fmt::Debug for FnAgent<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnAgent")
    }
}

#[async_trait]
impl<F, Fut> Agent for FnAgent<F>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
{
    async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        (self.0)(task).await
    }
}

/// An agent made of one async function over the context and the task, for
/// roles that delegate or use the context but need no other method. The
/// function returns a boxed future borrowing the context:
///
/// ```
/// use agentorg_core::agent::{agent_fn_cx, Outcome, TaskSpec};
///
/// let cto = agent_fn_cx(|cx, task| {
///     Box::pin(async move {
///         cx.delegate("backend", TaskSpec::new(format!("API for {}", task.title))).await?;
///         Ok(Outcome::AwaitSubtasks)
///     })
/// });
/// # let _ = cto;
/// ```
pub fn agent_fn_cx<F>(f: F) -> FnCxAgent<F>
where
    F: for<'a> Fn(&'a Context, Task) -> BoxFuture<'a, Result<Outcome, AgentError>>
        + Send
        + Sync
        + 'static,
{
    FnCxAgent(f)
}

/// The agent made by [`agent_fn_cx`].
pub struct FnCxAgent<F>(F);

impl<F> fmt::Debug for FnCxAgent<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCxAgent")
    }
}

#[async_trait]
impl<F> Agent for FnCxAgent<F>
where
    F: for<'a> Fn(&'a Context, Task) -> BoxFuture<'a, Result<Outcome, AgentError>>
        + Send
        + Sync
        + 'static,
{
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        (self.0)(cx, task).await
    }
}
