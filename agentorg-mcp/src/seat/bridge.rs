//! The runtime side of a seat: [`SeatAgent`] hands each delivery to the MCP
//! side as an *offer* and serves the client's commands with the handler's
//! [`Context`] until the client ends the turn (or is too slow).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use agentorg_core::agent::TaskSpec;
use agentorg_core::agent::{Agent, AgentError, Context, Delegation, Outcome, SubtaskResult, Task};
use agentorg_core::async_trait;
use agentorg_core::chart::OrgChart;
use agentorg_core::envelope::TaskId;
use agentorg_core::hierarchy::{Decision, Escalation, EscalationOutcome, TaskTree};
use agentorg_core::name::Name;
use agentorg_core::peer::PeerMessage;
use agentorg_core::tools::ToolHost;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{SeatError, SeatOptions};

/// What kind of turn an offer opens: which commands may end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnKind {
    /// A task (or its subtasks' results): `complete_task`, `fail_task`,
    /// `await_subtasks`.
    Task,
    /// An escalation from a report: `decide_escalation`, `pass_up_escalation`.
    Escalation,
    /// A peer's request: `answer_peer_request`, `fail_task`.
    PeerRequest,
}

impl TurnKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Escalation => "escalation",
            Self::PeerRequest => "peer request",
        }
    }
}

/// How the client ends a turn.
#[derive(Debug, Clone)]
pub(crate) enum End {
    Complete(Value),
    AwaitSubtasks,
    Fail { message: String, retryable: bool },
    Decide(Value),
    PassUp,
    Answer(Value),
}

type Reply<T> = oneshot::Sender<Result<T, SeatError>>;

/// A command of the client on a turn it holds, served with the turn's
/// [`Context`].
#[derive(Debug)]
pub(crate) enum Command {
    Delegate {
        to: String,
        spec: TaskSpec,
        reply: Reply<Delegation>,
    },
    Escalate {
        reason: String,
        details: Value,
        reply: Reply<()>,
    },
    SendPeer {
        to: String,
        message: Value,
        reply: Reply<()>,
    },
    ReportUsage {
        tokens: u64,
        cost_usd: f64,
        reply: Reply<()>,
    },
    ReadTree {
        root: Option<TaskId>,
        reply: Reply<TaskTree>,
    },
    /// Any seat call: the client is alive, so the idle timer starts again.
    Touch,
    Finish {
        end: End,
        reply: Reply<()>,
    },
}

/// A delivery offered to the client: taken by `wait_for_event`.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) serial: u64,
    /// The turn's id (task, escalation or peer request id).
    pub(crate) id: String,
    pub(crate) kind: TurnKind,
    /// What `wait_for_event` returns.
    pub(crate) event: Value,
    /// Signalled when a client takes the offer; fails if the agent gave up.
    pub(crate) taken: oneshot::Sender<()>,
    /// Where the client's commands go; `None` for a notice (nothing to
    /// answer).
    pub(crate) commands: Option<mpsc::Sender<Command>>,
}

/// A turn a client holds.
#[derive(Debug, Clone)]
pub(crate) struct ActiveTurn {
    pub(crate) serial: u64,
    pub(crate) kind: TurnKind,
    pub(crate) commands: mpsc::Sender<Command>,
}

/// State shared by a seat's agent and its MCP servers (one per MCP session).
pub(crate) struct Shared {
    pub(crate) role: Name,
    pub(crate) chart: OrgChart,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) options: SeatOptions,
    pub(crate) offers_tx: mpsc::UnboundedSender<Offer>,
    /// One `wait_for_event` at a time takes offers; a tokio mutex because it
    /// is held across the wait (which is bounded by its timeout).
    pub(crate) offers_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Offer>>,
    /// The turns clients hold, by id. A std mutex: held only to look up,
    /// insert or remove, never across an await.
    turns: Mutex<HashMap<String, ActiveTurn>>,
    serial: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("role", &self.role)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        role: Name,
        chart: OrgChart,
        tools: Arc<dyn ToolHost>,
        options: SeatOptions,
    ) -> Self {
        let (offers_tx, offers_rx) = mpsc::unbounded_channel();
        Self {
            role,
            chart,
            tools,
            options,
            offers_tx,
            offers_rx: tokio::sync::Mutex::new(offers_rx),
            turns: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
        }
    }

    pub(crate) fn turns(&self) -> MutexGuard<'_, HashMap<String, ActiveTurn>> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets turn `id` if it is still the one numbered `serial` (a retry of
    /// the same task reuses the id).
    pub(crate) fn forget(&self, id: &str, serial: u64) {
        let mut turns = self.turns();
        if turns.get(id).is_some_and(|t| t.serial == serial) {
            turns.remove(id);
        }
    }
}

/// Forgets the turn when the handler returns, however it returns.
struct TurnGuard<'a> {
    shared: &'a Shared,
    id: String,
    serial: u64,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(&self.id, self.serial);
    }
}

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
/// * decisions, peer messages and results of tasks delegated outside a task
///   are *notices*: the handler returns once a client has taken them.
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
    /// timeout). Returns the receiver of the client's commands (none for a
    /// notice) and the offer's serial.
    async fn offer(
        &self,
        id: String,
        kind: TurnKind,
        event: Value,
        turn: bool,
    ) -> Result<(Option<mpsc::Receiver<Command>>, u64), AgentError> {
        let shared = &self.shared;
        let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
        let (commands, rx) = if turn {
            let (tx, rx) = mpsc::channel(32);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (taken, taken_rx) = oneshot::channel();
        let what = event["event"].as_str().unwrap_or("event").to_owned();
        shared
            .offers_tx
            .send(Offer {
                serial,
                id,
                kind,
                event,
                taken,
                commands,
            })
            .map_err(|_| AgentError::transient("the seat is closed"))?;
        let pickup = shared.options.pickup_timeout;
        match tokio::time::timeout(pickup, taken_rx).await {
            Ok(Ok(())) => Ok((rx, serial)),
            Ok(Err(_)) => Err(AgentError::transient("the seat is closed")),
            Err(_) => Err(AgentError::transient(format!(
                "no MCP client of seat `{}` took the {what} within {pickup:?}; released for retry",
                shared.role
            ))),
        }
    }

    /// Offers a turn and serves the client's commands with `cx` until it
    /// ends the turn, or until it has been idle for the idle timeout (a
    /// transient failure: the runtime retries the delivery with backoff and
    /// dead-letters it when its attempts run out).
    async fn turn(
        &self,
        cx: &Context,
        id: String,
        kind: TurnKind,
        event: Value,
    ) -> Result<End, AgentError> {
        let (rx, serial) = self.offer(id.clone(), kind, event, true).await?;
        let _guard = TurnGuard {
            shared: &self.shared,
            id: id.clone(),
            serial,
        };
        let Some(mut rx) = rx else {
            return Err(AgentError::transient("the seat is closed"));
        };
        let idle = self.shared.options.idle_timeout;
        let mut delegated = 0usize;
        loop {
            let command = match tokio::time::timeout(idle, rx.recv()).await {
                Err(_) => {
                    return Err(AgentError::transient(format!(
                        "the MCP client of seat `{}` was idle for {idle:?} holding {} {id}; released for retry",
                        self.shared.role,
                        kind.noun()
                    )))
                }
                Ok(None) => return Err(AgentError::transient("the seat is closed")),
                Ok(Some(c)) => c,
            };
            match command {
                Command::Touch => {}
                Command::Delegate { to, spec, reply } => {
                    let r = cx
                        .delegate(&to, spec)
                        .await
                        .map_err(SeatError::from_delegate);
                    if r.is_ok() {
                        delegated += 1;
                    }
                    let _ = reply.send(r);
                }
                Command::Escalate {
                    reason,
                    details,
                    reply,
                } => {
                    let _ = reply.send(
                        cx.escalate(reason, details)
                            .map_err(SeatError::from_delegate),
                    );
                }
                Command::SendPeer { to, message, reply } => {
                    let _ = reply.send(cx.send_peer(&to, &message).map_err(SeatError::from_peer));
                }
                Command::ReportUsage {
                    tokens,
                    cost_usd,
                    reply,
                } => {
                    cx.report_usage(tokens, cost_usd);
                    let _ = reply.send(Ok(()));
                }
                Command::ReadTree { root, reply } => {
                    let _ = reply.send(self.read_tree(cx, root).await);
                }
                Command::Finish { end, reply } => match check_end(kind, &end, delegated) {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        return Ok(end);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
    }

    /// The tree under `root` (default: the turn's task), if this role was
    /// assigned or delegated that task.
    async fn read_tree(&self, cx: &Context, root: Option<TaskId>) -> Result<TaskTree, SeatError> {
        let Some(root) = root.or_else(|| cx.task_id().cloned()) else {
            return Err(SeatError::InvalidInput {
                message: "name the task whose tree to read (`task_id`)".to_owned(),
            });
        };
        let record = cx
            .task_record(&root)
            .await
            .map_err(SeatError::from_store)?
            .ok_or_else(|| SeatError::InvalidInput {
                message: format!("no task {root}"),
            })?;
        let role = &self.shared.role;
        if &record.assigned_to != role && &record.assigned_by != role {
            return Err(SeatError::NotAllowed {
                message: format!(
                    "`{role}` may read only the trees of tasks it was assigned or delegated; task {root} went from `{}` to `{}`",
                    record.assigned_by, record.assigned_to
                ),
            });
        }
        cx.task_tree(&root).await.map_err(SeatError::from_store)
    }

    async fn notice(&self, id: String, event: Value) -> Result<(), AgentError> {
        self.offer(id, TurnKind::Task, event, false)
            .await
            .map(|_| ())
    }
}

/// Whether `end` may end a turn of `kind` after `delegated` delegations.
fn check_end(kind: TurnKind, end: &End, delegated: usize) -> Result<(), SeatError> {
    let wrong = |what: &str| {
        Err(SeatError::InvalidInput {
            message: format!("{what} cannot end a {} turn", kind.noun()),
        })
    };
    match (kind, end) {
        (_, End::Fail { .. }) => Ok(()),
        (TurnKind::Task, End::Complete(_)) => Ok(()),
        (TurnKind::Task, End::AwaitSubtasks) if delegated == 0 => Err(SeatError::InvalidInput {
            message: "await_subtasks needs at least one delegation made in this turn".to_owned(),
        }),
        (TurnKind::Task, End::AwaitSubtasks) => Ok(()),
        (TurnKind::Escalation, End::Decide(_) | End::PassUp) => Ok(()),
        (TurnKind::PeerRequest, End::Answer(_)) => Ok(()),
        (_, End::Complete(_)) => wrong("complete_task"),
        (_, End::AwaitSubtasks) => wrong("await_subtasks"),
        (_, End::Decide(_)) => wrong("decide_escalation"),
        (_, End::PassUp) => wrong("pass_up_escalation"),
        (_, End::Answer(_)) => wrong("answer_peer_request"),
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

    async fn on_decision(&self, _cx: &Context, decision: Decision) -> Result<(), AgentError> {
        let id = decision.escalation_id.to_string();
        let event = json!({
            "event": "decision",
            "decision": serde_json::to_value(&decision).unwrap_or(Value::Null),
        });
        self.notice(id, event).await
    }

    async fn on_result(&self, _cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        let event = json!({
            "event": "result",
            "result": serde_json::to_value(&result).unwrap_or(Value::Null),
        });
        self.notice(result.task_id.to_string(), event).await
    }

    async fn on_peer(&self, _cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let event = json!({
            "event": "peer_message",
            "message_id": message.id,
            "from": message.from,
            "message": message.payload,
        });
        self.notice(message.id.to_string(), event).await
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
