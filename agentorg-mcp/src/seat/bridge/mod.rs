//! The runtime side of a seat: [`SeatAgent`] hands each delivery to the MCP
//! side as an *offer* and serves the client's commands with the handler's
//! [`Context`] until the client ends the turn (or is too slow).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use agentorg_core::agent::actions::{saga_decision, ActionError, ActionHost};
use agentorg_core::agent::{Agent, AgentError, Context, Outcome, SubtaskResult, Task};
use agentorg_core::async_trait;
use agentorg_core::blackboard::{ReadyArtifact, ReworkArtifact};
use agentorg_core::events::Event;
use agentorg_core::hierarchy::{Decision, Escalation, EscalationOutcome};
use agentorg_core::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use agentorg_core::peer::PeerMessage;
use agentorg_core::saga::{SagaDecision, SagaEscalation, SagaStep};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::SeatError;

mod board;
mod meeting;
mod turns;
pub(crate) use turns::*;

/// How many delegations one turn may stage.
pub use agentorg_core::agent::actions::MAX_DELEGATIONS_PER_TURN;

/// The [`Agent`] of a seat: host it for the seat's role
/// (`Org::builder(chart).agent(role, seat.agent())`). See the
/// [module docs](super) for the protocol and the timeouts.
///
/// Every delivery becomes an event of `wait_for_event`:
///
/// * a task (`on_task`) or its subtasks' results (`on_subtasks_done`) opens a
///   *task turn*, ended by `complete_task`, `fail_task` or `await_subtasks`;
/// * an escalation from a report (`on_escalation`) opens a turn ended by
///   `decide_escalation` or `pass_up_escalation`;
/// * a peer's request (`on_peer_request`) opens a turn ended by
///   `answer_peer_request` (or `fail_task`);
/// * a saga step (`on_saga_step`, event `saga_step`) or a compensation
///   (`on_compensate`, event `saga_compensation`) opens a turn whose
///   outcome the client reports with `complete_task` (the step's result) or
///   `fail_task` (permanent: the saga compensates; retryable: retried, then
///   in doubt);
/// * a report's saga waiting for a decision (`on_saga_escalation`, event
///   `saga_escalation`) opens a turn ended by `decide_escalation` (`{"decision":
///   "retry" | "compensate"}` or `{"decision": "accept", "result": …}`) or
///   `pass_up_escalation`;
/// * an artifact of this role that became ready on a blackboard
///   (`on_artifact_ready`, event `artifact_ready`) opens a turn in which the
///   client changes it (`update_artifact`, `claim_artifact`), ended by
///   `complete_task` (or `fail_task`); a rework (`on_artifact_rework`) is
///   a notice, `artifact_rework`;
/// * a meeting's speaking turn (`on_meeting_turn`, event `meeting_turn`)
///   opens a turn ended by `speak`; the facilitator's proposal
///   (`on_meeting_proposal`, event `meeting_proposal`) one ended by
///   `propose`; a ballot (`on_meeting_ballot`, event `meeting_ballot`) one
///   ended by `vote` (sealed; the turn is over once it is cast, so a second
///   vote is refused); `fail_task` in any of them is an absence (no
///   proposal); a meeting of a report that escalated here is a notice,
///   `meeting_escalation`;
/// * decisions, peer messages, results of tasks delegated outside a task
///   and the events the role subscribes to (`org_event`) are *notices*: the
///   handler returns once a client has taken them.
#[derive(Clone)]
pub struct SeatAgent {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for SeatAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeatAgent")
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

fn task_json(task: &Task) -> Value {
    serde_json::to_value(task).unwrap_or(Value::Null)
}

impl SeatAgent {
    /// Offers `event` and waits for a client to take it (within the pickup
    /// timeout). Returns the offer's guard (which withdraws it when
    /// dropped) and the receiver of the client's commands (none for a
    /// notice).
    async fn offer(
        &self,
        cx: &Context,
        id: String,
        kind: TurnKind,
        event: Value,
        turn: bool,
    ) -> Result<(OfferGuard<'_>, Option<mpsc::Receiver<Command>>), AgentError> {
        let shared = &*self.shared;
        if cx.role() != &shared.role {
            return Err(AgentError::permanent(format!(
                "the seat of `{}` is hosted for role `{}`; host each role's own seat",
                shared.role,
                cx.role()
            )));
        }
        let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
        let (commands, rx) = if turn {
            let (tx, rx) = mpsc::channel(32);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let what = event["event"].as_str().unwrap_or("event").to_owned();
        let (state, mut watch) = watch::channel(OfferState::Pending);
        let offer = Arc::new(Offer {
            serial,
            id,
            kind,
            event,
            commands,
            state,
        });
        if let Err(n) = shared.push_offer(Arc::clone(&offer)) {
            return Err(AgentError::transient(format!(
                "seat `{}` already has {n} offers waiting for a client (its max_offers); refused for retry",
                shared.role
            )));
        }
        let guard = OfferGuard { shared, offer };
        let pickup = shared.options.pickup_timeout;
        let state = match tokio::time::timeout(
            pickup,
            watch.wait_for(|s| *s != OfferState::Pending),
        )
        .await
        {
            Ok(Ok(s)) => *s,
            Ok(Err(_)) => OfferState::Withdrawn,
            // A client may take it right now: only one of the two wins.
            Err(_) if guard.offer.advance(OfferState::Pending, OfferState::Withdrawn) => {
                return Err(AgentError::transient(format!(
                    "no MCP client of seat `{}` took the {what} within {pickup:?}; released for retry",
                    shared.role
                )))
            }
            Err(_) => guard.offer.state(),
        };
        match state {
            OfferState::Taken | OfferState::Acked => Ok((guard, rx)),
            _ => Err(AgentError::transient(format!(
                "seat `{}` withdrew the {what}; released for retry",
                shared.role
            ))),
        }
    }

    /// Offers a turn and serves the client's commands with `cx` until it
    /// ends the turn, or until it has been idle for the idle timeout or
    /// held for `max_turn` (transient failures: the runtime retries the
    /// delivery with backoff and dead-letters it when its attempts run out).
    async fn turn(
        &self,
        cx: &Context,
        id: String,
        kind: TurnKind,
        event: Value,
    ) -> Result<End, AgentError> {
        let (offer, rx) = self.offer(cx, id.clone(), kind, event, true).await?;
        let Some(commands) = rx else {
            return Err(AgentError::transient("the seat is closed"));
        };
        let mut guard = TurnGuard {
            shared: &self.shared,
            id,
            kind,
            serial: offer.offer.serial,
            end: None,
            commands,
        };
        let r = self.serve(cx, &mut guard).await;
        guard.end = Some(match &r {
            Ok(end) => (format!("it was ended with {}", end.action()), false),
            Err(e) => (e.clone(), true),
        });
        drop(guard);
        drop(offer);
        r.map_err(AgentError::transient)
    }

    /// Serves the commands of a held turn until the client ends it (`Ok`),
    /// or the seat releases it (`Err`: why).
    async fn serve(&self, cx: &Context, guard: &mut TurnGuard<'_>) -> Result<End, String> {
        let role = &self.shared.role;
        let (id, kind) = (guard.id.clone(), guard.kind);
        let idle = self.shared.options.idle_timeout;
        let max_turn = self.shared.options.max_turn;
        let hard = Instant::now().checked_add(max_turn);
        let mut host = ActionHost::new(cx, kind, id.clone());
        loop {
            let soft = Instant::now().checked_add(idle);
            let (at, by_max) = match (soft, hard) {
                (Some(s), Some(h)) if h <= s => (Some(h), true),
                (Some(s), _) => (Some(s), false),
                (None, h) => (h, true),
            };
            let next = match at {
                Some(at) => tokio::time::timeout_at(at, guard.commands.recv())
                    .await
                    .ok(),
                None => Some(guard.commands.recv().await),
            };
            let command = match next {
                None if by_max => {
                    return Err(format!(
                        "the MCP client of seat `{role}` held {} {id} longer than its max_turn ({max_turn:?}); released for retry",
                        kind.noun()
                    ))
                }
                None => {
                    return Err(format!(
                        "the MCP client of seat `{role}` was idle for {idle:?} holding {} {id}; released for retry",
                        kind.noun()
                    ))
                }
                Some(None) => return Err("the seat is closed".to_owned()),
                Some(Some(c)) => c,
            };
            match command {
                Command::Touch => {}
                Command::Action { name, args, reply } => {
                    match host.call(&name, args).await {
                        Err(ActionError::TooLate { message }) => {
                            // Too late: the turn ends, the client is told.
                            let _ = reply.send(Err(SeatError::Released { message }));
                        }
                        r => {
                            let _ = reply.send(r.map_err(SeatError::from));
                        }
                    }
                    if let Some(end) = host.end() {
                        return Ok(end.clone());
                    }
                }
            }
        }
    }

    /// Offers a notice and waits until the client has it: taken by a
    /// `wait_for_event` and acknowledged by the same session's next seat
    /// call. Not acknowledged within the idle timeout, it fails transiently
    /// and the runtime delivers it again.
    async fn notice(&self, cx: &Context, id: String, event: Value) -> Result<(), AgentError> {
        let what = event["event"].as_str().unwrap_or("notice").to_owned();
        let (guard, _) = self.offer(cx, id, TurnKind::Task, event, false).await?;
        let ack = self.shared.options.idle_timeout;
        let mut watch = guard.offer.state.subscribe();
        let state =
            match tokio::time::timeout(ack, watch.wait_for(|s| *s != OfferState::Taken)).await {
                Ok(Ok(s)) => *s,
                Ok(Err(_)) => OfferState::Withdrawn,
                Err(_)
                    if guard
                        .offer
                        .advance(OfferState::Taken, OfferState::Withdrawn) =>
                {
                    OfferState::Withdrawn
                }
                Err(_) => guard.offer.state(),
            };
        if state == OfferState::Acked {
            Ok(())
        } else {
            Err(AgentError::transient(format!(
                "the MCP client of seat `{}` took the {what} but made no further call within {ack:?} to acknowledge it; offered again on retry",
                self.shared.role
            )))
        }
    }
}

impl SeatAgent {
    /// A saga step (or compensation, by `kind`) as a turn: the client
    /// reports its outcome with `complete_task` or `fail_task`.
    async fn saga_turn(
        &self,
        cx: &Context,
        step: &SagaStep,
        kind: TurnKind,
    ) -> Result<Value, AgentError> {
        let id = agentorg_core::agent::actions::saga_turn_id(step);
        let event = json!({
            "event": kind.name(),
            "saga_id": step.saga_id,
            "saga": step.saga,
            "step": step.step,
            "index": step.index,
            "input": step.input,
            "results": step.results,
            "result": step.result,
            "idempotency_key": step.idempotency_key,
            "run": step.run,
            "attempt": cx.attempt(),
        });
        match self.turn(cx, id, kind, event).await? {
            End::Complete(v) => Ok(v),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Err(AgentError::permanent(format!(
                "the seat ended a {} wrongly",
                kind.noun()
            ))),
        }
    }
}

fn fail(message: String, retryable: bool) -> AgentError {
    if retryable {
        AgentError::transient(message)
    } else {
        AgentError::permanent(message)
    }
}

fn outcome(end: End) -> Result<Outcome, AgentError> {
    match end {
        End::Complete(v) => Ok(Outcome::Complete(v)),
        End::AwaitSubtasks => Ok(Outcome::AwaitSubtasks),
        End::Fail { message, retryable } => Err(fail(message, retryable)),
        // check_end lets nothing else end a task turn.
        _ => Err(AgentError::permanent("the seat ended a task turn wrongly")),
    }
}

#[async_trait]
impl Agent for SeatAgent {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let event = json!({
            "event": "task",
            "task_id": task.id,
            "task": task_json(&task),
            "attempt": cx.attempt(),
            "idle_timeout_secs": self.shared.options.idle_timeout.as_secs(),
            "max_turn_secs": self.shared.options.max_turn.as_secs(),
        });
        outcome(
            self.turn(cx, task.id.to_string(), TurnKind::Task, event)
                .await?,
        )
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let event = json!({
            "event": "subtasks_done",
            "task_id": task.id,
            "task": task_json(&task),
            "results": serde_json::to_value(&results).unwrap_or(Value::Null),
            "attempt": cx.attempt(),
            "idle_timeout_secs": self.shared.options.idle_timeout.as_secs(),
            "max_turn_secs": self.shared.options.max_turn.as_secs(),
        });
        outcome(
            self.turn(cx, task.id.to_string(), TurnKind::Task, event)
                .await?,
        )
    }

    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        let id = escalation.escalation_id.to_string();
        let event = json!({
            "event": "escalation",
            "escalation_id": id,
            "escalation": serde_json::to_value(&escalation).unwrap_or(Value::Null),
        });
        match self.turn(cx, id, TurnKind::Escalation, event).await? {
            End::Decide(v) => Ok(EscalationOutcome::Decide(v)),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Ok(EscalationOutcome::PassUp),
        }
    }

    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        let id = decision.escalation_id.to_string();
        let event = json!({
            "event": "decision",
            "decision": serde_json::to_value(&decision).unwrap_or(Value::Null),
        });
        self.notice(cx, id, event).await
    }

    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        let event = json!({
            "event": "result",
            "result": serde_json::to_value(&result).unwrap_or(Value::Null),
        });
        self.notice(cx, result.task_id.to_string(), event).await
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let event = json!({
            "event": "peer_message",
            "message_id": message.id,
            "from": message.from,
            "message": message.payload,
        });
        self.notice(cx, message.id.to_string(), event).await
    }

    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        let json = json!({
            "event": "org_event",
            "event_id": event.id,
            "name": event.name,
            "from": event.from,
            "payload": event.payload,
            "published_at": event.published_at,
        });
        self.notice(cx, event.id.to_string(), json).await
    }

    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        self.artifact_ready(cx, ready).await
    }

    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        self.artifact_rework(cx, rework).await
    }

    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        self.saga_turn(cx, &step, TurnKind::SagaStep).await
    }

    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        self.meeting_turn(cx, turn).await
    }

    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        self.meeting_proposal(cx, meeting).await
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        self.meeting_ballot(cx, ballot).await
    }

    async fn on_meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        self.meeting_escalation(cx, meeting).await
    }

    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        self.saga_turn(cx, &step, TurnKind::Compensation)
            .await
            .map(|_| ())
    }

    async fn on_saga_escalation(
        &self,
        cx: &Context,
        escalation: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError> {
        let id = format!("{}/{}/escalation", escalation.saga_id, escalation.step);
        let event = json!({
            "event": "saga_escalation",
            "escalation_id": id,
            "saga_id": escalation.saga_id,
            "step": escalation.step,
            "role": escalation.role,
            "status": escalation.status,
            "reason": escalation.reason,
            "saga": serde_json::to_value(&escalation.record).unwrap_or(Value::Null),
        });
        match self.turn(cx, id, TurnKind::SagaEscalation, event).await? {
            End::Decide(v) => saga_decision(&v)
                .map(Some)
                .map_err(|e| AgentError::permanent(e.to_string())),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Ok(None),
        }
    }

    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        let id = request.id.to_string();
        let event = json!({
            "event": "peer_request",
            "request_id": id,
            "from": request.from,
            "request": request.payload,
        });
        match self.turn(cx, id, TurnKind::PeerRequest, event).await? {
            End::Answer(v) => Ok(v),
            End::Fail { message, retryable } => Err(fail(message, retryable)),
            _ => Err(AgentError::permanent(
                "the seat ended a peer request wrongly",
            )),
        }
    }
}
