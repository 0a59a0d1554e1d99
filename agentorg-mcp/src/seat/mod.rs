//! The org as an MCP server: a role's *seat*, served over MCP so that any LLM
//! client can sit in the org as that role.
//!
//! A [`Seat`] is bound to one role of the chart. It has two sides:
//!
//! * the runtime side, [`SeatAgent`]: host it for the role like any agent
//!   (`Org::builder(chart).agent("cto", seat.agent())`);
//! * the MCP side, [`SeatServer`]: an rmcp server whose tools let the client
//!   take the role's work and act on it. Serve it over stdio
//!   ([`Seat::serve_stdio`]), over any rmcp transport (a duplex pipe in
//!   tests), or over streamable HTTP behind a bearer token ([`SeatHttp`],
//!   one [`SeatToken`] per seat).
//!
//! # How a turn works
//!
//! Each delivery to the role becomes an *offer*. The agent's handler
//! (`on_task`, `on_subtasks_done`, …) puts the offer where the client's
//! `wait_for_event` takes it, then stays open and serves the client's
//! commands (`delegate`, `escalate`, `send_peer`, `publish_event`, `read_task_tree`,
//! `report_usage`) with the handler's `Context`, until the client ends the
//! turn (`complete_task`, `fail_task`, `await_subtasks`). While the handler
//! is open the runtime keeps extending the claim's lease, so the task stays
//! this seat's. The turn's delegations, escalations and peer messages are
//! staged and committed atomically with its end, like any agent's effects:
//! a turn the seat releases commits none of them, so its retry does not
//! send them twice. Two things are outside that commit: `report_usage`
//! counts at once (a retried turn's report counts again), and
//! `call_granted_tool` calls the tool at once (a retried turn may call it
//! again). A turn stages at most [`MAX_DELEGATIONS_PER_TURN`] (100)
//! delegations; more are refused with a message naming the cap.
//!
//! A seat whose role runs saga steps gets each step (`saga_step`) and each
//! compensation (`saga_compensation`) as a turn, and reports the outcome
//! with `complete_task` or `fail_task`; a manager seat resolves a report's
//! in-doubt step (or failed compensation) from a `saga_escalation` turn with
//! `decide_escalation` or passes it up (see [`agentorg_core::saga`]).
//!
//! A seat whose role owns artifacts of a blackboard project gets each one
//! that becomes ready (every blocker complete) as a turn,
//! `artifact_ready`: the client reads the project (`read_project`),
//! changes its artifact (`update_artifact`, written with the turn's end;
//! another role's artifact is refused with `not_allowed` naming its owner)
//! and ends the turn with `complete_task` (or `fail_task`). An artifact sent
//! back to rework comes as a notice, `artifact_rework` (and, once its
//! blockers are complete, as `artifact_ready` again). The board's tools —
//! `read_project`, `update_artifact`, `claim_artifact`, `record_decision` —
//! work in a task turn or a ready artifact's turn; a claim held by another
//! replica, or blockers not complete yet, come back as `unavailable`
//! (retryable); a blocker that changed under a ready turn's work comes back
//! as `invalid_input`: end the turn, and the artifact is offered again with
//! the new revision (see [`agentorg_core::blackboard`]).
//!
//! A manager seat delegates subtasks and ends the turn with
//! `await_subtasks`; when they have all ended, their results come back as a
//! `subtasks_done` event of the same task, and the client completes it.
//!
//! # Timeouts: a client that never answers
//!
//! A client must not hold a task forever ([`SeatOptions`]):
//!
//! * **pickup** (default 60 s): an offer no client takes in time is released
//!   — the handler fails *transiently*, so the runtime puts the delivery
//!   back with backoff and dead-letters it when its attempts run out (3 by
//!   default; the principal is alerted);
//! * **idle** (default 5 min): a turn with no call of the client for that
//!   long is released the same way. A call on the turn starts the timer
//!   again, and so do the calls that name no turn (`call_granted_tool`,
//!   before and after the tool runs, `list_granted_tools`, `seat_info`) for
//!   the turns held by the *same* MCP session; `wait_for_event` does not.
//!   Its staged delegations are dropped, so the retry does not delegate
//!   twice;
//! * **max_turn** (default 30 min): a turn held that long is released the
//!   same way, however busy the client keeps it.
//!
//! Later calls naming a released turn are refused with `released` and the
//! reason (the seat remembers the last 64 turns that ended); so is the
//! first call of the session that held it that names no turn and finds
//! none held.
//!
//! A notice (`decision`, `result`, `peer_message`, `org_event`, `artifact_rework`, `meeting_escalation`) is *acknowledged* by
//! the next call of any seat tool on the MCP session whose `wait_for_event`
//! returned it: that call shows the response arrived. Until then its
//! handler stays open; if no such call comes within the idle timeout, the
//! handler fails transiently and the runtime delivers the notice again. A
//! `wait_for_event` whose request is cancelled before it hands an event
//! over puts the event back, first in line. So a notice is delivered at
//! least once: dedupe by its id (`escalation_id`, `task_id`,
//! `message_id`). A client that cancels a wait after its response was
//! sent, and then calls again, acknowledges a notice it never read.
//!
//! At most `max_offers` (default 256) offers wait for a client at once; a
//! delivery beyond that fails transiently and the runtime retries it with
//! backoff. An offer whose handler ends (pickup timeout, `handler_timeout`,
//! shutdown) leaves the queue at once.
//!
//! A runtime `handler_timeout` (in `AgentOptions`), if set, bounds a turn's
//! total length as well.
//!
//! # What the chart allows
//!
//! The server can do only what the chart lets the role do. Every refusal is
//! an MCP tool error (an `is_error` result, never a protocol error or a
//! crash) whose text names the rule, with structured content
//! `{"error": {"kind", "message", "retryable"}}` ([`SeatError`]):
//! delegating outside the reports and shortcuts, a peer channel the chart
//! does not declare, a tool the role is not granted (the seat's tools go
//! through a [`ScopedToolHost`] of the role's grants), or a task tree the
//! role has no part in.
//!
//! # Tools
//!
//! The org actions — every tool below but `wait_for_event`,
//! `list_granted_tools` and `seat_info` — are the ones of
//! [`agentorg_core::agent::actions`], one definition (schemas, checks,
//! refusals naming the chart's rule) shared with `agentorg-llm`'s
//! `LlmAgent`. The seat adds to each the field that names the turn it acts
//! on (`task_id`, `escalation_id`, `request_id` or `turn_id`; none for
//! `read_task_tree`, whose `task_id` is the tree's root, and
//! `call_granted_tool`) and serves them with the turn's
//! [`ActionHost`](agentorg_core::agent::actions::ActionHost) — except
//! `call_granted_tool`, which it runs itself, with or without a turn.
//!
//! | tool | does |
//! |---|---|
//! | `wait_for_event` | takes the next event: `task`, `subtasks_done`, `escalation`, `peer_request`, `saga_step`, `saga_compensation`, `saga_escalation`, `artifact_ready`, `meeting_turn`, `meeting_proposal`, `meeting_ballot`, or a notice (`decision`, `peer_message`, `result`, `org_event` — an event the role subscribes to, `artifact_rework`, `meeting_escalation`); `{"event": "none"}` on timeout |
//! | `complete_task` | completes the task in hand with a result |
//! | `fail_task` | fails it (retryable or not) |
//! | `await_subtasks` | ends the turn after delegating; results come back as `subtasks_done` |
//! | `delegate` | delegates a subtask to a report or a shortcut's target |
//! | `escalate` | escalates to the manager; the decision comes back as `decision` |
//! | `send_peer` | sends on a declared peer channel |
//! | `publish_event` | publishes an event the role declares (`publishes`), its payload checked against the name's schema |
//! | `decide_escalation`, `pass_up_escalation` | end an escalation turn |
//! | `answer_peer_request` | ends a peer request turn |
//! | `read_task_tree` | the tree of a task the role was assigned or delegated |
//! | `report_usage` | tokens (at most 10⁹ a report) and cost (finite, ≥ 0) spent on the task in hand |
//! | `list_granted_tools`, `call_granted_tool` | the role's granted tools |
//! | `seat_info` | role, manager, reports, peers, shortcuts, grants, the turns held (`id`, `kind`) |
//! | `read_project` | a blackboard project in GenBrain's shape, with `ready` by role |
//! | `update_artifact` | changes an artifact the role owns (status, path, content), with the turn's end |
//! | `claim_artifact` | claims a ready artifact the role owns for a lease (at once) |
//! | `record_decision` | appends a decision to a project's log, with the turn's end |
//! | `speak` | ends a `meeting_turn` with the role's contribution |
//! | `propose` | ends a `meeting_proposal` (the role facilitates) with the decision put to the vote and its action items, each for a participant (checked: refused and the turn goes on if not) |
//! | `vote` | ends a `meeting_ballot`: approve, approve_with_conditions, reject or abstain — sealed, once; a vote (or a contribution) ended after the meeting moved on (its vote closed, the turn timed out) is answered `released`, not counted (checked when the turn ends: one that races the close is not counted either, and may be answered as ended) |
//!
//! The granted tools are those of the [`ToolHost`] given to
//! [`SeatBuilder::tools`], scoped to the role's grants: they are the seat's
//! own, separate from the tools the org's runtime gives its agents (pass
//! the same host to both to share them).
//!
//! Commands name their task with `task_id`, which may be left out when the
//! seat holds one task (when it holds several, the refusal lists them). Delegations, escalations, peer messages and published events are sent
//! when the turn ends, as for any agent.
//!
//! # Example
//!
//! An rmcp client seated as `cto` over an in-process pipe takes the task the
//! CEO delegated, delegates it to `backend`, and completes it with the
//! result.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use agentorg_core::chart::OrgChart;
//! use agentorg_core::hierarchy::TaskStatus;
//! use agentorg_core::runtime::Org;
//! use agentorg_mcp::seat::Seat;
//! use rmcp::model::{CallToolRequestParams, ClientConfig};
//! use rmcp::ServiceExt;
//! use serde_json::{json, Value};
//!
//! struct Ceo;
//! #[agentorg_core::async_trait]
//! impl Agent for Ceo {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.delegate("cto", TaskSpec::new(task.title)).await?;
//!         Ok(Outcome::AwaitSubtasks)
//!     }
//! }
//!
//! let chart = OrgChart::from_toml_str(r#"
//!     org = "demo"
//!     principal = "founder"
//!     roles.ceo.reports_to = "founder"
//!     roles.cto.reports_to = "ceo"
//!     roles.backend.reports_to = "cto"
//! "#)?;
//! let seat = Seat::builder(chart.clone(), "cto").build()?;
//! let org = Org::builder(chart)
//!     .agent("ceo", Ceo)
//!     .agent("cto", seat.agent())
//!     .agent("backend", agent_fn(|t| async move { Ok(Outcome::Complete(json!({"api": t.title}))) }))
//!     .start()
//!     .await?;
//!
//! // The seat's MCP server on one end of a pipe, an rmcp client on the other.
//! let (server_io, client_io) = tokio::io::duplex(64 * 1024);
//! let server = seat.server().serve(server_io);
//! let client = ClientConfig::default().serve(client_io);
//! let (server, client) = tokio::try_join!(
//!     async { server.await.map_err(|e| e.to_string()) },
//!     async { client.await.map_err(|e| e.to_string()) },
//! )?;
//! let call = |name: &'static str, args: Value| {
//!     let params = CallToolRequestParams::new(name)
//!         .with_arguments(args.as_object().cloned().unwrap_or_default());
//!     client.call_tool(params)
//! };
//!
//! let root = org.principal().delegate("ceo", TaskSpec::new("analytics API")).await?;
//! let event = call("wait_for_event", json!({"timeout_secs": 10})).await?.structured_content.unwrap();
//! assert_eq!(event["event"], "task");
//! call("delegate", json!({"to": "backend", "title": "endpoints"})).await?;
//! call("await_subtasks", json!({})).await?;
//! let event = call("wait_for_event", json!({"timeout_secs": 10})).await?.structured_content.unwrap();
//! assert_eq!(event["event"], "subtasks_done");
//! let api = event["results"][0]["result"].clone();
//! call("complete_task", json!({"result": {"backend": api}})).await?;
//!
//! let done = root.wait(Duration::from_secs(10)).await?;
//! assert_eq!(done.status, TaskStatus::Completed);
//! client.cancel().await?;
//! server.cancel().await?;
//! org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`ScopedToolHost`]: agentorg_core::tools::ScopedToolHost

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::agent::actions::ActionError;
use agentorg_core::chart::OrgChart;
use agentorg_core::name::Name;
use agentorg_core::tools::{ScopedToolHost, ToolError, ToolHost, ToolRouter};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

mod bridge;
mod http;
mod server;

pub use bridge::{SeatAgent, MAX_DELEGATIONS_PER_TURN};
pub use http::{SeatHttp, SeatToken};
pub use server::SeatServer;

use bridge::Shared;

/// Why a seat refused a client's call, or could not be built or served.
///
/// On the MCP side each is an `is_error` tool result whose text is the
/// message and whose structured content carries
/// [`kind_name`](Self::kind_name) and [`is_retryable`](Self::is_retryable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeatError {
    /// The chart does not let this role do it (delegate there, use that peer
    /// channel, call that tool, read that tree); the message names the rule.
    #[error("not allowed: {message}")]
    NotAllowed {
        /// The rule that refused it.
        message: String,
    },
    /// The call needs a task (or escalation, or request) in hand, and the
    /// seat holds none of that id: take one with `wait_for_event`.
    #[error("nothing in hand: {message}")]
    NoTurn {
        /// What was missing.
        message: String,
    },
    /// The turn is no longer held: the seat released it (its idle timeout
    /// or `max_turn` passed; the runtime retries the delivery) or it has
    /// ended. The message gives the reason.
    #[error("released: {message}")]
    Released {
        /// Which turn.
        message: String,
    },
    /// The arguments are unusable, or the command cannot end this turn.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// A granted tool failed (its own failure, a timeout, …).
    #[error(transparent)]
    Tool(ToolError),
    /// The org's backends, or the seat's server, failed. Retryable.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
}

impl SeatError {
    /// A short name of the kind, as MCP clients see it in
    /// `structuredContent.error.kind`: `not_allowed`, `no_turn`, `released`,
    /// `invalid_input`, `tool_failed`, `unavailable`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } => "not_allowed",
            Self::NoTurn { .. } => "no_turn",
            Self::Released { .. } => "released",
            Self::InvalidInput { .. } => "invalid_input",
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
}

impl From<ActionError> for SeatError {
    /// An org action's refusal as the seat reports it (a turn ended too
    /// late or already ended is `released`; an unknown action, bad input).
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotAllowed { message } => Self::NotAllowed { message },
            ActionError::InvalidInput { message } => Self::InvalidInput { message },
            ActionError::TooLate { message } => Self::Released { message },
            e @ ActionError::Ended { .. } => Self::Released {
                message: e.to_string(),
            },
            ActionError::Tool(e) => Self::Tool(e),
            ActionError::Unavailable { message } => Self::Unavailable { message },
            e => Self::InvalidInput {
                message: e.to_string(),
            },
        }
    }
}

/// How long a seat waits for its client. See the
/// [module docs](self#timeouts-a-client-that-never-answers).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeatOptions {
    /// How long an offer waits for a client's `wait_for_event` before it is
    /// released for retry (default 60 s).
    pub pickup_timeout: Duration,
    /// How long a held turn may go without a call of the client before it
    /// is released for retry (default 5 min).
    pub idle_timeout: Duration,
    /// The longest a client may hold one turn, however busy it keeps it
    /// (default 30 min); then it is released for retry.
    pub max_turn: Duration,
    /// The longest one `wait_for_event` call waits (default 25 s, under
    /// common MCP clients' request timeouts).
    pub max_wait: Duration,
    /// How many offers may wait for a client at once (default 256); a
    /// delivery beyond that fails transiently, and the runtime retries it
    /// with backoff.
    pub max_offers: usize,
}

impl Default for SeatOptions {
    fn default() -> Self {
        Self {
            pickup_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_turn: Duration::from_secs(30 * 60),
            max_wait: Duration::from_secs(25),
            max_offers: 256,
        }
    }
}

impl SeatOptions {
    /// Sets the pickup timeout.
    pub fn with_pickup_timeout(mut self, d: Duration) -> Self {
        self.pickup_timeout = d;
        self
    }

    /// Sets the idle timeout.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Sets the longest a client may hold one turn.
    pub fn with_max_turn(mut self, d: Duration) -> Self {
        self.max_turn = d;
        self
    }

    /// Sets the longest wait of one `wait_for_event`.
    pub fn with_max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Sets how many offers may wait for a client at once (at least 1).
    pub fn with_max_offers(mut self, n: usize) -> Self {
        self.max_offers = n.max(1);
        self
    }
}

/// Builds a [`Seat`]: the chart, the role, its tools, the timeouts.
#[derive(Debug)]
pub struct SeatBuilder {
    chart: OrgChart,
    role: String,
    tools: Option<Arc<dyn ToolHost>>,
    options: SeatOptions,
}

impl SeatBuilder {
    /// The org's tools (normally a [`ToolRouter`] with `server.tool` names).
    /// The seat sees them through a [`ScopedToolHost`] of the role's grants
    /// in the chart, so it lists and calls only what the role is granted.
    /// Default: no tools.
    pub fn tools(mut self, tools: Arc<dyn ToolHost>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Sets the timeouts.
    pub fn options(mut self, options: SeatOptions) -> Self {
        self.options = options;
        self
    }

    /// The seat. Fails if the role is not in the chart, or is the principal
    /// (the principal is the application, not a seat).
    pub fn build(self) -> Result<Seat, SeatError> {
        if self.chart.is_principal(&self.role) {
            return Err(SeatError::InvalidInput {
                message: format!(
                    "`{}` is the principal, who acts through the application, not a seat",
                    self.role
                ),
            });
        }
        let Some(role) = self.chart.role(&self.role).map(|r| r.name().clone()) else {
            return Err(SeatError::InvalidInput {
                message: format!("role `{}` is not in the chart", self.role),
            });
        };
        let inner = self
            .tools
            .unwrap_or_else(|| Arc::new(ToolRouter::new()) as Arc<dyn ToolHost>);
        let grants = self.chart.tool_grants(&role).to_vec();
        let tools: Arc<dyn ToolHost> = Arc::new(ScopedToolHost::new(inner, role.clone(), grants));
        let mut options = self.options;
        options.max_offers = options.max_offers.max(1);
        Ok(Seat {
            shared: Arc::new(Shared::new(role, self.chart, tools, options)),
        })
    }
}

/// One role's seat in the org, for an LLM client over MCP. See the
/// [module docs](self).
///
/// Cheap to clone; clones share the seat's offers and turns.
#[derive(Clone)]
pub struct Seat {
    shared: Arc<Shared>,
}

impl fmt::Debug for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seat")
            .field("role", &self.shared.role)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Seat {
    /// A seat for `role` of `chart`.
    pub fn builder(chart: OrgChart, role: impl Into<String>) -> SeatBuilder {
        SeatBuilder {
            chart,
            role: role.into(),
            tools: None,
            options: SeatOptions::default(),
        }
    }

    /// The role.
    pub fn role(&self) -> &Name {
        &self.shared.role
    }

    /// The agent to host for the role in the org.
    pub fn agent(&self) -> SeatAgent {
        SeatAgent {
            shared: Arc::clone(&self.shared),
        }
    }

    /// An MCP server of the seat: one per MCP session (its notices are
    /// acknowledged, and its calls keep its turns alive, per server); they
    /// share the seat's offers and turns.
    pub fn server(&self) -> SeatServer {
        SeatServer::new(Arc::clone(&self.shared))
    }

    /// The seat over streamable HTTP, behind `token`.
    pub fn http(&self, token: SeatToken) -> SeatHttp {
        SeatHttp::new(self.clone(), token)
    }

    /// Serves the seat over this process's stdin and stdout until the client
    /// closes them or `shutdown` is cancelled.
    pub async fn serve_stdio(&self, shutdown: CancellationToken) -> Result<(), SeatError> {
        let running = self
            .server()
            .serve_with_ct(rmcp::transport::stdio(), shutdown)
            .await
            .map_err(|e| SeatError::Unavailable {
                message: format!("the MCP session did not start: {e}"),
            })?;
        running
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| SeatError::Unavailable {
                message: format!("the MCP session failed: {e}"),
            })
    }
}
