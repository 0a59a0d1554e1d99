//! The MCP side of a seat: [`SeatServer`], an rmcp [`ServerHandler`] whose
//! tools drive the seat's turns.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentorg_core::agent::actions::{
    acts_in, check_args, ends_turn, is_org_action, precheck, ActionError,
};
use agentorg_core::tools::{ToolError, ToolHostExt};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::bridge::{ActiveTurn, Command, Offer, OfferState, ReleasedTurn, Shared, TurnKind};
use super::SeatError;

mod tools;
pub(crate) use tools::*;

/// The MCP server of one seat: the tools an LLM client uses to sit in the
/// org as the seat's role. Made by [`Seat::server`](super::Seat::server);
/// serve it on any rmcp transport (stdio, a duplex pipe, or streamable HTTP
/// through [`SeatHttp`](super::SeatHttp)). Several servers (MCP sessions) of
/// one seat share its offers and turns.
///
/// The tools are listed in the [module docs](super#tools).
#[derive(Clone)]
pub struct SeatServer {
    shared: Arc<Shared>,
    session: Arc<Session>,
}

/// What one MCP session (one [`SeatServer`] and its clones) keeps.
#[derive(Debug)]
struct Session {
    id: u64,
    /// Notices this session's `wait_for_event` returned and its client has
    /// not acknowledged yet (by a later call).
    unacked: Mutex<Vec<Arc<Offer>>>,
}

impl fmt::Debug for SeatServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeatServer")
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

fn released(r: &ReleasedTurn) -> SeatError {
    SeatError::Released {
        message: format!(
            "{} {} is no longer held by this seat: {}",
            r.kind.noun(),
            r.id,
            r.reason
        ),
    }
}

fn held_list<'a>(turns: impl Iterator<Item = (&'a String, &'a ActiveTurn)>) -> Vec<Value> {
    let mut held: Vec<Value> = turns
        .map(|(id, t)| json!({"id": id, "kind": t.kind.name()}))
        .collect();
    held.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    held
}

impl SeatServer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let session = Arc::new(Session {
            id: shared.next_session(),
            unacked: Mutex::new(Vec::new()),
        });
        Self { shared, session }
    }

    /// The session's client made another call: the notices its earlier
    /// `wait_for_event`s returned reached it.
    fn acknowledge(&self) {
        let unacked = std::mem::take(
            &mut *self
                .session
                .unacked
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for offer in unacked {
            offer.advance(OfferState::Taken, OfferState::Acked);
        }
    }

    /// Why turn `id` is not held: `released` (with the reason) if the seat
    /// remembers it, else `no_turn`.
    fn not_held(&self, id: &str) -> SeatError {
        match self.shared.released_named(id) {
            Some(r) => released(&r),
            None => SeatError::NoTurn {
                message: format!(
                    "`{}` holds no {id}; call wait_for_event to take one",
                    self.shared.role
                ),
            },
        }
    }

    /// The role this server seats.
    pub fn role(&self) -> &agentorg_core::name::Name {
        &self.shared.role
    }

    /// The turn named `id`, or the only one held of these kinds.
    fn pick(
        &self,
        id: Option<&str>,
        kinds: &[TurnKind],
    ) -> Result<(String, ActiveTurn), SeatError> {
        let turns = self.shared.turns();
        if let Some(id) = id {
            return match turns.get(id) {
                Some(t) if kinds.contains(&t.kind) => Ok((id.to_owned(), t.clone())),
                Some(t) => Err(SeatError::InvalidInput {
                    message: format!(
                        "{id} is a {} turn, which this tool cannot act on",
                        t.kind.noun()
                    ),
                }),
                None => {
                    drop(turns);
                    Err(self.not_held(id))
                }
            };
        }
        let held: Vec<(&String, &ActiveTurn)> = turns
            .iter()
            .filter(|(_, t)| kinds.contains(&t.kind))
            .collect();
        match held.as_slice() {
            [(id, t)] => Ok(((*id).clone(), (*t).clone())),
            [] => {
                drop(held);
                drop(turns);
                match self.shared.released_unreported(self.session.id, kinds) {
                    Some(r) => Err(released(&r)),
                    None => Err(SeatError::NoTurn {
                        message: format!(
                            "`{}` holds nothing this tool can act on; call wait_for_event to take it",
                            self.shared.role
                        ),
                    }),
                }
            }
            several => Err(SeatError::InvalidInput {
                message: format!(
                    "several are held, name one by its id: {}",
                    several
                        .iter()
                        .map(|(id, t)| format!("{id} ({})", t.kind.noun()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Sends a command to a held turn and waits for its answer.
    async fn ask<T>(
        &self,
        id: &str,
        turn: &ActiveTurn,
        make: impl FnOnce(oneshot::Sender<Result<T, SeatError>>) -> Command,
    ) -> Result<T, SeatError> {
        let (tx, rx) = oneshot::channel();
        if turn.commands.send(make(tx)).await.is_err() {
            return Err(self.not_held(id));
        }
        rx.await.map_err(|_| self.not_held(id))?
    }

    /// Tells the turns this session holds that its client is alive (a
    /// call naming no turn).
    fn touch(&self) {
        for t in self.shared.turns().values() {
            if t.session == self.session.id {
                let _ = t.commands.try_send(Command::Touch);
            }
        }
    }

    async fn wait(
        &self,
        args: WaitArgs,
        ct: &tokio_util::sync::CancellationToken,
    ) -> Result<Value, SeatError> {
        let max = self.shared.options.max_wait;
        let limit = args
            .timeout_secs
            .map_or(max, |s| Duration::from_secs(s).min(max));
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        let none = || Ok(json!({"event": "none"}));
        loop {
            // Listen before looking, so an offer that comes in between is
            // not missed.
            let offered = self.shared.offered.notified();
            tokio::pin!(offered);
            offered.as_mut().enable();
            if ct.is_cancelled() {
                return none();
            }
            if let Some(offer) = self.shared.take_offer() {
                if let Some(event) = self.hand_over(offer, ct) {
                    return Ok(event);
                }
                continue;
            }
            tokio::select! {
                biased;
                () = ct.cancelled() => return none(),
                () = tokio::time::sleep_until(deadline) => return none(),
                () = &mut offered => {}
            }
        }
    }

    /// Hands an offer taken from the queue to this session's client:
    /// registers its turn, then moves it `Pending → Taken` (unless the agent
    /// withdrew it first). `None`: not handed over (the request was
    /// cancelled, and the offer is put back; or the agent withdrew it).
    fn hand_over(
        &self,
        offer: Arc<Offer>,
        ct: &tokio_util::sync::CancellationToken,
    ) -> Option<Value> {
        if ct.is_cancelled() {
            // Its response would be dropped: leave it to the next wait.
            self.shared.put_back(offer);
            return None;
        }
        if let Some(commands) = &offer.commands {
            // Register the turn before telling the agent, so the client's
            // next command finds it.
            let turn = ActiveTurn {
                serial: offer.serial,
                kind: offer.kind,
                commands: commands.clone(),
                session: self.session.id,
            };
            if !self.shared.hold(&offer.id, turn) {
                // A newer delivery of the same id is held: this one is stale.
                offer.advance(OfferState::Pending, OfferState::Withdrawn);
                return None;
            }
        }
        if !offer.advance(OfferState::Pending, OfferState::Taken) {
            // The agent gave up on it (pickup timeout): skip it.
            self.shared.forget(&offer.id, offer.serial);
            return None;
        }
        if offer.commands.is_none() {
            self.session
                .unacked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(&offer));
        }
        Some(offer.event.clone())
    }

    fn info(&self) -> Value {
        let s = &self.shared;
        let chart = &s.chart;
        let role = s.role.as_str();
        json!({
            "org": chart.org(),
            "role": role,
            "description": chart.role(role).map(|r| r.description()),
            "manager": chart.manager_of(role),
            "reports": chart.reports_of(role).collect::<Vec<_>>(),
            "peers": chart.peers_of(role).collect::<Vec<_>>(),
            "publishes": chart.role(role).map(|r| r.publishes().to_vec()).unwrap_or_default(),
            "subscribes": chart.subscriptions_of(role),
            "shortcuts": chart.shortcuts().filter(|sc| sc.from().as_str() == role).map(|sc| json!({
                "to": sc.to(), "task_types": sc.task_types(),
            })).collect::<Vec<_>>(),
            "tool_grants": chart.tool_grants(role).iter().map(ToString::to_string).collect::<Vec<_>>(),
            "held": held_list(s.turns().iter()),
            "idle_timeout_secs": s.options.idle_timeout.as_secs(),
            "pickup_timeout_secs": s.options.pickup_timeout.as_secs(),
            "max_turn_secs": s.options.max_turn.as_secs(),
            "max_wait_secs": s.options.max_wait.as_secs(),
        })
    }

    fn instructions(&self) -> String {
        let s = &self.shared;
        let role = s.role.as_str();
        let chart = &s.chart;
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        format!(
            "You hold the seat of role `{role}` in the org `{org}`{desc}. Manager: {manager}. Reports: {reports}. Peers: {peers}. \
             Call wait_for_event to get work. On a `task` event, do it: call granted tools (list_granted_tools, call_granted_tool), \
             delegate subtasks to reports, then end the turn with complete_task, fail_task, or await_subtasks (after delegating; \
             the results come back as a `subtasks_done` event). Events this role subscribes to come as `org_event` notices; \
             publish_event publishes an event the role declares, with the turn's end. A `saga_step` or `saga_compensation` event is a step of a saga this role runs: \
             end it with complete_task (the step's result) or fail_task; a `saga_escalation` asks for a decision on a report's saga (decide_escalation or pass_up_escalation). \
             An `artifact_ready` event is an artifact of this role on a blackboard whose blockers are all complete: read_project, update_artifact (only this role's own), \
             then complete_task; an `artifact_rework` notice says one went back to rework. \
             In a meeting, a `meeting_turn` asks for your say on an agenda item (speak), a `meeting_proposal` for the facilitator's proposal (propose), \
             a `meeting_ballot` for your vote on it (vote: sealed, once); a `meeting_escalation` notice is a report's meeting that took no decision. Act within {idle}s between calls or the task is released for retry. \
             The org chart limits what this seat may do; refusals come back as tool errors naming the rule.",
            org = chart.org(),
            desc = chart
                .role(role)
                .map(|r| format!(" ({})", r.description()))
                .filter(|d| d != " ()")
                .unwrap_or_default(),
            manager = chart.manager_of(role).map_or("none".to_owned(), ToString::to_string),
            reports = list(chart.reports_of(role).map(ToString::to_string).collect()),
            peers = list(chart.peers_of(role).map(ToString::to_string).collect()),
            idle = s.options.idle_timeout.as_secs(),
        )
    }

    /// Runs one seat tool. `None`: no such tool.
    async fn dispatch(
        &self,
        name: &str,
        args: Value,
        ct: &tokio_util::sync::CancellationToken,
    ) -> Option<Result<Value, SeatError>> {
        Some(match name {
            "wait_for_event" => match parse(name, args) {
                Ok(a) => self.wait(a, ct).await,
                Err(e) => Err(e),
            },
            "list_granted_tools" => {
                self.touch();
                self.shared
                    .tools
                    .list_tools()
                    .await
                    .map(|tools| json!({"tools": tools}))
                    .map_err(|e| ActionError::from_tool(e).into())
            }
            // The seat's granted tools, with or without a turn in hand.
            "call_granted_tool" => match parse::<CallArgs>(name, args) {
                Ok(a) => {
                    self.touch();
                    let arguments = a.arguments.unwrap_or_else(|| json!({}));
                    let out = self.shared.tools.call_tool(&a.name, arguments).await;
                    // The call may have taken a while: the client is alive.
                    self.touch();
                    out.map(|out| json!({"structured": out.structured, "text": out.text}))
                        .map_err(|e| ActionError::from_tool(e).into())
                }
                Err(e) => Err(e),
            },
            "seat_info" => {
                self.touch();
                Ok(self.info())
            }
            _ if is_org_action(name) => self.action(name, args).await,
            _ => return None,
        })
    }

    /// Runs the org action `name` in the turn its arguments name (or the
    /// only one held of the kinds it acts in): the chart's checks first, so
    /// a refusal names the rule even with nothing in hand.
    async fn action(&self, name: &str, args: Value) -> Result<Value, SeatError> {
        check_args(name, &args)?;
        precheck(&self.shared.chart, &self.shared.role, name, &args)?;
        let kinds = acts_in(name).unwrap_or_default();
        let named = match turn_field(name).and_then(|(field, _)| Some((field, args.get(field)?))) {
            None | Some((_, Value::Null)) => None,
            Some((_, Value::String(id))) => Some(id.clone()),
            Some((field, other)) => {
                return Err(SeatError::InvalidInput {
                    message: format!("`{field}` names a turn by its id, a string, not {other}"),
                })
            }
        };
        let (id, turn) = if name == "read_task_tree" {
            // Any task turn serves the read; the one named, if it is held.
            let held = args
                .get("task_id")
                .and_then(Value::as_str)
                .filter(|id| self.shared.turns().contains_key(*id));
            self.pick(held, kinds).or_else(|e| {
                let first = self
                    .shared
                    .turns()
                    .iter()
                    .find(|(_, t)| t.kind == TurnKind::Task)
                    .map(|(id, t)| (id.clone(), t.clone()));
                first.ok_or(e)
            })?
        } else {
            self.pick(named.as_deref(), kinds)?
        };
        let action = name.to_owned();
        let r = self
            .ask(&id, &turn, |reply| Command::Action {
                name: action,
                args,
                reply,
            })
            .await;
        // An action that ended the turn (counted or too late): forget it.
        if ends_turn(name) && matches!(r, Ok(_) | Err(SeatError::Released { .. })) {
            self.shared.forget(&id, turn.serial);
        }
        // An ending action's reply is the host's: `{"ended": id, "with": action}`.
        r
    }
}

impl ServerHandler for SeatServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                format!("agentorg-seat-{}", self.shared.role),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(self.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(seat_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let name: Cow<'static, str> = request.name;
        // Any call shows that the responses before it reached the client.
        self.acknowledge();
        match self.dispatch(&name, args, &context.ct).await {
            Some(r) => Ok(render(r).into()),
            None => Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`"),
                None,
            )),
        }
    }
}

impl From<ToolError> for SeatError {
    fn from(e: ToolError) -> Self {
        ActionError::from_tool(e).into()
    }
}
